"""The `book_slot` tool of the appointments example: a Python handler (`booking:book_slot`).

It records each booking as one JSON line in $APPOINTMENTS_BOOKINGS (default
data/appointments.jsonl) and refuses a slot that is already booked, so the agent can offer another.
Raising `ToolError` hands the message to the model; returning a value hands it the value.
"""
from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path
from typing import Any

from voicegw.tools.contract import ToolContext
from voicegw.tools import ToolError

SLOTS = Path(__file__).with_name("slots.csv")
_lock = threading.Lock()  # sync handlers run in worker threads; two calls may book at once


def bookings_file() -> Path:
    return Path(os.environ.get("APPOINTMENTS_BOOKINGS") or "data/appointments.jsonl")


def read_bookings(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or bookings_file()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _slot(slot_id: str) -> dict[str, str] | None:
    with SLOTS.open(newline="", encoding="utf-8") as fh:
        return next((row for row in csv.DictReader(fh) if row["slot_id"] == slot_id), None)


def book_slot(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    slot_id = str(arguments["slot_id"])
    slot = _slot(slot_id)
    if slot is None:
        raise ToolError(f"there is no slot {slot_id}; use find_slots to list free slots")
    path = bookings_file()
    with _lock:
        if any(b["slot_id"] == slot_id for b in read_bookings(path)):
            raise ToolError(f"slot {slot_id} is already booked; offer another slot")
        booking = {
            "slot_id": slot_id,
            "weekday": slot["weekday"],
            "time": slot["time"],
            "with": slot["with"],
            "caller": context.from_number,
            "call_sid": context.call_sid,
            "confirmation": f"A{slot_id}",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(booking) + "\n")
    return {
        "booked": True,
        "weekday": slot["weekday"],
        "time": slot["time"],
        "with": slot["with"],
        "confirmation_code": booking["confirmation"],
    }
