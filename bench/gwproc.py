"""`voicegw serve` as a separate process pinned to one core, with its CPU time and memory read
from /proc -- the gateway exactly as deployed, its costs not mixed with the load generator's."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import httpx

AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
MODEL_KEY = "bench-model-key"
_TICK = os.sysconf("SC_CLK_TCK")

AGENT_YAML = """\
name: bench
instructions: A benchmark agent.
greeting: "Hello."
audio_mode: {mode}
transcription: null
max_call_duration: 1h
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by all cores since boot (user+nice+system+irq+softirq+steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class CpuShares:
    """What the gateway, this (load) process and everything else on the machine used between two
    monotonic times, each as a fraction of one core."""
    t0: float
    t1: float
    gateway: float
    load_side: float
    other: float


class CpuWindow:
    """Reads the counters on creation; `shares()` gives what was used since."""

    def __init__(self, gw: GatewayProcess) -> None:
        self._gw, self._me = gw, os.getpid()
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        return time.monotonic(), self._gw.cpu_seconds(), cpu_seconds(self._me), machine_busy_seconds()

    def shares(self) -> CpuShares:
        (t0, gw0, me0, all0), (t1, gw1, me1, all1) = self._start, self._read()
        gw, me, span = gw1 - gw0, me1 - me0, t1 - t0
        return CpuShares(t0, t1, gw / span, me / span, max(0.0, (all1 - all0) - gw - me) / span)


class GatewayProcess:
    def __init__(self, pid: int, url: str, log_path: Path, gc_log: Path, workers: int = 1) -> None:
        self.pid = pid
        self.url = url
        self.workers = workers
        self.log_path = log_path
        self.gc_log = gc_log

    def gc_pauses(self, t0: float, t1: float) -> list[tuple[int, float]]:
        """(generation, pause ms) of every collection between monotonic times t0 and t1."""
        out = []
        if self.gc_log.exists():
            for line in self.gc_log.read_text().splitlines():
                at, gen, ms = line.split()
                if t0 <= float(at) <= t1:
                    out.append((int(gen), float(ms)))
        return out

    def pids(self) -> list[int]:
        """The gateway's process and, with `--workers N`, its workers (the supervisor's children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [self.pid] + [int(p) for p in children.read_text().split()] if children.exists() else [self.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids())

    async def active_calls(self, http: httpx.AsyncClient) -> int:
        """Calls in progress: /readyz answers for the one process it reaches, so with several
        workers the gauge summed over them (/metrics) instead."""
        if self.workers > 1:
            return int(await self.metric(http, "voicegw_calls_active"))
        resp = await http.get(self.url + "/readyz", timeout=5)
        return int(resp.json()["active_calls"])

    async def metric(self, http: httpx.AsyncClient, name: str) -> float:
        resp = await http.get(self.url + "/metrics", timeout=5)
        for line in resp.text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


@contextlib.asynccontextmanager
async def running_gateway(model_base_url: str, audio_mode: str, *, core: int | None = 0,
                          prewarm_timeout_s: int = 15, loop: str = "default",
                          source: Path | None = None, baseline: bool | str = False,
                          workers: int = 1) -> AsyncIterator[GatewayProcess]:
    """Start the gateway, wait until it answers /healthz, stop it (SIGTERM, then SIGKILL).

    The gateway is the ordinary CLI started through `bench.gw_launch`, which logs garbage
    collection pauses; `loop="asyncio"` keeps it off uvloop (on the standard event loop), to
    measure what the event loop implementation is worth. `source` runs the voicegw package found in another
    directory (an exported older commit, for before/after comparisons). `baseline` starts the
    minimal sample bridge (`bench.baseline`) instead of voicegw, on the same core and model peer;
    `baseline="floor"` the cheapest relay (`bench.floor`), `baseline="twilio"` Twilio's published
    sample as it behaves on the wire (`bench.twilio_sample`). `workers` > 1 runs `serve --workers N`
    (CPU time and RSS are then summed over the supervisor and its workers).
    """
    with tempfile.TemporaryDirectory(prefix="voicegw-bench-") as tmp:
        agent = Path(tmp) / "agent.yaml"
        agent.write_text(AGENT_YAML.format(mode=audio_mode))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(
            ("AZURE_OPENAI", "OPENAI_", "TWILIO_", "VOICEGW_"))}
        env.update({
            "OPENAI_API_KEY": MODEL_KEY, "OPENAI_BASE_URL": model_base_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "VOICEGW_DATA_DIR": str(Path(tmp) / "data"), "VOICEGW_PREWARM_TIMEOUT": str(prewarm_timeout_s),
            "VOICEGW_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1",
            "VOICEGW_MAX_CALLS": "2000",  # admission (default 50 per process) would cap the ramp
        })
        gc_log = Path(tmp) / "gc.log"
        cmd = [sys.executable, "-m", "bench.gw_launch", "--gc-log", str(gc_log)]
        if loop == "asyncio":
            cmd.append("--asyncio")
        cmd += ["serve", "--agent", str(agent), "--port", str(port), "--workers", str(workers)]
        if baseline:
            bridge = {"floor": "bench.floor", "twilio": "bench.twilio_sample"}.get(str(baseline), "bench.baseline")
            cmd = [sys.executable, "-m", bridge, "--gc-log", str(gc_log), "--port", str(port)]
        if core is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core), *cmd]
        log_path = Path(tmp) / "gateway.log"
        here = Path(__file__).resolve().parent
        cwd = here.parent
        if source is not None:
            (source / "bench").mkdir(exist_ok=True)
            shutil.copy(here / "gw_launch.py", source / "bench" / "gw_launch.py")
            (source / "bench" / "__init__.py").touch()
            cwd = source
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        gw = GatewayProcess(proc.pid, f"http://127.0.0.1:{port}", log_path, gc_log, 1 if baseline else workers)
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                async with asyncio.timeout(60):
                    while True:
                        if proc.poll() is not None:
                            raise RuntimeError(f"the gateway exited during start-up:\n{log_path.read_text()[-2000:]}")
                        with contextlib.suppress(httpx.HTTPError):
                            if (await http.get(gw.url + "/healthz", timeout=2)).status_code == 200:
                                break
                        await asyncio.sleep(0.1)
            yield gw
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
                except TimeoutError:
                    proc.kill()
                    proc.wait()
