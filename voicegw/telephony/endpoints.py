"""HTTP and WebSocket endpoints Twilio talks to: the voice webhook and the media stream."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.types import Message
from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegw.call.bridge import CallBridge
from voicegw.config import Settings
from voicegw.gateway import STREAM_TOKEN_REUSED, Gateway
from voicegw.logs import set_call_sid
from voicegw.telephony import base as tel
from voicegw.telephony.forward import forward_hops, forward_webhook
from voicegw.telephony.grants import GrantError, OutboundGrant, Purpose, verify_grant
from voicegw.telephony.tokens import StreamTokenError, mint_stream_token, verify_stream_token
from voicegw.telephony.relay import MAX_HOPS, RELAY_HEADER, relay, relay_target
from voicegw.telephony.twilio import build_connect_twiml, build_overflow_twiml, public_request_url, validate_signature

log = logging.getLogger("voicegw.telephony")

START_TIMEOUT_S = 10.0  # connected + start must arrive this soon after the socket opens
FRAME_TIMEOUT_S = 30.0  # Twilio sends a media frame every 20 ms, silence included
GUARD_SLACK_S = 1.0  # how often the frame-silence deadline is pushed forward
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def _relay_hops(ws: WebSocket) -> int:
    try:
        return max(0, int(ws.headers.get(RELAY_HEADER, "0")))
    except ValueError:
        return MAX_HOPS


def _stream_url(public: str, gw: Gateway) -> str:
    """wss://<host>/twilio/media from the public URL Twilio used for the webhook; with several
    workers, /twilio/media/<this worker>, so the worker that gets the stream can pass it here before
    it opens (voicegw.telephony.handoff)."""
    parts = urlsplit(public)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    path = "/twilio/media" if gw.peers_dir is None else f"/twilio/media/{gw.worker}"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def twilio_form(request: Request, settings: Settings, what: str) -> tuple[str, dict[str, str]] | Response:
    """The public URL Twilio requested and the POSTed form of a Twilio webhook whose signature
    holds (query included: Twilio signs the whole URL), or the refusal to answer with."""
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    url = public_request_url(str(request.url), request.headers, settings.public_url)
    if settings.twilio_auth_token:
        if not validate_signature(settings.twilio_auth_token, url, params, request.headers.get("X-Twilio-Signature")):
            log.warning("%s: bad or missing X-Twilio-Signature for %s", what, url.split("?")[0])
            return PlainTextResponse("invalid Twilio signature", status_code=403)
    elif not settings.dev_mode:
        return PlainTextResponse(
            "webhooks are refused: TWILIO_AUTH_TOKEN is not set (set it, or run in dev mode)", status_code=403)
    return url, params


@dataclass(frozen=True)
class GrantedCallback:
    """A Twilio callback whose signature and gateway grant hold."""

    url: str  # the public URL Twilio signed
    params: dict[str, str]
    grant: OutboundGrant


async def granted_callback(request: Request, settings: Settings, purpose: Purpose, what: str) -> GrantedCallback | Response:
    """`twilio_form`, then the `?outbound=` grant for `purpose` (403 when it does not hold): the
    status callbacks of calls the gateway placed (answering verdict, final status, warm transfer)."""
    checked = await twilio_form(request, settings, what)
    if isinstance(checked, Response):
        return checked
    try:
        grant = verify_grant(settings.stream_secret, request.query_params.get("outbound"), purpose, time.time())
    except GrantError as exc:
        log.warning("%s refused: %s", what, exc)
        return PlainTextResponse("invalid outbound grant", status_code=403)
    return GrantedCallback(checked[0], checked[1], grant)


async def forward_to_owner(request: Request, cb: GrantedCallback, gw: Gateway) -> Response | None:
    """The owner's answer when the call belongs to another process (None: it is ours)."""
    return await forward_webhook(cb.url, cb.params, request.headers.get("X-Twilio-Signature"), cb.grant.owner,
                                 gw.owner, gw.peers_dir, forward_hops(request.headers))


async def voice_webhook(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    settings = gw.settings
    checked = await twilio_form(request, settings, "voice webhook")
    if isinstance(checked, Response):
        return checked
    url, params = checked
    grant: OutboundGrant | None = None
    if "outbound" in request.query_params:  # a call placed by POST /api/calls (voicegw.telephony.outbound)
        try:
            grant = verify_grant(settings.stream_secret, request.query_params["outbound"], "voice", time.time())
        except GrantError as exc:
            log.warning("voice webhook refused: %s", exc)
            return PlainTextResponse("invalid outbound grant", status_code=403)
        forwarded = await forward_webhook(url, params, request.headers.get("X-Twilio-Signature"), grant.owner,
                                          gw.owner, gw.peers_dir, forward_hops(request.headers))
        if forwarded is not None:  # the process that placed the call answered
            return forwarded
    call_sid = params.get("CallSid", "")
    if not call_sid:
        return PlainTextResponse("CallSid is required", status_code=400)
    from_number, to_number = params.get("From", ""), params.get("To", "")
    refused = gw.admit(call_sid)
    if refused is not None:  # full or draining: no model session is opened
        return Response(build_overflow_twiml(settings.overflow_number), media_type="application/xml")
    token = mint_stream_token(settings.stream_secret, call_sid, settings.stream_token_ttl, time.time(), gw.owner)
    if grant is None:
        gw.prewarm(call_sid, from_number, to_number)
    else:
        agent_key = grant.agent
        if agent_key is not None and agent_key not in gw.registry.entries:  # the agents changed since
            log.warning("outbound call %s: agent %r is gone; the calling number's agent takes it", call_sid, agent_key)
            agent_key = None
        gw.prewarm(call_sid, from_number, to_number, agent_key=agent_key, context=grant.context,
                   await_answer=grant.await_answer, outbound=True)
    twiml = build_connect_twiml(
        _stream_url(url, gw), {"From": from_number, "To": to_number, "CallSid": call_sid, "token": token})
    # With several workers the call lives where its webhook was answered, so the connection is not
    # kept for the next webhook: an ingress reuses its idle upstream connections, which would give
    # every call to one worker. A new connection goes to whichever worker accepts it first.
    headers = {"Connection": "close"} if gw.peers_dir is not None else None
    return Response(twiml, media_type="application/xml", headers=headers)


def _event_of(message: Message, gw: Gateway) -> tel.StreamEvent:
    """One ASGI WebSocket message -> one stream event. Twilio sends text frames only: a binary
    frame is a bad frame (logged and skipped by the call), a disconnect ends the read loop."""
    text = message.get("text")
    if text is not None:
        return gw.codec.parse(text)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    data = message.get("bytes") or b""
    return tel.BadFrame(error=f"binary frame of {len(data)} bytes (Twilio sends text frames)")


async def _await_start(ws: WebSocket, gw: Gateway, frames: list[str]) -> tel.StreamStarted | None:
    """Read up to the `start` frame; the frames read are kept in `frames` (a relay forwards them)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            message = await ws.receive()
            event = _event_of(message, gw)
            if message.get("text") is not None and len(frames) < 8:
                frames.append(message["text"])
            if isinstance(event, tel.StreamStarted):
                return event
            if isinstance(event, tel.StreamStopped):
                return None
            if isinstance(event, tel.BadFrame):
                log.info("media stream: bad frame before start: %s", event.error)


async def media_stream(ws: WebSocket) -> None:
    gw: Gateway = ws.app.state.gateway
    await ws.accept()
    frames: list[str] = []
    try:
        start = await _await_start(ws, gw, frames)
    except (asyncio.TimeoutError, WebSocketDisconnect):
        start = None
    if start is None:
        with contextlib.suppress(Exception):
            await ws.close(code=POLICY_VIOLATION, reason="no stream start")
        return
    try:
        owner = verify_stream_token(gw.settings.stream_secret, start.custom_parameters.get("token"), start.call_sid,
                                    time.time())
    except StreamTokenError as exc:
        gw.metrics.stream_refused("invalid_token")
        log.warning("media stream for %s refused: %s", start.call_sid, exc)
        with contextlib.suppress(Exception):
            await ws.close(code=POLICY_VIOLATION, reason="invalid stream token")
        return
    set_call_sid(start.call_sid)
    hops = _relay_hops(ws)
    target = relay_target(owner, gw.owner, gw.peers_dir, hops)
    if target is not None:
        gw.metrics.stream_relayed()
        if await relay(ws, frames, target, hops):
            return
    p = start.custom_parameters
    call = gw.take_stream(start.call_sid, p.get("From", ""), p.get("To", ""))
    if isinstance(call, str):  # a replayed token, or no room for a call whose pre-warm is gone
        gw.metrics.stream_refused(call)
        reused = call == STREAM_TOKEN_REUSED
        why = "stream token already used" if reused else "gateway full"
        log.warning("media stream for %s refused: %s", start.call_sid, why)
        with contextlib.suppress(Exception):
            await ws.close(code=POLICY_VIOLATION if reused else TRY_AGAIN_LATER, reason=why)
        return
    dispatch = getattr(ws, "dispatch_to", None)
    if dispatch is None:
        reader: asyncio.Future[Any] = asyncio.ensure_future(_read_frames(ws, gw, call))
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        await call.attach(ws, start)
        if dispatch is not None:  # picows: frames reach the call in its callback (voicegw.telephony.fastmedia)
            reader = dispatch(call, gw, FRAME_TIMEOUT_S)
        await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, ended):
            task.cancel()
        await asyncio.gather(reader, ended, return_exceptions=True)
        if not call.ended.is_set():
            call.telephony_lost("telephony_lost")
        await call.aclose()
        with contextlib.suppress(Exception):
            await ws.close(code=1000)


async def _read_frames(ws: WebSocket, gw: Gateway, call: CallBridge) -> None:
    """Feed the call every frame until the stream stops; FRAME_TIMEOUT_S of silence ends the call.

    One deadline guards the whole loop and is pushed forward at most once a second (so a dead
    stream ends 30-31 s after its last frame): a fresh timeout per frame cost a timer and a
    context manager 50 times a second per call. Feeding a frame never waits: what the call sends
    in answer goes through its writers, so marks are read promptly whatever the model socket does.
    """
    receive = ws.receive
    on_frame = call.on_frame
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(FRAME_TIMEOUT_S + GUARD_SLACK_S) as guard:
            pushed = loop.time()
            while not call.ended.is_set():
                message = await receive()
                now = loop.time()
                if now - pushed >= GUARD_SLACK_S:
                    guard.reschedule(now + FRAME_TIMEOUT_S + GUARD_SLACK_S)
                    pushed = now
                event = _event_of(message, gw)
                on_frame(event)
                if isinstance(event, tel.StreamStopped):
                    return
    except WebSocketDisconnect:
        call.telephony_lost("caller_hangup")
    except asyncio.TimeoutError:
        call.telephony_lost("telephony_timeout")
