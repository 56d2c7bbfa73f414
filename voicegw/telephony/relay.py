"""Relaying a media stream to the process that owns its call.

The voice webhook pre-warms the call's model session in whichever worker process (and replica)
received it, and the stream token it answers with names that owner (`<replica URL>|<worker>`).
Twilio then opens the media stream wherever the load balancer sends it. A stream that reaches
another worker of the same replica is normally passed to its owner before it opens, connection
and all (voicegw.telephony.handoff, on the worker named in the stream's path). What is left comes
here once the stream has started and its token names another process: a stream for another
replica is piped over WebSocket to the owner's `VOICEGW_REPLICA_URL`; one for another worker of
this replica that was not passed (its path named no worker here, or the owner could not take it at
once) over the owner's private Unix socket. The owner treats the relayed stream exactly like one from Twilio: it verifies
the token again and enforces single use, so the relay needs no trust of its own. If the owner
cannot be reached (it is gone), the stream is handled where it landed, with a new model session:
the call still works.

Why a relay between replicas and not sticky routing: Twilio's stream request carries nothing a
load balancer can route on (the URL is the one the replica wrote, but a Service or ingress does not
route on a pod's name, and the CallSid arrives in the first frames), and a socket cannot move
between machines. It costs one extra hop for every frame of the calls that land elsewhere.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("voicegw.telephony")

RELAY_HEADER = "x-voicegw-relay"  # hops so far: a relayed stream is relayed at most once more
MAX_HOPS = 2  # replica -> replica, then worker -> worker inside it
CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 5.0
MAX_FRAME_BYTES = 256 * 1024


@dataclass(frozen=True)
class RelayTarget:
    unix_path: str | None = None  # another worker of this replica
    url: str | None = None  # another replica (ws:// or wss:// .../twilio/media)

    def describe(self) -> str:
        return self.unix_path or self.url or "?"


def relay_target(owner: str, me: str, peers_dir: str | None, hops: int) -> RelayTarget | None:
    """Where a stream whose token names `owner` must go, or None to handle it here."""
    if not owner or owner == me or hops >= MAX_HOPS:
        return None
    replica, _, worker = owner.rpartition("|")
    my_replica = me.rpartition("|")[0]
    if replica and replica != my_replica:
        parts = urlsplit(replica)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        return RelayTarget(url=urlunsplit((scheme, parts.netloc, "/twilio/media", "", "")))
    if peers_dir and worker and "/" not in worker and worker not in (".", ".."):
        return RelayTarget(unix_path=str(Path(peers_dir) / f"{worker}.sock"))
    return None


async def _open(target: RelayTarget, hops: int) -> ClientConnection:
    headers = {RELAY_HEADER: str(hops + 1)}
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if target.unix_path is not None:
            return await unix_connect(target.unix_path, uri="ws://localhost/twilio/media", additional_headers=headers,
                                      max_size=MAX_FRAME_BYTES, compression=None, open_timeout=CONNECT_TIMEOUT_S)
        assert target.url is not None
        return await connect(target.url, additional_headers=headers, max_size=MAX_FRAME_BYTES, compression=None,
                             open_timeout=CONNECT_TIMEOUT_S, proxy=None)


async def relay(ws: WebSocket, first_frames: list[str], target: RelayTarget, hops: int) -> bool:
    """Pipe the stream to its owner until either side ends. False (nothing sent) when the owner
    cannot be reached, so the caller's stream can be served here instead."""
    try:
        upstream = await _open(target, hops)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the owner means: serve it here
        log.warning("media stream: owner at %s unreachable (%s): serving it here", target.describe(), exc)
        return False
    try:
        for text in first_frames:
            await upstream.send(text)
        inbound = asyncio.ensure_future(_twilio_to_owner(ws, upstream))
        outbound = asyncio.ensure_future(_owner_to_twilio(upstream, ws))
        done, pending = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    except (ConnectionClosed, OSError):
        pass
    finally:
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await upstream.close()
        with contextlib.suppress(Exception):
            await ws.close(code=code if code in (1000, 1008, 1011, 1013) else 1000)
    return True


async def _twilio_to_owner(ws: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await upstream.send(data)


async def _owner_to_twilio(upstream: ClientConnection, ws: WebSocket) -> None:
    with contextlib.suppress(ConnectionClosed, WebSocketDisconnect):
        async for message in upstream:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
