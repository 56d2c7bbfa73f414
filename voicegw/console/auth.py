"""Operator authentication for the console and its API.

Operators hold tokens from VOICEGW_OPERATOR_TOKENS. The API takes `Authorization: Bearer`; the
web UI exchanges a token once at the login form for an HttpOnly, SameSite=Strict cookie that
carries an expiry and an HMAC keyed by the token, never the token itself, so removing a token
from the environment also ends its sessions. With no token configured, everything is refused
unless dev mode is on and the client is this machine.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

from starlette.requests import Request

from voicegw.config import Settings

COOKIE = "voicegw_console"
COOKIE_TTL_S = 12 * 3600

DISABLED_MESSAGE = (
    "The operator console and API are disabled: no operator token is configured. "
    "Set VOICEGW_OPERATOR_TOKENS (comma separated), or for local development set "
    "VOICEGW_DEV_MODE=1 and connect from localhost."
)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200  # 401 no credentials, 403 wrong credentials or console disabled
    message: str = ""


class OperatorAuth:
    def __init__(self, settings: Settings) -> None:
        self._tokens = tuple(t.encode() for t in settings.operator_tokens)
        self._dev = settings.dev_mode

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    def token_ok(self, token: str) -> bool:
        """Constant-time comparison against every configured token."""
        given = token.encode()
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(given, t)
        return ok and bool(given)

    def make_cookie(self, token: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + COOKIE_TTL_S)
        return f"{exp}.{_mac(token.encode(), exp)}"

    def cookie_ok(self, value: str, now: float | None = None) -> bool:
        exp_txt, _, mac = value.partition(".")
        if not exp_txt.isdigit() or int(exp_txt) < (now or time.time()):
            return False
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(mac, _mac(t, int(exp_txt)))
        return ok

    def check(self, request: Request) -> Verdict:
        """Bearer header or session cookie; the same rules for the API and the UI."""
        if not self._tokens:
            if self._dev and is_local(request):
                return Verdict(True)
            return Verdict(False, 403, DISABLED_MESSAGE)
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_ok(token.strip()):
                return Verdict(True)
            return Verdict(False, 403, "The operator token is not valid.")
        cookie = request.cookies.get(COOKIE)
        if cookie:
            if self.cookie_ok(cookie):
                return Verdict(True)
            return Verdict(False, 401, "The console session has expired; log in again.")
        return Verdict(False, 401, "An operator token is required (Authorization: Bearer <token>).")


def _mac(token: bytes, exp: int) -> str:
    return hmac.new(token, f"voicegw-console-session:{exp}".encode(), hashlib.sha256).hexdigest()


def is_local(request: Request) -> bool:
    """A loopback client that is not relaying for someone else through a local proxy."""
    if any(h in request.headers for h in ("forwarded", "x-forwarded-for", "x-real-ip")):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
