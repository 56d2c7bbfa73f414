"""What the sans-I/O call session asks the I/O layer to do, and the contracts around it.

The session (`voicegw.call.session.CallSession`) takes events and a clock value and returns a
list of these actions; `voicegw.call.bridge` performs them. Nothing here does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Protocol, Union

from voicegw.realtime.events import ClientCommand, SessionConfig, ToolDecl


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendModel:
    command: ClientCommand


@dataclass(frozen=True)
class SendTelephony:
    """A frame already encoded for the provider's media stream."""

    text: str


@dataclass(frozen=True)
class RunTool:
    call_id: str
    name: str
    arguments: str  # JSON text as the model produced it
    response_id: str


@dataclass(frozen=True)
class CancelTools:
    """Cancel every running tool of this call (the call is ending)."""


@dataclass(frozen=True)
class Log:
    event: "CallEvent"


@dataclass(frozen=True)
class Control:
    """Out-of-stream call control through the provider's REST API."""

    kind: str  # transfer | hangup
    target: str | None = None
    announcement: str | None = None


@dataclass(frozen=True)
class EndCall:
    reason: str  # caller_hangup | agent_hangup | transferred | max_duration | model_error | model_closed | error


Action = Union[SendModel, SendTelephony, RunTool, CancelTools, Log, Control, EndCall]


# --- call log events ------------------------------------------------------------------------
#
# kinds (data fields):
#   call.started      {call_sid, stream_sid, from, to, agent}
#   stream.started    {stream_sid, tracks, custom_parameters (token removed)}
#   speech.started    {audio_start_ms}
#   speech.stopped    {audio_end_ms}
#   response.started  {response_id}
#   response.done     {response_id, status, usage}
#   barge_in          {item_id, heard_ms, produced_ms, action: truncate|delete, cancelled: bool,
#                      clear_after_ms (speech_started -> clear sent, wall clock)}
#   transcript        {role: caller|agent, item_id, text, cut: bool}
#   turn.latency      {item_id, latency_ms}  caller end of speech -> first agent audio sent
#   tool.call         {call_id, name, arguments}
#   tool.result       {call_id, name, ok, result | error, duration_ms}
#   dtmf              {digit}
#   error             {source: model|telephony|tool|gateway, message, code}
#   reconnect         {attempt, ok}
#   agent.switched    {agent}
#   call.ended        {reason, duration_s}


@dataclass(frozen=True)
class CallEvent:
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

    def event(self, call_sid: str, event: CallEvent) -> None: ...

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None: ...


class NullSink:
    def call_started(self, info: CallInfo) -> None:
        pass

    def event(self, call_sid: str, event: CallEvent) -> None:
        pass

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        pass


# --- tools contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class HangUp:
    """End the call after the audio already queued for the caller has played."""


@dataclass(frozen=True)
class Transfer:
    """Say goodbye (the model's next response), then transfer the live call."""

    target: str  # E.164 number or sip: URI
    announcement: str | None = None


@dataclass(frozen=True)
class SwitchAgent:
    agent: str
    session: SessionConfig


ToolEffect = Union[HangUp, Transfer, SwitchAgent]


@dataclass(frozen=True)
class ToolOutcome:
    output: str  # function_call_output text handed to the model (JSON)
    ok: bool = True
    error: str | None = None
    duration_ms: float = 0.0
    effect: ToolEffect | None = None
    logged_result: Any = None  # redacted result for the call log


@dataclass(frozen=True)
class ToolContext:
    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    agent: str


class ToolRunner(Protocol):
    def declarations(self) -> tuple[ToolDecl, ...]: ...

    def filler(self, name: str) -> str | None: ...

    def run(self, ctx: ToolContext, name: str, arguments: str) -> Awaitable[ToolOutcome]: ...
