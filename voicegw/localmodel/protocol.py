"""The local model's per-connection state machine: client events in, server events out.

No sockets and no threads here (compare python-websockets' protocol.py): the I/O layer feeds
`receive(text, now)`, runs the `Job`s this asks for (speech synthesis, recognition) and hands
back their results with `job_done`, calls `tick(now)` at `next_deadline()`, and sends whatever
`take_events()` returns. That keeps every behaviour testable without timing games.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from voicegw.localmodel import brain, errors
from voicegw.localmodel.codec import AudioFormat, bytes_per_ms
from voicegw.localmodel.conversation import Conversation, new_id
from voicegw.localmodel.dialect import ResponseParams, ServerDialect
from voicegw.localmodel.errors import ClientError
from voicegw.localmodel.items import parse_client_item
from voicegw.localmodel.responses import ResponseRun, RunHost, estimate_input_tokens
from voicegw.localmodel.vad import EnergyVad, SpeechStart, VadSettings

MIN_COMMIT_MS = 100
SESSION_MAX_S = 30 * 60


@dataclass(frozen=True)
class SynthesisJob:
    run_id: str
    text: str
    fmt: AudioFormat


@dataclass(frozen=True)
class TranscriptionJob:
    item_id: str
    audio: bytes
    fmt: AudioFormat


Job = SynthesisJob | TranscriptionJob


class RealtimeProtocol:
    def __init__(self, dialect: ServerDialect, *, now: float, model: str | None = None, realtime_factor: float = 4.0,
                 max_session_s: float = SESSION_MAX_S) -> None:
        self.dialect = dialect
        self.session_id = new_id("sess_")
        self.config = dialect.new_config(model)
        self.conversation = Conversation()
        self.closing = False
        self._events: list[dict[str, Any]] = []
        self._jobs: list[Job] = []
        self._host = RunHost(dialect, self.conversation, self._events.append, realtime_factor)
        self._runs: dict[str, ResponseRun] = {}
        self._waiting: list[tuple[ResponseRun, list[dict[str, Any]]]] = []  # runs waiting for transcripts
        self._pending_transcripts: set[str] = set()
        self._expires = now + max_session_s
        self._expires_at = int(time.time() + max_session_s)
        self._max_minutes = max(1, round(max_session_s / 60)) if max_session_s >= 60 else round(max_session_s / 60, 2)
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._audio_ms = 0.0
        self._speech_item: str | None = None
        self._speech_start_ms = 0.0
        self._vad = EnergyVad(self.config.input_format, self._vad_settings())
        self._audio_was_produced = False
        self._emit({"type": "session.created", "session": self._session()})
        if not dialect.ga:
            self._emit({"type": "conversation.created",
                        "conversation": {"id": self.conversation.id, "object": "realtime.conversation"}})

    # -- I/O-facing API ----------------------------------------------------------------------

    def take_events(self) -> list[dict[str, Any]]:
        """The events to send, each with its `event_id` second, after `type`: the service's key order."""
        out, self._events[:] = list(self._events), []
        for i, event in enumerate(out):
            if "event_id" not in event:
                out[i] = {"type": event.pop("type"), "event_id": new_id("event_"), **event}
        return out

    def take_jobs(self) -> list[Job]:
        out, self._jobs = self._jobs, []
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (r.next_deadline() for r in self._runs.values()) if d is not None]
        return min(deadlines + [self._expires])

    def tick(self, now: float) -> None:
        for run in list(self._runs.values()):
            run.tick(now)
        self._forget_finished()
        if now >= self._expires and not self.closing:
            self._emit({"type": "error", "error": {
                "type": "invalid_request_error", "code": "session_expired",
                "message": f"Your session hit the maximum duration of {self._max_minutes} minutes.",
                "param": None, "event_id": None}})
            self.closing = True

    def receive(self, data: str | bytes, now: float) -> None:
        try:
            event = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            match = re.search(r'"event_id"\s*:\s*"([^"]*)"', data if isinstance(data, str) else data.decode("utf-8", "replace"))
            self._error(ClientError("invalid_json", "Invalid JSON: the event could not be parsed. "
                                    "Expected a JSON object.", None), match.group(1) if match else None)
            return
        if not isinstance(event, dict):
            self._error(errors.invalid_type("event", "an object", event), None)
            return
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        handler = self._handlers().get(kind) if isinstance(kind, str) else None
        try:
            if handler is None:
                if kind is None:
                    raise errors.missing("type")
                raise errors.invalid_value("type", kind, tuple(self._handlers()))
            handler(event, now)
        except ClientError as exc:
            self._error(exc, client_event_id)
        self._forget_finished()

    def job_done(self, job: Job, result: bytes | str | BaseException, now: float) -> None:
        if isinstance(job, SynthesisJob):
            run = self._runs.get(job.run_id)
            if run is None:
                return
            if isinstance(result, BaseException):
                run.cancel("client_cancelled")
            else:
                assert isinstance(result, bytes)
                run.audio_ready(result, now)
                self._audio_was_produced = self._audio_was_produced or (bool(result) and run.in_conversation)
        else:
            self._transcribed(job, result if isinstance(result, str) else "")
        self._forget_finished()

    # -- client events ----------------------------------------------------------------------

    def _handlers(self) -> dict[str, Any]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    def _session_update(self, event: dict[str, Any], now: float) -> None:
        if "session" not in event:
            raise errors.missing("session")
        new = self.dialect.apply_update(self.config, event["session"])
        if new.voice != self.config.voice and self._audio_was_produced:
            raise ClientError("cannot_update_voice",
                              "Cannot update a conversation's voice if assistant audio is present.", "session.voice")
        self.config = new
        self._vad.reconfigure(new.input_format, self._vad_settings())
        if new.turn_detection is None:
            self._vad.reset()
        self._emit({"type": "session.updated", "session": self._session()})

    def _append(self, event: dict[str, Any], now: float) -> None:
        if "audio" not in event:
            raise errors.missing("audio")
        try:
            data = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ClientError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio data.",
                              "audio") from None
        fmt = self.config.input_format
        if not self._buffer:
            self._buffer_start_ms = self._audio_ms
        before_ms = self._audio_ms
        self._buffer.extend(data)
        self._audio_ms += len(data) / bytes_per_ms(fmt)
        if self.config.turn_detection is None:
            return
        self._vad.set_position(int(before_ms))
        for vad_event in self._vad.feed(data):
            if isinstance(vad_event, SpeechStart):
                self._speech_item = new_id("item_")
                self._speech_start_ms = float(vad_event.audio_start_ms)
                self._emit({"type": "input_audio_buffer.speech_started",
                            "audio_start_ms": vad_event.audio_start_ms, "item_id": self._speech_item})
                if self.config.turn_detection.get("interrupt_response", True):
                    active = self._active_default_run()
                    if active is not None:
                        active.cancel("turn_detected")
                continue
            item_id = self._speech_item or new_id("item_")
            self._emit({"type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": vad_event.audio_end_ms, "item_id": item_id})
            self._commit_range(item_id, self._speech_start_ms, float(vad_event.audio_end_ms))
            self._speech_item = None
            if self.config.turn_detection.get("create_response", True) and self._active_default_run() is None:
                self._start_response(self.dialect.response_params(self.config, {}), now)

    def _commit(self, event: dict[str, Any], now: float) -> None:
        have_ms = len(self._buffer) / bytes_per_ms(self.config.input_format)
        if have_ms < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {have_ms:.2f}ms of audio.", None)
        item_id = self._speech_item or new_id("item_")
        self._speech_item = None
        self._vad.reset()
        self._commit_range(item_id, self._buffer_start_ms, self._audio_ms)

    def _commit_range(self, item_id: str, start_ms: float, end_ms: float) -> None:
        """Turn buffered audio [start_ms, end_ms) into a user item; keep what follows it."""
        bpm = bytes_per_ms(self.config.input_format)
        align = 2 if self.config.input_format == "pcm16" else 1
        lo = max(0, int((start_ms - self._buffer_start_ms) * bpm) // align * align)
        hi = max(lo, int((end_ms - self._buffer_start_ms) * bpm) // align * align)
        audio = bytes(self._buffer[lo:hi])
        rest = bytes(self._buffer[hi:])
        self._buffer = bytearray(rest)
        self._buffer_start_ms = end_ms if rest else self._audio_ms
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        previous = self.conversation.add(item)
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        self._announce_item(item, previous)
        self._request_transcript(item_id, audio)

    def _clear(self, event: dict[str, Any], now: float) -> None:
        self._buffer = bytearray()
        self._buffer_start_ms = self._audio_ms
        self._vad.reset()
        self._speech_item = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _item_create(self, event: dict[str, Any], now: float) -> None:
        previous_id = event.get("previous_item_id")
        if previous_id is not None and previous_id != "root" and previous_id not in self.conversation:
            raise ClientError("invalid_value", f"Error adding item: the previous item with id '{previous_id}' "
                              "does not exist.", "previous_item_id")
        item, audio = parse_client_item(event.get("item"), self.dialect, self.conversation)
        previous = self.conversation.add(item, previous_id)
        self._announce_item(item, previous)
        if audio is not None:
            self._request_transcript(item["id"], audio)

    def _item_retrieve(self, event: dict[str, Any], now: float) -> None:
        item = self.conversation.get(str(event.get("item_id")))
        if item is None:
            raise errors.item_not_found("retrieving", str(event.get("item_id")))
        self._emit({"type": "conversation.item.retrieved", "item": item})

    def _item_truncate(self, event: dict[str, Any], now: float) -> None:
        for key in ("item_id", "content_index", "audio_end_ms"):
            if key not in event:
                raise errors.missing(key)
        item_id, end_ms = str(event["item_id"]), event["audio_end_ms"]
        if isinstance(end_ms, bool) or not isinstance(end_ms, int):
            raise errors.invalid_type("audio_end_ms", "an integer", end_ms)
        item = self.conversation.get(item_id)
        if item is None:
            raise errors.item_not_found("truncating", item_id)
        spoken = self.conversation.audio.get(item_id)
        if item.get("role") != "assistant" or spoken is None or event["content_index"] != 0:
            raise ClientError("unsupported_content_type", "Only model output audio messages can be truncated",
                              "item_id")
        if end_ms <= 0:
            raise errors.below_min("audio_end_ms", 1, end_ms)
        produced = int(spoken.produced_ms)
        if end_ms > produced:
            raise ClientError("invalid_value",
                              f"Audio content of {produced}ms is already shorter than {end_ms}ms", "audio_end_ms")
        spoken.produced_ms = float(end_ms)
        spoken.words = [(s, w) for s, w in spoken.words if s < end_ms]
        item["content"][0]["transcript"] = spoken.transcript_until(end_ms)
        self._emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": end_ms})

    def _item_delete(self, event: dict[str, Any], now: float) -> None:
        if "item_id" not in event:
            raise errors.missing("item_id")
        item_id = str(event["item_id"])
        if item_id not in self.conversation:
            raise errors.item_not_found("deleting", item_id)
        self.conversation.delete(item_id)
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _response_create(self, event: dict[str, Any], now: float) -> None:
        body = event.get("response") or {}
        if not isinstance(body, dict):
            raise errors.invalid_type("response", "an object", body)
        params = self.dialect.response_params(self.config, body)
        if params.conversation == "auto":
            active = self._active_default_run()
            if active is not None:
                raise ClientError(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {active.id}. "
                    "Wait until the response is finished before creating a new one.", None)
        self._start_response(params, now)

    def _response_cancel(self, event: dict[str, Any], now: float) -> None:
        wanted = event.get("response_id")
        if wanted:
            run = self._runs.get(str(wanted))
            run = run if run is not None and run.active else None
        else:
            run = self._active_default_run() or next((r for r in reversed(self._runs.values()) if r.active), None)
        if run is None:
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found", None)
        run.cancel("client_cancelled")

    # -- responses ---------------------------------------------------------------------------

    def _start_response(self, params: ResponseParams, now: float) -> None:
        context = self._context(params)
        run = ResponseRun(self._host, params, estimate_input_tokens(context, self.config.instructions))
        self._runs[run.id] = run
        run.announce()
        self._waiting.append((run, context))
        self._decide_ready()

    def _context(self, params: ResponseParams) -> list[dict[str, Any]]:
        if params.input is None:
            return self.conversation.items()
        context = []
        for i, entry in enumerate(params.input):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                found = self.conversation.get(str(entry.get("id")))
                if found is None:
                    raise errors.item_not_found("referencing", str(entry.get("id")), f"response.input[{i}].id")
                context.append(found)
            else:
                item, _ = parse_client_item(entry, self.dialect, None, param=f"response.input[{i}]")
                context.append(item)
        return context

    def _decide_ready(self) -> None:
        still: list[tuple[ResponseRun, list[dict[str, Any]]]] = []
        for run, context in self._waiting:
            if not run.active:
                continue
            if any(item.get("id") in self._pending_transcripts for item in context):
                still.append((run, context))
                continue
            reply = brain.decide(instructions=run.params.instructions, items=context, tools=run.params.tools,
                                 tool_choice=run.params.tool_choice)
            if run.start(reply):
                self._jobs.append(SynthesisJob(run.id, run.text, run.params.output_format))
        self._waiting = still

    def _active_default_run(self) -> ResponseRun | None:
        return next((r for r in self._runs.values() if r.active and r.in_conversation), None)

    def _forget_finished(self) -> None:
        for run_id in [rid for rid, run in self._runs.items() if not run.active]:
            del self._runs[run_id]

    # -- transcripts ------------------------------------------------------------------------

    def _request_transcript(self, item_id: str, audio: bytes) -> None:
        self._pending_transcripts.add(item_id)
        self._jobs.append(TranscriptionJob(item_id, audio, self.config.input_format))

    def _transcribed(self, job: TranscriptionJob, transcript: str) -> None:
        self._pending_transcripts.discard(job.item_id)
        item = self.conversation.get(job.item_id)
        if item is not None:
            for part in item.get("content") or []:
                if part.get("type") == "input_audio":
                    part["transcript"] = transcript
        if self.config.transcription is not None and item is not None:
            seconds = round(len(job.audio) / bytes_per_ms(job.fmt) / 1000.0, 3)
            if self.dialect.ga:
                self._emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": job.item_id,
                            "content_index": 0, "delta": transcript})
            self._emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": job.item_id,
                        "content_index": 0, "transcript": transcript,
                        "usage": {"type": "duration", "seconds": seconds}})
        self._decide_ready()

    # -- helpers ----------------------------------------------------------------------------

    def _announce_item(self, item: dict[str, Any], previous: str | None) -> None:
        if self.dialect.ga:
            self._emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
            self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        else:
            self._emit({"type": "conversation.item.created", "previous_item_id": previous, "item": item})

    def _session(self) -> dict[str, Any]:
        return self.dialect.render_session(self.config, self.session_id, self._expires_at)

    def _vad_settings(self) -> VadSettings:
        return VadSettings.from_turn_detection(self.config.turn_detection or {})

    def _emit(self, event: dict[str, Any]) -> None:
        self._events.append(json.loads(json.dumps(event)))

    def _error(self, exc: ClientError, client_event_id: str | None) -> None:
        self._emit({"type": "error", "error": {"type": exc.type, "code": exc.code, "message": exc.message,
                                               "param": exc.param, "event_id": client_event_id}})
