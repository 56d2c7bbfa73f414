"""Handlers that need no HTTP: call control (transfer, hang up, switch agent), table lookups, fixed
results, and integrators' own Python functions.

Call control handlers do not touch the call themselves: they return an effect that the call session
carries out at the right moment (after the goodbye has played), which keeps them trivially
cancellation-safe.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from voicegw.tools.contract import HangUp, SwitchAgent, ToolContext, Transfer
from voicegw.realtime.events import SessionConfig
from voicegw.tools.base import HandlerInfo, HandlerResult
from voicegw.tools.schema import LookupSpec, TransferSpec
from voicegw.tools.tables import Table
from voicegw.yamlsrc import Locator


@dataclass(frozen=True)
class TransferHandler:
    spec: TransferSpec

    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("builtin:transfer_call", f"-> {self.spec.target}")

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        spec = self.spec
        if spec.mode == "warm":
            return HandlerResult(
                {
                    "status": "connecting",
                    "instruction": "Tell the caller in one short sentence that you are connecting them to a "
                    "colleague and they will hear music while they wait, then stop talking.",
                },
                Transfer(spec.target, spec.announcement, "warm", spec.timeout),
            )
        return HandlerResult(
            {
                "status": "transferring",
                "instruction": "Tell the caller in one short sentence that you are transferring them now, "
                "then stop talking. The transfer happens when you finish.",
            },
            Transfer(self.spec.target, self.spec.announcement),
        )


@dataclass(frozen=True)
class HangUpHandler:
    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("builtin:hang_up")

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        return HandlerResult({"status": "ending_call"}, HangUp())


@dataclass(frozen=True)
class SwitchAgentHandler:
    agent: str  # registry key of the agent taking over
    session: SessionConfig = field(repr=False)

    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("builtin:switch_agent", f"-> {self.agent}")

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        return HandlerResult({"status": "switched", "agent": self.agent}, SwitchAgent(self.agent, self.session))


@dataclass(frozen=True)
class LookupHandler:
    spec: LookupSpec
    table: Table

    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("builtin:lookup", f"{self.table.path.name} by {self.spec.key}")

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        value = args.get(self.spec.argument or self.spec.key)
        rows = self.table.find(value, self.spec.limit, self.spec.columns)
        return HandlerResult({"found": bool(rows), "count": len(rows), "rows": rows})


@dataclass(frozen=True)
class StaticHandler:
    result: Any

    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("static")

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        return HandlerResult(self.result)


@dataclass(frozen=True)
class PythonHandler:
    """Calls `fn(arguments, context)`. Sync functions run in a worker thread so they never block
    audio; a thread cannot be interrupted, so a sync function that hangs keeps its thread until it
    returns even though the call has long moved on (prefer async functions for slow I/O)."""

    entry: str
    fn: Callable[..., Any] = field(repr=False)

    @property
    def info(self) -> HandlerInfo:
        return HandlerInfo("python", self.entry)

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        if inspect.iscoroutinefunction(self.fn):
            value = await self.fn(dict(args), ctx)
        else:
            value = await asyncio.to_thread(self.fn, dict(args), ctx)
            if inspect.isawaitable(value):
                value = await value
        return HandlerResult(value)


def load_entry(entry: str, directory: Path, loc: Locator, where: tuple[Any, ...]) -> Callable[..., Any]:
    """Resolve `module:function`: a module file beside the agent file first, then an importable module."""
    module_name, _, fn_name = entry.partition(":")
    try:
        module = _module_beside(module_name, directory) or importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - import-time errors of user code, reported at start-up
        raise loc.error(where, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise loc.error(where, f"{module_name!r} has no function {fn_name!r}")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise loc.error(where, f"{entry} must accept (arguments, context)") from None
    except ValueError:
        pass  # builtins without a signature: trust them
    return fn


def _module_beside(module_name: str, directory: Path) -> ModuleType | None:
    file = directory / (module_name.replace(".", "/") + ".py")
    if not file.is_file():
        return None
    resolved = file.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    unique = f"voicegw_agent_code_{digest}_{module_name.replace('.', '_')}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, resolved)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module

