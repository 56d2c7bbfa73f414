"""The operator API's outbound side, as `voicegw dial` uses it: place a call, read its record.

Every request has a timeout; `DialRefused` carries the gateway's own error message and status, so
the CLI can say why a number was not dialed and whether trying again later may help.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

# draining or full, or throttled: try again later. Not 504: Twilio may have placed that call.
RETRY_LATER = frozenset({429, 503})


class DialRefused(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retry_later(self) -> bool:
        """The gateway could not place it now (or could not be reached); the number is still good."""
        return self.status is None or self.status in RETRY_LATER


@dataclass(frozen=True)
class Placed:
    call_sid: str
    status: str
    agent: str
    missing_context: tuple[str, ...]


def _error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    message = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {resp.status_code}: {message or resp.text[:200]}"


class GatewayClient:
    """`async with GatewayClient(url, token) as gw:` -- one connection pool for a whole campaign."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 20.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s,
                                       trust_env=False)
        self.url = url.rstrip("/")

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def place(self, to: str, from_: str, *, agent: str | None = None, context: dict[str, str] | None = None,
                    machine_detection: bool = True) -> Placed:
        body: dict[str, Any] = {"to": to, "from": from_, "machine_detection": machine_detection}
        if agent:
            body["agent"] = agent
        if context:
            body["context"] = context
        try:
            resp = await self._http.post("/api/calls", json=body)
        except httpx.HTTPError as exc:
            raise DialRefused(f"{self.url} not reachable: {exc.__class__.__name__}: {exc}") from None
        if resp.status_code != 201:
            raise DialRefused(_error(resp), resp.status_code)
        try:
            data = resp.json()
            return Placed(str(data["call_sid"]), str(data.get("status", "")), str(data.get("agent", "")),
                          tuple(data.get("missing_context") or ()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DialRefused(f"HTTP 201 without a call SID: {resp.text[:200]}", 201) from None

    async def record(self, call_sid: str) -> dict[str, Any] | None:
        """The call's record, or None while the gateway has none (the phone is still ringing)."""
        try:
            resp = await self._http.get(f"/api/calls/{call_sid}")
        except httpx.HTTPError as exc:
            raise DialRefused(f"{self.url} not reachable: {exc.__class__.__name__}: {exc}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise DialRefused(_error(resp), resp.status_code)
        try:
            record = resp.json()
        except ValueError:
            raise DialRefused(f"GET /api/calls/{call_sid}: not JSON: {resp.text[:200]}", 200) from None
        return record if isinstance(record, dict) else None
