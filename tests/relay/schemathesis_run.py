"""Running schemathesis's command line against a real relay, for the tests that do (one way, once)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..conftest import base_env
from .client import run, visitor

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,negative_data_rejection,ignored_auth"


def schemathesis(
    relay: Any, tmp_path: Path, config: Path, known: str, max_examples: int, *args: str
) -> tuple[int, str, Counter[str]]:
    """Run ``schemathesis run`` on ``tmp_path/openapi.json`` at ``relay``'s origin with ``config``, every
    check (:data:`CHECKS`), the examples, coverage and fuzzing phases, seeded, one worker, reports in
    ``tmp_path/reports``; ``args`` add to the command. Visitor ``known`` is online throughout, so some
    cases reach the handlers' success paths. Returns the exit status, the output and the statuses answered."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        str(tmp_path / "openapi.json"),
        "--origin",
        relay.origin,
        "--checks",
        CHECKS,
        *args,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(max_examples),
        "--seed",
        "1",
        "--workers",
        "1",
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(tmp_path / "reports"),
    ]

    async def scenario() -> tuple[int, str]:
        await visitor(relay, known)
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            env=base_env(NO_COLOR="1", SCHEMATHESIS_TELEMETRY="false"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 100)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    status, out = run(scenario())
    reports = tmp_path / "reports"
    ndjson = next(reports.glob("*.ndjson")).read_text() if reports.is_dir() and any(reports.glob("*.ndjson")) else ""
    return status, out, Counter(re.findall(r'"status_code":\s*(\d+)', ndjson))
