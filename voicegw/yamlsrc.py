"""YAML loading that remembers where every value came from.

`load_yaml(path)` returns plain Python data plus a `Locator` mapping each key path to its line,
so a validation error can name file, line and field. Used by every config file voicegw reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import difflib
from typing import Any, Iterable, Sequence, get_args

import yaml
from pydantic import BaseModel


class ConfigError(Exception):
    """A configuration problem, pinned to file:line and a dotted field path.

    One file can have several problems: `problems` lists them all (this one first, unknown
    fields before missing ones), so a single run reports everything to fix; `file`, `line`,
    `field` and `message` describe the first.
    """

    def __init__(self, file: str | Path, line: int | None, field_path: str, message: str,
                 more: Sequence["ConfigError"] = ()):
        self.file = str(file)
        self.line = line
        self.field = field_path
        self.message = message
        self.problems: list[ConfigError] = [self, *more]
        super().__init__("\n".join(p.location() for p in self.problems))

    def location(self) -> str:
        """`file:line: field 'a.b' message` for this problem alone."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f" field '{self.field}'" if self.field else ""
        return f"{where}:{what} {self.message}"


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


# pydantic error types in the order they are reported: what is there but should not be comes
# before what is missing, so a misspelt field is read as such and not as a missing one
_ORDER = {"extra_forbidden": 0, "missing": 2}


def validation_error(exc: Any, loc: Locator, prefix: tuple[Any, ...] = (),
                     model: type[BaseModel] | None = None) -> ConfigError:
    """Every error of a pydantic ValidationError as one located ConfigError: unknown fields
    first (with a "did you mean" when a known field of `model` is close), then wrong values,
    then missing fields, each in document order. `model` defaults to the model the error names."""
    model = model or _model_named(getattr(exc, "title", ""))
    problems: list[tuple[int, int, ConfigError]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        clean = _clean_path(prefix + tuple(err["loc"]), loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            if model is not None and clean and isinstance(clean[-1], str):
                known = _fields_at(model, clean[len(prefix):-1])
                close = difflib.get_close_matches(clean[-1], sorted(known), n=1, cutoff=0.6)
                if close:
                    msg += f" (did you mean '{close[0]}'?)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        problem = loc.error(clean, msg)
        if (problem.field, problem.message) in seen:  # union members repeat the same complaint
            continue
        seen.add((problem.field, problem.message))
        problems.append((_ORDER.get(err["type"], 1), problem.line or 0, problem))
    problems.sort(key=lambda p: (p[0], p[1]))
    first, *rest = [p for _, _, p in problems]
    return ConfigError(first.file, first.line, first.field, first.message, rest)


def _clean_path(path: tuple[Any, ...], loc: Locator) -> tuple[Any, ...]:
    """pydantic puts validator and discriminator tags into loc; keep only parts of the document."""
    path = tuple(p for p in path if not (isinstance(p, str) and p.startswith("function-")))
    clean: tuple[Any, ...] = ()
    for part in path:
        if clean + (part,) in loc.lines or isinstance(part, int):
            clean += (part,)
        elif isinstance(part, str) and not part.islower() and "[" not in part:
            continue
        else:
            clean += (part,)
    return clean


def _model_named(name: str) -> type[BaseModel] | None:
    """The loaded pydantic model with this class name, if exactly one has it."""
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [BaseModel]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__name__ == name and sub.__module__.startswith("voicegw"):
                found.append(sub)
    return found[0] if len(set(found)) == 1 else None


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> set[str]:
    """The field names (and aliases) a mapping at `path` inside `model` may have."""
    models = [model]
    for part in path:
        nxt: list[type[BaseModel]] = []
        for m in models:
            if isinstance(part, int):
                nxt.append(m)  # a list item: the models were already unwrapped to the item type
                continue
            f = m.model_fields.get(part)
            if f is not None:
                nxt += _models_in(f.annotation)
        models = nxt
    names: set[str] = set()
    for m in models:
        for name, f in m.model_fields.items():
            names.add(f.alias or name)
    return names


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out += _models_in(arg)
    return out
