"""`voicegw serve` as a real process for runtime tests (drain, workers, replicas).

Start-up is awaited by reading the process's own JSON log lines (one "Application startup
complete" per worker), not by sleeping; everything binds to 127.0.0.1 and is killed on exit.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from tests.harness import AUTH_TOKEN, free_port

VOICEGW = str(Path(sys.executable).with_name("voicegw"))
STRIPPED = ("AZURE_OPENAI_", "OPENAI_", "VOICEGW_", "TWILIO_")


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    url: str
    port: int
    data_dir: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _line_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            text = raw.decode("utf-8", "replace").strip()
            try:
                line = json.loads(text)
            except ValueError:
                line = {"msg": text, "level": "RAW", "logger": ""}
            self.lines.append(line)
            self._line_event.set()

    async def wait_for_line(self, needle: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until `count` log lines contain `needle` (or the process exits: then it raises)."""
        async with asyncio.timeout(timeout):
            while sum(needle in str(line.get("msg", "")) for line in self.lines) < count:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"voicegw serve exited ({self.proc.returncode}): {self.lines[-20:]}")
                self._line_event.clear()
                waiter = asyncio.ensure_future(self._line_event.wait())
                done = asyncio.ensure_future(self.proc.wait())
                await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                done.cancel()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def serve_process(env: dict[str, str] | None = None, *, workers: int = 1, port: int | None = None,
                        agent_yaml: str | None = None) -> AsyncIterator[ServeProcess]:
    with tempfile.TemporaryDirectory(prefix="voicegw-proc-") as tmp:
        port = port or free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED)}
        environ.update({
            "VOICEGW_PORT": str(port), "VOICEGW_HOST": "127.0.0.1", "VOICEGW_DATA_DIR": tmp,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "VOICEGW_LOG_FORMAT": "json", "VOICEGW_WORKERS": str(workers),
        })
        if agent_yaml is not None:
            (Path(tmp) / "agent.yaml").write_text(agent_yaml)
            environ["VOICEGW_AGENT"] = str(Path(tmp) / "agent.yaml")
        environ.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            VOICEGW, "serve", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=environ, start_new_session=True)
        sp = ServeProcess(proc, f"http://127.0.0.1:{port}", port, Path(tmp))
        sp._reader = asyncio.ensure_future(sp._read())
        try:
            if workers == 1:  # logged once the socket listens (start-up completes before it)
                await sp.wait_for_line("Uvicorn running on", timeout=60)
            else:  # the supervisor bound the socket before starting the workers
                await sp.wait_for_line("Application startup complete", count=workers, timeout=60)
            yield sp
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            sp._reader.cancel()
            await asyncio.gather(sp._reader, return_exceptions=True)
