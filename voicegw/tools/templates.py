"""Small string templates for tool configuration.

Two kinds of placeholder, resolved at different times:
- `${ENV_VAR}` comes from the environment and is resolved once, at start-up, so a missing variable
  refuses to start instead of failing mid-call; `${ENV_VAR:-default}` falls back to the default
  written in the file. Every value taken from the environment is remembered as a secret and
  scrubbed from anything the model, the call log or the console may see.
- `{{arg}}` comes from the model's arguments and is filled per call. In URLs it is percent-encoded,
  so an argument can never add a path segment, a query parameter or a different host.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ARG = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WHOLE_ARG = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")

SECRET_MARK = "[secret]"
MIN_SECRET_LEN = 4  # shorter values are not secrets and scrubbing them would mangle output


class TemplateError(ValueError):
    """A malformed template; the message says what is wrong."""


def check_syntax(text: str) -> None:
    """Refuse stray `{{`, `}}` or `${` that are not part of a well-formed placeholder."""
    rest = ARG.sub("", ENV.sub("", text))
    for token in ("{{", "}}", "${"):
        if token in rest:
            raise TemplateError(f"malformed placeholder near {token!r}: use {{{{name}}}} or ${{ENV_VAR}}")


def arg_names(text: str) -> set[str]:
    return set(ARG.findall(text))


def env_names(text: str) -> set[str]:
    return {m.group(1) for m in ENV.finditer(text)}


def resolve_env(text: str, env: Mapping[str, str], secrets: set[str]) -> str:
    """Replace `${NAME}` and `${NAME:-default}`; raises KeyError(NAME) for a missing variable
    without a default. Values from the environment are recorded as secrets; defaults are not."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or value == "":
            if default is None:
                raise KeyError(name)
            return default
        secrets.add(value)
        return value

    return ENV.sub(sub, text)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(text: str, args: Mapping[str, Any], encode: Callable[[str], str] | None = None) -> str:
    """Fill `{{arg}}` placeholders; missing (optional) arguments render as empty text."""
    enc = encode or (lambda s: s)
    return ARG.sub(lambda m: enc(as_text(args.get(m.group(1)))), text)


def url_quote(text: str) -> str:
    return quote(text, safe="")


def render_value(template: Any, args: Mapping[str, Any]) -> Any:
    """Fill a JSON body template. A string that is exactly `{{arg}}` keeps the argument's type."""
    if isinstance(template, str):
        whole = _WHOLE_ARG.match(template)
        if whole:
            return args.get(whole.group(1))
        return render(template, args)
    if isinstance(template, list):
        return [render_value(v, args) for v in template]
    if isinstance(template, dict):
        return {k: render_value(v, args) for k, v in template.items()}
    return template


def walk_strings(value: Any, path: tuple[Any, ...] = ()) -> Iterable[tuple[tuple[Any, ...], str]]:
    """Every string inside a nested template, with its path (for located errors)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, path + (k,))


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Scrubber:
    """Removes secret values (and their JSON- and URL-encoded forms) from text."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> Scrubber:
        forms: set[str] = set()
        for v in values:
            if len(v) < MIN_SECRET_LEN:
                continue
            forms.update({v, json.dumps(v)[1:-1], url_quote(v), quote(v)})
        # longest first, so a secret that contains another is replaced whole
        return cls(tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_LEN), key=len, reverse=True)))

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, SECRET_MARK)
        return s

    def value(self, v: Any) -> Any:
        if not self.secrets:
            return v
        return map_strings(v, self.text)
