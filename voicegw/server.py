"""Assembling and serving the gateway: configuration, call log, console, app, uvicorn."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from voicegw.telephony.fastmedia import MediaUpgrade
from voicegw.telephony.handoff import HandoffReceiver
from starlette.applications import Starlette

from voicegw import logs
from voicegw.app import create_app
from voicegw.config import Settings
from voicegw.gateway import Gateway

log = logging.getLogger("voicegw")

# A Twilio media frame is small JSON (20 ms of audio is 216 base64 characters); 256 KiB leaves room
# for any legitimate frame and keeps one hostile frame from costing every call's audio.
WS_MAX_BYTES = 256 * 1024


@dataclass
class Assembled:
    app: Starlette
    gateway: Gateway
    calllog: Any  # voicegw.calllog.service.CallLogService


def startup_warnings(settings: Settings) -> list[str]:
    """Loud, plain-language warnings for insecure or surprising start-up settings."""
    out = []
    if not settings.twilio_auth_token:
        if settings.dev_mode:
            out.append("DEV MODE: TWILIO_AUTH_TOKEN is not set, so Twilio webhook signatures are NOT checked. "
                       "Never expose this gateway to the internet like this.")
        else:
            out.append("TWILIO_AUTH_TOKEN is not set: every Twilio webhook will be refused (403). "
                       "Set it, or start in dev mode (VOICEGW_DEV_MODE=1) for local testing.")
    if not settings.operator_tokens:
        if settings.dev_mode:
            out.append("No VOICEGW_OPERATOR_TOKENS: the console and API answer localhost only (dev mode).")
        else:
            out.append("No VOICEGW_OPERATOR_TOKENS: the console and API are disabled.")
    if settings.model is None:
        out.append("No AZURE_OPENAI_* or OPENAI_API_KEY set: calls go to the embedded local model.")
    if settings.public_url is None:
        out.append("VOICEGW_PUBLIC_URL is not set: stream URLs are built from the request's Host header.")
    return out


async def assemble(settings: Settings, *, registry: Any = None, calllog: Any = None, worker: str = "w0",
                   peers_dir: str | None = None, rest: Any = None) -> Assembled:
    """Validate configuration (raises ConfigError), open the call log, build the app. `rest` is the
    Twilio REST client (voicegw.telephony.rest.TwilioRest), made from the settings if omitted."""
    from voicegw.calllog.service import open_calllog
    from voicegw.console.auth import OperatorAuth
    from voicegw.console.routes import console_routes
    from voicegw.events.dispatcher import attach_events
    from voicegw.telephony.outbound import outbound_routes
    from voicegw.telephony.rest import TwilioRest
    from voicegw.tools.routing import AgentRegistry

    registry = registry or AgentRegistry.load(settings)
    if calllog is None:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        calllog = await open_calllog(settings.db_url)
    if rest is None and settings.twilio_account_sid and settings.twilio_auth_token:
        rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token)
    gateway = Gateway(settings, registry, calllog, rest=rest, worker=worker, peers_dir=peers_dir)
    auth = OperatorAuth(settings)  # one credential throttle for every /api route
    await attach_events(calllog, settings, gateway.metrics, registry.entries.values())  # VOICEGW_EVENTS_URL
    app = create_app(gateway, console_routes(calllog, settings, auth=auth) + outbound_routes(gateway, auth, rest))
    app.state.calllog = calllog
    return Assembled(app, gateway, calllog)


def tune_gc() -> None:
    """Start-up objects never die: freeze them so collections do not walk them on every call's audio,
    and collect the young generation less often (per-frame garbage is short-lived and acyclic)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _adopted(task: asyncio.Task[Any], sock: socket.socket) -> None:
    if task.cancelled() or task.exception() is not None:
        log.warning("stream hand-over: the passed connection could not be served: %s",
                    "cancelled" if task.cancelled() else task.exception())
        sock.close()


class GatewayServer(uvicorn.Server):
    """uvicorn, where SIGTERM or SIGINT means *drain*, never *drop*.

    First signal: readiness fails at once (the listener stays open), new webhooks get the overflow
    answer, live calls go on until they end or `VOICEGW_DRAIN_TIMEOUT` runs out (then each hears
    a goodbye, or is transferred to the overflow number), then the server stops. A second signal
    ends every call now (their records are still completed). Either way the call log is flushed and
    the process exits 0: the signal is not re-raised at exit as uvicorn otherwise does.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway, ignore_sigint: bool = False) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.ignore_sigint = ignore_sigint  # a worker: its supervisor turns Ctrl-C into one SIGTERM
        self.signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self.ignore_sigint:
            return
        self.signals += 1
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if self._loop is None:
            self.should_exit = True
            return
        if self.signals == 1:
            log.warning("%s: draining (up to %.0fs), then exiting", name, self.gateway.settings.drain_timeout)
            self._loop.call_soon_threadsafe(self._start_drain)
        else:
            log.warning("%s again: ending every call now", name)
            self._loop.call_soon_threadsafe(self._stop_now)

    def _start_drain(self) -> None:
        self.gateway.draining = True  # readiness fails and webhooks overflow from this instant
        self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.gateway.drain(self.gateway.settings.drain_timeout)
        finally:
            self.should_exit = True

    def adopt(self, sock: socket.socket, request: bytes) -> None:
        """Serve a stream connection another worker passed here with the upgrade request it read
        (voicegw.telephony.handoff), as if this process had accepted it."""
        if not self.started or self.should_exit or self._loop is None:
            sock.close()  # not serving (yet, or any more): the caller's stream ends; Twilio's call does not
            return
        state = self.lifespan.state

        def protocol() -> MediaUpgrade:
            return MediaUpgrade(self.config, self.server_state, state, handed=request)

        task = asyncio.ensure_future(self._loop.connect_accepted_socket(protocol, sock))
        task.add_done_callback(lambda t: _adopted(t, sock))

    def _stop_now(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        for call in list(self.gateway.calls.values()):
            call.shutdown("gateway_shutdown")
        self.should_exit = True


async def serve(settings: Settings, *, log_level: str = "info", sockets: list[socket.socket] | None = None,
                worker: str = "w0", peers_dir: str | None = None, ignore_sigint: bool = False) -> None:
    """Serve until drained. With `sockets` (a worker of `serve --workers`): the shared listening
    socket, plus this worker's own Unix sockets under `peers_dir` for streams relayed or handed
    over to it (voicegw.telephony.relay, handoff)."""
    for line in startup_warnings(settings):
        log.warning(line)
    assembled = await assemble(settings, worker=worker, peers_dir=peers_dir)
    (log.info if worker.startswith("w0") else log.debug)("operator console: %s/console", settings.public_url or f"http://{settings.host}:{settings.port}")
    config = uvicorn.Config(
        assembled.app, host=settings.host, port=settings.port, log_level=log_level, lifespan="on",
        ws_max_size=WS_MAX_BYTES, ws_per_message_deflate=False, proxy_headers=True,
        ws=MediaUpgrade,  # /twilio/media on picows, other WebSocket paths on uvicorn's own
        forwarded_allow_ips=",".join(settings.trusted_proxies) or "127.0.0.1",
        timeout_graceful_shutdown=10, access_log=False,
        log_config=logs.uvicorn_log_config(),  # no handlers of its own: voicegw's format (voicegw.logs)
    )
    server = GatewayServer(config, assembled.gateway, ignore_sigint)
    listeners = list(sockets) if sockets is not None else None
    private: socket.socket | None = None
    handoff: HandoffReceiver | None = None
    if peers_dir is not None:
        private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(peers_dir, f"{worker}.sock")
        private.bind(path)
        os.chmod(path, 0o600)
        private.listen(128)
        listeners = (listeners or []) + [private]
        handoff = HandoffReceiver(peers_dir, worker, server.adopt)
        handoff.start()
    tune_gc()
    try:
        await server.serve(listeners)
    finally:
        if handoff is not None:
            handoff.close()
        if private is not None:
            private.close()
        await assembled.calllog.aclose()
        log.info("call log flushed; exiting")


def run(settings: Settings, log_level: str = "info", **kw: Any) -> None:
    """Serve on uvloop when it is installed (uvicorn[standard] brings it); the density benchmark
    measured a few percent less CPU per call-second than the standard event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings, log_level=log_level, **kw))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, log_level=log_level, **kw))
