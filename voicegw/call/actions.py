"""What the sans-I/O call core asks the I/O layer to do.

`voicegw.call.core.CallCore` takes events and a clock value and returns a list of these actions;
`voicegw.call.bridge.CallBridge` performs every one of them, in order, on every path. None of them
carries wire bytes: stream intents are encoded by the telephony adapter, model commands by the
Realtime dialect, log entries by the call log.

Model sessions are numbered *links*: the first session of a call is link 1, and each reconnect or
rollover opens the next number. A model command names the link it is for, so the core can
prepare a new session while the old one still serves the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from voicegw.calllog.entries import CallLogEntry
from voicegw.hotvalue import hot_value
from voicegw.realtime.events import ClientCommand
from voicegw.telephony.base import StreamIntent


@hot_value
@dataclass(frozen=True, slots=True)
class ToCaller:
    """Send an intent on the provider's media stream (audio, mark, clear)."""

    intent: StreamIntent


@hot_value
@dataclass(frozen=True, slots=True)
class ToModel:
    """Send a command on model link `link`."""

    command: ClientCommand
    link: int


@dataclass(frozen=True, slots=True)
class Log:
    """Write an entry to the call log."""

    entry: CallLogEntry


@dataclass(frozen=True)
class RunTool:
    call_id: str
    name: str
    arguments: str  # JSON text as the model produced it
    response_id: str


@dataclass(frozen=True)
class CancelTools:
    """Cancel every running tool of this call."""


@dataclass(frozen=True)
class UseAgent:
    """Run the tools of this agent from now on (the core already switched the model session)."""

    agent: str


@dataclass(frozen=True)
class Control:
    """Out-of-stream call control through the provider's REST API. It reaches the provider before
    the media stream is closed (closing a <Connect><Stream> ends the call first)."""

    kind: str  # transfer | hangup | warm_transfer (dial the human) | join_transfer (bridge the caller)
    target: str | None = None
    announcement: str | None = None  # transfer: said to the person answering; warm: the call's summary
    timeout_s: float | None = None  # warm_transfer: how long the human's phone may ring


@dataclass(frozen=True)
class OpenModel:
    """Open a new model session as link `link`, after `delay_s` (reconnect backoff), taking at
    most `timeout_s` (what is left of the outage's connect budget; None: the gateway's default)."""

    link: int
    delay_s: float = 0.0
    timeout_s: float | None = None


@dataclass(frozen=True)
class CloseModel:
    """Close model link `link` (replaced by a newer one, or the call ended)."""

    link: int


@dataclass(frozen=True)
class EndCall:
    """The call is over: close the media stream and every model link, release everything.
    Always the last action the core ever returns."""

    reason: str  # caller_hangup | agent_hangup | transferred | max_duration | model_unavailable | model_closed
    #              | bad_frames | telephony_lost | voicemail | ...
    linger_s: float = 0.0  # keep the live model link this long for an answer still due (AsideDone)


@dataclass(frozen=True)
class AsideDone:
    """The side question the call was waiting for (post-call summary) has its answer: the model
    link need not linger."""

    purpose: str


Action = Union[ToCaller, ToModel, Log, RunTool, CancelTools, UseAgent, Control, OpenModel, CloseModel, EndCall,
               AsideDone]
