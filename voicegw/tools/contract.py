"""The contract between a call and its tools: what a tool run gets and what it gives back.

A call asks a `ToolRunner` to run a function call with a `ToolContext`; the runner answers with a
`ToolOutcome`: the function output for the model, what to log, and optionally an effect on the
call (hang up, transfer, switch agent) that the call core acts on. Tools never import the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Protocol, Union

from voicegw.realtime.events import SessionConfig, ToolDecl


@dataclass(frozen=True)
class HangUp:
    """End the call after the audio already queued for the caller has played."""


@dataclass(frozen=True)
class Transfer:
    """Say goodbye (the model's next response), then transfer the live call."""

    target: str  # E.164 number or sip: URI
    announcement: str | None = None
    mode: str = "cold"  # cold: redirect the call | warm: hold, brief the human, then bridge
    timeout_s: float = 30.0  # warm: how long the human's phone may ring


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
    # the concrete values at the tool's `redact` paths (arguments and result): the call masks them
    # in every transcript it logs, earlier ones included
    redacted_values: tuple[str, ...] = ()


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

    def redact_paths(self) -> dict[str, Any]: ...

    def run(self, ctx: ToolContext, name: str, arguments: str) -> Awaitable[ToolOutcome]: ...
