"""Credentials for the Realtime WebSocket handshake: API keys and Entra ID bearer tokens.

Every provider exposes the same small interface, `async headers()`, so the connection code
never knows which kind of secret it carries. Secrets never appear in logs or reprs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Literal, Protocol

from voicegw.config import ModelTarget

log = logging.getLogger(__name__)

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


class AuthError(Exception):
    """No usable credential could be obtained (the message never contains a secret)."""


class Auth(Protocol):
    async def headers(self) -> dict[str, str]:
        """Headers to add to the WebSocket upgrade request."""
        ...


class TokenCredential(Protocol):
    """What EntraTokenAuth needs from azure-identity's async credentials (and from test fakes)."""

    def get_token(self, *scopes: str) -> Awaitable[Any]:  # -> AccessToken(token, expires_on)
        ...


class NoAuth:
    """For the embedded local model, which needs no credentials."""

    async def headers(self) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return "NoAuth()"


class ApiKeyAuth:
    """A static key: Azure wants it as `api-key`, OpenAI as a bearer token."""

    def __init__(self, key: str, style: Literal["azure", "openai"] = "azure") -> None:
        if not key:
            raise ValueError("an API key must not be empty")
        if style not in ("azure", "openai"):
            raise ValueError(f"unknown API key style {style!r}: expected 'azure' or 'openai'")
        self._key = key
        self.style = style

    async def headers(self) -> dict[str, str]:
        if self.style == "azure":
            return {"api-key": self._key}
        return {"Authorization": f"Bearer {self._key}"}

    def __repr__(self) -> str:
        return f"ApiKeyAuth(style={self.style!r}, key=<hidden>)"


class EntraTokenAuth:
    """Bearer tokens from Entra ID, cached and refreshed before they expire.

    Tokens live about an hour; a call can outlast a token, and every new call needs a valid one,
    so the token is refreshed `refresh_margin_s` early (or halfway through its life when that is
    shorter). Concurrent callers share one fetch (a lock). If a refresh fails while the cached
    token is still valid, the cached token is used and the failure logged, so a brief identity
    outage does not fail calls. `clock` is injectable (epoch seconds) so tests need no sleeps.
    """

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        refresh_margin_s: float = 300.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._owns_credential = credential is None
        self.scope = scope
        self.refresh_margin_s = refresh_margin_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # successful token fetches, for metrics and tests

    @property
    def expires_on(self) -> float | None:
        """Epoch seconds when the cached token expires; None before the first fetch."""
        return self._expires_on if self._token is not None else None

    def _credential_or_default(self) -> TokenCredential:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token  # another caller refreshed it while we waited
            return await self._fetch()

    async def _fetch(self) -> str:
        credential = self._credential_or_default()
        try:
            access = await asyncio.wait_for(credential.get_token(self.scope), timeout=self.timeout_s)
            token, expires_on = str(access.token), float(access.expires_on)
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"timed out after {self.timeout_s:g}s"
            else:
                reason = type(exc).__name__
            if self._token is not None and self._clock() < self._expires_on - 30:
                log.warning("Entra ID token refresh failed (%s); using the cached token until it expires", reason)
                return self._token
            raise AuthError(f"could not get an Entra ID token for {self.scope}: {reason}") from exc
        now = self._clock()
        self._token, self._expires_on = token, expires_on
        self._refresh_at = expires_on - min(self.refresh_margin_s, max(0.0, (expires_on - now) / 2))
        self.fetches += 1
        log.info("Entra ID token fetched for %s, valid for %.0fs", self.scope, expires_on - now)
        return token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def close(self) -> None:
        """Close the credential if this object created it (DefaultAzureCredential holds sessions)."""
        if self._owns_credential and self._credential is not None:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()
            self._credential = None

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "empty"
        return f"EntraTokenAuth(scope={self.scope!r}, token=<{state}>)"


def auth_for(target: ModelTarget) -> Auth:
    """The credential a configured model target needs."""
    if target.provider == "local":
        return NoAuth()
    if target.provider == "openai":
        if not target.api_key:
            raise ValueError("the OpenAI Realtime API needs an API key (OPENAI_API_KEY)")
        return ApiKeyAuth(target.api_key, "openai")
    if target.api_key:
        return ApiKeyAuth(target.api_key, "azure")
    if target.use_entra:
        return EntraTokenAuth()
    return NoAuth()
