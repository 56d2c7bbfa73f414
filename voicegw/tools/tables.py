"""Lookup tables for the `lookup` builtin: a CSV or YAML file shipped beside the agent file.

Loaded and checked once at start-up (the key column exists in every row) so that a typo in a table
refuses to start rather than making the agent say "I couldn't find that" to every caller.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicegw.tools.templates import as_text
from voicegw.yamlsrc import ConfigError, Locator, load_yaml


def normalize_key(value: Any) -> str:
    """Keys match case-insensitively and ignore surrounding and repeated whitespace."""
    return " ".join(as_text(value).split()).casefold()


@dataclass(frozen=True)
class Table:
    path: Path
    key: str
    rows: tuple[dict[str, Any], ...]

    def find(self, value: Any, limit: int, columns: list[str] | None) -> list[dict[str, Any]]:
        want = normalize_key(value)
        out: list[dict[str, Any]] = []
        for row in self.rows:
            if normalize_key(row.get(self.key)) == want:
                out.append({c: row.get(c) for c in columns} if columns else dict(row))
                if len(out) >= limit:
                    break
        return out


def load_table(path: Path, key: str, columns: list[str] | None, loc: Locator, where: tuple[Any, ...]) -> Table:
    """Load `path` (CSV or YAML); `loc`/`where` locate the tool field that names the table."""
    if not path.is_file():
        raise loc.error(where + ("table",), f"lookup table {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, key)
    elif suffix in (".yaml", ".yml"):
        rows = _yaml_rows(path, key)
    else:
        raise loc.error(where + ("table",), "a lookup table must be a .csv, .yaml or .yml file")
    present = set().union(*(r.keys() for r in rows)) if rows else {key}
    for col in columns or []:
        if col not in present:
            raise loc.error(where + ("columns",), f"column {col!r} is not in {path.name}")
    return Table(path, key, tuple(rows))


def _csv_rows(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or key not in reader.fieldnames:
                raise ConfigError(path, 1, key, f"the key column {key!r} is not in the header")
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise ConfigError(path, reader.line_num, "", "row has a different number of columns")
                if not (row.get(key) or "").strip():
                    raise ConfigError(path, reader.line_num, key, "empty key")
                rows.append({k.strip(): v.strip() for k, v in row.items()})
            return rows
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "", f"cannot read table: {exc}") from None


def _yaml_rows(path: Path, key: str) -> list[dict[str, Any]]:
    """A list of mappings, or a mapping of key -> row (the key is then filled in)."""
    data, loc = load_yaml(path)
    if isinstance(data, dict):
        items = [(k, {key: k, **v} if isinstance(v, dict) else v) for k, v in data.items()]
        paths = [(k,) for k, _ in items]
        rows_in = [v for _, v in items]
    elif isinstance(data, list):
        paths = [(i,) for i in range(len(data))]
        rows_in = data
    else:
        raise loc.error((), "a lookup table must be a list of rows or a mapping of key to row")
    rows = []
    for p, row in zip(paths, rows_in):
        if not isinstance(row, dict):
            raise loc.error(p, "each row must be a mapping of column to value")
        if row.get(key) in (None, ""):
            raise loc.error(p, f"row has no key column {key!r}")
        rows.append(row)
    return rows
