"""`voicegw calls list | show SID | tail [SID] | prune --older-than 30d`: the call log in a terminal.

list, show and prune read the store directly (VOICEGW_DATABASE_URL, or the SQLite file under
the data directory). prune also removes the recordings (VOICEGW_RECORDINGS_DIR) of the calls it
removes, and any older recording whose call is no longer in the call log. tail follows a running
gateway's live stream with `--url` (the token from `--token` or VOICEGW_OPERATOR_TOKEN(S)), or else
polls the store for new events.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from voicegw.calllog.store import open_store, sqlite_path
from voicegw.config import Settings, parse_duration
from voicegw.recording.files import prune_recordings

POLL_S = 0.5
HTTP_TIMEOUT = httpx.Timeout(10.0, read=60.0)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("calls", help="read and follow the call log")
    sub = p.add_subparsers(dest="calls_command", required=True)
    ls = sub.add_parser("list", help="recent calls, newest first")
    ls.add_argument("--status", choices=["active", "completed", "interrupted"], help="only calls in this state")
    ls.add_argument("--number", help="part of the caller's or called number")
    ls.add_argument("--agent", help="only calls answered by this agent (its name:)")
    ls.add_argument("--search", dest="q", help="text in the transcript")
    ls.add_argument("--limit", type=int, default=20, help="at most this many calls (default: %(default)s)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("show", help="one call: transcript, timeline, latency")
    show.add_argument("sid", help="the call's CallSid (CA...)")
    show.add_argument("--json", action="store_true", help="print the full record as JSON")
    tail = sub.add_parser("tail", help="follow live events (all active calls, or one)")
    tail.add_argument("sid", nargs="?", help="one call's CallSid (default: every call)")
    tail.add_argument("--url", help="a running gateway's base URL (default: poll the database)")
    tail.add_argument("--token", help="operator token for --url (default: VOICEGW_OPERATOR_TOKEN)")
    tail.add_argument("--count", type=int, default=0, help="stop after this many events (0: follow forever)")
    prune = sub.add_parser("prune", help="delete ended calls older than a duration, and their recordings")
    prune.add_argument("--older-than", required=True, help="e.g. 30d, 12h")
    return p


async def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cmd = args.calls_command
    if cmd == "tail" and args.url:
        return await _tail_http(args, settings, out)
    missing = missing_database(settings)
    if missing:
        print(missing, file=sys.stderr)
        return 1
    store = open_store(settings.db_url)
    try:
        await store.migrate()
        if cmd == "list":
            rows, _ = await store.list_calls(status=args.status, number=args.number, agent=args.agent,
                                             q=args.q, limit=args.limit)
            if args.json:
                print(json.dumps(rows, indent=2, default=str), file=out)
            else:
                _print_list(rows, out)
            return 0
        if cmd == "show":
            rec = await store.get_call(args.sid)
            if rec is None:
                print(f"no call {args.sid}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(rec, indent=2, default=str), file=out)
            else:
                _print_record(rec, out)
            return 0
        if cmd == "tail":
            return await _tail_db(store, args, out)
        if cmd == "prune":
            try:
                seconds = parse_duration(args.older_than)
            except ValueError as exc:
                print(f"--older-than: {exc}", file=sys.stderr)
                return 2
            n = await store.prune(seconds)
            print(f"pruned {n} call(s) that ended more than {args.older_than} ago", file=out)

            async def call_exists(sid: str) -> bool:
                return await store.get_call(sid, with_events=False) is not None

            removed = await prune_recordings(settings.recordings_path, seconds, call_exists)
            print(f"removed {removed} recording(s) of calls no longer in the call log", file=out)
            return 0
        raise ValueError(f"unknown calls command {cmd!r}")
    finally:
        await store.aclose()


def missing_database(settings: Settings) -> str | None:
    """Why the SQLite call log cannot be read, or None. Reading never creates a database: an
    empty one made by a mistyped path would look like a call log without calls."""
    url = settings.db_url
    if not url.startswith("sqlite:"):
        return None
    path = sqlite_path(url)
    if path == ":memory:" or Path(path).is_file():
        return None
    source = "VOICEGW_DATABASE_URL" if settings.database_url else "VOICEGW_DATA_DIR"
    return (f"voicegw calls: no call log at {Path(path).resolve()} (from {source}); the gateway creates it "
            f"when it starts. Run this where the gateway runs, or set VOICEGW_DATABASE_URL=sqlite:///PATH "
            f"(or VOICEGW_DATA_DIR) to its database.")


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _duration(row: dict[str, Any]) -> str:
    secs = row.get("duration_s")
    if row.get("status") == "active" and row.get("started_at"):
        secs = time.time() - row["started_at"]
    if secs is None:
        return "-"
    return f"{int(secs) // 60}:{int(secs) % 60:02d}"


def _print_list(rows: list[dict[str, Any]], out: TextIO) -> None:
    print(f"{'CALL SID':36} {'STATUS':11} {'STARTED':19} {'DUR':>6} {'FROM':16} {'TO':16} AGENT", file=out)
    for r in rows:
        print(f"{r['call_sid']:36} {r['status']:11} {_when(r['started_at']):19} {_duration(r):>6} "
              f"{r['from']:16} {r['to']:16} {r['agent']}", file=out)


def describe(ev: dict[str, Any]) -> str:
    """One line for an event (the console's timeline wording)."""
    d, kind = ev.get("data") or {}, ev.get("kind")
    if kind == "transcript":
        return f"{d.get('role')}: {d.get('text')}" + ("  [cut at barge-in]" if d.get("cut") else "")
    if kind == "barge_in":
        return f"barge-in: heard {d.get('heard_ms')} ms of {d.get('produced_ms')} ms produced ({d.get('action')})"
    if kind == "tool.call":
        return f"tool {d.get('name')}({d.get('arguments')})"
    if kind == "tool.result":
        body = json.dumps(d.get("result"), default=str) if d.get("ok") else f"failed: {d.get('error')}"
        return f"tool {d.get('name')} -> {body} ({d.get('duration_ms')} ms)"
    if kind == "turn.latency":
        return f"turn latency {d.get('latency_ms')} ms"
    return f"{kind} {json.dumps(d, default=str, separators=(',', ':'))}"


def _print_record(rec: dict[str, Any], out: TextIO) -> None:
    print(f"call {rec['call_sid']}  {rec['status']}  {rec['from']} -> {rec['to']}  agent {rec['agent']}", file=out)
    print(f"started {_when(rec['started_at'])}  duration {_duration(rec)}  end {rec.get('end_reason') or '-'}", file=out)
    print("\ntranscript:", file=out)
    for turn in rec["transcript"]:
        print(f"  {turn['role']:6} {turn['text']}" + ("  [cut]" if turn["cut"] else ""), file=out)
    if rec["latency"]:
        print("\nturn latency (ms): " + ", ".join(f"{x['latency_ms']:.0f}" for x in rec["latency"]), file=out)
    usage = rec["usage"]
    print(f"\nusage: {usage.get('total_tokens', 0)} tokens over {usage.get('responses', 0)} responses", file=out)
    print("\ntimeline:", file=out)
    t0 = rec["started_at"] or 0
    for ev in rec["events"]:
        print(f"  +{ev['t'] - t0:8.2f}s  {describe(ev)}", file=out)


async def _tail_db(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    """Poll the store: one call's events from its start, or every call's from now on."""
    last_id = 0
    if args.sid is None:
        while batch := await store.events_after(last_id, None, 10000):
            last_id = batch[-1]["id"]
    shown = 0
    while True:
        for ev in await store.events_after(last_id, args.sid, 1000):
            last_id = ev["id"]
            print(f"{_when(ev['t'])} {ev['call_sid']} {describe(ev)}", file=out, flush=True)
            shown += 1
            if args.count and shown >= args.count:
                return 0
        await asyncio.sleep(POLL_S)


async def _tail_http(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    token = args.token or os.environ.get("VOICEGW_OPERATOR_TOKEN") or next(iter(settings.operator_tokens), None)
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = {"call": args.sid} if args.sid else {}
    shown = 0
    async with httpx.AsyncClient(base_url=args.url.rstrip("/"), timeout=HTTP_TIMEOUT) as client:
        async with client.stream("GET", "/api/live", params=params, headers=headers) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")
                print(f"{args.url}: HTTP {resp.status_code}: {body[:300]}", file=sys.stderr)
                return 1
            event = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    msg = json.loads(line[6:])
                    if event == "call.event":
                        print(f"{_when(msg['t'])} {msg['call_sid']} {describe(msg)}", file=out, flush=True)
                        shown += 1
                    elif event in ("call.started", "call.ended"):
                        print(f"{_when(time.time())} {msg['call_sid']} {event} "
                              f"{msg.get('from') or msg.get('reason') or ''}", file=out, flush=True)
                    if args.count and shown >= args.count:
                        return 0
    return 0
