"""The two wire dialects of the Realtime API, translated to and from `voicegw.realtime.events`.

This is the only module that knows wire event names and session shapes:

* ``preview`` -- Azure ``/openai/realtime?api-version=2024-10-01-preview`` (and the 2024-12-17 /
  2025-04-01-preview versions): flat session fields, ``response.audio.delta``,
  ``conversation.item.created``, ``response.create`` with ``modalities``.
* ``ga`` -- ``/openai/v1/realtime?model=...`` (Azure v1 and OpenAI): ``session.type="realtime"``
  with nested ``audio.input/output``, ``response.output_audio.delta``,
  ``conversation.item.added/done``, ``response.create`` with ``output_modalities``.

Decoding rules (why: one bad frame must never take a call down):

* ``decode`` never raises. A message that is not an object, has no string ``type`` or has a type
  this dialect does not map becomes ``Ignored(type)``.
* A *known* event with missing or mistyped required fields becomes
  ``ModelError(code="malformed_event", type="voicegw.decode")`` naming the event type and field.
  Optional fields that are missing or odd fall back to their defaults.
* Item dicts are passed through as received, except that GA assistant content part types
  ``output_audio``/``output_text`` are renamed to the preview ``audio``/``text`` so one reader
  works for both dialects.
* GA ``conversation.item.created`` (kept by the SDK for compatibility) is ignored: GA servers
  announce items with ``conversation.item.added``, and mapping both would duplicate items.
* Preview ``response.function_call_arguments.done`` may lack ``name``; ``FunctionCall.name`` is
  then ``""`` and the function-call item (``OutputItemDone.item["name"]``) carries it.

Audio deltas are the hot path: the type string selects a handler through one dict lookup and the
handler builds the dataclass directly, with no schema validation library involved.
"""
from __future__ import annotations

import json
import re
from functools import partial
from typing import Any, Callable

from voicegw.compiled import fastwire as _fastwire
from voicegw.realtime.events import (
    AddAssistantText, AddFunctionCall, AddFunctionOutput, AddUserAudio, AddUserText, AppendAudio, AudioDelta, AudioDone, CancelResponse, ClearAudio,
    ClientCommand, CommitAudio, CreateResponse, DeleteItem, FunctionCall, Ignored, InputCleared,
    InputCommitted, InputTranscript, InputTranscriptFailed, ItemAdded, ItemDeleted, ItemDone,
    ItemTruncated, ModelError, OutputItemAdded, OutputItemDone, RateLimits, ResponseDone,
    ResponseStarted, ServerEvent, SessionConfig, SessionStarted, SessionUpdated, SpeechStarted,
    SpeechStopped, TextDelta, TranscriptDelta, TranscriptDone, TruncateItem, TurnDetection,
    UpdateSession,
)

Msg = dict[str, Any]
Handler = Callable[[Msg], ServerEvent]

_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
_GA_CONTENT_RENAMES = {"output_audio": "audio", "output_text": "text"}
# an audio append's JSON up to its id's number (both dialects): `append_json`, `RealtimeConnection.append_now`
APPEND_HEAD = '{"type":"input_audio_buffer.append","event_id":"aud_'


def _append_text(head: str, seq: int, audio_b64: str) -> str:
    """An audio append as JSON text (concatenation only: base64 and the id need no escaping)."""
    return head + str(seq) + '","audio":"' + audio_b64 + '"}'


def _append_message(head: str, seq: int, audio_b64: str) -> bytes:
    """`_append_text` as UTF-8 bytes, ready for the socket (the reference for
    `voicegw._fastwire.append_message`, which builds it in one buffer)."""
    return _append_text(head, seq, audio_b64).encode()


append_message: Callable[[str, int, str], bytes] = \
    _fastwire.append_message if _fastwire is not None else _append_message


class MalformedEvent(ValueError):
    """A known server event lacks a required field or has one of the wrong type."""


# --- field readers (raise MalformedEvent; `decode` turns that into ModelError) ---------------


_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


def _req(m: Msg, key: str, kind: type = str) -> Any:
    """A required field of exactly this JSON kind (`type(...) is` so that true is not an integer)."""
    v = m.get(key)
    if type(v) is not kind:
        raise MalformedEvent(f"field {key!r} must be {_KIND_NAMES[kind]}")
    return v


def _opt(m: Msg, key: str, kind: type = str) -> Any:
    """An optional field: None when missing or of another kind."""
    v = m.get(key)
    return v if type(v) is kind else None


# --- handlers shared by both dialects ---------------------------------------------------------


def _session_created(m: Msg) -> ServerEvent:
    s = _req(m, "session", dict)
    return SessionStarted(session_id=_opt(s, "id") or "", session=s)


def _input_transcript_failed(m: Msg) -> ServerEvent:
    err = _opt(m, "error", dict) or {}
    message = _opt(err, "message") or _opt(err, "code") or "input transcription failed"
    return InputTranscriptFailed(item_id=_req(m, "item_id"), message=message)


def _response_started(m: Msg) -> ServerEvent:
    r = _req(m, "response", dict)
    conversation: str | None = None
    if "conversation_id" in r:  # null means out-of-band (conversation "none")
        conversation = "none" if r["conversation_id"] is None else "auto"
    return ResponseStarted(response_id=_req(r, "id"), metadata=_opt(r, "metadata", dict), conversation=conversation)


def _error(m: Msg) -> ServerEvent:
    err = _opt(m, "error", dict)
    nested = err is not None
    if err is None:  # tolerate servers that put the fields at the top level
        err = m
    return ModelError(
        message=_opt(err, "message") or "model reported an error without a message",
        code=_opt(err, "code"),
        type=_opt(err, "type") if nested else None,
        event_id=_opt(err, "event_id") if nested else None,
        param=_opt(err, "param"),
    )


def _rate_limits(m: Msg) -> ServerEvent:
    limits = _req(m, "rate_limits", list)
    return RateLimits(limits=tuple(x for x in limits if isinstance(x, dict)))


def _audio_delta(m: Msg) -> ServerEvent:
    """The hot path: plain type checks, no helper calls."""
    d = m.get("delta")
    r = m.get("response_id")
    i = m.get("item_id")
    if type(d) is not str or type(r) is not str or type(i) is not str:
        raise MalformedEvent("fields 'delta', 'response_id' and 'item_id' must be strings")
    c = m.get("content_index", 0)
    return AudioDelta(r, i, d, c if type(c) is int else 0)


def _audio_done(m: Msg) -> ServerEvent:
    return AudioDone(response_id=_req(m, "response_id"), item_id=_req(m, "item_id"))


def _transcript_delta(m: Msg) -> ServerEvent:
    return TranscriptDelta(_req(m, "response_id"), _req(m, "item_id"), _req(m, "delta"))


def _transcript_done(m: Msg) -> ServerEvent:
    return TranscriptDone(_req(m, "response_id"), _req(m, "item_id"), _req(m, "transcript"))


def _text_delta(m: Msg) -> ServerEvent:
    return TextDelta(_req(m, "response_id"), _req(m, "item_id"), _req(m, "delta"))


_COMMON: dict[str, Handler] = {
    "session.created": _session_created,
    "session.updated": lambda m: SessionUpdated(session=_req(m, "session", dict)),
    "input_audio_buffer.speech_started": lambda m: SpeechStarted(_req(m, "audio_start_ms", int), _opt(m, "item_id")),
    "input_audio_buffer.speech_stopped": lambda m: SpeechStopped(_req(m, "audio_end_ms", int), _opt(m, "item_id")),
    "input_audio_buffer.committed": lambda m: InputCommitted(_req(m, "item_id"), _opt(m, "previous_item_id")),
    "input_audio_buffer.cleared": lambda m: InputCleared(),
    "conversation.item.truncated": lambda m: ItemTruncated(
        _req(m, "item_id"), _req(m, "audio_end_ms", int), (_opt(m, "content_index", int) or 0)
    ),
    "conversation.item.deleted": lambda m: ItemDeleted(_req(m, "item_id")),
    "conversation.item.input_audio_transcription.completed": lambda m: InputTranscript(
        _req(m, "item_id"), _req(m, "transcript")
    ),
    "conversation.item.input_audio_transcription.failed": _input_transcript_failed,
    "response.created": _response_started,
    "response.function_call_arguments.done": lambda m: FunctionCall(
        response_id=_req(m, "response_id"),
        item_id=_req(m, "item_id"),
        call_id=_req(m, "call_id"),
        name=_opt(m, "name") or "",
        arguments=_req(m, "arguments"),
    ),
    "error": _error,
    "rate_limits.updated": _rate_limits,
}


# --- item normalisation -----------------------------------------------------------------------


def _same(item: Msg) -> Msg:
    return item


def _ga_item(item: Msg) -> Msg:
    """Rename GA assistant content part types to the preview names (copying, never mutating)."""
    content = item.get("content")
    if not isinstance(content, list):
        return item
    if not any(isinstance(p, dict) and p.get("type") in _GA_CONTENT_RENAMES for p in content):
        return item
    parts = [
        {**p, "type": _GA_CONTENT_RENAMES[p["type"]]}
        if isinstance(p, dict) and p.get("type") in _GA_CONTENT_RENAMES else p
        for p in content
    ]
    return {**item, "content": parts}


def _item_handlers(norm: Callable[[Msg], Msg]) -> dict[str, Handler]:
    """Handlers that carry item dicts, parameterised by the dialect's item normaliser."""

    def item_added(m: Msg) -> ServerEvent:
        return ItemAdded(item=norm(_req(m, "item", dict)), previous_item_id=_opt(m, "previous_item_id"))

    def item_done(m: Msg) -> ServerEvent:
        return ItemDone(item=norm(_req(m, "item", dict)))

    def output_item_added(m: Msg) -> ServerEvent:
        item = _req(m, "item", dict)
        return OutputItemAdded(
            response_id=_req(m, "response_id"),
            item_id=_req(item, "id"),
            item_type=_req(item, "type"),
            role=_opt(item, "role"),
            output_index=(_opt(m, "output_index", int) or 0),
        )

    def output_item_done(m: Msg) -> ServerEvent:
        return OutputItemDone(response_id=_req(m, "response_id"), item=norm(_req(m, "item", dict)))

    def response_done(m: Msg) -> ServerEvent:
        r = _req(m, "response", dict)
        output = r.get("output")
        items = tuple(norm(x) for x in output if isinstance(x, dict)) if isinstance(output, list) else ()
        return ResponseDone(
            response_id=_req(r, "id"),
            status=_opt(r, "status") or "completed",
            output=items,
            usage=_opt(r, "usage", dict),
            metadata=_opt(r, "metadata", dict),
            status_details=_opt(r, "status_details", dict),
        )

    return {
        "conversation.item.added": item_added,
        "conversation.item.created": item_added,
        "conversation.item.done": item_done,
        "response.output_item.added": output_item_added,
        "response.output_item.done": output_item_done,
        "response.done": response_done,
    }


# --- encoding helpers -------------------------------------------------------------------------


def _turn_detection(td: TurnDetection, *, idle_timeout: bool) -> Msg | None:
    if td.type == "none":
        return None
    out: Msg = {"type": td.type}
    if td.type == "server_vad":
        for key in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
            value = getattr(td, key)
            if value is not None:
                out[key] = value
        if idle_timeout and td.idle_timeout_ms is not None:
            out["idle_timeout_ms"] = td.idle_timeout_ms
    elif td.eagerness is not None:  # semantic_vad
        out["eagerness"] = td.eagerness
    out["create_response"] = td.create_response
    out["interrupt_response"] = td.interrupt_response
    return out


def _tools(cfg: SessionConfig) -> list[Msg]:
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
        for t in cfg.tools
    ]


def _preview_session(cfg: SessionConfig) -> Msg:
    s: Msg = {
        "modalities": ["text", "audio"],
        "voice": cfg.voice,
        "instructions": cfg.instructions,
        "input_audio_format": cfg.audio_format,
        "output_audio_format": cfg.audio_format,
        "input_audio_transcription": {"model": cfg.transcription_model} if cfg.transcription_model else None,
        # idle_timeout_ms is a GA-only server_vad field: preview servers reject unknown fields
        "turn_detection": _turn_detection(cfg.turn_detection, idle_timeout=False),
        "tools": _tools(cfg),
        "tool_choice": cfg.tool_choice,
    }
    if cfg.temperature is not None:
        s["temperature"] = cfg.temperature
    if cfg.max_output_tokens is not None:
        s["max_response_output_tokens"] = cfg.max_output_tokens
    return s


_GA_FORMATS: dict[str, Msg] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


def _ga_session(cfg: SessionConfig) -> Msg:
    """Nested `audio.input/output`; GA sessions have no temperature, so it is dropped."""
    fmt = _GA_FORMATS[cfg.audio_format]
    audio_in: Msg = {
        "format": dict(fmt),
        "transcription": {"model": cfg.transcription_model} if cfg.transcription_model else None,
        "turn_detection": _turn_detection(cfg.turn_detection, idle_timeout=True),
    }
    tool_choice: Any = cfg.tool_choice
    if tool_choice not in _TOOL_CHOICE_MODES:  # a function name forces that function
        tool_choice = {"type": "function", "name": tool_choice}
    s: Msg = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": cfg.instructions,
        "audio": {"input": audio_in, "output": {"format": dict(fmt), "voice": cfg.voice}},
        "tools": _tools(cfg),
        "tool_choice": tool_choice,
    }
    if cfg.max_output_tokens is not None:
        s["max_output_tokens"] = cfg.max_output_tokens
    return s


def _preview_modalities(modalities: tuple[str, ...]) -> tuple[str, list[str]]:
    return "modalities", list(modalities)


def _ga_modalities(modalities: tuple[str, ...]) -> tuple[str, list[str]]:
    # GA answers in exactly one modality; audio always comes with its transcript.
    return "output_modalities", ["audio"] if "audio" in modalities else ["text"]


def _encode_body(cmd: ClientCommand, session: Callable[[SessionConfig], Msg], text_part: str) -> Msg:
    """Everything but `session.update`, `response.create` and the content type of assistant text
    (`text_part`: preview "text", GA "output_text") looks the same in both dialects."""
    if isinstance(cmd, AppendAudio):
        return {"type": "input_audio_buffer.append", "audio": cmd.audio_b64}
    if isinstance(cmd, UpdateSession):
        return {"type": "session.update", "session": session(cmd.config)}
    if isinstance(cmd, CommitAudio):
        return {"type": "input_audio_buffer.commit"}
    if isinstance(cmd, ClearAudio):
        return {"type": "input_audio_buffer.clear"}
    if isinstance(cmd, CancelResponse):
        return {"type": "response.cancel", **({"response_id": cmd.response_id} if cmd.response_id else {})}
    if isinstance(cmd, TruncateItem):
        return {"type": "conversation.item.truncate", "item_id": cmd.item_id,
                "content_index": cmd.content_index, "audio_end_ms": cmd.audio_end_ms}
    if isinstance(cmd, DeleteItem):
        return {"type": "conversation.item.delete", "item_id": cmd.item_id}
    if isinstance(cmd, AddUserText):
        content = [{"type": "input_text", "text": cmd.text}]
        return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": content}}
    if isinstance(cmd, AddFunctionOutput):
        item = {"type": "function_call_output", "call_id": cmd.call_id, "output": cmd.output}
        return {"type": "conversation.item.create", "item": item}
    if isinstance(cmd, AddAssistantText):
        content = [{"type": text_part, "text": cmd.text}]
        return {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": content}}
    if isinstance(cmd, AddUserAudio):
        content = [{"type": "input_audio", "audio": cmd.audio_b64}]
        return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": content}}
    if isinstance(cmd, AddFunctionCall):
        item = {"type": "function_call", "call_id": cmd.call_id, "name": cmd.name, "arguments": cmd.arguments}
        return {"type": "conversation.item.create", "item": item}
    raise TypeError(f"not a client command: {type(cmd).__name__}")


class Dialect:
    """Encodes client commands and decodes server events for one wire dialect.

    Instances are stateless and shared by all calls (`PREVIEW`, `GA`).
    """

    def __init__(
        self,
        name: str,
        handlers: dict[str, Handler],
        session: Callable[[SessionConfig], Msg],
        modalities: Callable[[tuple[str, ...]], tuple[str, list[str]]],
        text_part: str,
    ) -> None:
        self.name = name
        delta_type = next(t for t, h in handlers.items() if h is _audio_delta)
        self._delta_frame = re.compile(
            r'\{"type": ?"' + re.escape(delta_type) + r'", ?"event_id": ?"[^"\\\x00-\x1f]*", ?"response_id": ?'
            r'"([^"\\\x00-\x1f]*)", ?"item_id": ?"([^"\\\x00-\x1f]*)", ?"output_index": ?\d{1,9}, ?"content_index": ?(\d{1,9}), ?'
            r'"delta": ?"(.*)"\}', re.DOTALL).fullmatch
        # the fields of an audio delta: `pattern_fields`, read in C for ASCII text when it was built
        self.audio_delta_fields: Callable[[str], tuple[str, str, str, int] | None] = \
            self.pattern_fields if _fastwire is None else partial(_fastwire.delta_fields, delta_type, self.pattern_fields)
        self._text_part = text_part
        self._handlers = handlers
        self._session = session
        self._modalities = modalities

    def pattern_fields(self, text: str) -> tuple[str, str, str, int] | None:
        """(response_id, item_id, delta, content_index), the fields of `AudioDelta`, of this
        dialect's audio delta in the services' compact shape and key order, read off the wire text
        without JSON decoding; None for anything else, which is then decoded in full. Every delta
        of a response is one.

        One anchored pattern gives the fields; the delta is everything from its opening quote to
        the quote before the final brace, and must hold no quote and no backslash (another field,
        or an escape that would need decoding). A pattern over the delta's base64 characters cost
        2 ns a character, 2 us for a 20 ms PCM16 delta; `.*` and two `in` scans are a tenth. The
        delta's characters are not checked here: the call checks every delta's base64 (strictly,
        in 0.4 us). A raw control character, invalid JSON, reaches that check and is skipped as bad
        audio, as the full decode would skip the frame."""
        frame = self._delta_frame(text)
        if frame is None:
            return None
        response_id, item_id, content_index, delta = frame.groups()
        if '"' in delta or "\\" in delta:
            return None
        return response_id, item_id, delta, int(content_index)

    def decode(self, msg: Any) -> ServerEvent:
        """One wire message (parsed JSON) -> one internal event. Never raises."""
        if not isinstance(msg, dict):
            return Ignored(type="<not an object>")
        t = msg.get("type")
        if type(t) is not str:
            return Ignored(type="<missing type>")
        handler = self._handlers.get(t)
        if handler is None:
            return Ignored(type=t)
        try:
            return handler(msg)
        except MalformedEvent as exc:
            return ModelError(f"malformed {t} event from the model: {exc}", "malformed_event", "voicegw.decode")
        except Exception as exc:  # a handler bug must not end the call either
            return ModelError(f"could not decode {t} event: {type(exc).__name__}", "malformed_event", "voicegw.decode")

    def encode(self, cmd: ClientCommand, event_id: str | None = None) -> Msg:
        """One internal command -> one wire message (a dict ready for json.dumps)."""
        body = self._response_create(cmd) if isinstance(cmd, CreateResponse) else _encode_body(cmd, self._session, self._text_part)
        if event_id is None:
            return body
        return {"type": body.pop("type"), "event_id": event_id, **body}

    @staticmethod
    def append_json(audio_b64: str, seq: int) -> str:
        """An audio append as JSON text, with event_id `aud_<seq>`; the same in both dialects (the
        steady state writes the same message as bytes: `append_message`)."""
        return _append_text(APPEND_HEAD, seq, audio_b64)

    def encode_json(self, cmd: ClientCommand, event_id: str | None = None) -> str:
        """`encode` as JSON text; audio appends are built by concatenation (base64 needs no escaping)."""
        if type(cmd) is AppendAudio:
            if event_id is None:
                return '{"type":"input_audio_buffer.append","audio":"' + cmd.audio_b64 + '"}'
            return ('{"type":"input_audio_buffer.append","event_id":' + json.dumps(event_id)
                    + ',"audio":"' + cmd.audio_b64 + '"}')
        return json.dumps(self.encode(cmd, event_id), separators=(",", ":"), ensure_ascii=False)

    def _response_create(self, cmd: CreateResponse) -> Msg:
        """Greeting-style instructions, out-of-band `conversation`, metadata and input pass through."""
        r: Msg = {}
        if cmd.instructions is not None:
            r["instructions"] = cmd.instructions
        if cmd.conversation is not None:
            r["conversation"] = cmd.conversation
        if cmd.metadata is not None:
            r["metadata"] = dict(cmd.metadata)
        if cmd.input is not None:
            r["input"] = [dict(x) for x in cmd.input]
        if cmd.modalities is not None:
            key, value = self._modalities(cmd.modalities)
            r[key] = value
        if cmd.tools is not None:
            r["tools"] = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                          for t in cmd.tools]
        if cmd.tool_choice is not None:
            r["tool_choice"] = cmd.tool_choice if cmd.tool_choice in _TOOL_CHOICE_MODES \
                else {"type": "function", "name": cmd.tool_choice}
        return {"type": "response.create", "response": r} if r else {"type": "response.create"}

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


def _dialect_handlers(norm: Callable[[Msg], Msg], drop: tuple[str, ...], names: tuple[str, ...]) -> dict[str, Handler]:
    """Shared handlers + item handlers - `drop` + the five audio/text stream events under `names`."""
    h = {**_COMMON, **_item_handlers(norm)}
    for key in drop:
        del h[key]
    h.update(zip(names, (_audio_delta, _audio_done, _transcript_delta, _transcript_done, _text_delta)))
    return h


PREVIEW: Dialect = Dialect(
    "preview",
    _dialect_handlers(
        _same,
        drop=("conversation.item.added", "conversation.item.done"),
        names=("response.audio.delta", "response.audio.done", "response.audio_transcript.delta",
               "response.audio_transcript.done", "response.text.delta"),
    ),
    _preview_session,
    _preview_modalities,
    "text",
)
GA: Dialect = Dialect(
    "ga",
    _dialect_handlers(
        _ga_item,
        drop=("conversation.item.created",),  # see the module docstring
        names=("response.output_audio.delta", "response.output_audio.done", "response.output_audio_transcript.delta",
               "response.output_audio_transcript.done", "response.output_text.delta"),
    ),
    _ga_session,
    _ga_modalities,
    "output_text",
)
_BY_NAME = {"preview": PREVIEW, "ga": GA}


def dialect_for(name: str) -> Dialect:
    """'preview' or 'ga' (case-insensitive) -> the dialect; ValueError otherwise."""
    try:
        return _BY_NAME[name.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown Realtime dialect {name!r}: expected 'preview' or 'ga'") from None
