"""The `voicegw` command line: version, help on every argument, pipes, errors without tracebacks."""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from voicegw import __version__
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.service import open_calllog
from voicegw.cli import build_parser, main

VOICEGW = [sys.executable, "-m", "voicegw.cli"]
ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys) -> None:
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"voicegw {__version__}"


def walk(parser: argparse.ArgumentParser, prefix: str = "voicegw"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prefix} {name}")
        else:
            yield prefix, action


def test_every_argument_has_help() -> None:
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, a in walk(build_parser())
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []
    # every sub-command is described in its parent's help too
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert {c.dest for c in action._choices_actions} == set(action.choices)


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"

    async def fill() -> None:
        svc = await open_calllog(f"sqlite:///{db}")
        t0 = time.time() - 3600
        for i in range(500):
            svc.call_started(CallInfo(f"CA{i:032d}", f"MZ{i}", "+15550001111", "+15559990000", "support", t0 + i))
            svc.event(f"CA{i:032d}", CallLogEntry("transcript", t0 + i, {"role": "caller", "item_id": "a", "text": "hello " * 20}))
        await svc.flush()
        await svc.aclose()

    asyncio.run(fill())
    env = {"VOICEGW_DATABASE_URL": f"sqlite:///{db}", "PATH": "/usr/bin:/bin"}
    for argv in (["calls", "list", "--limit", "500", "--json"], ["calls", "list", "--limit", "500"]):
        proc = subprocess.Popen([*VOICEGW, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # what `| head -1` does
        err = proc.stderr.read().decode()
        proc.wait(30)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert proc.returncode in (0, 141), (proc.returncode, err)
    # and through a real shell pipe
    shell = subprocess.run(f"{sys.executable} -m voicegw.cli calls list --limit 500 --json | head -1",
                           shell=True, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert shell.stdout.strip() == "[" and "Traceback" not in shell.stderr, shell.stderr


def test_config_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("name: a\nvoise: alloy\nturn_detection:\n  type: shouting\n")
    out = subprocess.run([*VOICEGW, "serve", "--agent", str(bad), "--port", "1"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if "configuration error" in line]
    assert lines == [
        f"voicegw: configuration error: {bad}:2: field 'voise' unknown field (did you mean 'voice'?)",
        f"voicegw: configuration error: {bad}:4: field 'turn_detection.type' "
        "Input should be 'server_vad', 'semantic_vad' or 'none'",
    ], out.stderr
