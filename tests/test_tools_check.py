"""`voicegw check-config`: the summary table for valid files, exit code 2 and a located error otherwise;
routing by dialed number."""
from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import pytest

from voicegw.config import Settings
from voicegw.tools.check import check_config
from voicegw.tools.routing import AgentRegistry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


NO_HOSTS = Settings()


def run(path: Path, settings: Settings = NO_HOSTS) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(path, settings, out, err)
    return code, out.getvalue(), err.getvalue()


def row(text: str, *cells: str) -> bool:
    """Some line of `text` holds these cells in order, separated by column padding."""
    pattern = r"\s{2,}".join(re.escape(c) for c in cells)
    return any(re.search(pattern, line) for line in text.splitlines())


def test_routing_file_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_TOKEN", "tok-for-check")
    code, out, err = run(EXAMPLES / "routing.yaml")
    assert (code, err) == (0, "")
    assert out.startswith(f"routing file: {EXAMPLES / 'routing.yaml'}")
    assert row(out, "+15550100002", "order_status/agent.yaml")
    assert row(out, "+15550100003", "appointments/agent.yaml")
    assert row(out, "(default)", "order_status/agent.yaml")
    assert "tool hosts: 127.0.0.1" in out
    assert "agent order_status/agent.yaml: name=order-status voice=alloy audio=g711_ulaw vad=server_vad" in out
    assert row(out, "lookup_order", "http", "GET 127.0.0.1", "127.0.0.1", "6s")
    assert row(out, "transfer_to_human", "builtin:transfer_call", "-> +15550100199")
    assert row(out, "find_slots", "builtin:lookup", "slots.csv by weekday")
    assert row(out, "book_slot", "python", "booking:book_slot")
    assert out.rstrip().endswith("OK: 2 agent(s), 6 tool(s)")
    assert "tok-for-check" not in out


def test_reference_agent_file_loads_with_every_handler_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_TOKEN", "tok-for-check")
    code, out, err = run(EXAMPLES / "agent.yaml", Settings(tool_hosts=("127.0.0.1",)))
    assert code == 0, err
    assert out.startswith("agent file:")
    for kind in ("http", "builtin:transfer_call", "builtin:lookup", "python", "static", "builtin:switch_agent",
                 "builtin:hang_up"):
        assert re.search(rf"\s{kind}\s", out), kind
    assert "agent appointments/agent.yaml:" in out  # the switch_agent target is validated too


def test_missing_env_var_is_exit_2_with_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_API_TOKEN", raising=False)
    code, out, err = run(EXAMPLES / "routing.yaml")
    agent = EXAMPLES / "order_status" / "agent.yaml"
    line = next(i + 1 for i, t in enumerate(agent.read_text().splitlines()) if "Authorization:" in t)
    assert code == 2 and out == ""
    assert err == (f"error: {agent}:{line}: field 'tools[0].http.headers.Authorization' "
                   "environment variable DEMO_API_TOKEN is not set\n")


def test_agent_file_host_not_allowlisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_TOKEN", "tok")
    code, _out, err = run(EXAMPLES / "order_status" / "agent.yaml")  # no VOICEGW_TOOL_HOSTS
    assert code == 2
    assert "field 'tools[0].http.url'" in err and "not on the tool host allowlist" in err


def test_routing_errors_name_routing_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent("""\
        default: agent.yaml
        numbers:
          "+15550001111": missing.yaml
        """))
    (tmp_path / "agent.yaml").write_text("name: a\n")
    code, _out, err = run(path)
    assert code == 2 and err.startswith(f"error: {path}:3: field 'numbers.+15550001111'")
    assert "does not exist" in err

    path.write_text("default: agent.yaml\nnumbers:\n  5550001111: agent.yaml\n")
    code, _out, err = run(path)
    assert code == 2 and "E.164" in err and f"{path}:" in err

    path.write_text("numbers: {}\ndefault: agent.yaml\ncolour: red\n")
    code, _out, err = run(path)
    assert code == 2 and f"{path}:3: field 'colour' unknown field" in err


def test_registry_routes_numbers_and_falls_back_to_default(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "b.yaml").write_text("name: b\nvoice: verse\n")
    (tmp_path / "routing.yaml").write_text('default: a.yaml\nnumbers:\n  "+15550002222": b.yaml\n')
    registry = AgentRegistry.load(Settings(routing_path=tmp_path / "routing.yaml"))
    assert registry.for_number("+1 (555) 000-2222").key == "b.yaml"
    assert registry.for_number("+15559999999").key == "a.yaml"
    assert registry.get("b.yaml").session_config().voice == "verse"
    with pytest.raises(KeyError):
        registry.get("c.yaml")

    builtin = AgentRegistry.load(Settings())
    assert builtin.kind == "builtin" and builtin.for_number("+15550002222").key == "default"
    assert builtin.default.session_config().tools == ()
