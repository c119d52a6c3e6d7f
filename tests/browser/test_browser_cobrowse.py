"""A visitor's page and an agent's watch page, in a real Chromium, through a real relay."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SRCDOC_CANARY, TEXT_CANARY, USER_ID_JS, Pair, open_visitor, safe_eval, wait_for

pytestmark = pytest.mark.browser

DOM_KEYFRAME, DOM_DELTA = 0x10, 0x11


def capture_box(pair: Pair) -> Any:
    box = pair.viewer.locator("#capture").bounding_box()
    assert box is not None
    return box


def click_replica(pair: Pair, selector: str) -> None:
    """Click in the agent's capture layer right above `selector` in the replica."""
    target = pair.replica().locator(selector).bounding_box()
    assert target is not None
    # The replica's iframe is scaled with its frame, so its boxes are in page pixels.
    pair.viewer.mouse.click(target["x"] + target["width"] / 2, target["y"] + target["height"] / 2)


def visitor_text(pair: Pair, selector: str) -> str:
    return str(pair.visitor.locator(selector).text_content())


def test_viewer_sees_the_visitors_page_text(pair_factory: Any) -> None:
    pair = pair_factory()
    assert pair.replica().locator("#headline").text_content() == "Visitor page alpha"
    assert pair.viewer.locator("body").get_attribute("data-state") == "live"
    # The SDK's own UI (indicator, overlay) is blocked from the recording.
    assert pair.replica().locator("[data-cobrowse]").count() == 0
    assert pair.visitor.locator("[data-cobrowse=indicator]").is_visible()


def test_agent_click_runs_the_page_handler_and_the_change_comes_back(pair_factory: Any) -> None:
    pair = pair_factory()
    click_replica(pair, "#btn")
    wait_for(lambda: pair.visitor.evaluate("window.clicks") == 1, what="the page's click handler")
    pair.replica().locator("#status", has_text="clicked 1").wait_for(timeout=5000)


def test_agent_wheel_scrolls_the_visitor_window_and_a_scrollable_box(pair_factory: Any) -> None:
    pair = pair_factory()
    box = capture_box(pair)
    pair.viewer.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 20)
    pair.viewer.mouse.wheel(0, 400)
    wait_for(lambda: pair.visitor.evaluate("window.scrollY") > 100, what="the visitor window to scroll")
    replica_y = "window.__cobrowseReplayer.iframe.contentWindow.scrollY"
    wait_for(lambda: pair.viewer.evaluate(replica_y) > 100, what="the replica to follow the scroll")
    pair.visitor.evaluate("window.scrollTo(0, 0)")
    wait_for(lambda: pair.viewer.evaluate(replica_y) == 0, what="the replica to scroll back")
    inner = pair.replica().locator("#box").bounding_box()
    pair.viewer.mouse.move(inner["x"] + 20, inner["y"] + 20)
    pair.viewer.mouse.wheel(0, 80)
    try:
        wait_for(
            lambda: pair.visitor.evaluate("document.getElementById('box').scrollTop") > 0, what="the box to scroll"
        )
    except AssertionError:
        sent = [f[16:60] for f in pair.viewer_wire.sent if f[1] == 0x31]
        raise AssertionError(f"box not scrolled; window {pair.visitor.evaluate('scrollY')}; scrolls {sent}") from None


def test_agent_typing_arrives_in_the_visitor_input_with_input_events(pair_factory: Any) -> None:
    pair = pair_factory()
    pair.visitor.evaluate(
        "window.inputs = 0; document.getElementById('name').addEventListener('input', () => window.inputs++)"
    )
    click_replica(pair, "#name")
    pair.viewer.keyboard.type("hello")
    pair.viewer.keyboard.press("Backspace")
    wait_for(lambda: pair.visitor.input_value("#name") == "hell", what="typed text on the visitor page")
    assert pair.visitor.evaluate("window.inputs") >= 5
    wait_for(lambda: pair.replica().locator("#name").input_value() == "hell", what="the value in the replica")


def test_agent_draw_stroke_appears_on_the_visitor_overlay_and_clears(pair_factory: Any) -> None:
    pair = pair_factory()
    pair.viewer.locator("#btn-draw").click()
    box = capture_box(pair)
    pair.viewer.mouse.move(box["x"] + 100, box["y"] + 100)
    pair.viewer.mouse.down()
    for i in range(1, 10):
        pair.viewer.mouse.move(box["x"] + 100 + i * 15, box["y"] + 100 + i * 5)
    pair.viewer.mouse.up()
    host = pair.visitor.locator("cobrowse-ui")
    wait_for(lambda: host.get_attribute("data-strokes") == "1", what="the stroke on the overlay")
    assert pair.visitor.locator("[data-cobrowse=draw]").count() == 1
    # Drawing never clicks the page, and the overlay never replays to the agent.
    assert pair.visitor.evaluate("window.clicks") == 0
    assert pair.replica().locator("[data-cobrowse]").count() == 0
    pair.viewer.locator("#btn-clear").click()
    wait_for(lambda: host.get_attribute("data-strokes") == "0", what="the overlay to clear")


def test_agent_redirect_and_reload_reach_the_visitor(pair_factory: Any, relay: Any) -> None:
    pair = pair_factory()
    before = pair.visitor.evaluate("window.loadedAt")
    pair.viewer.locator("#btn-reload").click()
    wait_for(
        lambda: safe_eval(pair.visitor, "window.loadedAt || 0") not in (0, before), what="the visitor page to reload"
    )
    wait_for(lambda: safe_eval(pair.visitor, "window.sessionEvents") == ["continue"], what="the session to continue")
    pair.viewer.locator("#redirect-url").fill(f"{relay.site}/page2.html")
    pair.viewer.locator("#btn-redirect").click()
    wait_for(lambda: safe_eval(pair.visitor, "location.pathname") == "/page2.html", what="the visitor to be redirected")
    pair.replica().locator("#headline", has_text="Second page beta").wait_for(timeout=10_000)


def test_no_action_has_effect_without_its_permission(pair_factory: Any) -> None:
    pair = pair_factory(
        allow_click=False, allow_scroll=False, allow_type=False, allow_draw=False, allow_agent_redirect=False
    )
    viewer = pair.viewer
    # The page offers no control the grant does not hold...
    for button in ("#btn-draw", "#btn-clear", "#btn-reload", "#redirect-form", "#btn-console"):
        assert viewer.locator(button).is_hidden(), button
    # ...the capture layer sends none of them...
    click_replica(pair, "#name")
    viewer.keyboard.type("abc")
    box = capture_box(pair)
    viewer.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    viewer.mouse.wheel(0, 300)
    # ...and frames forced onto the socket are dropped by the relay.
    node = viewer.evaluate(
        "(() => { const r = window.__cobrowseReplayer; const d = r.iframe.contentDocument;"
        " return [r.getMirror().getId(d.getElementById('btn')), r.getMirror().getId(d.getElementById('name'))]; })()"
    )
    viewer.evaluate(
        """([btn, name]) => {
            const v = window.__cobrowseViewer;
            v.send('CLICK', {node: btn, x: 10, y: 10});
            v.send('TYPE', {node: name, text: 'forced'});
            v.send('REMOTE_SCROLL', {node: 0, dx: 0, dy: 500});
            v.send('DRAW_STROKE', {points: [[1, 1], [50, 50]]});
            v.send('REDIRECT', {url: location.origin + '/nowhere'});
            v.send('RELOAD', {});
            v.send('VIEWER_POINTER', {x: 5, y: 5});
        }""",
        node,
    )
    # VIEWER_POINTER needs no permission: once it is through, so is everything sent before it.
    wait_for(lambda: 0x38 in pair.visitor_wire.kinds_received(), what="the viewer pointer at the visitor")
    wait_for(lambda: 0x03 in pair.viewer_wire.kinds_received(), what="ERROR forbidden at the viewer")
    pair.visitor.wait_for_timeout(300)
    visitor = pair.visitor
    assert visitor.evaluate("window.clicks") == 0
    assert visitor.input_value("#name") == ""
    assert visitor.evaluate("window.scrollY") == 0
    assert visitor.locator("cobrowse-ui").get_attribute("data-strokes") in (None, "0")
    assert visitor.url.endswith("/visitor.html")
    kinds_at_visitor = pair.visitor_wire.kinds_received()
    for kind in (0x30, 0x31, 0x32, 0x33, 0x35, 0x36):
        assert kind not in kinds_at_visitor, hex(kind)


def test_masked_canaries_never_reach_the_wire_while_plain_input_does(pair_factory: Any) -> None:
    pair = pair_factory("?consent=1")
    visitor = pair.visitor
    canaries = {
        "#card": "CARDCANARY4111",
        "#pw": "PWCANARY9922",
        "#inner": "INNERCANARY3344",
        "#selected": "SELCANARY5566",
    }
    for selector, canary in canaries.items():
        visitor.locator(selector).type(canary, delay=5)
    # A password field turned into a text field ("show password") stays masked.
    visitor.evaluate("document.getElementById('pw').type = 'text'")
    visitor.locator("#pw").type("SHOWNCANARY", delay=5)
    # Masked content added after the snapshot, as text and as attributes.
    visitor.evaluate(
        """() => {
            const d = document.createElement('div');
            d.className = 'no-cobrowse';
            d.title = 'ATTRCANARY8080';
            d.textContent = 'LATECANARY7070';
            document.body.appendChild(d);
            document.getElementById('frame').setAttribute('srcdoc', '<b class=no-cobrowse>SRCDOC2CANARY</b>');
        }"""
    )
    visitor.locator("#name").type("PLAINCANARY1234", delay=5)
    wait_for(
        lambda: pair.replica().locator("#name").input_value() == "PLAINCANARY1234",
        what="the plain input in the replica",
    )
    pair.visitor.wait_for_timeout(300)
    pair.viewer.wait_for_timeout(50)
    # The scan works: the unmasked canary is on the wire, both ways.
    assert pair.visitor_wire.contains("PLAINCANARY1234")
    assert any(b"PLAINCANARY1234" in f for f in pair.visitor_wire.sent)
    assert any(b"PLAINCANARY1234" in f for f in pair.viewer_wire.received)
    secrets = [*canaries.values(), "SHOWNCANARY", TEXT_CANARY, SRCDOC_CANARY, "ATTRCANARY8080", "LATECANARY7070"]
    secrets += ["SRCDOC2CANARY", "DATACANARY6161", "OPTCANARY2323"]
    leaked = [c for c in secrets if pair.visitor_wire.contains(c) or pair.viewer_wire.contains(c)]
    assert leaked == []
    assert DOM_KEYFRAME in pair.visitor_wire.kinds_sent()


def test_declined_consent_sends_no_page_content(pair_factory: Any) -> None:
    pair = pair_factory("?consent=1", accept=False, wait_live=False)
    dialog = pair.visitor.locator("[data-cobrowse=consent]")
    dialog.wait_for(timeout=10_000)
    assert "Ann" in str(dialog.text_content())
    pair.visitor.locator("[data-cobrowse=decline]").click()
    wait_for(
        lambda: pair.viewer.locator("body").get_attribute("data-state") == "declined", what="the viewer to see decline"
    )
    pair.visitor.wait_for_timeout(300)
    sent = pair.visitor_wire.kinds_sent()
    assert DOM_KEYFRAME not in sent and DOM_DELTA not in sent
    assert 0x52 in sent  # SESSION_DECLINE
    assert pair.replica().locator("#headline").count() == 0


def test_nothing_but_hello_and_presence_leaves_before_a_session(browser: Any, relay: Any) -> None:
    page, _short_id, wire = open_visitor(browser, relay)
    try:
        page.locator("#name").type("before-session")
        page.wait_for_timeout(300)
        assert set(wire.kinds_sent()) <= {0x01, 0x56, 0x70, 0x71}
        assert not wire.contains("before-session")
    finally:
        page.context.close()


def test_navigation_to_the_second_page_continues_the_session_without_asking_again(pair_factory: Any) -> None:
    pair = pair_factory("?consent=1")
    pair.visitor.locator("#next").click()
    pair.visitor.wait_for_url("**/page2.html*")
    pair.replica().locator("#headline", has_text="Second page beta").wait_for(timeout=10_000)
    assert pair.visitor.locator("[data-cobrowse=consent]").count() == 0
    assert pair.visitor.evaluate("window.sessionEvents") == ["continue"]
    assert pair.viewer.locator("body").get_attribute("data-state") == "live"


def test_a_dropped_visitor_socket_resumes_the_session(pair_factory: Any) -> None:
    pair = pair_factory()
    assert pair.visitor_wire.socket_count() == 1
    # The SDK's socket, closed from inside the page with a retryable code.
    pair.visitor.evaluate("window.__sockets[window.__sockets.length - 1].close(4000, 'test drop')")
    wait_for(lambda: pair.visitor_wire.socket_count() >= 2, what="the SDK to reconnect", timeout=15)
    pair.visitor.evaluate("document.getElementById('status').textContent = 'after drop'")
    pair.replica().locator("#status", has_text="after drop").wait_for(timeout=10_000)
    assert pair.visitor.evaluate("window.sessionEvents") == ["start", "continue"]


def test_a_dropped_viewer_socket_resumes_without_losing_frames(pair_factory: Any) -> None:
    pair = pair_factory()
    pair.viewer.evaluate("window.__cobrowseViewer.ws.close(4000, 'test drop')")
    pair.visitor.evaluate("document.getElementById('status').textContent = 'while away'")
    wait_for(lambda: pair.viewer_wire.socket_count() >= 2, what="the viewer to reconnect", timeout=15)
    pair.replica().locator("#status", has_text="while away").wait_for(timeout=10_000)
    pair.visitor.evaluate("document.getElementById('status').textContent = 'back again'")
    pair.replica().locator("#status", has_text="back again").wait_for(timeout=10_000)
    assert pair.viewer.locator("body").get_attribute("data-state") == "live"


def test_a_reloaded_watch_page_rejoins_with_its_resume_token(pair_factory: Any) -> None:
    pair = pair_factory()
    pair.viewer.reload()
    pair.replica().locator("#headline").wait_for(timeout=10_000)
    pair.visitor.evaluate("document.getElementById('status').textContent = 'after viewer reload'")
    pair.replica().locator("#status", has_text="after viewer reload").wait_for(timeout=10_000)


def test_a_dom_change_too_big_for_one_delta_goes_as_a_new_keyframe(pair_factory: Any) -> None:
    pair = pair_factory()
    keyframes_before = pair.visitor_wire.kinds_sent().count(DOM_KEYFRAME)
    pair.visitor.evaluate(
        """() => {
            const p = document.createElement('p');
            p.id = 'huge';
            p.textContent = 'BIG' + 'x'.repeat(200 * 1024);
            document.body.appendChild(p);
        }"""
    )
    wait_for(lambda: pair.replica().locator("#huge").count() == 1, what="the big change in the replica")
    assert pair.visitor_wire.kinds_sent().count(DOM_KEYFRAME) > keyframes_before
    assert max(len(f) for f in pair.visitor_wire.sent if f[1] == DOM_DELTA) <= 64 * 1024


def test_the_console_lists_the_visitor_and_watch_opens_the_demo_session(browser: Any, relay: Any) -> None:
    from .conftest import REST_KEY

    demo_ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    agent_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        demo = demo_ctx.new_page()
        demo.goto(f"{relay.url}/demo")
        short_id = demo.wait_for_function(USER_ID_JS, polling=100).json_value()
        assert demo.locator("#lookup").text_content() != "····"
        console = agent_ctx.new_page()
        console.goto(f"{relay.url}/console")
        console.locator("#key").fill(REST_KEY)
        console.locator("#login-form button").click()
        row = console.locator(f"tr[data-short-id='{short_id}']")
        row.wait_for(timeout=10_000)
        with agent_ctx.expect_page() as opened:
            row.locator("button.watch").click()
        viewer = opened.value
        demo.locator("[data-cobrowse=accept]").click()
        replica = viewer.frame_locator("#replica iframe").first
        replica.locator("#headline", has_text="Welcome to the demo shop").wait_for(timeout=10_000)
        # The demo's masked card field and secret note stay masked in the replica.
        demo.locator("#card").type("4111111111111111")
        demo.locator("#name").type("Ada")
        wait_for(lambda: replica.locator("#name").input_value() == "Ada", what="the name in the replica")
        assert "4111" not in replica.locator("#card").input_value()
        assert "Secret" not in str(replica.locator("#secret-note").text_content())
    finally:
        agent_ctx.close()
        demo_ctx.close()


def test_the_visitor_stop_button_ends_the_session_for_the_agent(pair_factory: Any) -> None:
    pair = pair_factory("?consent=1")
    indicator = pair.visitor.locator("[data-cobrowse=indicator]")
    assert "Ann" in str(indicator.text_content())
    pair.visitor.locator("[data-cobrowse=stop]").click()
    wait_for(lambda: pair.viewer.locator("body").get_attribute("data-state") == "ended", what="the viewer to end")
    assert indicator.count() == 0
    assert pair.visitor.evaluate("window.sessionEvents") == ["start", "end"]
    sent_after = len(pair.visitor_wire.sent)
    pair.visitor.locator("#name").type("after-stop")
    pair.visitor.wait_for_timeout(300)
    assert all(f[1] not in (DOM_KEYFRAME, DOM_DELTA) for f in pair.visitor_wire.sent[sent_after:])


def test_the_agent_end_button_ends_the_session_on_the_visitor_page(pair_factory: Any) -> None:
    pair = pair_factory()
    pair.viewer.locator("#btn-end").click()
    wait_for(lambda: pair.visitor.evaluate("window.sessionEvents") == ["start", "end"], what="the session to end")
    assert pair.visitor.locator("[data-cobrowse=indicator]").count() == 0
    assert pair.viewer.locator("body").get_attribute("data-state") == "ended"


def test_console_eval_runs_only_when_both_the_grant_and_the_page_allow_it(pair_factory: Any) -> None:
    pair = pair_factory("?console=1", allow_console=True)
    viewer = pair.viewer
    viewer.locator("#btn-console").click()
    viewer.locator("#console-input").fill("document.title + ':' + (6 * 7)")
    viewer.locator("#console-input").press("Enter")
    viewer.locator("#console-out .result", has_text="Visitor alpha:42").wait_for(timeout=10_000)

    # The grant allows the console but the page does not: the relay narrows the
    # permissions to what the page allows, and the SDK would refuse anyway.
    other = pair_factory("", allow_console=True)
    wait_for(lambda: "console" not in str(other.viewer.locator("body").get_attribute("data-permissions")))
    assert other.viewer.locator("#btn-console").is_hidden()
    other.viewer.evaluate("window.__cobrowseViewer.send('CONSOLE_EVAL', {code: 'window.pwned = 1'})")
    other.viewer.evaluate("window.__cobrowseViewer.send('VIEWER_POINTER', {x: 1, y: 1})")
    wait_for(lambda: 0x38 in other.visitor_wire.kinds_received(), what="the pointer at the visitor")
    assert other.visitor.evaluate("window.pwned") is None


def test_branding_from_the_grant_hides_the_chrome_and_sends_the_agent_to_on_end_url(browser: Any, relay: Any) -> None:
    visitor, short_id, _ = open_visitor(browser, relay)
    end_url = f"{relay.site}/page2.html?ended=1"
    url = relay.rest(
        "POST",
        f"/visitors/{short_id}/watch_url",
        {
            "agent": {"id": "7", "name": "Bo"},
            "permissions": {},
            "branding": {"naked": True, "no_bottom_bar": True, "on_end_url": end_url, "retry_url": None},
        },
    )["watch_url"]
    viewer = browser.new_context().new_page()
    try:
        viewer.goto(url)
        viewer.frame_locator("#replica iframe").first.locator("#headline").wait_for(timeout=10_000)
        assert viewer.locator("header").is_hidden()
        assert viewer.locator("footer").is_hidden()
        visitor.locator("[data-cobrowse=stop]").click()
        viewer.wait_for_url(end_url, timeout=10_000)
    finally:
        viewer.context.close()
        visitor.context.close()


def test_a_seq_gap_makes_the_viewer_ask_for_a_resync_and_rebuild(pair_factory: Any) -> None:
    pair = pair_factory()
    viewer = pair.viewer
    keyframes = viewer.evaluate("window.__cobrowseViewer.seen.DOM_KEYFRAME")
    # A delta from the future: seq + 5 means frames were lost in between.
    viewer.evaluate(
        """() => {
            const v = window.__cobrowseViewer;
            const fields = {data: new Uint8Array()};
            v.onFrame({kind: 'DOM_DELTA', code: 0x11, epoch: v.epoch, seq: v.seq + 5, fields});
        }"""
    )
    wait_for(lambda: 0x54 in pair.viewer_wire.kinds_sent(), what="RESYNC_REQUEST from the viewer")
    wait_for(
        lambda: viewer.evaluate("window.__cobrowseViewer.seen.DOM_KEYFRAME") > keyframes, what="the keyframe again"
    )
    pair.visitor.evaluate("document.getElementById('status').textContent = 'after resync'")
    pair.replica().locator("#status", has_text="after resync").wait_for(timeout=10_000)
