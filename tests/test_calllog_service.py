"""The call log service (queue + batching writer), the live bus and cross-replica fan-out."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from pg_fixture import pg_server, pg_url  # noqa: F401  (fixtures)
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.bus import Bus, SubscriptionDropped
from voicegw.calllog.service import CallLogService, open_calllog
from voicegw.calllog.sqlite import set_wal
from voicegw.calllog.store import open_store


async def next_msg(sub, timeout: float = 5.0) -> dict:
    msg = await sub.get(timeout)
    assert msg is not None, f"no live message within {timeout}s"
    return msg


async def test_bus_fans_out_and_filters() -> None:
    bus = Bus()
    everything, one = bus.subscribe(), bus.subscribe(call_sid="CA2")
    bus.publish({"type": "event", "call_sid": "CA1", "kind": "dtmf"})
    bus.publish({"type": "event", "call_sid": "CA2", "kind": "dtmf"})
    assert [(await next_msg(everything))["call_sid"] for _ in range(2)] == ["CA1", "CA2"]
    assert (await next_msg(one))["call_sid"] == "CA2"
    assert await one.get(0.05) is None
    one.close()
    assert bus.subscriber_count == 1


async def test_slow_subscriber_is_dropped_not_waited_for() -> None:
    bus = Bus()
    slow, fast = bus.subscribe(maxsize=2), bus.subscribe(maxsize=100)
    for i in range(5):
        bus.publish({"type": "event", "call_sid": "CA1", "n": i})
    assert slow.dropped and bus.dropped_subscribers == 1 and bus.subscriber_count == 1
    assert [(await next_msg(slow))["n"] for _ in range(2)] == [0, 1]
    with pytest.raises(SubscriptionDropped):
        await slow.get(1.0)
    assert [(await next_msg(fast))["n"] for _ in range(5)] == list(range(5))


async def test_service_writes_and_publishes_in_order(tmp_path) -> None:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        sub = svc.bus.subscribe()
        t0 = time.time()
        svc.call_started(CallInfo("CA1", "MZ1", "+1555", "+1666", "support", t0))
        for i in range(20):
            svc.event("CA1", CallLogEntry("transcript", t0 + i, {"role": "caller", "item_id": f"i{i}", "text": f"line {i}"}))
        svc.call_ended("CA1", "caller_hangup", t0 + 30)
        await svc.flush()
        first = await next_msg(sub)
        assert first["type"] == "call.started" and first["from"] == "+1555"
        events = [await next_msg(sub) for _ in range(20)]
        assert [e["data"]["text"] for e in events] == [f"line {i}" for i in range(20)]
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        ended = await next_msg(sub)
        assert ended["type"] == "call.ended" and ended["duration_s"] == pytest.approx(30)
        rec = await svc.store.get_call("CA1")
        assert rec["status"] == "completed" and len(rec["events"]) == 20
        assert [e["id"] for e in rec["events"]] == [e["id"] for e in events]
    finally:
        await svc.aclose()


async def test_full_queue_drops_events_and_never_blocks(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    svc = CallLogService(store, max_queue=5)
    svc.call_started(CallInfo("CA1", started_at=time.time()))
    for i in range(12):
        svc.event("CA1", CallLogEntry("dtmf", time.time(), {"digit": str(i % 10)}))
    assert svc.dropped == 7
    await svc.start()
    try:
        await svc.flush()
        assert len((await store.get_call("CA1"))["events"]) == 5
    finally:
        await svc.aclose()


async def test_store_failures_are_retried(tmp_path, monkeypatch) -> None:
    svc = await open_calllog(f"sqlite:///{tmp_path / 'c.db'}")
    real = svc.store.append_events
    failures = [RuntimeError("disk hiccup")]

    async def flaky(call_sid, events):
        if failures:
            raise failures.pop()
        return await real(call_sid, events)

    monkeypatch.setattr("voicegw.calllog.service.RETRY_DELAYS", (0.01, 0.01))
    monkeypatch.setattr(svc.store, "append_events", flaky)
    try:
        svc.call_started(CallInfo("CA1", started_at=time.time()))
        svc.event("CA1", CallLogEntry("dtmf", time.time(), {"digit": "1"}))
        await svc.flush()
        assert len((await svc.store.get_call("CA1"))["events"]) == 1 and svc.lost == 0
    finally:
        await svc.aclose()


async def test_aclose_writes_what_is_queued(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    svc = await open_calllog(url, batch_window=5.0)
    svc.call_started(CallInfo("CA1", started_at=time.time()))
    svc.event("CA1", CallLogEntry("dtmf", time.time(), {"digit": "1"}))
    await svc.aclose()
    store = open_store(url)
    try:
        assert len((await store.get_call("CA1"))["events"]) == 1
    finally:
        await store.aclose()


async def test_restart_marks_calls_of_a_stopped_process_interrupted(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    dead = open_store(url, owner="thishost:999999999:gone")
    await dead.migrate()
    await dead.open_call(CallInfo("CA1", started_at=time.time()))
    await dead.aclose()
    svc = await open_calllog(url, owner="thishost:999999998:new")
    try:
        # another host name: not judged by pid; the stale rule has not fired yet
        assert (await svc.store.get_call("CA1", with_events=False))["status"] == "active"
    finally:
        await svc.aclose()
    svc = await open_calllog(url, stale_after_s=-1)
    try:
        assert (await svc.store.get_call("CA1", with_events=False))["status"] == "interrupted"
    finally:
        await svc.aclose()


async def test_listen_notify_reaches_another_replica(pg_url: str) -> None:
    a = await open_calllog(pg_url)
    b = await open_calllog(pg_url)
    try:
        sub_b = b.bus.subscribe()
        t0 = time.time()
        a.call_started(CallInfo("CA1", "MZ1", "+1555", "+1666", "support", t0))
        a.event("CA1", CallLogEntry("transcript", t0, {"role": "caller", "item_id": "i1", "text": "hello from replica a"}))
        big = "x" * 20000
        a.event("CA1", CallLogEntry("tool.result", t0, {"call_id": "c1", "name": "lookup", "ok": True, "result": big}))
        a.event("CA1", CallLogEntry("dtmf", t0, {"digit": "7"}))
        sent = time.monotonic()
        started = await next_msg(sub_b)
        assert started["type"] == "call.started" and started["agent"] == "support"
        msgs = [await next_msg(sub_b) for _ in range(3)]
        print(f"replica fan-out: {1000 * (time.monotonic() - sent):.0f} ms for the first batch")
        assert msgs[0]["data"]["text"] == "hello from replica a"
        assert msgs[1]["kind"] == "tool.result" and msgs[1]["data"]["result"] == big
        assert msgs[2]["data"] == {"digit": "7"}
        # replica b starting did not take replica a's live call for an orphan
        assert (await b.store.get_call("CA1", with_events=False))["status"] == "active"
        # and a replica does not hear its own notifications twice
        sub_a = a.bus.subscribe()
        a.call_ended("CA1", "caller_hangup", t0 + 1)
        assert (await next_msg(sub_a))["type"] == "call.ended"
        assert (await next_msg(sub_b))["type"] == "call.ended"
        await a.flush()
        assert await sub_a.get(0.3) is None
    finally:
        await a.aclose()
        await b.aclose()


def test_the_switch_to_wal_is_retried_while_another_worker_holds_the_file() -> None:
    """Workers starting together race for `PRAGMA journal_mode=WAL`; the loser is told "database
    is locked" at once and must try again, not die at start-up."""
    answers = [sqlite3.OperationalError("database is locked")] * 2 + [None]
    tried: list[str] = []
    pauses: list[float] = []

    def execute(sql: str) -> None:
        tried.append(sql)
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    set_wal(execute, pauses.append)
    assert tried == ["PRAGMA journal_mode=WAL"] * 3 and len(pauses) == 2

    def broken(sql: str) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        set_wal(broken, pauses.append)

    def always_locked(sql: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):  # not for ever
        set_wal(always_locked, lambda s: None, wait_s=0.0)
