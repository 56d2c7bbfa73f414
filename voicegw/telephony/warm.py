"""Warm transfer through Twilio: dial the human with the call's summary, then bridge the caller.

The call core decides (voicegw.call.transfer); this module speaks Twilio:

- `warm_transfer`: Calls create to the target, from this side's number, with TwiML that reads the
  summary (<Say>) and then joins the conference `voicegw-<CallSid>`; its status callback
  (`/twilio/transfer?outbound=<grant>`, answered and completed events) reports the human's leg.
- `join_transfer`: the human answered: the caller's call gets TwiML that joins the same conference.
  The caller hears Twilio's hold music there until the human, done with the summary, enters; the
  media stream ends and the agent leaves the call. Either side hanging up ends the conference.
- `cancel_transfer`: the core gave up on the human's leg (nothing reported in time): stop it ringing.

Until the human answers the caller stays on the media stream (on hold, music from the gateway), so
a transfer nobody takes returns the caller to the same conversation with its context.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.twiml.voice_response import Dial, VoiceResponse

from voicegw.call.actions import Control
from voicegw.telephony.grants import mint_grant, new_grant
from voicegw.telephony.rest import TwilioRest, run_rest

if TYPE_CHECKING:
    from voicegw.gateway import Gateway

log = logging.getLogger("voicegw.transfer")

REST_TIMEOUT_S = 10.0
STATUS_EVENTS = ("answered", "completed")
CALL_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", "answered", "busy", "no-answer",
                           "failed", "canceled", "completed"})


def conference_name(call_sid: str) -> str:
    return f"voicegw-{call_sid}"


def briefing_twiml(summary: str, room: str) -> str:
    """The human's leg: hear the summary, then wait in the conference for the caller."""
    response = VoiceResponse()
    response.say(summary)
    dial = Dial()
    dial.conference(room, start_conference_on_enter=True, end_conference_on_exit=True, beep=False)
    response.append(dial)
    return str(response)


def join_twiml(room: str) -> str:
    """The caller's leg: join the conference; Twilio's hold music plays until the human enters."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(room, start_conference_on_enter=False, end_conference_on_exit=True, beep=False)
    response.append(dial)
    return str(response)


async def warm_control(gw: Gateway, rest: TwilioRest, call_sid: str, control: Control) -> None:
    """Perform one warm-transfer control for the call (raises on failure: the core is told)."""
    room = conference_name(call_sid)
    if control.kind == "warm_transfer":
        base = gw.settings.public_url
        if not base:
            raise RuntimeError("a warm transfer needs VOICEGW_PUBLIC_URL (Twilio reports the human's leg there)")
        grant = mint_grant(gw.settings.stream_secret,
                           new_grant("transfer", time.time(), gw.owner, context={"call_sid": call_sid}))
        dial = functools.partial(
            rest.create_call, control.target, gw.our_number(call_sid), twiml=briefing_twiml(control.announcement or "", room),
            status_callback=f"{base}/twilio/transfer?outbound={grant}", status_events=STATUS_EVENTS,
            ring_timeout_s=int(control.timeout_s or 30))
        placed = await run_rest(dial, timeout_s=REST_TIMEOUT_S)
        gw.warm_legs[call_sid] = placed.sid
        log.info("call %s: warm transfer is dialing %s (%s)", call_sid, control.target, placed.sid)
    elif control.kind == "join_transfer":
        await run_rest(rest.redirect, call_sid, join_twiml(room), timeout_s=REST_TIMEOUT_S)
    elif control.kind == "cancel_transfer":
        leg = gw.warm_legs.pop(call_sid, None)
        if leg is not None:
            await run_rest(rest.cancel, leg, timeout_s=REST_TIMEOUT_S)


def transfer_routes(gw: Gateway) -> list[BaseRoute]:
    from voicegw.telephony.endpoints import forward_to_owner, granted_callback

    async def transfer_status(request: Request) -> Response:
        cb = await granted_callback(request, gw.settings, "transfer", "transfer status callback")
        if isinstance(cb, Response):
            return cb
        params, grant = cb.params, cb.grant
        caller_sid, status = grant.context.get("call_sid", ""), params.get("CallStatus", "")
        if not caller_sid or status not in CALL_STATUSES:
            return PlainTextResponse("a known CallStatus is required", status_code=400)
        forwarded = await forward_to_owner(request, cb, gw)
        if forwarded is not None:
            return forwarded
        log.info("call %s: the warm transfer's leg %s is %s", caller_sid, params.get("CallSid", "?"), status)
        if not gw.transfer_status(caller_sid, status):
            return PlainTextResponse("no such call in progress here", status_code=404)
        return PlainTextResponse("ok")

    return [Route("/twilio/transfer", transfer_status, methods=["POST"])]
