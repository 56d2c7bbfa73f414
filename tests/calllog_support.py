"""Serving the console routes on a real 127.0.0.1 port for the API, SSE and browser tests."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from voicegw.calllog.service import CallLogService
from voicegw.config import Settings
from voicegw.console.routes import console_routes


def console_app(calllog: CallLogService, settings: Settings) -> Starlette:
    return Starlette(routes=console_routes(calllog, settings))


@contextlib.asynccontextmanager
async def serve_console(calllog: CallLogService, settings: Settings) -> AsyncIterator[str]:
    """The base URL of a uvicorn server for the console routes, stopped on exit."""
    config = uvicorn.Config(console_app(calllog, settings), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("console server exited during start-up")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task
