"""`/twilio/media` on picows (voicegw.telephony.fastmedia): the stream is served without the ASGI
layer, frames reach the call synchronously, and the protocol edge cases still hold -- fragmented
messages, binary frames, other WebSocket paths, a caller that stops reading."""
from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from tests.harness import AUTH_TOKEN, SUPPORT_AGENT, running_gateway
from voicegw.call.writer import DirectWriter, Writer, WriterFailed
from voicegw.sim.twiml import parse_stream_twiml
from voicegw.compiled import fastwire
from voicegw.telephony.fastmedia import PicoMediaSocket, text_frames, text_frames_py
from voicegw.telephony.twilio import sign

pytestmark = pytest.mark.e2e
CALL_SID = "CA" + "7" * 32


async def _stream_target(base: str) -> tuple[str, dict[str, str]]:
    form = {"CallSid": CALL_SID, "AccountSid": "AC" + "1" * 32, "From": "+15550100001", "To": "+15550100002"}
    url = base + "/twilio/voice"
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(url, data=form, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, form)})
    target = parse_stream_twiml(resp.text)
    return target.url, target.parameters


def _start(params: dict[str, str]) -> str:
    return json.dumps({"event": "start", "start": {
        "accountSid": "AC" + "1" * 32, "streamSid": "MZ1", "callSid": CALL_SID, "tracks": ["inbound"],
        "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def _media(i: int) -> str:
    payload = base64.b64encode(b"\xff" * 160).decode()
    return json.dumps({"event": "media", "sequenceNumber": str(i + 2), "streamSid": "MZ1",
                       "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i), "payload": payload}})


async def test_a_stream_on_picows_takes_fragmented_and_binary_frames_and_the_call_goes_on() -> None:
    async with running_gateway(agent_yaml=SUPPORT_AGENT) as gw:
        url, params = await _stream_target(gw.url)
        start = _start(params)
        async with connect(url, compression=None, proxy=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            third = len(start) // 3
            await ws.send([start[:third], start[third:2 * third], start[2 * third:]])  # one message, 3 frames
            for i in range(10):
                await ws.send(_media(i))
            await ws.send(b"\x00\x01 not twilio")  # a bad frame: logged, skipped
            got = []
            async with asyncio.timeout(10):
                while len(got) < 5:  # the greeting's audio comes back on the same socket
                    msg = json.loads(await ws.recv())
                    if msg["event"] == "media":
                        got.append(msg)
            call = gw.gateway.calls[CALL_SID]  # attached: audio came back
            assert isinstance(call.ws, PicoMediaSocket)  # served by picows, not the ASGI path
            assert isinstance(call._caller, DirectWriter)
            for i in range(10, 60):
                await ws.send(_media(i))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": CALL_SID}}))
        record = await gw.call_record(CALL_SID)
    assert record["end_reason"] == "caller_hangup"
    bad = [e for e in record["errors"] if e.get("code") == "bad_frame"]
    assert len(bad) == 1 and "binary frame" in bad[0]["message"], record["errors"]
    assert record["transcript"][0]["role"] == "agent"  # the greeting was said on this call


async def test_a_stream_that_goes_silent_ends_the_call_after_the_frame_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames flowing for longer than the timeout keep the call up; silence (the socket still open)
    ends it as telephony_timeout, one check interval (1 s) or so after the timeout."""
    from voicegw.telephony import endpoints

    monkeypatch.setattr(endpoints, "FRAME_TIMEOUT_S", 2.0)
    async with running_gateway(agent_yaml=SUPPORT_AGENT) as gw:
        url, params = await _stream_target(gw.url)
        start = _start(params)
        async with connect(url, compression=None, proxy=None) as ws:
            reader = asyncio.ensure_future(_drain(ws))
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(start)
            loop = asyncio.get_running_loop()
            for i in range(175):  # 3.5 s of real-time frames: longer than the timeout
                await ws.send(_media(i))
                await asyncio.sleep(0.02)
            assert CALL_SID in gw.gateway.calls  # still up: frames kept coming past the timeout
            silent_from = loop.time()
            record = await gw.call_record(CALL_SID, timeout=10)
            ended_after = loop.time() - silent_from
            reader.cancel()
    assert record["end_reason"] == "telephony_timeout", record["end_reason"]
    assert 2.0 <= ended_after <= 4.5, ended_after


async def _drain(ws: object) -> None:
    async for _ in ws:  # type: ignore[attr-defined]
        pass


async def test_other_websocket_paths_stay_on_uvicorns_implementation() -> None:
    async with running_gateway(agent_yaml=SUPPORT_AGENT) as gw:
        ws_base = gw.url.replace("http://", "ws://")
        with pytest.raises(InvalidStatus) as info:  # no such route: refused at the handshake
            async with connect(ws_base + "/twilio/mediax", proxy=None):
                pass
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with connect(ws_base + "/console/live", proxy=None):
                pass


async def test_a_direct_writer_fails_once_when_the_peer_stops_reading() -> None:
    sent: list[str] = []
    backlog = [0]
    failures: list[Exception] = []
    writer: DirectWriter[str] = DirectWriter(sent.append, lambda: backlog[0], failures.append, name="t",
                                             max_buffered=1000)
    assert writer.put("a") and sent == ["a"]
    backlog[0] = 5000  # the kernel stopped taking bytes
    assert not writer.put("b") and not writer.put("c")
    await asyncio.sleep(0)  # the failure is reported on the next loop turn, outside the interpreter
    assert len(failures) == 1 and isinstance(failures[0], WriterFailed)
    assert sent == ["a", "b"]  # written before the backlog was seen; nothing after


async def test_a_direct_writer_holds_an_action_lists_frames_and_writes_them_at_once() -> None:
    singles: list[str] = []
    batches: list[list[str]] = []
    failures: list[Exception] = []
    writer: DirectWriter[str] = DirectWriter(singles.append, lambda: 0, failures.append, name="t",
                                             send_many=lambda items: batches.append(list(items)))
    assert writer.hold() and not writer.hold()  # one hold at a time: the inner one holds nothing
    assert writer.put("media") and writer.put("mark")
    assert singles == [] and batches == []  # held
    assert writer.release() and batches == [["media", "mark"]] and singles == []
    assert writer.put("next") and singles == ["next"]  # released: written at once again
    assert writer.hold() and writer.put("alone") and writer.release()
    assert singles == ["next", "alone"] and len(batches) == 1  # one frame needs no batch
    assert writer.hold() and writer.release() and singles == ["next", "alone"]  # nothing held, nothing written
    plain: DirectWriter[str] = DirectWriter(singles.append, lambda: 0, failures.append, name="t")
    assert not plain.hold()  # no way to write several at once: each is written as it is put
    writer.close()
    assert not writer.hold()


async def test_a_held_batch_that_fails_to_go_out_fails_the_writer_once() -> None:
    failures: list[Exception] = []

    def broken(items: list[str]) -> None:
        raise ConnectionError("gone")

    writer: DirectWriter[str] = DirectWriter(lambda item: None, lambda: 0, failures.append, name="t", send_many=broken)
    assert writer.hold() and writer.put("a") and writer.put("b")
    assert not writer.release()
    assert not writer.put("c") and not writer.hold()
    await asyncio.sleep(0)  # reported on the next loop turn, as a failed `put` is
    assert len(failures) == 1 and isinstance(failures[0], ConnectionError)
    backlog = [0]
    stuck: DirectWriter[str] = DirectWriter(lambda item: None, lambda: backlog[0], failures.append, name="t",
                                            max_buffered=100, send_many=lambda items: backlog.__setitem__(0, 500))
    assert stuck.hold() and stuck.put("a") and stuck.put("b")
    assert not stuck.release()  # written, but the peer is not reading: past max_buffered
    await asyncio.sleep(0)
    assert len(failures) == 2 and isinstance(failures[1], WriterFailed)


async def test_a_direct_writer_writes_several_items_put_at_once_in_one_write() -> None:
    """`put_many`: a piece of audio and its mark in one write; within a hold they join what is held."""
    singles: list[str] = []
    batches: list[list[str]] = []
    failures: list[Exception] = []
    writer: DirectWriter[str] = DirectWriter(singles.append, lambda: 0, failures.append, name="t",
                                             send_many=lambda items: batches.append(list(items)))
    assert writer.put_many(["media", "mark"]) and batches == [["media", "mark"]] and singles == []
    assert writer.put_many(["alone"]) and singles == ["alone"]  # one item needs no batch
    assert writer.hold() and writer.put("a") and writer.put_many(["b", "c"]) and writer.put("d") and writer.release()
    assert batches[-1] == ["a", "b", "c", "d"] and len(batches) == 2
    plain: DirectWriter[str] = DirectWriter(singles.append, lambda: 0, failures.append, name="t")
    assert plain.put_many(["x", "y"]) and singles == ["alone", "x", "y"]  # no batches: one by one, in order
    backlog = [0]
    stuck: DirectWriter[str] = DirectWriter(lambda item: None, lambda: backlog[0], failures.append, name="t",
                                            max_buffered=100, send_many=lambda items: backlog.__setitem__(0, 500))
    assert not stuck.put_many(["a", "b"])  # written, but the peer is not reading
    assert not stuck.put_many(["c", "d"]) and not stuck.put("e")  # failed: nothing more
    await asyncio.sleep(0)
    assert len(failures) == 1 and isinstance(failures[0], WriterFailed)
    writer.close()
    assert not writer.put_many(["z", "z"]) and len(batches) == 2


async def test_a_queued_writer_puts_several_items_in_order() -> None:
    sent: list[str] = []
    done = asyncio.Event()

    async def send(item: str) -> None:
        sent.append(item)
        if len(sent) == 3:
            done.set()

    writer: Writer[str] = Writer(send, lambda exc: None, name="t")
    assert writer.put("a") and writer.put_many(["b", "c"])
    await asyncio.wait_for(done.wait(), 5)
    assert sent == ["a", "b", "c"]
    writer.close()
    assert not writer.put_many(["d"])


@pytest.mark.parametrize("text", ["x" * n for n in (0, 1, 125, 126, 127, 300, 65535, 65536, 70_000)] + ["é" * 63, "é" * 64])
@pytest.mark.parametrize("build", ["python", "c"])
def test_text_frames_are_the_websocket_frames_websockets_writes(text: str, build: str) -> None:
    if build == "c":
        assert fastwire is not None, "voicegw._fastwire was not built (a C compiler is needed at install)"
        frames = fastwire.text_frames
    else:
        frames = text_frames_py
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    assert frames([text]) == expected
    assert frames([text, "mark", text]) == expected + Frame(Opcode.TEXT, b"mark").serialize(mask=False) + expected
    assert frames([]) == b""


def test_the_gateway_writes_frames_with_the_c_build() -> None:
    assert text_frames is fastwire.text_frames
    with pytest.raises(TypeError):
        fastwire.text_frames(("a tuple",))
    with pytest.raises(TypeError):
        fastwire.text_frames(["ok", b"bytes"])


async def test_frames_written_at_once_reach_the_caller_as_separate_messages_in_order() -> None:
    async with running_gateway(agent_yaml=SUPPORT_AGENT) as gw:
        url, params = await _stream_target(gw.url)
        async with connect(url, compression=None, proxy=None, max_size=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(_start(params))
            events: list[str] = []
            async with asyncio.timeout(10):
                while "mark" not in events:  # the greeting: its audio, and a mark after each chunk
                    events.append(json.loads(await ws.recv())["event"])
                    call = gw.gateway.calls.get(CALL_SID)
            assert call is not None and isinstance(call.ws, PicoMediaSocket)
            assert events[0] == "media" and events.index("mark") > 0
            sent = [json.dumps({"event": "probe", "n": n, "pad": "x" * size}) for n, size in enumerate([1, 200, 70_000])]
            call.ws.send_many(sent)
            got = []
            async with asyncio.timeout(10):
                while len(got) < len(sent):
                    text = await ws.recv()
                    if json.loads(text)["event"] == "probe":
                        got.append(text)
            assert got == sent
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": CALL_SID}}))
        record = await gw.call_record(CALL_SID)
    assert record["end_reason"] == "caller_hangup"
