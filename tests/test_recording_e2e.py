"""Call recording end to end: a real gateway, the embedded local model and a simulated Twilio
caller whose own account of the call (what it sent, what it heard and when) is the ground truth
the recording fetched from `GET /api/calls/{sid}/recording` is held to."""
from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tests.harness import AUTH_TOKEN, LONG_GREETING, OPERATOR_TOKEN, running_gateway
from tests.speech import speech_pcm8k
from voicegw.audio.g711 import ulaw_to_pcm16
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.result import CallResult
from voicegw.sim.source import AudioSchedule

pytestmark = pytest.mark.e2e

MS = 8  # samples per millisecond
TOLERANCE_MS = 40  # how far from the truth audio may be placed
WINDOW = 20 * MS
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def agent(recording: str, greeting: str) -> str:
    return f"""
name: support
instructions: You are a friendly support agent for Acme.
greeting: "{greeting}"
audio_mode: g711_ulaw
recording: {recording}
"""


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), "<i2").astype(np.int32)


def read_wav(body: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(body), "rb") as w:
        assert (w.getframerate(), w.getsampwidth()) == (8000, 2)
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)
    return channels, data.reshape(-1, channels)


def sent_by_caller(audio: AudioSchedule, result: CallResult) -> np.ndarray:
    """Every frame the simulated caller sent, end to end (silence after its schedule)."""
    return pcm(b"".join(audio.frame(i) for i in range(result.frames_sent)))


def heard_by_caller(result: CallResult, length: int) -> np.ndarray:
    """The agent audio the simulated caller heard, at its offsets from the stream's start."""
    truth = np.zeros(length, dtype=np.int32)
    timeline = pcm(result.timeline())[:length]
    truth[:len(timeline)] = timeline
    return truth


def misplaced(src: np.ndarray, dst: np.ndarray) -> list[int]:
    """Start (ms) of each 20 ms window of sound in `src` that `dst` does not hold within 40 ms of the
    same place. Windows mostly silent (edges of speech) are skipped; 2 ms of a window may differ."""
    out = []
    reach = TOLERANCE_MS * MS
    for i in range(0, len(src) - WINDOW + 1, WINDOW):
        w = src[i:i + WINDOW]
        if np.count_nonzero(w) < WINDOW * 9 // 10:
            continue
        lo, hi = max(0, i - reach), min(len(dst), i + reach + WINDOW)
        views = sliding_window_view(dst[lo:hi], WINDOW)
        if not len(views) or ((views != w).sum(axis=1) > 2 * MS).all():
            out.append(i // MS)
    return out


def spans_of_sound(x: np.ndarray, gap_ms: int = 150) -> list[tuple[int, int]]:
    """(first, last) sample of each stretch of sound, stretches split by `gap_ms` of silence."""
    nz = np.flatnonzero(x)
    if not len(nz):
        return []
    cuts = np.flatnonzero(np.diff(nz) > gap_ms * MS)
    starts = [int(nz[0])] + [int(nz[c + 1]) for c in cuts]
    ends = [int(nz[c]) for c in cuts] + [int(nz[-1])]
    return list(zip(starts, ends))


async def fetch_recording(url: str, call_sid: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        resp = await http.get(f"/api/calls/{call_sid}/recording", headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "audio/wav"
    return resp


async def test_dual_recording_holds_the_caller_left_and_what_the_caller_heard_right() -> None:
    audio = AudioSchedule.from_segments([(2500, speech_pcm8k("Wait, stop please, I have a question."))])
    async with running_gateway(agent_yaml=agent("dual", LONG_GREETING)) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=2500, timeout_s=45)
        record = await gw.call_record(result.call_sid)
        resp = await fetch_recording(gw.url, result.call_sid)
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            path = f"/api/calls/{result.call_sid}/recording"
            anonymous = await http.get(path)
            ranged = await http.get(path, headers={**AUTH, "Range": "bytes=0-43"})
            unrecorded = await http.get("/api/calls/CA" + "0" * 32 + "/recording", headers=AUTH)
            unsafe = await http.get("/api/calls/CA..x/recording", headers=AUTH)
    # the operator API's rules: credentials, ranges, a clear 404
    assert anonymous.status_code == 401
    assert ranged.status_code == 206 and ranged.content[:4] == b"RIFF" and len(ranged.content) == 44
    assert unrecorded.status_code == 404 and unrecorded.json() == {"error": "no recording for this call"}
    assert unsafe.status_code == 404 and unsafe.json() == {"error": "no recording for this call"}
    # the call record knows
    assert record["recording"]["mode"] == "dual" and record["recording"]["channels"] == 2, record["recording"]
    assert record["recording"]["bytes"] == len(resp.content)

    channels, frames = read_wav(resp.content)
    assert channels == 2
    left, right = frames[:, 0], frames[:, 1]
    assert abs(len(frames) / MS - result.duration_ms) < 100, (len(frames) / MS, result.duration_ms)
    # left: every frame the caller sent, at its timestamp, sample for sample; nothing after
    sent = sent_by_caller(audio, result)
    assert len(left) >= len(sent) - WINDOW
    np.testing.assert_array_equal(left[:len(sent)], sent[:len(left)])
    assert not left[len(sent):].any()
    speech_at = np.flatnonzero(np.abs(left) > 500)[0] / MS
    assert abs(speech_at - (2500 + np.flatnonzero(np.abs(sent[2500 * MS:]) > 500)[0] / MS)) < TOLERANCE_MS
    # right: what the caller heard, where it heard it, and nothing it did not hear
    truth = heard_by_caller(result, len(right))
    assert misplaced(truth, right) == [], "heard by the caller, missing from the recording"
    assert misplaced(right, truth) == [], "in the recording, never heard by the caller"
    assert abs(np.flatnonzero(right)[0] - np.flatnonzero(truth)[0]) / MS < TOLERANCE_MS, "greeting onset"
    # the barge-in: the greeting stops where the caller stopped hearing it
    assert result.clears and record["barge_ins"], "no barge-in happened"
    clear_at = int(result.clears[0].at_ms * MS)
    greeting_truth = spans_of_sound(truth[:clear_at + TOLERANCE_MS * MS])
    greeting_rec = spans_of_sound(right[:clear_at + TOLERANCE_MS * MS])
    assert abs(greeting_rec[-1][1] - greeting_truth[-1][1]) / MS < TOLERANCE_MS, (greeting_rec, greeting_truth)
    after = [s for s in spans_of_sound(truth) if s[0] > clear_at]
    silent_until = after[0][0] - TOLERANCE_MS * MS if after else len(right)
    assert not right[clear_at + TOLERANCE_MS * MS:silent_until].any(), "agent audio after the clear"


async def test_mixed_recording_is_one_channel_of_both_sides() -> None:
    audio = AudioSchedule.from_segments([(4000, speech_pcm8k("Hello, what are your opening hours?"))])
    async with running_gateway(agent_yaml=agent("mixed", "Hello! How can I help you today?")) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=2000, timeout_s=40)
        record = await gw.call_record(result.call_sid)
        resp = await fetch_recording(gw.url, result.call_sid)
    assert record["recording"]["mode"] == "mixed" and record["recording"]["channels"] == 1
    channels, frames = read_wav(resp.content)
    assert channels == 1
    assert abs(len(frames) / MS - result.duration_ms) < 100, (len(frames) / MS, result.duration_ms)
    mixed = frames[:, 0]
    sent = sent_by_caller(audio, result)[:len(mixed)]
    agent_part = mixed.copy()
    agent_part[:len(sent)] -= sent  # the two sides take turns: nothing clipped
    truth = heard_by_caller(result, len(mixed))
    assert len(spans_of_sound(truth)) >= 2, "the greeting and an answer"
    assert misplaced(truth, agent_part) == [] and misplaced(agent_part, truth) == []
