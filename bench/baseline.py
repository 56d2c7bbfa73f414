"""The yardstick: the minimal Twilio <-> Realtime passthrough bridge every sample ships.

    python -m bench.baseline --port PORT [--gc-log PATH]    (model at $OPENAI_BASE_URL)

What the samples do, and nothing more: a Starlette WebSocket endpoint (the FastAPI samples are
the same thing under another name; FastAPI is not installed here), `json.loads` of every Twilio
frame, the payload forwarded to the model socket as `input_audio_buffer.append` (`json.dumps`),
every `response.output_audio.delta` forwarded back as a Twilio media frame, a `session.update`
and a greeting `response.create` when the stream starts, served by `uvicorn.run` with its
defaults (uvloop, httptools and the websockets implementation, as installed here). No marks, no
barge-in, no timeouts, no validation, no call log, no pre-warm: it opens the model socket when
the media stream starts. `bench.bench_density` runs it on the same load as the gateway and
reports the gateway's CPU and latency as ratios to it.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MODEL_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:1/v1").replace("http", "ws", 1) + \
    "/realtime?model=gpt-realtime"
HEADERS = {"Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")}
active = 0


async def voice(request: Request) -> Response:
    host = request.headers.get("host", "127.0.0.1")
    twiml = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="ws://{host}/media-stream">'
             '</Stream></Connect></Response>')
    return Response(twiml, media_type="application/xml")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "active_calls": active})


async def media_stream(ws: WebSocket) -> None:
    global active
    await ws.accept()
    stream_sid = None
    active += 1
    try:
        async with websockets.connect(MODEL_URL, additional_headers=HEADERS) as model:
            await model.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "instructions": "A benchmark agent.",
                "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}}))

            async def from_twilio() -> None:
                nonlocal stream_sid
                try:
                    async for message in ws.iter_text():
                        data = json.loads(message)
                        if data["event"] == "media":
                            await model.send(json.dumps({"type": "input_audio_buffer.append",
                                                         "audio": data["media"]["payload"]}))
                        elif data["event"] == "start":
                            stream_sid = data["start"]["streamSid"]
                            await model.send(json.dumps({"type": "response.create"}))
                        elif data["event"] == "stop":
                            break
                except WebSocketDisconnect:
                    pass
                await model.close()

            async def to_twilio() -> None:
                async for message in model:
                    event = json.loads(message)
                    if event.get("type") == "response.output_audio.delta" and "delta" in event:
                        await ws.send_json({"event": "media", "streamSid": stream_sid,
                                            "media": {"payload": event["delta"]}})

            await asyncio.gather(from_twilio(), to_twilio(), return_exceptions=True)
    finally:
        active -= 1
        try:
            await ws.close()
        except Exception:  # noqa: BLE001 - already closed by the caller
            pass


app = Starlette(routes=[Route("/twilio/voice", voice, methods=["POST"]), Route("/healthz", health),
                        Route("/readyz", health), WebSocketRoute("/media-stream", media_stream)])


def port_from(argv: list[str]) -> int:
    """`--port PORT [--gc-log PATH]` (the bridges' command line; the GC log is set up here)."""
    port = 8000
    while argv:
        opt = argv.pop(0)
        if opt == "--port":
            port = int(argv.pop(0))
        elif opt == "--gc-log":
            from bench.gw_launch import log_gc_pauses

            log_gc_pauses(open(argv.pop(0), "w", buffering=1))
    return port


def main(argv: list[str]) -> int:
    uvicorn.run(app, host="127.0.0.1", port=port_from(argv), log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
