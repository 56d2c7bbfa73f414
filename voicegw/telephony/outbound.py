"""Outbound calls: `POST /api/calls` has Twilio dial a number for an agent; `POST /twilio/amd`
takes Twilio's answering-machine verdict for it.

    POST /api/calls   {"to": "+1...", "from": "+1...", "agent": "name", "context": {...},
                       "machine_detection": true}  (operator credentials, as every /api route)
        -> 201 {"call_sid", "status", "agent", "machine_detection", "missing_context"}

Twilio is asked (Calls create) to fetch the call's TwiML from `/twilio/voice?outbound=<grant>` and,
with machine detection (the default), to detect asynchronously (`DetectMessageEnd`: the verdict
comes after a voicemail greeting's beep) and post the verdict to `/twilio/amd?outbound=<grant>`.
The grants (voicegw.telephony.grants) carry the agent, the context and the owner -- this process --
so the webhook and the verdict are forwarded here from whichever worker or replica Twilio reaches,
and the call's greeting waits for the verdict. Nothing is stored between the request and the
webhooks: a restarted gateway still takes the calls it placed (then served where they land).

Refusals: 400 malformed JSON, 413 body too large, 415 not JSON, 422 a field is wrong (the answer
names it), 503 draining, full, or no Twilio credentials / public URL, 502 Twilio refused (its
message), 504 Twilio did not answer in time.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from voicegw.config import placeholders
from voicegw.console.auth import OperatorAuth
from voicegw.console.routes import api_denied, json_response
from voicegw.gateway import Gateway
from voicegw.telephony.endpoints import forward_to_owner, granted_callback
from voicegw.telephony.grants import check_context, mint_grant, new_grant
from voicegw.telephony.rest import TwilioRest, TwilioRestError, run_rest
from voicegw.tools.loader import AgentEntry
from voicegw.tools.routing import E164, normalize_number

log = logging.getLogger("voicegw.outbound")

MACHINE_DETECTION = "DetectMessageEnd"  # the verdict waits for the end of a voicemail greeting
ANSWERED_BY = frozenset({"human", "machine_start", "machine_end_beep", "machine_end_silence",
                         "machine_end_other", "fax", "unknown"})
NOT_ANSWERED = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "canceled"}  # -> end reason
MAX_BODY_BYTES = 8 * 1024
REST_TIMEOUT_S = 15.0
_FIELDS = frozenset({"to", "from", "agent", "context", "machine_detection"})


class DialError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field

    def response(self) -> Response:
        body: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return json_response(body, self.status)


@dataclass(frozen=True)
class DialRequest:
    to: str
    from_: str
    agent: AgentEntry
    context: dict[str, str]
    machine_detection: bool

    def missing_context(self) -> list[str]:
        """Placeholders of the agent's texts the context does not fill (they become empty)."""
        config = self.agent.agent.config
        texts = [config.instructions]
        if config.greeting is not None:
            texts += [config.greeting.text, config.greeting.instructions]
        voicemail = getattr(config.voicemail, "leave_message", None)
        names: set[str] = set()
        for text in texts + [voicemail]:
            names |= placeholders(text)
        return sorted(names - set(self.context))


def find_agent(registry: Any, name: str) -> AgentEntry | None:
    """The agent with this registry key (its file path relative to the routing file) or, failing
    that, the one agent whose `name:` this is."""
    entries: dict[str, AgentEntry] = registry.entries
    if name in entries:
        return entries[name]
    named = [e for e in entries.values() if e.agent.config.name == name]
    return named[0] if len(named) == 1 else None


def _number(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DialError(422, f"{field} is required: an E.164 phone number like +15551234567", field)
    number = normalize_number(value)
    if not E164.match(number):
        raise DialError(422, f"{field} must be an E.164 phone number like +15551234567, got {value[:40]!r}", field)
    return number


def parse_dial(body: Any, registry: Any) -> DialRequest:
    """The request body as a DialRequest, or DialError naming the field that is wrong."""
    if not isinstance(body, dict):
        raise DialError(400, "the body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in _FIELDS)
    if unknown:
        raise DialError(422, f"unknown field {unknown[0]!r}; fields are {', '.join(sorted(_FIELDS))}", unknown[0])
    to, from_ = _number(body, "to"), _number(body, "from")
    name = body.get("agent")
    if name is None:  # the agent that answers the calling number, else the default agent
        entry = registry.entries[registry.routes.get(from_, registry.default_key)]
    elif not isinstance(name, str) or (entry := find_agent(registry, name)) is None:
        known = ", ".join(sorted({*registry.entries, *(e.agent.config.name for e in registry.entries.values())}))
        raise DialError(422, f"no agent {str(name)[:80]!r}; known: {known}", "agent")
    try:
        context = check_context(body.get("context"))
    except ValueError as exc:
        raise DialError(422, str(exc), "context") from None
    detect = body.get("machine_detection", True)
    if not isinstance(detect, bool):
        raise DialError(422, "machine_detection must be true or false", "machine_detection")
    return DialRequest(to, from_, entry, context, detect)


async def _json_body(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise DialError(415, "send the call as JSON (Content-Type: application/json)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise DialError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DialError(400, f"the body is not JSON: {exc}") from None


def outbound_routes(gateway: Gateway, auth: OperatorAuth, rest: TwilioRest | None) -> list[BaseRoute]:
    """The routes of outbound calls; `auth` is shared with the console's /api routes."""
    settings = gateway.settings

    async def place_call(request: Request) -> Response:
        if (refusal := api_denied(auth, request)) is not None:
            return refusal
        try:
            dial = parse_dial(await _json_body(request), gateway.registry)
        except DialError as exc:
            return exc.response()
        ready, why = gateway.readiness()
        if not ready:  # this process will own the call: it must have room for it
            return json_response({"error": f"the gateway is {why}: it places no new calls now"}, 503,
                                 {"Retry-After": "30"})
        missing = [name for name, value in (
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid), ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
            ("VOICEGW_PUBLIC_URL", settings.public_url)) if not value]
        if missing or rest is None or settings.public_url is None:
            return json_response({"error": "outbound calls need TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
                                           f"VOICEGW_PUBLIC_URL; not set: {', '.join(missing)}"}, 503)
        now, base = time.time(), settings.public_url.rstrip("/")
        voice = new_grant("voice", now, gateway.owner, dial.agent.key, dial.context, dial.machine_detection)
        # the call's final status: a call nobody answered never reaches the voice webhook, so this is
        # how it gets a record (busy, no answer, failed)
        status = new_grant("status", now, gateway.owner, dial.agent.key, {"to": dial.to, "from": dial.from_})
        create = functools.partial(rest.create_call, dial.to, dial.from_,
                                   url=f"{base}/twilio/voice?outbound={mint_grant(settings.stream_secret, voice)}",
                                   status_callback=f"{base}/twilio/status?outbound={mint_grant(settings.stream_secret, status)}")
        if dial.machine_detection:
            amd = mint_grant(settings.stream_secret, new_grant("amd", now, gateway.owner))
            create = functools.partial(create, machine_detection=MACHINE_DETECTION,
                                       amd_callback=f"{base}/twilio/amd?outbound={amd}")
        try:
            placed = await run_rest(create, timeout_s=REST_TIMEOUT_S)
        except TwilioRestError as exc:
            log.warning("outbound call to %s not placed: %s", dial.to, exc)
            return json_response({"error": str(exc), "twilio_status": exc.status}, 502)
        except TimeoutError:
            log.warning("outbound call to %s: Twilio did not answer in %.0fs", dial.to, REST_TIMEOUT_S)
            return json_response({"error": f"Twilio did not answer within {REST_TIMEOUT_S:.0f}s; "
                                           "the call may or may not have been placed"}, 504)
        log.info("outbound call %s to %s placed for agent %s", placed.sid, dial.to, dial.agent.key)
        return json_response({"call_sid": placed.sid, "status": placed.status, "agent": dial.agent.agent.config.name,
                              "machine_detection": dial.machine_detection,
                              "missing_context": dial.missing_context()}, 201)

    async def amd_callback(request: Request) -> Response:
        cb = await granted_callback(request, settings, "amd", "answering-machine callback")
        if isinstance(cb, Response):
            return cb
        params = cb.params
        call_sid, answered_by = params.get("CallSid", ""), params.get("AnsweredBy", "")
        if not call_sid or answered_by not in ANSWERED_BY:
            return PlainTextResponse("CallSid and a known AnsweredBy are required", status_code=400)
        forwarded = await forward_to_owner(request, cb, gateway)
        if forwarded is not None:
            return forwarded
        duration = params.get("MachineDetectionDuration", "")
        detection_ms = int(duration) if duration.isdigit() and len(duration) < 9 else None
        log.info("call %s answered by %s (detection took %s ms)", call_sid, answered_by, detection_ms)
        if not gateway.answered_by(call_sid, answered_by, detection_ms):
            return PlainTextResponse("no such call in progress here", status_code=404)
        return PlainTextResponse("ok")

    async def status_callback(request: Request) -> Response:
        """Twilio's final status of a placed call. One that was never answered (busy, no answer,
        failed, canceled) is written to the call log here: no webhook or stream ever came for it."""
        cb = await granted_callback(request, settings, "status", "call status callback")
        if isinstance(cb, Response):
            return cb
        params, grant = cb.params, cb.grant
        call_sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
        if not call_sid or not status:
            return PlainTextResponse("CallSid and CallStatus are required", status_code=400)
        if status in NOT_ANSWERED:
            entry = gateway.registry.entries.get(grant.agent or "")
            agent = entry.agent.config.name if entry is not None else (grant.agent or "")
            gateway.call_not_answered(call_sid, grant.context.get("from", ""), grant.context.get("to", ""), agent,
                                      NOT_ANSWERED[status], params.get("SipResponseCode"))
        return PlainTextResponse("ok")

    return [
        Route("/api/calls", place_call, methods=["POST"]),
        Route("/twilio/amd", amd_callback, methods=["POST"]),
        Route("/twilio/status", status_callback, methods=["POST"]),
    ]
