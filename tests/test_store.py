"""The call log store suite, run against SQLite and a real PostgreSQL server."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest

from pg_fixture import pg_server, pg_url  # noqa: F401  (fixtures)
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.store import Store, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.migrate()
    yield s
    await s.aclose()


def info(sid: str, t: float, frm: str = "+15550001111", agent: str = "support") -> CallInfo:
    return CallInfo(call_sid=sid, stream_sid="MZ" + sid, from_number=frm, to_number="+15559990000",
                    agent=agent, started_at=t)


def conversation(t0: float) -> list[CallLogEntry]:
    return [
        CallLogEntry("stream.started", t0, {"stream_sid": "MZ1", "tracks": ["inbound"]}),
        CallLogEntry("speech.started", t0 + 1, {"audio_start_ms": 1000}),
        CallLogEntry("speech.stopped", t0 + 2, {"audio_end_ms": 2000}),
        CallLogEntry("transcript", t0 + 2.1, {"role": "caller", "item_id": "i1", "text": "Where is my parcel?", "cut": False}),
        CallLogEntry("response.started", t0 + 2.2, {"response_id": "r1"}),
        CallLogEntry("turn.latency", t0 + 2.5, {"item_id": "i2", "latency_ms": 480.0}),
        CallLogEntry("tool.call", t0 + 2.6, {"call_id": "c1", "name": "track", "arguments": '{"id": "42"}'}),
        CallLogEntry("tool.result", t0 + 2.9, {"call_id": "c1", "name": "track", "ok": True, "result": {"eta": "today"}, "duration_ms": 300.0}),
        CallLogEntry("transcript", t0 + 3, {"role": "agent", "item_id": "i2", "text": "It arrives today, and then", "cut": False}),
        CallLogEntry("barge_in", t0 + 3.5, {"item_id": "i2", "heard_ms": 1200, "produced_ms": 2400, "action": "truncate", "cancelled": True}),
        CallLogEntry("transcript", t0 + 3.6, {"role": "agent", "item_id": "i2", "text": "It arrives today", "cut": True}),
        CallLogEntry("response.done", t0 + 3.7, {"response_id": "r1", "status": "cancelled",
                                              "usage": {"total_tokens": 100, "input_tokens": 60, "output_tokens": 40,
                                                        "input_token_details": {"audio_tokens": 50}}}),
        CallLogEntry("response.done", t0 + 4, {"response_id": "r2", "status": "completed",
                                            "usage": {"total_tokens": 10, "input_tokens": 6, "output_tokens": 4,
                                                      "input_token_details": {"audio_tokens": 5}}}),
        CallLogEntry("dtmf", t0 + 4.1, {"digit": "5"}),
    ]


async def test_migrations_are_idempotent(store: Store, store_url: str) -> None:
    await store.migrate()
    other = open_store(store_url)
    try:
        await asyncio.gather(other.migrate(), store.migrate())
        await other.open_call(info("CA1", time.time()))
        assert (await store.get_call("CA1", with_events=False))["status"] == "active"
    finally:
        await other.aclose()


async def test_open_append_close_and_record(store: Store) -> None:
    t0 = 1_700_000_000.0
    await store.open_call(info("CA1", t0))
    ids = await store.append_events("CA1", conversation(t0)[:5])
    ids += await store.append_events("CA1", conversation(t0)[5:])
    assert ids == sorted(ids) and len(set(ids)) == len(conversation(t0))
    await store.close_call("CA1", "caller_hangup", t0 + 5)

    rec = await store.get_call("CA1")
    assert rec is not None
    assert (rec["status"], rec["end_reason"], rec["from"], rec["agent"]) == (
        "completed", "caller_hangup", "+15550001111", "support")
    assert rec["duration_s"] == pytest.approx(5.0)
    assert [e["kind"] for e in rec["events"]] == [e.kind for e in conversation(t0)]
    assert [e["id"] for e in rec["events"]] == ids
    assert rec["events"][6]["data"] == {"call_id": "c1", "name": "track", "arguments": '{"id": "42"}'}
    assert [(t["role"], t["text"], t["cut"]) for t in rec["transcript"]] == [
        ("caller", "Where is my parcel?", False), ("agent", "It arrives today", True)]
    assert rec["latency"] == [{"item_id": "i2", "latency_ms": 480.0, "t": t0 + 2.5}]
    assert rec["usage"]["total_tokens"] == 110 and rec["usage"]["responses"] == 2
    assert rec["usage"]["input_token_details"] == {"audio_tokens": 55}
    assert [(b["heard_ms"], b["produced_ms"]) for b in rec["barge_ins"]] == [(1200, 2400)]
    tc = rec["tool_calls"]
    assert len(tc) == 1 and tc[0]["arguments"] == '{"id": "42"}' and tc[0]["result"] == {"eta": "today"}
    assert tc[0]["ok"] is True and tc[0]["duration_ms"] == 300.0
    assert rec["dtmf"][0]["digit"] == "5"
    assert await store.get_call("nope") is None
    one = await store.get_event(ids[3])
    assert one is not None and one["data"]["text"] == "Where is my parcel?"
    assert [e["id"] for e in await store.events_after(ids[10], "CA1")] == ids[11:]


async def test_events_for_a_call_never_opened_create_it(store: Store) -> None:
    t0 = time.time()
    await store.append_events("CAX", [CallLogEntry("call.started", t0, {"call_sid": "CAX", "from": "+1", "to": "+2", "agent": "a"})])
    row = await store.get_call("CAX", with_events=False)
    assert row is not None and (row["from"], row["to"], row["agent"], row["status"]) == ("+1", "+2", "a", "active")


async def test_list_filters_search_and_pagination(store: Store) -> None:
    t0 = 1_700_000_000.0
    for i in range(7):
        sid = f"CA{i:02d}"
        await store.open_call(info(sid, t0 + i, frm=f"+1555000{i:04d}", agent="sales" if i % 2 else "support"))
        await store.append_events(sid, [CallLogEntry("transcript", t0 + i, {"role": "caller", "item_id": "x", "text": f"order {i} 100%_done"})])
        if i < 5:
            await store.close_call(sid, "caller_hangup", t0 + i + 1)

    rows, nxt = await store.list_calls()
    assert [r["call_sid"] for r in rows] == [f"CA{i:02d}" for i in range(6, -1, -1)] and nxt is None
    assert {r["call_sid"] for r in (await store.list_calls(status="active"))[0]} == {"CA05", "CA06"}
    assert {r["call_sid"] for r in (await store.list_calls(agent="sales"))[0]} == {"CA01", "CA03", "CA05"}
    assert [r["call_sid"] for r in (await store.list_calls(number="0003"))[0]] == ["CA03"]
    assert [r["call_sid"] for r in (await store.list_calls(number="9990000"))[0]][:1] == ["CA06"]
    assert [r["call_sid"] for r in (await store.list_calls(since=t0 + 2, until=t0 + 4))[0]] == ["CA03", "CA02"]
    assert [r["call_sid"] for r in (await store.list_calls(q="ORDER 4"))[0]] == ["CA04"]
    assert (await store.list_calls(q="100%_"))[0] and not (await store.list_calls(q="100%x"))[0]
    assert (await store.list_calls(q="nothing like this"))[0] == []

    seen, cursor = [], None
    while True:
        page, cursor = await store.list_calls(limit=3, cursor=cursor)
        seen += [r["call_sid"] for r in page]
        assert len(page) <= 3
        if cursor is None:
            break
    assert seen == [f"CA{i:02d}" for i in range(6, -1, -1)]
    with pytest.raises(ValueError):
        await store.list_calls(status="bogus")
    with pytest.raises(ValueError):
        await store.list_calls(cursor="!!not-a-cursor")


async def test_same_start_time_paginates_without_loss(store: Store) -> None:
    t0 = 1_700_000_000.0
    for i in range(5):
        await store.open_call(info(f"CB{i}", t0))
    seen, cursor = [], None
    for _ in range(10):
        page, cursor = await store.list_calls(limit=2, cursor=cursor)
        seen += [r["call_sid"] for r in page]
        if cursor is None:
            break
    assert sorted(seen) == [f"CB{i}" for i in range(5)] and len(seen) == 5


async def test_mark_interrupted(store: Store) -> None:
    t0 = time.time() - 100
    await store.open_call(info("CA1", t0))
    await store.append_events("CA1", [CallLogEntry("speech.started", t0 + 7, {})])
    await store.open_call(info("CA2", t0 + 50))
    await store.open_call(info("CA3", t0))
    await store.close_call("CA3", "caller_hangup", t0 + 3)
    assert await store.mark_interrupted(older_than_start=t0 + 10) == 1
    rec = await store.get_call("CA1")
    assert rec["status"] == "interrupted" and rec["end_reason"] == "interrupted"
    assert rec["ended_at"] == pytest.approx(t0 + 7) and rec["duration_s"] == pytest.approx(7)
    assert (await store.get_call("CA3"))["status"] == "completed"
    assert await store.mark_interrupted(owner="someone-else") == 0
    assert await store.mark_interrupted() == 1
    assert (await store.get_call("CA2"))["status"] == "interrupted"


async def test_reclaim_orphans_spares_live_owners(store: Store, store_url: str) -> None:
    dead = open_store(store_url, owner="ghost-host:1:dead")
    try:
        await dead.open_call(info("CA1", time.time()))
    finally:
        await dead.aclose()
    await store.open_call(info("CA2", time.time()))
    # an owner on another host cannot be judged dead by pid; on PostgreSQL its lock is free
    reclaimed = await store.reclaim_orphans()
    rows = {r["call_sid"]: r["status"] for r in (await store.list_calls())[0]}
    assert rows["CA2"] == "active"
    if store_url.startswith("postgresql"):
        assert reclaimed == 1 and rows["CA1"] == "interrupted"
    else:
        assert reclaimed == 0 and rows["CA1"] == "active"
        assert await store.mark_interrupted(stale_before=time.time() + 1, owner="ghost-host:1:dead") == 1


async def test_prune(store: Store) -> None:
    now = time.time()
    await store.open_call(info("OLD", now - 40 * 86400))
    await store.append_events("OLD", [CallLogEntry("dtmf", now - 40 * 86400, {"digit": "1"})])
    await store.close_call("OLD", "caller_hangup", now - 40 * 86400 + 10)
    await store.open_call(info("OLDACTIVE", now - 40 * 86400))
    await store.open_call(info("NEW", now - 86400))
    await store.close_call("NEW", "caller_hangup", now - 86400 + 10)
    assert await store.prune(30 * 86400) == 1
    assert await store.get_call("OLD") is None
    assert await store.get_call("OLDACTIVE") is not None and await store.get_call("NEW") is not None
    assert all(e["call_sid"] != "OLD" for e in await store.events_after(0))


async def test_many_concurrent_calls(store: Store) -> None:
    t0 = time.time()

    async def one(i: int) -> None:
        sid = f"CC{i:03d}"
        await store.open_call(info(sid, t0 + i * 0.001))
        for j in range(5):
            await store.append_events(sid, [CallLogEntry("transcript", t0 + j, {"role": "caller", "item_id": f"{sid}-{j}", "text": f"call {i} line {j}"}),
                                            CallLogEntry("dtmf", t0 + j, {"digit": str(j)})])
        await store.close_call(sid, "caller_hangup", t0 + 10)

    await asyncio.gather(*(one(i) for i in range(40)))
    rows, _ = await store.list_calls(limit=100)
    assert len(rows) == 40 and all(r["status"] == "completed" and r["event_count"] == 10 for r in rows)
    rec = await store.get_call("CC017")
    assert [t["text"] for t in rec["transcript"]] == [f"call 17 line {j}" for j in range(5)]
    assert [r["call_sid"] for r in (await store.list_calls(q="call 23 line 4"))[0]] == ["CC023"]


async def test_list_figures_and_overview(store: Store) -> None:
    t0 = 1_700_000_000.0
    await store.open_call(info("CA1", t0))
    await store.append_events("CA1", conversation(t0))
    await store.close_call("CA1", "caller_hangup", t0 + 5)
    await store.open_call(info("CA2", t0 + 3600))
    await store.append_events("CA2", [
        CallLogEntry("transcript", t0 + 3601, {"role": "agent", "item_id": "g", "text": "Hello!"}),
        CallLogEntry("turn.latency", t0 + 3602, {"item_id": "g", "latency_ms": 900.0}),
        CallLogEntry("turn.latency", t0 + 3603, {"item_id": "h", "latency_ms": 700.0}),
        CallLogEntry("tool.call", t0 + 3604, {"call_id": "x", "name": "track", "arguments": "{}"}),
        CallLogEntry("tool.result", t0 + 3605, {"call_id": "x", "name": "track", "ok": False, "error": "timeout"}),
    ])
    await store.open_call(info("CA3", t0 + 3700))  # still active, no events

    rows, _ = await store.list_calls()
    by_sid = {r["call_sid"]: r for r in rows}
    one = by_sid["CA1"]
    assert (one["snippet"], one["snippet_role"], one["turns"], one["latency_p50_ms"]) == (
        "Where is my parcel?", "caller", 2, 480.0)
    assert (one["tools"], one["tool_errors"], one["barge_in_count"]) == (1, 0, 1)
    two = by_sid["CA2"]
    assert (two["snippet"], two["snippet_role"], two["latency_p50_ms"], two["tools"], two["tool_errors"]) == (
        "Hello!", "agent", 700.0, 1, 1)
    assert (by_sid["CA3"]["turns"], by_sid["CA3"]["latency_p50_ms"], by_sid["CA3"]["snippet"]) == (0, None, "")

    ov = await store.overview(t0 - 10, t0 + 7200)
    assert ov["calls"] == 3
    assert ov["calls_per_hour"] == [{"hour": (t0 // 3600) * 3600, "calls": 1},
                                    {"hour": (t0 // 3600 + 1) * 3600, "calls": 2}]
    assert ov["latency"] == {"turns": 3, "p50_ms": 700.0, "p95_ms": 900.0}
    assert ov["tools"] == {"calls": 2, "errors": 1, "error_rate": 0.5}
    assert ov["end_reasons"] == [{"reason": "active", "calls": 2}, {"reason": "caller_hangup", "calls": 1}]
    empty = await store.overview(t0 + 90_000, t0 + 99_000)
    assert empty["calls"] == 0 and empty["latency"]["p50_ms"] is None and empty["tools"]["error_rate"] is None

    rec = await store.get_call("CA1")
    assert rec is not None
    assert [(b["generated"], b["heard"]) for b in rec["barge_ins"]] == [("It arrives today, and then", "It arrives today")]
    [turn] = rec["waterfall"]
    assert turn["speech_stopped_t"] == pytest.approx(t0 + 2.02) and turn["response_started_t"] == t0 + 2.2
    assert turn["first_audio_t"] == t0 + 2.5 and turn["latency_ms"] == 480.0
    assert turn["model_ms"] == pytest.approx(180.0) and turn["audio_ms"] == pytest.approx(300.0)
