"""Running one agent's tools: `ToolSet` turns a model's function call into a `ToolOutcome`.

`run` never raises for anything the model or a handler did (bad JSON, arguments that fail the schema,
an unknown tool, a timeout, an HTTP error, a crashing handler): each becomes an `ok=False` outcome
whose output tells the model what went wrong so it can retry or apologise. Only cancellation
propagates, because the I/O layer cancels running tools when the call ends.

Everything that leaves the runner (output, error, logged result) passes through the scrubber, so
values that came from `${ENV_VAR}` placeholders never reach the model, the call log or the console.

A tool's `redact` paths name fields of its result and of its arguments. The logged result has them
replaced by "[redacted]", and the concrete values found there are reported
(`ToolOutcome.redacted_values`) so the call masks them in its transcripts too: the caller usually
says the card or phone number before the tool that receives it runs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from voicegw.tools.contract import ToolContext, ToolOutcome
from voicegw.config import LoadedAgent, Settings
from voicegw.realtime.events import ToolDecl
from voicegw.tools.base import Handler, HandlerInfo, ToolError
from voicegw.tools.paths import Segment, redact, redacted_values
from voicegw.tools.schema import Tool
from voicegw.tools.templates import Scrubber

log = logging.getLogger("voicegw.tools")

MAX_OUTPUT_CHARS = 6000  # what the model gets back; long outputs cost latency and tokens
MAX_LOGGED_CHARS = 16000  # what the call log keeps of a result
MAX_PROBLEMS = 5
MAX_REDACTED_VALUES = 32


@dataclass(frozen=True)
class BoundTool:
    tool: Tool
    handler: Handler
    validator: jsonschema.protocols.Validator

    @property
    def info(self) -> HandlerInfo:
        return self.handler.info


class ToolSet:
    """One agent's tools. Shared by every call of that agent; holds no per-call state."""

    def __init__(
        self,
        key: str,
        tools: Sequence[tuple[Tool, Handler]],
        scrubber: Scrubber | None = None,
    ):
        self.key = key
        self._tools: dict[str, BoundTool] = {}
        for tool, handler in tools:
            validator_cls = jsonschema.validators.validator_for(tool.parameters)
            self._tools[tool.name] = BoundTool(tool, handler, validator_cls(tool.parameters))
        self._scrub = scrubber or Scrubber()
        self._declarations = tuple(
            ToolDecl(b.tool.name, b.tool.description, b.tool.parameters) for b in self._tools.values()
        )

    @property
    def tools(self) -> tuple[BoundTool, ...]:
        return tuple(self._tools.values())

    def declarations(self) -> tuple[ToolDecl, ...]:
        return self._declarations

    def filler(self, name: str) -> str | None:
        bound = self._tools.get(name)
        return bound.tool.filler if bound else None

    def redact_paths(self) -> dict[str, tuple[tuple[Segment, ...], ...]]:
        """Each tool's `redact` paths (the call masks them in the logged arguments at once)."""
        return {name: b.tool.redact for name, b in self._tools.items() if b.tool.redact}

    async def run(self, ctx: ToolContext, name: str, arguments: str) -> ToolOutcome:
        started = time.monotonic()
        bound = self._tools.get(name)
        if bound is None:
            return self._failure(
                started, f"unknown tool {name!r}", {"available_tools": sorted(self._tools)}
            )
        args, problems = self._arguments(bound, arguments)
        if args is None:
            return self._failure(started, "invalid arguments", {"problems": problems, "hint": "fix the arguments and call again"})
        try:
            async with asyncio.timeout(bound.tool.timeout):
                result = await bound.handler(ctx, args)
        except ToolError as exc:
            return self._failure(started, exc.message, exc.details)
        except TimeoutError:
            return self._failure(started, f"the tool timed out after {bound.tool.timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - a bug in a handler must not end the call
            log.warning("tool %s failed: %s", name, self._scrub.text(f"{type(exc).__name__}: {exc}"))
            return self._failure(started, f"the tool failed ({type(exc).__name__})")
        output = self._cap(self._scrub.text(_json(result.result)), MAX_OUTPUT_CHARS)
        plain = _plain(result.result)
        logged = self._scrub.value(redact(plain, bound.tool.redact))
        hidden = redacted_values(args, bound.tool.redact) + redacted_values(plain, bound.tool.redact)
        if len(_json(logged)) > MAX_LOGGED_CHARS:
            logged = {"truncated": True, "partial": _json(logged)[:MAX_LOGGED_CHARS]}
        return ToolOutcome(
            output=output,
            ok=True,
            duration_ms=_ms(started),
            effect=result.effect,
            logged_result=logged,
            redacted_values=tuple(dict.fromkeys(hidden))[:MAX_REDACTED_VALUES],
        )

    def _arguments(self, bound: BoundTool, arguments: str) -> tuple[dict[str, Any] | None, list[str]]:
        text = (arguments or "").strip() or "{}"
        try:
            args = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"arguments are not valid JSON: {exc.msg} at position {exc.pos}"]
        if not isinstance(args, dict):
            return None, ["arguments must be a JSON object"]
        errors = sorted(bound.validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            return None, [_problem(e) for e in errors[:MAX_PROBLEMS]]
        return args, []

    def _failure(self, started: float, error: str, details: Mapping[str, Any] | None = None) -> ToolOutcome:
        error = self._scrub.text(error)
        payload = {"error": error, **(details or {})}
        return ToolOutcome(
            output=self._cap(self._scrub.text(_json(payload)), MAX_OUTPUT_CHARS),
            ok=False,
            error=error,
            duration_ms=_ms(started),
        )

    @staticmethod
    def _cap(text: str, limit: int) -> str:
        """Keep the output valid JSON while bounding its size."""
        if len(text) <= limit:
            return text
        keep = limit - 120
        while keep > 0:
            wrapped = json.dumps(
                {"truncated": True, "note": "the result was too long; this is its beginning", "partial": text[:keep]},
                ensure_ascii=False,
            )
            if len(wrapped) <= limit:
                return wrapped
            keep //= 2
        return json.dumps({"truncated": True})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _plain(value: Any) -> Any:
    """A JSON-shaped copy (tuples, dates and other objects become what the model saw)."""
    return json.loads(_json(value))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _problem(err: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    return f"{where or 'arguments'}: {err.message}"


def load_toolset(agent: LoadedAgent, settings: Settings) -> ToolSet:
    """Validate and build the tools of one agent (and of any agent it can switch to)."""
    from voicegw.tools.loader import AgentLoader

    loader = AgentLoader(settings, agent.directory)
    key = loader.add(agent)
    return loader.build()[key].tools
