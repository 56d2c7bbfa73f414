"""Handing a media stream's connection to the worker that owns its call, before it opens.

With `serve --workers N` the voice webhook pre-warms the call's model session in the worker that
received it, and the stream URL it answers with names that worker: `/twilio/media/<worker>`. The
kernel gives the stream's TCP connection to any worker. One that gets a stream named for another
worker of this replica passes the connection itself to the owner, before answering anything: the
socket's file descriptor (SCM_RIGHTS) and the upgrade request it read, in one datagram on the
owner's private Unix socket. The owner serves the connection as if it had accepted it, so no frame
is carried twice. A relay (voicegw.telephony.relay) pipes every frame of the call through both
processes; with N workers, (N-1)/N of the calls landed elsewhere and paid for it.

The name in the path is a routing hint and nothing more: the owner checks the stream token as for
any stream, and whatever the hint says, a stream whose token names another process is still
relayed there once it has started. A hint naming no worker here (another replica's, or a worker
that has exited) or an owner that cannot take the datagram at once leaves the stream where it
landed, on the relay's path. Streams on TLS terminated by this process are never handed over
(the TLS session cannot move with the socket).
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import re
import socket
from typing import Any, Callable

log = logging.getLogger("voicegw.telephony")

MAX_REQUEST_BYTES = 32 * 1024  # an upgrade request's line and headers; a larger one stays where it landed
_WORKER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def handoff_path(peers_dir: str, worker: str) -> str:
    return os.path.join(peers_dir, f"{worker}.handoff")


def hinted_worker(path: bytes, media_path: bytes) -> str | None:
    """The worker named by a stream URL's path, `/twilio/media/<worker>`, or None."""
    prefix = media_path + b"/"
    if not path.startswith(prefix):
        return None
    name = path[len(prefix):].decode("ascii", "replace")
    return name if _WORKER.fullmatch(name) else None


def hand_over(transport: asyncio.BaseTransport, request: bytes, peers_dir: str, worker: str) -> bool:
    """Pass the TCP connection under `transport` (the caller checks it is one) and its upgrade
    `request` to `worker`'s process. True when the owner has it (this process must then close its
    copy and write nothing); False to serve the stream here. Never waits: the datagram is taken at
    once or not at all."""
    if len(request) > MAX_REQUEST_BYTES or transport.get_extra_info("sslcontext") is not None:
        return False
    fd = os.dup(transport.get_extra_info("socket").fileno())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            out.setblocking(False)
            # sendmsg, not socket.send_fds: that drops its address argument (CPython 3.11)
            out.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0,
                       handoff_path(peers_dir, worker))
        return True
    except FileNotFoundError:  # no such worker here: another replica's, or one that has exited
        log.info("media stream for worker %s: not a worker of this replica; served here", worker)
        return False
    except OSError as exc:  # the owner has exited (refused) or is not reading (its queue is full)
        log.warning("media stream for worker %s served here, the owner could not take it: %s", worker,
                    exc.strerror or exc)
        return False
    finally:
        os.close(fd)  # the datagram in flight holds the connection for the owner


class HandoffReceiver:
    """This worker's end: connections other workers pass on, each adopted by `adopt(sock, request)`."""

    def __init__(self, peers_dir: str, worker: str, adopt: Callable[[socket.socket, bytes], Any]) -> None:
        self.path = handoff_path(peers_dir, worker)
        self._adopt = adopt
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self._sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(64):  # at most this many per loop turn
            try:
                request, fds, flags, _ = socket.recv_fds(self._sock, MAX_REQUEST_BYTES, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("stream hand-over: receive failed: %s", exc)
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            if len(socks) != 1 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not request:
                log.warning("stream hand-over: malformed datagram (%d descriptors, flags %#x) dropped", len(socks), flags)
                for s in socks:
                    s.close()
                continue
            socks[0].setblocking(False)
            try:
                self._adopt(socks[0], request)
            except Exception:  # noqa: BLE001 - one bad connection must not stop the receiver
                log.exception("stream hand-over: adopting a connection failed")
                socks[0].close()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
