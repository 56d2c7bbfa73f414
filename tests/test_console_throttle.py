"""Failed operator credentials are throttled per client, audited, and compared in constant time."""
from __future__ import annotations

import hmac
import logging
from typing import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from voicegw.calllog.service import CallLogService, open_calllog
from voicegw.config import Settings
from voicegw.console.auth import COOKIE, OperatorAuth
from voicegw.console.routes import console_routes
from voicegw.console.throttle import AuthThrottle, Limits
from voicegw.yamlsrc import ConfigError

TOKEN = "op-secret-token-123"
OTHER = "second-operator-token"
GUESS = "guessed-Secret-zz9"
ATTACKER = "203.0.113.5"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def calllog(tmp_path) -> AsyncIterator[CallLogService]:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    yield svc
    await svc.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock) -> AuthThrottle:
    return AuthThrottle(clock=clock)


def make_app(calllog, throttle, **kw) -> Starlette:
    settings = Settings.from_env({}, **{"operator_tokens": (TOKEN, OTHER), **kw})
    return Starlette(routes=console_routes(calllog, settings, throttle))


def client(app, host: str = ATTACKER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post("/console/login", data={"token": token})


async def test_wrong_logins_lock_the_client_out_with_retry_after(calllog, throttle) -> None:
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(5):
            r = await login(c, GUESS)
            assert r.status_code == 303 and "failed" in r.headers["location"]
        r = await login(c, GUESS)
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
        assert "retry in 60 s" in r.text and "default-src 'none'" in r.headers["content-security-policy"]
        # the right token during the lockout gets no further: no session, still 429
        r = await login(c, TOKEN)
        assert r.status_code == 429 and COOKIE not in r.cookies and "set-cookie" not in r.headers


async def test_bearer_failures_on_the_api_are_throttled_the_same_way(calllog, throttle) -> None:
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(5):
            assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 403
        r = await c.get("/api/calls", headers=bearer(GUESS))
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
        assert r.headers["content-type"].startswith("application/json") and "retry in 60 s" in r.json()["error"]
        for path in ("/api/calls", "/api/calls/CA1", "/api/live", "/console"):
            r = await c.get(path, headers=bearer(TOKEN))
            assert r.status_code == 429 and r.headers["retry-after"] == "60", path
        # the login form is the same client's door: locked too
        assert (await login(c, TOKEN)).status_code == 429


async def test_the_credential_is_not_even_checked_during_a_lockout(calllog, throttle, monkeypatch) -> None:
    checked: list[str] = []
    real = OperatorAuth.token_ok

    def spy(self, token: str) -> bool:
        checked.append(token)
        return real(self, token)

    monkeypatch.setattr(OperatorAuth, "token_ok", spy)
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(5):
            await c.get("/api/calls", headers=bearer(GUESS))
        assert len(checked) == 5
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 429
        assert (await login(c, TOKEN)).status_code == 429
        assert len(checked) == 5


async def test_lockout_expires_then_grows_for_a_persistent_guesser(calllog, throttle, clock) -> None:
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(5):
            await c.get("/api/calls", headers=bearer(GUESS))
        clock.now += 59.5
        r = await c.get("/api/calls", headers=bearer(TOKEN))
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        # each failure after a lockout locks again at once, twice as long, up to five minutes
        for expected in (120, 240, 300, 300):
            clock.now += 60 if expected == 120 else int(r.headers["retry-after"])
            assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 403
            r = await c.get("/api/calls", headers=bearer(GUESS))
            assert r.status_code == 429 and r.headers["retry-after"] == str(expected)
        # a quiet quarter of an hour forgets it all: five fresh attempts
        clock.now += 300 + 900
        for _ in range(5):
            assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 403
        assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 429


async def test_lockout_expiry_lets_the_right_token_in(calllog, throttle, clock) -> None:
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(5):
            await login(c, GUESS)
        assert (await login(c, TOKEN)).status_code == 429
        clock.now += 60
        r = await login(c, TOKEN)
        assert r.status_code == 303 and r.headers["location"] == "/console" and c.cookies.get(COOKIE)
        assert (await c.get("/console")).status_code == 200


async def test_another_client_is_unaffected(calllog, throttle) -> None:
    app = make_app(calllog, throttle)
    async with client(app) as c:
        for _ in range(6):
            await c.get("/api/calls", headers=bearer(GUESS))
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 429
    async with client(app, host="198.51.100.20") as c:
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 200
        assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 403
        assert (await login(c, OTHER)).status_code == 303


async def test_success_resets_the_failure_count(calllog, throttle) -> None:
    async with client(make_app(calllog, throttle)) as c:
        for _ in range(4):
            assert (await login(c, GUESS)).status_code == 303
        assert (await c.get("/api/calls", headers=bearer(OTHER))).status_code == 200
        for _ in range(4):
            assert (await c.get("/api/calls", headers=bearer(GUESS))).status_code == 403
        assert (await login(c, TOKEN)).headers["location"] == "/console"
        for _ in range(4):
            assert (await login(c, GUESS)).status_code == 303
        assert (await login(c, GUESS)).status_code == 303  # the fifth in a row
        assert (await login(c, GUESS)).status_code == 429


async def test_forged_cookies_count_but_an_expired_session_does_not(calllog, throttle) -> None:
    app = make_app(calllog, throttle)
    auth = OperatorAuth(Settings.from_env({}, operator_tokens=(TOKEN,)))
    expired = auth.make_cookie(TOKEN, now=0)
    async with client(app) as c:
        for _ in range(10):
            c.cookies.set(COOKIE, expired)
            assert (await c.get("/api/calls")).status_code == 401
        c.cookies.clear()
        for value in ("9999999999.forged", "9999999999.\u00e9\u00e9", "\u00b2\u00b2.x", ".", "x"):
            raw = f"{COOKIE}={value}".encode("latin-1")
            r = await c.get("/api/calls", headers=[(b"cookie", raw)])
            assert r.status_code == 401, value  # never a 500 on odd bytes
        c.cookies.set(COOKIE, "9999999999.forged")
        assert (await c.get("/api/calls")).status_code == 429
    async with client(app, host="198.51.100.30") as c:
        # the page redirect drops a bad cookie, so reloading the page does not count again
        c.cookies.set(COOKIE, "9999999999.forged")
        r = await c.get("/console")
        assert r.status_code == 303 and f'{COOKIE}=""' in r.headers["set-cookie"]


async def test_the_table_of_clients_is_bounded(calllog, clock) -> None:
    throttle = AuthThrottle(Limits(max_clients=50), clock=clock)
    app = make_app(calllog, throttle)
    for i in range(200):
        async with client(app, host=f"10.1.{i // 250}.{i % 250}") as c:
            await c.get("/api/calls", headers=bearer(GUESS))
        clock.now += 0.01
    assert len(throttle) == 50 and throttle.evicted == 150
    # quiet clients are forgotten as soon as the next failure arrives
    clock.now += 900
    async with client(app) as c:
        await c.get("/api/calls", headers=bearer(GUESS))
    assert len(throttle) == 1


async def test_failed_and_successful_logins_are_audited_without_secrets(calllog, throttle, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with client(make_app(calllog, throttle)) as c:
        assert (await login(c, TOKEN)).status_code == 303
        assert (await c.get("/api/calls", headers=bearer(OTHER))).status_code == 200
        for _ in range(3):
            await login(c, GUESS)
        for _ in range(3):
            await c.get("/api/calls", headers=bearer(GUESS + "-bearer"))
        await c.get("/api/calls", headers=bearer(TOKEN))
        await c.get("/api/calls", headers={"Authorization": f"Basic {OTHER}"})
        await login(c, OTHER)
    lines = [r.getMessage() for r in caplog.records if r.name == "voicegw.console.auth"]
    assert lines[0] == f"operator login ok: client={ATTACKER}"
    assert f"operator auth failed: client={ATTACKER} via=login failures=1/5" in lines
    assert f"operator auth failed: client={ATTACKER} via=bearer failures=5/5; locked out for 60 s" in lines
    assert any(line.startswith(f"operator auth refused: client={ATTACKER} via=bearer locked out") for line in lines)
    assert any(line.startswith(f"operator auth refused: client={ATTACKER} via=login locked out") for line in lines)
    for secret in (TOKEN, OTHER, GUESS):
        assert secret not in caplog.text


async def test_a_flood_of_failures_does_not_flood_the_log(calllog, throttle, clock, caplog) -> None:
    caplog.set_level(logging.INFO)
    app = make_app(calllog, throttle)
    for i in range(100):
        async with client(app, host=f"192.0.2.{i}") as c:
            await c.get("/api/calls", headers=bearer(GUESS))
    lines = [r.getMessage() for r in caplog.records if r.name == "voicegw.console.auth"]
    assert len(lines) == 20
    clock.now += 60
    async with client(app) as c:
        await c.get("/api/calls", headers=bearer(GUESS))
    lines = [r.getMessage() for r in caplog.records if r.name == "voicegw.console.auth"]
    assert len(lines) == 21
    last = lines[-1]
    assert last.endswith("(80 similar lines suppressed)") and f"client={ATTACKER}" in last
    # a successful login is always written
    async with client(app, host="192.0.2.250") as c:
        await login(c, TOKEN)
    lines = [r.getMessage() for r in caplog.records if r.name == "voicegw.console.auth"]
    assert lines[-1] == "operator login ok: client=192.0.2.250"


async def test_forged_forwarded_for_does_not_buy_fresh_attempts(calllog, throttle) -> None:
    # A server trusting every forwarder reports the header's leftmost entry as the peer.
    app = make_app(calllog, throttle)
    for i in range(5):
        fake = f"100.64.0.{i}"
        async with client(app, host=fake) as c:
            r = await c.get("/api/calls", headers={**bearer(GUESS), "X-Forwarded-For": fake})
            assert r.status_code == 403
    async with client(app, host="100.64.0.99") as c:
        r = await c.get("/api/calls", headers={**bearer(TOKEN), "X-Forwarded-For": "100.64.0.99"})
        assert r.status_code == 429
    # a client sending the header from its own address is still keyed by that address
    async with client(app, host="198.51.100.40") as c:
        r = await c.get("/api/calls", headers={**bearer(TOKEN), "X-Forwarded-For": "100.64.0.1"})
        assert r.status_code == 200


async def test_trusted_proxy_forwarded_for_names_the_client(calllog, throttle) -> None:
    app = make_app(calllog, throttle, trusted_proxies=("10.0.0.0/8",))
    async with client(app, host="10.0.0.2") as c:
        for i in range(5):
            # the leftmost entries are the client's own writing; the proxy appended the real address
            xff = f"1.1.1.{i}, 198.51.100.7"
            r = await c.get("/api/calls", headers={**bearer(GUESS), "X-Forwarded-For": xff})
            assert r.status_code == 403
        r = await c.get("/api/calls", headers={**bearer(TOKEN), "X-Forwarded-For": "198.51.100.7, 10.0.0.9"})
        assert r.status_code == 429
        r = await c.get("/api/calls", headers={**bearer(TOKEN), "X-Forwarded-For": "198.51.100.8"})
        assert r.status_code == 200
        # without the header the proxy itself is the client, and it is not locked
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 200
    # the header from a peer that is not a trusted proxy is not believed
    async with client(app, host="198.51.100.7") as c:
        r = await c.get("/api/calls", headers={**bearer(TOKEN), "X-Forwarded-For": "198.51.100.8"})
        assert r.status_code == 429


async def test_ipv6_clients_are_throttled_per_64(calllog, throttle) -> None:
    app = make_app(calllog, throttle)
    for i in range(5):
        async with client(app, host=f"2001:db8:1:2::{i + 1}") as c:
            await c.get("/api/calls", headers=bearer(GUESS))
    async with client(app, host="2001:db8:1:2:ffff::9") as c:
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 429
    async with client(app, host="2001:db8:1:3::1") as c:
        assert (await c.get("/api/calls", headers=bearer(TOKEN))).status_code == 200


def test_tokens_are_compared_in_constant_time_against_every_token(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    auth = OperatorAuth(Settings.from_env({}, operator_tokens=(TOKEN, OTHER, "third")))
    monkeypatch.setattr(hmac, "compare_digest", counting)
    for offered in (TOKEN, "x", TOKEN * 10, ""):
        calls.clear()
        assert auth.token_ok(offered) == (offered == TOKEN)
        # every configured token, even after a match, and always equal-length digests
        assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)
    cookie = auth.make_cookie(OTHER)
    calls.clear()
    assert auth.cookie_ok(cookie) and len(calls) == 3


def test_trusted_proxies_setting() -> None:
    s = Settings.from_env({"VOICEGW_TRUSTED_PROXIES": " 10.0.0.7, 192.168.0.0/16,fd00::/8 "})
    assert s.trusted_proxies == ("10.0.0.7/32", "192.168.0.0/16", "fd00::/8")
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"VOICEGW_TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"})
    assert "VOICEGW_TRUSTED_PROXIES" in str(err.value)


def test_limits_refuse_a_table_entry_that_would_be_forgotten_while_locked() -> None:
    with pytest.raises(ValueError):
        Limits(max_lockout_s=1800, forget_s=900)
    with pytest.raises(ValueError):
        Limits(max_clients=0)
