"""A simulated callee for outbound calls, and Twilio's part in answering one.

When the gateway places a call (`POST /api/calls` -> Twilio Calls create), Twilio dials, somebody
or something answers, Twilio fetches the TwiML from the URL the gateway gave it, opens the media
stream and -- with asynchronous answering-machine detection -- posts its verdict (AnsweredBy) to
the callback URL while the call goes on. `SimulatedCallee` does all of that from the fields of the
Calls create request: the media stream is the simulated caller's (voicegw.sim.caller), the same
socket role, carrying what the callee says.

Two callees:
- a person (`person_audio`), who picks up and says "Hello?", then listens; the verdict `human`
  comes once the hello is followed by a moment of silence (a person greets briefly, a machine
  talks on);
- a voicemail box (`voicemail_audio`): a greeting spoken with the project's TTS (eSpeak NG, about
  3 s), a 1 kHz beep of 0.5 s, then silence while it records; with `DetectMessageEnd` the verdict
  `machine_end_beep` comes when the beep ends.
What the callee heard, with its timing, is in the call result (`heard_spans`, `timeline()`).
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from voicegw.audio.g711 import pcm16_to_ulaw
from voicegw.sim.caller import SimulatedCaller, new_sid
from voicegw.sim.result import CallResult
from voicegw.sim.source import AudioSchedule
from voicegw.sim.twiml import SimCallError
from voicegw.telephony.twilio import sign

VOICEMAIL_GREETING = "You have reached Sam. Please leave a message after the tone."
PERSON_HELLO = "Hello?"
BEEP_HZ = 1000
BEEP_MS = 500
BEEP_GAP_MS = 300  # between the end of the greeting and the beep
HUMAN_VERDICT_AFTER_MS = 700  # a short "Hello?" then silence: what tells Twilio a person answered


@dataclass(frozen=True)
class CalleeAudio:
    """What a callee says, and when (ms from the stream's start) Twilio's verdict comes."""

    audio: AudioSchedule
    answered_by: str
    verdict_at_ms: int
    beep_ms: tuple[int, int] | None = None  # (start, end) of the voicemail beep


def beep_pcm16(hz: int = BEEP_HZ, ms: int = BEEP_MS, rate: int = 8000, level: float = 0.5) -> bytes:
    """A sine tone as PCM16 mono, the beep after a voicemail greeting."""
    n = rate * ms // 1000
    return array("h", (int(level * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))).tobytes()


async def _say(text: str) -> bytes:
    """`text` in the project's TTS voice as 8 kHz mu-law (TtsUnavailable without eSpeak NG)."""
    from voicegw.localmodel.tts import Synthesizer

    return await Synthesizer().synthesize_async(text, "g711_ulaw")


async def person_audio(hello: str = PERSON_HELLO) -> CalleeAudio:
    spoken = await _say(hello)
    return CalleeAudio(AudioSchedule(spoken), "human", len(spoken) // 8 + HUMAN_VERDICT_AFTER_MS)


async def voicemail_audio(greeting: str = VOICEMAIL_GREETING) -> CalleeAudio:
    spoken = await _say(greeting)
    beep_at = len(spoken) // 8 + BEEP_GAP_MS
    timeline = bytearray(spoken) + b"\xff" * (BEEP_GAP_MS * 8) + pcm16_to_ulaw(beep_pcm16())
    beep = (beep_at, beep_at + BEEP_MS)
    return CalleeAudio(AudioSchedule(bytes(timeline), ((0, len(spoken) // 8), beep)), "machine_end_beep",
                       beep[1], beep)


async def post_amd(callback_url: str, *, call_sid: str, answered_by: str, auth_token: str | None,
                   account_sid: str = "", detection_ms: int = 0, timeout_s: float = 10.0,
                   send_to: str | None = None) -> httpx.Response:
    """Post an asynchronous answering-machine verdict as Twilio does (signed for `callback_url`).
    `send_to`: a base URL to send it to instead of the callback's host (the URL signed is the same)."""
    form = {"CallSid": call_sid, "AccountSid": account_sid or new_sid("AC"), "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(detection_ms)}
    headers = {"X-Twilio-Signature": sign(auth_token, callback_url, form)} if auth_token else {}
    target = callback_url
    if send_to is not None:
        parts, base = urlsplit(callback_url), urlsplit(send_to)
        target = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            return await http.post(target, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise SimCallError(f"answering-machine callback {parts_of(callback_url)} unreachable: {exc!r}") from None


def parts_of(url: str) -> str:
    """A URL without its query (grants and context stay out of messages)."""
    return url.split("?", 1)[0]


class SimulatedCallee:
    """The far end of one outbound call, from the fields the gateway sent to Twilio's Calls create
    (`Sid`, `To`, `From`, `Url`, and with detection `AsyncAmdStatusCallback`)."""

    def __init__(self, placed: Mapping[str, Any], callee: CalleeAudio, *, auth_token: str | None,
                 http_timeout_s: float = 10.0) -> None:
        url = str(placed["Url"])
        parts = urlsplit(url)
        self.callee = callee
        self.placed = dict(placed)
        self.auth_token = auth_token
        self.http_timeout_s = http_timeout_s
        self.verdict_status: int | None = None
        self.caller = SimulatedCaller(
            urlunsplit((parts.scheme, parts.netloc, "", "", "")), webhook_url=url, direction="outbound-api",
            call_sid=str(placed["Sid"]), from_number=str(placed["From"]), to_number=str(placed["To"]),
            audio=callee.audio, auth_token=auth_token, http_timeout_s=http_timeout_s)

    @property
    def call_sid(self) -> str:
        return self.caller.call_sid

    async def answer(self) -> None:
        """Pick up: the voice webhook, its TwiML, the media stream; the callee starts talking."""
        await self.caller.start()

    async def classify(self) -> int:
        """Twilio's verdict, posted when it would come: after a person's hello, at the end of the
        beep for a voicemail box. Returns the gateway's HTTP status (0: no detection was asked)."""
        callback = self.placed.get("AsyncAmdStatusCallback")
        if not callback:
            return 0
        await self.caller.wait_until(self.callee.verdict_at_ms / 1000, timeout=self.callee.verdict_at_ms / 1000 + 10)
        resp = await post_amd(str(callback), call_sid=self.call_sid, answered_by=self.callee.answered_by,
                              auth_token=self.auth_token, detection_ms=max(1000, self.callee.verdict_at_ms),
                              timeout_s=self.http_timeout_s)
        self.verdict_status = resp.status_code
        return resp.status_code

    async def run(self, *, duration_s: float = 30.0) -> CallResult:
        """Answer, let Twilio classify, and stay on the line until the gateway hangs up or
        `duration_s` has passed."""
        await self.answer()
        try:
            await self.classify()
            await self.caller.wait_closed(duration_s)
        except (TimeoutError, SimCallError):
            pass  # still on the line at the end, or the call ended before the verdict: the result says
        return await self.caller.hang_up()
