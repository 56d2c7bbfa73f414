"""No model session to be had, end to end: the caller hears an apology and the call ends cleanly.

Three broken models -- one that accepts TCP and never answers the WebSocket handshake, one that
is down (connection refused), one that answers HTTP 500 -- behind a real gateway and a simulated
Twilio caller. Whatever the failure, the call is given up within the model connect budget
(VOICEGW_MODEL_CONNECT_BUDGET, 4 s): the caller hears the apology the gateway synthesized at
start-up, and the call ends within 8 s of the webhook, logged as "model_unavailable".

Needs the gateway to pass `connect_budget_s`, `overflow_number`, `unavailable_audio_b64` and
`redact_transcripts` into CoreOptions (voicegw/gateway.py `create_call`), and to synthesize the
apology at start-up.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.harness import AUTH_TOKEN, SUPPORT_AGENT, free_port, running_gateway
from voicegw.sim.caller import SimulatedCaller

pytestmark = pytest.mark.e2e

AGENT = SUPPORT_AGENT
WITHIN_S = 8.0  # webhook -> call over, the apology included
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the connection, reads the upgrade request, never answers it."""
    with contextlib.suppress(Exception):
        await reader.read()
    writer.close()

async def _http_500(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error": {"message": "The server had an error", "type": "server_error"}}'
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
    writer.close()

@contextlib.asynccontextmanager
async def broken_model(kind: str) -> AsyncIterator[int]:
    """The port of a model that is broken in the way `kind` says."""
    if kind == "refused":
        yield free_port()  # nothing listens there
        return
    handler: Handler = _silent if kind == "silent" else _http_500
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ in ("_silent", "_http_500")]:
            task.cancel()

@pytest.mark.parametrize("kind", ["silent", "refused", "http_500"])
async def test_the_caller_hears_an_apology_and_the_call_ends_cleanly(kind: str) -> None:
    async with broken_model(kind) as port:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
        async with running_gateway(agent_yaml=AGENT, env=env) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            began = time.monotonic()
            result = await caller.run(duration_s=20, timeout_s=20)
            took = time.monotonic() - began
            record = await gw.call_record(result.call_sid)
    assert result.closed_by == "gateway", result.summary()
    assert took < WITHIN_S, f"the call took {took:.1f}s to end: {result.summary()}"
    assert result.heard_ms >= 1000, f"no audible apology: {result.summary()}"
    assert record["end_reason"] == "model_unavailable"
    errors = [e for e in record["errors"] if e.get("code") == "model_unavailable"]
    assert len(errors) == 1, record["errors"]
    assert record["transcript"] == []  # no model ever spoke

async def test_with_an_overflow_number_the_caller_is_transferred_after_the_apology() -> None:

    async with broken_model("refused") as port:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
               "VOICEGW_OVERFLOW_NUMBER": "+15550100999"}
        async with running_gateway(agent_yaml=AGENT, env=env) as gw:
            controls: list[tuple[str, str | None]] = []

            async def control(call_sid: str, act: object) -> None:
                controls.append((getattr(act, "kind"), getattr(act, "target")))

            gw.gateway.call_control = control  # type: ignore[method-assign]
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            result = await caller.run(duration_s=20, timeout_s=20)
            record = await gw.call_record(result.call_sid)
    assert controls == [("transfer", "+15550100999")]
    assert result.heard_ms >= 1000, result.summary()
    assert record["end_reason"] == "model_unavailable"
