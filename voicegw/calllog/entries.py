"""What a call writes to the call log: the contract between a call and the call log.

A call produces `CallLogEntry` records (one per thing that happened, in order) and hands them to a
`CallLogSink`; the stores persist them and derive the call record from them
(`voicegw.calllog.record`). Calls depend on this module, never on a store.

Entry kinds (data fields):
  call.started      {call_sid, stream_sid, from, to, agent}
  stream.started    {stream_sid, tracks, custom_parameters (token removed)}
  speech.started    {audio_start_ms}
  speech.stopped    {audio_end_ms}
  response.started  {response_id, kind}
  response.done     {response_id, status, usage}
  barge_in          {item_id, heard_ms, produced_ms, audio_end_ms, action: truncate|delete|none,
                     cancelled: bool, cause: speech|dtmf|time_limit}
  transcript        {role: caller|agent, item_id, text, cut: bool}
  turn.latency      {item_id, latency_ms}  caller end of speech -> first agent audio sent
  tool.call         {call_id, name, arguments}
  tool.result       {call_id, name, ok, result | error, duration_ms}
  dtmf              {digit}
  error             {source: model|telephony|tool|gateway, message, code}
  reconnect         {attempt, ok, error?, reason?}
  rollover          {phase: started|switched|failed, session_age_s, items, forced}
  agent.switched    {agent}
  recording.ready   {mode: mixed|dual, channels, duration_s, bytes, url, content_type, complete?: false}
                    the call's recording is finished (logged before the record closes)
  amd               {answered_by, detection_ms, waited}  outbound: Twilio's answering-machine verdict
  transfer          {mode: warm, phase: started|dialing|bridged|not_answered, target, summary?, status?}
  call.ended        {reason, duration_s, barge_ins, reconnects, rollovers}
  post_call         {summary?, extraction?, extraction_valid?, extraction_errors?, error?, duration_ms}
                    after call.ended: the model's post-call answer (agent YAML post_call)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CallLogEntry:
    kind: str
    t: float  # wall-clock epoch seconds
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallInfo:
    call_sid: str
    stream_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    agent: str = ""
    started_at: float = 0.0


class CallLogSink(Protocol):
    """Where a call's record goes. Implementations never block the caller (queue + writer)."""

    def call_started(self, info: CallInfo) -> None: ...

    def event(self, call_sid: str, event: CallLogEntry) -> None: ...

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None: ...


class NullSink:
    def call_started(self, info: CallInfo) -> None:
        pass

    def event(self, call_sid: str, event: CallLogEntry) -> None:
        pass

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        pass
