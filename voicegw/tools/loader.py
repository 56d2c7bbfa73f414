"""Loading a closed set of agents and their tools, all validated before the first call.

Agents can hand a call to each other (`switch_agent`), possibly in cycles (triage -> billing ->
triage), and a switch needs the target's tool declarations. So loading has two phases: first parse
every reachable agent file and its tools (handlers that need nothing else are built here, with their
tables and Python entry points), then build the switch handlers and one `ToolSet` per agent, sharing
one scrubber that knows every secret of every agent.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicegw.config import LoadedAgent, Settings, load_agent
from voicegw.realtime.events import SessionConfig, ToolDecl
from voicegw.tools.base import Handler
from voicegw.tools.builtin import (
    HangUpHandler,
    LookupHandler,
    PythonHandler,
    StaticHandler,
    SwitchAgentHandler,
    TransferHandler,
    load_entry,
)
from voicegw.tools.hosts import HostPolicy
from voicegw.tools.http import HttpHandler
from voicegw.tools.runner import ToolSet
from voicegw.tools.schema import (
    HangUpSpec,
    HttpSpec,
    LookupSpec,
    PythonSpec,
    StaticSpec,
    SwitchAgentSpec,
    Tool,
    TransferSpec,
    parse_tools,
)
from voicegw.tools.tables import load_table
from voicegw.tools.templates import Scrubber
from voicegw.yamlsrc import Locator

DEFAULT_KEY = "default"


@dataclass(frozen=True)
class AgentEntry:
    key: str
    agent: LoadedAgent
    tools: ToolSet

    def session_config(self) -> SessionConfig:
        return self.agent.config.session_config(self.tools.declarations())


@dataclass
class _Parsed:
    key: str
    agent: LoadedAgent
    tools: tuple[Tool, ...]
    handlers: dict[str, Handler] = field(default_factory=dict)
    switches: dict[str, str] = field(default_factory=dict)  # tool name -> target key


class AgentLoader:
    def __init__(
        self,
        settings: Settings,
        base_dir: Path,
        extra_hosts: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ):
        self.policy = HostPolicy.of(settings.tool_hosts + extra_hosts)
        self.base = base_dir.resolve()
        self.env = os.environ if env is None else env
        self._by_path: dict[Path, str] = {}
        self._parsed: dict[str, _Parsed] = {}

    def key_for(self, path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), self.base)).as_posix()

    def add(self, agent: LoadedAgent) -> str:
        """Parse an agent (and every agent it can switch to); returns its key."""
        if agent.path is None:
            key = DEFAULT_KEY
        else:
            resolved = agent.path.resolve()
            if resolved in self._by_path:
                return self._by_path[resolved]
            key = self.key_for(agent.path)
            self._by_path[resolved] = key
        loc = agent.locator or Locator(str(agent.path or "agent"))
        parsed = _Parsed(key, agent, parse_tools(agent.config.tools, loc, self.env))
        self._parsed[key] = parsed
        for tool in parsed.tools:
            if isinstance(tool.handler, SwitchAgentSpec):
                parsed.switches[tool.name] = self._switch_target(agent, loc, tool, tool.handler)
            else:
                parsed.handlers[tool.name] = self._handler(agent, loc, tool)
        return key

    def add_file(self, path: Path, loc: Locator, where: tuple[Any, ...]) -> str:
        """Add the agent file `path`, named by field `where` of the file `loc` describes."""
        resolved = path.resolve()
        if resolved in self._by_path:
            return self._by_path[resolved]
        if not path.is_file():
            raise loc.error(where, f"agent file {str(path)!r} does not exist")
        return self.add(load_agent(path))

    def build(self) -> dict[str, AgentEntry]:
        secrets: set[str] = set()
        for parsed in self._parsed.values():
            for tool in parsed.tools:
                secrets.update(tool.secrets)
        scrubber = Scrubber.of(secrets)
        toolsets: dict[str, ToolSet] = {}
        decls = {
            key: tuple(ToolDecl(t.name, t.description, t.parameters) for t in p.tools)
            for key, p in self._parsed.items()
        }
        for key, parsed in self._parsed.items():
            pairs: list[tuple[Tool, Handler]] = []
            for tool in parsed.tools:
                if tool.name in parsed.switches:
                    target = self._parsed[parsed.switches[tool.name]]
                    session = target.agent.config.session_config(decls[target.key])
                    pairs.append((tool, SwitchAgentHandler(target.key, session)))
                else:
                    pairs.append((tool, parsed.handlers[tool.name]))
            toolsets[key] = ToolSet(key, pairs, scrubber)
        return {key: AgentEntry(key, p.agent, toolsets[key]) for key, p in self._parsed.items()}

    def _switch_target(self, agent: LoadedAgent, loc: Locator, tool: Tool, spec: SwitchAgentSpec) -> str:
        return self.add_file(agent.directory / spec.agent, loc, tool.path + ("builtin", "agent"))

    def _handler(self, agent: LoadedAgent, loc: Locator, tool: Tool) -> Handler:
        spec = tool.handler
        where = tool.path
        if isinstance(spec, HttpSpec):
            http = HttpHandler(spec, tool.select, self.policy, spec.timeout or tool.timeout)
            host = http.info.hosts[0]
            if not self.policy.allows(host):
                raise loc.error(
                    where + ("http", "url"),
                    f"host {host!r} is not on the tool host allowlist "
                    f"({self.policy.describe()}); add it to VOICEGW_TOOL_HOSTS or tool_hosts in the routing file",
                )
            return http
        if isinstance(spec, TransferSpec):
            return TransferHandler(spec)
        if isinstance(spec, HangUpSpec):
            return HangUpHandler()
        if isinstance(spec, LookupSpec):
            table = load_table(agent.directory / spec.table, spec.key, spec.columns, loc, where + ("builtin",))
            return LookupHandler(spec, table)
        if isinstance(spec, StaticSpec):
            return StaticHandler(spec.result)
        if isinstance(spec, PythonSpec):
            return PythonHandler(spec.entry, load_entry(spec.entry, agent.directory, loc, where + ("python", "entry")))
        raise AssertionError(f"unhandled handler spec {type(spec).__name__}")
