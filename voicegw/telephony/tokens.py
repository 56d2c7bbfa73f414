"""Short-lived HMAC tokens that authenticate a media stream.

Twilio signs the voice webhook, but whether it signs the WebSocket upgrade is disputed, so the
TwiML we answer carries a token in a ``<Parameter name="token">``. Twilio echoes it back in the
stream's ``start`` frame, and a stream without a valid token for its own call is refused before a
(billed) model session opens: unauthenticated media streams are toll fraud.

Format: ``v2.<expiry unix seconds>.<base64url owner>.<base64url HMAC-SHA256(secret,
"v2.<call sid>.<expiry>.<owner>")>``. The call SID is bound by the MAC, not carried, so a token is
useless for any other call. The *owner* names the process that pre-warmed the call's model session
(`<replica base URL>|<worker id>`): a stream that reaches another worker or replica is relayed to
it, and because the owner is under the MAC, a token cannot point a relay anywhere else. Tokens of
the older ``v1.<expiry>.<mac>`` form (no owner) are still accepted, so a rolling upgrade drops no
call.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re

_SHAPE_V1 = re.compile(r"^v1\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")
_SHAPE = re.compile(r"^v2\.(\d{1,12})\.([A-Za-z0-9_-]{0,400})\.([A-Za-z0-9_-]{43})$")


class StreamTokenError(Exception):
    """The stream token is missing, malformed, forged, expired or for another call."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(secret: bytes, message: str) -> str:
    return _b64(hmac.new(secret, message.encode(), hashlib.sha256).digest())


def mint_stream_token(secret: bytes, call_sid: str, ttl_s: float, now: float, owner: str = "") -> str:
    """A token valid for ``call_sid`` until ``now + ttl_s`` (rounded up to whole seconds), naming
    the process that owns the call's pre-warmed model session."""
    if not secret:
        raise ValueError("stream token secret must not be empty")
    if ttl_s <= 0:
        raise ValueError("stream token ttl must be positive")
    expiry = math.ceil(now + ttl_s)
    return f"v2.{expiry}.{_b64(owner.encode())}.{_mac(secret, f'v2.{call_sid}.{expiry}.{owner}')}"


def verify_stream_token(secret: bytes, token: str | None, call_sid: str, now: float) -> str:
    """The token's owner ("" when it names none) for a valid token; StreamTokenError otherwise.

    The MAC is checked before the expiry so an attacker learns nothing from the reason.
    """
    if not token:
        raise StreamTokenError("missing stream token")
    m = _SHAPE.match(token)
    if m is not None:
        expiry = int(m.group(1))
        try:
            owner = base64.urlsafe_b64decode(m.group(2) + "=" * (-len(m.group(2)) % 4)).decode()
        except ValueError:
            raise StreamTokenError("malformed stream token") from None
        expected = _mac(secret, f"v2.{call_sid}.{expiry}.{owner}")
    else:
        m = _SHAPE_V1.match(token)
        if m is None:
            raise StreamTokenError("malformed stream token")
        expiry, owner = int(m.group(1)), ""
        expected = _mac(secret, f"v1.{call_sid}.{expiry}")
    if not hmac.compare_digest(m.group(m.lastindex or 0), expected):
        raise StreamTokenError("invalid stream token (forged or issued for another call)")
    if now > expiry:
        raise StreamTokenError("expired stream token")
    return owner
