"""`voicegw check-config FILE`: validate a routing or agent file the way start-up would, and show
what a call would get, so a configuration mistake is found before the phone rings."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from voicegw.config import Settings
from voicegw.tools.routing import AgentEntry, AgentRegistry, is_routing_data
from voicegw.yamlsrc import ConfigError, load_yaml


def check_config(path: Path, settings: Settings, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """0 when the file and everything it references are valid; 2 (after printing the error) if not."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        data, _loc = load_yaml(path)
        if is_routing_data(data):
            registry = AgentRegistry.load(dataclasses.replace(settings, routing_path=path, agent_path=None))
        else:
            registry = AgentRegistry.load(dataclasses.replace(settings, routing_path=None, agent_path=path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem.location()}", file=err)
        if len(exc.problems) > 1:
            print(f"{len(exc.problems)} problems", file=err)
        return 2
    out.write(summary(registry))
    return 0


def summary(registry: AgentRegistry) -> str:
    lines: list[str] = []
    lines.append(f"{registry.kind} file: {registry.source}")
    lines.append("")
    rows = [(number, key) for number, key in sorted(registry.routes.items())]
    rows.append(("(default)", registry.default_key))
    lines += _table(("number", "agent"), rows)
    lines.append("")
    lines.append("tool hosts: " + (", ".join(registry.tool_hosts) or "(none)"))
    for key in sorted(registry.entries):
        lines.append("")
        lines += _agent(registry.entries[key])
    tools = sum(len(e.tools.tools) for e in registry.entries.values())
    lines.append("")
    lines.append(f"OK: {len(registry.entries)} agent(s), {tools} tool(s)")
    return "\n".join(lines) + "\n"


def _agent(entry: AgentEntry) -> list[str]:
    cfg = entry.agent.config
    vad: str = cfg.turn_detection.type
    if cfg.turn_detection.type == "server_vad":
        vad += f" (threshold {cfg.turn_detection.threshold}, silence {cfg.turn_detection.silence_duration_ms}ms)"
    lines = [
        f"agent {entry.key}: name={cfg.name} voice={cfg.voice} audio={cfg.audio_mode} vad={vad}",
    ]
    rows = []
    for bound in entry.tools.tools:
        info = bound.info
        rows.append((bound.tool.name, info.kind, info.detail, ", ".join(info.hosts) or "-", f"{bound.tool.timeout:g}s"))
    if rows:
        lines += ["  " + line for line in _table(("tool", "handler", "detail", "hosts", "timeout"), rows)]
    else:
        lines.append("  (no tools)")
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*map(str, r)).rstrip() for r in rows
    ]
