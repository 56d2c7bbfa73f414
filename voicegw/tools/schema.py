"""The shape of a tool in an agent file, validated completely at start-up.

Pydantic checks the shape of each entry; `parse_tools` then checks what pydantic cannot see (exactly
one handler, a valid JSON Schema for the parameters, placeholders that name declared arguments,
environment variables that exist) and pins every problem to file, line and field.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voicegw.config import parse_duration
from voicegw.tools import templates
from voicegw.tools.paths import Segment, parse_path
from voicegw.yamlsrc import Locator, validation_error

NAME_RULE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HANDLER_KEYS = ("http", "builtin", "static", "python")
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
DEFAULT_TIMEOUT = 8.0
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SIP_URI = re.compile(r"^sips?:[^@\s]+@[^\s]+$")


def _duration(v: Any) -> float:
    secs = parse_duration(v)
    if not 0.1 <= secs <= 300:
        raise ValueError("must be between 100ms and 5m")
    return secs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSpec(_Strict):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: Literal["arguments"] | dict[str, Any] | list[Any] | None = None
    timeout: float | None = None  # per attempt; the tool's timeout bounds all attempts
    retries: int = Field(default=0, ge=0, le=5)
    select: str | None = None
    max_bytes: int = Field(default=256 * 1024, ge=1, le=16 * 1024 * 1024)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("query", mode="before")
    @classmethod
    def _query_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: templates.as_text(x) if isinstance(x, (int, float, bool)) else x for k, x in v.items()}
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> Any:
        return None if v is None else _duration(v)


class TransferSpec(_Strict):
    name: Literal["transfer_call"]
    target: str  # E.164 number or sip: URI; may be ${ENV_VAR}
    announcement: str | None = None  # said to the person answering, before the caller is connected
    mode: Literal["cold", "warm"] = "cold"  # warm: caller on hold, the human hears a summary first
    timeout: float = 30.0  # warm: how long the human's phone may ring before the caller returns

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        secs = parse_duration(v)
        if not 5 <= secs <= 120:
            raise ValueError("must be between 5s and 2m")
        return secs


class HangUpSpec(_Strict):
    name: Literal["hang_up"]


class SwitchAgentSpec(_Strict):
    name: Literal["switch_agent"]
    agent: str  # agent file, relative to this agent file


class LookupSpec(_Strict):
    name: Literal["lookup"]
    table: str  # CSV or YAML file, relative to this agent file
    key: str  # column to match
    argument: str | None = None  # which argument holds the key; defaults to the column name
    limit: int = Field(default=10, ge=1, le=100)
    columns: list[str] | None = None  # columns to return; all by default


BUILTINS: dict[str, type[_Strict]] = {
    "transfer_call": TransferSpec,
    "hang_up": HangUpSpec,
    "switch_agent": SwitchAgentSpec,
    "lookup": LookupSpec,
}
BuiltinSpec = TransferSpec | HangUpSpec | SwitchAgentSpec | LookupSpec


class StaticSpec(_Strict):
    result: Any = None


class PythonSpec(_Strict):
    entry: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


class ToolSpec(_Strict):
    name: str = Field(pattern=NAME_RULE.pattern)
    description: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    filler: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    redact: list[str] = Field(default_factory=list)
    http: HttpSpec | None = None
    builtin: dict[str, Any] | None = None
    static: StaticSpec | None = None
    python: PythonSpec | None = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        return _duration(v)


HandlerSpec = HttpSpec | BuiltinSpec | StaticSpec | PythonSpec


@dataclass(frozen=True)
class Tool:
    """One validated tool, its environment placeholders already resolved."""

    name: str
    description: str
    parameters: dict[str, Any]
    filler: str | None
    timeout: float
    redact: tuple[tuple[Segment, ...], ...]
    handler: HandlerSpec
    kind: str  # http | builtin:<name> | static | python
    path: tuple[Any, ...]  # where it sits in the agent file, for later located errors
    select: tuple[Segment, ...] | None = None
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def parse_tools(
    raw: list[dict[str, Any]], loc: Locator, env: Mapping[str, str], prefix: tuple[Any, ...] = ("tools",)
) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = prefix + (i,)
        tool = parse_tool(item, loc, env, where)
        if tool.name in seen:
            raise loc.error(where + ("name",), f"duplicate tool name {tool.name!r} (also tools[{seen[tool.name]}])")
        seen[tool.name] = i
        tools.append(tool)
    return tuple(tools)


def parse_tool(item: Any, loc: Locator, env: Mapping[str, str], where: tuple[Any, ...]) -> Tool:
    if not isinstance(item, dict):
        raise loc.error(where, "a tool must be a mapping with name, description, parameters and a handler")
    try:
        spec = ToolSpec.model_validate(item)
    except ValidationError as exc:
        raise validation_error(exc, loc, where) from None
    present = [k for k in HANDLER_KEYS if item.get(k) is not None]
    if len(present) != 1:
        found = " and ".join(present) if present else "none"
        raise loc.error(where, f"a tool needs exactly one handler ({', '.join(HANDLER_KEYS)}); found {found}")
    params = _check_parameters(spec.parameters, loc, where + ("parameters",))
    redact = tuple(_path(p, loc, where + ("redact", j)) for j, p in enumerate(spec.redact))
    secrets: set[str] = set()
    kind = present[0]
    select = None
    handler: HandlerSpec
    if spec.http is not None:
        handler, select = _check_http(spec.http, params, loc, env, where + ("http",), secrets)
    elif spec.builtin is not None:
        handler = _check_builtin(spec.builtin, params, loc, env, where + ("builtin",), secrets)
        kind = f"builtin:{handler.name}"
    elif spec.static is not None:
        handler = spec.static
    else:
        assert spec.python is not None
        handler = spec.python
    return Tool(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        filler=spec.filler,
        timeout=spec.timeout,
        redact=redact,
        handler=handler,
        kind=kind,
        path=where,
        select=select,
        secrets=frozenset(secrets),
    )


def _check_parameters(schema: dict[str, Any], loc: Locator, where: tuple[Any, ...]) -> set[str]:
    """The parameters must be a valid JSON Schema describing an object; returns its property names."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise loc.error(where + tuple(exc.path), f"not a valid JSON Schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise loc.error(where, "tool parameters must be a JSON Schema with type: object")
    props = schema.get("properties") or {}
    for req in schema.get("required") or []:
        if req not in props:
            raise loc.error(where + ("required",), f"required argument {req!r} is not among the properties")
    return set(props)


def _path(text: str, loc: Locator, where: tuple[Any, ...]) -> tuple[Segment, ...]:
    try:
        return parse_path(text)
    except ValueError as exc:
        raise loc.error(where, str(exc)) from None


def _template(
    text: str, params: set[str], loc: Locator, env: Mapping[str, str], where: tuple[Any, ...], secrets: set[str]
) -> str:
    """Check a template's placeholders and resolve its environment variables."""
    try:
        templates.check_syntax(text)
    except templates.TemplateError as exc:
        raise loc.error(where, str(exc)) from None
    for name in sorted(templates.arg_names(text)):
        if name not in params:
            raise loc.error(where, f"placeholder {{{{{name}}}}} names no declared parameter")
    try:
        return templates.resolve_env(text, env, secrets)
    except KeyError as exc:
        raise loc.error(where, f"environment variable {exc.args[0]} is not set") from None


def _check_http(
    spec: HttpSpec, params: set[str], loc: Locator, env: Mapping[str, str], where: tuple[Any, ...], secrets: set[str]
) -> tuple[HttpSpec, tuple[Segment, ...] | None]:
    url = _template(spec.url, params, loc, env, where + ("url",), secrets)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise loc.error(where + ("url",), "must be an absolute http:// or https:// URL")
    if templates.arg_names(parts.netloc):
        raise loc.error(where + ("url",), "arguments may not choose the host: use {{...}} only in the path or query")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise loc.error(where + ("url",), f"bad host or port: {exc}") from None
    if not host:
        raise loc.error(where + ("url",), "the URL has no host")
    if parts.username or parts.password:
        raise loc.error(where + ("url",), "put credentials in headers (from ${ENV_VAR}), not in the URL")
    headers: dict[str, str] = {}
    for k, v in spec.headers.items():
        if templates.ARG.search(k) or templates.ENV.search(k):
            raise loc.error(where + ("headers", k), "header names cannot contain placeholders")
        headers[k] = _template(v, params, loc, env, where + ("headers", k), secrets)
    query = {k: _template(v, params, loc, env, where + ("query", k), secrets) for k, v in spec.query.items()}
    body: Any = spec.body
    if isinstance(body, (dict, list)):
        for sub, text in list(templates.walk_strings(body)):
            _template(text, params, loc, env, where + ("body",) + sub, secrets)
        body = templates.map_strings(body, lambda s: templates.resolve_env(s, env, secrets))
    if spec.body is not None and spec.method in ("GET", "HEAD"):
        raise loc.error(where + ("body",), f"a {spec.method} request has no body; use query instead")
    if spec.retries and spec.method not in IDEMPOTENT:
        raise loc.error(where + ("retries",), f"retries are only allowed for idempotent methods, not {spec.method}")
    select = _path(spec.select, loc, where + ("select",)) if spec.select is not None else None
    resolved = spec.model_copy(update={"url": url, "headers": headers, "query": query, "body": body})
    return resolved, select


def _check_builtin(
    raw: dict[str, Any], params: set[str], loc: Locator, env: Mapping[str, str], where: tuple[Any, ...], secrets: set[str]
) -> BuiltinSpec:
    name = raw.get("name")
    model = BUILTINS.get(name) if isinstance(name, str) else None
    if model is None:
        raise loc.error(where + ("name",), f"unknown builtin {name!r}; expected one of {', '.join(BUILTINS)}")
    try:
        spec: BuiltinSpec = model.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        raise validation_error(exc, loc, where) from None
    if isinstance(spec, TransferSpec):
        target = _template(spec.target, set(), loc, env, where + ("target",), secrets).strip()
        if not (E164.match(target) or SIP_URI.match(target)):
            raise loc.error(where + ("target",), "must be an E.164 number (+15551234567) or a sip: URI")
        return spec.model_copy(update={"target": target})
    if isinstance(spec, LookupSpec):
        arg = spec.argument or spec.key
        if arg not in params:
            raise loc.error(where + ("argument" if spec.argument else "key",),
                            f"the tool's parameters declare no argument {arg!r} to look up by")
    return spec
