"""What every tool handler looks like to the runner.

A handler takes the call context and the validated arguments and returns a `HandlerResult`, or
raises `ToolError` with a message meant for the model ("order not found", "HTTP 503"). Anything else
it raises is a bug in the handler: the runner reports it to the model as a generic failure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from voicegw.tools.contract import ToolContext, ToolEffect


class ToolError(Exception):
    """A failure the model should hear about; `details` are extra JSON fields for it."""

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class HandlerResult:
    result: Any
    effect: ToolEffect | None = None


@dataclass(frozen=True)
class HandlerInfo:
    """What `check-config` shows for a handler."""

    kind: str
    detail: str = ""
    hosts: tuple[str, ...] = field(default=())


class Handler(Protocol):
    @property
    def info(self) -> HandlerInfo: ...

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult: ...
