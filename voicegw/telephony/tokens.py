"""Short-lived HMAC tokens that authenticate a media stream.

Twilio signs the voice webhook, but whether it signs the WebSocket upgrade is disputed, so the
TwiML we answer carries a token in a ``<Parameter name="token">``. Twilio echoes it back in the
stream's ``start`` frame, and a stream without a valid token for its own call is refused before a
(billed) model session opens: unauthenticated media streams are toll fraud.

Format: ``v1.<expiry unix seconds>.<base64url HMAC-SHA256(secret, "v1.<call sid>.<expiry>")>``.
The call SID is bound by the MAC, not carried, so a token is useless for any other call.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re

_VERSION = "v1"
_SHAPE = re.compile(r"^v1\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")


class StreamTokenError(Exception):
    """The stream token is missing, malformed, forged, expired or for another call."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(secret: bytes, call_sid: str, expiry: int) -> str:
    digest = hmac.new(secret, f"{_VERSION}.{call_sid}.{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint_stream_token(secret: bytes, call_sid: str, ttl_s: float, now: float) -> str:
    """A token valid for ``call_sid`` until ``now + ttl_s`` (rounded up to whole seconds)."""
    if not secret:
        raise ValueError("stream token secret must not be empty")
    if ttl_s <= 0:
        raise ValueError("stream token ttl must be positive")
    expiry = math.ceil(now + ttl_s)
    return f"{_VERSION}.{expiry}.{_mac(secret, call_sid, expiry)}"


def verify_stream_token(secret: bytes, token: str | None, call_sid: str, now: float) -> None:
    """Return quietly for a valid token; raise StreamTokenError(reason) otherwise.

    The MAC is checked before the expiry so an attacker learns nothing from the reason.
    """
    if not token:
        raise StreamTokenError("missing stream token")
    m = _SHAPE.match(token)
    if m is None:
        raise StreamTokenError("malformed stream token")
    expiry = int(m.group(1))
    if not hmac.compare_digest(m.group(2), _mac(secret, call_sid, expiry)):
        raise StreamTokenError("invalid stream token (forged or issued for another call)")
    if now > expiry:
        raise StreamTokenError("expired stream token")
