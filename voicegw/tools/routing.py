"""Which agent answers which dialed number.

A routing file is a small YAML mapping:

    default: support/triage.yaml
    numbers:
      "+15551230001": order_status/agent.yaml
      "+15551230002": appointments/agent.yaml
    tool_hosts: [api.example.com]

Agent paths are relative to the routing file. Every referenced agent, every agent they can switch
to, and all their tools are loaded and validated by `AgentRegistry.load` at start-up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voicegw.config import Settings, default_agent, load_agent
from voicegw.tools.loader import DEFAULT_KEY, AgentEntry, AgentLoader
from voicegw.yamlsrc import Locator, load_yaml, validation_error

__all__ = ["DEFAULT_KEY", "AgentEntry", "AgentRegistry", "RoutingConfig", "is_routing_data", "load_routing", "normalize_number"]

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    numbers: dict[str, str] = Field(default_factory=dict)
    tool_hosts: list[str] = Field(default_factory=list)

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_as_text(cls, v: Any) -> Any:
        # an unquoted +15551230001 is read by YAML as an integer; keep the plus if it was written
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v


def normalize_number(number: str) -> str:
    """'+1 (555) 123-0001' -> '+15551230001'; Twilio sends E.164 already, people type otherwise."""
    return re.sub(r"[\s\-().]", "", number or "")


def is_routing_data(data: Any) -> bool:
    """Routing files have `default` or `numbers`; agent files have neither field."""
    return isinstance(data, dict) and bool({"default", "numbers"} & set(data))


def load_routing(path: Path) -> tuple[RoutingConfig, Locator]:
    data, loc = load_yaml(path)
    if not isinstance(data, dict):
        raise loc.error((), "a routing file must be a mapping with default, numbers and tool_hosts")
    try:
        cfg = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, loc) from None
    for number in cfg.numbers:
        if not E164.match(number):
            raise loc.error(("numbers", number), "numbers must be E.164, quoted: \"+15551234567\"")
    return cfg, loc


@dataclass(frozen=True)
class AgentRegistry:
    entries: dict[str, AgentEntry]
    routes: dict[str, str]  # E.164 number -> agent key
    default_key: str
    source: Path | None = None  # the routing or agent file, None for the built-in default agent
    tool_hosts: tuple[str, ...] = ()
    kind: Literal["routing", "agent", "builtin"] = "builtin"

    @classmethod
    def load(cls, settings: Settings) -> AgentRegistry:
        if settings.routing_path is not None:
            return cls.from_routing(settings.routing_path, settings)
        if settings.agent_path is not None:
            return cls.from_agent(settings.agent_path, settings)
        agent = default_agent()
        loader = AgentLoader(settings, Path.cwd())
        key = loader.add(agent)
        return cls(loader.build(), {}, key, None, settings.tool_hosts)

    @classmethod
    def from_agent(cls, path: Path, settings: Settings) -> AgentRegistry:
        agent = load_agent(path)
        loader = AgentLoader(settings, path.parent)
        key = loader.add(agent)
        return cls(loader.build(), {}, key, path, settings.tool_hosts, "agent")

    @classmethod
    def from_routing(cls, path: Path, settings: Settings) -> AgentRegistry:
        cfg, loc = load_routing(path)
        loader = AgentLoader(settings, path.parent, tuple(cfg.tool_hosts))
        default_key = loader.add_file(path.parent / cfg.default, loc, ("default",))
        routes = {
            number: loader.add_file(path.parent / agent_file, loc, ("numbers", number))
            for number, agent_file in cfg.numbers.items()
        }
        hosts = settings.tool_hosts + tuple(cfg.tool_hosts)
        return cls(loader.build(), routes, default_key, path, hosts, "routing")

    def for_number(self, to_number: str) -> AgentEntry:
        """The agent for a dialed number, or the default agent."""
        key = self.routes.get(normalize_number(to_number), self.default_key)
        return self.entries[key]

    def get(self, key: str) -> AgentEntry:
        try:
            return self.entries[key]
        except KeyError:
            raise KeyError(f"no agent {key!r}; known: {', '.join(sorted(self.entries))}") from None

    @property
    def default(self) -> AgentEntry:
        return self.entries[self.default_key]

