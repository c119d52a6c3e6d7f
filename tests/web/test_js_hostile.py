"""Hostile frames against the browser decoder (relay/web/src/protocol.js).

The relay forwards visitor frames to viewers without decoding them, so the
viewer's decoder is the only check those frames get: it must refuse every
frame the Python decoder refuses, with the same error code, and never hang.
Each frame of tests/protocol/test_protocol_hostile.py's table is decoded under
node in a worker with its own deadline (relay/web/test/hostile.mjs). Without
node the tests skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import protocol as p
from tests.conftest import require_binary
from tests.protocol.test_protocol_hostile import HOSTILE

WEB = Path(__file__).resolve().parents[2] / "relay" / "web"
DEADLINE_MS = 5000  # per frame; the slowest (an 8 MiB frame refused by its header) takes well under 100 ms
VALID = p.encode(p.Click(node=12, x=100.5, y=20), epoch=7, seq=1)


@pytest.fixture(scope="module")
def js_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every hostile frame (and one valid control frame) through the JS decoder, by id."""
    node = require_binary("node")
    if not (WEB / "node_modules" / "@msgpack" / "msgpack").is_dir():
        npm = require_binary("npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=300)
    frames = [{"id": "valid-control", "hex": VALID.hex()}]
    frames += [{"id": case_id, "hex": data.hex()} for case_id, data, _, _ in HOSTILE]
    path = tmp_path_factory.mktemp("hostile") / "frames.json"
    path.write_text(json.dumps(frames))
    proc = subprocess.run(
        [node, "test/hostile.mjs", str(path), str(DEADLINE_MS)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=30 + len(frames) * DEADLINE_MS / 1000,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {r["id"]: r for r in json.loads(proc.stdout)}
    assert list(results) == [f["id"] for f in frames]
    return results


def test_the_harness_reports_a_valid_frame_as_decoded(js_results: dict[str, dict[str, Any]]) -> None:
    assert js_results["valid-control"]["outcome"] == "returned", js_results["valid-control"]


@pytest.mark.parametrize(("case_id", "code"), [(c[0], c[2]) for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_the_js_decoder_refuses_each_hostile_frame_with_the_python_error_code(
    js_results: dict[str, dict[str, Any]], case_id: str, code: str
) -> None:
    got = js_results[case_id]
    assert got["outcome"] == "threw", f"{case_id}: {got}"  # not "returned", not "timeout"
    assert got["error"] == "ProtocolError", f"{case_id}: {got}"
    assert got["code"] == code, f"{case_id}: {got}"
    assert got["code"] in p.ERROR_CLOSE_CODES
