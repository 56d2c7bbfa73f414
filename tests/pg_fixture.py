"""A real PostgreSQL server for the call log tests (deploy/postgres.sh), one database per test.

A server that cannot be installed or started fails the tests that need it, loudly: the
PostgreSQL store is a production path and is never skipped.
"""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "postgres.sh"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The DSN of the test server's admin database."""
    try:
        out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"POSTGRESQL NOT AVAILABLE: {SCRIPT} did not finish within 600s", pytrace=False)
    dsn = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not dsn.startswith("postgresql://"):
        pytest.fail(
            f"POSTGRESQL NOT AVAILABLE: {SCRIPT} exited {out.returncode}\n{out.stderr[-2000:]}", pytrace=False
        )
    return dsn


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = "vgw_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_server, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"', timeout=30)
    finally:
        await admin.close()
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(pg_server, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
    finally:
        await asyncio.wait_for(admin.close(), 10)
