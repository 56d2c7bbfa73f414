"""Twilio REST actions (place a call, transfer, hang up, attach a number) through the twilio SDK.

The SDK is synchronous; a call session runs these through ``run_rest`` (a worker thread with a
timeout) so a slow Twilio API never stalls the event loop that carries every call's audio.
Errors come back as ``TwilioRestError`` with a message fit for the call log: never the auth token.
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from voicegw.telephony.twilio import build_dial_twiml

T = TypeVar("T")


class TwilioRestError(Exception):
    """A Twilio REST action failed; ``status`` is the HTTP status when Twilio answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _wrap(action: str, exc: Exception) -> TwilioRestError:
    if isinstance(exc, TwilioRestException):
        return TwilioRestError(f"{action}: Twilio answered {exc.status}: {exc.msg}", exc.status)
    return TwilioRestError(f"{action}: {exc}")


@dataclass(frozen=True)
class PlacedCall:
    sid: str
    status: str  # Twilio's call status at creation: queued, usually


class TwilioRest:
    """The few Twilio REST calls voicegw makes, each a single blocking SDK call."""

    def __init__(self, account_sid: str, auth_token: str, http_client: HttpClient | None = None,
                 timeout_s: float = 10) -> None:
        if not account_sid or not auth_token:
            raise TwilioRestError("Twilio REST needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self._client = Client(account_sid, auth_token,
                              http_client=http_client or TwilioHttpClient(timeout=timeout_s))

    def create_call(self, to: str, from_: str, *, url: str | None = None, twiml: str | None = None,
                    machine_detection: str | None = None, amd_callback: str | None = None,
                    status_callback: str | None = None, ring_timeout_s: int | None = None,
                    status_events: tuple[str, ...] | None = None) -> PlacedCall:
        """Dial `to` from `from_`; Twilio fetches the call's TwiML from `url` (POST) or runs `twiml`.

        With `machine_detection` ("Enable" or "DetectMessageEnd") and `amd_callback`, detection is
        asynchronous: the call connects at once and the verdict is posted to `amd_callback` later.
        """
        if (url is None) == (twiml is None):
            raise ValueError("create_call needs exactly one of url and twiml")
        kwargs: dict[str, Any] = {"to": to, "from_": from_}
        if url is not None:
            kwargs.update(url=url, method="POST")
        else:
            kwargs["twiml"] = twiml
        if machine_detection is not None:
            kwargs["machine_detection"] = machine_detection
            if amd_callback is not None:
                kwargs.update(async_amd="true", async_amd_status_callback=amd_callback,
                              async_amd_status_callback_method="POST")
        if status_callback is not None:
            kwargs.update(status_callback=status_callback, status_callback_method="POST")
            if status_events:
                kwargs["status_callback_event"] = list(status_events)
        if ring_timeout_s is not None:
            kwargs["timeout"] = ring_timeout_s
        try:
            call = self._client.calls.create(**kwargs)
        except (TwilioException, OSError) as exc:
            raise _wrap(f"call to {to}", exc) from None
        return PlacedCall(str(call.sid), str(call.status or ""))

    def transfer(self, call_sid: str, target: str, announcement: str | None = None) -> None:
        """Redirect the live call to <Dial> the target (the media stream ends with it)."""
        twiml = build_dial_twiml(target, announcement)
        try:
            self._client.calls(call_sid).update(twiml=twiml)
        except (TwilioException, OSError) as exc:
            raise _wrap(f"transfer of {call_sid} to {target}", exc) from None

    def redirect(self, call_sid: str, twiml: str) -> None:
        """Give the live call new TwiML (its media stream, if any, ends)."""
        try:
            self._client.calls(call_sid).update(twiml=twiml)
        except (TwilioException, OSError) as exc:
            raise _wrap(f"update of {call_sid}", exc) from None

    def cancel(self, call_sid: str) -> None:
        """Stop a call that may still be ringing (canceled) or already answered (completed)."""
        try:
            self._client.calls(call_sid).update(status="canceled")
        except TwilioRestException:
            try:
                self._client.calls(call_sid).update(status="completed")
            except (TwilioException, OSError) as exc:
                raise _wrap(f"cancel of {call_sid}", exc) from None
        except (TwilioException, OSError) as exc:
            raise _wrap(f"cancel of {call_sid}", exc) from None

    def hang_up(self, call_sid: str) -> None:
        try:
            self._client.calls(call_sid).update(status="completed")
        except (TwilioException, OSError) as exc:
            raise _wrap(f"hang up of {call_sid}", exc) from None

    def attach_number(self, phone_number: str, voice_url: str) -> str:
        """Point the account's number at ``voice_url`` (POST); returns the number's SID."""
        try:
            found = self._client.incoming_phone_numbers.list(phone_number=phone_number, limit=20)
        except (TwilioException, OSError) as exc:
            raise _wrap(f"lookup of {phone_number}", exc) from None
        match = [n for n in found if n.phone_number == phone_number]
        if not match and len(found) == 1:
            match = found  # Twilio matched a differently formatted spelling of the number
        if not match:
            others = ", ".join(str(n.phone_number) for n in found[:5])
            hint = f" (similar: {others})" if others else ""
            raise TwilioRestError(f"{phone_number} is not a phone number on this Twilio account{hint}", 404)
        sid = str(match[0].sid)
        try:
            self._client.incoming_phone_numbers(sid).update(voice_url=voice_url, voice_method="POST")
        except (TwilioException, OSError) as exc:
            raise _wrap(f"update of {phone_number}", exc) from None
        return sid


async def run_rest(fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
    """Run a blocking REST call in a worker thread; TimeoutError after ``timeout_s``."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout_s)


def attach_command(number: str, settings: Any, *, http_client: HttpClient | None = None) -> int:
    """`voicegw twilio attach +1555...`: set the number's voice webhook to this gateway."""
    missing = [name for name, value in (
        ("VOICEGW_PUBLIC_URL", settings.public_url),
        ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
    ) if not value]
    if missing:
        print(f"error: twilio attach needs {', '.join(missing)} to be set", file=sys.stderr)
        return 2
    voice_url = settings.public_url.rstrip("/") + "/twilio/voice"
    try:
        rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token, http_client)
        sid = rest.attach_number(number.strip(), voice_url)
    except TwilioRestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{number} ({sid}) now sends calls to POST {voice_url}")
    return 0
