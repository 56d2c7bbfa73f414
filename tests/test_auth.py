"""Realtime credentials: API key headers, Entra ID token caching, refresh, concurrency, timeouts."""
from __future__ import annotations

import asyncio
import logging

import pytest
from azure.core.credentials import AccessToken

from voicegw.config import ModelTarget
from voicegw.realtime.auth import (
    COGNITIVE_SERVICES_SCOPE, ApiKeyAuth, AuthError, EntraTokenAuth, NoAuth, auth_for,
)

SECRET = "sk-very-secret-0123456789"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """Hands out numbered tokens valid for `lifetime` seconds of the fake clock."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[tuple[str, ...]] = []
        self.gate: asyncio.Event | None = None  # when set, get_token waits for it
        self.fail: Exception | None = None
        self.entered = asyncio.Event()

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls.append(scopes)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"tok{len(self.calls)}", int(self.clock.now + self.lifetime))


async def test_api_key_styles_and_repr() -> None:
    assert await ApiKeyAuth(SECRET).headers() == {"api-key": SECRET}
    assert await ApiKeyAuth(SECRET, style="openai").headers() == {"Authorization": f"Bearer {SECRET}"}
    assert SECRET not in repr(ApiKeyAuth(SECRET)) and "hidden" in repr(ApiKeyAuth(SECRET))
    with pytest.raises(ValueError):
        ApiKeyAuth("")
    with pytest.raises(ValueError):
        ApiKeyAuth(SECRET, style="basic")  # type: ignore[arg-type]


async def test_entra_token_is_cached_and_refreshed_before_expiry() -> None:
    clock = Clock()
    cred = FakeCredential(clock)
    auth = EntraTokenAuth(cred, clock=clock, refresh_margin_s=300)
    assert await auth.headers() == {"Authorization": "Bearer tok1"}
    assert cred.calls == [(COGNITIVE_SERVICES_SCOPE,)]
    clock.now += 3600 - 301  # still outside the 5-minute margin
    assert await auth.token() == "tok1"
    assert len(cred.calls) == 1
    clock.now += 2  # now inside the margin: refresh although the token has not expired
    assert await auth.token() == "tok2"
    assert len(cred.calls) == 2 and auth.fetches == 2
    assert auth.expires_on == clock.now + 3600


async def test_short_lived_token_refreshes_halfway_not_on_every_call() -> None:
    clock = Clock()
    cred = FakeCredential(clock, lifetime=120)  # shorter than the margin
    auth = EntraTokenAuth(cred, clock=clock, refresh_margin_s=300)
    assert await auth.token() == "tok1"
    clock.now += 59
    assert await auth.token() == "tok1"
    clock.now += 2
    assert await auth.token() == "tok2"


async def test_concurrent_callers_fetch_once() -> None:
    clock = Clock()
    cred = FakeCredential(clock)
    cred.gate = asyncio.Event()
    auth = EntraTokenAuth(cred, clock=clock)
    tasks = [asyncio.create_task(auth.token()) for _ in range(20)]
    await asyncio.wait_for(cred.entered.wait(), timeout=5)  # the first caller is inside get_token
    cred.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert results == ["tok1"] * 20
    assert len(cred.calls) == 1


async def test_hanging_credential_times_out() -> None:
    clock = Clock()
    cred = FakeCredential(clock)
    cred.gate = asyncio.Event()  # never set
    auth = EntraTokenAuth(cred, clock=clock, timeout_s=0.05)
    with pytest.raises(AuthError, match="timed out after 0.05s"):
        await asyncio.wait_for(auth.headers(), timeout=5)


async def test_failed_refresh_keeps_a_still_valid_token(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    cred = FakeCredential(clock)
    auth = EntraTokenAuth(cred, clock=clock)
    assert await auth.token() == "tok1"
    clock.now += 3600 - 120  # inside the margin, not expired
    cred.fail = RuntimeError("identity endpoint down")
    with caplog.at_level(logging.WARNING):
        assert await auth.token() == "tok1"
    assert "refresh failed" in caplog.text and "tok1" not in caplog.text
    clock.now += 200  # expired now: the failure surfaces
    with pytest.raises(AuthError, match="RuntimeError"):
        await auth.token()


async def test_first_fetch_failure_is_an_auth_error_without_secrets() -> None:
    clock = Clock()
    cred = FakeCredential(clock)
    cred.fail = RuntimeError(SECRET)
    auth = EntraTokenAuth(cred, clock=clock, scope="https://ai.azure.com/.default")
    with pytest.raises(AuthError) as info:
        await auth.token()
    assert "https://ai.azure.com/.default" in str(info.value) and SECRET not in str(info.value)
    assert cred.calls == [("https://ai.azure.com/.default",)]


async def test_entra_repr_hides_token() -> None:
    clock = Clock()
    auth = EntraTokenAuth(FakeCredential(clock), clock=clock)
    await auth.token()
    assert "tok1" not in repr(auth) and "cached" in repr(auth)


async def test_close_only_closes_an_owned_credential() -> None:
    class Closable(FakeCredential):
        closed = False

        async def close(self) -> None:
            self.closed = True

    cred = Closable(Clock())
    await EntraTokenAuth(cred).close()
    assert not cred.closed  # injected credentials belong to the caller


def test_auth_for_targets() -> None:
    azure_key = ModelTarget("azure", "wss://x.openai.azure.com/openai/v1/realtime?model=m", "ga", api_key=SECRET, model="m")
    azure_entra = ModelTarget("azure", "wss://x.openai.azure.com/openai/v1/realtime?model=m", "ga", use_entra=True, model="m")
    openai = ModelTarget("openai", "wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", api_key=SECRET)
    local = ModelTarget("local", "ws://127.0.0.1:9/realtime", "ga")
    a = auth_for(azure_key)
    assert isinstance(a, ApiKeyAuth) and a.style == "azure"
    o = auth_for(openai)
    assert isinstance(o, ApiKeyAuth) and o.style == "openai"
    e = auth_for(azure_entra)
    assert isinstance(e, EntraTokenAuth) and e.scope == COGNITIVE_SERVICES_SCOPE
    assert isinstance(auth_for(local), NoAuth)
    with pytest.raises(ValueError, match="API key"):
        auth_for(ModelTarget("openai", "wss://api.openai.com/v1/realtime", "ga"))
