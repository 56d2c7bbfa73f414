"""Where call recordings live, how they are named, and how old ones are removed.

One file per call, `<recordings dir>/<CallSid>.wav`, flat: a recording is found from its CallSid
alone (the API route, `voicegw calls prune`) with no index to keep in step. A CallSid only names a
file when it is 1-64 ASCII letters and digits (Twilio's are `CA` + 32 hex digits), so no value
that reached us from the network can walk out of the directory.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterator, Literal

log = logging.getLogger("voicegw.recording")

RecordingMode = Literal["off", "mixed", "dual"]
SUFFIX = ".wav"
CONTENT_TYPE = "audio/wav"
DIR_MODE = 0o700  # recordings hold whatever callers say (card numbers included): owner only
FILE_MODE = 0o600
_SAFE_SID = re.compile(r"[A-Za-z0-9]{1,64}")


class UnsafeCallSid(ValueError):
    """A CallSid that cannot name a file."""


def safe_sid(call_sid: str) -> str:
    """`call_sid` itself when it may name a file; UnsafeCallSid otherwise."""
    if not isinstance(call_sid, str) or _SAFE_SID.fullmatch(call_sid) is None:
        raise UnsafeCallSid(f"not a CallSid that can name a recording: {call_sid!r}")
    return call_sid


def recording_path(root: Path, call_sid: str) -> Path:
    """The recording file of a call (whether or not it exists)."""
    return Path(root) / (safe_sid(call_sid) + SUFFIX)


def find_recording(root: Path, call_sid: str) -> Path | None:
    """The call's recording if there is one; None for none, and for a CallSid that cannot name one."""
    try:
        path = recording_path(root, call_sid)
    except UnsafeCallSid:
        return None
    return path if path.is_file() else None


def recording_url(call_sid: str) -> str:
    """Where the operator API serves the call's recording."""
    return f"/api/calls/{call_sid}/recording"


def recordings(root: Path) -> Iterator[tuple[str, Path]]:
    """(CallSid, path) of every recording under `root`; other files are not recordings and are left alone."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        sid = entry.name[: -len(SUFFIX)] if entry.name.endswith(SUFFIX) else ""
        if sid and _SAFE_SID.fullmatch(sid) and entry.is_file(follow_symlinks=False):
            yield sid, Path(entry.path)


async def prune_recordings(root: Path, older_than_s: float, call_exists: Callable[[str], Awaitable[bool]],
                           now: float | None = None) -> int:
    """Remove the recordings last written more than `older_than_s` ago whose call is no longer in the
    call log (pruned, or never written there). Returns how many were removed.

    A recording is flushed every second while its call lasts, so one that is older than the cut-off
    belongs to a call that ended before it: exactly the calls `prune` removes. Recent files are never
    touched, whatever the call log says (the call's record may not be written yet)."""
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    for sid, path in recordings(root):
        try:
            if path.stat().st_mtime >= cutoff or await call_exists(sid):
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("recording %s not removed: %s", path, exc)
            continue
        removed += 1
    return removed
