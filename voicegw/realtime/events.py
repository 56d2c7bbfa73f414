"""The one internal vocabulary for talking with a Realtime model.

Server events (model -> gateway) and client commands (gateway -> model) as small frozen
dataclasses. `voicegw.realtime.dialects` translates them to and from the two wire dialects
(preview and GA); nothing else in voicegw sees a wire event name.

Audio travels as base64 text exactly as it came off the wire: in g711 passthrough mode it goes
to Twilio without ever being decoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from voicegw.hotvalue import hot_value

# ---------------------------------------------------------------------------------------------
# Session configuration (dialect-neutral). The dialect module maps it to the flat preview
# session or the nested GA `audio.input/output` shape.
# ---------------------------------------------------------------------------------------------

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]


@dataclass(frozen=True)
class TurnDetection:
    type: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    threshold: float | None = 0.5
    prefix_padding_ms: int | None = 300
    silence_duration_ms: int | None = 500
    eagerness: str | None = None  # semantic_vad only: low | medium | high | auto
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None


@dataclass(frozen=True)
class ToolDecl:
    """A function tool as the model sees it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class SessionConfig:
    instructions: str = ""
    voice: str = "alloy"
    temperature: float | None = 0.8
    audio_format: AudioFormat = "pcm16"  # both directions
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    transcription_model: str | None = "whisper-1"  # None: no input transcription
    tools: tuple[ToolDecl, ...] = ()
    tool_choice: str = "auto"
    max_output_tokens: int | Literal["inf"] | None = None


# ---------------------------------------------------------------------------------------------
# Client commands (gateway -> model)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateSession:
    config: SessionConfig


@hot_value
@dataclass(frozen=True)
class AppendAudio:
    audio_b64: str


@dataclass(frozen=True)
class CommitAudio:
    pass


@dataclass(frozen=True)
class ClearAudio:
    pass


@dataclass(frozen=True)
class CreateResponse:
    instructions: str | None = None
    conversation: Literal["auto", "none"] | None = None
    metadata: dict[str, str] | None = None
    input: tuple[dict[str, Any], ...] | None = None
    modalities: tuple[str, ...] | None = None  # None: the session's
    tools: tuple[ToolDecl, ...] | None = None  # None: the session's
    tool_choice: str | None = None  # auto | none | required | a function name (forces it); None: the session's


@dataclass(frozen=True)
class CancelResponse:
    response_id: str | None = None


@dataclass(frozen=True)
class TruncateItem:
    item_id: str
    audio_end_ms: int
    content_index: int = 0


@dataclass(frozen=True)
class DeleteItem:
    item_id: str


@dataclass(frozen=True)
class AddUserText:
    text: str


@dataclass(frozen=True)
class AddFunctionOutput:
    call_id: str
    output: str


@dataclass(frozen=True)
class AddAssistantText:
    """An assistant message as text (replaying the call so far on a new session)."""

    text: str


@dataclass(frozen=True)
class AddUserAudio:
    """A user message as audio in the session's input format (a caller turn not yet transcribed)."""

    audio_b64: str


@dataclass(frozen=True)
class AddFunctionCall:
    """A function call the assistant made (replayed so its output has a call to answer)."""

    call_id: str
    name: str
    arguments: str


ClientCommand = Union[
    UpdateSession,
    AppendAudio,
    CommitAudio,
    ClearAudio,
    CreateResponse,
    CancelResponse,
    TruncateItem,
    DeleteItem,
    AddUserText,
    AddFunctionOutput,
    AddAssistantText,
    AddUserAudio,
    AddFunctionCall,
]

# ---------------------------------------------------------------------------------------------
# Server events (model -> gateway)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionStarted:
    """session.created"""

    session_id: str
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionUpdated:
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str | None = None


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str | None = None


@dataclass(frozen=True)
class InputCommitted:
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True)
class InputCleared:
    pass


@dataclass(frozen=True)
class ItemAdded:
    """conversation.item.created (preview) / conversation.item.added (GA)."""

    item: dict[str, Any]
    previous_item_id: str | None = None


@dataclass(frozen=True)
class ItemDone:
    """conversation.item.done (GA only)."""

    item: dict[str, Any]


@dataclass(frozen=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int
    content_index: int = 0


@dataclass(frozen=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True)
class InputTranscript:
    """conversation.item.input_audio_transcription.completed"""

    item_id: str
    transcript: str


@dataclass(frozen=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True)
class ResponseStarted:
    """response.created"""

    response_id: str
    metadata: dict[str, Any] | None = None
    conversation: str | None = None  # "none" for out-of-band responses when known


@dataclass(frozen=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str  # message | function_call
    role: str | None = None
    output_index: int = 0


@dataclass(frozen=True)
class OutputItemDone:
    response_id: str
    item: dict[str, Any]


@hot_value
@dataclass(frozen=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio_b64: str
    content_index: int = 0


@dataclass(frozen=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True)
class TranscriptDelta:
    """Agent speech transcript (response.audio_transcript.delta / output_audio_transcript)."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True)
class TextDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class FunctionCall:
    """response.function_call_arguments.done"""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    output: tuple[dict[str, Any], ...] = ()
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    status_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelError:
    message: str
    code: str | None = None
    type: str | None = None
    event_id: str | None = None  # the client event that caused it
    param: str | None = None


@dataclass(frozen=True)
class RateLimits:
    limits: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Ignored:
    """A server event voicegw does not act on (kept for logs and tests)."""

    type: str


ServerEvent = Union[
    SessionStarted,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    InputCommitted,
    InputCleared,
    ItemAdded,
    ItemDone,
    ItemTruncated,
    ItemDeleted,
    InputTranscript,
    InputTranscriptFailed,
    ResponseStarted,
    OutputItemAdded,
    OutputItemDone,
    AudioDelta,
    AudioDone,
    TranscriptDelta,
    TranscriptDone,
    TextDelta,
    FunctionCall,
    ResponseDone,
    ModelError,
    RateLimits,
    Ignored,
]
