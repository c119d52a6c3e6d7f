"""The browser codec (relay/web/src/protocol.js) against protocol/vectors.json.

Runs every relay/web/test/*.test.mjs with node's own test runner: the codec
against the shared vectors, and the pure browser-side logic (the reconnect and
redirect decision of src/redirect.js, the session code of src/code.js). Without node the
test is skipped on a developer's machine and fails under CI=true: a CI that
silently stops checking the JS codec is worse than a red one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..conftest import require_binary

WEB = Path(__file__).resolve().parents[2] / "relay" / "web"


def test_js_codec_matches_every_shared_vector() -> None:
    node = require_binary("node")
    if not (WEB / "node_modules" / "@msgpack" / "msgpack").is_dir():
        npm = require_binary("npm")
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
