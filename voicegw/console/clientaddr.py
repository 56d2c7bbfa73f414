"""Which client an operator request comes from, for throttling failed credentials per client.

The address is the socket peer unless the peer is a proxy listed in VOICEGW_TRUSTED_PROXIES; only
then is X-Forwarded-For believed, read from the right (each proxy appends the address it saw)
up to the first address that is not itself a trusted proxy. Anything else a client writes into
the header is ignored, or it could pick a fresh throttle bucket for every guess.

One more case: an ASGI server told to trust every forwarder (uvicorn `forwarded_allow_ips="*"`)
reports the header's leftmost entry as the peer, so the "peer" is whatever the client wrote. A
reported peer that is itself an entry of the request's X-Forwarded-For is therefore not believed:
with no trusted proxy configured all such requests share one bucket, and with trusted proxies the
header is read from the right as above.

IPv6 clients are grouped by /64, the block one subscriber is normally given, so rotating through
the addresses of one block does not buy fresh attempts.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from starlette.requests import Request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNTRUSTED_FORWARDED = "forwarded:untrusted"
IPV6_PREFIX = 64


class TrustedProxies:
    def __init__(self, networks: Iterable[str] = ()) -> None:
        self._nets: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, host: str) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip in net for net in self._nets)


def client_key(request: Request, trusted: TrustedProxies) -> str:
    """The throttle key of the request's client: an address, an IPv6 /64, or a shared bucket."""
    peer = request.client.host if request.client else ""
    chain = [_host(part) for value in request.headers.getlist("x-forwarded-for") for part in value.split(",")]
    chain = [h for h in chain if h]
    if not chain:
        return _key(peer)
    if peer in trusted:
        return _walk(chain, trusted, fallback=peer)
    if _same(peer, chain):
        return _walk(chain, trusted, fallback=peer) if trusted else UNTRUSTED_FORWARDED
    return _key(peer)


def _walk(chain: list[str], trusted: TrustedProxies, fallback: str) -> str:
    """Right to left: the first hop not run by a trusted proxy. A malformed entry ends the walk at
    the trusted hop that passed it on; an all-trusted chain yields its leftmost entry."""
    last_trusted = fallback
    for host in reversed(chain):
        if _ip(host) is None:
            return _key(last_trusted)
        if host not in trusted:
            return _key(host)
        last_trusted = host
    return _key(chain[0])


def _same(peer: str, chain: list[str]) -> bool:
    ip = _ip(peer)
    return any((ip is not None and _ip(h) == ip) or h == peer for h in chain)


def _host(entry: str) -> str:
    """'1.2.3.4', '1.2.3.4:5678', '[::1]:80' or '::1' -> the address, as uvicorn reads them."""
    entry = entry.strip()
    if entry.startswith("["):
        return entry[1:entry.find("]")] if "]" in entry else entry
    if entry.count(":") == 1:
        return entry.rsplit(":", 1)[0]
    return entry


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _key(host: str) -> str:
    ip = _ip(host)
    if ip is None:  # a unix socket path or a test client name: printable and short, for the log
        return "".join(c if c.isprintable() else "?" for c in host[:100]) or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)
