"""A calling campaign: every number of a CSV file dialed through the gateway, a few at a time.

The CSV has a header row with a `to` column (the number to call), optionally an `agent` column,
and any other columns, which become the call's context (`{{column}}` in the agent's texts; empty
cells are left out). At most `concurrency` calls are in flight, and at most `cps` are placed a second
(Twilio queues an account's outbound calls beyond its calls-per-second limit, one a second unless
raised, so a faster burst only waits at Twilio). A call is in flight from the moment
it is placed until the gateway's call record says it ended (`until="ended"`, the default: the record
is polled with a growing interval) or, with `until="created"`, only until Twilio accepted it. A call
nobody answered gets its record from Twilio's final status (end reason busy, no_answer, failed or
canceled); one that never gets a record within `answer_timeout_s` (the status was lost) counts as
`no_answer`.

Every number ends with one result (a JSON line or a CSV row): `ended` (with the end reason and the
answering-machine verdict from the call record), `created`, `no_answer`, `failed` (the gateway or
Twilio refused it; the message says why) or `watch_timeout` (still going when we stopped watching).

The state file records each number's progress, rewritten atomically (temporary file, fsync,
rename) at every change. Re-running the same campaign skips the numbers already done and goes on
watching the calls that were in flight, so nobody is dialed twice; `retry_failed` dials the failed
ones again. A gateway that is full or draining (503), or unreachable, is retried with backoff.
"""
from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from voicegw.dial.client import DialRefused, GatewayClient
from voicegw.telephony.grants import CONTEXT_KEY
from voicegw.tools.routing import normalize_number

FINAL = frozenset({"ended", "created", "no_answer", "failed", "watch_timeout"})
RESULT_FIELDS = ("to", "status", "call_sid", "agent", "answered_by", "end_reason", "duration_s", "error")
STATE_VERSION = 1


class CampaignError(Exception):
    """The campaign cannot start: the CSV or the state file is unusable (the message says where)."""


@dataclass(frozen=True)
class Target:
    line: int
    to: str
    agent: str | None
    context: dict[str, str]


def read_targets(path: Path) -> list[Target]:
    """The numbers to call, in file order, one per number (a repeated number is called once)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [(c or "").strip() for c in reader.fieldnames or []]
            if "to" not in columns:
                raise CampaignError(f"{path}: the header row has no 'to' column (it has: {', '.join(columns) or 'nothing'})")
            for column in columns:
                if column not in ("to", "agent") and not CONTEXT_KEY.match(column):
                    raise CampaignError(f"{path}: column {column!r} cannot be a context variable: use letters, "
                                        "digits and _ (not first)")
            seen: set[str] = set()
            targets = []
            for row in reader:
                cells = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
                to = normalize_number(cells.get("to", ""))
                if not to or to in seen:
                    continue
                seen.add(to)
                context = {k: v for k, v in cells.items() if k not in ("to", "agent") and v}
                targets.append(Target(reader.line_num, to, cells.get("agent") or None, context))
            return targets
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CampaignError(f"{path}: {exc}") from None


class StateFile:
    """Each number's progress: {"version": 1, "numbers": {to: {status, call_sid, ...}}}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.numbers: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CampaignError(f"{path}: not a campaign state file ({exc})") from None
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(data.get("numbers"), dict):
                raise CampaignError(f"{path}: not a campaign state file (version {STATE_VERSION})")
            self.numbers = data["numbers"]

    def get(self, to: str) -> dict[str, Any] | None:
        return self.numbers.get(to)

    def put(self, to: str, entry: dict[str, Any]) -> None:
        self.numbers[to] = entry
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"version": STATE_VERSION, "numbers": self.numbers}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class ResultWriter:
    """One result per number, appended as it comes: JSON lines, or CSV rows when `csv_rows`."""

    def __init__(self, out: TextIO, csv_rows: bool) -> None:
        self.out = out
        self._csv = csv.DictWriter(out, RESULT_FIELDS, extrasaction="ignore") if csv_rows else None
        if self._csv is not None and _at_start(out):
            self._csv.writeheader()

    def write(self, entry: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow({k: entry.get(k, "") for k in RESULT_FIELDS})
        else:
            self.out.write(json.dumps({k: entry.get(k) for k in RESULT_FIELDS if entry.get(k) is not None}) + "\n")
        self.out.flush()


def _at_start(out: TextIO) -> bool:
    try:
        return out.tell() == 0
    except (OSError, ValueError):  # a pipe or a terminal
        return True


@dataclass
class CampaignOptions:
    from_: str
    concurrency: int = 5
    cps: float = 1.0  # calls placed per second, retries included (0: no limit)
    until: str = "ended"  # or "created"
    machine_detection: bool = True
    answer_timeout_s: float = 120.0  # no call record by then: not answered
    call_timeout_s: float = 3600.0  # stop watching a call after this long
    retry_failed: bool = False
    retries: int = 6  # of a number the gateway could not place now (503, unreachable)
    poll_min_s: float = 0.5
    poll_max_s: float = 10.0


@dataclass
class Campaign:
    client: GatewayClient
    targets: list[Target]
    state: StateFile
    options: CampaignOptions
    results: ResultWriter
    progress: Callable[[str], None]
    counts: dict[str, int] = field(default_factory=dict)
    _next_place_at: float = 0.0  # monotonic time of the next free placement slot (cps)

    def pending(self) -> list[Target]:
        todo = []
        for t in self.targets:
            entry = self.state.get(t.to)
            if entry is None or entry.get("status") not in FINAL:
                todo.append(t)
            elif entry["status"] == "failed" and self.options.retry_failed:
                todo.append(t)
        return todo

    async def run(self) -> dict[str, int]:
        todo = self.pending()
        skipped = len(self.targets) - len(todo)
        pace = f", {self.options.cps:g} placed a second" if self.options.cps > 0 else ""
        self.progress(f"{len(self.targets)} numbers: {skipped} already done, {len(todo)} to call, "
                      f"{self.options.concurrency} at a time{pace}")
        queue: Iterator[tuple[int, Target]] = iter(enumerate(todo, 1))
        workers = [asyncio.ensure_future(self._worker(queue, len(todo))) for _ in range(max(1, self.options.concurrency))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        return self.counts

    async def _worker(self, queue: Iterator[tuple[int, Target]], total: int) -> None:
        for index, target in queue:  # an iterator shared by the workers: each number taken once
            entry = await self._call(target, f"[{index}/{total}] {target.to}")
            self.state.put(target.to, entry)
            self.results.write(entry)
            self.counts[entry["status"]] = self.counts.get(entry["status"], 0) + 1

    async def _call(self, target: Target, tag: str) -> dict[str, Any]:
        entry = self.state.get(target.to)
        if entry is not None and entry.get("status") == "placed" and entry.get("call_sid"):
            self.progress(f"{tag}: still in flight from an earlier run ({entry['call_sid']}): watching it")
        else:
            entry = await self._place(target, tag)
            if entry["status"] != "placed":
                return entry
            self.state.put(target.to, entry)
        if self.options.until == "created":
            return {**entry, "status": "created"}
        return await self._watch(entry, tag)

    async def _place(self, target: Target, tag: str) -> dict[str, Any]:
        base: dict[str, Any] = {"to": target.to, "agent": target.agent}
        delay = 1.0
        for attempt in range(self.options.retries + 1):
            await self._placement_slot()
            try:
                placed = await self.client.place(target.to, self.options.from_, agent=target.agent,
                                                 context=target.context,
                                                 machine_detection=self.options.machine_detection)
            except DialRefused as exc:
                if not exc.retry_later or attempt == self.options.retries:
                    self.progress(f"{tag}: not placed: {exc}")
                    return {**base, "status": "failed", "error": str(exc)}
                self.progress(f"{tag}: gateway busy ({exc}); trying again in {delay:.0f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            if placed.missing_context:
                self.progress(f"{tag}: context lacks {', '.join(placed.missing_context)} (left empty)")
            self.progress(f"{tag}: placed {placed.call_sid}")
            return {**base, "status": "placed", "call_sid": placed.call_sid, "agent": placed.agent,
                    "placed_at": time.time()}
        raise AssertionError("unreachable")

    async def _placement_slot(self) -> None:
        """Wait for the next slot of `cps` (slots are handed out in order across the workers)."""
        if self.options.cps <= 0:
            return
        now = time.monotonic()
        at = max(now, self._next_place_at)
        self._next_place_at = at + 1.0 / self.options.cps
        if at > now:
            await asyncio.sleep(at - now)

    async def _watch(self, entry: dict[str, Any], tag: str) -> dict[str, Any]:
        """Poll the call's record until it ended (or never appears, or takes too long)."""
        sid = str(entry["call_sid"])
        placed_at = float(entry.get("placed_at") or time.time())
        interval = self.options.poll_min_s
        seen = False
        while True:
            try:
                record = await self.client.record(sid)
            except DialRefused as exc:
                if not exc.retry_later:
                    return {**entry, "status": "failed", "error": f"call record: {exc}"}
                record = None
            waited = time.time() - placed_at
            if record is not None:
                if not seen:
                    seen = True
                    self.progress(f"{tag}: answered ({sid})")
                if record.get("status") != "active":
                    final = {**entry, "status": "ended", "end_reason": record.get("end_reason"),
                             "duration_s": record.get("duration_s"), "answered_by": answered_by(record)}
                    self.progress(f"{tag}: ended ({final['end_reason']}"
                                  + (f", answered by {final['answered_by']})" if final["answered_by"] else ")"))
                    return final
            elif not seen and waited > self.options.answer_timeout_s:
                self.progress(f"{tag}: no answer within {self.options.answer_timeout_s:.0f}s")
                return {**entry, "status": "no_answer"}
            if waited > self.options.call_timeout_s:
                self.progress(f"{tag}: still in progress after {self.options.call_timeout_s:.0f}s; not watching it")
                return {**entry, "status": "watch_timeout"}
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.options.poll_max_s)


def answered_by(record: dict[str, Any]) -> str | None:
    """The answering-machine verdict the call record holds, if any."""
    verdict = record.get("answered_by")
    return verdict if isinstance(verdict, str) else None
