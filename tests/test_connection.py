"""RealtimeConnection against a local websockets server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import socket
import ssl
import struct
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voicegw.realtime import connection
from voicegw.realtime import events as ev
from voicegw.realtime.auth import ApiKeyAuth, NoAuth
from voicegw.realtime.connection import RealtimeClosed, RealtimeConnectError, RealtimeConnection, redact_url
from voicegw.realtime.dialects import GA, PREVIEW

SECRET = "azure-key-0123456789abcdef"
SESSION = {"type": "session.created", "event_id": "s0", "session": {
    "type": "realtime", "object": "realtime.session", "id": "sess_1", "expires_at": 1_900_000_000}}

Script = Callable[[ServerConnection], Awaitable[None]]


class Peer:
    """A scripted Realtime server: optional HTTP rejections, then a per-connection script."""

    def __init__(self, script: Script | None = None, reject: list[int] | None = None, body: str = "") -> None:
        self.script = script or self.greet_and_echo
        self.reject = list(reject or [])
        self.body = body
        self.requests: list[Headers] = []
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.port = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request.headers)
        if self.reject:
            return connection.respond(HTTPStatus(self.reject.pop(0)), self.body)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        await self.script(ws)

    async def greet_and_echo(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps(SESSION))
        async for raw in ws:
            await self.received.put(json.loads(raw))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/openai/v1/realtime?model=gpt-realtime"


@asynccontextmanager
async def running(peer: Peer) -> AsyncIterator[Peer]:
    async with serve(peer.handler, "127.0.0.1", 0, process_request=peer.process_request) as server:
        peer.port = server.sockets[0].getsockname()[1]
        yield peer


async def open_conn(peer: Peer, auth: Any = None, **kw: Any) -> RealtimeConnection:
    kw.setdefault("open_timeout", 2)
    return await RealtimeConnection.open(peer.url, auth or ApiKeyAuth(SECRET), GA, **kw)


async def test_api_key_and_bearer_headers_are_sent() -> None:
    async with running(Peer()) as peer:
        conn = await open_conn(peer, ApiKeyAuth(SECRET, style="azure"))
        await conn.close()
        conn = await open_conn(peer, ApiKeyAuth(SECRET, style="openai"))
        await conn.close()
    assert peer.requests[0]["api-key"] == SECRET and "Authorization" not in peer.requests[0]
    assert peer.requests[1]["Authorization"] == f"Bearer {SECRET}" and "api-key" not in peer.requests[1]
    assert "permessage-deflate" not in peer.requests[0].get("Sec-WebSocket-Extensions", "")


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_client_errors_are_not_retried_and_hide_secrets(status: int) -> None:
    peer = Peer(reject=[status] * 5, body=f"denied for key {SECRET}")  # a server that echoes the key
    async with running(peer):
        url = peer.url + f"&api-key={SECRET}"
        with pytest.raises(RealtimeConnectError) as info:
            await asyncio.wait_for(RealtimeConnection.open(url, ApiKeyAuth(SECRET), GA, retries=3, backoff_s=0.01), 5)
    err = info.value
    assert len(peer.requests) == 1  # no retry
    assert err.status == status and not err.retryable and err.attempts == 1
    text = str(err)
    assert f"HTTP {status}" in text and f"127.0.0.1:{peer.port}/openai/v1/realtime" in text
    assert SECRET not in text and SECRET not in err.url and "api-key=***" in text
    assert "denied for key ***" in text


async def test_5xx_is_retried_until_the_server_accepts() -> None:
    async with running(Peer(reject=[503, 502])) as peer:
        conn = await open_conn(peer, retries=2, backoff_s=0.01)
        assert conn.session_id == "sess_1"
        await conn.close()
    assert len(peer.requests) == 3


async def test_5xx_gives_up_after_the_retries() -> None:
    async with running(Peer(reject=[500] * 10)) as peer:
        with pytest.raises(RealtimeConnectError) as info:
            await open_conn(peer, retries=1, backoff_s=0.01)
    assert len(peer.requests) == 2 and info.value.attempts == 2 and info.value.status == 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_refused_connect_is_retried_then_fails_within_the_bound() -> None:
    url = f"ws://127.0.0.1:{_free_port()}/openai/realtime?api-version=2024-10-01-preview&deployment=d"
    async with asyncio.timeout(5):  # the bound: 3 attempts with 10 ms and 20 ms backoff
        with pytest.raises(RealtimeConnectError) as info:
            await RealtimeConnection.open(url, NoAuth(), PREVIEW, open_timeout=1, retries=2, backoff_s=0.01)
    assert info.value.attempts == 3 and info.value.retryable and info.value.status is None
    assert "refused" in str(info.value).lower()


async def test_session_created_is_awaited_with_a_timeout() -> None:
    silent_done = asyncio.Event()

    async def silent(ws: ServerConnection) -> None:
        await silent_done.wait()

    async with running(Peer(silent)) as peer:
        with pytest.raises(RealtimeConnectError, match="no session.created .* within 0.2s"):
            await open_conn(peer, open_timeout=0.2)
        silent_done.set()


async def test_error_before_session_created_is_a_connect_error() -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "error", "event_id": "e", "error": {
            "type": "invalid_request_error", "code": "deployment_not_found", "message": "The deployment does not exist"}}))
        await ws.close()

    async with running(Peer(refuse)) as peer:
        with pytest.raises(RealtimeConnectError, match="deployment does not exist .deployment_not_found."):
            await open_conn(peer)


async def test_send_receive_round_trip_and_error_matching() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "rate_limits.updated", "event_id": "e", "rate_limits": []}))
        await ws.send(json.dumps(SESSION))
        update = json.loads(await ws.recv())
        await peer.received.put(update)
        audio = json.loads(await ws.recv())
        await peer.received.put(audio)
        await ws.send(json.dumps({"type": "error", "event_id": "e2", "error": {
            "type": "invalid_request_error", "code": "unknown_parameter", "message": "Unknown parameter",
            "event_id": update["event_id"]}}))
        await ws.send(json.dumps({"type": "response.output_audio.delta", "event_id": "e3", "response_id": "r1",
                                  "item_id": "i1", "output_index": 0, "content_index": 0, "delta": "f39/fw=="}))
        await ws.send("not json")
        await ws.close()

    peer = Peer(script)
    async with running(peer):
        conn = await open_conn(peer)
        assert conn.expires_at == 1_900_000_000.0
        update = ev.UpdateSession(ev.SessionConfig(audio_format="g711_ulaw"))
        await conn.send(update)
        await conn.send(ev.AppendAudio("AAAA"))
        got = [e async for e in conn.events()]  # ends: the server closed normally
    sent_update = await asyncio.wait_for(peer.received.get(), 2)
    sent_audio = await asyncio.wait_for(peer.received.get(), 2)
    assert sent_update["type"] == "session.update" and sent_update["event_id"] == "evt_1"
    assert sent_update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert sent_audio == {"type": "input_audio_buffer.append", "event_id": "aud_2", "audio": "AAAA"}
    assert got[0] == ev.RateLimits(())  # arrived before session.created, delivered first
    error = got[1]
    assert isinstance(error, ev.ModelError) and error.event_id == "evt_1"
    assert conn.command_for(error.event_id) is update
    assert conn.command_for("aud_2") == ev.AppendAudio("")  # known by its id, without the audio
    assert conn.command_for("evt_2") is None and conn.command_for("evt_99") is None
    assert len(conn._recent) == 1  # noqa: SLF001  (appends take no room in the history)
    assert got[2] == ev.AudioDelta("r1", "i1", "f39/fw==", 0)
    assert got[3] == ev.Ignored("<invalid json>")
    assert conn.stats.events_out == 2 and conn.stats.events_in == 5  # every message, those during open too
    assert conn.stats.bytes_out > len("AAAA") and conn.closed


async def test_oversized_and_hostile_events_are_skipped_and_the_session_survives() -> None:
    """A 20 MiB event (over websockets' old 16 MiB frame limit, which failed the connection with
    1009) and a 5 MiB one (over MAX_EVENT_CHARS) are skipped undecoded; deep nesting is invalid
    JSON; the events after them still arrive and the session stays open."""
    delta = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": "f39/fw=="}

    async def script(ws: ServerConnection) -> None:
        await ws.send("[" * 100_000)  # before session.created: not a refusal
        await ws.send(json.dumps(SESSION))
        await ws.send(json.dumps({**delta, "delta": "A" * (20 * 1024 * 1024)}))
        await ws.send(json.dumps({**delta, "delta": "A" * (5 * 1024 * 1024)}))
        await ws.send("[" * 100_000)
        await ws.send(b"\x00\x01")
        await ws.send(json.dumps(delta))
        await ws.wait_closed()

    async with serve(Peer(script).handler, "127.0.0.1", 0, max_size=None) as server:
        peer = Peer(script)
        peer.port = server.sockets[0].getsockname()[1]
        conn = await open_conn(peer, auth=NoAuth())
        got: list[Any] = []
        async with asyncio.timeout(10):
            async for e in conn.events():
                got.append(e)
                if len(got) == 5:
                    break
        assert got == [ev.Ignored("<oversized>"), ev.Ignored("<oversized>"), ev.Ignored("<invalid json>"),
                       ev.Ignored("<binary>"), ev.AudioDelta("r1", "i1", "f39/fw==", 0)]
        assert not conn.closed
        await conn.close()


async def test_abnormal_close_raises_realtime_closed() -> None:
    async def crash(ws: ServerConnection) -> None:
        await ws.send(json.dumps(SESSION))
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5, "item_id": "u"}))
        await ws.close(1011, "internal error")

    async with running(Peer(crash)) as peer:
        conn = await open_conn(peer)
        seen: list[Any] = []
        with pytest.raises(RealtimeClosed) as info:
            async for e in conn.events():
                seen.append(e)
    assert seen == [ev.SpeechStarted(5, "u")]
    assert info.value.code == 1011 and info.value.reason == "internal error"
    with pytest.raises(RealtimeClosed):
        await conn.send(ev.CommitAudio())


async def test_client_close_ends_events_and_blocks_sends() -> None:
    async with running(Peer()) as peer:
        conn = await open_conn(peer)
        assert not conn.closed
        reader = asyncio.create_task(_collect(conn))
        await conn.send(ev.CommitAudio())
        assert (await asyncio.wait_for(peer.received.get(), 2))["type"] == "input_audio_buffer.commit"
        await conn.close()
        assert await asyncio.wait_for(reader, 2) == []
        assert conn.closed and conn.close_code == 1000
        with pytest.raises(RealtimeClosed):
            await conn.send(ev.CommitAudio())
        await conn.close()  # idempotent


async def _collect(conn: RealtimeConnection) -> list[Any]:
    return [e async for e in conn.events()]


def test_redact_url() -> None:
    url = f"wss://user:pw@res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=d&api-key={SECRET}"
    safe = redact_url(url)
    assert SECRET not in safe and "pw" not in safe and "user" not in safe
    assert safe == "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=d&api-key=***"


@pytest.mark.parametrize("status,retryable", [(401, False), (403, False), (404, False), (408, True), (429, True),
                                              (500, True), (503, True)])
async def test_handshake_status_decides_whether_a_retry_may_heal(status: int, retryable: bool) -> None:
    async with running(Peer(reject=[status])) as peer:
        with pytest.raises(RealtimeConnectError) as info:
            await open_conn(peer, retries=0)
    assert info.value.status == status and info.value.retryable is retryable and info.value.attempts == 1
    assert f"HTTP {status}" in str(info.value)


async def test_a_message_split_over_continuation_frames_is_reassembled() -> None:
    delta = json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": "f39/fw=="})
    big = json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1",
                      "delta": "A" * (5 * 1024 * 1024)})

    async def script(ws: ServerConnection) -> None:
        await ws.send([json.dumps(SESSION)[:7], json.dumps(SESSION)[7:]])  # even session.created
        await ws.send([delta[:10], delta[10:30], delta[30:]])
        await ws.send([big[i:i + 1024 * 1024] for i in range(0, len(big), 1024 * 1024)])  # over MAX_EVENT_CHARS
        await ws.send([b"\x00", b"\x01"])
        await ws.send(delta)
        await ws.close()

    async with serve(Peer(script).handler, "127.0.0.1", 0, max_size=None) as server:
        peer = Peer(script)
        peer.port = server.sockets[0].getsockname()[1]
        conn = await open_conn(peer, auth=NoAuth())
        async with asyncio.timeout(10):
            got = [e async for e in conn.events()]
    one = ev.AudioDelta("r1", "i1", "f39/fw==", 0)
    assert conn.session_id == "sess_1"
    assert got == [one, ev.Ignored("<oversized>"), ev.Ignored("<binary>"), one]


async def test_listen_hands_events_to_a_function_and_answers_the_close() -> None:
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "a"}))
        await ws.send(json.dumps(SESSION))
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 2, "item_id": "b"}))
        await ws.close(1011, "internal error")
        answered.set_result(ws.protocol.close_rcvd)

    async with running(Peer(script)) as peer:
        conn = await open_conn(peer)
        seen: list[Any] = []
        with pytest.raises(RealtimeClosed) as info:
            await asyncio.wait_for(conn.listen(seen.append), 5)
        answer = await asyncio.wait_for(answered, 5)
    assert seen == [ev.SpeechStarted(1, "a"), ev.SpeechStarted(2, "b")]  # the one before session.created first
    assert (info.value.code, info.value.reason) == (1011, "internal error")
    assert answer is not None and answer.code == 1011  # the server's CLOSE was answered with its code
    assert conn.closed and conn.close_code == 1011


async def test_listen_raises_what_the_function_raised() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(SESSION))
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "a"}))
        await ws.wait_closed()

    def boom(event: Any) -> None:
        raise ValueError(f"cannot take {type(event).__name__}")

    async with running(Peer(script)) as peer:
        conn = await open_conn(peer)
        with pytest.raises(ValueError, match="cannot take SpeechStarted"):
            await asyncio.wait_for(conn.listen(boom), 5)
        assert not conn.closed
        await conn.close()


class _DeafPeer:
    """Answers the upgrade, sends session.created, then never reads again: flow control."""

    def __init__(self) -> None:
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(_accept(await reader.readuntil(b"\r\n\r\n")))
        writer.transport.pause_reading()


def _accept(request: bytes) -> bytes:
    """A 101 answer to `request`, then session.created in one unmasked text frame."""
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    payload = json.dumps(SESSION).encode()
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + struct.pack("!BBH", 0x81, 126, len(payload)) + payload)


@asynccontextmanager
async def deaf_peer() -> AsyncIterator[_DeafPeer]:
    peer = _DeafPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        for w in peer.writers:
            w.transport.abort()
        server.close()


async def test_a_send_blocked_by_flow_control_fails_after_send_timeout() -> None:
    async with deaf_peer() as peer:
        url = f"ws://127.0.0.1:{peer.port}/openai/v1/realtime?model=gpt-realtime"
        conn = await RealtimeConnection.open(url, NoAuth(), GA, open_timeout=2, send_timeout=0.3)
        chunk = ev.AppendAudio("A" * 256 * 1024)
        async with asyncio.timeout(10):
            with pytest.raises(RealtimeClosed, match="send timed out after 0.3s"):
                for _ in range(400):  # 100 MiB: far more than the socket buffers hold
                    await conn.send(chunk)
            with pytest.raises(RealtimeClosed, match="send timed out"):
                [e async for e in conn.events()]
    assert conn.closed and conn.stats.events_out < 400


async def test_send_now_never_waits_and_a_peer_not_reading_ends_the_session() -> None:
    async with deaf_peer() as peer:
        url = f"ws://127.0.0.1:{peer.port}/openai/v1/realtime?model=gpt-realtime"
        conn = await RealtimeConnection.open(url, NoAuth(), GA, open_timeout=2, send_timeout=0.3)
        chunk = ev.AppendAudio("A" * 256 * 1024)
        while conn.buffered() < 1024 * 1024:  # writes return at once, the bytes wait in the transport
            conn.send_now(chunk)
        async with asyncio.timeout(10):
            with pytest.raises(RealtimeClosed, match="send timed out after 0.3s"):
                await conn.listen(lambda e: None)
        with pytest.raises(RealtimeClosed):
            conn.send_now(chunk)


async def test_an_upgrade_accepted_after_the_caller_gave_up_is_dropped() -> None:
    """picows' handshake timer stops once the server answers: a connection whose `open` was
    cancelled before the answer came must not stay open (pinged, never read) for the worker's life."""
    seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    answer = asyncio.Event()
    hung_up = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(await reader.readuntil(b"\r\n\r\n"))
        await answer.wait()
        writer.write(_accept(seen.result()))
        await reader.read()  # EOF: the client dropped the connection
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/openai/v1/realtime?model=gpt-realtime"
    try:
        opening = asyncio.ensure_future(RealtimeConnection.open(url, NoAuth(), GA, open_timeout=30, retries=0))
        await asyncio.wait_for(seen, 5)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        answer.set()
        await asyncio.wait_for(hung_up.wait(), 5)
    finally:
        server.close()


async def test_wss_verifies_the_server_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    peer = Peer()
    async with serve(peer.handler, "127.0.0.1", 0, ssl=server_tls) as server:
        peer.port = server.sockets[0].getsockname()[1]
        url = f"wss://127.0.0.1:{peer.port}/openai/v1/realtime?model=gpt-realtime"
        with pytest.raises(RealtimeConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await RealtimeConnection.open(url, ApiKeyAuth(SECRET), GA, open_timeout=2, retries=0)
        trusting = ssl.create_default_context(cafile=cert)
        monkeypatch.setattr(connection, "_tls", trusting)
        conn = await RealtimeConnection.open(url, ApiKeyAuth(SECRET), GA, open_timeout=2, retries=0)
        await conn.send(ev.CommitAudio())
        assert (await asyncio.wait_for(peer.received.get(), 2))["type"] == "input_audio_buffer.commit"
        await conn.close()
    assert conn.closed and conn.close_code == 1000


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_append_now_writes_the_appends_send_now_would_and_declines_when_backed_up_or_closed() -> None:
    """The steady state's append (`append_now`): the same message and id sequence as `send_now`;
    nothing written, and False, once the socket is over its high-water mark or closed."""
    peer = Peer()
    async with running(peer):
        conn = await open_conn(peer)
        assert_writable_flag(conn, True)
        assert conn.append_now("AAAA") is True
        conn.send_now(ev.AppendAudio("BBBB"))
        assert conn.append_now("CCCC") is True
        got = [await asyncio.wait_for(peer.received.get(), 2) for _ in range(3)]
        assert got == [{"type": "input_audio_buffer.append", "event_id": f"aud_{i}", "audio": audio}
                       for i, audio in ((1, "AAAA"), (2, "BBBB"), (3, "CCCC"))]
        assert conn.stats.events_out == 3
        await conn.close()
        assert_writable_flag(conn, False)
        assert conn.append_now("DDDD") is False
    async with deaf_peer() as deaf:
        url = f"ws://127.0.0.1:{deaf.port}/openai/v1/realtime?model=gpt-realtime"
        conn = await RealtimeConnection.open(url, NoAuth(), GA, open_timeout=2, send_timeout=5)
        chunk = "A" * 256 * 1024
        written = 0
        while conn.append_now(chunk):  # until the transport is backed up
            written += 1
            assert written < 400, "append_now kept writing into a socket nobody reads"
        assert conn.buffered() > 0 and written > 0
        assert_writable_flag(conn, False)  # backed up
        await conn.close()


def assert_writable_flag(conn: RealtimeConnection, expected: bool) -> None:
    """`Wire.writable`, which `append_now` reads, is `not paused and not closed` at every step."""
    wire = conn._wire
    assert wire.writable is (not wire.paused and not wire.closed) is expected


def _delta(i: int, compact: bool = True) -> str:
    body = {"type": "response.output_audio.delta", "event_id": f"e{i}", "response_id": "r1", "item_id": "i1",
            "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes([i]) * 8).decode()}
    return json.dumps(body, separators=(",", ":")) if compact else json.dumps(body, indent=1)


async def test_listen_hands_audio_deltas_to_the_audio_function_and_the_declined_ones_as_events_in_order() -> None:
    """`on_audio` takes compact audio deltas as their fields; a delta it declines, one in another
    layout, and every other event reach `on_event`, all in the order they came."""
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(SESSION))
        await ws.recv()  # the client listens
        for i in range(4):
            await ws.send(_delta(i))
        await ws.send(_delta(4, compact=False))
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1, "item_id": "a"}))
        await ws.send(_delta(5))
        await ws.close()

    order: list[Any] = []

    def on_audio(response_id: str, item_id: str, audio_b64: str, content_index: int) -> bool:
        i = base64.b64decode(audio_b64)[0]
        if i == 2:
            return False  # e.g. a delta to be timed: it takes the event's way
        order.append(("audio", response_id, item_id, i, content_index))
        return True

    async with running(Peer(script)) as peer:
        conn = await open_conn(peer)
        listening = asyncio.ensure_future(conn.listen(order.append, on_audio))  # set up before any reply
        conn.send_now(ev.AppendAudio("AAAA"))
        await asyncio.wait_for(listening, 5)
    b64 = lambda i: base64.b64encode(bytes([i]) * 8).decode()  # noqa: E731
    assert order == [("audio", "r1", "i1", 0, 0), ("audio", "r1", "i1", 1, 0), ev.AudioDelta("r1", "i1", b64(2), 0),
                     ("audio", "r1", "i1", 3, 0), ev.AudioDelta("r1", "i1", b64(4), 0), ev.SpeechStarted(1, "a"),
                     ("audio", "r1", "i1", 5, 0)]
    assert conn.stats.events_in == 8  # session.created and every message after it, however it was taken


async def test_listen_raises_what_the_audio_function_raised() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(SESSION))
        await ws.recv()  # the client listens
        await ws.send(_delta(1))
        await ws.wait_closed()

    def boom(*fields: Any) -> bool:
        raise ValueError("cannot take audio")

    async with running(Peer(script)) as peer:
        conn = await open_conn(peer)
        listening = asyncio.ensure_future(conn.listen(lambda e: None, boom))
        conn.send_now(ev.AppendAudio("AAAA"))
        with pytest.raises(ValueError, match="cannot take audio"):
            await asyncio.wait_for(listening, 5)
        assert not conn.closed
        await conn.close()
