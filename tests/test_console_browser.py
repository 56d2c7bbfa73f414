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
        # the caller talks over the greeting 1.5 s in
        interrupt = AudioSchedule.from_segments([(1500, speech_pcm8k("Wait, stop please, I have a question."))])
        caller = SimulatedCaller(gw.url, audio=interrupt, auth_token=AUTH_TOKEN)
        try:
            # the call page is open before the call starts: everything arrives live
            await page.goto(f"{gw.url}/console/calls/{caller.call_sid}", timeout=WAIT_MS)
            await wait_text(page, "#live-state", "live")
            await caller.start()
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
