"""Call recording: the Recorder's timing model, its files, crash safety, settings and pruning.

The end-to-end checks (a real call through the gateway, the recording fetched over the API) are in
tests/test_recording_e2e.py.
"""
from __future__ import annotations

import argparse
import base64
import errno
import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

import voicegw.recording.recorder as recorder_module
from voicegw.audio.g711 import ulaw_to_pcm16
from voicegw.call.actions import ToCaller
from voicegw.call.bridge import CallBridge
from voicegw.calllog import cli
from voicegw.calllog.entries import CallInfo
from voicegw.calllog.service import open_calllog
from voicegw.config import Settings, load_agent
from voicegw.recording.files import (
    UnsafeCallSid, find_recording, prune_recordings, recording_path, recording_url, safe_sid,
)
from voicegw.recording.recorder import Recorder
from voicegw.telephony import base as tel
from voicegw.telephony.twilio import TwilioMediaCodec
from voicegw.yamlsrc import ConfigError

from tests.test_bridge import CALL_SID, Call, assert_ended_once, wire

ROOT = Path(__file__).resolve().parent.parent
SID = "CA" + "0123456789abcdef" * 2
RATE = 8000


def b64(ulaw: bytes) -> str:
    return base64.b64encode(ulaw).decode("ascii")


def tone(byte: int, ms: int) -> bytes:
    """A constant mu-law signal: every sample of it decodes to the same value."""
    return bytes([byte]) * (ms * 8)


def level(byte: int) -> int:
    return int(np.frombuffer(ulaw_to_pcm16(bytes([byte])), "<i2")[0])


def samples(s: float) -> int:
    return round(s * RATE)


def read(path: Path) -> tuple[int, np.ndarray]:
    """(channels, samples as an array of shape (frames, channels))."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getsampwidth()) == (RATE, 2)
        channels = w.getnchannels()
        data = w.readframes(w.getnframes())
    return channels, np.frombuffer(data, "<i2").reshape(-1, channels)


def expect(duration_s: float, *spans: tuple[float, float, int]) -> np.ndarray:
    """A channel: silence, with mu-law `byte` from start_s to end_s for each span."""
    out = np.zeros(samples(duration_s), dtype=np.int16)
    for start, end, byte in spans:
        out[samples(start):samples(end)] = level(byte)
    return out


def feed_caller(rec: Recorder, start_s: float, end_s: float, byte: int = 0xFF, delay_s: float = 0.01) -> None:
    """Caller frames (20 ms, stamped from `start_s` to `end_s`), each arriving `delay_s` after its stamp."""
    for ms in range(int(start_s * 1000), int(end_s * 1000), 20):
        rec.caller(ms / 1000 + delay_s, ms, b64(tone(byte, 20)))


A, B, C = 0x20, 0x40, 0xA0  # three agent "voices"
X, Y = 0x70, 0x60  # two quiet caller levels


# ------------------------------------------------------------------------------ timing model

def test_agent_chunks_play_one_after_another_from_when_they_were_sent(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "dual")
    rec.start(100.0)  # the stream starts at monotonic 100 s
    rec.agent(100.5, b64(tone(A, 1000)))  # sent at 0.5 s: plays 0.5-1.5
    rec.agent(100.6, b64(tone(B, 500)))  # queued behind it: 1.5-2.0, not from 0.6
    rec.agent(103.0, b64(tone(C, 200)))  # the buffer ran dry at 2.0: plays when sent, 3.0-3.2
    summary = rec.close(104.0)
    assert summary is not None and summary.duration_s == 4.0 and summary.channels == 2
    channels, pcm = read(tmp_path / "r.wav")
    assert channels == 2 and len(pcm) == samples(4.0)
    np.testing.assert_array_equal(pcm[:, 1], expect(4.0, (0.5, 1.5, A), (1.5, 2.0, B), (3.0, 3.2, C)))
    assert not pcm[:, 0].any(), "the caller said nothing"


def test_clear_cuts_what_was_scheduled_after_it_even_across_flushes(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "dual")
    rec.start(0.0)
    rec.agent(0.2, b64(tone(A, 5000)))  # the model sent 5 s at once: 0.2-5.2
    rec.agent(0.3, b64(tone(B, 1000)))  # and more behind it: 5.2-6.2
    feed_caller(rec, 0.0, 3.2)  # 3.2 s of stream time pass: the first seconds are written meanwhile
    rec.clear(3.2)  # barge-in: the caller heard A until 3.2, and never B
    rec.agent(3.5, b64(tone(C, 500)))  # the answer to the interruption: plays when sent
    summary = rec.close(5.0)
    assert summary is not None and summary.duration_s == 5.0
    _, pcm = read(tmp_path / "r.wav")
    np.testing.assert_array_equal(pcm[:, 1], expect(5.0, (0.2, 3.2, A), (3.5, 4.0, C)))


def test_caller_frames_land_at_their_timestamps_whatever_order_they_arrive_in(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "dual")
    rec.start(10.0)

    def byte(ms: int) -> int:  # every frame sounds different
        return 0x10 + (ms // 20) % 90

    late, lost = 1900, 1500  # held up in transit for 600 ms (placed), and for 2 s (written by then)
    order = [ms for ms in range(0, 4000, 20) if not 1000 <= ms < 1500 and ms not in (late, lost)]  # a gap
    i = order.index(1700)
    order[i], order[i + 1] = order[i + 1], order[i]  # two frames swapped
    for ms in order:
        now = 10.0 + ms / 1000 + 0.02
        rec.caller(now, ms, b64(tone(byte(ms), 20)))
        for held, delay in ((late, 600), (lost, 2000)):
            if ms == held + delay:
                rec.caller(now, held, b64(tone(byte(held), 20)))
    summary = rec.close(14.0)
    assert summary is not None and summary.late_ms == 20
    _, pcm = read(tmp_path / "r.wav")
    want = expect(4.0, *((ms / 1000, ms / 1000 + 0.02, byte(ms)) for ms in [*order, late]))
    np.testing.assert_array_equal(pcm[:, 0], want)
    assert not pcm[:, 1].any(), "the agent said nothing"


def test_a_frame_stamped_far_ahead_of_the_stream_is_not_believed(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "mixed")
    rec.start(0.0)
    rec.caller(0.5, 10 ** 12, b64(tone(X, 20)))  # a timestamp 31 years in: nothing is allocated for it
    rec.caller(0.52, 500, "not base64!")  # a payload that does not decode: silence
    summary = rec.close(1.0)
    assert summary is not None and summary.duration_s == 1.0
    assert not read(tmp_path / "r.wav")[1].any()


def test_mixed_is_one_channel_holding_caller_and_agent(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "mixed")
    rec.start(0.0)
    rec.agent(0.5, b64(tone(Y, 1000)))  # 0.5-1.5
    feed_caller(rec, 0.0, 1.0, X)
    rec.close(2.0)
    channels, pcm = read(tmp_path / "r.wav")
    assert channels == 1 and len(pcm) == samples(2.0)
    both = expect(2.0, (0.0, 1.0, X)).astype(np.int32) + expect(2.0, (0.5, 1.5, Y))
    np.testing.assert_array_equal(pcm[:, 0], both.astype(np.int16))


def test_mixing_clips_loud_overlaps_instead_of_wrapping(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", "mixed")
    rec.start(0.0)
    rec.agent(0.0, b64(tone(0x80, 100)))  # mu-law 0x80: +32124
    feed_caller(rec, 0.0, 0.1, 0x80, delay_s=0.0)
    rec.close(0.1)
    _, pcm = read(tmp_path / "r.wav")
    assert (pcm[:, 0] == 32767).all()


def test_audio_is_written_only_once_it_is_older_than_the_lag(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    rec = Recorder(path, "mixed")
    rec.start(0.0)
    assert recorder_module.LAG_S == recorder_module.FLUSH_S == 1.0
    assert read(path)[1].size == 0, "an empty but valid WAV from the start"
    feed_caller(rec, 0.0, 2.0, delay_s=0.0)
    assert read(path)[1].size == 0, "nothing yet: no second of audio is older than the lag"
    feed_caller(rec, 2.0, 2.02, delay_s=0.0)
    assert len(read(path)[1]) == samples(1.0), "at 2 s, the first second is final"
    feed_caller(rec, 2.02, 3.0, delay_s=0.0)
    assert len(read(path)[1]) == samples(1.0)
    feed_caller(rec, 3.0, 3.02, delay_s=0.0)
    assert len(read(path)[1]) == samples(2.0)
    rec.close(3.02)
    assert len(read(path)[1]) == samples(3.02)


# ------------------------------------------------------------------------------ crash safety

CRASHING = """
import base64, os, sys
from pathlib import Path
from voicegw.recording.recorder import Recorder
rec = Recorder(Path(sys.argv[1]), "dual")
rec.start(0.0)
rec.agent(0.1, base64.b64encode(bytes([0x20]) * 8000).decode())
for k in range(175):
    rec.caller(k * 0.02, k * 20, base64.b64encode(bytes([0x10 + k % 90]) * 160).decode())
os._exit(3)
"""


def test_a_gateway_that_dies_mid_call_leaves_a_playable_recording(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / f"{SID}.wav"
    proc = subprocess.run([sys.executable, "-c", CRASHING, str(path)], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr.decode()
    channels, pcm = read(path)  # never closed: the header was patched at every write
    assert channels == 2 and len(pcm) == samples(2.0), "3.5 s recorded: all but the last lag + flush on disk"
    left = expect(2.0, *((k * 0.02, k * 0.02 + 0.02, 0x10 + k % 90) for k in range(100)))
    np.testing.assert_array_equal(pcm[:, 0], left)
    np.testing.assert_array_equal(pcm[:, 1], expect(2.0, (0.1, 1.1, 0x20)))


def test_a_recording_cut_mid_write_still_opens_with_the_frames_before_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    rec = Recorder(path, "mixed")
    rec.start(0.0)
    feed_caller(rec, 0.0, 2.5, X, delay_s=0.0)
    first = path.read_bytes()  # one second written
    feed_caller(rec, 2.5, 4.0, X, delay_s=0.0)
    rec.close(4.0)
    full = path.read_bytes()
    assert len(first) == 44 + 2 * RATE and len(full) == 44 + 2 * 4 * RATE
    # killed while writing the next block: the header still names the first second only
    torn = tmp_path / "torn.wav"
    torn.write_bytes(first + full[len(first):len(first) + 5001])
    _, pcm = read(torn)
    np.testing.assert_array_equal(pcm[:, 0], expect(1.0, (0.0, 1.0, X)))
    # the file cut short after its header was written: every whole frame that is there reads back
    short = tmp_path / "short.wav"
    short.write_bytes(full[:44 + 2 * 12345 + 1])
    with wave.open(str(short), "rb") as w:
        data = w.readframes(w.getnframes())
    assert len(data) == 2 * 12345 + 1 or len(data) == 2 * 12345
    np.testing.assert_array_equal(np.frombuffer(data[:2 * 12345], "<i2"), expect(12345 / RATE, (0.0, 2.0, X)))


# ------------------------------------------------------------------------------ disk errors

def test_an_unwritable_directory_means_no_recording_and_no_exception(tmp_path: Path) -> None:
    blocker = tmp_path / "recordings"
    blocker.write_text("a file where the directory should be")
    rec = Recorder(blocker / f"{SID}.wav", "dual", SID)
    rec.start(0.0)
    feed_caller(rec, 0.0, 3.0)
    rec.agent(1.0, b64(tone(A, 100)))
    rec.clear(1.05)
    summary = rec.close(3.0)
    assert summary is not None and summary.error and summary.bytes == 0
    entries = summary.log_entries(SID, 1.0)
    assert [e.kind for e in entries] == ["error"] and entries[0].data["code"] == "recording_failed"


def test_a_full_disk_stops_the_recording_and_keeps_what_was_written(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk(io.FileIO):
        """A disk with room for the header and one second of mono audio."""

        def write(self, data: bytes) -> int:  # type: ignore[override]
            if self.tell() + len(data) > 44 + 2 * RATE + 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(recorder_module.os, "fdopen", lambda fd, mode: FullDisk(fd, "wb"))
    path = tmp_path / f"{SID}.wav"
    rec = Recorder(path, "mixed", SID)
    rec.start(0.0)
    feed_caller(rec, 0.0, 5.0, X, delay_s=0.0)  # the second write fails at 3 s: nothing raises
    summary = rec.close(5.0)
    assert summary is not None and summary.error == "[Errno 28] No space left on device"
    assert summary.duration_s == 1.0 and summary.bytes == 44 + 2 * RATE
    _, pcm = read(path)
    np.testing.assert_array_equal(pcm[:, 0], expect(1.0, (0.0, 1.0, X)))
    kinds = [(e.kind, e.data.get("complete")) for e in summary.log_entries(SID, 1.0)]
    assert kinds == [("error", None), ("recording.ready", False)]


def test_ready_entry_describes_the_recording(tmp_path: Path) -> None:
    rec = Recorder(recording_path(tmp_path, SID), "dual", SID)
    rec.start(0.0)
    summary = rec.close(1.5)
    assert summary is not None
    (entry,) = summary.log_entries(SID, 123.0)
    assert entry.kind == "recording.ready" and entry.t == 123.0
    assert entry.data == {"mode": "dual", "channels": 2, "duration_s": 1.5, "bytes": 44 + 4 * samples(1.5),
                          "url": f"/api/calls/{SID}/recording", "content_type": "audio/wav"}
    assert rec.close(2.0) is None, "closed once"
    assert Recorder(tmp_path / "never.wav", "mixed").close(1.0) is None, "a call whose stream never started"
    assert not (tmp_path / "never.wav").exists()


# ------------------------------------------------------------------------------ in the bridge

def recorded_call(recorder: Recorder, clock: list[float]) -> Call:
    """tests.test_bridge's fake call, with a recorder and a clock the test moves."""
    call = Call()
    call.bridge = CallBridge(call.bridge.info, "front", call.bridge.core.opts, TwilioMediaCodec(), call.tools,
                             call.sink, call.hooks, call.model.open,  # type: ignore[arg-type]
                             clock=lambda: clock[0], recorder=recorder)
    return call


async def drive(call: Call, clock: list[float]) -> None:
    """Stream start at 100 s; agent audio at 0.5 s, cleared at 1.0 s; caller frames 0-2 s; the end at 2 s."""
    clock[0] = 100.0
    await call.start()
    clock[0] = 100.5
    call.bridge.perform([ToCaller(tel.PlayAudio(b64(tone(A, 1000))))])
    await call.pulse.until(lambda: call.ws.frames, "the agent audio sent to the caller")
    for ms in range(0, 2000, 20):
        clock[0] = 100.0 + ms / 1000
        if ms == 1000:
            call.bridge.perform([ToCaller(tel.ClearPlayback())])
        call.bridge.on_frame(tel.CallerAudio(b64(tone(X, 20)), ms))
    clock[0] = 102.0
    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()


async def test_the_bridge_records_the_call_and_logs_it_before_the_record_closes(tmp_path: Path) -> None:
    clock = [0.0]
    call = recorded_call(Recorder(tmp_path / f"{CALL_SID}.wav", "dual", CALL_SID), clock)
    await drive(call, clock)
    assert_ended_once(call, "gateway_shutdown")  # recording.ready included: logged before the record closed
    (ready,) = call.sink.of("recording.ready")
    assert ready.data["duration_s"] == 2.0 and ready.data["url"] == f"/api/calls/{CALL_SID}/recording"
    _, pcm = read(tmp_path / f"{CALL_SID}.wav")
    np.testing.assert_array_equal(pcm[:, 0], expect(2.0, (0.0, 2.0, X)))
    np.testing.assert_array_equal(pcm[:, 1], expect(2.0, (0.5, 1.0, A)))


async def test_a_recording_that_fails_leaves_the_call_and_its_record_whole(tmp_path: Path) -> None:
    blocker = tmp_path / "recordings"
    blocker.write_text("a file where the directory should be")
    clock = [0.0]
    call = recorded_call(Recorder(blocker / f"{CALL_SID}.wav", "dual", CALL_SID), clock)
    await drive(call, clock)
    assert_ended_once(call, "gateway_shutdown")
    assert "recording_failed" in call.sink.codes() and not call.sink.of("recording.ready")
    assert wire(tel.PlayAudio(b64(tone(A, 1000)))) in call.ws.frames, "the caller still heard the agent"


# ------------------------------------------------------------------------------ files

@pytest.mark.parametrize("sid", ["../etc/passwd", "CA/../x", "", "a" * 65, "CA12\n", "CA\u00e9", ".", "CA 1",
                                 "..", "CA1.wav", "/abs"])
def test_a_call_sid_that_could_escape_the_directory_names_no_file(tmp_path: Path, sid: str) -> None:
    with pytest.raises(UnsafeCallSid):
        safe_sid(sid)
    assert find_recording(tmp_path, sid) is None


def test_recordings_are_named_by_call_sid(tmp_path: Path) -> None:
    assert recording_path(tmp_path, SID) == tmp_path / f"{SID}.wav"
    assert recording_url(SID) == f"/api/calls/{SID}/recording"
    assert find_recording(tmp_path, SID) is None
    rec = Recorder(recording_path(tmp_path / "deeper", SID), "mixed")
    rec.start(0.0)
    rec.close(0.5)
    assert find_recording(tmp_path / "deeper", SID) == tmp_path / "deeper" / f"{SID}.wav"
    assert (tmp_path / "deeper" / f"{SID}.wav").stat().st_mode & 0o777 == 0o600


async def test_prune_removes_recordings_of_pruned_calls_and_orphans(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = await open_calllog(url)
    now = time.time()
    for sid, ended in (("CAOLD", now - 40 * 86400), ("CATENDAYS", now - 10 * 86400), ("CANEW", None)):
        store.call_started(CallInfo(sid, "MZ", "+15550000000", "+15559990000", "support", (ended or now) - 60))
        if ended is not None:
            store.call_ended(sid, "caller_hangup", ended)
    await store.flush()
    await store.aclose()
    rec_dir = tmp_path / "recordings"
    rec_dir.mkdir()
    ages = {"CAOLD.wav": 40, "CAGONE.wav": 50, "CATENDAYS.wav": 10, "CANEW.wav": 0, "CARECENT.wav": 0,
            "notes.txt": 60}
    for name, days in ages.items():
        (rec_dir / name).write_bytes(b"RIFF")
        os.utime(rec_dir / name, (now - days * 86400, now - days * 86400))
    settings = Settings.from_env({"VOICEGW_DATABASE_URL": url, "VOICEGW_RECORDINGS_DIR": str(rec_dir)})
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    code = await cli.run(parser.parse_args(["calls", "prune", "--older-than", "30d"]), settings, out)
    assert code == 0 and "pruned 1 call" in out.getvalue() and "removed 2 recording(s)" in out.getvalue()
    assert sorted(p.name for p in rec_dir.iterdir()) == ["CANEW.wav", "CARECENT.wav", "CATENDAYS.wav", "notes.txt"]


async def test_prune_leaves_recent_files_alone_whatever_the_call_log_says(tmp_path: Path) -> None:
    (tmp_path / f"{SID}.wav").write_bytes(b"RIFF")

    async def nobody(sid: str) -> bool:
        return False

    assert await prune_recordings(tmp_path, 3600, nobody) == 0
    assert await prune_recordings(tmp_path, 3600, nobody, now=time.time() + 7200) == 1
    assert await prune_recordings(tmp_path / "missing", 0, nobody) == 0


# ------------------------------------------------------------------------------ settings

@pytest.mark.parametrize("text,mode", [("", "off"), ("recording: off\n", "off"), ("recording: mixed\n", "mixed"),
                                       ("recording: dual\n", "dual"), ("recording: 'off'\n", "off")])
def test_agent_recording_setting(tmp_path: Path, text: str, mode: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("name: a\n" + text)
    assert load_agent(path).config.recording == mode


@pytest.mark.parametrize("value", ["on", "stereo", "true"])
def test_bad_recording_setting_names_file_line_and_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"name: a\nrecording: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_agent(path)
    assert (err.value.line, err.value.field) == (2, "recording")


def test_recordings_dir_defaults_under_the_data_dir(tmp_path: Path) -> None:
    assert Settings.from_env({"VOICEGW_DATA_DIR": str(tmp_path)}).recordings_path == tmp_path / "recordings"
    assert Settings.from_env({}).recordings_path == Path("data") / "recordings"
    assert Settings.from_env({"VOICEGW_RECORDINGS_DIR": "/srv/rec"}).recordings_path == Path("/srv/rec")


def test_the_reference_agent_file_documents_recording() -> None:
    text = (ROOT / "examples" / "agent.yaml").read_text()
    assert "\nrecording: off" in text and "Default: off" in text.split("\nrecording:")[0].rsplit("\n\n", 1)[1]
