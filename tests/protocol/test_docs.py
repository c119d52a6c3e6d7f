"""docs/protocol.md says exactly what protocol/ does."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

import protocol as p
from tests.protocol import make_vectors

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped, header and separator dropped) of the first table under ``heading``."""
    match = re.search(rf"^{re.escape(heading)}\s*$", DOC, re.MULTILINE)
    assert match, f"no heading {heading!r}"
    rows: list[list[str]] = []
    for line in DOC[match.end() :].lstrip("\n").splitlines():
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]


def unquote(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


TYPE_NAMES = {
    str: "str",
    int: "int",
    float: "num",
    bool: "bool",
    bytes: "bin",
    tuple[str, ...]: "[str]",
    tuple[tuple[float, float], ...]: "[[num,num]]",
}


def documented_fields(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    parts = []
    for f in dataclasses.fields(cls):
        text = f"`{f.name}`: {TYPE_NAMES[hints[f.name]]}"
        if f.default is not dataclasses.MISSING:
            text += f"={f.default!r}"
        parts.append(text)
    return "; ".join(parts) or "(none)"


CATALOG = table_after("## Catalog")


def test_catalog_lists_every_kind_once_in_code_order():
    assert [int(unquote(row[0]), 16) for row in CATALOG] == sorted(int(k) for k in p.Kind)
    assert [row[1] for row in CATALOG] == [k.name for k in sorted(p.Kind)]


@pytest.mark.parametrize("row", CATALOG, ids=[row[1] for row in CATALOG])
def test_catalog_row_matches_the_code(row):
    code, name, cls_name, routing, senders, permission, fields = row
    kind = p.Kind[name]
    assert unquote(code) == f"0x{int(kind):02x}"
    info = p.kind_info(kind)
    cls = p.MESSAGE_TYPES[kind]
    assert unquote(cls_name) == cls.__name__
    assert routing == info.routing.value + (" (big)" if info.big else "")
    assert senders == ", ".join(sorted(r.value for r in info.senders))
    assert permission == (info.permission.value if info.permission else "")
    assert fields == documented_fields(cls)


def test_routing_classes_table_names_every_routing_class():
    rows = table_after("## Routing classes")
    assert [row[0] for row in rows] == [r.value for r in p.Routing]


def test_close_code_table_matches_close_code_enum():
    rows = table_after("## Close codes")
    documented = {int(row[0]): unquote(row[1]) for row in rows}
    assert len(documented) == len(rows)
    assert documented == {int(m): m.name for m in p.CloseCode}
    for row in rows:
        meaning = row[2]
        if "do not retry" in meaning:
            assert not p.should_reconnect(int(row[0])), row
        if "reconnect" in meaning and "do not" not in meaning:
            assert p.should_reconnect(int(row[0])), row


def test_errors_table_matches_error_close_codes():
    rows = table_after("## Errors")
    documented = {unquote(row[0]): int(row[1]) for row in rows}
    assert len(documented) == len(rows)
    assert list(documented) == list(p.ERROR_CLOSE_CODES)
    assert documented == {code: int(close) for code, close in p.ERROR_CLOSE_CODES.items()}


def test_permissions_table_matches_permission_flags():
    rows = table_after("## Permissions")
    assert [row[0] for row in rows] == [f"`{flag}`" for flag in p.PERMISSION_FLAGS]
    for flag_cell, perm_cell, default_cell, kinds_cell in rows:
        permission, default = p.PERMISSION_FLAGS[unquote(flag_cell)]
        assert unquote(perm_cell) == permission.value
        assert default_cell == str(default).lower()
        admitted = [k.name for k in p.Kind if p.kind_info(k).permission is permission]
        assert re.findall(r"`(\w+)`", kinds_cell) == admitted


def test_limits_table_matches_default_limits():
    rows = {unquote(row[0]): row[1] for row in table_after("## Limits")}
    lim = p.DEFAULT_LIMITS
    assert set(rows) == {f.name for f in dataclasses.fields(lim)}
    assert rows["max_keyframe"] == f"{lim.max_keyframe // 2**20} MiB"
    assert rows["max_frame"] == f"{lim.max_frame // 2**10} KiB"
    assert rows["max_string"] == f"{lim.max_string:,} chars"
    assert rows["max_list"] == f"{lim.max_list:,}"
    assert rows["coord_max"] == f"10^{len(str(int(lim.coord_max))) - 1}"
    assert lim.coord_max == 10 ** (len(str(int(lim.coord_max))) - 1)


def test_header_table_matches_the_header_layout():
    rows = table_after("## Frames")
    assert [(int(r[0]), r[1], r[2]) for r in rows] == [
        (0, "1", "version"),
        (1, "1", "kind"),
        (2, "2", "reserved"),
        (4, "4", "epoch"),
        (8, "8", "seq"),
        (16, "…", "payload"),
    ]
    assert p.HEADER_SIZE == 16


def test_worked_example_is_the_click_basic_vector():
    block = DOC[DOC.index("## A worked example") :]
    block = block[block.index("```") + 3 :]
    block = block[: block.index("```")]
    hex_bytes = ""
    for line in block.strip().splitlines():
        # bytes come before the description: runs of two-digit hex pairs
        head = re.match(r"\s*((?:[0-9a-f]{2}\s+)+)", line + " ")
        assert head, line
        hex_bytes += head.group(1).replace(" ", "")
    vector = next(v for v in make_vectors.build()["vectors"] if v["name"] == "click-basic")
    assert hex_bytes == vector["hex"]
    assert p.decode(bytes.fromhex(hex_bytes)) == p.Click(node=12, x=100.5, y=20.0)
    assert "every kind" in DOC and "protocol/vectors.json" in DOC
