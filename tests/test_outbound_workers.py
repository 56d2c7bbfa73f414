"""An outbound call placed by one process stays with it, whichever process Twilio reaches: its voice
webhook and its answering-machine verdict are forwarded to the owner (over its Unix socket when it
is another worker of the replica, over HTTP to its VOICEGW_REPLICA_URL when it is another replica),
and its media stream is relayed there. Two gateways in this process stand for the two."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import uvicorn

from tests.fake_twilio_rest import FakeTwilioRest
from tests.harness import AUTH_TOKEN, OPERATOR_TOKEN, free_port
from tests.test_outbound import AC, AGENT, CONTEXT, FROM, TO, amd_entries, texts
from voicegw.config import Settings
from voicegw.server import Assembled, assemble
from voicegw.sim.callee import SimulatedCallee, person_audio
from voicegw.telephony.rest import TwilioRest

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def worker(name: str, port: int, peers_dir: str | None, data_dir: Path, public_url: str,
                 agent_path: Path, rest: TwilioRest) -> AsyncIterator[Assembled]:
    """A gateway on a TCP port and, with `peers_dir`, its worker socket there; without, a replica
    whose VOICEGW_REPLICA_URL is its TCP address."""
    env = {"VOICEGW_OPERATOR_TOKENS": OPERATOR_TOKEN, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": AC}
    replica = None if peers_dir else f"http://127.0.0.1:{port}"
    settings = Settings.from_env(env, host="127.0.0.1", port=port, data_dir=data_dir, agent_path=agent_path,
                                 public_url=public_url, replica_url=replica)
    assembled = await assemble(settings, worker=name, peers_dir=peers_dir, rest=rest)
    tcp = socket.create_server(("127.0.0.1", port))
    listeners = [tcp]
    if peers_dir is not None:
        private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        private.bind(os.path.join(peers_dir, f"{name}.sock"))
        private.listen(16)
        listeners.append(private)
    server = uvicorn.Server(uvicorn.Config(assembled.app, log_level="warning", lifespan="on",
                                          ws_per_message_deflate=False))
    task = asyncio.ensure_future(server.serve(listeners))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError(f"worker {name} exited during start-up")
                await asyncio.sleep(0.01)
        yield assembled
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task
        for listener in listeners:
            listener.close()
        await assembled.calllog.aclose()


async def record_of(assembled: Assembled, call_sid: str) -> dict[str, Any] | None:
    await assembled.gateway.wait_finished(call_sid, 10)
    await assembled.calllog.flush()
    rec: dict[str, Any] | None = await assembled.calllog.store.get_call(call_sid)
    return rec


@pytest.mark.parametrize("between", ["workers", "replicas"])
async def test_a_call_placed_by_one_process_is_served_there_when_twilio_reaches_the_other(between: str) -> None:
    fake = FakeTwilioRest(AC, AUTH_TOKEN)
    rest = TwilioRest(AC, AUTH_TOKEN, http_client=fake)
    port_a, port_b = free_port(), free_port()
    public = f"http://127.0.0.1:{port_b}"  # Twilio reaches worker B, whatever it asks for
    with tempfile.TemporaryDirectory(prefix="voicegw-peers-") as peers, \
            tempfile.TemporaryDirectory(prefix="voicegw-test-") as tmp:
        agent = Path(tmp) / "agent.yaml"
        agent.write_text(AGENT)
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        shared = peers if between == "workers" else None
        async with worker("wA", port_a, shared, Path(tmp) / "a", public, agent, rest) as a, \
                worker("wB", port_b, shared, Path(tmp) / "b", public, agent, rest) as b:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
                r = await http.post(f"http://127.0.0.1:{port_a}/api/calls", json={"to": TO, "from": FROM, "context": CONTEXT},
                                    headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            assert r.status_code == 201, r.text
            placed = fake.created[0]
            assert placed["Url"].startswith(public) and placed["AsyncAmdStatusCallback"].startswith(public)
            person = await person_audio()
            callee = SimulatedCallee(placed, person, auth_token=AUTH_TOKEN)
            await callee.answer()  # webhook and stream both reach B
            assert callee.call_sid in a.gateway.calls and callee.call_sid not in b.gateway.calls
            assert await callee.classify() == 200  # the verdict too
            await callee.caller.wait_for_audio(10)
            await callee.caller.wait_for_silence(800, 20)
            result = await callee.caller.hang_up()
            rec_a, rec_b = await record_of(a, callee.call_sid), await record_of(b, callee.call_sid)
    assert rec_b is None, "B kept a record of a call it only passed on"
    assert rec_a is not None
    assert [e["answered_by"] for e in amd_entries(rec_a)] == ["human"]
    assert texts(rec_a, "agent")[:1] == ["Hello Ada, this is Acme calling about your order."], rec_a["transcript"]
    assert result.heard_ms > 1500, result.summary()
