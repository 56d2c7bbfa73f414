"""The console in real headless Chromium: live transcript, barge-ins and tool calls, no XSS."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

from calllog_support import serve_console
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.service import open_calllog
from voicegw.config import Settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-op-token"
XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=1</script>"
WAIT_MS = 10_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"CHROMIUM NOT FOUND at {CHROMIUM}: install Debian's chromium (make sysdeps)", pytrace=False)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        try:
            yield b
        finally:
            await b.close()


async def login(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/console", timeout=WAIT_MS)
    assert page.url.endswith("/console/login")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/console", timeout=WAIT_MS)


async def wait_text(page: Page, selector: str, text: str) -> None:
    await page.locator(selector, has_text=text).first.wait_for(timeout=WAIT_MS)


async def test_live_call_page_with_published_events(browser: Browser, tmp_path: Path) -> None:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    errors: list[str] = []
    try:
        async with serve_console(svc, Settings.from_env({}, operator_tokens=(TOKEN,))) as base:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await login(page, base, TOKEN)

            t0 = time.time()
            svc.call_started(CallInfo("CAB1", "MZB1", "+15550001111", "+15559990000", "support", t0))
            svc.event("CAB1", CallLogEntry("transcript", t0, {"role": "agent", "item_id": "g", "text": "Hello, Acme support."}))
            await svc.flush()
            # the calls page lists the active call
            await page.reload()
            await wait_text(page, "#calls tbody tr", "+15550001111")
            row = page.locator("#calls tbody tr[data-sid='CAB1']")
            assert await row.get_attribute("data-status") == "active"
            await row.click()
            await page.wait_for_url(base + "/console/calls/CAB1", timeout=WAIT_MS)
            await wait_text(page, "#transcript li", "Hello, Acme support.")
            await wait_text(page, "#live-state", "live")

            # live: each event appears without a reload
            sent = time.monotonic()
            svc.event("CAB1", CallLogEntry("transcript", time.time(), {"role": "caller", "item_id": "c1", "text": "Where is order 42?"}))
            await wait_text(page, "#transcript li.caller", "Where is order 42?")
            print(f"event to screen: {1000 * (time.monotonic() - sent):.0f} ms")
            svc.event("CAB1", CallLogEntry("transcript", time.time(), {"role": "agent", "item_id": "a1", "text": "Let me look that up and tell you everything"}))
            svc.event("CAB1", CallLogEntry("barge_in", time.time(), {"item_id": "a1", "heard_ms": 640, "produced_ms": 1800, "action": "truncate", "cancelled": True}))
            svc.event("CAB1", CallLogEntry("transcript", time.time(), {"role": "agent", "item_id": "a1", "text": "Let me look", "cut": True}))
            svc.event("CAB1", CallLogEntry("tool.call", time.time(), {"call_id": "t1", "name": "track_order", "arguments": '{"order_id": "42"}'}))
            svc.event("CAB1", CallLogEntry("tool.result", time.time(), {"call_id": "t1", "name": "track_order", "ok": True, "result": {"eta": "Friday"}, "duration_ms": 120.0}))
            svc.event("CAB1", CallLogEntry("turn.latency", time.time(), {"item_id": "a1", "latency_ms": 512.0}))
            svc.event("CAB1", CallLogEntry("transcript", time.time(), {"role": "caller", "item_id": "c2", "text": XSS}))

            await wait_text(page, "#barge-ins li", "heard 640 ms of 1800 ms produced")
            await wait_text(page, "#barge-ins li .generated", "Let me look that up and tell you everything")
            await wait_text(page, "#barge-ins li .heard", "Let me look")
            await wait_text(page, "details.tool[data-tool='track_order'] summary", "ok")
            assert await page.locator("details.tool").get_attribute("open") is None  # collapsed
            assert await page.locator("details#raw").get_attribute("open") is None
            await page.click("details#raw > summary")
            await wait_text(page, "#timeline tr[data-kind='barge_in']", "heard 640 ms of 1800 ms produced")
            await wait_text(page, "#timeline tr[data-kind='tool.call']", 'track_order({"order_id": "42"})')
            await wait_text(page, "#timeline tr[data-kind='tool.result']", '{"eta":"Friday"}')
            await wait_text(page, "#latency li", "512 ms")
            cut = page.locator("#transcript li.agent.cut")
            await cut.wait_for(timeout=WAIT_MS)
            assert (await cut.locator(".text").text_content()) == "Let me look"

            # the script payload is shown as text and never runs
            await wait_text(page, "#transcript li.caller", "<img src=x onerror")
            texts = await page.locator("#transcript li.caller .text").all_text_contents()
            assert XSS in texts
            assert await page.evaluate("window.__xss") is None
            assert await page.locator("#transcript img, #timeline img, #transcript script").count() == 0

            svc.call_ended("CAB1", "caller_hangup", time.time())
            await wait_text(page, "#status", "completed")
            await wait_text(page, "#end-reason", "caller_hangup")
            assert errors == []
            await page.close()
    finally:
        await svc.aclose()


ORDERS_AGENT = """
name: orders
instructions: Ask for the order number, then call lookup_order and tell the caller the status.
greeting: "Hello, this is Acme Shop. I can check your order status, tell you when it ships, and help with returns. What is your order number?"
tools:
  - name: lookup_order
    description: Look up the status of an order by its order number.
    parameters:
      type: object
      properties:
        order_id: {type: string, description: "The order number, digits only.", pattern: "^[0-9]{3,10}$"}
      required: [order_id]
    builtin: {name: lookup, table: orders.csv, key: order_id, columns: [status, eta]}
"""


async def test_real_simulated_call_appears_live(browser: Browser, tmp_path: Path) -> None:
    from harness import AUTH_TOKEN, OPERATOR_TOKEN, running_gateway
    from speech import speech_pcm8k
    from voicegw.sim.caller import SimulatedCaller
    from voicegw.sim.source import AudioSchedule

    (tmp_path / "orders.csv").write_text("order_id,status,eta\n1234,shipped,Friday\n")
    (tmp_path / "agent.yaml").write_text(ORDERS_AGENT)
    async with running_gateway(agent_yaml=tmp_path / "agent.yaml") as gw:
        page = await browser.new_page()
        await login(page, gw.url, OPERATOR_TOKEN)
        # the caller talks over the greeting 2.5 s in: its first sentence (1.4-1.7 s) was heard whole
        interrupt = AudioSchedule.from_segments([(2500, speech_pcm8k("Wait, stop please, I have a question."))])
        caller = SimulatedCaller(gw.url, audio=interrupt, auth_token=AUTH_TOKEN)
        try:
            # the call page is open before the call starts: everything arrives live
            await page.goto(f"{gw.url}/console/calls/{caller.call_sid}", timeout=WAIT_MS)
            await wait_text(page, "#live-state", "live")
            await caller.start()
            await page.click("details#raw > summary")
            await page.locator("#timeline tr[data-kind='barge_in']").first.wait_for(timeout=20_000)
            await wait_text(page, "#transcript li.agent.cut", "Hello, this is Acme Shop.")
            # ask once the agent has answered the interruption, as a turn of its own
            await page.locator("#transcript li.agent").nth(1).wait_for(timeout=20_000)
            await caller.wait_for_silence(1200, 30)
            # the local model's recogniser may mishear; a caller asked to repeat says it again
            asked = page.locator("#transcript li.agent", has_text="order id")
            for _ in range(3):
                frames = len(caller.result.media_times_ms)
                caller.speak(speech_pcm8k("I want to check my order status."))
                await caller.wait_for_audio(30, frames + 1)
                await caller.wait_for_silence(1200, 40)
                if await asked.count():
                    break
            assert await asked.count(), await page.locator("#transcript").text_content()
            for key in "1234#":
                await caller.send_dtmf(key)
            await wait_text(page, "#timeline tr[data-kind='tool.call']", "lookup_order")
            await wait_text(page, "#timeline tr[data-kind='tool.result']", "shipped")
            await page.locator("#transcript li.caller").first.wait_for(timeout=WAIT_MS)
            await page.locator("#latency li").first.wait_for(timeout=WAIT_MS)
        finally:
            await caller.hang_up()
        await wait_text(page, "#status", "completed")
        await page.close()


def seed(svc, now: float) -> None:
    """Three calls: a finished one with a full conversation, one with a failed tool, one live."""
    t0 = now - 2 * 3600
    svc.call_started(CallInfo("CAOVER1", "MZO1", "+15550001111", "+15559990000", "order-status", t0))
    for dt, kind, data in [
        (0.0, "transcript", {"role": "agent", "item_id": "g", "text": "Hello, this is Acme Shop."}),
        (3.0, "speech.stopped", {"audio_end_ms": 3000}),
        (3.2, "transcript", {"role": "caller", "item_id": "c1", "text": "Where is my order 1234? " + XSS}),
        (3.35, "response.started", {"response_id": "r1"}),
        (3.62, "turn.latency", {"item_id": "a1", "latency_ms": 620.0}),
        (3.7, "tool.call", {"call_id": "t1", "name": "lookup_order", "arguments": '{"order_id": "1234"}'}),
        (3.9, "tool.result", {"call_id": "t1", "name": "lookup_order", "ok": True,
                              "result": {"status": "shipped", "note": XSS}, "duration_ms": 200.0}),
        (4.0, "transcript", {"role": "agent", "item_id": "a1", "text": "Order 1234 has shipped and arrives on Friday by UPS."}),
        (5.0, "barge_in", {"item_id": "a1", "heard_ms": 1400, "produced_ms": 3900, "action": "truncate", "cancelled": True}),
        (5.1, "transcript", {"role": "agent", "item_id": "a1", "text": "Order 1234 has shipped", "cut": True}),
        (8.0, "speech.stopped", {"audio_end_ms": 8000}),
        (8.1, "response.started", {"response_id": "r2"}),
        (8.41, "turn.latency", {"item_id": "a2", "latency_ms": 410.0}),
    ]:
        svc.event("CAOVER1", CallLogEntry(kind, t0 + dt, data))
    svc.call_ended("CAOVER1", "caller_hangup", t0 + 30)
    t1 = now - 3600
    svc.call_started(CallInfo("CAOVER2", "MZO2", "+15550002222", "+15559990000", "appointments", t1))
    svc.event("CAOVER2", CallLogEntry("transcript", t1 + 1, {"role": "caller", "item_id": "c1", "text": "Book me on Monday."}))
    svc.event("CAOVER2", CallLogEntry("tool.call", t1 + 2, {"call_id": "t2", "name": "book_slot", "arguments": {"slot_id": "7"}}))
    svc.event("CAOVER2", CallLogEntry("tool.result", t1 + 3, {"call_id": "t2", "name": "book_slot", "ok": False, "error": "slot taken"}))
    svc.event("CAOVER2", CallLogEntry("turn.latency", t1 + 4, {"item_id": "a9", "latency_ms": 1500.0}))
    svc.call_ended("CAOVER2", "agent_hangup", t1 + 20)
    svc.call_started(CallInfo("CALIVE1", "MZL1", "+15550003333", "+15559990000", "order-status", now - 5))
    svc.event("CALIVE1", CallLogEntry("transcript", now - 4, {"role": "agent", "item_id": "g", "text": "Hello, this is Acme Shop."}))


async def test_every_console_page(browser: Browser, tmp_path: Path) -> None:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    errors: list[str] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        seed(svc, time.time())
        await svc.flush()
        async with serve_console(svc, Settings.from_env({}, operator_tokens=(TOKEN,))) as base:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            await login(page, base, TOKEN)

            # / leads to the console; the favicon is the console's own SVG
            await page.goto(base + "/", timeout=WAIT_MS)
            await page.wait_for_url(base + "/console", timeout=WAIT_MS)
            icon = await page.request.get(base + "/favicon.ico")
            assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
            assert await page.locator("link[rel=icon]").get_attribute("href") == "/console/static/favicon.svg"

            # calls list: every column
            row = page.locator("#calls tbody tr[data-sid='CAOVER1']")
            await row.wait_for(timeout=WAIT_MS)
            cells = await row.locator("td").all_text_contents()
            assert cells[0] == "completed" and cells[1] == "CAOVER1"
            assert cells[4:7] == ["+15550001111", "+15559990000", "order-status"], cells
            assert cells[7].startswith("Where is my order 1234? <img src=x") and cells[7].endswith("…"), cells
            assert cells[8:] == ["3", "410 ms", "1", "1", "caller_hangup"], cells  # p50 of 620 and 410
            two = await page.locator("#calls tbody tr[data-sid='CAOVER2'] td").all_text_contents()
            assert two[6] == "appointments" and two[10] == "1 (1 failed)" and two[12] == "agent_hangup", two
            # live: a listed call's figures follow its events
            svc.event("CALIVE1", CallLogEntry("barge_in", time.time(), {"item_id": "g", "heard_ms": 300, "produced_ms": 900, "action": "truncate"}))
            await wait_text(page, "#calls tbody tr[data-sid='CALIVE1'] td.barge-ins", "1")
            await page.screenshot(path=str(shots / "calls.png"), full_page=True)

            # call page: waterfall, generated vs heard, tool panels, raw events collapsed, no recording
            await page.locator("#calls tbody tr[data-sid='CAOVER1'] td.agent").click()
            await page.wait_for_url(base + "/console/calls/CAOVER1", timeout=WAIT_MS)
            await wait_text(page, "#latency li.turn", "620 ms")
            first = page.locator("#latency li.turn").first
            assert "model 350 ms · first audio +270 ms · speech ended at +3.00 s" in (await first.locator(".turn-legend").text_content() or "")
            assert "Where is my order 1234?" in (await first.locator(".turn-said").text_content() or "")
            widths = [await first.locator(".bar").nth(i).evaluate("n => n.getBoundingClientRect().width") for i in (0, 1)]
            assert widths[0] > widths[1] > 0 and widths[0] / widths[1] == pytest.approx(350 / 270, rel=0.05)
            second = page.locator("#latency li.turn").nth(1)
            await second.wait_for(timeout=WAIT_MS)
            assert "410 ms" in (await second.text_content() or "")
            assert await second.locator(".turn-said").text_content() == ""  # the caller said nothing new
            await wait_text(page, "#barge-ins li .generated", "Order 1234 has shipped and arrives on Friday by UPS.")
            assert await page.locator("#barge-ins li .heard").text_content() == "Order 1234 has shipped"
            tool = page.locator("details.tool[data-tool='lookup_order']")
            assert await tool.get_attribute("open") is None
            await tool.locator("summary").click()
            assert '"order_id": "1234"' in (await tool.locator(".tool-args").text_content() or "")
            assert XSS in (await tool.locator(".tool-result").text_content() or "")
            assert await page.locator("details#raw").get_attribute("open") is None
            assert not await page.locator("#timeline").is_visible()
            assert await page.locator("#recording").is_hidden()
            assert await page.locator("#recording *").count() == 0
            assert await page.evaluate("window.__xss") is None
            assert await page.locator("img, script:not([src])").count() == 0
            await page.screenshot(path=str(shots / "call.png"), full_page=True)

            # live view: active calls only, updated as events arrive, gone when the call ends
            await page.goto(base + "/console/live", timeout=WAIT_MS)
            await wait_text(page, "#live-state", "live")
            card = page.locator("li.live-call[data-sid='CALIVE1']")
            await card.wait_for(timeout=WAIT_MS)
            assert await page.locator("li.live-call").count() == 1
            assert await page.locator("#active-count").text_content() == "1"
            svc.event("CALIVE1", CallLogEntry("transcript", time.time(), {"role": "caller", "item_id": "c1", "text": "Is my parcel late?"}))
            svc.event("CALIVE1", CallLogEntry("turn.latency", time.time(), {"item_id": "a1", "latency_ms": 733.0}))
            await wait_text(page, "li.live-call[data-sid='CALIVE1'] .last-said", "caller: Is my parcel late?")
            await wait_text(page, "li.live-call[data-sid='CALIVE1'] .latency", "733 ms")
            svc.call_started(CallInfo("CALIVE2", "MZL2", "+15550004444", "+15559990000", "appointments", time.time()))
            await page.locator("li.live-call[data-sid='CALIVE2']").wait_for(timeout=WAIT_MS)
            await wait_text(page, "#active-count", "2")
            await page.screenshot(path=str(shots / "live.png"), full_page=True)
            svc.call_ended("CALIVE2", "caller_hangup", time.time())
            await page.locator("li.live-call[data-sid='CALIVE2']").wait_for(state="detached", timeout=WAIT_MS)

            # overview: figures computed by the API from the store
            await page.goto(base + "/console/overview", timeout=WAIT_MS)
            await wait_text(page, "#calls-total", "4")
            assert await page.locator("#p50").text_content() == "620 ms"  # 410, 620, 733, 1500
            assert await page.locator("#p95").text_content() == "1500 ms"
            assert await page.locator("#tool-errors").text_content() == "50.0 % of 2"
            reasons = await page.locator("#end-reasons .hbar-label").all_text_contents()
            assert sorted(reasons) == ["active", "agent_hangup", "caller_hangup"], reasons
            assert await page.locator("#per-hour .hbar").count() >= 2
            await page.screenshot(path=str(shots / "overview.png"), full_page=True)
            print(f"screenshots in {shots}")
            assert errors == []
            await page.close()
    finally:
        await svc.aclose()


async def test_call_page_plays_the_recording(browser: Browser, tmp_path: Path) -> None:
    """A recorded call's page has a player, and the console's CSP lets Chromium load the WAV; an
    interrupted call's partial recording is offered too."""
    import base64

    from voicegw.recording.files import recording_path
    from voicegw.recording.recorder import Recorder

    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    errors: list[str] = []
    rec_dir = tmp_path / "recordings"
    try:
        t0 = time.time() - 60
        svc.call_started(CallInfo("CAREC1", "MZR1", "+15550005555", "+15559990000", "support", t0))
        rec = Recorder(recording_path(rec_dir, "CAREC1"), "dual", "CAREC1")
        rec.start(0.0)
        rec.agent(0.1, base64.b64encode(bytes([0x20]) * 4000).decode())
        summary = rec.close(1.5)
        assert summary is not None
        for entry in summary.log_entries("CAREC1", t0 + 2):
            svc.event("CAREC1", entry)
        svc.call_ended("CAREC1", "caller_hangup", t0 + 2)
        # a call whose gateway died mid-call: no recording.ready, a file that was never closed
        svc.call_started(CallInfo("CAREC2", "MZR2", "+15550005555", "+15559990000", "support", t0))
        crashed = Recorder(recording_path(rec_dir, "CAREC2"), "mixed", "CAREC2")
        crashed.start(0.0)
        for ms in range(0, 3000, 20):
            crashed.caller(ms / 1000, ms, base64.b64encode(bytes([0x20]) * 160).decode())
        await svc.flush()
        assert await svc.store.mark_interrupted(stale_before=time.time() + 1) == 1
        settings = Settings.from_env({"VOICEGW_RECORDINGS_DIR": str(rec_dir)}, operator_tokens=(TOKEN,))
        async with serve_console(svc, settings) as base:
            page = await browser.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
            await login(page, base, TOKEN)
            await page.goto(base + "/console/calls/CAREC1", timeout=WAIT_MS)
            audio = page.locator("#recording audio")
            await audio.wait_for(timeout=WAIT_MS)
            assert await audio.get_attribute("src") == "/api/calls/CAREC1/recording"
            duration = await audio.evaluate("""a => new Promise(done => {
                a.addEventListener("loadedmetadata", () => done(a.duration));
                a.addEventListener("error", () => done(-1));
                a.preload = "auto";
                a.load();
            })""")
            assert duration == pytest.approx(1.5, abs=0.01)
            await page.goto(base + "/console/calls/CAREC2", timeout=WAIT_MS)
            await page.locator("#recording audio").wait_for(timeout=WAIT_MS)
            record = await (await page.request.get(base + "/api/calls/CAREC2")).json()
            assert record["recording"] == {"url": "/api/calls/CAREC2/recording", "content_type": "audio/wav",
                                           "complete": False}
            assert errors == [], "the console's CSP refused something"
            await page.close()
        crashed.close(3.0)
    finally:
        await svc.aclose()


async def test_call_page_shows_what_the_call_came_to(browser: Browser, tmp_path: Path) -> None:
    """Answering verdict, warm transfer steps, the post-call summary and a flagged extraction."""
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        t0 = time.time() - 60
        svc.call_started(CallInfo("CAOUT1", "MZU1", "+15559990000", "+15550006666", "support", t0))
        for dt, kind, data in [
            (1.0, "amd", {"answered_by": "human", "detection_ms": 2100, "waited": True}),
            (9.0, "transfer", {"mode": "warm", "phase": "dialing", "target": "+15550100999",
                               "summary": "Refund for order 4417."}),
            (20.0, "transfer", {"mode": "warm", "phase": "not_answered", "status": "no-answer",
                                "target": "+15550100999"}),
            (40.0, "call.ended", {"reason": "caller_hangup"}),
            (41.0, "post_call", {"summary": "The caller wants a refund for order 4417. " + XSS,
                                 "extraction": {"order_id": 4417}, "extraction_valid": False,
                                 "extraction_errors": ["order_id: 4417 is not of type 'string'"]}),
        ]:
            svc.event("CAOUT1", CallLogEntry(kind, t0 + dt, data))
        svc.call_ended("CAOUT1", "caller_hangup", t0 + 41)
        await svc.flush()
        async with serve_console(svc, Settings.from_env({}, operator_tokens=(TOKEN,))) as base:
            page = await browser.new_page()
            await login(page, base, TOKEN)
            await page.goto(base + "/console/calls/CAOUT1", timeout=WAIT_MS)
            await wait_text(page, "#outcome dd", "The caller wants a refund for order 4417.")
            outcome = await page.locator("#outcome").inner_text()
            assert "human" in outcome and "Refund for order 4417." in outcome
            assert "warm to +15550100999: not_answered (no-answer)" in outcome
            assert "no: order_id: 4417 is not of type 'string'" in outcome
            assert await page.locator("#outcome script, #outcome img").count() == 0  # text, never markup
            await page.close()
    finally:
        await svc.aclose()
