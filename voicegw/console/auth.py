"""Operator authentication for the console and its API.

Operators hold tokens from VOICEGW_OPERATOR_TOKENS. The API takes `Authorization: Bearer`; the
web UI exchanges a token once at the login form for an HttpOnly, SameSite=Strict cookie that
carries an expiry and an HMAC keyed by the token, never the token itself, so removing a token
from the environment also ends its sessions. With no token configured, everything is refused
unless dev mode is on and the client is this machine.

Every place an operator credential is checked goes through `OperatorAuth`, which throttles failed
credentials per client (`throttle.py`, client address from `clientaddr.py`): a locked-out client
gets 429 with Retry-After before its credential is even looked at, so a right guess made during a
lockout is worth nothing. Comparisons take the same time whichever token, if any, matches.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from voicegw.config import Settings
from voicegw.console.audit import AuthAudit
from voicegw.console.clientaddr import TrustedProxies, client_key
from voicegw.console.throttle import AuthThrottle

COOKIE = "voicegw_console"
COOKIE_TTL_S = 12 * 3600

DISABLED_MESSAGE = (
    "The operator console and API are disabled: no operator token is configured. "
    "Set VOICEGW_OPERATOR_TOKENS (comma separated), or for local development set "
    "VOICEGW_DEV_MODE=1 and connect from localhost."
)
INVALID_TOKEN = "The operator token is not valid."

Via = Literal["bearer", "cookie", "login", "none"]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200  # 401 no or expired credentials, 403 wrong credentials or disabled, 429 locked out
    message: str = ""
    retry_after: int = 0  # seconds, with 429
    stale_cookie: bool = False  # the session cookie is expired or not ours: the UI should drop it


class OperatorAuth:
    def __init__(self, settings: Settings, throttle: AuthThrottle | None = None,
                 audit: AuthAudit | None = None) -> None:
        self._tokens = tuple(t.encode() for t in settings.operator_tokens)
        # comparing fixed-length digests: compare_digest then leaks neither content nor length
        self._digests = tuple(hashlib.sha256(t).digest() for t in self._tokens)
        self._dev = settings.dev_mode
        self._trusted = TrustedProxies(settings.trusted_proxies)
        self.throttle = AuthThrottle() if throttle is None else throttle  # an empty one is falsy
        self.audit = audit if audit is not None else AuthAudit(clock=lambda: self.throttle.clock())

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    def token_ok(self, token: str) -> bool:
        """Constant-time comparison against every configured token, never stopping at a match."""
        given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(given, d)
        return ok and bool(token)

    def make_cookie(self, token: str, now: float | None = None) -> str:
        exp = int((time.time() if now is None else now) + COOKIE_TTL_S)
        return f"{exp}.{_mac(token.encode(), exp)}"

    def cookie_state(self, value: str, now: float | None = None) -> Literal["ok", "expired", "bad"]:
        """'expired' is an old session (not a guess, so not counted as a failure); 'bad' is a
        value no configured token made: forged, mangled, or from a removed token."""
        exp_txt, _, mac = value.partition(".")
        if not (exp_txt.isascii() and exp_txt.isdigit()) or len(exp_txt) > 12:
            return "bad"
        if int(exp_txt) < (time.time() if now is None else now):
            return "expired"
        given = mac.encode("utf-8", "surrogateescape")
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(given, _mac(t, int(exp_txt)).encode())
        return "ok" if ok else "bad"

    def cookie_ok(self, value: str, now: float | None = None) -> bool:
        return self.cookie_state(value, now) == "ok"

    def check(self, request: Request) -> Verdict:
        """Bearer header or session cookie; the same rules for the API and the UI."""
        if not self._tokens:
            if self._dev and is_local(request):
                return Verdict(True)
            return Verdict(False, 403, DISABLED_MESSAGE)
        key = client_key(request, self._trusted)
        header = request.headers.get("authorization", "")
        cookie = request.cookies.get(COOKIE)
        via: Via = "bearer" if header else "cookie" if cookie else "none"
        if (locked := self._locked(key, via)) is not None:
            return locked
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_ok(token.strip()):
                return self._passed(key, via)
            return self._failed(key, via, Verdict(False, 403, INVALID_TOKEN))
        if cookie:
            state = self.cookie_state(cookie)
            if state == "ok":
                return self._passed(key, via)
            expired = Verdict(False, 401, "The console session has expired; log in again.", stale_cookie=True)
            return expired if state == "expired" else self._failed(key, via, expired)
        return Verdict(False, 401, "An operator token is required (Authorization: Bearer <token>).")

    def login(self, request: Request, token: str) -> Verdict:
        """The login form's token; every outcome is audited."""
        key = client_key(request, self._trusted)
        if (locked := self._locked(key, "login")) is not None:
            return locked
        if not self.token_ok(token):
            return self._failed(key, "login", Verdict(False, 403, INVALID_TOKEN))
        self.throttle.success(key)
        self.audit.success("operator login ok: client=%s", key)
        return Verdict(True)

    def _locked(self, key: str, via: Via) -> Verdict | None:
        wait = self.throttle.retry_after(key)
        if not wait:
            return None
        self.audit.failure("operator auth refused: client=%s via=%s locked out, retry in %d s", key, via, wait)
        return Verdict(False, 429, f"Too many failed operator credentials from this address; retry in {wait} s.",
                       retry_after=wait)

    def _passed(self, key: str, via: Via) -> Verdict:
        # API calls succeed many times a minute: only the one that ends a run of failures is logged
        if self.throttle.success(key):
            self.audit.success("operator auth ok: client=%s via=%s; earlier failures forgotten", key, via)
        return Verdict(True)

    def _failed(self, key: str, via: Via, verdict: Verdict) -> Verdict:
        f = self.throttle.failure(key)
        limit = self.throttle.limits.max_failures
        if f.locked_for:
            self.audit.failure("operator auth failed: client=%s via=%s failures=%d/%d; locked out for %d s",
                               key, via, f.failures, limit, f.locked_for)
        else:
            self.audit.failure("operator auth failed: client=%s via=%s failures=%d/%d", key, via, f.failures, limit)
        return verdict


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
