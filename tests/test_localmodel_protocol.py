"""The local model over a real WebSocket, both dialects, observed only on the wire."""
from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from localmodel_helpers import KEY, Events, of_type, speech_bounds_ms, speech_pcm16, speech_ulaw
from voicegw.localmodel.server import LocalModelServer
from voicegw.realtime.dialects import GA as GA_DIALECT

PREVIEW = "/openai/realtime?api-version=2024-10-01-preview&deployment=my-realtime"
GA = "/v1/realtime?model=gpt-realtime"
AZURE_GA = "/openai/v1/realtime?model=my-realtime"


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer(api_key=KEY, realtime_factor=4.0) as srv:
        yield srv


@asynccontextmanager
async def session(server: LocalModelServer, path: str, headers: dict[str, str] | None = None) -> AsyncIterator[Events]:
    if headers is None:
        headers = {"api-key": KEY} if path.startswith("/openai/") else {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(server.base_url + path, additional_headers=headers, open_timeout=5,
                                  close_timeout=2, max_size=None) as ws:
        events = Events(ws)
        first = await events.next()
        assert first["type"] == "session.created"
        yield events


async def say_text(events: Events, text: str) -> list[dict[str, Any]]:
    await events.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    await events.send({"type": "response.create"})
    return await events.until("response.done")


def audio_bytes(events: list[dict[str, Any]], kind: str) -> int:
    return sum(len(base64.b64decode(e["delta"])) for e in of_type(events, kind))


async def test_auth_and_paths_are_checked_before_upgrade(server: LocalModelServer) -> None:
    cases = [
        (PREVIEW, {"api-key": "wrong"}, 401),
        (AZURE_GA, {}, 401),
        (GA, {"Authorization": "Bearer nope"}, 401),
        ("/v2/elsewhere?model=x", {"Authorization": f"Bearer {KEY}"}, 404),
    ]
    for path, headers, status in cases:
        with pytest.raises(InvalidStatus) as caught:
            async with websockets.connect(server.base_url + path, additional_headers=headers, open_timeout=5):
                pass
        assert caught.value.response.status_code == status, path
    # Azure also takes the key as a query parameter.
    async with session(server, PREVIEW + f"&api-key={KEY}", headers={}) as events:
        assert events.seen[0]["session"]["object"] == "realtime.session"


async def test_preview_session_defaults_and_merge(server: LocalModelServer) -> None:
    async with session(server, PREVIEW) as events:
        created = events.seen[0]["session"]
        assert created["modalities"] == ["audio", "text"] and created["input_audio_format"] == "pcm16"
        assert created["turn_detection"]["type"] == "server_vad"
        assert (created["turn_detection"]["threshold"], created["turn_detection"]["prefix_padding_ms"],
                created["turn_detection"]["silence_duration_ms"]) == (0.5, 300, 200)
        assert (await events.next())["type"] == "conversation.created"
        await events.send({"type": "session.update", "session": {"instructions": "Be brief.", "voice": "echo"}})
        updated = (await events.until("session.updated"))[-1]["session"]
        assert updated["instructions"] == "Be brief." and updated["voice"] == "echo"
        assert updated["turn_detection"] == created["turn_detection"]
        await events.send({"type": "session.update", "event_id": "evt_bad",
                           "session": {"input_audio_format": "mp3"}})
        error = (await events.until("error"))[-1]["error"]
        assert error["event_id"] == "evt_bad" and error["param"] == "session.input_audio_format"
        await events.send({"type": "session.update", "session": {"temperature": 0.7}})
        again = (await events.until("session.updated"))[-1]["session"]
        assert again["input_audio_format"] == "pcm16" and again["temperature"] == 0.7


async def test_ga_session_shape_and_update(server: LocalModelServer) -> None:
    async with session(server, AZURE_GA) as events:
        created = events.seen[0]["session"]
        assert created["type"] == "realtime" and created["output_modalities"] == ["audio"]
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await events.send({"type": "session.update", "event_id": "evt_1", "session": {"instructions": "x"}})
        error = (await events.until("error"))[-1]["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("missing_required_parameter", "session.type",
                                                                      "evt_1")
        await events.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
        updated = (await events.until("session.updated"))[-1]["session"]
        assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert updated["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


async def test_preview_vad_turn_with_speech(server: LocalModelServer) -> None:
    audio = speech_pcm16("What are your opening hours?")
    onset, offset = speech_bounds_ms(audio)
    async with session(server, PREVIEW) as events:
        await events.send({"type": "session.update", "session": {"input_audio_transcription": {"model": "whisper-1"}}})
        await events.until("session.updated")
        await events.append_audio(audio, 4800)  # 100 ms pieces, sent much faster than real time
        got = await events.until("response.done", timeout=30)
        got += await events.until("conversation.item.input_audio_transcription.completed", timeout=30) \
            if not of_type(got, "conversation.item.input_audio_transcription.completed") else []
    started = of_type(got, "input_audio_buffer.speech_started")[0]
    stopped = of_type(got, "input_audio_buffer.speech_stopped")[0]
    assert onset - 300 - 100 <= started["audio_start_ms"] <= onset + 100
    assert offset <= stopped["audio_end_ms"] <= offset + 200 + 200
    committed = of_type(got, "input_audio_buffer.committed")[0]
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    user_item = of_type(got, "conversation.item.created")[0]["item"]
    assert user_item["id"] == committed["item_id"] and user_item["content"][0]["type"] == "input_audio"
    deltas = of_type(got, "response.audio.delta")
    assert deltas and all(len(base64.b64decode(d["delta"])) <= 9600 for d in deltas)
    transcript = of_type(got, "response.audio_transcript.done")[0]["transcript"]
    assert transcript and transcript == "".join(d["delta"] for d in of_type(got, "response.audio_transcript.delta"))
    done = of_type(got, "response.done")[0]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] > 0
    heard = of_type(events.seen, "conversation.item.input_audio_transcription.completed")[0]
    assert heard["item_id"] == committed["item_id"] and heard["transcript"].strip()


async def test_ga_vad_turn_in_mulaw_streams_faster_than_real_time(server: LocalModelServer) -> None:
    audio = speech_ulaw("Hello there, I need some help please.")
    async with session(server, GA) as events:
        fmt = {"type": "audio/pcmu"}
        await events.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}})
        await events.until("session.updated")
        await events.append_audio(audio, 800)
        got = await events.until("response.output_audio.delta", timeout=30)
        loop = asyncio.get_running_loop()
        first_delta_at = loop.time()
        got += await events.until("response.done", timeout=30)
        streamed_s = loop.time() - first_delta_at
    assert of_type(got, "input_audio_buffer.speech_started") and of_type(got, "input_audio_buffer.committed")
    user_added = of_type(got, "conversation.item.added")[0]["item"]
    assert user_added["role"] == "user" and any(
        e["item"]["id"] == user_added["id"] for e in of_type(got, "conversation.item.done"))
    produced_ms = audio_bytes(got, "response.output_audio.delta") / 8
    assert produced_ms > 500
    assert streamed_s < produced_ms / 1000  # paced at 4x: well under the audio's own length
    # the service's wire shape: compact JSON, `type` then `event_id` first, and audio deltas in the
    # exact layout a gateway can read without decoding JSON (voicegw's fast path)
    for text, event in zip(events.texts, events.seen):
        assert text.startswith('{"type":"' + event["type"] + '","event_id":"') and ", " not in text[:60], text[:80]
    deltas = [t for t, e in zip(events.texts, events.seen) if e["type"] == "response.output_audio.delta"]
    assert deltas and all(GA_DIALECT.audio_delta_fields(t) is not None for t in deltas)


async def test_cancel_and_cancel_with_nothing_active(server: LocalModelServer) -> None:
    async with session(server, GA) as events:
        await events.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "what are your hours"}]}})
        await events.send({"type": "response.create"})
        await events.until("response.output_audio.delta")
        await events.send({"type": "response.create", "event_id": "evt_second"})
        await events.send({"type": "response.cancel"})
        got = await events.until("response.done")
        error = of_type(got, "error")[0]["error"]
        assert (error["code"], error["event_id"]) == ("conversation_already_has_active_response", "evt_second")
        done = got[-1]["response"]
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        await events.send({"type": "response.cancel", "event_id": "evt_c"})
        error = (await events.until("error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "evt_c")


async def test_truncate_delete_and_their_errors(server: LocalModelServer) -> None:
    async with session(server, PREVIEW) as events:
        got = await say_text(events, "hello")
        item = of_type(got, "response.output_item.done")[0]["item"]
        produced = audio_bytes(got, "response.audio.delta") // 48
        full = item["content"][0]["transcript"]
        await events.send({"type": "conversation.item.truncate", "event_id": "evt_far", "item_id": item["id"],
                           "content_index": 0, "audio_end_ms": produced + 500})
        error = (await events.until("error"))[-1]["error"]
        assert error["message"] == f"Audio content of {produced}ms is already shorter than {produced + 500}ms"
        assert error["event_id"] == "evt_far"
        await events.send({"type": "conversation.item.truncate", "event_id": "evt_zero", "item_id": item["id"],
                           "content_index": 0, "audio_end_ms": 0})
        assert (await events.until("error"))[-1]["error"]["event_id"] == "evt_zero"
        await events.send({"type": "conversation.item.truncate", "event_id": "evt_unknown", "item_id": "item_nope",
                           "content_index": 0, "audio_end_ms": 100})
        assert (await events.until("error"))[-1]["error"]["event_id"] == "evt_unknown"
        await events.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                           "audio_end_ms": produced // 3})
        truncated = (await events.until("conversation.item.truncated"))[-1]
        assert truncated["audio_end_ms"] == produced // 3
        await events.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
        kept = (await events.until("conversation.item.retrieved"))[-1]["item"]["content"][0]["transcript"]
        assert full.startswith(kept) and len(kept) < len(full)
        await events.send({"type": "conversation.item.delete", "item_id": item["id"]})
        assert (await events.until("conversation.item.deleted"))[-1]["item_id"] == item["id"]
        await events.send({"type": "conversation.item.delete", "event_id": "evt_del", "item_id": item["id"]})
        assert (await events.until("error"))[-1]["error"]["event_id"] == "evt_del"


async def test_out_of_band_response_runs_beside_the_default_one(server: LocalModelServer) -> None:
    async with session(server, GA) as events:
        await events.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}})
        user_item = (await events.until("conversation.item.done"))[-1]["item"]
        await events.send({"type": "response.create"})
        await events.send({"type": "response.create", "response": {
            "conversation": "none", "metadata": {"purpose": "summary"}, "output_modalities": ["text"],
            "instructions": 'Say exactly: "Caller greeted us."',
            "input": [{"type": "item_reference", "id": user_item["id"]}]}})
        got: list[dict[str, Any]] = []
        while len(of_type(got, "response.done")) < 2:
            got += await events.until("response.done")
    assert not of_type(got, "error")
    created = of_type(got, "response.created")
    oob = next(e["response"] for e in created if e["response"]["metadata"] == {"purpose": "summary"})
    assert oob["conversation_id"] is None
    oob_done = next(e["response"] for e in of_type(got, "response.done") if e["response"]["id"] == oob["id"])
    assert oob_done["metadata"] == {"purpose": "summary"} and oob_done["status"] == "completed"
    assert oob_done["output"][0]["content"][0]["text"] == "Caller greeted us."
    oob_item = oob_done["output"][0]["id"]
    assert all(e["item"]["id"] != oob_item for e in of_type(got, "conversation.item.added"))


async def test_malformed_and_unknown_events_keep_the_session(server: LocalModelServer) -> None:
    async with session(server, PREVIEW) as events:
        await events.ws.send('{"event_id": "evt_broken", "type": "session.update", ')
        error = (await events.until("error"))[-1]["error"]
        assert (error["type"], error["event_id"]) == ("invalid_request_error", "evt_broken")
        await events.send({"type": "response.dance", "event_id": "evt_unknown"})
        error = (await events.until("error"))[-1]["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "type", "evt_unknown")
        await events.send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
        error = (await events.until("error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "evt_empty")
        await events.send({"type": "session.update", "session": {"instructions": "still here"}})
        assert (await events.until("session.updated"))[-1]["session"]["instructions"] == "still here"


async def test_keypad_digits_are_read_back(server: LocalModelServer) -> None:
    async with session(server, PREVIEW) as events:
        got = await say_text(events, "[keypad] 1 2 3")
        assert of_type(got, "response.audio_transcript.done")[0]["transcript"] == "You pressed 1 2 3."
        got = await say_text(events, "[keypad] 0")
        assert "connect you to a person" in of_type(got, "response.audio_transcript.done")[0]["transcript"]


async def test_caller_speech_interrupts_the_response(server: LocalModelServer) -> None:
    async with session(server, GA) as events:
        await events.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "[keypad] 2"}]}})
        await events.send({"type": "response.create"})
        await events.until("response.output_audio.delta")
        await events.append_audio(speech_pcm16("Stop, wait a moment.", lead_ms=0), 4800)
        got = await events.until("response.done")
    assert of_type(got, "input_audio_buffer.speech_started")
    done = got[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"


async def test_without_turn_detection_only_manual_commit_makes_a_turn(server: LocalModelServer) -> None:
    async with session(server, PREVIEW) as events:
        await events.send({"type": "session.update", "session": {"turn_detection": None}})
        assert (await events.until("session.updated"))[-1]["session"]["turn_detection"] is None
        await events.append_audio(speech_pcm16("Hello there."), 4800)
        await events.send({"type": "input_audio_buffer.commit"})
        got = await events.until("conversation.item.created")
        assert not of_type(got, "input_audio_buffer.speech_started")
        committed = of_type(got, "input_audio_buffer.committed")[0]
        assert got[-1]["item"]["id"] == committed["item_id"]
        await events.send({"type": "response.create"})
        got = await events.until("response.done", timeout=30)
        assert not of_type(got, "input_audio_buffer.speech_started")
        assert of_type(got, "response.created") and got[-1]["response"]["status"] == "completed"


async def test_semantic_vad_config_is_accepted(server: LocalModelServer) -> None:
    async with session(server, GA) as events:
        await events.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}})
        td = (await events.until("session.updated"))[-1]["session"]["audio"]["input"]["turn_detection"]
        assert td["type"] == "semantic_vad" and td["eagerness"] == "high"
        await events.append_audio(speech_pcm16("Hello there."), 4800)
        got = await events.until("response.done", timeout=30)
        assert of_type(got, "input_audio_buffer.speech_stopped") and of_type(got, "input_audio_buffer.committed")


async def test_session_closes_at_its_maximum_duration() -> None:
    async with LocalModelServer(api_key=KEY, max_session_s=0.5) as short:
        async with session(short, GA) as events:
            error = (await events.until("error", timeout=5))[-1]["error"]
            assert error["code"] == "session_expired"
            await asyncio.wait_for(events.ws.wait_closed(), 5)
