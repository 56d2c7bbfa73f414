"""The floor: the cheapest Twilio <-> Realtime passthrough relay this stack allows.

    python -m bench.floor --port PORT [--gc-log PATH]    (model at $OPENAI_BASE_URL)

The sample bridge's work (`bench.baseline`) and nothing else, written for the least CPU per
message in Python: both WebSockets on picows (Cython framing), uvloop, every frame handled inside
picows' read callback (no task, no queue, no await), the payload sliced out of the frame's text
with `str.find` (no JSON decode) and the outgoing message built by concatenation (no JSON
encode). No marks, no barge-in, no validation, no timeouts, no call log. It is not a gateway:
it is the cost of one Python callback per WebSocket message on this event loop and kernel, the
part of the sample's cost no Python gateway can shed. `bench.bench_density` runs it on the same
load as the sample and the gateway.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

import uvloop
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_connect, ws_create_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODEL_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:1/v1").replace("http", "ws", 1) + \
    "/realtime?model=gpt-realtime"
HEADERS = {"Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")}
SESSION = ('{"type":"session.update","session":{"type":"realtime","instructions":"A benchmark agent.",'
           '"audio":{"input":{"format":{"type":"audio/pcmu"}},"output":{"format":{"type":"audio/pcmu"}}}}}')
PAYLOAD, DELTA = '"payload":"', '"delta":"'
media_port = 0
active = 0


class ModelSide(WSListener):  # type: ignore[misc]
    def __init__(self, caller: "CallerSide") -> None:
        self.caller = caller

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        if frame.msg_type != WSMsgType.TEXT:  # type: ignore[attr-defined]
            return
        text = frame.get_payload_as_utf8_text()  # type: ignore[attr-defined]
        i = text.find(DELTA)
        if i < 0 or text.find('"response.output_audio.delta"', 0, i) < 0:
            return
        i += len(DELTA)
        self.caller.transport.send(WSMsgType.TEXT, ('{"event":"media","streamSid":"' + self.caller.sid
                                                    + '","media":{"payload":"' + text[i:text.index('"', i)]
                                                    + '"}}').encode())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.caller.transport.disconnect()


class CallerSide(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.transport: WSTransport = None  # type: ignore[assignment]
        self.model: WSTransport | None = None
        self.sid = ""
        self.early: list[str] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        global active
        active += 1
        self.transport = transport
        asyncio.ensure_future(self._open_model())

    async def _open_model(self) -> None:
        model, _ = await ws_connect(lambda: ModelSide(self), MODEL_URL, extra_headers=HEADERS)
        model.send(WSMsgType.TEXT, SESSION.encode())
        self.model = model
        for text in self.early:
            self._handle(text)
        self.early.clear()

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        if frame.msg_type == WSMsgType.TEXT:  # type: ignore[attr-defined]
            text = frame.get_payload_as_utf8_text()  # type: ignore[attr-defined]
            if self.model is None:
                self.early.append(text)
            else:
                self._handle(text)
        elif frame.msg_type == WSMsgType.CLOSE:  # type: ignore[attr-defined]
            transport.send_close()
            transport.disconnect()

    def _handle(self, text: str) -> None:
        i = text.find(PAYLOAD)
        if i >= 0:
            i += len(PAYLOAD)
            self.model.send(WSMsgType.TEXT, ('{"type":"input_audio_buffer.append","audio":"'  # type: ignore[union-attr]
                                             + text[i:text.index('"', i)] + '"}').encode())
        elif '"start"' in text:  # once per call: decoded in full
            self.sid = json.loads(text)["start"]["streamSid"]
            self.model.send(WSMsgType.TEXT, b'{"type":"response.create"}')  # type: ignore[union-attr]
        elif '"stop"' in text:
            self.model.disconnect()  # type: ignore[union-attr]

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        global active
        active -= 1
        if self.model is not None:
            self.model.disconnect()


async def voice(request: Request) -> Response:
    host = (request.headers.get("host") or "127.0.0.1").split(":")[0]
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="ws://{host}:'
                    f'{media_port}/media-stream"></Stream></Connect></Response>', media_type="application/xml")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "active_calls": active})


app = Starlette(routes=[Route("/twilio/voice", voice, methods=["POST"]), Route("/healthz", health),
                        Route("/readyz", health)])


async def serve(port: int) -> None:
    import uvicorn

    global media_port
    media = await ws_create_server(lambda request: CallerSide(), "127.0.0.1", 0)
    media_port = media.sockets[0].getsockname()[1]
    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).serve()


def main(argv: list[str]) -> int:
    from bench.baseline import port_from

    uvloop.run(serve(port_from(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
