"""Twilio: the Media Streams codec, TwiML answers and webhook signatures.

Inbound frames become the provider-neutral events of ``voicegw.telephony.base``; outbound frames
are built by string concatenation because they sit on the hot path (hundreds of calls x 50
frames/s) and their variable parts are already safe: payloads are base64 and stream SIDs are
checked at ``start``. Mark names are the one free-form field and are JSON-escaped.

Signatures and TwiML go through the twilio SDK (``RequestValidator``, ``VoiceResponse``), which
knows Twilio's quirks (e.g. signing URLs with and without the default port).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from voicegw.telephony.base import (
    BadFrame,
    CallerAudio,
    ClearPlayback,
    Dtmf,
    MarkPlayed,
    PlayAudio,
    PlayMark,
    StreamConnected,
    StreamEvent,
    StreamIntent,
    StreamStarted,
    StreamStopped,
)

# Twilio stream SIDs are "MZ" + 32 hex; accept any short token of safe characters so outbound
# frames can embed the SID without escaping.
_SAFE_SID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NUMBER = re.compile(r"^\+?[0-9]{2,15}$")
_SIP = re.compile(r"^sips?:[^\s<>\"]+$")


def _bad(error: str, text: str) -> BadFrame:
    return BadFrame(error=error, raw=text[:500])


def _num(value: Any, default: int = 0) -> int:
    """Twilio sends numbers as strings ("chunk": "12"); accept both."""
    if value is None or value == "":
        return default
    return int(value)


class TwilioMediaCodec:
    """Twilio Media Streams <-> voicegw stream events (implements MediaStreamCodec)."""

    def parse(self, text: str) -> StreamEvent:
        try:
            msg = json.loads(text)
        except (ValueError, TypeError) as exc:
            return _bad(f"not JSON: {exc}", str(text))
        if not isinstance(msg, dict):
            return _bad("frame is not a JSON object", text)
        event = msg.get("event")
        try:
            if event == "media":
                media = msg["media"]
                payload = media["payload"]
                if not isinstance(payload, str):
                    return _bad("media payload is not a string", text)
                return CallerAudio(payload, _num(media.get("timestamp")), _num(media.get("chunk")))
            if event == "mark":
                name = msg["mark"]["name"]
                return MarkPlayed(str(name))
            if event == "start":
                return self._start(msg, text)
            if event == "dtmf":
                return Dtmf(str(msg["dtmf"]["digit"]))
            if event == "stop":
                return StreamStopped("stop")
            if event == "connected":
                return StreamConnected(str(msg.get("protocol", "")), str(msg.get("version", "")))
        except (KeyError, TypeError) as exc:
            return _bad(f"{event} frame is missing a field: {exc}", text)
        except ValueError as exc:
            return _bad(f"{event} frame has a bad number: {exc}", text)
        return _bad(f"unknown event {event!r}", text)

    def _start(self, msg: dict[str, Any], text: str) -> StreamEvent:
        start = msg["start"]
        sid = msg.get("streamSid") or start.get("streamSid")
        if not isinstance(sid, str) or not _SAFE_SID.match(sid):
            return _bad(f"start frame has a bad streamSid {sid!r}", text)
        call_sid = start["callSid"]
        if not isinstance(call_sid, str) or not call_sid:
            return _bad("start frame has no callSid", text)
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            return _bad("start customParameters is not an object", text)
        fmt = start.get("mediaFormat") or {}
        tracks = start.get("tracks") or ["inbound"]
        return StreamStarted(
            stream_sid=sid,
            call_sid=call_sid,
            account_sid=str(start.get("accountSid", "")),
            tracks=tuple(str(t) for t in tracks),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=_num(fmt.get("sampleRate"), 8000),
            channels=_num(fmt.get("channels"), 1),
        )

    def encode(self, stream_sid: str, intent: StreamIntent) -> str:
        kind = type(intent)
        if kind is PlayAudio:
            return self.media(stream_sid, intent.payload_b64)  # type: ignore[union-attr]
        if kind is PlayMark:
            return self.mark(stream_sid, intent.name)  # type: ignore[union-attr]
        if kind is ClearPlayback:
            return self.clear(stream_sid)
        raise TypeError(f"not a stream intent: {kind.__name__}")

    def media(self, stream_sid: str, payload_b64: str) -> str:
        return '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + payload_b64 + '"}}'

    def mark(self, stream_sid: str, name: str) -> str:
        return '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":' + json.dumps(name) + "}}"

    def clear(self, stream_sid: str) -> str:
        return '{"event":"clear","streamSid":"' + stream_sid + '"}'


# ---------------------------------------------------------------------------------------------
# TwiML
# ---------------------------------------------------------------------------------------------


def build_connect_twiml(stream_url: str, parameters: dict[str, str], status_callback: str | None = None) -> str:
    """<Connect><Stream url=...> with <Parameter>s (the stream token travels as one)."""
    response = VoiceResponse()
    connect = Connect()
    extra: dict[str, str] = {}
    if status_callback:
        extra = {"status_callback": status_callback, "status_callback_method": "POST"}
    stream = connect.stream(url=stream_url, **extra)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def build_dial_twiml(target: str, announcement: str | None) -> str:
    """Transfer TwiML: optional <Say>, then <Dial><Number> or <Dial><Sip>."""
    target = target.strip()
    response = VoiceResponse()
    if announcement:
        response.say(announcement)
    dial = Dial()
    if _SIP.match(target):
        dial.sip(target)
    elif _NUMBER.match(target.replace(" ", "").replace("-", "")):
        dial.number(target.replace(" ", "").replace("-", ""))
    else:
        raise ValueError(f"transfer target must be a phone number or a sip: URI, got {target!r}")
    response.append(dial)
    return str(response)


def build_hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


# ---------------------------------------------------------------------------------------------
# Webhook signatures
# ---------------------------------------------------------------------------------------------

_DEFAULT_PORT = {"http": "80", "https": "443"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for key, v in headers.items():
            if key.lower() == lname:
                value = v
                break
    if value is None:
        return None
    first = value.split(",")[0].strip()  # a proxy chain appends; the first hop is Twilio's
    return first or None


def public_request_url(request_url: str, headers: Mapping[str, str], public_url: str | None) -> str:
    """The URL Twilio actually requested (and signed), as seen from behind a proxy.

    X-Forwarded-Proto/Host(/Port) win when present; else the configured public base URL plus the
    request's path and query; else the request URL itself.
    """
    req = urlsplit(request_url)
    proto = _header(headers, "X-Forwarded-Proto")
    host = _header(headers, "X-Forwarded-Host")
    if proto or host:
        scheme = (proto or req.scheme).lower()
        netloc = host or req.netloc
        port = _header(headers, "X-Forwarded-Port")
        if port and ":" not in netloc.rsplit("]", 1)[-1] and port != _DEFAULT_PORT.get(scheme):
            netloc = f"{netloc}:{port}"
        return urlunsplit((scheme, netloc, req.path, req.query, ""))
    if public_url:
        base = public_url.rstrip("/")
        return base + req.path + (f"?{req.query}" if req.query else "")
    return request_url


def validate_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when X-Twilio-Signature matches the URL and POST params under the auth token."""
    if not signature or not auth_token:
        return False
    form: Any = params if hasattr(params, "getlist") else dict(params)
    return bool(RequestValidator(auth_token).validate(url, form, signature))


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send (used by the simulated caller)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))
