"""Which hosts `http` tools may reach.

A caller talks to the model and the model fills tool arguments, so a prompt-injected caller must not
be able to steer a request somewhere internal. Three rules:
1. the host must be on the allowlist (exact names, IP literals, or `*.example.com` wildcards);
2. redirects may not leave the original host;
3. a host that resolves to a private, loopback, link-local or otherwise internal address is refused
   unless that exact host (not a wildcard) is on the allowlist.
Argument placeholders can never reach the host part of a URL (checked at start-up), so rule 1 is
mostly a start-up check; rules 2 and 3 are enforced on every request.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from voicegw.tools.base import ToolError


class HostRefused(ToolError):
    """A request to a host the policy does not allow; the message is safe to show the model."""


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def is_internal(addr: str) -> bool:
    """Anything not globally routable: private, loopback, link-local, CGNAT, reserved, multicast."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class HostPolicy:
    exact: frozenset[str]
    suffixes: tuple[str, ...]  # from `*.example.com`: ".example.com"

    @classmethod
    def of(cls, entries: Iterable[str]) -> HostPolicy:
        exact: set[str] = set()
        suffixes: list[str] = []
        for e in entries:
            h = _norm(e)
            if not h:
                continue
            if h.startswith("*."):
                suffixes.append(h[1:])
            else:
                exact.add(h)
        return cls(frozenset(exact), tuple(suffixes))

    def describe(self) -> str:
        return ", ".join(sorted(self.exact) + ["*" + s for s in self.suffixes]) or "(none)"

    def allows(self, host: str) -> bool:
        h = _norm(host)
        return h in self.exact or any(h.endswith(s) for s in self.suffixes)

    def explicitly_allows(self, host: str) -> bool:
        return _norm(host) in self.exact

    async def check(self, host: str, port: int, timeout: float) -> None:
        """Refuse hosts off the allowlist and internal addresses not explicitly allowed."""
        if not self.allows(host):
            raise HostRefused(f"host {host!r} is not on the tool host allowlist")
        if self.explicitly_allows(host):
            return
        for addr in await resolve(host, port, timeout):
            if is_internal(addr):
                raise HostRefused(f"host {host!r} resolves to an internal address; refusing")


async def resolve(host: str, port: int, timeout: float) -> list[str]:
    h = _norm(host)
    try:
        return [str(ipaddress.ip_address(h))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(h, port, type=socket.SOCK_STREAM), timeout)
    except (TimeoutError, OSError) as exc:
        raise HostRefused(f"cannot resolve host {host!r}") from exc
    return sorted({str(info[4][0]).split("%")[0] for info in infos})
