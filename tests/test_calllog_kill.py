"""A process killed mid-call (SIGKILL) leaves a record that the next start marks interrupted."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import asyncpg
import pytest

from pg_fixture import pg_server, pg_url  # noqa: F401  (fixtures)
from voicegw.calllog.service import open_calllog

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from voicegw.calllog.entries import CallInfo, CallLogEntry
    from voicegw.calllog.service import open_calllog

    async def main(url):
        svc = await open_calllog(url)
        t0 = time.time()
        svc.call_started(CallInfo("CAKILL", "MZKILL", "+15550001111", "+15559990000", "support", t0))
        n = 0
        while True:
            for _ in range(10):
                svc.event("CAKILL", CallLogEntry("transcript", time.time(),
                          {"role": "caller", "item_id": f"i{n}", "text": f"line {n}"}))
                n += 1
            await svc.flush()
            print(f"WRITTEN {n}", flush=True)
            if n >= 50:
                # mid-call: keep the call open and the writer running until killed
                await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1]))
    """
)


async def _run_and_kill(url: str) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    written = 0
    try:
        deadline = time.monotonic() + 60
        while written < 50:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), deadline - time.monotonic())
            if not line:
                pytest.fail("the writer process exited early:\n" + proc.stderr.read())
            written = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return written


async def _check_interrupted(url: str, written: int) -> None:
    svc = await open_calllog(url)
    try:
        rec = await svc.store.get_call("CAKILL")
        assert rec is not None, "the killed call left no record"
        assert rec["status"] == "interrupted" and rec["end_reason"] == "interrupted"
        texts = [t["text"] for t in rec["transcript"]]
        assert texts[:written] == [f"line {i}" for i in range(written)]
        assert rec["from"] == "+15550001111" and rec["ended_at"] >= rec["started_at"]
    finally:
        await svc.aclose()


async def test_sigkill_mid_call_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    written = await _run_and_kill(url)
    await _check_interrupted(url, written)


async def test_sigkill_mid_call_postgres(pg_url: str) -> None:
    written = await _run_and_kill(pg_url)
    # the server notices the dead client's sessions (and frees its liveness lock) on its own
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        deadline = time.monotonic() + 30
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'voicegw-calllog' "
            "AND datname = current_database()"
        ):
            assert time.monotonic() < deadline, "the killed process's sessions are still open"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    await _check_interrupted(pg_url, written)
