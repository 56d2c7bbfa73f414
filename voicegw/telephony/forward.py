"""Forwarding a signed Twilio webhook to the process that owns the call.

An outbound call belongs to the process that placed it (`POST /api/calls`): its grants name that
owner, and its voice webhook and answering-machine verdict are sent on to it, so the call's model
session, its media stream (relayed by the stream token, voicegw.telephony.relay) and its verdict
meet in one process. Another worker of this replica is reached over its private Unix socket,
another replica at its `VOICEGW_REPLICA_URL`, the same targets a relayed media stream uses.

The forwarded request carries Twilio's signature and the public URL it was computed for (as
X-Forwarded-Proto/Host), so the owner checks it exactly as if Twilio had sent it there: the
forwarder is trusted with nothing. A hop counter bounds the chain. When the owner cannot be
reached, None comes back and the request is served where it landed.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx
from starlette.responses import Response

from voicegw.telephony.relay import RELAY_HEADER, relay_target

log = logging.getLogger("voicegw.telephony")

FORWARD_TIMEOUT_S = 5.0  # Twilio waits 15 s for a webhook's answer
_PASSED_HEADERS = ("content-type",)


def _http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def forward_webhook(public_url: str, params: Mapping[str, str], signature: str | None, owner: str,
                          me: str, peers_dir: str | None, hops: int) -> Response | None:
    """POST the webhook (`public_url` is the URL Twilio signed, path and query included) to the
    owner's process and return its answer; None when the call is ours or the owner is unreachable."""
    target = relay_target(owner, me, peers_dir, hops)
    if target is None:
        return None
    parts = urlsplit(public_url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"X-Forwarded-Proto": parts.scheme, "X-Forwarded-Host": parts.netloc, RELAY_HEADER: str(hops + 1)}
    if signature:
        headers["X-Twilio-Signature"] = signature
    if target.unix_path is not None:
        transport = httpx.AsyncHTTPTransport(uds=target.unix_path)
        url = "http://localhost" + path
    else:
        assert target.url is not None
        transport = httpx.AsyncHTTPTransport()
        url = _http_base(target.url) + path
    try:
        async with httpx.AsyncClient(transport=transport, timeout=FORWARD_TIMEOUT_S, trust_env=False) as http:
            resp = await http.post(url, data=dict(params), headers=headers)
    except httpx.HTTPError as exc:
        log.warning("%s: owner at %s unreachable (%r): serving it here", parts.path, target.describe(), exc)
        return None
    passed = {k: v for k, v in resp.headers.items() if k.lower() in _PASSED_HEADERS}
    return Response(resp.content, resp.status_code, passed)


def forward_hops(headers: Mapping[str, str]) -> int:
    """How many times this request was forwarded already (a forged header only shortens the chain)."""
    try:
        return max(0, int(headers.get(RELAY_HEADER, "0")))
    except ValueError:
        return 99
