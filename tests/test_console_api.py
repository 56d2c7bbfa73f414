"""Operator API, console pages and their authentication."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from calllog_support import console_app, serve_console
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.service import CallLogService, open_calllog
from voicegw.config import Settings
from voicegw.console.auth import COOKIE

TOKEN = "op-secret-token-123"
XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=1</script>"
STATIC = Path(__file__).resolve().parent.parent / "voicegw" / "console" / "static"


@pytest.fixture
async def calllog(tmp_path) -> AsyncIterator[CallLogService]:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    t0 = time.time() - 60
    svc.call_started(CallInfo("CA1", "MZ1", "+15550001111", "+15559990000", "support", t0))
    svc.event("CA1", CallLogEntry("transcript", t0 + 1, {"role": "caller", "item_id": "i1", "text": XSS}))
    svc.event("CA1", CallLogEntry("barge_in", t0 + 2, {"item_id": "i2", "heard_ms": 800, "produced_ms": 2000}))
    svc.call_ended("CA1", "caller_hangup", t0 + 10)
    svc.call_started(CallInfo("CA2", "MZ2", "+15550002222", "+15559990000", "sales", t0 + 5))
    await svc.flush()
    yield svc
    await svc.aclose()


def client(app, host: str = "127.0.0.1", **kw) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test", **kw)


def settings(**kw) -> Settings:
    return Settings.from_env({}, **kw)


async def test_bearer_token_required(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN, "another-token")))
    async with client(app) as c:
        r = await c.get("/api/calls")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await c.get("/api/calls", headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 403 and TOKEN not in r.text
        r = await c.get("/api/calls", headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 403
        r = await c.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert [row["call_sid"] for row in r.json()["calls"]] == ["CA2", "CA1"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        r = await c.get("/api/calls", headers={"Authorization": "Bearer another-token"})
        assert r.status_code == 200
        r = await c.get("/api/live", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 403


async def test_no_token_means_disabled_unless_dev_mode_on_localhost(calllog) -> None:
    async with client(console_app(calllog, settings(dev_mode=False))) as c:
        for path in ("/api/calls", "/console", "/console/login", "/api/calls/CA1"):
            r = await c.get(path)
            assert r.status_code == 403 and "VOICEGW_OPERATOR_TOKENS" in r.text, path
    dev = console_app(calllog, settings(dev_mode=True))
    async with client(dev) as c:
        assert (await c.get("/api/calls")).status_code == 200
        assert (await c.get("/console")).status_code == 200
        r = await c.get("/api/calls", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403
    async with client(dev, host="203.0.113.5") as c:
        assert (await c.get("/api/calls")).status_code == 403
        assert (await c.get("/console")).status_code == 403
    async with client(dev, host="::1") as c:
        assert (await c.get("/api/calls")).status_code == 200


async def test_login_sets_a_strict_httponly_cookie_without_the_token(calllog, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(app) as c:
        r = await c.get("/console")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        page = await c.get("/console/login")
        assert page.status_code == 200 and "<form" in page.text and TOKEN not in page.text
        r = await c.post("/console/login", data={"token": "wrong"})
        assert r.status_code == 303 and "failed" in r.headers["location"] and COOKIE not in r.cookies
        r = await c.post("/console/login", data={"token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/console"
        set_cookie = r.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
        assert TOKEN not in set_cookie
        assert (await c.get("/console")).status_code == 200
        assert (await c.get("/api/calls")).status_code == 200  # the UI's fetches use the cookie
        r = await c.post("/console/logout")
        assert r.status_code == 303
        assert (await c.get("/api/calls")).status_code == 401
    async with client(app, cookies={COOKIE: "9999999999.forged"}) as c:
        assert (await c.get("/api/calls")).status_code == 401
        assert (await c.get("/console")).headers["location"] == "/console/login"
    assert TOKEN not in caplog.text


async def test_cookie_from_a_removed_token_is_refused(calllog) -> None:
    old = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(old) as c:
        await c.post("/console/login", data={"token": TOKEN})
        cookie = c.cookies[COOKIE]
    rotated = console_app(calllog, settings(operator_tokens=("a-new-token",)))
    async with client(rotated, cookies={COOKIE: cookie}) as c:
        assert (await c.get("/api/calls")).status_code == 401


async def test_call_record_and_download(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client(app, headers=auth) as c:
        r = await c.get("/api/calls/CA1")
        rec = r.json()
        assert rec["status"] == "completed" and rec["transcript"][0]["text"] == XSS
        assert rec["barge_ins"][0]["heard_ms"] == 800
        assert "content-disposition" not in r.headers
        r = await c.get("/api/calls/CA1", params={"download": "1"})
        assert r.headers["content-disposition"] == 'attachment; filename="call-CA1.json"'
        assert json.loads(r.content)["call_sid"] == "CA1"
        # the payload is JSON data, never markup
        assert r.headers["content-type"].startswith("application/json") and r.headers["x-content-type-options"] == "nosniff"
        assert (await c.get("/api/calls/NOPE")).status_code == 404


async def test_list_filters_and_errors(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        async def sids(**params) -> list[str]:
            r = await c.get("/api/calls", params=params)
            assert r.status_code == 200, r.text
            return [row["call_sid"] for row in r.json()["calls"]]

        assert await sids(status="active") == ["CA2"]
        assert await sids(agent="support") == ["CA1"]
        assert await sids(number="0002222") == ["CA2"]
        assert await sids(q="onerror") == ["CA1"]
        assert await sids(since=str(time.time() + 60)) == []
        assert await sids(until="2001-01-01T00:00:00") == []
        first = (await c.get("/api/calls", params={"limit": 1})).json()
        assert [row["call_sid"] for row in first["calls"]] == ["CA2"] and first["next_cursor"]
        assert await sids(limit=1, cursor=first["next_cursor"]) == ["CA1"]
        for bad in ({"status": "nope"}, {"since": "yesterday"}, {"cursor": "%%%"}, {"limit": "x"}):
            assert (await c.get("/api/calls", params=bad)).status_code == 400, bad


async def test_pages_and_static_files_are_locked_down(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for path in ("/console", "/console/calls/CA1", "/console/static/call.js", "/console/login"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert "default-src 'none'" in r.headers["content-security-policy"], path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_static_ui_never_parses_data_as_html() -> None:
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function")
    scripts = sorted(STATIC.glob("*.js"))
    assert {p.name for p in scripts} >= {"common.js", "calls.js", "call.js", "live.js", "overview.js"}
    for path in scripts:
        assert not sinks.search(path.read_text()), f"{path.name} uses an HTML sink"
    assert "textContent" in (STATIC / "common.js").read_text()
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        # no inline script or handler: the CSP allows only the console's own files
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page.name
        assert not re.search(r"\son[a-z]+\s*=", html), page.name


async def test_live_stream_replays_then_follows_a_call(tmp_path) -> None:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        t0 = time.time()
        svc.call_started(CallInfo("CA9", "MZ9", "+1555", "+1666", "support", t0))
        svc.event("CA9", CallLogEntry("transcript", t0, {"role": "caller", "item_id": "a", "text": "before"}))
        await svc.flush()
        async with serve_console(svc, settings(operator_tokens=(TOKEN,))) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                r = await c.get("/api/live", params={"call": "CA9"})
                assert r.status_code == 401
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with c.stream("GET", "/api/live", params={"call": "CA9"}, headers=headers) as resp:
                    assert resp.headers["content-type"].startswith("text/event-stream")
                    frames = sse_frames(resp)
                    kind, data, _ = await anext(frames)
                    assert kind == "call" and data["from"] == "+1555"
                    kind, data, first_id = await anext(frames)
                    assert kind == "call.event" and data["data"]["text"] == "before"
                    svc.event("CA9", CallLogEntry("transcript", time.time(), {"role": "agent", "item_id": "b", "text": "after"}))
                    svc.event("CA1", CallLogEntry("dtmf", time.time(), {"digit": "1"}))  # another call: filtered
                    svc.call_ended("CA9", "caller_hangup", time.time())
                    kind, data, next_id = await anext(frames)
                    assert kind == "call.event" and data["data"]["text"] == "after" and next_id > first_id
                    kind, data, _ = await anext(frames)
                    assert kind == "call.ended" and data["reason"] == "caller_hangup"
                # a reconnect with Last-Event-ID replays only what came after
                headers["Last-Event-ID"] = str(first_id)
                async with c.stream("GET", "/api/live", params={"call": "CA9"}, headers=headers) as resp:
                    frames = sse_frames(resp)
                    assert (await anext(frames))[0] == "call"
                    kind, data, eid = await anext(frames)
                    assert eid == next_id and data["data"]["text"] == "after"
                # the all-calls stream starts with the active calls
                svc.call_started(CallInfo("CA10", started_at=time.time()))
                await svc.flush()
                async with c.stream("GET", "/api/live", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    frames = sse_frames(resp)
                    kind, data, _ = await anext(frames)
                    assert kind == "snapshot" and {x["call_sid"] for x in data["calls"]} == {"CA10", "CA1"}  # CA9 ended
                    svc.event("CA10", CallLogEntry("dtmf", time.time(), {"digit": "3"}))
                    kind, data, _ = await anext(frames)
                    assert kind == "call.event" and data["call_sid"] == "CA10"
    finally:
        await svc.aclose()


async def sse_frames(resp: httpx.Response):
    """(event, data, id) for each SSE frame; comments and retry hints skipped."""
    event, data, eid = None, None, None
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line.startswith("id: "):
            eid = int(line[4:])
        elif line == "" and event is not None:
            yield event, data, eid
            event, data, eid = None, None, None


async def test_overview_endpoint(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(app) as c:
        assert (await c.get("/api/overview")).status_code == 401
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        r = await c.get("/api/overview")
        assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
        data = r.json()
        assert data["calls"] == 2 and data["until"] - data["since"] == 24 * 3600
        assert {e["reason"] for e in data["end_reasons"]} == {"caller_hangup", "active"}
        assert data["latency"] == {"turns": 0, "p50_ms": None, "p95_ms": None}
        assert (await c.get("/api/overview", params={"since": time.time() - 30})).json()["calls"] == 0
        for bad in ({"since": "yesterday"}, {"since": "100", "until": "50"}, {"since": "0", "until": str(200 * 86400)}):
            assert (await c.get("/api/overview", params=bad)).status_code == 400, bad
        rows = (await c.get("/api/calls")).json()["calls"]
        one = next(r for r in rows if r["call_sid"] == "CA1")
        assert (one["snippet"], one["turns"], one["barge_in_count"], one["tools"]) == (XSS, 1, 1, 0)


async def test_root_redirects_to_the_console_and_the_favicon_is_served(calllog) -> None:
    app = console_app(calllog, settings(operator_tokens=(TOKEN,)))
    async with client(app) as c:
        r = await c.get("/")
        assert r.status_code == 307 and r.headers["location"] == "/console"
        r = await c.get("/favicon.ico")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert r.content.startswith(b"<svg") and b"<script" not in r.content
        assert (await c.get("/console/live")).status_code == 303  # pages need a login
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        for path in ("/console/live", "/console/overview", "/console/static/live.js", "/console/static/overview.js",
                     "/console/static/favicon.svg"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert "default-src 'none'" in r.headers["content-security-policy"], path
