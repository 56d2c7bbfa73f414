"""Every example README, run as printed: its fenced `sh` blocks, from a directory laid out like a
fresh clone (the repository's .venv, Makefile and sources linked in). The block that starts the
gateway runs in the background on a free port (VOICEGW_PORT, which `voicegw call` also reads);
the next block places the documented call through the embedded local model; the test then checks
that the documented tool ran, in the call log the gateway wrote."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from voicegw.calllog.store import open_store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LINKED = (".venv", "Makefile", "pyproject.toml", "voicegw", "examples", "deploy")
START_S = 60
CALL_S = 150

pytestmark = pytest.mark.e2e


def sh_blocks(readme: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", readme.read_text(), flags=re.S | re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clone_like(tmp: Path) -> Path:
    work = tmp / "clone"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    return work


def run_block(block: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def setup_is_current(block: str, cwd: Path, env: dict[str, str]) -> bool:
    """`make deps` on an installed tree does nothing; on a stale one it would reinstall every
    package, which a test run must not do (the suite runs from the same .venv)."""
    if block.strip().split()[:2] != ["make", "deps"]:
        return True
    return subprocess.run(["make", "-q", "deps"], cwd=cwd, env=env).returncode == 0


async def wait_ready(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_S
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        while time.monotonic() < deadline:
            assert server.poll() is None, f"the gateway exited with {server.returncode}"
            try:
                if (await http.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway was not ready within {START_S} s")


async def tool_calls(db: Path) -> list[dict]:
    store = open_store(f"sqlite:///{db}")
    try:
        rows, _ = await store.list_calls(limit=1)
        assert rows, "no call in the call log"
        rec = await store.get_call(rows[0]["call_sid"])
        assert rec is not None
        return rec["tool_calls"]
    finally:
        await store.aclose()


@pytest.mark.parametrize("example,tool,heard", [
    ("order_status", "lookup_order", "shipped"),
    ("appointments", "find_slots", "Dr. Rivera"),
])
async def test_readme_runs_as_printed(example: str, tool: str, heard: str, tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (deploy/sysdeps.sh)")
    readme = EXAMPLES / example / "README.md"
    blocks = sh_blocks(readme)
    serve = next(i for i, b in enumerate(blocks) if "voicegw serve" in b)
    assert serve + 1 < len(blocks) and "voicegw call" in blocks[serve + 1], "the README places a call after serving"
    work = clone_like(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEGW_", "TWILIO_", "AZURE_OPENAI_", "OPENAI_"))}
    env.update(VOICEGW_PORT=str(port), DEMO_API_URL=f"http://127.0.0.1:{free_port()}", VOICEGW_LOG_FORMAT="text")

    for block in blocks[:serve]:
        if setup_is_current(block, work, env):
            done = run_block(block, work, env, 600)
            assert done.returncode == 0, done.stderr
    log = open(tmp_path / "gateway.log", "w")
    server = subprocess.Popen(["bash", "-euo", "pipefail", "-c", blocks[serve]], cwd=work, env=env, stdout=log,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", server)
        call = await asyncio.to_thread(run_block, blocks[serve + 1], work, env, CALL_S)
        output = call.stdout + call.stderr
        print(output)
        assert call.returncode == 0, output
        calls = await tool_calls(work / "data" / "voicegw.db")
        assert [c["name"] for c in calls] == [tool], (calls, output)
        assert calls[0]["ok"] is True, calls
        assert heard in output, output  # the agent read the tool's answer to the caller
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the gateway and the demo API started with it
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
        print((tmp_path / "gateway.log").read_text()[-3000:])


def test_examples_index_commands_run_as_printed(tmp_path: Path) -> None:
    work = clone_like(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGW_")}
    for block in sh_blocks(EXAMPLES / "README.md"):
        done = run_block(block, work, env, 120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK:" in done.stdout
