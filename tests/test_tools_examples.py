"""The example flows. Order status end to end: a simulated caller talks (speech and keypad) through
the real gateway to the embedded local model, which calls the example's http tool; the test checks
the tool's effect on the demo API and what the agent said in the call log. Appointments: the same
agent file, loader and runner, driven tool by tool; the booking's effect is checked on disk."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import socket
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import uvicorn

from examples.appointments.booking import read_bookings
from examples.order_status.demo_api import create_app
from tests.harness import AUTH_TOKEN, running_gateway
from voicegw.tools.contract import HangUp, ToolContext
from voicegw.config import Settings
from voicegw.sim.caller import SimulatedCaller
from voicegw.tools.routing import AgentRegistry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_TOKEN = "demo-api-token-for-tests"


@contextlib.asynccontextmanager
async def demo_api() -> AsyncIterator[tuple[Any, int]]:
    """The order_status demo API on 127.0.0.1, served from this event loop."""
    app = create_app(DEMO_TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # requests wait in the backlog until the server accepts them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield app, sock.getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task
        sock.close()


async def greeted(caller: SimulatedCaller) -> None:
    await caller.start()
    await caller.wait_for_audio(20)
    await caller.wait_for_silence(1000, 30)


async def turn(caller: SimulatedCaller, *, say: str = "", keys: str = "") -> None:
    """Speak and/or press keys, then wait for the agent's whole answer."""
    frames = len(caller.result.media_times_ms)
    if say:
        caller.speak(clear_speech(say))
    for key in keys:
        await caller.send_dtmf(key)
    await caller.wait_for_audio(30, frames + 1)
    await caller.wait_for_silence(1200, 40)


def clear_speech(text: str) -> bytes:
    """Slow US-English espeak-ng speech (PCM16 8 kHz), which the local model's recogniser follows best."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "110", "--stdout", text], check=True,
                         capture_output=True, timeout=30).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    return (np.clip(soxr.resample(samples, rate, 8000), -1, 1) * 32767).astype("<i2").tobytes()


def agent_lines(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["transcript"] if t["role"] == "agent"]


def tool_call(record: dict[str, Any], name: str) -> dict[str, Any]:
    calls = [c for c in record["tool_calls"] if c["name"] == name]
    assert len(calls) == 1, record["tool_calls"]
    return calls[0]


@pytest.mark.e2e
async def test_order_status_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_TOKEN", DEMO_TOKEN)
    async with demo_api() as (api, port):
        monkeypatch.setenv("DEMO_API_URL", f"http://127.0.0.1:{port}")
        async with running_gateway(agent_yaml=EXAMPLES / "order_status" / "agent.yaml",
                                   tool_hosts=("127.0.0.1",)) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            try:
                await greeted(caller)
                await turn(caller, say="lookup order")
                await turn(caller, keys="1234#")
            finally:
                result = await caller.hang_up()
            record = await gw.call_record(result.call_sid)

    # the tool's effect: the demo API saw exactly one authorized request for that order
    assert api.state.requests == [{"method": "GET", "path": "/orders/1234", "order_id": "1234", "authorized": True}]
    lookup = tool_call(record, "lookup_order")
    assert lookup["arguments"] == {"order_id": "1234"} and lookup["ok"] is True
    assert lookup["result"]["status"] == "shipped"
    assert lookup["result"]["customer"]["phone"] == "[redacted]"
    # what the agent said: the status it got from the API
    lines = agent_lines(record)
    assert lines[0].startswith("Hello, this is Acme Shop.")
    assert any("order id" in line.lower() for line in lines), lines  # it asked for the number
    assert any("status shipped" in line and "UPS" in line for line in lines), lines
    assert DEMO_TOKEN not in json.dumps(record)


async def test_appointments_flow_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The appointments flow's tools in the order a conversation uses them. (The local model's
    recogniser does not pick up this flow's words from synthesized speech, so this flow is driven
    at the tool level: same agent file, same loader, same runner as the gateway uses.)"""
    bookings = tmp_path / "bookings.jsonl"
    monkeypatch.setenv("APPOINTMENTS_BOOKINGS", str(bookings))
    entry = AgentRegistry.load(Settings(agent_path=EXAMPLES / "appointments" / "agent.yaml")).default
    assert [d.name for d in entry.session_config().tools] == ["find_slots", "book_slot", "hang_up"]
    ctx = ToolContext("CA1", "MZ1", "+15550107777", "+15550100003", entry.key)
    run = entry.tools.run

    free = await run(ctx, "find_slots", json.dumps({"weekday": "tuesday"}))
    assert free.ok and [r["slot_id"] for r in json.loads(free.output)["rows"]] == ["201", "202"]
    bad_day = await run(ctx, "find_slots", json.dumps({"weekday": "sunday"}))
    assert not bad_day.ok and "is not one of" in json.loads(bad_day.output)["problems"][0]

    booked = await run(ctx, "book_slot", json.dumps({"slot_id": "201"}))
    assert booked.ok and json.loads(booked.output)["confirmation_code"] == "A201"
    again = await run(ctx, "book_slot", json.dumps({"slot_id": "201"}))
    assert not again.ok and again.error == "slot 201 is already booked; offer another slot"
    unknown = await run(ctx, "book_slot", json.dumps({"slot_id": "999"}))
    assert not unknown.ok and "no slot 999" in (unknown.error or "")
    assert [(b["slot_id"], b["weekday"], b["time"], b["caller"]) for b in read_bookings(bookings)] == [
        ("201", "tuesday", "10:00", "+15550107777")
    ]

    bye = await run(ctx, "hang_up", "{}")
    assert bye.ok and bye.effect == HangUp()
