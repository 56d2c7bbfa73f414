"""Agent files and environment settings: validated once, errors name file, line and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from voicegw.cli import main
from voicegw.config import Settings, load_agent, parse_duration
from voicegw.yamlsrc import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    return p


def test_valid_agent_maps_to_session_config(tmp_path: Path) -> None:
    agent = load_agent(write(tmp_path, """
name: billing
voice: verse
audio_mode: g711_ulaw
greeting: "Hi there"
turn_detection: {type: semantic_vad, eagerness: high, create_response: false, interrupt_response: false}
transcription: null
max_call_duration: 10m
"""))
    cfg = agent.config.session_config()
    assert cfg.audio_format == "g711_ulaw" and cfg.voice == "verse"
    assert cfg.turn_detection.type == "semantic_vad" and cfg.turn_detection.eagerness == "high"
    assert cfg.turn_detection.create_response is False and cfg.turn_detection.interrupt_response is False
    assert cfg.transcription_model is None
    assert agent.config.greeting is not None and agent.config.greeting.text == "Hi there"
    assert agent.config.max_call_duration == 600


@pytest.mark.parametrize("text,line,field", [
    ("name: a\nvoice: alloy\nturn_detection:\n  threshold: 7\n", 4, "turn_detection.threshold"),
    ("name: a\naudio_mode: opus\n", 2, "audio_mode"),
    ("name: a\ncolour: blue\n", 2, "colour"),
    ("name: a\nmax_call_duration: forever\n", 2, "max_call_duration"),
    ("name: a\nname: b\n", 2, "name"),
    ("name: [unclosed\n", 2, ""),
])
def test_bad_agent_file_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_agent(path)
    assert err.value.file == str(path)
    assert err.value.line == line, str(err.value)
    assert err.value.field == field, str(err.value)


def test_serve_refuses_to_start_on_a_bad_agent_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name: a\nturn_detection:\n  type: shouting\n")
    assert main(["serve", "--agent", str(path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3" in err and "turn_detection.type" in err


def test_model_target_from_environment() -> None:
    s = Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "rt",
                           "AZURE_OPENAI_API_VERSION": "2024-10-01-preview", "AZURE_OPENAI_API_KEY": "k"})
    assert s.model is not None and s.model.dialect == "preview"
    assert s.model.url == "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=rt"
    s = Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "rt"})
    assert s.model is not None and s.model.dialect == "ga" and s.model.use_entra and s.model.api_key is None
    assert s.model.url == "wss://res.openai.azure.com/openai/v1/realtime?model=rt"
    s = Settings.from_env({"OPENAI_API_KEY": "sk-x"})
    assert s.model is not None and s.model.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert "sk-x" not in repr(s) and "sk-x" not in s.model.describe()
    assert Settings.from_env({}).model is None
    with pytest.raises(ConfigError, match="AZURE_OPENAI_DEPLOYMENT"):
        Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://x"})


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400 and parse_duration("250ms") == 0.25 and parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_every_problem_at_once_unknown_fields_first_with_suggestions(tmp_path: Path) -> None:
    path = write(tmp_path, """
name: a
turn_detection:
  type: shouting
  treshold: 0.5
voise: alloy
tools:
  - name: lookup
    descripton: Look an order up.
    parameters: {type: object, properties: {}}
    builtin: {name: hang_up}
""")
    with pytest.raises(ConfigError) as err:
        load_agent(path)
    got = [(p.line, p.field, p.message) for p in err.value.problems]
    assert got == [
        (5, "turn_detection.treshold", "unknown field (did you mean 'threshold'?)"),
        (6, "voise", "unknown field (did you mean 'voice'?)"),
        (4, "turn_detection.type", "Input should be 'server_vad', 'semantic_vad' or 'none'"),
    ]
    assert (err.value.line, err.value.field) == (5, "turn_detection.treshold")  # the first problem
    assert str(err.value).splitlines() == [f"{path}:{line}: field '{f}' {m}" for line, f, m in got]


def test_tool_problems_name_unknown_then_missing_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voicegw.tools.check import check_config

    path = write(tmp_path, """
name: a
tools:
  - name: lookup_order
    descripton: x
    parameters: {type: object, properties: {}}
    http: {method: GET, urll: "http://127.0.0.1/x"}
""")
    assert check_config(path, Settings.from_env({})) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}:5: field 'tools[0].descripton' unknown field (did you mean 'description'?)",
        f"error: {path}:7: field 'tools[0].http.urll' unknown field (did you mean 'url'?)",
        f"error: {path}:4: field 'tools[0].description' required field is missing",
        f"error: {path}:7: field 'tools[0].http.url' required field is missing",
        "4 problems",
    ]
