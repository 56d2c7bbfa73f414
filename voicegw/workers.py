"""`voicegw serve --workers N`: one listening socket, N worker processes, drain on signals.

The supervisor binds the public socket once and starts N workers (spawned, not forked: each gets a
clean interpreter and event loop) that all accept on it; the kernel spreads connections between
them. Each worker also listens on its own Unix socket in a private directory, named after its
worker id, so a media stream that lands on the wrong worker is relayed to the one that pre-warmed
its call (voicegw.telephony.relay). Stream tokens are signed with one secret, chosen here and
shared by every worker.

Signals: the workers ignore SIGINT (Ctrl-C reaches the whole process group) and act on SIGTERM;
the supervisor forwards SIGTERM to every worker on SIGTERM or SIGINT (each drains its calls), a
second signal is forwarded again (each ends its calls now), and it exits 0 once every worker has. A worker that dies outside a shutdown
is replaced (with a new id: its calls are gone, and streams for them are served where they land).

Metrics: the supervisor creates a private `PROMETHEUS_MULTIPROC_DIR` before spawning (replacing
any inherited one: a directory left by an earlier run would be counted again) and removes it at
exit. Each worker's prometheus_client writes its values there, and `/metrics` in any worker serves
the aggregate of all (voicegw.metrics). A worker that exits is marked dead, so its gauges stop
counting while its counters and histograms stay in the totals.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType

from voicegw.config import Settings
from voicegw.metrics import MULTIPROC_ENV

log = logging.getLogger("voicegw")

RESTART_BACKOFF_S = 1.0


def mark_process_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges from the aggregate (its counters stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def _worker_main(settings: Settings, index: int, sock: socket.socket, peers_dir: str, log_level: str,
                 log_format: str | None) -> None:
    from voicegw import logs, server

    logs.configure(log_level, log_format)
    logs.register_settings(settings)
    worker = f"w{index}.{secrets.token_hex(3)}"
    logs.logging.getLogger("voicegw").info("worker %s (pid %d) starting", worker, os.getpid())
    # Ctrl-C reaches the whole process group: the workers leave SIGINT to the supervisor, which
    # forwards one SIGTERM to each (so a single Ctrl-C means drain, not drain-then-stop)
    server.run(settings, log_level=log_level, sockets=[sock], worker=worker, peers_dir=peers_dir,
               ignore_sigint=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(settings: Settings, workers: int, log_level: str = "info", log_format: str | None = None) -> int:
    """Run `workers` worker processes until they have all exited after a signal. Returns 0."""
    if not (settings.twilio_auth_token or os.environ.get("VOICEGW_STREAM_SECRET")):
        # every worker must verify the tokens any other worker minted
        settings = replace(settings, stream_secret=secrets.token_bytes(32))
    sock = _bind(settings.host, settings.port)
    peers_dir = tempfile.mkdtemp(prefix="voicegw-workers-")
    metrics_dir = tempfile.mkdtemp(prefix="voicegw-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # spawned workers inherit it (read at import)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    stopping = {"signals": 0}

    def start(index: int) -> None:
        proc = ctx.Process(target=_worker_main, name=f"voicegw-worker-{index}",
                           args=(settings, index, sock, peers_dir, log_level, log_format))
        proc.start()
        procs[index] = proc

    def on_signal(sig: int, frame: FrameType | None) -> None:
        stopping["signals"] += 1
        log.warning("%s: forwarding to %d worker(s)%s", signal.Signals(sig).name, len(procs),
                    "" if stopping["signals"] == 1 else " (end calls now)")
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log.info("voicegw supervisor (pid %d): %d workers on http://%s:%d", os.getpid(), workers, settings.host,
             settings.port)
    try:
        for i in range(workers):
            start(i)
        while procs:
            for index, proc in list(procs.items()):
                proc.join(timeout=0.2)
                if proc.is_alive():
                    continue
                del procs[index]
                if proc.pid is not None:
                    mark_process_dead(proc.pid, metrics_dir)
                if not stopping["signals"]:
                    log.error("worker %d exited with %s: replacing it", index, proc.exitcode)
                    time.sleep(RESTART_BACKOFF_S)
                    start(index)
    finally:
        sock.close()
        shutil.rmtree(peers_dir, ignore_errors=True)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
    log.info("all workers exited")
    return 0
