"""The browser codec (relay/web/src/protocol.js) against protocol/vectors.json.

Runs relay/web/test/*.test.mjs with node's own test runner. Without node the
test is skipped on a developer's machine and fails under CI=true: a CI that
silently stops checking the JS codec is worse than a red one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import in_ci

WEB = Path(__file__).resolve().parents[2] / "relay" / "web"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if in_ci():
            pytest.fail(f"{tool} is not installed; CI must run the JS codec tests")
        pytest.skip(f"{tool} is not installed")
    return path


def test_js_codec_matches_every_shared_vector() -> None:
    node = _need("node")
    if not (WEB / "node_modules" / "@msgpack" / "msgpack").is_dir():
        npm = _need("npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=300)
    proc = subprocess.run(
        [node, "--test", *sorted(str(p.relative_to(WEB)) for p in (WEB / "test").glob("*.test.mjs"))],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
