"""A simulated Twilio caller: the voice webhook, then a bidirectional Media Stream.

It does what Twilio does for an inbound call: a signed ``POST /twilio/voice``, read the
``<Connect><Stream>`` TwiML, open the stream, send ``connected``/``start``, then 20 ms mu-law
frames paced on the monotonic clock, while "playing" the gateway's audio in real time and
acknowledging marks when playout reaches them (all at once on ``clear``).

Per call there is one task sending and one receiving, woken by one clock shared by every call in
the process, so a load run can hold hundreds of callers.
"""
from __future__ import annotations

import asyncio
import binascii
import functools
import json
import secrets
import ssl
from collections.abc import Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from voicegw.audio.g711 import pcm16_to_ulaw
from voicegw.sim.clock import FrameClock, shared_clock
from voicegw.sim.playout import Playout
from voicegw.sim.result import CallResult
from voicegw.sim.source import FRAME_BYTES, SILENCE_FRAME, AudioSchedule
from voicegw.sim.twiml import SimCallError, StreamTarget, parse_stream_twiml
from voicegw.telephony.twilio import sign

COMPACT = (",", ":")  # Twilio sends JSON without spaces
DTMF_DIGITS = frozenset("0123456789*#ABCD")
_MEDIA_PREFIX = '{"event":"media",'
_PAYLOAD_KEY = '"payload":"'


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs ~20 ms, too much per call."""
    return ssl.create_default_context()


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class SimulatedCaller:
    """One simulated inbound call. ``run()`` for a whole call, or ``start()`` + fine control."""

    def __init__(self, url: str, *, audio: AudioSchedule | None = None, auth_token: str | None = None,
                 forge_signature: bool = False, call_sid: str | None = None, account_sid: str | None = None,
                 from_number: str = "+15550100001", to_number: str = "+15550100002",
                 tamper_parameters: Callable[[dict[str, str]], dict[str, str]] | None = None,
                 stream_call_sid: str | None = None, clock: FrameClock | None = None,
                 http_timeout_s: float = 10.0, open_timeout_s: float = 10.0, close_timeout_s: float = 5.0,
                 webhook_url: str | None = None, direction: str = "inbound") -> None:
        self.url = url.rstrip("/")
        # the whole voice webhook URL, query included (an outbound call's carries its grant)
        self.webhook_url = webhook_url or self.url + "/twilio/voice"
        self.direction = direction
        self.start_frame: dict[str, Any] | None = None  # the `start` frame sent, once sent
        self.audio = audio or AudioSchedule.silence()
        self.auth_token = auth_token
        self.forge_signature = forge_signature
        self.call_sid = call_sid or new_sid("CA")
        self.account_sid = account_sid or new_sid("AC")
        self.stream_sid = new_sid("MZ")
        self.from_number, self.to_number = from_number, to_number
        self.tamper_parameters = tamper_parameters  # tests: drop, forge or swap the stream token
        self.stream_call_sid = stream_call_sid or self.call_sid  # tests: a stream claiming another call
        self.http_timeout_s, self.open_timeout_s, self.close_timeout_s = http_timeout_s, open_timeout_s, close_timeout_s
        self._clock = clock
        self._ws: ClientConnection | None = None
        self._t0 = 0.0
        self._seq = 0
        self._playout = Playout()
        self._speech = bytearray()  # live audio from speak(), sent before the schedule's frames
        self._tasks: list[asyncio.Task[None]] = []
        self._ending = False
        self._end_rel: float | None = None  # seconds from stream start to the end of the call
        self._done = asyncio.Event()
        self._activity = asyncio.Event()  # set on outbound media and on close: wakes waiters
        self._end_after_s: float | None = None
        self._silence_end_s: float | None = None
        self.target: StreamTarget | None = None
        self.result = CallResult(self.call_sid, self.stream_sid)

    # -- call set-up ------------------------------------------------------------------------

    async def start(self) -> None:
        """Webhook, TwiML, stream open, ``connected`` + ``start``; then audio flows."""
        if self.target is not None:
            raise SimCallError("this call was already started")
        if self._clock is None:
            self._clock = shared_clock()
        self.target = await self._webhook()
        params = dict(self.target.parameters)
        if self.tamper_parameters is not None:
            params = self.tamper_parameters(params)
        try:
            self._ws = await connect(self.target.url, open_timeout=self.open_timeout_s,
                                     close_timeout=self.close_timeout_s, compression=None, proxy=None,
                                     max_size=2 ** 22)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise SimCallError(f"media stream {self.target.url} did not open: {exc}") from None
        self._t0 = self._clock.now()
        try:
            await self._ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"},
                                           separators=COMPACT))
            # kept: what anyone who captured the stream could replay
            self.start_frame = {"event": "start", "start": {
                "accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.stream_call_sid,
                "tracks": ["inbound"], "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
            await self._send_json(self.start_frame)
        except ConnectionClosed:
            pass  # the receive task records who closed and how
        self._tasks = [asyncio.create_task(self._receive(), name=f"sim-recv-{self.call_sid}"),
                       asyncio.create_task(self._send_audio(), name=f"sim-send-{self.call_sid}")]

    async def _webhook(self) -> StreamTarget:
        webhook = self.webhook_url
        status = "ringing" if self.direction == "inbound" else "in-progress"  # outbound: it was answered
        form = {"CallSid": self.call_sid, "AccountSid": self.account_sid, "From": self.from_number,
                "To": self.to_number, "CallStatus": status, "Direction": self.direction, "ApiVersion": "2010-04-01"}
        headers = {}
        if self.auth_token:
            token = self.auth_token[::-1] + "forged" if self.forge_signature else self.auth_token
            headers["X-Twilio-Signature"] = sign(token, webhook, form)
        try:
            async with httpx.AsyncClient(timeout=self.http_timeout_s, trust_env=False, verify=_tls_context()) as http:
                resp = await http.post(webhook, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise SimCallError(f"voice webhook {webhook} unreachable: {exc!r}") from None
        self.result.webhook_status = resp.status_code
        if resp.status_code != 200:
            raise SimCallError(f"voice webhook answered HTTP {resp.status_code}: {resp.text[:200]}",
                               resp.status_code)
        return parse_stream_twiml(resp.text)

    # -- whole call ---------------------------------------------------------------------------

    async def run(self, *, duration_s: float | None = None, hangup_after_silence_ms: int | None = None,
                  dtmf: str = "", timeout_s: float = 600.0) -> CallResult:
        """Place the call and hang up after ``duration_s``, or after ``hangup_after_silence_ms`` of
        silence once the caller's audio is over and the agent has spoken, or when the gateway
        closes, or at ``timeout_s``. DTMF digits are sent once the caller's audio is over."""
        self._end_after_s = duration_s
        self._silence_end_s = None if hangup_after_silence_ms is None else hangup_after_silence_ms / 1000
        await self.start()
        if dtmf:
            self._tasks.append(asyncio.create_task(self._dial_digits(dtmf), name=f"sim-dtmf-{self.call_sid}"))
        try:
            await asyncio.wait_for(self._done.wait(), timeout_s)
        except TimeoutError:
            self.result.end_reason = "timeout"
        return await self.hang_up()

    async def _dial_digits(self, digits: str) -> None:
        clock = self._require_clock()
        while clock.now() - self._t0 < self.audio.duration_ms / 1000:
            await clock.wait_tick()
        for digit in digits:
            await self.send_dtmf(digit)
            for _ in range(15):  # 300 ms between digits
                await clock.wait_tick()

    # -- fine control -------------------------------------------------------------------------

    async def send_dtmf(self, digit: str) -> None:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        await self._send_json({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})
        self.result.dtmf_sent += digit

    def speak(self, pcm16_8k: bytes) -> None:
        """Say this now (PCM16 8 kHz), ahead of the schedule: a reactive barge-in."""
        self._speech += pcm16_to_ulaw(pcm16_8k[: len(pcm16_8k) & ~1])

    async def wait_for_audio(self, timeout: float, min_frames: int = 1) -> int:
        """Wait until at least ``min_frames`` outbound media frames arrived; returns the count."""
        async with asyncio.timeout(timeout):
            while len(self.result.media_times_ms) < min_frames:
                if self._done.is_set():
                    raise SimCallError(f"call ended after {len(self.result.media_times_ms)} media frames")
                self._activity.clear()
                await self._activity.wait()
        return len(self.result.media_times_ms)

    async def wait_for_silence(self, ms: float, timeout: float) -> None:
        """Wait until the caller has heard no agent audio for ``ms`` (counted from stream start
        when the agent has not spoken yet)."""
        clock = self._require_clock()
        async with asyncio.timeout(timeout):
            while clock.now() - self._t0 - (self._playout.audio_end_s or 0.0) < ms / 1000:
                if self._done.is_set():
                    raise SimCallError("call ended while waiting for silence")
                await clock.wait_tick()

    async def wait_until(self, at_s: float, timeout: float) -> None:
        """Wait until ``at_s`` seconds into the stream, on the clock that paces the audio."""
        clock = self._require_clock()
        async with asyncio.timeout(timeout):
            while clock.now() - self._t0 < at_s:
                if self._done.is_set():
                    raise SimCallError("call ended while waiting")
                await clock.wait_tick()

    async def wait_closed(self, timeout: float) -> CallResult:
        """Wait for the call to end (the gateway closing the stream, or a run() end condition)."""
        await asyncio.wait_for(self._done.wait(), timeout)
        return await self.hang_up()

    async def hang_up(self) -> CallResult:
        """Send ``stop``, close the stream and return the result (idempotent)."""
        ws = self._ws
        if not self._ending:
            self._mark_end()
            self.result.end_reason = self.result.end_reason or "hangup"
            if ws is not None and self.result.closed_by is None:
                self.result.closed_by = "caller"
                try:
                    async with asyncio.timeout(self.close_timeout_s):
                        await self._send_json({"event": "stop", "stop": {
                            "accountSid": self.account_sid, "callSid": self.stream_call_sid}})
                        self.result.stop_sent = True
                        await ws.close()
                except (ConnectionClosed, TimeoutError, OSError):
                    pass
        await self._stop_tasks()
        if ws is not None:
            self._finish()
        self._done.set()
        return self.result

    # -- the two tasks ------------------------------------------------------------------------

    async def _send_audio(self) -> None:
        """20 ms frames due at t0 + n*20 ms; late wake-ups catch up, so there is no drift."""
        ws, clock, audio, result = self._ws, self._require_clock(), self.audio, self.result
        assert ws is not None
        sid_tail = '"},"streamSid":"' + self.stream_sid + '"}'
        sent = 0
        try:
            while not self._ending:
                now = clock.now()
                rel = now - self._t0
                due = int(rel / 0.02) + 1
                while sent < due:
                    self._seq += 1
                    await ws.send('{"event":"media","sequenceNumber":"' + str(self._seq)
                                  + '","media":{"track":"inbound","chunk":"' + str(sent + 1)
                                  + '","timestamp":"' + str(sent * 20) + '","payload":"'
                                  + self._next_payload(audio, sent) + sid_tail)
                    sent += 1
                    result.frames_sent = sent
                for name in self._playout.advance(rel):
                    await self._ack(name)
                if self._should_end(rel):
                    self._done.set()
                    return
                await clock.wait_tick()
        except ConnectionClosed:
            pass

    def _next_payload(self, audio: AudioSchedule, index: int) -> str:
        if self._speech:
            chunk = bytes(self._speech[:FRAME_BYTES])
            del self._speech[:FRAME_BYTES]
            chunk += SILENCE_FRAME[len(chunk):]
            return binascii.b2a_base64(chunk, newline=False).decode("ascii")
        return audio.frame_b64(index)

    def _should_end(self, rel: float) -> bool:
        if self._end_after_s is not None and rel >= self._end_after_s:
            self.result.end_reason = "duration"
            return True
        if self._silence_end_s is None or rel < self.audio.duration_ms / 1000 or self._speech:
            return False
        agent_end = self._playout.audio_end_s
        if agent_end is None:  # the agent has not spoken yet: keep waiting
            return False
        if rel - max(agent_end, self.audio.duration_ms / 1000) >= self._silence_end_s:
            self.result.end_reason = "silence"
            return True
        return False

    async def _receive(self) -> None:
        ws, clock, playout, result = self._ws, self._require_clock(), self._playout, self.result
        assert ws is not None
        times = result.media_times_ms
        try:
            async for text in ws:
                rel = clock.now() - self._t0
                if not isinstance(text, str):
                    result.bad_frames += 1
                    continue
                payload = _fast_media_payload(text)
                if payload is None:
                    payload = await self._control(text, rel)
                    if payload is None:
                        continue
                try:
                    playout.audio(rel, binascii.a2b_base64(payload))
                except binascii.Error:
                    result.bad_frames += 1
                    continue
                if result.first_audio_ms is None:
                    result.first_audio_ms = rel * 1000
                times.append(rel * 1000)
                self._activity.set()
        except ConnectionClosed:
            pass
        finally:
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
            if not self._ending:
                result.closed_by = "gateway"
                result.end_reason = "gateway-closed"
                self._mark_end()
            self._done.set()
            self._activity.set()

    async def _control(self, text: str, rel: float) -> str | None:
        """A non-fast-path frame: returns a media payload, or handles mark/clear and returns None."""
        try:
            msg = json.loads(text)
            event = msg["event"]
            if event == "media":
                return str(msg["media"]["payload"])
            if event == "mark":
                name = str(msg["mark"]["name"])
                self.result.marks_sent += 1
                for ack in self._playout.mark(rel, name):
                    await self._ack(ack)
                return None
            if event == "clear":
                for ack in self._playout.clear(rel):
                    await self._ack(ack)
                self.result.clears = self._playout.clears
                return None
        except (ValueError, KeyError, TypeError):
            pass
        self.result.bad_frames += 1
        return None

    # -- helpers ------------------------------------------------------------------------------

    async def _ack(self, name: str) -> None:
        self.result.marks_acked += 1
        await self._send_json({"event": "mark", "mark": {"name": name}})

    async def _send_json(self, body: dict[str, object]) -> None:
        assert self._ws is not None
        self._seq += 1
        await self._ws.send(json.dumps({"event": body["event"], "sequenceNumber": str(self._seq),
                                        "streamSid": self.stream_sid, **body}, separators=COMPACT))

    def _require_clock(self) -> FrameClock:
        if self._clock is None:
            raise SimCallError("the call has not started")
        return self._clock

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.close_timeout_s)

    def _mark_end(self) -> None:
        """The call ends now: audio stops here, whatever the close handshake takes."""
        self._ending = True
        if self._clock is not None and self._ws is not None:
            self._end_rel = self._clock.now() - self._t0

    def _finish(self) -> None:
        rel = self._end_rel if self._end_rel is not None else self._require_clock().now() - self._t0
        self._playout.finish(rel)
        r = self.result
        r.heard = bytes(self._playout.heard)
        r.heard_spans = self._playout.heard_spans
        r.clears = list(self._playout.clears)
        r.duration_ms = rel * 1000
        if r.close_code is None and self._ws is not None:
            r.close_code, r.close_reason = self._ws.close_code, self._ws.close_reason or ""


def _fast_media_payload(text: str) -> str | None:
    """The payload of an outbound media frame without a JSON parse (the common case).

    Only for frames shaped like voicegw's own (``{"event":"media",...``); base64 holds no quote,
    so the payload ends at the next one. Anything else goes through json.loads.
    """
    if not text.startswith(_MEDIA_PREFIX):
        return None
    i = text.find(_PAYLOAD_KEY)
    if i < 0:
        return None
    i += len(_PAYLOAD_KEY)
    j = text.find('"', i)
    return text[i:j] if j > i else None
