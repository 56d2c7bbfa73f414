"""One delivery attempt over HTTP, and what follows from its answer.

An attempt is a signed POST bounded by `timeout_s` as a whole (connecting, sending, the answer),
redirects not followed, and at most `MAX_ANSWER_BYTES` of the answer read. A 2xx answer delivers
the event; 410 Gone means the receiver wants no more of it (the event fails at once); anything
else (no answer, 3xx, 4xx, 5xx) is tried again after the next delay of the schedule, or later
when a 429/503 answer's Retry-After asks for more time, until the schedule runs out.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from voicegw import __version__
from voicegw.events.signing import Signer
from voicegw.events.store import Attempt, Verdict

# 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h: eight attempts over 3 h 47 min
RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)
TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 2048
MAX_ERROR_CHARS = 300


def verdict(attempts: int, attempt: Attempt, delays: tuple[float, ...], retry_after: float | None = None) -> Verdict:
    """After the `attempts`-th attempt (1 for the first): delivered, failed, or pending until when."""
    status = attempt.status
    if status is not None and 200 <= status < 300:
        return Verdict("delivered")
    if status == 410 or attempts > len(delays):
        return Verdict("failed")
    delay = delays[attempts - 1]
    if retry_after is not None:
        delay = min(max(delay, retry_after), max(delays))
    return Verdict("pending", attempt.at + delay)


@dataclass(frozen=True)
class Answer:
    attempt: Attempt
    retry_after: float | None = None


class Sender:
    """POSTs signed bodies to one URL. `transport` replaces the network (httpx transports)."""

    def __init__(self, url: str, signer: Signer, timeout_s: float = TIMEOUT_S, connections: int = 4,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._signer = signer
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"user-agent": f"voicegw/{__version__}", "content-type": "application/json"},
        )

    async def send(self, msg_id: str, body: str) -> Answer:
        """One attempt; never raises for anything the network or the receiver did."""
        started = time.time()
        clock = time.monotonic()
        headers = self._signer.headers(msg_id, body, started)
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("POST", self.url, content=body.encode(), headers=headers) as resp:
                    status = resp.status_code
                    answer = await _read_some(resp)
                    retry_after = _retry_after(resp.headers.get("retry-after"))
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (f": {answer}" if answer else "")
        except (TimeoutError, httpx.TimeoutException):
            status, error = None, f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
        return Answer(Attempt(started, status, self._clean(error), (time.monotonic() - clock) * 1000.0), retry_after)

    def _clean(self, error: str | None) -> str | None:
        """One line, bounded, and never the URL (it may carry a token of the receiver's)."""
        if error is None:
            return None
        text = " ".join(error.replace(self.url, "<url>").split())
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_some(resp: httpx.Response) -> str:
    """The start of the answer's body, for the error shown to operators."""
    data = b""
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) >= MAX_ANSWER_BYTES:
            break
    return data[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; an HTTP-date is ignored (the schedule's delay applies)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
