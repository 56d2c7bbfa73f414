"""One model response, from `response.created` to `response.done`.

A run decides its words (brain), announces its output item, waits for synthesized audio, then
streams it in ~200 ms deltas paced at `realtime_factor` x real time (the real service is also
faster than real time, which is what makes barge-in truncation necessary), interleaving the
transcript words that fall into each chunk. Pure state: the protocol feeds it the clock and the
synthesis result; it emits server events through the callbacks it was given.
"""
from __future__ import annotations

import json
import math
import re
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicegw.localmodel.brain import Reply, Speech, ToolCall
from voicegw.localmodel.codec import bytes_per_ms
from voicegw.localmodel.conversation import Conversation, SpokenAudio, new_id
from voicegw.localmodel.dialect import ResponseParams, ServerDialect

CHUNK_MS = 200
Emit = Callable[[dict[str, Any]], None]


@dataclass
class RunHost:
    """What a run needs from its session."""

    dialect: ServerDialect
    conversation: Conversation
    emit: Emit
    realtime_factor: float


class ResponseRun:
    def __init__(self, host: RunHost, params: ResponseParams, input_tokens: int) -> None:
        self.host = host
        self.params = params
        self.id = new_id("resp_")
        self.in_conversation = params.conversation == "auto"
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.input_tokens = input_tokens
        self.text = ""
        self.item: dict[str, Any] | None = None
        self.awaiting_audio = False
        self._audio = b""
        self._sent = 0
        self._chunk_bytes = 0
        self._started = 0.0
        self._spoken = SpokenAudio()
        self._word_index = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.status == "in_progress"

    def announce(self) -> None:
        self.host.emit({"type": "response.created", "response": self._render()})

    def start(self, reply: Reply) -> bool:
        """Begin producing `reply`. True when the run needs synthesized audio for `self.text`."""
        if isinstance(reply, ToolCall):
            self._function_call(reply)
            return False
        assert isinstance(reply, Speech)
        self.text = reply.text
        audio = "audio" in self.params.modalities
        ctype = self.host.dialect.content_type(audio=audio)
        item: dict[str, Any] = {
            "id": new_id("item_"), "object": "realtime.item", "type": "message", "status": "in_progress",
            "role": "assistant", "content": []}
        self._add_output(item)
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        item["content"].append({"type": ctype, "transcript": ""} if audio else {"type": ctype, "text": ""})
        self.host.emit(self._content_event("response.content_part.added", part=part))
        if audio:
            self.awaiting_audio = True
            return True
        for word in _words(self.text):
            self.host.emit(self._content_event(self.host.dialect.text_delta, delta=word))
        self.host.emit(self._content_event(self.host.dialect.text_done, text=self.text))
        item["content"][0]["text"] = self.text
        self.host.emit(self._content_event("response.content_part.done", part={"type": "text", "text": self.text}))
        self._finish_item("completed")
        self._done("completed")
        return False

    def audio_ready(self, audio: bytes, now: float) -> None:
        if not self.active or self.item is None:
            return
        self.awaiting_audio = False
        self._audio = audio
        fmt = self.params.output_format
        self._chunk_bytes = max(2, int(CHUNK_MS * bytes_per_ms(fmt)))
        total_ms = len(audio) / bytes_per_ms(fmt)
        words = _words(self.text)
        chars = max(1, sum(len(w) for w in words))
        offset = 0
        for word in words:
            self._spoken.words.append((total_ms * offset / chars, word))
            offset += len(word)
        if self.in_conversation:
            self.host.conversation.audio[self.item["id"]] = self._spoken
        self._started = now
        self.tick(now)

    def next_deadline(self) -> float | None:
        if not self.active or self.awaiting_audio or self.item is None or not self._audio:
            return None
        return self._due(self._sent // self._chunk_bytes)

    def tick(self, now: float) -> None:
        if not self.active or self.awaiting_audio or self.item is None:
            return
        fmt = self.params.output_format
        while self._sent < len(self._audio) and self._due(self._sent // self._chunk_bytes) <= now:
            chunk = self._audio[self._sent:self._sent + self._chunk_bytes]
            end_ms = (self._sent + len(chunk)) / bytes_per_ms(fmt)
            self._emit_words_until(end_ms)
            self.host.emit(self._content_event(self.host.dialect.audio_delta, delta=b64encode(chunk).decode()))
            self._sent += len(chunk)
            self._spoken.produced_ms = self._sent / bytes_per_ms(fmt)
        if self._sent >= len(self._audio):
            self._emit_words_until(math.inf)
            self._finish_audio("completed")

    def cancel(self, reason: str) -> None:
        if not self.active:
            return
        if self.item is not None and self.item.get("type") == "message" and "audio" in self.params.modalities:
            self._finish_audio("cancelled", reason)
        else:
            if self.item is not None:
                self._finish_item("incomplete")
            self._done("cancelled", reason)

    # -- internals ---------------------------------------------------------------------------

    def _due(self, chunk_index: int) -> float:
        if self.host.realtime_factor <= 0:
            return self._started
        return self._started + chunk_index * CHUNK_MS / 1000.0 / self.host.realtime_factor

    def _emit_words_until(self, end_ms: float) -> None:
        while self._word_index < len(self._spoken.words) and self._spoken.words[self._word_index][0] < end_ms:
            self.host.emit(self._content_event(self.host.dialect.transcript_delta,
                                               delta=self._spoken.words[self._word_index][1]))
            self._word_index += 1

    def _finish_audio(self, status: str, reason: str | None = None) -> None:
        assert self.item is not None
        said = "".join(w for _, w in self._spoken.words[:self._word_index])
        self.host.emit(self._content_event(self.host.dialect.audio_done))
        self.host.emit(self._content_event(self.host.dialect.transcript_done, transcript=said))
        self.host.emit(self._content_event("response.content_part.done", part={"type": "audio", "transcript": said}))
        self.item["content"][0]["transcript"] = said
        self._finish_item("completed" if status == "completed" else "incomplete")
        self._done(status, reason)

    def _function_call(self, call: ToolCall) -> None:
        item: dict[str, Any] = {
            "id": new_id("item_"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
            "name": call.name, "call_id": new_id("call_")[:21], "arguments": ""}
        self._add_output(item)
        base = {"response_id": self.id, "item_id": item["id"], "output_index": len(self.output) - 1,
                "call_id": item["call_id"]}
        step = max(1, math.ceil(len(call.arguments) / 3))
        for i in range(0, len(call.arguments), step):
            self.host.emit({"type": "response.function_call_arguments.delta", **base,
                            "delta": call.arguments[i:i + step]})
        self.host.emit({"type": "response.function_call_arguments.done", **base, "name": call.name,
                        "arguments": call.arguments})
        item["arguments"] = call.arguments
        self.text = call.arguments
        self._finish_item("completed")
        self._done("completed")

    def _add_output(self, item: dict[str, Any]) -> None:
        self.item = item
        self.output.append(item)
        self.host.emit({"type": "response.output_item.added", "response_id": self.id,
                        "output_index": len(self.output) - 1, "item": _snapshot(item)})
        if self.in_conversation:
            previous = self.host.conversation.add(item)
            kind = "conversation.item.added" if self.host.dialect.ga else "conversation.item.created"
            self.host.emit({"type": kind, "previous_item_id": previous, "item": _snapshot(item)})

    def _finish_item(self, status: str) -> None:
        assert self.item is not None
        self.item["status"] = status
        self.host.emit({"type": "response.output_item.done", "response_id": self.id,
                        "output_index": len(self.output) - 1, "item": _snapshot(self.item)})
        if self.in_conversation and self.host.dialect.ga and self.item["id"] in self.host.conversation:
            self.host.emit({"type": "conversation.item.done", "item": _snapshot(self.item)})

    def _done(self, status: str, reason: str | None = None) -> None:
        self.status = status
        self.host.emit({"type": "response.done", "response": self._render(reason)})

    def _content_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        assert self.item is not None
        return {"type": kind, "response_id": self.id, "item_id": self.item["id"],
                "output_index": len(self.output) - 1, "content_index": 0, **fields}

    def _render(self, reason: str | None = None) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        if self.status == "cancelled":
            details = {"type": "cancelled", "reason": reason or "client_cancelled"}
        elif self.status == "incomplete":
            details = {"type": "incomplete", "reason": reason or "max_output_tokens"}
        conversation_id = self.host.conversation.id if self.in_conversation else None
        body = {
            "object": "realtime.response", "id": self.id, "status": self.status, "status_details": details,
            "output": [_snapshot(i) for i in self.output], "metadata": self.params.metadata,
            "usage": self._usage() if self.status != "in_progress" else None,
            **self.host.dialect.render_response_extras(self.params, conversation_id),
        }
        return body

    def _usage(self) -> dict[str, Any]:
        text_out = max(0, math.ceil(len(self.text) / 4))
        audio_out = math.ceil(self._spoken.produced_ms / 50)
        out = text_out + audio_out
        return {
            "total_tokens": self.input_tokens + out, "input_tokens": self.input_tokens, "output_tokens": out,
            "input_token_details": {"cached_tokens": 0, "text_tokens": self.input_tokens, "audio_tokens": 0,
                                    "image_tokens": 0},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _words(text: str) -> list[str]:
    """Split into deltas that concatenate back to the text ("Hello", " there", "!")."""
    return re.findall(r"\s*\S+", text.strip())


def _snapshot(item: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(item))


def estimate_input_tokens(items: list[dict[str, Any]], instructions: str) -> int:
    """Rough count: about 4 characters a token, over instructions and every item's text."""
    chars = len(instructions)
    for item in items:
        for part in item.get("content") or []:
            chars += len(str(part.get("text") or part.get("transcript") or ""))
        chars += len(str(item.get("output") or item.get("arguments") or ""))
    return math.ceil(chars / 4)
