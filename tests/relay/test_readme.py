"""README stays true: its quick start, configuration table and REST walkthrough follow the code."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from relay.settings import VARIABLES

from ..conftest import ROOT, base_env
from .client import rest, run, visitor

README = (ROOT / "README.md").read_text()


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_configuration_table_lists_every_variable_with_its_default() -> None:
    table = README.split("<!-- config:start -->", 1)[1].split("<!-- config:end -->", 1)[0]
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", table, re.M))
    assert rows.keys() == VARIABLES.keys()
    for name, (default, _) in VARIABLES.items():
        assert rows[name].strip() == default


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _shell_blocks(text: str) -> list[str]:
    return [block.strip("\n") for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_rest_walkthrough_runs_when_pasted_in_order(relay_factory: Any) -> None:
    blocks = _shell_blocks(_section("REST API (on-premise)"))
    assert blocks and blocks[0].startswith("export K="), "the walkthrough sets the key first"
    key = re.search(r"\bK=(\S+)", blocks[0])
    assert key is not None
    r = relay_factory(REST_KEY=key.group(1)).start()
    # The README's relay listens on the default port; this one on the port it was given.
    script = ["set -euo pipefail"]
    for n, block in enumerate(blocks):
        script += [block.replace("http://127.0.0.1:5002", r.base), f"printf '\\n::block {n} done\\n'"]

    async def scenario() -> str:
        await visitor(r, "READMEVIS1")
        deadline = time.monotonic() + 5
        while rest(r, "GET", "/api/visitors/READMEVIS1")[0] != 200:  # its presence is stored
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        bash = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "\n".join(script),
            env=base_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(bash.communicate(), 60)
        assert bash.returncode == 0, (out.decode(), err.decode())
        return out.decode()

    out = run(scenario())
    outputs = re.split(r"\n::block \d+ done\n", out)
    assert len(outputs) == len(blocks) + 1
    for block, output in zip(blocks, outputs, strict=False):
        if "curl" in block.replace("$(curl", ""):
            assert '"status":"ok"' in output and '"status":"error"' not in output, (block, output)
    assert "READMEVIS1" in out  # the id taken from the list is a real visitor's
    assert '"watch_url":"' + r.base + "/screen?id=READMEVIS1&token=" in out
