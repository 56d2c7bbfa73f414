"""A media stream's connection passed between workers before it opens (voicegw.telephony.handoff):
the worker named in the stream's path gets the very TCP connection and the upgrade request read
from it; the worker that passed it writes nothing and its close does not end the connection. When
the named worker cannot take it, nothing moves and the stream is served where it landed. The whole
path through `voicegw serve --workers 2` is in tests/test_affinity.py."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from typing import AsyncIterator

import pytest
import uvloop

from voicegw.telephony.handoff import MAX_REQUEST_BYTES, HandoffReceiver, hand_over, hinted_worker

MEDIA = b"/twilio/media"
REQUEST = (b"GET /twilio/media/w1.ab12 HTTP/1.1\r\nhost: gw\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")


@pytest.mark.parametrize("path, worker", [
    (b"/twilio/media/w1.ab12", "w1.ab12"),
    (b"/twilio/media/w0", "w0"),
    (b"/twilio/media", None),
    (b"/twilio/media/", None),
    (b"/twilio/mediaX/w1", None),
    (b"/twilio/media/..", None),
    (b"/twilio/media/.hidden", None),
    (b"/twilio/media/w1/../../etc", None),
    (b"/twilio/media/w1%2F..", None),
    (b"/twilio/media/" + b"w" * 65, None),
])
def test_the_worker_named_in_a_stream_path_is_a_plain_name_or_nothing(path: bytes, worker: str | None) -> None:
    assert hinted_worker(path, MEDIA) == worker


class Landed(asyncio.Protocol):
    """The transport of the worker the kernel gave the connection to."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@contextlib.asynccontextmanager
async def landed_connection() -> AsyncIterator[tuple[Landed, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection from a client, accepted by this process under a `Landed` protocol."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        _, landed = await loop.connect_accepted_socket(Landed, conn)
        try:
            yield landed, reader, writer
        finally:
            writer.close()
            if landed.transport is not None:
                landed.transport.close()
    finally:
        listener.close()


async def test_the_named_worker_gets_the_connection_itself_and_the_request_read_from_it() -> None:
    await round_trip()


def test_the_same_on_uvloop_the_loop_voicegw_serve_runs() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(round_trip())


async def round_trip() -> None:
    loop = asyncio.get_running_loop()
    adopted: asyncio.Queue[tuple[socket.socket, bytes]] = asyncio.Queue()
    with tempfile.TemporaryDirectory(prefix="voicegw-peers-") as peers:
        receiver = HandoffReceiver(peers, "w1.ab12", lambda sock, request: adopted.put_nowait((sock, request)))
        receiver.start()
        try:
            async with landed_connection() as (landed, reader, writer):
                assert landed.transport is not None
                assert hand_over(landed.transport, REQUEST, peers, "w1.ab12")
                landed.transport.close()  # what the worker it landed on does next
                await landed.lost.wait()
                async with asyncio.timeout(5):
                    sock, request = await adopted.get()
                assert request == REQUEST
                # the same connection, alive both ways after the first worker closed its copy
                _, owner = await loop.connect_accepted_socket(Landed, sock)
                assert owner.transport is not None
                owner.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                async with asyncio.timeout(5):
                    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
                writer.write(b"first frame")
                await writer.drain()
                async with asyncio.timeout(5):
                    while bytes(owner.data) != b"first frame":
                        await asyncio.sleep(0.01)
                assert landed.data == b""  # the first worker read nothing more
                owner.transport.close()
                async with asyncio.timeout(5):
                    assert await reader.read() == b""  # the owner's close ends it
        finally:
            receiver.close()


async def test_a_worker_that_cannot_take_it_leaves_the_connection_where_it_landed() -> None:
    with tempfile.TemporaryDirectory(prefix="voicegw-peers-") as peers:
        async with landed_connection() as (landed, reader, writer):
            assert landed.transport is not None
            assert not hand_over(landed.transport, REQUEST, peers, "w9.gone")  # no such worker
            receiver = HandoffReceiver(peers, "w1.ab12", lambda sock, request: pytest.fail("nothing to adopt"))
            receiver.close()  # a worker that has exited
            assert not hand_over(landed.transport, REQUEST, peers, "w1.ab12")
            big = b"GET /twilio/media/w1 HTTP/1.1\r\nx: " + b"a" * MAX_REQUEST_BYTES + b"\r\n\r\n"
            assert not hand_over(landed.transport, big, peers, "w1.ab12")
            # still this worker's, both ways
            landed.transport.write(b"served here")
            async with asyncio.timeout(5):
                assert await reader.readexactly(11) == b"served here"
            writer.write(b"ok")
            await writer.drain()
            async with asyncio.timeout(5):
                while bytes(landed.data) != b"ok":
                    await asyncio.sleep(0.01)


async def test_a_receiver_drops_a_datagram_without_exactly_one_connection_and_goes_on() -> None:
    adopted: asyncio.Queue[bytes] = asyncio.Queue()

    def adopt(sock: socket.socket, request: bytes) -> None:
        sock.close()
        adopted.put_nowait(request)

    with tempfile.TemporaryDirectory(prefix="voicegw-peers-") as peers:
        receiver = HandoffReceiver(peers, "w1", adopt)
        receiver.start()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                out.sendto(b"GET / HTTP/1.1\r\n\r\n", receiver.path)  # no descriptor
            async with landed_connection() as (landed, _, _):
                assert landed.transport is not None
                assert hand_over(landed.transport, REQUEST, peers, "w1")
                async with asyncio.timeout(5):
                    assert await adopted.get() == REQUEST
            assert adopted.empty()
        finally:
            receiver.close()
