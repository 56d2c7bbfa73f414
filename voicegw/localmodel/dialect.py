"""Server-side wire dialects: the preview (beta) shapes and the GA shapes.

Preview: Azure `/openai/realtime?api-version=...&deployment=...`, or OpenAI `/v1/realtime`
with the `OpenAI-Beta: realtime=v1` header: flat session fields, `response.audio.delta`,
`conversation.item.created`, content types `audio`/`text`, plus `conversation.created`.
GA: `/v1/realtime` and Azure `/openai/v1/realtime`: `session.type="realtime"`, nested
`audio.input/output` with `{type:"audio/pcm", rate:24000}` formats, `response.output_audio.*`,
`conversation.item.added` + `conversation.item.done`, content types `output_audio`/`output_text`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from voicegw.localmodel import errors
from voicegw.localmodel.codec import FORMATS, AudioFormat
from voicegw.localmodel.sessionconfig import (
    ServerSession, check_max_tokens, check_metadata, check_number, check_tool_choice, check_tools,
    check_transcription, check_turn_detection, default_turn_detection,
)

_GA_FORMATS: dict[str, AudioFormat] = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_GA_NAMES = {v: k for k, v in _GA_FORMATS.items()}
PREVIEW_MODEL = "gpt-4o-realtime-preview-2024-12-17"
GA_MODEL = "gpt-realtime"


@dataclass(frozen=True)
class ResponseParams:
    modalities: list[str]
    instructions: str | None
    voice: Any
    output_format: AudioFormat
    tools: list[dict[str, Any]]
    tool_choice: Any
    max_output_tokens: int | str
    conversation: str  # auto | none
    metadata: dict[str, str] | None
    input: list[dict[str, Any]] | None


class ServerDialect(ABC):
    name = "base"
    ga = False
    audio_delta = transcript_delta = text_delta = audio_done = transcript_done = text_done = ""

    @abstractmethod
    def new_config(self, model: str | None) -> ServerSession:
        """See the subclasses."""

    @abstractmethod
    def render_session(self, cfg: ServerSession, session_id: str, expires_at: int) -> dict[str, Any]:
        """See the subclasses."""

    @abstractmethod
    def apply_update(self, cfg: ServerSession, patch: Any) -> ServerSession:
        """See the subclasses."""

    @abstractmethod
    def response_params(self, cfg: ServerSession, body: dict[str, Any]) -> ResponseParams:
        """See the subclasses."""

    @abstractmethod
    def content_type(self, *, audio: bool) -> str:
        """See the subclasses."""

    @abstractmethod
    def render_response_extras(self, params: ResponseParams, conversation_id: str | None) -> dict[str, Any]:
        """See the subclasses."""

    def _common_response(self, cfg: ServerSession, body: dict[str, Any], modalities: list[str],
                         voice: Any, fmt: AudioFormat) -> ResponseParams:
        conversation = body.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise errors.invalid_value("response.conversation", conversation, ("auto", "none"))
        inputs = body.get("input")
        if inputs is not None and not isinstance(inputs, list):
            raise errors.invalid_type("response.input", "an array", inputs)
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise errors.invalid_type("response.instructions", "a string", instructions)
        max_key = "max_output_tokens" if "max_output_tokens" in body else "max_response_output_tokens"
        return ResponseParams(
            modalities=modalities,
            instructions=instructions,
            voice=voice,
            output_format=fmt,
            tools=check_tools(body["tools"], "response.tools") if "tools" in body else cfg.tools,
            tool_choice=check_tool_choice(body["tool_choice"], "response.tool_choice")
            if "tool_choice" in body else cfg.tool_choice,
            max_output_tokens=check_max_tokens(body[max_key], f"response.{max_key}")
            if max_key in body else cfg.max_output_tokens,
            conversation=conversation,
            metadata=check_metadata(body.get("metadata"), "response.metadata"),
            input=inputs,
        )


class PreviewDialect(ServerDialect):
    name = "preview"
    audio_delta, audio_done = "response.audio.delta", "response.audio.done"
    transcript_delta, transcript_done = "response.audio_transcript.delta", "response.audio_transcript.done"
    text_delta, text_done = "response.text.delta", "response.text.done"
    _KEYS = {"modalities", "instructions", "voice", "input_audio_format", "output_audio_format",
             "input_audio_transcription", "turn_detection", "tools", "tool_choice", "temperature",
             "max_response_output_tokens", "input_audio_noise_reduction", "speed", "tracing", "model",
             "id", "object", "expires_at", "include", "client_secret"}

    def new_config(self, model: str | None) -> ServerSession:
        return ServerSession(model=model or PREVIEW_MODEL, modalities=["audio", "text"],
                             turn_detection=default_turn_detection(ga=False))

    def render_session(self, cfg: ServerSession, session_id: str, expires_at: int) -> dict[str, Any]:
        return {
            "id": session_id, "object": "realtime.session", "model": cfg.model, "expires_at": expires_at,
            "modalities": ["audio", "text"] if cfg.speaks else ["text"],
            "instructions": cfg.instructions, "voice": cfg.voice,
            "turn_detection": cfg.turn_detection,
            "input_audio_format": cfg.input_format, "output_audio_format": cfg.output_format,
            "input_audio_transcription": cfg.transcription,
            "input_audio_noise_reduction": cfg.noise_reduction,
            "tool_choice": cfg.tool_choice, "temperature": cfg.temperature,
            "max_response_output_tokens": cfg.max_output_tokens, "tools": cfg.tools,
            "speed": cfg.speed, "tracing": cfg.tracing,
        }

    def apply_update(self, cfg: ServerSession, patch: Any) -> ServerSession:
        if not isinstance(patch, dict):
            raise errors.invalid_type("session", "an object", patch)
        for key in patch:
            if key not in self._KEYS:
                raise errors.unknown_parameter(f"session.{key}")
        new = cfg.copy()
        if "modalities" in patch:
            new.modalities = _preview_modalities(patch["modalities"], "session.modalities")
        for key, attr in (("input_audio_format", "input_format"), ("output_audio_format", "output_format")):
            if key in patch:
                if patch[key] not in FORMATS:
                    raise errors.invalid_value(f"session.{key}", patch[key], FORMATS)
                setattr(new, attr, patch[key])
        if "turn_detection" in patch:
            new.turn_detection = check_turn_detection(patch["turn_detection"], "session.turn_detection", ga=False)
        if "input_audio_transcription" in patch:
            new.transcription = check_transcription(patch["input_audio_transcription"],
                                                    "session.input_audio_transcription")
        if "input_audio_noise_reduction" in patch:
            new.noise_reduction = patch["input_audio_noise_reduction"]
        if "temperature" in patch:
            new.temperature = check_number(patch["temperature"], "session.temperature", 0.6, 1.2)
        if "speed" in patch:
            new.speed = check_number(patch["speed"], "session.speed", 0.25, 1.5)
        if "max_response_output_tokens" in patch:
            new.max_output_tokens = check_max_tokens(patch["max_response_output_tokens"],
                                                     "session.max_response_output_tokens")
        _common_update(new, patch, "session")
        return new

    def response_params(self, cfg: ServerSession, body: dict[str, Any]) -> ResponseParams:
        modalities = (_preview_modalities(body["modalities"], "response.modalities")
                      if "modalities" in body else list(cfg.modalities))
        fmt = body.get("output_audio_format", cfg.output_format)
        if fmt not in FORMATS:
            raise errors.invalid_value("response.output_audio_format", fmt, FORMATS)
        return self._common_response(cfg, body, modalities, body.get("voice", cfg.voice), fmt)

    def content_type(self, *, audio: bool) -> str:
        return "audio" if audio else "text"

    def render_response_extras(self, params: ResponseParams, conversation_id: str | None) -> dict[str, Any]:
        return {
            "modalities": ["audio", "text"] if "audio" in params.modalities else ["text"],
            "voice": params.voice, "output_audio_format": params.output_format,
            "max_output_tokens": params.max_output_tokens, "conversation_id": conversation_id,
        }


class GADialect(ServerDialect):
    name = "ga"
    ga = True
    audio_delta, audio_done = "response.output_audio.delta", "response.output_audio.done"
    transcript_delta = "response.output_audio_transcript.delta"
    transcript_done = "response.output_audio_transcript.done"
    text_delta, text_done = "response.output_text.delta", "response.output_text.done"
    _KEYS = {"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
             "max_output_tokens", "tracing", "truncation", "prompt", "include", "id", "object", "expires_at"}

    def new_config(self, model: str | None) -> ServerSession:
        return ServerSession(model=model or GA_MODEL, modalities=["audio"],
                             turn_detection=default_turn_detection(ga=True))

    def render_session(self, cfg: ServerSession, session_id: str, expires_at: int) -> dict[str, Any]:
        return {
            "type": "realtime", "object": "realtime.session", "id": session_id, "model": cfg.model,
            "output_modalities": list(cfg.modalities), "instructions": cfg.instructions,
            "tools": cfg.tools, "tool_choice": cfg.tool_choice, "max_output_tokens": cfg.max_output_tokens,
            "tracing": cfg.tracing, "truncation": cfg.truncation, "prompt": None, "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": _ga_format(cfg.input_format), "transcription": cfg.transcription,
                    "noise_reduction": cfg.noise_reduction, "turn_detection": cfg.turn_detection,
                },
                "output": {"format": _ga_format(cfg.output_format), "voice": cfg.voice, "speed": cfg.speed},
            },
            "include": cfg.include,
        }

    def apply_update(self, cfg: ServerSession, patch: Any) -> ServerSession:
        if not isinstance(patch, dict):
            raise errors.invalid_type("session", "an object", patch)
        if "type" not in patch:
            raise errors.missing("session.type")
        if patch["type"] != "realtime":
            raise errors.invalid_value("session.type", patch["type"], ("realtime",))
        for key in patch:
            if key not in self._KEYS:
                raise errors.unknown_parameter(f"session.{key}")
        new = cfg.copy()
        if "output_modalities" in patch:
            new.modalities = _ga_modalities(patch["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in patch:
            new.max_output_tokens = check_max_tokens(patch["max_output_tokens"], "session.max_output_tokens")
        for key in ("truncation", "include"):
            if key in patch:
                setattr(new, key, patch[key])
        audio = patch.get("audio")
        if audio is not None:
            _ga_audio_update(new, audio)
        _common_update(new, patch, "session")
        return new

    def response_params(self, cfg: ServerSession, body: dict[str, Any]) -> ResponseParams:
        modalities = (_ga_modalities(body["output_modalities"], "response.output_modalities")
                      if "output_modalities" in body else list(cfg.modalities))
        out = ((body.get("audio") or {}).get("output") or {}) if isinstance(body.get("audio"), dict) else {}
        fmt = _ga_parse_format(out["format"], "response.audio.output.format") if "format" in out else cfg.output_format
        return self._common_response(cfg, body, modalities, out.get("voice", cfg.voice), fmt)

    def content_type(self, *, audio: bool) -> str:
        return "output_audio" if audio else "output_text"

    def render_response_extras(self, params: ResponseParams, conversation_id: str | None) -> dict[str, Any]:
        return {
            "conversation_id": conversation_id, "output_modalities": list(params.modalities),
            "max_output_tokens": params.max_output_tokens,
            "audio": {"output": {"format": _ga_format(params.output_format), "voice": params.voice}},
        }


def _common_update(new: ServerSession, patch: dict[str, Any], prefix: str) -> None:
    if "instructions" in patch:
        if not isinstance(patch["instructions"], str):
            raise errors.invalid_type(f"{prefix}.instructions", "a string", patch["instructions"])
        new.instructions = patch["instructions"]
    if "voice" in patch:
        new.voice = patch["voice"]
    if "tools" in patch:
        new.tools = check_tools(patch["tools"], f"{prefix}.tools")
    if "tool_choice" in patch:
        new.tool_choice = check_tool_choice(patch["tool_choice"], f"{prefix}.tool_choice")
    if "tracing" in patch:
        new.tracing = patch["tracing"]
    if isinstance(patch.get("model"), str) and patch["model"]:
        new.model = patch["model"]


def _ga_audio_update(new: ServerSession, audio: Any) -> None:
    if not isinstance(audio, dict):
        raise errors.invalid_type("session.audio", "an object", audio)
    for key in audio:
        if key not in ("input", "output"):
            raise errors.unknown_parameter(f"session.audio.{key}")
    inp = audio.get("input") or {}
    out = audio.get("output") or {}
    for key in inp:
        if key not in ("format", "transcription", "noise_reduction", "turn_detection"):
            raise errors.unknown_parameter(f"session.audio.input.{key}")
    for key in out:
        if key not in ("format", "voice", "speed"):
            raise errors.unknown_parameter(f"session.audio.output.{key}")
    if "format" in inp:
        new.input_format = _ga_parse_format(inp["format"], "session.audio.input.format")
    if "transcription" in inp:
        new.transcription = check_transcription(inp["transcription"], "session.audio.input.transcription")
    if "noise_reduction" in inp:
        new.noise_reduction = inp["noise_reduction"]
    if "turn_detection" in inp:
        new.turn_detection = check_turn_detection(inp["turn_detection"], "session.audio.input.turn_detection",
                                                  ga=True)
    if "format" in out:
        new.output_format = _ga_parse_format(out["format"], "session.audio.output.format")
    if "voice" in out:
        new.voice = out["voice"]
    if "speed" in out:
        new.speed = check_number(out["speed"], "session.audio.output.speed", 0.25, 1.5)


def _ga_format(fmt: AudioFormat) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if fmt == "pcm16" else {"type": _GA_NAMES[fmt]}


def _ga_parse_format(value: Any, param: str) -> AudioFormat:
    if not isinstance(value, dict):
        raise errors.invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind not in _GA_FORMATS:
        raise errors.invalid_value(f"{param}.type", kind, tuple(_GA_FORMATS))
    if kind == "audio/pcm" and value.get("rate", 24000) != 24000:
        raise errors.invalid_value(f"{param}.rate", value.get("rate"), ("24000",))
    return _GA_FORMATS[kind]


def _preview_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value or any(v not in ("text", "audio") for v in value):
        raise errors.invalid_value(param, value, ("text", "audio"))
    if set(value) == {"audio"}:
        raise errors.ClientError(
            "invalid_value",
            f"Invalid modalities: {value}. Supported combinations are: ['text'] and ['audio', 'text'].", param)
    return ["audio", "text"] if "audio" in value else ["text"]


def _ga_modalities(value: Any, param: str) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise errors.invalid_value(param, value, ("audio", "text"))
    return list(value)


def dialect_named(name: str) -> ServerDialect:
    return GADialect() if name == "ga" else PreviewDialect()
