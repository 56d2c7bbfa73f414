"""Wire dialect translation: seed-doc preview examples, GA equivalents, SDK round trips."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from openai.types.realtime.realtime_client_event import RealtimeClientEvent as GAClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GAServerEvent
from voicegw.realtime import events as ev
from voicegw.realtime.dialects import GA, PREVIEW, Dialect, dialect_for

try:  # the beta (preview-shaped) models are present in the installed SDK, but may go away
    from openai.types.beta.realtime.realtime_client_event import RealtimeClientEvent as BetaClientEvent
    from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaServerEvent
except ImportError:  # pragma: no cover
    BetaClientEvent = BetaServerEvent = None

GA_CLIENT = TypeAdapter(GAClientEvent)
GA_SERVER = TypeAdapter(GAServerEvent)
BETA_CLIENT = TypeAdapter(BetaClientEvent) if BetaClientEvent is not None else None
BETA_SERVER = TypeAdapter(BetaServerEvent) if BetaServerEvent is not None else None
needs_beta = pytest.mark.skipif(BETA_CLIENT is None, reason="openai SDK without beta realtime models")


def no_extra_fields(model: Any, path: str = "") -> list[str]:
    """Fields the SDK model accepted only as 'extra' (the SDK's models allow unknown keys)."""
    found: list[str] = []
    if isinstance(model, BaseModel):
        found += [f"{path}.{k}" for k in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += no_extra_fields(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, x in enumerate(model):
            found += no_extra_fields(x, f"{path}[{i}]")
    return found


# --- preview: the examples of the seed documentation ------------------------------------------

SEED_SESSION_CREATED = {
    "type": "session.created",
    "event_id": "REDACTED",
    "session": {
        "id": "REDACTED",
        "object": "realtime.session",
        "model": "gpt-4o-mini-realtime-preview-2024-12-17",
        "expires_at": 1734626723,
        "modalities": ["audio", "text"],
        "instructions": "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
        "voice": "alloy",
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200},
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "tools": [],
    },
}
SEED_RESPONSE_CREATED = {
    "type": "response.created",
    "event_id": "REDACTED",
    "response": {"object": "realtime.response", "id": "REDACTED", "status": "in_progress",
                 "status_details": None, "output": [], "usage": None},
}
SEED_RESPONSE_DONE = {
    "type": "response.done",
    "event_id": "REDACTED",
    "response": {
        "object": "realtime.response",
        "id": "REDACTED",
        "status": "completed",
        "status_details": None,
        "output": [{"id": "REDACTED", "object": "realtime.item", "type": "message", "status": "completed",
                    "role": "assistant", "content": [{"type": "audio", "transcript": "Hello! How can I assist you today?"}]}],
        "usage": {"total_tokens": 82, "input_tokens": 5, "output_tokens": 77,
                  "input_token_details": {"cached_tokens": 0, "text_tokens": 5, "audio_tokens": 0},
                  "output_token_details": {"text_tokens": 21, "audio_tokens": 56}},
    },
}


def test_seed_session_created() -> None:
    e = PREVIEW.decode(SEED_SESSION_CREATED)
    assert isinstance(e, ev.SessionStarted)
    assert e.session_id == "REDACTED"
    assert e.session["expires_at"] == 1734626723
    assert e.session["output_audio_format"] == "pcm16"


def test_seed_response_created_and_done() -> None:
    started = PREVIEW.decode(SEED_RESPONSE_CREATED)
    assert started == ev.ResponseStarted(response_id="REDACTED", metadata=None, conversation=None)
    done = PREVIEW.decode(SEED_RESPONSE_DONE)
    assert isinstance(done, ev.ResponseDone)
    assert done.status == "completed" and done.response_id == "REDACTED"
    assert done.usage is not None and done.usage["total_tokens"] == 82
    assert done.usage["output_token_details"]["audio_tokens"] == 56
    assert done.output[0]["content"][0]["transcript"] == "Hello! How can I assist you today?"
    assert done.status_details is None and done.metadata is None


R, I = "resp_1", "item_1"
ASSISTANT_ITEM = {"id": I, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []}

# The streamed sequence of the seed document, with the fields each event carries.
PREVIEW_STREAM: list[tuple[dict[str, Any], Any]] = [
    ({"type": "response.output_item.added", "event_id": "e1", "response_id": R, "output_index": 0, "item": ASSISTANT_ITEM},
     ev.OutputItemAdded(R, I, "message", "assistant", 0)),
    ({"type": "conversation.item.created", "event_id": "e2", "previous_item_id": "item_0", "item": ASSISTANT_ITEM},
     ev.ItemAdded(ASSISTANT_ITEM, "item_0")),
    ({"type": "response.content_part.added", "event_id": "e3", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "part": {"type": "audio", "transcript": ""}}, ev.Ignored("response.content_part.added")),
    ({"type": "response.audio_transcript.delta", "event_id": "e4", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "delta": "Hello"}, ev.TranscriptDelta(R, I, "Hello")),
    ({"type": "response.audio.delta", "event_id": "e5", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "delta": "AAAA//8="}, ev.AudioDelta(R, I, "AAAA//8=", 0)),
    ({"type": "response.audio.done", "event_id": "e6", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0}, ev.AudioDone(R, I)),
    ({"type": "response.audio_transcript.done", "event_id": "e7", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "transcript": "Hello! How can I assist you today?"},
     ev.TranscriptDone(R, I, "Hello! How can I assist you today?")),
    ({"type": "response.content_part.done", "event_id": "e8", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "part": {"type": "audio", "transcript": "Hello!"}}, ev.Ignored("response.content_part.done")),
    ({"type": "response.output_item.done", "event_id": "e9", "response_id": R, "output_index": 0,
      "item": {**ASSISTANT_ITEM, "status": "completed"}}, ev.OutputItemDone(R, {**ASSISTANT_ITEM, "status": "completed"})),
    ({"type": "response.text.delta", "event_id": "e10", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "delta": "Hi"}, ev.TextDelta(R, I, "Hi")),
]


@pytest.mark.parametrize("msg,expected", PREVIEW_STREAM, ids=[m["type"] for m, _ in PREVIEW_STREAM])
def test_preview_stream(msg: dict[str, Any], expected: Any) -> None:
    if BETA_SERVER is not None:  # the fixture itself is a valid preview event
        BETA_SERVER.validate_python(msg)
    assert PREVIEW.decode(msg) == expected


# --- events shaped the same in both dialects ---------------------------------------------------

SHARED: list[tuple[dict[str, Any], Any]] = [
    ({"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 1200, "item_id": "u1"},
     ev.SpeechStarted(1200, "u1")),
    ({"type": "input_audio_buffer.speech_stopped", "event_id": "e", "audio_end_ms": 2400, "item_id": "u1"},
     ev.SpeechStopped(2400, "u1")),
    ({"type": "input_audio_buffer.committed", "event_id": "e", "item_id": "u1", "previous_item_id": "a0"},
     ev.InputCommitted("u1", "a0")),
    ({"type": "input_audio_buffer.cleared", "event_id": "e"}, ev.InputCleared()),
    ({"type": "conversation.item.truncated", "event_id": "e", "item_id": "a1", "content_index": 0, "audio_end_ms": 1500},
     ev.ItemTruncated("a1", 1500, 0)),
    ({"type": "conversation.item.deleted", "event_id": "e", "item_id": "a1"}, ev.ItemDeleted("a1")),
    ({"type": "conversation.item.input_audio_transcription.completed", "event_id": "e", "item_id": "u1",
      "content_index": 0, "transcript": "I need help", "usage": {"type": "duration", "seconds": 1.5}},
     ev.InputTranscript("u1", "I need help")),
    ({"type": "conversation.item.input_audio_transcription.failed", "event_id": "e", "item_id": "u1", "content_index": 0,
      "error": {"type": "transcription_error", "code": "audio_unintelligible", "message": "could not transcribe"}},
     ev.InputTranscriptFailed("u1", "could not transcribe")),
    ({"type": "response.function_call_arguments.done", "event_id": "e", "response_id": R, "item_id": "fc1",
      "output_index": 0, "call_id": "call_1", "name": "lookup_order", "arguments": "{\"id\": 7}"},
     ev.FunctionCall(R, "fc1", "call_1", "lookup_order", "{\"id\": 7}")),
    ({"type": "error", "event_id": "e", "error": {"type": "invalid_request_error", "code": "invalid_value",
      "message": "Audio content of 900ms is already shorter than 1500ms", "param": "audio_end_ms", "event_id": "evt_7"}},
     ev.ModelError("Audio content of 900ms is already shorter than 1500ms", "invalid_value", "invalid_request_error",
                   "evt_7", "audio_end_ms")),
    ({"type": "rate_limits.updated", "event_id": "e", "rate_limits": [
        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
        {"name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.5}]},
     ev.RateLimits(({"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                    {"name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.5}))),
    ({"type": "session.updated", "event_id": "e", "session": {"id": "s1", "voice": "alloy"}},
     ev.SessionUpdated({"id": "s1", "voice": "alloy"})),
]


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
@pytest.mark.parametrize("msg,expected", SHARED, ids=[m["type"] for m, _ in SHARED])
def test_shared_events(dialect: Dialect, msg: dict[str, Any], expected: Any) -> None:
    assert dialect.decode(msg) == expected


def test_preview_function_call_without_name_falls_back_to_empty() -> None:
    msg = {"type": "response.function_call_arguments.done", "response_id": R, "item_id": "fc1", "call_id": "c", "arguments": "{}"}
    assert PREVIEW.decode(msg) == ev.FunctionCall(R, "fc1", "c", "", "{}")


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
def test_response_done_carries_metadata_status_details_and_out_of_band(dialect: Dialect) -> None:
    created = {"type": "response.created", "event_id": "e", "response": {
        "id": "r9", "object": "realtime.response", "status": "in_progress", "conversation_id": None,
        "metadata": {"purpose": "greeting"}, "output": []}}
    assert dialect.decode(created) == ev.ResponseStarted("r9", {"purpose": "greeting"}, "none")
    in_band = {**created, "response": {**created["response"], "conversation_id": "conv_1"}}
    assert dialect.decode(in_band).conversation == "auto"  # type: ignore[union-attr]
    details = {"type": "cancelled", "reason": "turn_detected"}
    done = {"type": "response.done", "event_id": "e", "response": {
        "id": "r9", "status": "cancelled", "status_details": details, "metadata": {"purpose": "greeting"},
        "output": [], "usage": {"total_tokens": 3}}}
    assert dialect.decode(done) == ev.ResponseDone("r9", "cancelled", (), {"total_tokens": 3}, {"purpose": "greeting"}, details)


# --- GA ----------------------------------------------------------------------------------------

GA_ASSISTANT = {"id": I, "object": "realtime.item", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_audio", "transcript": "Hello!"}, {"type": "output_text", "text": "Hi"}]}
NORMALISED = {**GA_ASSISTANT, "content": [{"type": "audio", "transcript": "Hello!"}, {"type": "text", "text": "Hi"}]}
GA_STREAM: list[tuple[dict[str, Any], Any]] = [
    ({"type": "session.created", "event_id": "e", "session": {"type": "realtime", "id": "sess_1", "object": "realtime.session",
      "expires_at": 1734626723, "output_modalities": ["audio"],
      "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}}, None),
    ({"type": "conversation.item.added", "event_id": "e", "previous_item_id": "u1", "item": GA_ASSISTANT},
     ev.ItemAdded(NORMALISED, "u1")),
    ({"type": "conversation.item.done", "event_id": "e", "previous_item_id": "u1", "item": GA_ASSISTANT}, ev.ItemDone(NORMALISED)),
    ({"type": "response.output_audio.delta", "event_id": "e", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "delta": "f39/fw=="}, ev.AudioDelta(R, I, "f39/fw==", 0)),
    ({"type": "response.output_audio.done", "event_id": "e", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0}, ev.AudioDone(R, I)),
    ({"type": "response.output_audio_transcript.delta", "event_id": "e", "response_id": R, "item_id": I,
      "output_index": 0, "content_index": 0, "delta": "Hel"}, ev.TranscriptDelta(R, I, "Hel")),
    ({"type": "response.output_audio_transcript.done", "event_id": "e", "response_id": R, "item_id": I,
      "output_index": 0, "content_index": 0, "transcript": "Hello!"}, ev.TranscriptDone(R, I, "Hello!")),
    ({"type": "response.output_text.delta", "event_id": "e", "response_id": R, "item_id": I, "output_index": 0,
      "content_index": 0, "delta": "Hi"}, ev.TextDelta(R, I, "Hi")),
    ({"type": "response.output_item.done", "event_id": "e", "response_id": R, "output_index": 0, "item": GA_ASSISTANT},
     ev.OutputItemDone(R, NORMALISED)),
    ({"type": "response.done", "event_id": "e", "response": {"id": R, "object": "realtime.response", "status": "completed",
      "output": [GA_ASSISTANT], "usage": {"total_tokens": 9}}},
     ev.ResponseDone(R, "completed", (NORMALISED,), {"total_tokens": 9}, None, None)),
]


@pytest.mark.parametrize("msg,expected", GA_STREAM, ids=[m["type"] for m, _ in GA_STREAM])
def test_ga_stream(msg: dict[str, Any], expected: Any) -> None:
    GA_SERVER.validate_python(msg)  # the fixture is a valid GA event per the SDK
    before = json.dumps(msg, sort_keys=True)
    got = GA.decode(msg)
    if expected is None:
        assert isinstance(got, ev.SessionStarted) and got.session_id == "sess_1" and got.session["expires_at"] == 1734626723
    else:
        assert got == expected
    assert json.dumps(msg, sort_keys=True) == before  # decoding never mutates the message


CROSS = [
    (GA, "response.audio.delta"), (GA, "response.audio_transcript.delta"), (GA, "response.text.delta"),
    (GA, "conversation.item.created"),
    (PREVIEW, "response.output_audio.delta"), (PREVIEW, "response.output_audio_transcript.done"),
    (PREVIEW, "conversation.item.added"), (PREVIEW, "conversation.item.done"),
]


@pytest.mark.parametrize("dialect,name", CROSS, ids=[f"{d.name}:{n}" for d, n in CROSS])
def test_other_dialects_names_are_ignored(dialect: Dialect, name: str) -> None:
    msg = {"type": name, "response_id": R, "item_id": I, "delta": "AA", "transcript": "x", "item": ASSISTANT_ITEM}
    assert dialect.decode(msg) == ev.Ignored(name)


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
def test_unknown_and_odd_input(dialect: Dialect) -> None:
    assert dialect.decode({"type": "response.mcp_call.in_progress"}) == ev.Ignored("response.mcp_call.in_progress")
    assert dialect.decode({"no": "type"}) == ev.Ignored("<missing type>")
    assert dialect.decode({"type": 5}) == ev.Ignored("<missing type>")
    assert dialect.decode([1, 2]) == ev.Ignored("<not an object>")  # type: ignore[arg-type]
    bad = dialect.decode({"type": "input_audio_buffer.speech_started", "audio_start_ms": "12"})
    assert isinstance(bad, ev.ModelError) and bad.code == "malformed_event"
    assert "input_audio_buffer.speech_started" in bad.message and "audio_start_ms" in bad.message
    delta = "response.audio.delta" if dialect is PREVIEW else "response.output_audio.delta"
    hot = dialect.decode({"type": delta, "response_id": R, "item_id": I, "delta": None})
    assert isinstance(hot, ev.ModelError) and "delta" in hot.message


def test_dialect_for() -> None:
    assert dialect_for("preview") is PREVIEW and dialect_for("GA") is GA
    with pytest.raises(ValueError, match="unknown Realtime dialect"):
        dialect_for("beta")


# --- encoding ----------------------------------------------------------------------------------

TOOL = ev.ToolDecl("lookup_order", "Find an order by id.", {"type": "object", "properties": {"id": {"type": "string"}}})
PHONE = ev.SessionConfig(instructions="Be brief.", voice="marin", temperature=0.7, audio_format="g711_ulaw",
                         turn_detection=ev.TurnDetection(silence_duration_ms=600, idle_timeout_ms=8000),
                         transcription_model="gpt-4o-mini-transcribe", tools=(TOOL,), max_output_tokens=512)
TOOL_WIRE = {"type": "function", "name": "lookup_order", "description": "Find an order by id.",
             "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 600,
              "create_response": True, "interrupt_response": True}


def test_preview_session_update_is_flat() -> None:
    assert PREVIEW.encode(ev.UpdateSession(PHONE), "evt_1") == {"type": "session.update", "event_id": "evt_1", "session": {
        "modalities": ["text", "audio"], "voice": "marin", "instructions": "Be brief.",
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "gpt-4o-mini-transcribe"},
        "turn_detection": SERVER_VAD,  # idle_timeout_ms is GA-only
        "tools": [TOOL_WIRE], "tool_choice": "auto", "temperature": 0.7, "max_response_output_tokens": 512}}


def test_ga_session_update_is_nested_without_temperature() -> None:
    assert GA.encode(ev.UpdateSession(PHONE)) == {"type": "session.update", "session": {
        "type": "realtime", "output_modalities": ["audio"], "instructions": "Be brief.",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {**SERVER_VAD, "idle_timeout_ms": 8000}},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "tools": [TOOL_WIRE], "tool_choice": "auto", "max_output_tokens": 512}}


@pytest.mark.parametrize("fmt,wire", [("pcm16", {"type": "audio/pcm", "rate": 24000}),
                                      ("g711_ulaw", {"type": "audio/pcmu"}), ("g711_alaw", {"type": "audio/pcma"})])
def test_ga_audio_formats(fmt: ev.AudioFormat, wire: dict[str, Any]) -> None:
    audio = GA.encode(ev.UpdateSession(ev.SessionConfig(audio_format=fmt)))["session"]["audio"]
    assert audio["input"]["format"] == wire and audio["output"]["format"] == wire
    flat = PREVIEW.encode(ev.UpdateSession(ev.SessionConfig(audio_format=fmt)))["session"]
    assert flat["input_audio_format"] == fmt and flat["output_audio_format"] == fmt


def _turn(dialect: Dialect, td: ev.TurnDetection) -> Any:
    s = dialect.encode(ev.UpdateSession(ev.SessionConfig(turn_detection=td)))["session"]
    return s["turn_detection"] if dialect is PREVIEW else s["audio"]["input"]["turn_detection"]


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
def test_turn_detection_variants(dialect: Dialect) -> None:
    semantic = ev.TurnDetection(type="semantic_vad", eagerness="high", create_response=False, interrupt_response=False)
    assert _turn(dialect, semantic) == {"type": "semantic_vad", "eagerness": "high",
                                        "create_response": False, "interrupt_response": False}
    assert _turn(dialect, ev.TurnDetection(type="semantic_vad")) == {
        "type": "semantic_vad", "create_response": True, "interrupt_response": True}
    assert _turn(dialect, ev.TurnDetection(type="none")) is None
    sparse = ev.TurnDetection(threshold=None, prefix_padding_ms=None, silence_duration_ms=250, create_response=False)
    assert _turn(dialect, sparse) == {"type": "server_vad", "silence_duration_ms": 250,
                                      "create_response": False, "interrupt_response": True}


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
def test_transcription_off_and_defaults(dialect: Dialect) -> None:
    s = dialect.encode(ev.UpdateSession(ev.SessionConfig(transcription_model=None, temperature=None)))["session"]
    if dialect is PREVIEW:
        assert s["input_audio_transcription"] is None and "temperature" not in s
        assert "max_response_output_tokens" not in s
    else:
        assert s["audio"]["input"]["transcription"] is None and "max_output_tokens" not in s
    assert "temperature" not in GA.encode(ev.UpdateSession(ev.SessionConfig(temperature=1.0)))["session"]


def test_ga_forces_a_named_tool() -> None:
    s = GA.encode(ev.UpdateSession(ev.SessionConfig(tools=(TOOL,), tool_choice="lookup_order")))["session"]
    assert s["tool_choice"] == {"type": "function", "name": "lookup_order"}
    assert GA.encode(ev.UpdateSession(ev.SessionConfig(tool_choice="required")))["session"]["tool_choice"] == "required"


GREETING = ev.CreateResponse(instructions="Say exactly: Hello! How can I help you today?")
OUT_OF_BAND = ev.CreateResponse(instructions="Summarise.", conversation="none", metadata={"purpose": "summary"},
                                input=({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},),
                                modalities=("text",))


def test_response_create_shapes() -> None:
    for d in (PREVIEW, GA):
        assert d.encode(GREETING) == {"type": "response.create",
                                      "response": {"instructions": "Say exactly: Hello! How can I help you today?"}}
        assert d.encode(ev.CreateResponse()) == {"type": "response.create"}
    common = {"instructions": "Summarise.", "conversation": "none", "metadata": {"purpose": "summary"},
              "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    assert PREVIEW.encode(OUT_OF_BAND)["response"] == {**common, "modalities": ["text"]}
    assert GA.encode(OUT_OF_BAND)["response"] == {**common, "output_modalities": ["text"]}
    both = ev.CreateResponse(modalities=("text", "audio"))
    assert PREVIEW.encode(both)["response"] == {"modalities": ["text", "audio"]}
    assert GA.encode(both)["response"] == {"output_modalities": ["audio"]}  # GA: one modality, audio has a transcript


ALL_COMMANDS: list[Any] = [
    ev.UpdateSession(PHONE),
    ev.UpdateSession(ev.SessionConfig(audio_format="pcm16", turn_detection=ev.TurnDetection(type="semantic_vad", eagerness="low"))),
    ev.UpdateSession(ev.SessionConfig(audio_format="g711_alaw", turn_detection=ev.TurnDetection(type="none"),
                                      transcription_model=None, max_output_tokens="inf")),
    ev.AppendAudio("f39/fw=="), ev.CommitAudio(), ev.ClearAudio(), GREETING, OUT_OF_BAND,
    ev.CancelResponse(), ev.CancelResponse("resp_1"), ev.TruncateItem("item_1", 1500), ev.DeleteItem("item_1"),
    ev.AddUserText("Where is my order?"), ev.AddFunctionOutput("call_1", "{\"status\": \"shipped\"}"),
]
WIRE_TYPES = ["session.update"] * 3 + ["input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
              "response.create", "response.create", "response.cancel", "response.cancel", "conversation.item.truncate",
              "conversation.item.delete", "conversation.item.create", "conversation.item.create"]


@pytest.mark.parametrize("cmd,wire_type", list(zip(ALL_COMMANDS, WIRE_TYPES)), ids=lambda x: type(x).__name__ if not isinstance(x, str) else x)
def test_ga_commands_validate_against_sdk_models(cmd: Any, wire_type: str) -> None:
    wire = GA.encode(cmd, "evt_3")
    assert wire["type"] == wire_type and wire["event_id"] == "evt_3"
    model = GA_CLIENT.validate_python(wire)
    assert model.type == wire_type
    assert no_extra_fields(model) == []
    if wire_type == "session.update":
        assert model.session.type == "realtime"  # type: ignore[union-attr]


@needs_beta
@pytest.mark.parametrize("cmd,wire_type", list(zip(ALL_COMMANDS, WIRE_TYPES)), ids=lambda x: type(x).__name__ if not isinstance(x, str) else x)
def test_preview_commands_validate_against_beta_models(cmd: Any, wire_type: str) -> None:
    wire = PREVIEW.encode(cmd, "evt_4")
    assert wire["type"] == wire_type
    model = BETA_CLIENT.validate_python(wire)  # type: ignore[union-attr]
    assert no_extra_fields(model) == []


@needs_beta
def test_ga_session_is_not_a_valid_preview_session() -> None:
    """The no-extra check is what tells the two shapes apart (the SDK models accept unknown keys)."""
    model = BETA_CLIENT.validate_python(GA.encode(ev.UpdateSession(PHONE)))  # type: ignore[union-attr]
    assert ".session.audio" in no_extra_fields(model)


@pytest.mark.parametrize("dialect", [PREVIEW, GA], ids=lambda d: d.name)
@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_encode_json_matches_encode(dialect: Dialect, cmd: Any) -> None:
    for event_id in (None, "evt_12"):
        text = dialect.encode_json(cmd, event_id)
        assert json.loads(text) == dialect.encode(cmd, event_id)
    if isinstance(cmd, ev.AppendAudio):
        assert dialect.encode_json(cmd, "evt_12") == '{"type":"input_audio_buffer.append","event_id":"evt_12","audio":"f39/fw=="}'


def test_encode_rejects_non_commands() -> None:
    with pytest.raises(TypeError, match="not a client command"):
        GA.encode(ev.InputCleared())  # type: ignore[arg-type]


# --- decode never raises -----------------------------------------------------------------------

KNOWN_TYPES = sorted({m["type"] for m, _ in PREVIEW_STREAM + SHARED + GA_STREAM} | {"response.created", "session.created"})
FIELD_NAMES = st.sampled_from(["type", "item", "item_id", "response_id", "response", "delta", "session", "error",
                               "audio_start_ms", "audio_end_ms", "content", "output", "rate_limits", "transcript",
                               "call_id", "arguments", "content_index", "conversation_id", "metadata", "id"])
json_values = st.recursive(  # nested objects use the real field names too, to reach into the handlers
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(FIELD_NAMES | st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(obj=st.dictionaries(FIELD_NAMES | st.text(max_size=6), json_values, max_size=8),
       typ=st.sampled_from(KNOWN_TYPES) | st.text(max_size=12), dialect=st.sampled_from([PREVIEW, GA]))
def test_decode_never_raises(obj: dict[str, Any], typ: str, dialect: Dialect) -> None:
    for msg in (obj, {**obj, "type": typ}):
        got = dialect.decode(msg)
        assert isinstance(got, ev.ServerEvent.__args__)  # type: ignore[attr-defined]


_ID = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_DELTA = st.one_of(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=24),
                   st.text(max_size=6))


@given(dialect=st.sampled_from([GA, PREVIEW]), rid=_ID, iid=_ID, content=st.integers(-1, 10**10),
       output=st.integers(-1, 10**10), delta=_DELTA, spaced=st.booleans(), other_type=st.booleans())
@settings(max_examples=400, deadline=None)
def test_audio_delta_fast_path_agrees_with_the_full_decode(dialect: Dialect, rid: str, iid: str, content: int,
                                                           output: int, delta: str, spaced: bool,
                                                           other_type: bool) -> None:
    """A delta in the services' exact shape is sliced, not JSON-decoded: the event must be the one
    the full decode gives, and anything the slicing would get wrong must not match it."""
    from voicegw.realtime.wire import Wire

    kind = next(t for t, h in dialect._handlers.items() if h.__name__ == "_audio_delta")
    body = {"type": "response.text.delta" if other_type else kind, "event_id": "event_1", "response_id": rid,
            "item_id": iid, "output_index": output, "content_index": content, "delta": delta}
    exact = json.dumps(body, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))
    full = dialect.decode(json.loads(exact))
    fields = dialect.audio_delta_fields(exact)
    if fields is not None:
        assert isinstance(full, ev.AudioDelta) and full.content_index == content
        assert ev.AudioDelta(*fields) == full

    async def decoded() -> ev.ServerEvent:
        return Wire(dialect, 5.0)._decoded(exact)

    import asyncio

    assert asyncio.run(decoded()) == full


def test_the_services_delta_takes_the_fast_path() -> None:
    text = ('{"type":"response.output_audio.delta","event_id":"event_CX1","response_id":"resp_CX2","item_id":'
            '"item_CX3","output_index":0,"content_index":0,"delta":"f39/fw=="}')
    assert GA.audio_delta_fields(text) == ("resp_CX2", "item_CX3", "f39/fw==", 0)
    assert PREVIEW.audio_delta_fields(text) is None  # another dialect's event name
    assert PREVIEW.audio_delta_fields(text.replace("output_audio", "audio")) is not None
    for not_it in (text[:-1], text + " ", text.replace('fw=="', 'fw=="}'), text.replace("fw==", 'f\\"w=='),
                   text.replace("fw==", "f\\/w==")):  # cut, trailing text, a quote or escape inside
        assert GA.audio_delta_fields(not_it) is None, not_it
