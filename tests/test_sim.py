"""The simulated Twilio caller, against a tiny fake gateway on 127.0.0.1 (Starlette + uvicorn)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import struct
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.cli import add_parser, run_call
from voicegw.sim.playout import Playout
from voicegw.sim.source import SILENCE_B64, AudioSchedule
from voicegw.sim.twiml import SimCallError, parse_stream_twiml
from voicegw.sim.wav import read_wav_pcm16_8k, write_mulaw_wav
from voicegw.telephony.base import MarkPlayed
from voicegw.telephony.tokens import (
    StreamTokenError,
    mint_stream_token,
    verify_stream_token,
)
from voicegw.telephony.twilio import (
    TwilioMediaCodec,
    build_connect_twiml,
    public_request_url,
    validate_signature,
)

SECRET = b"k" * 32
codec = TwilioMediaCodec()


def tone(ms: int, freq: float = 440.0, rate: int = 8000, amp: float = 0.5) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (np.sin(2 * math.pi * freq * t) * amp * 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------
# The fake gateway
# ---------------------------------------------------------------------------------------------

class Stream:
    """One media stream at the fake gateway: every frame it got, with arrival times."""

    def __init__(self, ws: WebSocket, start: dict) -> None:
        self.ws = ws
        self.start = start
        self.sid: str = start["streamSid"]
        self.frames: list[tuple[float, dict]] = []
        self.texts: list[str] = []  # each frame as it came on the wire
        self.changed = asyncio.Condition()

    async def read_all(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await self.ws.receive_text()
                self.texts.append(text)
                msg = json.loads(text)
                async with self.changed:
                    self.frames.append((time.monotonic(), msg))
                    self.changed.notify_all()

    def of(self, event: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.frames if m["event"] == event]

    def acks(self) -> list[str]:
        return [m["mark"]["name"] for _, m in self.of("mark")]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(predicate)

    async def play(self, ms: int, byte: int = 0x00) -> None:
        import base64

        await self.ws.send_text(codec.media(self.sid, base64.b64encode(bytes([byte]) * (ms * 8)).decode()))

    async def mark(self, name: str) -> None:
        await self.ws.send_text(codec.mark(self.sid, name))


Script = Callable[[Stream], Awaitable[None]]


class FakeGateway:
    def __init__(self, script: Script, auth_token: str | None = None) -> None:
        self.script = script
        self.auth_token = auth_token
        self.webhooks: list[dict[str, str]] = []
        self.streams: list[Stream] = []
        self.refused: list[str] = []
        self.transcripts: dict[str, list[dict[str, str]]] = {}
        self.opened = asyncio.Event()
        self.app = Starlette(routes=[Route("/twilio/voice", self.voice, methods=["POST"]),
                                     WebSocketRoute("/media", self.media),
                                     Route("/api/calls/{sid}", self.call_api)])

    async def voice(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.webhooks.append(form)
        if self.auth_token:
            url = public_request_url(str(request.url), request.headers, None)
            if not validate_signature(self.auth_token, url, form, request.headers.get("X-Twilio-Signature")):
                return Response("bad signature", status_code=403)
        token = mint_stream_token(SECRET, form["CallSid"], 60, time.time())
        xml = build_connect_twiml(f"ws://{request.url.netloc}/media", {"token": token, "agent": "test"})
        return Response(xml, media_type="text/xml")

    async def media(self, ws: WebSocket) -> None:
        await ws.accept()
        connected = json.loads(await ws.receive_text())
        assert connected["event"] == "connected"
        start = json.loads(await ws.receive_text())
        try:
            verify_stream_token(SECRET, start["start"]["customParameters"].get("token"),
                                start["start"]["callSid"], time.time())
        except StreamTokenError as exc:
            self.refused.append(exc.reason)
            await ws.close(code=1008, reason="stream not authorised")
            return
        stream = Stream(ws, start)
        self.streams.append(stream)
        self.opened.set()
        reader = asyncio.create_task(stream.read_all())
        try:
            await self.script(stream)
            await reader
        finally:
            reader.cancel()

    async def stream(self, timeout: float = 5.0) -> Stream:
        """The first media stream, once the gateway has accepted its start frame."""
        await asyncio.wait_for(self.opened.wait(), timeout)
        return self.streams[0]

    async def call_api(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if sid not in self.transcripts:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"call_sid": sid, "transcript": self.transcripts[sid]})


@contextlib.asynccontextmanager
async def serve(gateway: FakeGateway) -> AsyncIterator[str]:
    """uvicorn on a socket bound here first, so the port is known and connects queue until it runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(gateway.app, log_level="warning", lifespan="off",
                                           ws="websockets-sansio"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def listen_only(stream: Stream) -> None:
    """A gateway that never speaks."""


# ---------------------------------------------------------------------------------------------
# Integration
# ---------------------------------------------------------------------------------------------

async def test_signed_webhook_start_frame_and_pacing() -> None:
    gw = FakeGateway(listen_only, auth_token="secret-token")
    async with serve(gw) as url:
        caller = SimulatedCaller(url, auth_token="secret-token", from_number="+15550109999")
        result = await caller.run(duration_s=1.0, timeout_s=10)
        stream = await gw.stream()
        await stream.until(lambda: bool(stream.of("stop")))
    assert gw.webhooks[0]["From"] == "+15550109999" and gw.webhooks[0]["CallStatus"] == "ringing"
    start = stream.start
    assert start["start"]["callSid"] == result.call_sid and start["streamSid"] == result.stream_sid
    assert start["start"]["customParameters"]["agent"] == "test"
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = stream.of("media")
    assert len(media) == result.frames_sent
    chunks = [int(m["media"]["chunk"]) for _, m in media]
    assert chunks == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for _, m in media] == [20 * (c - 1) for c in chunks]
    assert all(m["media"]["payload"] == SILENCE_B64 and m["media"]["track"] == "inbound" for _, m in media)
    # paced, not bursted: frame n never arrives before n * 20 ms after the first (1 ms of slack)
    t_first = media[0][0]
    assert all(t - t_first >= i * 0.020 - 0.001 for i, (t, _) in enumerate(media))
    # and not drifting: over the call, the count matches the elapsed time (a few frames of slack)
    expected = result.duration_ms / 20
    assert expected - 5 <= result.frames_sent <= expected + 2
    stop = stream.of("stop")[0][1]
    assert stop["stop"]["callSid"] == result.call_sid
    assert result.stop_sent and result.closed_by == "caller" and result.close_code == 1000
    assert result.end_reason == "duration"


async def test_forged_signature_is_refused() -> None:
    gw = FakeGateway(listen_only, auth_token="secret-token")
    async with serve(gw) as url:
        with pytest.raises(SimCallError) as err:
            await SimulatedCaller(url, auth_token="secret-token", forge_signature=True).run(duration_s=1)
    assert err.value.status == 403


@pytest.mark.parametrize("tamper", ["drop", "forge", "other_call"])
async def test_stream_without_valid_token_records_1008(tamper: str) -> None:
    gw = FakeGateway(listen_only)
    async with serve(gw) as url:
        kwargs: dict = {}
        if tamper == "drop":
            kwargs["tamper_parameters"] = lambda p: {k: v for k, v in p.items() if k != "token"}
        elif tamper == "forge":
            kwargs["tamper_parameters"] = lambda p: {**p, "token": mint_stream_token(b"x" * 32, "CA1", 60, time.time())}
        else:
            kwargs["stream_call_sid"] = "CA" + "9" * 32
        result = await SimulatedCaller(url, **kwargs).run(duration_s=5, timeout_s=10)
    assert result.close_code == 1008 and result.closed_by == "gateway"
    assert result.end_reason == "gateway-closed" and not result.stop_sent
    assert gw.refused and not gw.streams


async def test_schedule_places_speech_at_its_offset_and_dtmf() -> None:
    gw = FakeGateway(listen_only)
    async with serve(gw) as url:
        caller = SimulatedCaller(url, audio=AudioSchedule.from_segments([(200, tone(100))]))
        await caller.start()
        stream = await gw.stream()
        await stream.until(lambda: len(stream.of("media")) >= 20)
        await caller.send_dtmf("7")
        await stream.until(lambda: bool(stream.of("dtmf")))
        await caller.hang_up()
    speech = [int(m["media"]["chunk"]) for _, m in stream.of("media") if m["media"]["payload"] != SILENCE_B64]
    assert speech == [11, 12, 13, 14, 15]  # 200..300 ms
    assert stream.of("dtmf")[0][1]["dtmf"]["digit"] == "7"


async def test_marks_acked_when_playout_reaches_them() -> None:
    sent_at: list[float] = []

    async def script(stream: Stream) -> None:
        sent_at.append(time.monotonic())
        await stream.play(400)
        await stream.mark("a")
        await stream.play(200)
        await stream.mark("b")

    gw = FakeGateway(script)
    async with serve(gw) as url:
        caller = SimulatedCaller(url)
        await caller.start()
        stream = await gw.stream()
        await stream.until(lambda: len(stream.acks()) == 2)
        result = await caller.hang_up()
    (ta, a), (tb, b) = stream.of("mark")
    assert (a["mark"]["name"], b["mark"]["name"]) == ("a", "b")
    assert a["streamSid"] == result.stream_sid and int(b["sequenceNumber"]) > int(a["sequenceNumber"])
    assert ta - sent_at[0] >= 0.400 and tb - sent_at[0] >= 0.600  # never before the audio played
    assert ta - sent_at[0] < 0.400 + 0.5  # and not long after (generous: loaded CI machines)
    assert result.marks_sent == 2 and result.marks_acked == 2
    assert result.heard_ms == 600 and result.first_audio_ms is not None
    assert len(result.media_times_ms) == 2
    # Twilio's wire shape: compact JSON, so a gateway's exact-shape fast paths see what Twilio sends
    codec = TwilioMediaCodec()
    assert all(", " not in t[:40] and '": ' not in t[:40] for t in stream.texts)
    marks = [t for t in stream.texts if t.startswith('{"event":"mark"')]
    assert len(marks) == 2 and [codec.parse(t) for t in marks] == [MarkPlayed("a"), MarkPlayed("b")]
    media = [t for t in stream.texts if t.startswith('{"event":"media"')]
    assert media and all(codec.media_payload(t) is not None for t in media)


async def test_clear_acks_all_pending_marks_and_records_the_cut() -> None:
    async def script(stream: Stream) -> None:
        for i in range(1, 11):  # ten 200 ms segments, far faster than real time
            await stream.play(200, byte=i)
            await stream.mark(f"m{i}")
        await stream.until(lambda: "m3" in stream.acks())
        await stream.ws.send_text(codec.clear(stream.sid))
        await stream.until(lambda: len(stream.acks()) == 10)
        await stream.play(100, byte=0x55)
        await stream.mark("after")

    gw = FakeGateway(script)
    async with serve(gw) as url:
        caller = SimulatedCaller(url)
        await caller.start()
        stream = await gw.stream()
        await stream.until(lambda: "after" in stream.acks())
        result = await caller.hang_up()
    assert stream.acks() == [f"m{i}" for i in range(1, 11)] + ["after"]
    [cut] = result.clears
    assert cut.last_played_mark == "m3" and cut.next_mark == "m4"
    assert cut.marks_returned == tuple(f"m{i}" for i in range(4, 11))
    assert 0 <= cut.segment_played_ms < 200
    assert cut.heard_ms == pytest.approx(600 + cut.segment_played_ms, abs=0.125)
    assert cut.dropped_ms == pytest.approx(2000 - cut.heard_ms, abs=0.125)
    heard = result.heard
    assert heard[:4800] == bytes([1]) * 1600 + bytes([2]) * 1600 + bytes([3]) * 1600
    cut_bytes = int(cut.segment_played_ms * 8)
    assert heard[4800:4800 + cut_bytes] == bytes([4]) * cut_bytes
    assert heard[4800 + cut_bytes:] == bytes([0x55]) * 800
    assert result.marks_acked == 11 and result.marks_sent == 11


async def test_hangup_after_silence_following_agent_audio(tmp_path: Path) -> None:
    async def script(stream: Stream) -> None:
        await stream.play(300, byte=0x10)

    gw = FakeGateway(script)
    async with serve(gw) as url:
        result = await SimulatedCaller(url).run(hangup_after_silence_ms=200, timeout_s=10)
    assert result.end_reason == "silence" and result.heard_ms == 300
    assert result.duration_ms >= 300 + 200
    timeline = result.timeline()
    offset = int(result.heard_spans[0].offset_ms * 8)
    assert timeline[offset:] == bytes([0x10]) * 2400 and set(timeline[:offset]) <= {0xFF}


async def test_reactive_speech_after_greeting() -> None:
    async def script(stream: Stream) -> None:
        await stream.play(200, byte=0x30)
        await stream.mark("greeting")

    gw = FakeGateway(script)
    async with serve(gw) as url:
        caller = SimulatedCaller(url)
        await caller.start()
        stream = await gw.stream()
        assert await caller.wait_for_audio(timeout=5) == 1
        with pytest.raises(TimeoutError):
            await caller.wait_for_audio(timeout=0.2, min_frames=2)  # the gateway sends no more
        await caller.wait_for_silence(100, timeout=5)
        assert caller.result.marks_acked == 1  # silence only after playout reached the mark
        spoke_from = len(stream.of("media"))
        caller.speak(tone(60))
        await stream.until(lambda: len(stream.of("media")) >= spoke_from + 5)
        result = await caller.hang_up()
    payloads = [m["media"]["payload"] for _, m in stream.of("media")]
    assert all(p == SILENCE_B64 for p in payloads[:spoke_from])
    spoken = [i for i, p in enumerate(payloads) if p != SILENCE_B64]
    assert len(spoken) == 3 and spoken == list(range(spoken[0], spoken[0] + 3))  # 60 ms, back to back
    assert result.heard_ms == 200 and result.first_audio_ms is not None


async def test_cli_writes_reply_and_prints_transcript(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def script(stream: Stream) -> None:
        if len(gw.streams) == 1:  # the second call has no record: the API answers 404
            gw.transcripts[stream.start["start"]["callSid"]] = [
                {"role": "assistant", "text": "Hello, how can I help?"}, {"role": "user", "text": "Hi"}]
        await stream.play(200, byte=0x20)
        await stream.mark("g")

    gw = FakeGateway(script)
    src = tmp_path / "in.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.repeat(np.frombuffer(tone(300, rate=16000), dtype="<i2"), 2).tobytes())
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "reply.wav"
    async with serve(gw) as url:
        args = parser.parse_args(["call", "--url", url, "--audio", str(src), "--out", str(out),
                                  "--auth-token", "", "--duration", "10", "--hangup-after-silence", "0.3"])
        assert await run_call(args) == 0
        printed = capsys.readouterr().out
        assert "assistant: Hello, how can I help?" in printed
        args = parser.parse_args(["call", "--url", url, "--duration", "0.5", "--hangup-after-silence", "0"])
        assert await run_call(args) == 0
        printed = capsys.readouterr().out
        assert "transcript not available" in printed and "HTTP 404" in printed and "marks" in printed
    with wave.open(str(out), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() >= 1600


# ---------------------------------------------------------------------------------------------
# Pieces, deterministically
# ---------------------------------------------------------------------------------------------

def test_playout_accounting_with_fake_time() -> None:
    p = Playout()
    assert p.mark(0.0, "idle") == ["idle"]  # nothing queued: reached at once
    p.audio(1.0, b"\x01" * 800)  # 100 ms from t=1.0
    assert p.mark(1.0, "a") == []
    p.audio(1.0, b"\x02" * 1600)  # 200 ms from t=1.1
    assert p.mark(1.0, "b") == []
    assert p.advance(1.099) == [] and p.advance(1.1) == ["a"]
    assert p.clear(1.15) == ["b"]
    [cut] = p.clears
    assert (cut.last_played_mark, cut.next_mark) == ("a", "b")
    assert cut.segment_played_ms == pytest.approx(50) and cut.heard_ms == pytest.approx(150)
    assert cut.dropped_ms == pytest.approx(150) and cut.marks_returned == ("b",)
    p.audio(2.0, b"\x03" * 80)  # after a gap: a new span at 2.0 s
    p.finish(2.005)  # the call ends half-way through it
    assert bytes(p.heard) == b"\x01" * 800 + b"\x02" * 400 + b"\x03" * 40
    assert [(s.offset_ms, s.length) for s in p.heard_spans] == [(pytest.approx(1000), 1200), (pytest.approx(2000), 40)]
    assert not p.playing(2.005)


def test_playout_clear_when_idle_and_underrun() -> None:
    p = Playout()
    p.audio(0.0, b"\x01" * 80)  # 10 ms, then the gateway is late
    p.audio(0.5, b"\x02" * 80)
    assert p.mark(0.5, "x") == []
    assert p.advance(0.51) == ["x"]
    assert p.clear(0.6) == []
    assert p.clears[0].next_mark is None and p.clears[0].segment_played_ms == 0
    assert len(p.heard_spans) == 2


def test_schedule_frames() -> None:
    s = AudioSchedule.from_segments([(40, tone(30)), (0, tone(10))])
    assert s.duration_ms == 70 and s.segments == ((0, 10), (40, 70))
    assert s.frame(0)[:80] != b"\xff" * 80 and s.frame(0)[80:] == b"\xff" * 80
    assert s.frame(3)[:80] != b"\xff" * 80 and s.frame(3)[80:] == b"\xff" * 80  # 60..70 ms, padded
    assert s.frame_b64(4) == SILENCE_B64 and s.frame_b64(10_000) == SILENCE_B64
    assert AudioSchedule.silence().frame_b64(0) == SILENCE_B64


def test_twiml_must_connect_a_stream() -> None:
    target = parse_stream_twiml(build_connect_twiml("wss://gw/twilio/media", {"token": "t"}))
    assert target.url == "wss://gw/twilio/media" and target.parameters == {"token": "t"}
    with pytest.raises(SimCallError, match="no <Connect><Stream>"):
        parse_stream_twiml("<Response><Say>Sorry</Say><Hangup/></Response>")
    with pytest.raises(SimCallError, match="did not answer TwiML"):
        parse_stream_twiml("<html>oops")


@pytest.mark.parametrize("width, channels, rate", [(1, 1, 8000), (2, 2, 44100), (3, 1, 16000), (4, 2, 48000)])
def test_wav_any_format_to_8k_mono(tmp_path: Path, width: int, channels: int, rate: int) -> None:
    n = rate // 2  # 0.5 s of 440 Hz
    x = np.sin(2 * math.pi * 440 * np.arange(n) / rate) * 0.5
    if width == 1:
        raw = (x * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(struct.pack("<i", int(v * (1 << 23)))[:3] for v in x)
    else:
        raw = (x * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes()
    if channels == 2:
        raw = b"".join(raw[i:i + width] * 2 for i in range(0, len(raw), width))
    path = tmp_path / "in.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(raw)
    pcm = np.frombuffer(read_wav_pcm16_8k(path), dtype="<i2").astype(float)
    assert abs(len(pcm) - 4000) <= 2
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 8000 / len(pcm) - 440) < 5
    assert 0.3 < np.max(np.abs(pcm)) / 32768 < 0.6
    out = tmp_path / "out.wav"
    write_mulaw_wav(out, b"\xff" * 800)
    assert read_wav_pcm16_8k(out) == b"\x00\x00" * 800


async def test_frame_clocks_with_other_epochs_tick_in_their_own_phase() -> None:
    """Callers spread over phases (as calls that started at different times): a clock never wakes
    its waiters before its own tick, epoch + n * period, whatever another clock's phase is."""
    from voicegw.sim.clock import FrameClock

    base = time.monotonic()
    period = 0.02
    clocks = [(FrameClock(period, epoch), epoch) for epoch in (base, base + period / 2)]
    for clock, epoch in clocks:
        for _ in range(3):
            n = await clock.wait_tick()
            assert time.monotonic() >= epoch + n * period
