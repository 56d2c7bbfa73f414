"""Signed grants in the URLs of an outbound call: what the gateway asked Twilio to come back with.

`POST /api/calls` asks Twilio to dial a number and to fetch the call's TwiML from
``/twilio/voice?outbound=<grant>``, and to post the answering-machine verdict to
``/twilio/amd?outbound=<grant>``. The grant says which agent takes the call, the variables that
fill its ``{{placeholders}}``, whether the greeting waits for the verdict, and which process placed
the call (its *owner*, ``<replica URL>|<worker>`` as in stream tokens): the webhooks are forwarded
there, so the call's model session, its stream and its verdict all meet in one process.

Grants are stateless, so any worker or replica sharing ``VOICEGW_STREAM_SECRET`` can check one.
Twilio signs the full webhook URL, query included, so a grant already arrives authenticated; the
MAC keeps it so in dev mode (unsigned webhooks) and makes the owner, the forwarding target, a value
nobody but the gateway can choose.

Format: ``o1.<base64url JSON>.<base64url HMAC-SHA256(secret, "voicegw-outbound.o1." + JSON part)>``
with JSON ``{"p": purpose, "e": expiry, "o": owner, "a": agent, "c": context, "m": await answer}``;
the purpose ("voice" or "amd") keeps one URL's grant from being used on the other.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Purpose = Literal["voice", "amd", "transfer", "status"]

# Twilio queues calls beyond the account's calls-per-second and lets one ring for up to 10 minutes
# (`timeout` 600); the verdict arrives within a minute of the answer. 30 minutes covers all of it.
GRANT_TTL_S = 1800
MAX_CONTEXT_BYTES = 2048  # the context's JSON; a grant stays well inside a URL Twilio accepts
MAX_GRANT_CHARS = 4000
CONTEXT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # what a {{placeholder}} may be called
_SHAPE = re.compile(r"^o1\.([A-Za-z0-9_-]{1,3900})\.([A-Za-z0-9_-]{43})$")


class GrantError(Exception):
    """The grant is missing, malformed, forged, expired or for the other URL."""


@dataclass(frozen=True)
class OutboundGrant:
    purpose: Purpose
    expiry: int
    owner: str = ""
    agent: str | None = None  # registry key of the agent that takes the call
    context: dict[str, str] = field(default_factory=dict)
    await_answer: bool = False  # machine detection is on: no greeting before the verdict


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, f"voicegw-outbound.o1.{body}".encode(), hashlib.sha256).digest())


def check_context(context: Any) -> dict[str, str]:
    """The context as a dict of placeholder names to strings, or ValueError saying what is wrong."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ValueError("context must be an object of names to strings")
    for key, value in context.items():
        if not isinstance(key, str) or not CONTEXT_KEY.match(key):
            raise ValueError(f"context name {str(key)[:70]!r} must be letters, digits and _ (not first), "
                             "at most 64 characters")
        if not isinstance(value, str):
            raise ValueError(f"context value of {key!r} must be a string")
    size = len(json.dumps(context, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(f"context is {size} bytes of JSON, more than {MAX_CONTEXT_BYTES}")
    return dict(context)


def mint_grant(secret: bytes, grant: OutboundGrant) -> str:
    if not secret:
        raise ValueError("grant secret must not be empty")
    body: dict[str, Any] = {"p": grant.purpose, "e": grant.expiry, "o": grant.owner}
    if grant.agent is not None:
        body["a"] = grant.agent
    if grant.context:
        body["c"] = check_context(grant.context)
    if grant.await_answer:
        body["m"] = True
    part = _b64(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    token = f"o1.{part}.{_mac(secret, part)}"
    if len(token) > MAX_GRANT_CHARS:
        raise ValueError(f"grant of {len(token)} characters is too long for a URL")
    return token


def new_grant(purpose: Purpose, now: float, owner: str, agent: str | None = None,
              context: dict[str, str] | None = None, await_answer: bool = False) -> OutboundGrant:
    return OutboundGrant(purpose, math.ceil(now + GRANT_TTL_S), owner, agent, dict(context or {}), await_answer)


def verify_grant(secret: bytes, token: str | None, purpose: Purpose, now: float) -> OutboundGrant:
    """The grant a valid token carries; GrantError otherwise. The MAC is checked first, so a forger
    learns nothing from the reason."""
    if not token:
        raise GrantError("missing outbound grant")
    m = _SHAPE.match(token)
    if m is None:
        raise GrantError("malformed outbound grant")
    part, mac = m.group(1), m.group(2)
    if not hmac.compare_digest(mac, _mac(secret, part)):
        raise GrantError("invalid outbound grant (forged or altered)")
    try:
        body = json.loads(_unb64(part))
        if body.get("a") is not None and not isinstance(body["a"], str):
            raise TypeError("agent")
        grant = OutboundGrant(
            purpose=body["p"], expiry=int(body["e"]), owner=str(body.get("o", "")),
            agent=body.get("a"), context=check_context(body.get("c")), await_answer=bool(body.get("m", False)))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise GrantError("malformed outbound grant") from None
    if grant.purpose != purpose:
        raise GrantError(f"outbound grant is for the {grant.purpose} URL, not {purpose}")
    if now > grant.expiry:
        raise GrantError("expired outbound grant")
    return grant
