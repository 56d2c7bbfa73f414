"""Tool declarations in agent YAML: valid files load, and every mistake names file, line and field."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from voicegw.config import Settings, load_agent
from voicegw.tools.runner import ToolSet, load_toolset
from voicegw.yamlsrc import ConfigError

SETTINGS = Settings(tool_hosts=("127.0.0.1", "*.example.com"))

ORDER_TOOL = """\
name: support
tools:
  - name: lookup_order
    description: Look up an order by its number.
    filler: One moment while I look that up.
    timeout: 5s
    parameters:
      type: object
      properties:
        order_id: {type: string, pattern: "^[0-9]+$"}
      required: [order_id]
    redact: [customer.email]
    http:
      method: GET
      url: "https://api.example.com/orders/{{order_id}}"
      headers:
        Authorization: "Bearer ${ACME_TOKEN}"
      retries: 2
      select: "$.order"
  - name: goodbye
    description: End the call.
    builtin: {name: hang_up}
"""


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    return hits[nth - 1]


def load(path: Path, settings: Settings = SETTINGS) -> ToolSet:
    return load_toolset(load_agent(path), settings)


def error_of(path: Path, settings: Settings = SETTINGS) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, settings)
    return info.value


def test_valid_file_loads_with_declarations_and_filler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_TOKEN", "tok-123456")
    tools = load(write(tmp_path, ORDER_TOOL))
    decls = tools.declarations()
    assert [d.name for d in decls] == ["lookup_order", "goodbye"]
    assert decls[0].parameters["required"] == ["order_id"]
    assert decls[1].parameters == {"type": "object", "properties": {}}
    assert tools.filler("lookup_order") == "One moment while I look that up."
    assert tools.filler("goodbye") is None
    assert tools.filler("nope") is None
    kinds = {b.tool.name: (b.tool.kind, b.tool.timeout) for b in tools.tools}
    assert kinds == {"lookup_order": ("http", 5.0), "goodbye": ("builtin:hang_up", 8.0)}


def test_missing_env_var_names_file_line_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_TOKEN", raising=False)
    path = write(tmp_path, ORDER_TOOL)
    err = error_of(path)
    assert err.file == str(path)
    assert err.field == "tools[0].http.headers.Authorization"
    assert err.line == line_of(path, "Authorization:")
    assert "ACME_TOKEN" in err.message
    assert f"agent.yaml:{err.line}: field 'tools[0].http.headers.Authorization'" in str(err)


@pytest.mark.parametrize(
    ("tool", "field", "needle", "message"),
    [
        # no handler at all
        ("""
          - name: t
            description: d
        """, "tools[0]", "- name: t", "exactly one handler"),
        # two handlers
        ("""
          - name: t
            description: d
            static: {result: 1}
            builtin: {name: hang_up}
        """, "tools[0]", "- name: t", "found builtin and static"),
        # a parameters block that is not a JSON Schema
        ("""
          - name: t
            description: d
            parameters:
              type: object
              properties:
                x: {type: strnig}
            static: {result: 1}
        """, "tools[0].parameters.properties.x.type", "x: {type: strnig}", "not a valid JSON Schema"),
        # parameters that are not an object schema
        ("""
          - name: t
            description: d
            parameters: {type: string}
            static: {result: 1}
        """, "tools[0].parameters", "parameters:", "type: object"),
        # an unknown builtin
        ("""
          - name: t
            description: d
            builtin: {name: launch_rockets}
        """, "tools[0].builtin.name", "builtin:", "unknown builtin 'launch_rockets'"),
        # a malformed URL template
        ("""
          - name: t
            description: d
            parameters: {type: object, properties: {id: {type: string}}}
            http: {url: "https://api.example.com/x/{{id"}
        """, "tools[0].http.url", "http:", "malformed placeholder"),
        # an argument may not choose the host
        ("""
          - name: t
            description: d
            parameters: {type: object, properties: {host: {type: string}}}
            http:
              url: "https://{{host}}/x"
        """, "tools[0].http.url", "url:", "may not choose the host"),
        # a placeholder naming no declared parameter
        ("""
          - name: t
            description: d
            http:
              url: "https://api.example.com/x/{{id}}"
        """, "tools[0].http.url", "url:", "{{id}} names no declared parameter"),
        # an unknown field
        ("""
          - name: t
            description: d
            colour: blue
            static: {result: 1}
        """, "tools[0].colour", "colour:", "unknown field"),
        # retries on a non-idempotent method
        ("""
          - name: t
            description: d
            http:
              method: post
              url: "https://api.example.com/x"
              retries: 2
        """, "tools[0].http.retries", "retries:", "idempotent"),
        # a host off the allowlist
        ("""
          - name: t
            description: d
            http:
              url: "https://internal.corp/x"
        """, "tools[0].http.url", "url:", "not on the tool host allowlist"),
        # a name the model API would refuse
        ("""
          - name: look up order
            description: d
            static: {result: 1}
        """, "tools[0].name", "- name:", "pattern"),
        # a transfer target that is neither E.164 nor SIP
        ("""
          - name: t
            description: d
            builtin: {name: transfer_call, target: "555-1234"}
        """, "tools[0].builtin.target", "builtin:", "E.164"),
        # a duration that is not one
        ("""
          - name: t
            description: d
            timeout: soon
            static: {result: 1}
        """, "tools[0].timeout", "timeout:", "duration"),
        # a select path that cannot be parsed
        ("""
          - name: t
            description: d
            http:
              url: "https://api.example.com/x"
              select: "a..b"
        """, "tools[0].http.select", "select:", "cannot parse path"),
        # a python entry that does not exist
        ("""
          - name: t
            description: d
            python: {entry: "no_such_module_xyz:fn"}
        """, "tools[0].python.entry", "python:", "cannot import"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, tool: str, field: str, needle: str, message: str) -> None:
    text = "name: t\ntools:\n" + textwrap.indent(textwrap.dedent(tool).strip("\n"), "  ") + "\n"
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.file == str(path)
    assert err.field == field
    assert err.line == line_of(path, needle)
    assert message in err.message


def test_second_tool_error_points_at_its_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        tools:
          - name: first
            description: fine
            static: {result: 1}
          - name: second
            description: broken
            http:
              url: "ftp://api.example.com/x"
        """)
    err = error_of(path)
    assert (err.field, err.line) == ("tools[1].http.url", line_of(path, "url:"))
    assert "http://" in err.message


def test_duplicate_tool_names(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        tools:
          - name: same
            description: a
            static: {result: 1}
          - name: same
            description: b
            static: {result: 2}
        """)
    err = error_of(path)
    assert (err.field, err.line) == ("tools[1].name", line_of(path, "- name: same", 2))


def test_lookup_table_is_checked_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "slots.csv").write_text("day,time\nmonday,09:00\n")
    path = write(tmp_path, """\
        tools:
          - name: find
            description: find slots
            parameters: {type: object, properties: {date: {type: string}}}
            builtin: {name: lookup, table: slots.csv, key: date}
        """)
    err = error_of(path)
    assert err.file == str(tmp_path / "slots.csv")
    assert err.line == 1 and "key column 'date'" in err.message

    (tmp_path / "slots.csv").unlink()
    err = error_of(path)
    assert err.field == "tools[0].builtin.table" and "does not exist" in err.message


def test_switch_agent_target_must_exist_and_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        tools:
          - name: to_billing
            description: hand over to billing
            builtin: {name: switch_agent, agent: billing.yaml}
        """)
    err = error_of(path)
    assert (err.field, err.line) == ("tools[0].builtin.agent", line_of(path, "builtin:"))

    billing = write(tmp_path, "tools:\n  - name: x\n    description: y\n", "billing.yaml")
    err = error_of(path)
    assert err.file == str(billing) and err.field == "tools[0]"


def test_switch_agent_cycle_loads_and_carries_target_declarations(tmp_path: Path) -> None:
    write(tmp_path, """\
        name: triage
        tools:
          - name: to_billing
            description: hand over to billing
            builtin: {name: switch_agent, agent: billing.yaml}
        """, "triage.yaml")
    write(tmp_path, """\
        name: billing
        instructions: You handle billing.
        tools:
          - name: back_to_triage
            description: hand back
            builtin: {name: switch_agent, agent: triage.yaml}
          - name: balance
            description: the balance
            static: {result: {balance: 12}}
        """, "billing.yaml")
    tools = load(tmp_path / "triage.yaml")
    assert [d.name for d in tools.declarations()] == ["to_billing"]
    switch = tools.tools[0].handler
    assert switch.agent == "billing.yaml"  # type: ignore[attr-defined]
    session = switch.session  # type: ignore[attr-defined]
    assert session.instructions == "You handle billing."
    assert [d.name for d in session.tools] == ["back_to_triage", "balance"]
