"""Twilio: the Media Streams codec, TwiML answers and webhook signatures.

Inbound frames become the provider-neutral events of ``voicegw.telephony.base``; outbound frames
are built by string concatenation because they sit on the hot path (hundreds of calls x 50
frames/s) and their variable parts are already safe: payloads are base64 and stream SIDs are
checked at ``start``. Mark names are the one free-form field and are JSON-escaped.

Signatures and TwiML go through the twilio SDK (``RequestValidator``, ``VoiceResponse``), which
knows Twilio's quirks (e.g. signing URLs with and without the default port).
"""
from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from voicegw.compiled import fastwire as _fastwire
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


# Inbound bounds. A media frame is 20 ms (160 bytes) on the wire; one second of audio (8000
# mu-law bytes, 10668 base64 characters) is already fifty frames' worth, so anything larger is not
# Twilio and would only cost us decoding, resampling and model input tokens. A whole frame is capped
# before it is parsed: a start frame with a few custom parameters is ~1 KB, a 1 s media frame ~11 KB,
# and parsing a 16 MB JSON document (the WebSocket server's own limit) would stall every call on
# this worker for tens of milliseconds.
MAX_MEDIA_BYTES = 8000
_MAX_MEDIA_CHARS = (MAX_MEDIA_BYTES + 2) // 3 * 4
MAX_FRAME_CHARS = 64 * 1024
MAX_MARK_NAME = 128  # our own mark names are "m<n>"; anything longer did not come from us
MAX_NUMBER = 10**12  # chunk counters and ms timestamps: 31 years of audio
DTMF_DIGITS = frozenset("0123456789*#ABCD")

# The exact shape of the media frames Twilio sends (key order and all), 50 a second per call.
# Its character classes admit no escapes, quotes or non-ASCII digits, so a frame that matches
# means to `json.loads` exactly what the groups say: the fast path slices it instead of building
# two dicts (parse 4.9 -> 2.9 us per 20 ms frame on this machine). The payload and the numbers are
# then validated as on the slow path; any frame that does not match, or fails a check, goes the
# slow way and gets the same event or BadFrame it always did.
_MEDIA_FRAME = re.compile(
    r'\{"event":"media","sequenceNumber":"[0-9]{1,13}","media":\{"track":"[a-z_]{1,16}",'
    r'"chunk":"([0-9]{1,12})","timestamp":"([0-9]{1,12})","payload":"([A-Za-z0-9+/]{1,10668}={0,2})"\},'
    r'"streamSid":"[A-Za-z0-9_\-]{1,64}"\}').fullmatch

# A mark coming back, in Twilio's key order, with a name of the kind voicegw gives ("m<n>").
_MARK_FRAME = re.compile(
    r'\{"event":"mark","sequenceNumber":"[0-9]{1,13}","streamSid":"[A-Za-z0-9_\-]{1,64}",'
    r'"mark":\{"name":"([A-Za-z0-9_.\-]{1,%d})"\}\}' % MAX_MARK_NAME).fullmatch

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]*").fullmatch


def _media_payload(text: str) -> str | None:
    """The payload of a media frame in Twilio's exact shape, or None (the reference for
    `voicegw._fastwire.media_payload`, which reads the frame once with no pattern engine)."""
    fast = _MEDIA_FRAME(text)
    if fast is None:
        return None
    payload: str = fast[3]
    return None if len(payload) & 3 else payload


def _quoted_name(name: str) -> str:
    """A mark name as a JSON string: ours ("m<n>") need no escaping, and are told by `str` methods
    before the pattern is asked."""
    return '"' + name + '"' if (name.isascii() and name.isalnum()) or _PLAIN_NAME(name) else json.dumps(name)


def _bad(error: str, text: str) -> BadFrame:
    return BadFrame(error=error, raw=text[:500])


def _short(value: Any) -> str:
    """A bounded repr for error messages (a hostile frame chooses these values)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Bad(Exception):
    """A field failed validation; the message names it."""


def _num(value: Any, default: int = 0) -> int:
    """Twilio sends numbers as strings ("chunk": "12"); accept those and plain integers.

    Floats (``1e999`` parses as infinity, and ``int(inf)`` raises OverflowError), negatives,
    booleans and anything over `MAX_NUMBER` are refused.
    """
    if value is None or value == "":
        return default
    if type(value) is int:
        n = value
    elif type(value) is str and len(value) <= 13 and value.isascii() and value.isdigit():
        n = int(value)
    else:
        raise _Bad(f"bad number {_short(value)}")
    if not 0 <= n <= MAX_NUMBER:
        raise _Bad(f"number out of range {_short(value)}")
    return n


def valid_media_payload(payload: Any) -> str | None:
    """Why `payload` is not a Twilio media payload, or None when it is one.

    Strict base64 (binascii's C decoder in strict mode: no whitespace, no stray characters, no
    misplaced padding; 0.6 us for a 20 ms frame on this machine) of 1 to `MAX_MEDIA_BYTES` bytes.
    The payload string is passed on as it is (to the model in passthrough), so it must be clean.
    """
    if payload is None:
        return "media frame is missing its payload"
    if type(payload) is not str:
        return "media payload is not a string"
    n = len(payload)
    if n == 0:
        return "media payload is empty"
    if n > _MAX_MEDIA_CHARS:
        return f"media payload of {n} base64 characters is over 1 s of audio ({MAX_MEDIA_BYTES} bytes)"
    if n & 3:
        return "media payload is not valid base64 (length is not a multiple of 4)"
    try:
        raw = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        return f"media payload is not valid base64 ({exc})"
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    if len(raw) != n // 4 * 3 - pad:  # e.g. "AAAA====": excess padding strict mode lets through
        return "media payload is not valid base64 (excess padding)"
    return None


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if type(value) is not dict:
        raise _Bad(f"field {key!r} is missing or not an object")
    return value


def _text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    if type(value) is not str:
        raise _Bad(f"expected a string, got {_short(value)}")
    return value


class TwilioMediaCodec:
    """Twilio Media Streams <-> voicegw stream events (implements MediaStreamCodec)."""

    def parse(self, text: str) -> StreamEvent:
        """One text frame -> one event. Never raises: anything unexpected is a BadFrame naming why."""
        if type(text) is str:  # the hot path, 50 frames a second per call: Twilio's exact media shape
            fast = _MEDIA_FRAME(text)
            if fast is not None:
                chunk, timestamp, payload = fast.groups()
                # the pattern admits base64 characters with padding at the end only: with a length
                # that is a multiple of 4 that is valid base64 (what `valid_media_payload` checks);
                # its numbers have at most 12 digits, below MAX_NUMBER
                if not len(payload) & 3:
                    return CallerAudio(payload, int(timestamp), int(chunk))
            else:
                mark = _MARK_FRAME(text)  # one every ~100 ms of agent audio
                if mark is not None:
                    return MarkPlayed(mark[1])
        try:
            return self._parse(text)
        except Exception as exc:  # noqa: BLE001 - the contract: hostile input is a BadFrame, always
            return _bad(f"frame could not be parsed ({type(exc).__name__})", text if type(text) is str else "")

    # The payload of a media frame in Twilio's exact shape (the frame `parse` would read as
    # CallerAudio on its fast path), or None for any other frame: `_media_payload`, in C when built.
    media_payload = staticmethod(_fastwire.media_payload if _fastwire is not None else _media_payload)

    def _parse(self, text: str) -> StreamEvent:
        if type(text) is not str:
            return _bad(f"frame is a {type(text).__name__}, not text", "")
        if len(text) > MAX_FRAME_CHARS:
            return _bad(f"frame of {len(text)} characters is over the {MAX_FRAME_CHARS} limit", text)
        try:
            msg = json.loads(text)
        except (ValueError, TypeError) as exc:
            return _bad(f"not JSON: {exc}", text)
        except RecursionError:
            return _bad("not JSON: nested too deeply", text)
        if type(msg) is not dict:
            return _bad("frame is not a JSON object", text)
        event = msg.get("event")
        try:
            if event == "media":  # the hot path: 50 frames a second per call
                media = msg.get("media")
                if type(media) is not dict:
                    return _bad("media frame has no media object", text)
                payload = media.get("payload")
                problem = valid_media_payload(payload)
                if problem is not None:
                    return _bad(problem, text)
                return CallerAudio(payload, _num(media.get("timestamp")), _num(media.get("chunk")))
            if event == "mark":
                name = _obj(msg, "mark").get("name")
                if type(name) is not str or not name:
                    return _bad("mark frame has no name", text)
                if len(name) > MAX_MARK_NAME:
                    return _bad(f"mark name of {len(name)} characters is over {MAX_MARK_NAME}", text)
                return MarkPlayed(name)
            if event == "start":
                return self._start(msg, text)
            if event == "dtmf":
                digit = _obj(msg, "dtmf").get("digit")
                if type(digit) is not str or digit not in DTMF_DIGITS or len(digit) != 1:
                    return _bad(f"dtmf frame has a bad digit {_short(digit)}", text)
                return Dtmf(digit)
            if event == "stop":
                return StreamStopped("stop")
            if event == "connected":
                return StreamConnected(_text(msg.get("protocol")), _text(msg.get("version")))
        except _Bad as exc:
            return _bad(f"{event} frame: {exc}", text)
        if event is None:
            return _bad("frame has no event", text)
        return _bad(f"unknown event {_short(event)}", text)

    def _start(self, msg: dict[str, Any], text: str) -> StreamEvent:
        start = _obj(msg, "start")
        sid = msg.get("streamSid") or start.get("streamSid")
        if type(sid) is not str or not _SAFE_SID.fullmatch(sid):
            return _bad(f"start frame has a bad streamSid {_short(sid)}", text)
        call_sid = start.get("callSid")
        if type(call_sid) is not str or not _SAFE_SID.fullmatch(call_sid):
            return _bad(f"start frame has a bad callSid {_short(call_sid)}", text)
        params = start.get("customParameters") or {}
        if type(params) is not dict:
            return _bad("start customParameters is not an object", text)
        if not all(type(v) is str for v in params.values()):
            return _bad("start customParameters values must be strings", text)
        fmt = start.get("mediaFormat") or {}
        if type(fmt) is not dict:
            return _bad("start mediaFormat is not an object", text)
        tracks = start.get("tracks") or ["inbound"]
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            return _bad("start tracks is not a list of strings", text)
        return StreamStarted(
            stream_sid=sid,
            call_sid=call_sid,
            account_sid=_text(start.get("accountSid")),
            tracks=tuple(tracks),
            custom_parameters=dict(params),
            encoding=_text(fmt.get("encoding"), "audio/x-mulaw"),
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

    def audio_encoder(self, stream_sid: str) -> Callable[[str], str]:
        """`media` for one stream, as a function of the payload only (the hot path: concatenation)."""
        head = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        return lambda payload_b64: head + payload_b64 + '"}}'

    def media(self, stream_sid: str, payload_b64: str) -> str:
        return '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + payload_b64 + '"}}'

    def mark_encoder(self, stream_sid: str) -> Callable[[str], str]:
        """`mark` for one stream, as a function of the name only (a mark per chunk of agent audio)."""
        head = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":'
        return lambda name: head + _quoted_name(name) + "}}"

    def mark(self, stream_sid: str, name: str) -> str:
        return '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":' + _quoted_name(name) + "}}"

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


OVERFLOW_MESSAGE = "We're sorry, all our agents are busy right now. Please call again later. Goodbye."


def build_overflow_twiml(overflow_number: str | None) -> str:
    """The answer when the gateway cannot take the call (full, draining): send the caller to the
    overflow number, or apologise and hang up. No model session is involved."""
    if overflow_number:
        return build_dial_twiml(overflow_number, None)
    response = VoiceResponse()
    response.say(OVERFLOW_MESSAGE)
    response.hangup()
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
