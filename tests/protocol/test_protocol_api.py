"""The package's public surface, its purity, and the close-code policy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import protocol as p
from protocol import CloseCode, should_reconnect

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "protocol"


# --- __all__ ---------------------------------------------------------------------
CORE_NAMES = {
    "encode",
    "decode",
    "peek",
    "stamp",
    "ProtocolError",
    "ERROR_CLOSE_CODES",
    "CloseCode",
    "should_reconnect",
    "Header",
    "Limits",
    "DEFAULT_LIMITS",
    "HEADER_SIZE",
    "WIRE_VERSION",
    "PROTOCOL_VERSION",
    "Kind",
    "KIND_INFO",
    "kind_info",
    "Routing",
    "Permission",
    "Role",
    "Message",
    "MESSAGE_TYPES",
}


def test_every_name_in_all_exists():
    assert len(p.__all__) == len(set(p.__all__)), "duplicates in __all__"
    missing = [name for name in p.__all__ if not hasattr(p, name)]
    assert missing == []


def test_core_names_and_every_message_class_are_exported():
    assert set(p.__all__) >= CORE_NAMES
    for cls in p.MESSAGE_TYPES.values():
        assert cls.__name__ in p.__all__
        assert getattr(p, cls.__name__) is cls


def test_star_import_works():
    namespace: dict[str, object] = {}
    exec("from protocol import *", namespace)
    assert {"encode", "decode", "peek", "ProtocolError", "CloseCode", "Click", "Hello"} <= namespace.keys()
    assert namespace["decode"] is p.decode


# --- purity ----------------------------------------------------------------------
FORBIDDEN = ("asyncio", "socket", "starlette", "uvicorn", "redis", "websockets", "relay", "agent", "bench")


def test_importing_protocol_pulls_in_no_io_or_project_modules():
    code = "import sys, json, protocol; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN or m.split(".")[0].lstrip("_") in FORBIDDEN]
    assert bad == []


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.add("<dynamic __import__>")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_protocol_sources_import_nothing_from_relay_agent_or_io(path):
    roots = {name.split(".")[0] for name in _imported_modules(path)}
    assert not roots & set(FORBIDDEN), roots
    assert "importlib" not in roots and "<dynamic __import__>" not in roots


# --- close codes -----------------------------------------------------------------
RETRY_NAMES = {
    "GOING_AWAY",
    "ABNORMAL",
    "INTERNAL_ERROR",
    "SLOW_CONSUMER",
    "KEEPALIVE_TIMEOUT",
    "SESSION_MOVED",
    "RATE_LIMITED",
    "OVERLOADED",
    "HANDSHAKE_TIMEOUT",
    "SLOW_MESSAGE",
}


def test_should_reconnect_for_every_code_from_4000_to_4499_and_1001_1006():
    assert all(should_reconnect(code) for code in range(4000, 4500))
    assert should_reconnect(1001)
    assert should_reconnect(1006)


def test_should_not_reconnect_for_every_code_from_4500_to_4999_and_1000():
    assert not any(should_reconnect(code) for code in range(4500, 5000))
    assert not should_reconnect(1000)


def test_unknown_codes_outside_both_ranges_are_treated_as_transient():
    for code in (0, 1005, 1014, 2999, 3000, 3999, 5000, 65535):
        assert should_reconnect(code)


def test_retryable_and_terminal_sets_do_not_overlap():
    assert not p.RETRYABLE & p.TERMINAL
    assert all(should_reconnect(c) for c in p.RETRYABLE)
    assert not any(should_reconnect(c) for c in p.TERMINAL)


@pytest.mark.parametrize("member", list(CloseCode), ids=lambda m: m.name)
def test_every_close_code_falls_in_the_range_its_name_promises(member):
    if member.name in RETRY_NAMES:
        assert member in (1001, 1006) or 4000 <= member < 4500
        assert should_reconnect(member)
    else:
        assert member == 1000 or 4500 <= member < 5000
        assert not should_reconnect(member)


def test_close_codes_are_unique():
    assert len({int(m) for m in CloseCode}) == len(CloseCode)


def test_every_error_code_has_a_close_code_and_errors_carry_it():
    for code, close in p.ERROR_CLOSE_CODES.items():
        assert isinstance(close, CloseCode)
        assert not should_reconnect(close)
        err = p.ProtocolError(code, "why")
        assert (err.code, err.detail, err.close_code) == (code, "why", close)
        assert str(err) == f"{code}: why"
    with pytest.raises(ValueError):
        p.ProtocolError("no_such_code")


# --- catalog consistency ---------------------------------------------------------
def test_kind_info_is_indexed_by_kind_byte_and_covers_every_kind():
    assert len(p.KIND_INFO) == 256
    for kind in p.Kind:
        info = p.KIND_INFO[kind]
        assert info is not None and info.kind is kind
        assert p.kind_info(kind) is info
        assert p.MESSAGE_TYPES[kind].KIND is kind
    assert sum(info is not None for info in p.KIND_INFO) == len(p.Kind)


def test_control_kinds_come_from_viewers_and_big_kinds_from_visitors():
    for kind in p.Kind:
        info = p.kind_info(kind)
        if info.routing is p.Routing.CONTROL:
            assert info.senders == {p.Role.VIEWER}
        elif info.permission is not None:
            pytest.fail(f"{kind.name} has a permission but is not a control kind")
        if info.big:
            assert info.senders == {p.Role.VISITOR}


# --- typing ----------------------------------------------------------------------
TYPED_USE = """\
import protocol as p
click = p.Click(node=1, x=1.0, y=2.0)
node: int = click.node
frame: bytes = p.encode(click, epoch=1, seq=2)
msg: p.Message = p.decode(frame)
p.Click(nod=1, x=1.0, y=2.0)
click.node = 3
"""


def test_type_checkers_see_the_message_fields(tmp_path):
    """Messages must be plain @dataclass classes, or mypy rejects every constructor call."""
    source = tmp_path / "typed_use.py"
    source.write_text(TYPED_USE, encoding="utf-8")
    args = [
        "--config-file=",
        "--strict",
        "--no-error-summary",
        f"--cache-dir={ROOT / '.mypy_cache'}",
        str(source),
    ]
    out = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line.split(":")[1] for line in out.stdout.splitlines() if ": error:" in line]
    assert errors == ["6", "7"], out.stdout + out.stderr
