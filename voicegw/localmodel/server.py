"""The local model's WebSocket server: paths, auth and the per-connection I/O loop.

Routing and authentication happen in `process_request`, before the upgrade, so a wrong key
gets HTTP 401 and an unknown path HTTP 404 exactly where the real services answer them:
- `/openai/realtime?api-version=..&deployment=..` (Azure preview) -> preview dialect;
- `/openai/v1/realtime?model=..` (Azure GA) and `/v1/realtime?model=..` (OpenAI) -> GA dialect,
  except that OpenAI's `/v1/realtime` with `OpenAI-Beta: realtime=v1` speaks the beta dialect.
Keys: `api-key` header, `Authorization: Bearer <key>`, or (Azure paths) `?api-key=`.
Everything per connection lives in a `RealtimeProtocol`; this module only moves bytes, runs
the jobs it asks for in thread pools, and wakes it at its deadlines.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from http import HTTPStatus
from types import TracebackType
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voicegw.localmodel import asr
from voicegw.localmodel.dialect import dialect_named
from voicegw.localmodel.protocol import SESSION_MAX_S, Job, RealtimeProtocol, SynthesisJob
from voicegw.localmodel.tts import Synthesizer, tts_executor

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def route(path: str, headers: Headers) -> tuple[str, str | None] | Response:
    """(dialect name, model) for a request path, or the HTTP error response to send."""
    parts = urlsplit(path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if parts.path.rstrip("/") == "/openai/realtime":
        if not query.get("api-version") or not query.get("deployment"):
            return _http_error(HTTPStatus.BAD_REQUEST, "The 'api-version' and 'deployment' query parameters "
                               "are required.", "invalid_request_error")
        return "preview", None
    if parts.path.rstrip("/") in ("/openai/v1/realtime", "/v1/realtime"):
        model = query.get("model")
        if not model:
            return _http_error(HTTPStatus.BAD_REQUEST, "Missing required parameter: 'model'.",
                               "invalid_request_error")
        beta = "realtime=v1" in headers.get("OpenAI-Beta", "")
        if beta and parts.path.startswith("/v1/"):
            return "preview", model if model.startswith("gpt-4o") else None
        return "ga", model
    return _http_error(HTTPStatus.NOT_FOUND, "Resource not found", "not_found")


def authorized(path: str, headers: Headers, api_key: str) -> bool:
    offered = [headers.get("api-key", "")]
    bearer = headers.get("Authorization", "")
    if bearer.lower().startswith("bearer "):
        offered.append(bearer[7:].strip())
    parts = urlsplit(path)
    if parts.path.startswith("/openai/"):
        offered.extend(parse_qs(parts.query).get("api-key", []))
    return any(o and hmac.compare_digest(o.encode(), api_key.encode()) for o in offered)


def _http_error(status: HTTPStatus, message: str, kind: str) -> Response:
    body = json.dumps({"error": {"message": message, "type": kind, "code": None, "param": None}}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


class LocalModelServer:
    """A Realtime-protocol server on 127.0.0.1 that speaks with eSpeak NG and rule-based words."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 realtime_factor: float = 4.0, voice_rate_wpm: int = 175,
                 max_session_s: float = SESSION_MAX_S,
                 fault: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """`fault`, for fault tests: called with each server event before it is sent; when it
        returns True the connection is cut there (transport aborted), as a network failure would."""
        self._host = host
        self._fault = fault
        self.sessions_opened = 0  # Realtime sessions started (what a cloud service would bill)
        self._port = port
        self._api_key = api_key
        self._realtime_factor = realtime_factor
        self._max_session_s = max_session_s
        self._synth = Synthesizer(rate_wpm=voice_rate_wpm)
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local model server is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"ws://{self._host}:{self.port}"

    async def start(self) -> None:
        """Load the speech synthesizer (a clear TtsUnavailable if it cannot) and listen."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(tts_executor(), self._synth.load)
        self._server = await ws_serve(self._handle, self._host, self._port, process_request=self._process_request,
                                      max_size=MAX_MESSAGE_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 10.0)
            self._server = None

    async def __aenter__(self) -> "LocalModelServer":
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        routed = route(request.path, request.headers)
        if isinstance(routed, Response):
            return routed
        if self._api_key and not authorized(request.path, request.headers, self._api_key):
            return _http_error(HTTPStatus.UNAUTHORIZED, "Access denied due to invalid subscription key or "
                               "wrong API endpoint.", "invalid_request_error")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        routed = route(ws.request.path, ws.request.headers)
        if isinstance(routed, Response):
            return
        dialect_name, model = routed
        self.sessions_opened += 1
        loop = asyncio.get_running_loop()
        protocol = RealtimeProtocol(dialect_named(dialect_name), now=loop.time(), model=model,
                                    realtime_factor=self._realtime_factor, max_session_s=self._max_session_s)
        await _Connection(ws, protocol, self._synth, self._fault).run()


class _Connection:
    """Pumps one WebSocket through one protocol instance."""

    def __init__(self, ws: ServerConnection, protocol: RealtimeProtocol, synth: Synthesizer,
                 fault: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.ws = ws
        self.fault = fault
        self.protocol = protocol
        self.synth = synth
        self.inbox: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read())
        try:
            await self._flush()
            while not self.protocol.closing:
                deadline = self.protocol.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    kind, first, second = await asyncio.wait_for(self.inbox.get(), timeout)
                except asyncio.TimeoutError:
                    kind, first, second = "tick", None, None
                now = loop.time()
                if kind == "closed":
                    break
                if kind == "message":
                    self.protocol.receive(first, now)
                elif kind == "job":
                    self.protocol.job_done(first, second, now)
                self.protocol.tick(now)
                for job in self.protocol.take_jobs():
                    self._spawn(job)
                await self._flush()
            if self.protocol.closing:
                with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
                    await asyncio.wait_for(self.ws.close(1000, "session expired"), SEND_TIMEOUT_S)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass  # the client went away or stopped reading: nothing more to do for it
        finally:
            reader.cancel()
            for task in list(self.tasks):
                task.cancel()

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                await self.inbox.put(("message", message, None))
        except ConnectionClosed:
            pass
        finally:
            await self.inbox.put(("closed", None, None))

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self._run_job(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_job(self, job: Job) -> None:
        result: bytes | str | BaseException
        try:
            if isinstance(job, SynthesisJob):
                result = await self.synth.synthesize_async(job.text, job.fmt)
            else:
                result = await asr.transcribe(job.audio, job.fmt, self.protocol.config.tools)
        except Exception as exc:  # reported to the protocol, which fails just this response/item
            log.warning("local model job failed: %s", exc)
            result = exc
        await self.inbox.put(("job", job, result))

    async def _flush(self) -> None:
        for event in self.protocol.take_events():
            if self.fault is not None and self.fault(event):
                self.ws.transport.abort()
                raise ConnectionClosed(None, None)
            text = json.dumps(event, separators=(",", ":"))  # compact, as the service sends
            await asyncio.wait_for(self.ws.send(text), SEND_TIMEOUT_S)


async def serve(host: str, port: int, api_key: str | None) -> None:
    """Run a local model server until cancelled (`voicegw localmodel --port N`)."""
    async with LocalModelServer(host=host, port=port, api_key=api_key) as server:
        log.info("local Realtime model listening on %s", server.base_url)
        await asyncio.Future()
