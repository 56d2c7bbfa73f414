"""End-to-end harness: a real uvicorn-served gateway on 127.0.0.1 with the embedded local model.

    async with running_gateway(agent_yaml=..., env={...}) as gw:
        caller = SimulatedCaller(gw.url, ...)

Everything binds to 127.0.0.1 on an ephemeral port and is torn down on exit.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import uvicorn

from voicegw.config import Settings
from voicegw.gateway import Gateway
from voicegw.server import assemble
from voicegw.telephony.fastmedia import MediaUpgrade
from voicegw.telephony.rest import TwilioRest

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
LONG_GREETING = (
    "Hello and welcome to Acme support. I can help you check an order, book an appointment, "
    "or answer questions about our opening hours. Please tell me what you need today."
)  # steady agent speech to talk over
# a plain support agent in passthrough audio: the calls of runtime and fault tests
SUPPORT_AGENT = """
name: support
instructions: You are a friendly support agent for Acme.
greeting: "Hello! How can I help you today?"
audio_mode: g711_ulaw
"""
OPERATOR_TOKEN = "op-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayHandle:
    url: str
    settings: Settings
    gateway: Gateway
    calllog: Any
    auth_token: str | None

    async def call_record(self, call_sid: str, timeout: float = 10.0) -> dict[str, Any]:
        """The call's stored record once the call has ended and its events are written."""
        await self.gateway.wait_finished(call_sid, timeout)
        async with asyncio.timeout(timeout):
            await self.calllog.flush()
            rec = await self.calllog.store.get_call(call_sid)
            assert rec is not None, f"no call record for {call_sid}"
            return rec


@contextlib.asynccontextmanager
async def running_gateway(
    *,
    agent_yaml: str | Path | None = None,
    routing: str | Path | None = None,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    signed: bool = True,
    public_url: bool = False,
    rest: TwilioRest | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayHandle]:
    """`public_url`: VOICEGW_PUBLIC_URL is the gateway's own address (outbound calls need one);
    `rest`: the Twilio REST client (e.g. over tests.fake_twilio_rest)."""
    with tempfile.TemporaryDirectory(prefix="voicegw-test-") as tmp:
        environ = {"VOICEGW_OPERATOR_TOKENS": OPERATOR_TOKEN}
        if signed:
            environ["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
        environ.update(env or {})
        agent_path = routing_path = None
        if isinstance(agent_yaml, Path):
            agent_path = agent_yaml
        elif agent_yaml is not None:  # YAML text
            agent_path = Path(tmp) / "agent.yaml"
            agent_path.write_text(agent_yaml)
        if routing is not None:
            routing_path = Path(routing)
        port = free_port()
        overrides.setdefault("dev_mode", not signed)
        if public_url:
            overrides.setdefault("public_url", f"http://127.0.0.1:{port}")
        settings = Settings.from_env(
            environ, host="127.0.0.1", port=port, data_dir=Path(tmp), agent_path=agent_path,
            routing_path=routing_path, database_url=database_url, **overrides)
        assembled = await assemble(settings, rest=rest)
        config = uvicorn.Config(assembled.app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on", ws_per_message_deflate=False, ws=MediaUpgrade)
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    if task.done():
                        task.result()
                        raise RuntimeError("gateway exited during start-up")
                    await asyncio.sleep(0.01)
            yield GatewayHandle(f"http://127.0.0.1:{port}", settings, assembled.gateway, assembled.calllog,
                                AUTH_TOKEN if signed else None)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await task
            await assembled.calllog.aclose()
