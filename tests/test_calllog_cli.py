"""`voicegw calls list | show | tail | prune`."""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import time

import pytest

from calllog_support import serve_console
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog import cli
from voicegw.calllog.service import open_calllog
from voicegw.config import Settings

TOKEN = "cli-op-token"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["calls", *argv])


@pytest.fixture
async def svc(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    s = await open_calllog(url)
    now = time.time()
    s.call_started(CallInfo("CAOLD", "MZ0", "+15550000000", "+15559990000", "support", now - 40 * 86400))
    s.call_ended("CAOLD", "caller_hangup", now - 40 * 86400 + 20)
    s.call_started(CallInfo("CANEW", "MZ1", "+15551112222", "+15559990000", "sales", now - 30))
    s.event("CANEW", CallLogEntry("transcript", now - 29, {"role": "caller", "item_id": "a", "text": "I need a refund"}))
    s.event("CANEW", CallLogEntry("tool.call", now - 28, {"call_id": "c1", "name": "refund", "arguments": '{"order": 7}'}))
    await s.flush()
    yield s, Settings.from_env({"VOICEGW_DATABASE_URL": url, "VOICEGW_OPERATOR_TOKENS": TOKEN,
                                "VOICEGW_RECORDINGS_DIR": str(tmp_path / "recordings")})
    await s.aclose()


async def run(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli.run(parse(*argv), settings, out)
    return code, out.getvalue()


async def test_list_and_show(svc) -> None:
    _, settings = svc
    code, text = await run(settings, "list")
    lines = text.splitlines()
    assert code == 0 and lines[0].startswith("CALL SID") and "CANEW" in lines[1] and "CAOLD" in lines[2]
    code, text = await run(settings, "list", "--status", "active", "--json")
    assert [r["call_sid"] for r in json.loads(text)] == ["CANEW"]
    code, text = await run(settings, "list", "--agent", "support")
    assert "CAOLD" in text and "CANEW" not in text
    code, text = await run(settings, "show", "CANEW")
    assert code == 0 and "I need a refund" in text and 'refund({"order": 7})' in text
    code, text = await run(settings, "show", "CANEW", "--json")
    assert json.loads(text)["transcript"][0]["text"] == "I need a refund"
    code, _ = await run(settings, "show", "NOPE")
    assert code == 1


async def test_prune(svc) -> None:
    _, settings = svc
    code, text = await run(settings, "prune", "--older-than", "30d")
    assert code == 0 and "pruned 1 call" in text
    _, text = await run(settings, "list")
    assert "CAOLD" not in text and "CANEW" in text
    code, _ = await run(settings, "prune", "--older-than", "soon")
    assert code == 2


async def test_tail_polls_the_database(svc) -> None:
    s, settings = svc
    task = asyncio.create_task(run(settings, "tail", "CANEW", "--count", "4"))
    s.event("CANEW", CallLogEntry("dtmf", time.time(), {"digit": "4"}))
    s.event("CANEW", CallLogEntry("transcript", time.time(), {"role": "agent", "item_id": "b", "text": "Done."}))
    await s.flush()
    code, text = await asyncio.wait_for(task, 10)
    lines = text.splitlines()  # the call's stored events, then the new ones
    assert code == 0 and len(lines) == 4 and "I need a refund" in lines[0]
    assert "dtmf" in lines[2] and "agent: Done." in lines[3]


async def test_tail_of_all_calls_starts_from_now(svc) -> None:
    s, settings = svc
    task = asyncio.create_task(run(settings, "tail", "--count", "1"))
    # events already stored (the refund call) are never shown; new ones are produced until
    # the tail, whose start is not observable from here, has picked one up
    s.call_started(CallInfo("CAX", started_at=time.time()))
    await s.flush()
    for _ in range(200):
        s.event("CAX", CallLogEntry("dtmf", time.time(), {"digit": "9"}))
        await s.flush()
        if task.done():
            break
        await asyncio.sleep(0.05)
    code, text = await asyncio.wait_for(task, 10)
    assert code == 0 and "CAX dtmf" in text and "refund" not in text


async def test_tail_follows_a_gateway(svc, capsys) -> None:
    s, settings = svc
    async with serve_console(s, settings) as url:
        code, _ = await run(settings, "tail", "--url", url, "--token", "wrong")
        assert code == 1 and "HTTP 403" in capsys.readouterr().err
        task = asyncio.create_task(run(settings, "tail", "CANEW", "--url", url, "--count", "3"))
        s.event("CANEW", CallLogEntry("barge_in", time.time(), {"item_id": "b", "heard_ms": 640, "produced_ms": 1500, "action": "truncate"}))
        code, text = await asyncio.wait_for(task, 10)  # the two stored events, then the live one
        lines = text.splitlines()
        assert code == 0 and len(lines) == 3
        assert "I need a refund" in lines[0] and "tool refund" in lines[1]
        assert "barge-in: heard 640 ms of 1500 ms produced" in lines[2]


async def test_reading_never_creates_an_empty_database(tmp_path, capsys) -> None:
    for settings, path in [
        (Settings.from_env({"VOICEGW_DATA_DIR": str(tmp_path / "nowhere")}), tmp_path / "nowhere" / "voicegw.db"),
        (Settings.from_env({"VOICEGW_DATABASE_URL": f"sqlite:///{tmp_path / 'typo.db'}"}), tmp_path / "typo.db"),
    ]:
        for argv in (("list",), ("show", "CA1"), ("tail", "--count", "1"), ("prune", "--older-than", "30d")):
            code, out = await run(settings, *argv)
            err = capsys.readouterr().err
            assert code == 1 and out == "", argv
            assert f"no call log at {path}" in err, err
            assert not path.exists() and not path.parent.exists() or not path.exists()
    assert list(tmp_path.iterdir()) == []
