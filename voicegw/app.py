"""Starlette app factory: routes only, no logic."""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from voicegw.gateway import Gateway
from voicegw.metrics import CONTENT_TYPE
from voicegw.telephony.endpoints import media_stream, voice_webhook
from voicegw.telephony.warm import transfer_routes


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    ready, status = gw.readiness()
    return JSONResponse({"ready": ready, "status": status, "active_calls": len(gw.calls),
                         "max_calls": gw.settings.max_calls}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition: this process, or with `--workers` every worker's aggregate."""
    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def create_app(gateway: Gateway, extra_routes: list[BaseRoute] | None = None,
               on_start: Any = None, on_stop: Any = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if on_start is not None:
            await on_start()
        try:
            yield
        finally:
            await gateway.stop()
            if on_stop is not None:
                await on_stop()

    routes: list[BaseRoute] = [
        Route("/twilio/voice", voice_webhook, methods=["POST"]),
        WebSocketRoute("/twilio/media", media_stream),
        WebSocketRoute("/twilio/media/{worker}", media_stream),  # the owner's name: voicegw.telephony.handoff
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *transfer_routes(gateway),
    ]
    routes += extra_routes or []
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
