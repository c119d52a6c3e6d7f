"""Schemathesis against the served OpenAPI document: every operation, 0 failures.

A real relay under a base path (``BASE_ENDPOINT`` ends in ``/relay``, so the
document's ``servers`` and paths must compose), REST_RATE high enough that the
run is not all 429s, and one known visitor (online throughout) so that some
cases reach the handlers' success paths rather than a 404. The run is seeded and
bounded (``--max-examples``), with positive and negative data (coverage and
fuzzing phases) and these checks on every answer: no 5xx, the answer's status
and body as documented, schema-violating requests rejected, and the REST key
enforced where the document says it is.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from ..conftest import free_port, run_relay
from .schemathesis_run import schemathesis

KNOWN = "SCHEMAVIS1"


def coclick_token_and_meeting(relay: Any) -> tuple[str, str]:
    """A bearer token of a CoClick key made with ``python -m relay keys create``, and a meeting's id."""
    made = run_relay(["keys", "create", "--kind", "coclick", "--company", "Schema"], relay.env)
    assert made.returncode == 0, made.stderr
    found = dict(re.findall(r"^(secret_id|secret_key):\s+(\S+)$", made.stdout, re.M))

    def post(path: str, body: dict[str, Any], token: str = "") -> Any:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(
            f"{relay.base}/api/v1{path}", json.dumps(body).encode(), headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    token: str = post("/authenticate", found)["token"]
    meeting = {
        "user": "a@example.com",
        "starts_at": "2030-01-01T10:00:00+02:00",
        "cobrowsing_url": "https://example.com",
    }
    return token, post("/meetings", meeting, token)["token"]


def test_every_operation_passes_schemathesis_with_no_failure(relay_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    relay = relay_factory(PORT=str(port), BASE_ENDPOINT=f"http://127.0.0.1:{port}/relay", REST_RATE="1000000").start()
    url = f"{relay.base}/api/openapi.json"
    with urllib.request.urlopen(url, timeout=10) as r:
        raw = r.read()
    document = json.loads(raw)
    operations = {f"{method.upper()} {path}" for path, methods in document["paths"].items() for method in methods}
    # Loaded from its URL, schemathesis leaves out the operation serving it; from a file it tests them all,
    # at the servers entry (the base path) on the relay's origin.
    (tmp_path / "openapi.json").write_bytes(raw)
    bearer, meeting = coclick_token_and_meeting(relay)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\nvisitor_id = "{KNOWN}"\ntoken = "{KNOWN}"\nuserToken = "{KNOWN}"\nmeeting_id = "{meeting}"\n'
        # each scheme its credentials: the REST key (on-prem and cloud), and a CoClick bearer token from a key
        # made with the CLI
        f'[auth.openapi.restKey]\napi_key = "{relay.rest_key}"\n'
        f'[auth.openapi.cloudApiKey]\napi_key = "{relay.rest_key}"\n'
        f'[auth.openapi.coclickBearer]\nbearer = "{bearer}"\n'
        # the meetings list reads its pages from X-Page / X-Per headers; other headers (and query parameters
        # but q[...]) are ignored, as HTTP APIs do: not schema violations to be refused
        '[[operations]]\ninclude-operation-id = "get_api_v1_meetings"\n'
        "[operations.generation]\nallow-extra-parameters = false\n"
    )
    status, out, statuses = schemathesis(relay, tmp_path, config, KNOWN, 50, "--header", f"Origin: {relay.origin}")
    assert status == 0, out[-6000:]
    junit = next((tmp_path / "reports").glob("junit-*.xml")).read_text()
    assert set(re.findall(r'<testcase name="([^"]+)"', junit)) == operations, junit
    assert statuses["200"] and statuses["400"] and statuses["401"], statuses  # the handlers were reached
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases is not None and cases.group(1) == cases.group(2), out[-3000:]
    assert int(cases.group(1)) > 10 * len(operations), out[-3000:]
    print(f"schemathesis: {len(operations)} operations, {cases.group(1)} cases, 0 failures; statuses {dict(statuses)}")
