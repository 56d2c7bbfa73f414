"""Operator API and console routes, mounted by the gateway next to its own.

    GET  /api/calls            list (status, number, agent, since, until, q, limit, cursor)
    GET  /api/calls/{sid}      full record; ?download=1 as an attachment
    GET  /api/calls/{sid}/recording   the call's recording (audio/wav, HTTP Range; 404 when none)
    GET  /api/live             live events (SSE); ?call=SID for one call
    GET  /api/overview         calls per hour, p50/p95 turn latency, tool error rate, end reasons
                               (since, until; default the last 24 hours)
    GET  /api/events           post-call events, newest first, with counts by status (status, call,
                               limit; voicegw.events)
    GET  /console              calls page            GET /console/calls/{sid}   call page
    GET  /console/live         active calls, live    GET /console/overview      overview page
    GET  /console/events       post-call events
    GET  /                     redirects to /console GET /favicon.ico           the console's icon
    GET  /console/login        login form            POST /console/login, /console/logout
    GET  /console/static/...   the UI's files

Every operator credential (bearer token, session cookie, login form) is checked by `OperatorAuth`,
which throttles failures per client: a locked-out client gets 429 with Retry-After.

Every response carries a strict Content-Security-Policy: the UI loads only its own script and
style, so even a rendering mistake could not run a script that arrived in a transcript.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicegw.calllog.service import CallLogService
from voicegw.config import Settings
from voicegw.console.auth import COOKIE, COOKIE_TTL_S, OperatorAuth, Verdict
from voicegw.console.live import live_response
from voicegw.console.throttle import AuthThrottle
from voicegw.events.store import deliveries_for
from voicegw.recording.files import CONTENT_TYPE as RECORDING_TYPE, find_recording, recording_url

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATIC = resources.files("voicegw.console") / "static"
MAX_FORM_BYTES = 4096
OVERVIEW_WINDOW_S = 24 * 3600
MAX_OVERVIEW_WINDOW_S = 92 * 86400


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body, status, {**SECURITY_HEADERS, **(headers or {})}, media_type="application/json")


def _time_param(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 (UTC when no offset is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be epoch seconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC / name).read_text(encoding="utf-8"), headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


class _Secured:
    """Adds the security headers to a mounted app's responses (the static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def api_denied(auth: OperatorAuth, request: Request) -> Response | None:
    """None when the request carries a valid operator credential; else the JSON refusal every
    /api route answers (401 with WWW-Authenticate, 403, or 429 with Retry-After)."""
    verdict = auth.check(request)
    if verdict.allowed:
        return None
    headers = {"WWW-Authenticate": 'Bearer realm="voicegw"'} if verdict.status == 401 else {}
    if verdict.retry_after:
        headers["Retry-After"] = str(verdict.retry_after)
    return json_response({"error": verdict.message}, verdict.status, headers)


def console_routes(calllog: CallLogService, settings: Settings,
                   throttle: AuthThrottle | None = None, auth: OperatorAuth | None = None) -> list[BaseRoute]:
    """`throttle` is the failed-credential throttle to use (a fresh one with default limits if
    omitted); passing one lets its limits and clock be chosen. `auth`, when given, is shared with
    other /api routes (voicegw.telephony.outbound), so failures anywhere count toward one lockout."""
    auth = auth or OperatorAuth(settings, throttle)

    def denied(request: Request) -> Response | None:
        return api_denied(auth, request)

    def ui_denied(request: Request) -> Response | None:
        verdict = auth.check(request)
        if verdict.allowed:
            return None
        if verdict.status == 401 or (verdict.status == 403 and request.cookies.get(COOKIE)):
            resp = RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
            if verdict.stale_cookie:  # dropped, so that reloading the page does not count again
                resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
            return resp
        return text_denied(verdict)

    def text_denied(verdict: Verdict) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        if verdict.retry_after:
            headers["Retry-After"] = str(verdict.retry_after)
        return Response(verdict.message, verdict.status, headers, media_type="text/plain")

    async def list_calls(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        qp = request.query_params
        try:
            rows, nxt = await calllog.store.list_calls(
                status=qp.get("status") or None,
                number=qp.get("number") or None,
                agent=qp.get("agent") or None,
                since=_time_param(qp.get("since"), "since"),
                until=_time_param(qp.get("until"), "until"),
                q=qp.get("q") or None,
                limit=int(qp.get("limit") or 50),
                cursor=qp.get("cursor") or None,
            )
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"calls": rows, "next_cursor": nxt})

    async def get_call(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        sid = request.path_params["sid"]
        rec = await calllog.store.get_call(sid)
        if rec is None:
            return json_response({"error": "no such call"}, 404)
        if rec.get("recording") is None and find_recording(settings.recordings_path, sid) is not None:
            # a call cut off by a stopped gateway: its recording holds what was written until then
            rec["recording"] = {"url": recording_url(sid), "content_type": RECORDING_TYPE, "complete": False}
        headers = {"Cache-Control": "no-store"}
        if request.query_params.get("download") in ("1", "true", "yes"):
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", sid)[:80]
            headers["Content-Disposition"] = f'attachment; filename="call-{safe}.json"'
        return json_response(rec, 200, headers)

    async def get_recording(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        sid = request.path_params["sid"]
        path = find_recording(settings.recordings_path, sid)
        if path is None:
            return json_response({"error": "no recording for this call"}, 404, {"Cache-Control": "no-store"})
        return FileResponse(path, media_type=RECORDING_TYPE, filename=f"call-{sid}.wav",
                            content_disposition_type="inline",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    events = deliveries_for(calllog.store)

    async def list_events(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        qp = request.query_params
        try:
            rows = await events.list(status=qp.get("status") or None, call_sid=qp.get("call") or None,
                                     limit=int(qp.get("limit") or 50))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"enabled": bool(settings.events_url), "counts": await events.counts(), "events": rows},
                             200, {"Cache-Control": "no-store"})

    async def get_overview(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        qp = request.query_params
        try:
            until = _time_param(qp.get("until"), "until") or time.time()
            since = _time_param(qp.get("since"), "since")
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        since = until - OVERVIEW_WINDOW_S if since is None else since
        if not 0 < until - since <= MAX_OVERVIEW_WINDOW_S:
            return json_response({"error": "since must be before until, at most 92 days apart"}, 400)
        return json_response(await calllog.store.overview(since, until), 200, {"Cache-Control": "no-store"})

    async def live(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        return live_response(request, calllog, SECURITY_HEADERS)

    async def console_index(request: Request) -> Response:
        return ui_denied(request) or _page("index.html")

    async def console_call(request: Request) -> Response:
        return ui_denied(request) or _page("call.html")

    async def console_live(request: Request) -> Response:
        return ui_denied(request) or _page("live.html")

    async def console_overview(request: Request) -> Response:
        return ui_denied(request) or _page("overview.html")

    async def console_events(request: Request) -> Response:
        return ui_denied(request) or _page("events.html")

    async def root(request: Request) -> Response:
        return RedirectResponse("/console", 307, headers=SECURITY_HEADERS)

    async def favicon(request: Request) -> Response:
        return Response((STATIC / "favicon.svg").read_bytes(), 200,
                        {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"}, media_type="image/svg+xml")

    async def login_form(request: Request) -> Response:
        if not auth.has_tokens:  # nothing to log in with: open locally in dev mode, or disabled
            return ui_denied(request) or RedirectResponse("/console", 303, headers=SECURITY_HEADERS)
        return _page("login.html")

    async def login(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return Response("form too large", 413, SECURITY_HEADERS, media_type="text/plain")
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        verdict = auth.login(request, token)
        if verdict.status == 429:
            return text_denied(verdict)
        if not verdict.allowed:
            return RedirectResponse("/console/login?failed=1", 303, headers=SECURITY_HEADERS)
        resp = RedirectResponse("/console", 303, headers=SECURITY_HEADERS)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        resp.set_cookie(COOKIE, auth.make_cookie(token), max_age=COOKIE_TTL_S, path="/", httponly=True,
                        samesite="strict", secure=secure)
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    return [
        Route("/api/calls", list_calls, methods=["GET"]),
        Route("/api/calls/{sid}", get_call, methods=["GET"]),
        Route("/api/calls/{sid}/recording", get_recording, methods=["GET"]),
        Route("/api/live", live, methods=["GET"]),
        Route("/api/overview", get_overview, methods=["GET"]),
        Route("/", root, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/console", console_index, methods=["GET"]),
        Route("/console/calls/{sid}", console_call, methods=["GET"]),
        Route("/console/live", console_live, methods=["GET"]),
        Route("/console/overview", console_overview, methods=["GET"]),
        Route("/console/events", console_events, methods=["GET"]),
        Route("/api/events", list_events, methods=["GET"]),
        Route("/console/login", login_form, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Mount("/console/static", app=_Secured(StaticFiles(directory=str(STATIC))), name="console-static"),
    ]
