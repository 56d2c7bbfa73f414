"""A light simulated Twilio caller for the density run (hundreds per process).

It does what `voicegw.sim.SimulatedCaller` does on the wire -- a signed voice webhook, the TwiML's
``<Connect><Stream>``, ``connected`` + ``start`` with the stream token, 20 ms mu-law media frames
paced on the monotonic clock, marks acknowledged when playout reaches them, everything pending
returned on ``clear``, ``stop`` at the end -- but on a bare asyncio Protocol (`bench.wsraw`) and
the shared `Pacer`, so its own cost stays at a few microseconds per message. Its playout is
reduced to when each chunk finishes playing, so marks come back on time, and at each clear how
much agent audio had been heard (the barge-in benchmark's ground truth).

It records the send time of every frame and the arrival time of every media message, which the
density benchmark pairs with the model peer's times.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from array import array
from collections import deque
from urllib.parse import urlsplit

import httpx

from bench.pacer import Pacer
from bench.wsraw import OP_TEXT, WsEndpoint, accept_key, frame
from voicegw.sim.twiml import SimCallError, StreamTarget, parse_stream_twiml
from voicegw.telephony.twilio import sign

_clock = time.monotonic


class LoadCaller(WsEndpoint):
    masked = True

    def __init__(self, pacer: Pacer, payloads: list[str]) -> None:
        super().__init__(_clock)
        self.pacer = pacer
        self.payloads = payloads
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.send_times = array("d")  # write time of each media frame
        self.media_times = array("d")  # arrival of each outbound media message
        self.clear_log: list[tuple[float, float]] = []  # per clear: its arrival, the agent audio heard by then (ms)
        self._audio_s = 0.0  # agent audio received, less what clears dropped unplayed
        self.other = 0  # messages that were neither media, mark nor clear
        self.opened = asyncio.get_running_loop().create_future()
        self._key = ""
        self._path = "/"
        self._host = ""
        self._seq = 0
        self._busy_until = 0.0
        self._marks: deque[tuple[float, bytes]] = deque()
        sid = self.stream_sid.encode()
        self._media_prefix = b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
        self._mark_prefix = b'{"event":"mark","streamSid":"' + sid + b'","mark":{"name":'
        self._tail = '"},"streamSid":"' + self.stream_sid + '"}'

    # -- set-up --------------------------------------------------------------------------------
    async def webhook(self, http: httpx.AsyncClient, base_url: str, auth_token: str) -> StreamTarget:
        url = base_url.rstrip("/") + "/twilio/voice"
        form = {"CallSid": self.call_sid, "AccountSid": self.account_sid, "From": "+15550100001",
                "To": "+15550100002", "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        resp = await http.post(url, data=form, headers={"X-Twilio-Signature": sign(auth_token, url, form)})
        if resp.status_code != 200:
            raise SimCallError(f"voice webhook answered HTTP {resp.status_code}: {resp.text[:200]}")
        return parse_stream_twiml(resp.text)

    async def connect(self, target: StreamTarget, timeout: float, slot: int | None = None) -> None:
        """Open the media stream and start sending frames in `slot` of the pacer."""
        parts = urlsplit(target.url)
        self._host, self._path = parts.netloc, parts.path or "/"
        self._params = target.parameters
        self._slot = slot
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: self, parts.hostname or "127.0.0.1", parts.port or 80)
            await self.opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"  # type: ignore[attr-defined]
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def handshake(self, head: bytes) -> bool:
        text = head.decode("latin-1")
        if not text.startswith("HTTP/1.1 101") or accept_key(self._key) not in text:
            if not self.opened.done():
                self.opened.set_exception(SimCallError(f"media stream refused: {text.splitlines()[0]!r}"))
            self.close_transport()
            return False
        return True

    def on_open(self) -> None:
        self.send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        self._send_json({"event": "start", "start": {
            "accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": self._params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.pacer.add(self, self._tick, self._slot)
        if not self.opened.done():
            self.opened.set_result(None)

    def on_closed(self) -> None:
        self.pacer.remove(self)
        if not self.opened.done():
            self.opened.set_exception(SimCallError("media stream closed during the handshake"))

    # -- every 20 ms ---------------------------------------------------------------------------
    def _tick(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        n = len(self.send_times)
        self._seq += 1
        text = ('{"event":"media","sequenceNumber":"' + str(self._seq) + '","media":{"track":"inbound","chunk":"'
                + str(n + 1) + '","timestamp":"' + str(n * 20) + '","payload":"'
                + self.payloads[n % len(self.payloads)] + self._tail)
        data = frame(text.encode(), OP_TEXT, True)
        self.send_times.append(_clock())
        transport.write(data)
        marks = self._marks
        if marks:
            now = _clock()
            while marks and marks[0][0] <= now:
                self._ack(marks.popleft()[1])

    # -- from the gateway ----------------------------------------------------------------------
    def on_text(self, payload: bytes, key: bytes | None, now: float) -> None:
        if payload.startswith(self._media_prefix):
            self.media_times.append(now)
            b64 = len(payload) - len(self._media_prefix) - 3
            pad = (payload[-4] == 61) + (payload[-5] == 61)  # '='
            start = self._busy_until if self._busy_until > now else now
            seconds = (b64 * 3 // 4 - pad) / 8000
            self._busy_until = start + seconds
            self._audio_s += seconds
        elif payload.startswith(self._mark_prefix):
            name = payload[len(self._mark_prefix):-2]
            if self._busy_until <= now:
                self._ack(name)
            else:
                self._marks.append((self._busy_until, name))
        elif payload.startswith(b'{"event":"clear"'):
            if self._busy_until > now:
                self._audio_s -= self._busy_until - now
            self.clear_log.append((now, self._audio_s * 1000))
            self._busy_until = now
            while self._marks:
                self._ack(self._marks.popleft()[1])
        else:
            self.other += 1

    def _ack(self, name_json: bytes) -> None:
        self._seq += 1
        self.send_text('{"event":"mark","sequenceNumber":"' + str(self._seq) + '","streamSid":"' + self.stream_sid
                       + '","mark":{"name":' + name_json.decode() + "}}")

    def _send_json(self, body: dict[str, object]) -> None:
        self._seq += 1
        self.send_text(json.dumps({"event": body["event"], "sequenceNumber": str(self._seq),
                                   "streamSid": self.stream_sid, **body}))

    # -- the end -------------------------------------------------------------------------------
    def hang_up(self) -> None:
        """``stop`` then a close frame, as Twilio does when the caller hangs up."""
        self.pacer.remove(self)
        if self.open:
            self._send_json({"event": "stop", "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            self.close()

    async def wait_closed(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.closed
        except TimeoutError:
            self.close_transport()
