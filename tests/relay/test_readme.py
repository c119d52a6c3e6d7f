"""README stays true: its quick start and configuration table follow the code."""

from __future__ import annotations

import re

from relay.settings import VARIABLES

from ..conftest import ROOT

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
