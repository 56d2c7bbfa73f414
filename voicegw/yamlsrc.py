"""YAML loading that remembers where every value came from.

`load_yaml(path)` returns plain Python data plus a `Locator` mapping each key path to its line,
so a validation error can name file, line and field. Used by every config file voicegw reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(Exception):
    """A configuration problem, pinned to file:line and a dotted field path."""

    def __init__(self, file: str | Path, line: int | None, field_path: str, message: str):
        self.file = str(file)
        self.line = line
        self.field = field_path
        self.message = message
        where = f"{self.file}:{line}" if line else self.file
        what = f" field '{field_path}'" if field_path else ""
        super().__init__(f"{where}:{what} {message}")


@dataclass
class Locator:
    file: str
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, path: Iterable[Any]) -> int | None:
        """Line of the deepest known prefix of `path` (1-based)."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def error(self, path: Iterable[Any], message: str) -> ConfigError:
        p = tuple(path)
        return ConfigError(self.file, self.line(p), dotted(p), message)


def dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _construct(node: yaml.Node, path: tuple[Any, ...], loc: Locator, loader: yaml.SafeLoader) -> Any:
    loc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                raise ConfigError(loc.file, key_node.start_mark.line + 1, dotted(path + (key,)), "duplicate key")
            loc.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), loc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), loc, loader) for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, file: str | Path) -> tuple[Any, Locator]:
    loc = Locator(str(file))
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loc
        return _construct(node, (), loc, loader), loc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> tuple[Any, Locator]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, None, "", f"cannot read file: {exc.strerror}") from None
    return load_yaml_text(text, p)


def validation_error(exc: Any, loc: Locator, prefix: tuple[Any, ...] = ()) -> ConfigError:
    """Turn the first error of a pydantic ValidationError into a located ConfigError."""
    err = exc.errors()[0]
    path = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic puts discriminator tags into loc; keep only parts that exist in the document
    clean: tuple[Any, ...] = ()
    for part in path:
        if clean + (part,) in loc.lines or isinstance(part, int):
            clean += (part,)
        elif isinstance(part, str) and not part.islower() and "[" not in part:
            continue
        else:
            clean += (part,)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return loc.error(clean, msg)
