"""One direction of outbound traffic: items are queued without waiting and sent, in order, by one
task. The call core's actions are performed synchronously (nothing in the interpreter awaits), so a
slow peer on one side never delays the other side or the reading of either socket: the Twilio
reader keeps taking marks while a model send waits on flow control, and the reverse.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Awaitable, Callable, Generic, TypeVar

log = logging.getLogger("voicegw.call")

T = TypeVar("T")


class WriterFailed(Exception):
    """The writer gave up: its send failed, timed out, or its queue overflowed."""


class Writer(Generic[T]):
    """Sends queued items with `send`; on failure calls `on_fail` once and drops everything after.

    `timeout_s` bounds each batch of sends (one deadline per wake-up, not per item: at 50 frames a
    second per call, a timer per frame is measurable); `max_queued` bounds what may wait.
    """

    __slots__ = ("_send", "_on_fail", "_timeout_s", "_max", "_queue", "_wake", "_idle", "_task", "failed", "name")

    def __init__(self, send: Callable[[T], Awaitable[None]], on_fail: Callable[[Exception], None], *,
                 name: str, timeout_s: float | None = None, max_queued: int = 10_000) -> None:
        self._send = send
        self._on_fail = on_fail
        self._timeout_s = timeout_s
        self._max = max_queued
        self._queue: deque[T] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.failed: Exception | None = None
        self.name = name
        self._task: asyncio.Task[None] | None = asyncio.ensure_future(self._run())
        self._task.set_name(name)

    def put(self, item: T) -> bool:
        """Queue an item; False when the writer has failed or been closed (the item is dropped)."""
        if self._task is None:
            return False
        queue = self._queue
        if len(queue) >= self._max:
            # reported on the next loop turn: `put` runs inside the bridge's interpreter, whose
            # action list must finish before the failure's own actions run
            self._fail(WriterFailed(f"{self.name}: {len(queue)} items queued, the peer is not reading"), later=True)
            return False
        queue.append(item)
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()
        return True

    def put_many(self, items: list[T]) -> bool:
        """`put` of each item, in order; False at the first that is dropped."""
        for item in items:
            if not self.put(item):
                return False
        return True

    def hold(self) -> bool:
        """Items go out one by one through the queue: nothing to hold (see `DirectWriter.hold`)."""
        return False

    def release(self) -> bool:
        return self._task is not None

    def purge(self) -> int:
        """Drop every queued item not yet being sent; returns how many."""
        n = len(self._queue)
        self._queue.clear()
        return n

    def __len__(self) -> int:
        return len(self._queue)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued was sent (True), or `timeout_s` passed (False)."""
        if self._task is None:
            return not self._queue
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        """Stop at once; what is still queued is dropped."""
        task, self._task = self._task, None
        self._queue.clear()
        self._idle.set()
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _fail(self, exc: Exception, later: bool = False) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        self.close()
        if later:
            asyncio.get_running_loop().call_soon(self._notify, exc)
        else:
            self._notify(exc)

    def _notify(self, exc: Exception) -> None:
        try:
            self._on_fail(exc)
        except Exception:  # noqa: BLE001 - a failing callback must not hide the first failure
            log.exception("%s: failure handler raised", self.name)

    async def _run(self) -> None:
        queue, send, wake, idle = self._queue, self._send, self._wake, self._idle
        timeout = self._timeout_s
        while True:
            if not queue:
                idle.set()
                wake.clear()
                await wake.wait()
                continue
            try:
                if timeout is None:
                    while queue:
                        await send(queue.popleft())
                else:
                    async with asyncio.timeout(timeout):
                        while queue:
                            await send(queue.popleft())
            except asyncio.CancelledError:
                raise
            except TimeoutError as exc:
                # our batch deadline, or (with no deadline of ours) a TimeoutError out of `send`
                # itself: either way a failed send, reported like any other
                self._fail(WriterFailed(f"{self.name}: send timed out after {timeout:g}s") if timeout is not None
                           else exc)
                return
            except Exception as exc:  # noqa: BLE001 - any send failure ends this direction
                self._fail(exc)
                return


class DirectWriter(Generic[T]):
    """The `Writer` interface over a socket that writes without waiting (`send_now`): each item goes
    out at once, with no queue and no task to wake. A peer that stops reading shows as bytes piling
    up in the transport (`buffered()`): past `max_buffered` the writer fails, as a stuck `Writer` does.
    """

    __slots__ = ("_send", "_send_many", "_buffered", "_on_fail", "_max", "failed", "name", "_closed", "_held")

    def __init__(self, send_now: Callable[[T], None], buffered: Callable[[], int], on_fail: Callable[[Exception], None],
                 *, name: str, max_buffered: int = 4 * 1024 * 1024,
                 send_many: Callable[[list[T]], None] | None = None) -> None:
        self._send = send_now
        self._send_many = send_many  # several items in one write (see `hold`)
        self._buffered = buffered
        self._on_fail = on_fail
        self._max = max_buffered
        self.failed: Exception | None = None
        self.name = name
        self._closed = False
        self._held: list[T] | None = None

    def put(self, item: T) -> bool:
        if self._closed:
            return False
        held = self._held
        if held is not None:
            held.append(item)
            return True
        try:
            self._send(item)
        except Exception as exc:  # noqa: BLE001 - reported once, like a Writer's failed send
            self._fail(exc)
            return False
        if self._buffered() > self._max:  # `_check_buffered`, inline: 50 times a second per call
            self._fail(WriterFailed(f"{self.name}: over {self._max} bytes unsent, the peer is not reading"))
            return False
        return True

    def put_many(self, items: list[T]) -> bool:
        """`put` of each item, in order, in one write (`send_many`) when there are several."""
        if self._closed:
            return False
        held = self._held
        if held is not None:
            held.extend(items)
            return True
        if len(items) < 2 or self._send_many is None:
            for item in items:
                if not self.put(item):
                    return False
            return True
        return self._write(items)

    def hold(self) -> bool:
        """Keep what is put from now on until `release`, then write it all at once: an action list's
        audio and the mark after it cost one system call and one TCP segment instead of one each.
        False (nothing held) without `send_many`, when closed, or when already holding."""
        if self._send_many is None or self._closed or self._held is not None:
            return False
        self._held = []
        return True

    def release(self) -> bool:
        """Write what was put since `hold`, in order, in one write."""
        held, self._held = self._held, None
        if not held or self._closed:
            return not self._closed
        return self._write(held)

    def _write(self, items: list[T]) -> bool:
        """Write `items` at once (one item through `send_now`); False when the writer failed."""
        try:
            if len(items) == 1:
                self._send(items[0])
            else:
                self._send_many(items)  # type: ignore[misc]  # set when `hold` said True, or checked
        except Exception as exc:  # noqa: BLE001 - as `put`
            self._fail(exc)
            return False
        return self._check_buffered()

    def _check_buffered(self) -> bool:
        if self._buffered() > self._max:
            self._fail(WriterFailed(f"{self.name}: over {self._max} bytes unsent, the peer is not reading"))
            return False
        return True

    def purge(self) -> int:
        return 0  # nothing waits here: what was written is the peer's (a clear drops it there)

    def __len__(self) -> int:
        return 0

    async def drain(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        self._closed = True

    def _fail(self, exc: Exception) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        self._closed = True
        # reported on the next loop turn: `put` runs inside the bridge's interpreter
        asyncio.get_running_loop().call_soon(self._notify, exc)

    def _notify(self, exc: Exception) -> None:
        try:
            self._on_fail(exc)
        except Exception:  # noqa: BLE001
            log.exception("%s: failure handler raised", self.name)
