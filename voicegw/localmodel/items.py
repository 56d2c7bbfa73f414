"""Validating items a client adds (conversation.item.create, response.create input[]).

Returns the item as the server stores and echoes it (id, `object`, `status`; input audio is
kept out of the echo, its transcript filled in once recognised) plus the decoded audio, if any,
so the protocol can have it transcribed.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

from voicegw.localmodel import errors
from voicegw.localmodel.conversation import Conversation, new_id
from voicegw.localmodel.dialect import ServerDialect

_ROLES = ("user", "assistant", "system")
_TYPES = ("message", "function_call", "function_call_output")


def parse_client_item(
    raw: Any, dialect: ServerDialect, conversation: Conversation | None, *, param: str = "item",
) -> tuple[dict[str, Any], bytes | None]:
    if raw is None:
        raise errors.missing(param)
    if not isinstance(raw, dict):
        raise errors.invalid_type(param, "an object", raw)
    kind = raw.get("type", "message")
    if kind not in _TYPES:
        raise errors.invalid_value(f"{param}.type", kind, _TYPES)
    item_id = raw.get("id") or new_id("item_")
    if not isinstance(item_id, str):
        raise errors.invalid_type(f"{param}.id", "a string", item_id)
    if conversation is not None and item_id in conversation:
        raise errors.ClientError("duplicate_item_id", f"Item with id '{item_id}' already exists.", f"{param}.id")
    item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": kind, "status": "completed"}
    audio: bytes | None = None
    if kind == "function_call_output":
        for key in ("call_id", "output"):
            if not isinstance(raw.get(key), str):
                raise errors.missing(f"{param}.{key}")
        item.update(call_id=raw["call_id"], output=raw["output"])
    elif kind == "function_call":
        for key in ("name", "call_id"):
            if not isinstance(raw.get(key), str):
                raise errors.missing(f"{param}.{key}")
        item.update(name=raw["name"], call_id=raw["call_id"], arguments=str(raw.get("arguments") or ""))
    else:
        role = raw.get("role")
        if role not in _ROLES:
            raise errors.invalid_value(f"{param}.role", role, _ROLES)
        content = raw.get("content")
        if not isinstance(content, list) or not content:
            raise errors.missing(f"{param}.content")
        item["role"] = role
        item["content"] = []
        for i, part in enumerate(content):
            stored, part_audio = _content(part, role, dialect, f"{param}.content[{i}]")
            item["content"].append(stored)
            audio = part_audio if part_audio is not None else audio
    return item, audio


def _content(part: Any, role: str, dialect: ServerDialect, param: str) -> tuple[dict[str, Any], bytes | None]:
    if not isinstance(part, dict):
        raise errors.invalid_type(param, "an object", part)
    kind = part.get("type")
    if role in ("user", "system"):
        allowed = ("input_text", "input_audio") if role == "user" else ("input_text",)
    else:
        allowed = (dialect.content_type(audio=False), dialect.content_type(audio=True))
    if kind not in allowed:
        raise errors.invalid_value(f"{param}.type", kind, allowed)
    if kind == "input_audio":
        if "audio" not in part:
            raise errors.missing(f"{param}.audio")
        try:
            data = base64.b64decode(part["audio"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise errors.ClientError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio data.",
                                     f"{param}.audio") from None
        return {"type": "input_audio", "transcript": part.get("transcript")}, data
    if kind in ("input_text", "text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise errors.missing(f"{param}.text")
        return {"type": kind, "text": part["text"]}, None
    return {"type": kind, "transcript": str(part.get("transcript") or "")}, None
