"""`voicegw call`: place one simulated Twilio call against a running gateway.

It plays a WAV as the caller, writes what the caller heard to a WAV (at its real timing), then
prints the call's transcript from the gateway's operator API, or, when that API is not
reachable, a summary of what the caller observed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

import httpx

from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.result import CallResult
from voicegw.sim.source import AudioSchedule
from voicegw.sim.twiml import SimCallError
from voicegw.sim.wav import read_wav_pcm16_8k, write_mulaw_wav


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``call`` sub-command on an argparse sub-parsers object."""
    p = subparsers.add_parser("call", help="place a simulated Twilio call against a running gateway",
                              description=__doc__)
    p.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('VOICEGW_PORT') or 8080}",
                   help="gateway base URL (default: %(default)s, the port from VOICEGW_PORT as `serve` uses it)")
    p.add_argument("--audio", help="WAV file the caller says (any rate/width/channels); silence if omitted")
    p.add_argument("--speak-at", type=int, default=None, metavar="MS",
                   help="start saying --audio this many ms into the call (default: as soon as the agent's "
                        "greeting has finished)")
    p.add_argument("--out", help="write what the caller heard to this WAV")
    p.add_argument("--from", dest="from_number", default="+15550100001", help="caller number")
    p.add_argument("--to", dest="to_number", default="+15550100002", help="called number")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN") or None,
                   help="Twilio auth token to sign the webhook (default: $TWILIO_AUTH_TOKEN; unsigned if unset)")
    p.add_argument("--dtmf", default="", help="digits to press after the caller's audio, e.g. 123")
    p.add_argument("--duration", type=float, default=60.0, help="hang up after this many seconds (default: 60)")
    p.add_argument("--hangup-after-silence", type=float, default=3.0, metavar="SECONDS",
                   help="hang up after this much silence once both sides have spoken (default: 3; 0 = off)")
    p.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds (default: 10)")
    return p


async def run_call(args: argparse.Namespace) -> int:
    """Place the call; 0 on a completed call, 1 when the call could not be placed."""
    speech: bytes | None = None
    try:
        if args.audio:
            speech = read_wav_pcm16_8k(args.audio)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read --audio: {exc}", file=sys.stderr)
        return 1
    if speech is not None and args.speak_at is not None:
        audio = AudioSchedule.from_segments([(max(0, args.speak_at), speech)])
    else:
        audio = AudioSchedule.silence()
    caller = SimulatedCaller(args.url, audio=audio, auth_token=args.auth_token, from_number=args.from_number,
                             to_number=args.to_number, http_timeout_s=args.timeout, open_timeout_s=args.timeout)
    silence = args.hangup_after_silence
    silence_ms = int(silence * 1000) if silence and silence > 0 else None
    try:
        if speech is not None and args.speak_at is None:
            result = await after_greeting(caller, speech, args.dtmf, args.duration, silence_ms)
        else:
            result = await caller.run(duration_s=args.duration, hangup_after_silence_ms=silence_ms,
                                      dtmf=args.dtmf, timeout_s=args.duration + 4 * args.timeout)
    except (SimCallError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        write_mulaw_wav(args.out, result.timeline())
        print(f"wrote {result.heard_ms / 1000:.1f} s of agent audio to {args.out}")
    if result.close_code not in (None, 1000):
        print(f"the gateway closed the stream with code {result.close_code} {result.close_reason}".rstrip())
    transcript, problem = await fetch_transcript(args.url, result.call_sid, args.timeout)
    if transcript is None:
        print(f"transcript not available: {problem}")
        print(result.summary())
    elif not transcript:
        print("(empty transcript)")
        print(result.summary())
    else:
        for turn in transcript:
            print(f"{turn.get('role', '?'):>9}: {turn.get('text', '')}")
    return 0


GREETING_WAIT_S = 15.0  # the greeting normally starts as the stream opens (pre-warmed)
GREETING_END_MS = 800  # this much silence after agent audio: the greeting is over
ANSWER_END_MS = 1200  # the same for an answer, which may pause for a tool
ANSWER_WAIT_S = 20.0  # an agent that has not answered by then will not: go on


async def answered(caller: SimulatedCaller, frames: int, wait_s: float, duration_s: float) -> None:
    """Wait for agent audio after the first `frames` frames, then for the end of that answer."""
    with contextlib.suppress(TimeoutError):
        await caller.wait_for_audio(wait_s, frames + 1)
        await caller.wait_for_silence(ANSWER_END_MS, duration_s)


async def after_greeting(caller: SimulatedCaller, speech: bytes, dtmf: str, duration_s: float,
                         silence_ms: int | None) -> CallResult:
    """Wait for the agent's greeting to finish, say `speech`, wait for the answer, then press the
    `dtmf` keys (if any) and wait for that answer too; hang up after `silence_ms` of silence
    (or when the gateway ends the call, or after `duration_s`)."""
    await caller.start()
    try:
        async with asyncio.timeout(duration_s):
            with contextlib.suppress(TimeoutError):
                await caller.wait_for_audio(GREETING_WAIT_S)
            await caller.wait_for_silence(GREETING_END_MS, duration_s)
            frames = len(caller.result.media_times_ms)
            caller.speak(speech)
            await answered(caller, frames, len(speech) / 16000 + ANSWER_WAIT_S, duration_s)
            if dtmf:
                frames = len(caller.result.media_times_ms)
                for digit in dtmf:
                    await caller.send_dtmf(digit)
                    await asyncio.sleep(0.3)
                await answered(caller, frames, ANSWER_WAIT_S, duration_s)
            if silence_ms:
                await caller.wait_for_silence(silence_ms, duration_s)
            else:
                await caller.wait_closed(duration_s)
    except TimeoutError:
        caller.result.end_reason = caller.result.end_reason or "duration"
    except SimCallError:
        pass  # the gateway ended the call (the agent hung up): what was heard is the result
    return await caller.hang_up()


async def fetch_transcript(url: str, call_sid: str, timeout_s: float) -> tuple[list[dict[str, Any]] | None, str]:
    """The call's transcript from ``GET /api/calls/<sid>``, or (None, why it is not available).

    The call record is written as the call ends, so a 404 is retried briefly.
    """
    headers = {}
    token = os.environ.get("VOICEGW_OPERATOR_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    api = f"{url.rstrip('/')}/api/calls/{call_sid}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            for attempt in range(3):
                resp = await http.get(api, headers=headers)
                if resp.status_code != 404 or attempt == 2:
                    break
                await asyncio.sleep(0.25)  # the record may still be being written
    except httpx.HTTPError as exc:
        return None, f"{api} was not reachable ({exc.__class__.__name__})"
    if resp.status_code != 200:
        return None, f"{api} answered HTTP {resp.status_code}"
    try:
        transcript = resp.json().get("transcript")
    except (ValueError, AttributeError):
        transcript = None
    if not isinstance(transcript, list):
        return None, f"{api} did not answer a transcript list"
    return [t for t in transcript if isinstance(t, dict)], ""
