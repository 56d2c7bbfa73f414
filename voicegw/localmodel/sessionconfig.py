"""The effective session configuration, dialect-neutral, and the checks both dialects share.

`dialect.py` maps the preview flat shape and the GA nested shape onto this one record (and back
for session.created / session.updated), so the protocol logic never looks at wire field names.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from voicegw.localmodel import errors
from voicegw.localmodel.codec import AudioFormat

DEFAULT_INSTRUCTIONS = (
    "You are the local voicegw model, a simple rule-based assistant for testing phone calls. "
    "You speak with a synthesized voice and answer a few common requests."
)
TD_TYPES = ("server_vad", "semantic_vad")
EAGERNESS = ("low", "medium", "high", "auto")


def default_turn_detection(kind: str = "server_vad", *, ga: bool = False) -> dict[str, Any]:
    if kind == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True}
    td: dict[str, Any] = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200 if not ga else 500,
        "create_response": True,
        "interrupt_response": True,
    }
    if ga:
        td["idle_timeout_ms"] = None
    return td


@dataclass
class ServerSession:
    model: str
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: Any = "alloy"
    modalities: list[str] = field(default_factory=lambda: ["audio"])  # "audio" implies a transcript
    input_format: AudioFormat = "pcm16"
    output_format: AudioFormat = "pcm16"
    turn_detection: dict[str, Any] | None = field(default_factory=default_turn_detection)
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    temperature: float = 0.8
    max_output_tokens: int | str = "inf"
    speed: float = 1.0
    tracing: Any = None
    truncation: Any = "auto"
    include: Any = None

    def copy(self) -> "ServerSession":
        return replace(self, **{k: copy.deepcopy(v) for k, v in self.__dict__.items()})

    @property
    def speaks(self) -> bool:
        return "audio" in self.modalities


def check_turn_detection(value: Any, param: str, *, ga: bool) -> dict[str, Any] | None:
    """A turn_detection object: defaults for its type, overridden by what the client gave."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.invalid_type(param, "an object", value)
    kind = value.get("type", "server_vad")
    if kind == "none" and not ga:
        return None
    if kind not in TD_TYPES:
        raise errors.invalid_value(f"{param}.type", kind, TD_TYPES)
    td = default_turn_detection(kind, ga=ga)
    allowed = set(td) | {"type", "idle_timeout_ms"}
    for key, val in value.items():
        if key not in allowed:
            raise errors.unknown_parameter(f"{param}.{key}")
        td[key] = val
    if kind == "server_vad":
        check_number(td.get("threshold"), f"{param}.threshold", 0.0, 1.0)
        check_int(td.get("prefix_padding_ms"), f"{param}.prefix_padding_ms", 0, 60000)
        check_int(td.get("silence_duration_ms"), f"{param}.silence_duration_ms", 0, 60000)
        if td.get("idle_timeout_ms") is not None:
            check_int(td.get("idle_timeout_ms"), f"{param}.idle_timeout_ms", 5000, 30000)
    elif td.get("eagerness") not in EAGERNESS:
        raise errors.invalid_value(f"{param}.eagerness", td.get("eagerness"), EAGERNESS)
    for flag in ("create_response", "interrupt_response"):
        if not isinstance(td.get(flag), bool):
            raise errors.invalid_type(f"{param}.{flag}", "a boolean", td.get(flag))
    return td


def check_number(value: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.invalid_type(param, "a decimal", value)
    if value < lo:
        raise errors.below_min(param, lo, value)
    if value > hi:
        raise errors.above_max(param, hi, value)
    return float(value)


def check_int(value: Any, param: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.invalid_type(param, "an integer", value)
    if value < lo:
        raise errors.below_min(param, lo, value)
    if value > hi:
        raise errors.above_max(param, hi, value)
    return value


def check_max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    return check_int(value, param, 1, 4096)


def check_tools(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise errors.invalid_type(param, "an array", value)
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise errors.invalid_type(f"{param}[{i}]", "an object", tool)
        if tool.get("type", "function") != "function":
            raise errors.invalid_value(f"{param}[{i}].type", tool.get("type"), ("function",))
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise errors.missing(f"{param}[{i}].name")
        params = tool.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise errors.invalid_type(f"{param}[{i}].parameters", "an object", params)
        tools.append({
            "type": "function",
            "name": tool["name"],
            "description": str(tool.get("description") or ""),
            "parameters": params,
        })
    return tools


def check_tool_choice(value: Any, param: str) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "name": value["name"]}
    raise errors.invalid_value(param, value, ("auto", "none", "required"))


def check_transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.invalid_type(param, "an object", value)
    out = {"model": value.get("model", "whisper-1"), "language": value.get("language"),
           "prompt": value.get("prompt")}
    if not isinstance(out["model"], str) or not out["model"]:
        raise errors.invalid_type(f"{param}.model", "a string", out["model"])
    return out


def check_metadata(value: Any, param: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise errors.invalid_type(param, "an object with at most 16 string values", value)
    for key, val in value.items():
        if not isinstance(val, str) or len(str(key)) > 64 or len(val) > 512:
            raise errors.invalid_type(f"{param}.{key}", "a string", val)
    return dict(value)
