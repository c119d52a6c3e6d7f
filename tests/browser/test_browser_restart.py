"""A relay restart in the middle of a session, seen from a real Chromium.

The visitor is on the relay's own demo page, the agent on the watch page.
The relay process is stopped (SIGTERM: sockets closed with 1001; SIGKILL:
they drop, 1006) and started again on the same port with the same DATA_DIR
and SECRET_KEY. Neither page is touched: the SDK and the viewer reconnect by
themselves, the viewer with its resume token, and the session goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    ROOT,
    USER_ID_JS,
    Relay,
    Wire,
    _wait_healthy,
    ensure_bundle,
    free_port,
    open_viewer,
    safe_eval,
    unavailable,
    wait_for,
)

pytestmark = [pytest.mark.browser]

HELLO, DOM_KEYFRAME, RESYNC_REQUEST = 0x01, 0x10, 0x54


class RestartableRelay(Relay):
    """The browser tests' relay, as a process this test may stop and start again."""

    def __init__(self, data: Path) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        super().__init__(url, url, data / "relay.log")
        self.env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "REST_KEY": "browser-test-rest-key",
            "SECRET_KEY": "browser-restart-secret-key-0123456789",
            "DATA_DIR": str(data / "data"),
            "BASE_ENDPOINT": url,
            "LOG_LEVEL": os.environ.get("RELAY_LOG_LEVEL", "warning"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if not _wait_healthy(self.url, self.proc, timeout=20):
            unavailable(f"the relay did not become healthy:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture()
def own_relay() -> Iterator[RestartableRelay]:
    ensure_bundle()
    with tempfile.TemporaryDirectory(prefix="cobrowse-restart-") as tmp:
        relay = RestartableRelay(Path(tmp))
        relay.start()
        try:
            yield relay
        finally:
            relay.stop(signal.SIGKILL)


def hellos(wire: Wire) -> list[bytes]:
    wire.pump()
    return [f for f in wire.sent if len(f) >= 16 and f[1] == HELLO]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_after_a_relay_restart_the_watch_page_shows_the_visitor_again_without_a_new_link(
    browser: Any, own_relay: RestartableRelay, sig: signal.Signals
) -> None:
    relay = own_relay
    demo_ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    viewer: Any = None
    try:
        demo = demo_ctx.new_page()
        demo_wire = Wire().attach(demo)
        demo.goto(f"{relay.url}/demo")
        short_id = demo.wait_for_function(USER_ID_JS, polling=100).json_value()
        demo.evaluate(
            "() => { window.sessionEvents = [];"
            " for (const e of ['sessionStart', 'sessionContinue', 'sessionEnd'])"
            " Cobrowse('on', e, () => window.sessionEvents.push(e)); }"
        )
        wait_for(lambda: (relay.visitor(short_id) or {}).get("is_online"), what="the visitor online")
        watch_url = relay.watch_url(short_id)
        viewer, viewer_wire = open_viewer(browser, watch_url)
        demo.locator("[data-cobrowse=accept]").click()
        replica = viewer.frame_locator("#replica iframe").first
        replica.locator("#headline", has_text="Welcome to the demo shop").wait_for(timeout=10_000)
        demo.locator("#name").type("Ada", delay=5)
        wait_for(lambda: replica.locator("#name").input_value() == "Ada", what="the name in the replica")
        session = viewer.evaluate("window.__cobrowseViewer.session")
        resume = viewer.evaluate("window.__cobrowseViewer.resume")
        epoch = viewer.evaluate("window.__cobrowseViewer.epoch")
        assert session and resume and epoch
        sockets = (demo_wire.socket_count(), viewer_wire.socket_count())
        sent_before, received_before = len(demo_wire.sent), len(demo_wire.received)

        relay.stop(sig)
        wait_for(lambda: viewer.evaluate("document.body.dataset.state") == "reconnecting", what="the viewer to notice")
        relay.start()

        # Both pages reconnect by themselves; the viewer presents its resume token, not the used grant.
        wait_for(lambda: demo_wire.socket_count() > sockets[0], what="the SDK to reconnect", timeout=20)
        wait_for(lambda: viewer_wire.socket_count() > sockets[1], what="the viewer to reconnect", timeout=20)
        wait_for(lambda: viewer.evaluate("document.body.dataset.state") == "live", what="the viewer live again")
        assert resume.encode() in hellos(viewer_wire)[-1]
        assert viewer.url == watch_url
        # The replica is rebuilt from the keyframe the visitor sent after the restart, in a new epoch.
        wait_for(lambda: viewer.evaluate("window.__cobrowseViewer.epoch") not in (0, epoch), what="a new epoch")
        # One keyframe, not two: the relay's request for one crossed the one the SDK sends on continuing.
        wait_for(lambda: RESYNC_REQUEST in [f[1] for f in demo_wire.received[received_before:]], what="the request")
        demo.wait_for_timeout(300)
        assert [f[1] for f in demo_wire.sent[sent_before:]].count(DOM_KEYFRAME) == 1
        demo.locator("#name").type(" Lovelace", delay=5)
        wait_for(lambda: replica.locator("#name").input_value() == "Ada Lovelace", what="typing after the restart")
        assert viewer.evaluate("window.__cobrowseViewer.session") == session
        assert safe_eval(demo, "window.sessionEvents") == ["sessionStart", "sessionContinue"]  # no new consent
        assert demo.locator("[data-cobrowse=consent]").count() == 0
        visitor = relay.visitor(short_id)
        assert visitor is not None and [s["id"] for s in visitor["sessions"]] == [session]
        assert visitor["sessions"][0]["ended_at"] is None
    finally:
        demo_ctx.close()
        if viewer is not None:
            viewer.context.close()
