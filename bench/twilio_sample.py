"""Twilio's own sample bridge, as it behaves on the wire, for the same load as the gateway.

    python -m bench.twilio_sample --port PORT [--gc-log PATH]    (model at $OPENAI_BASE_URL)

Twilio publishes a one-file Python bridge between Media Streams and the Realtime API (the
"speech assistant" sample). `bench.baseline` keeps only the few lines every such sample has;
this module keeps the published sample's whole per-message behaviour, because that sample is the
yardstick most deployments start from:

- every Twilio frame `json.loads`-ed; for media, while the model socket is open, the frame's
  `timestamp` kept as an int and the payload forwarded as `input_audio_buffer.append`
  (`json.dumps`); `start` keeps the stream sid; each `mark` that comes back pops the mark queue;
- every model event `json.loads`-ed and printed when its type is one of the logged types
  (`response.done`, `input_audio_buffer.speech_started`, `session.updated`, ...);
- every audio delta base64-decoded and re-encoded, sent as a media frame (`send_json`), the
  response's start timestamp noted when the item changes, and then a mark sent after it (one
  mark per delta, `send_json`), its name queued;
- on `speech_started` with a response playing: a `conversation.item.truncate` at the caller's
  latest timestamp minus the response's start, a `clear`, the mark queue emptied;
- `session.update` with server VAD and mu-law both ways when the model socket opens; TwiML by the
  twilio SDK; served by `uvicorn.run` with its defaults.

The published sample is a FastAPI app; FastAPI is not installed here and its WebSocket is
Starlette's (`websocket.iter_text`, `send_json`), so this app is Starlette with the same
endpoints. FastAPI's routing adds work at connection set-up, not per message. Output goes to
stdout as the sample's `print` calls do. `bench.bench_density` runs it on the same load as the
minimal bridge, the floor and the gateway.
"""
from __future__ import annotations

import asyncio
import base64
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
from twilio.twiml.voice_response import Connect, VoiceResponse

from bench.baseline import port_from

MODEL_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:1/v1").replace("http", "ws", 1) + \
    "/realtime?model=gpt-realtime&temperature=0.8&voice=alloy"
HEADERS = {"Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")}
LOG_EVENT_TYPES = ("error", "response.content.done", "rate_limits.updated", "response.done",
                   "input_audio_buffer.committed", "input_audio_buffer.speech_stopped",
                   "input_audio_buffer.speech_started", "session.created", "session.updated")
active = 0


async def incoming_call(request: Request) -> Response:
    response = VoiceResponse()
    response.say("Please wait while we connect your call.")
    connect = Connect()
    connect.stream(url=f"ws://{request.headers.get('host', '127.0.0.1')}/media-stream")
    response.append(connect)
    return Response(str(response), media_type="application/xml")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "active_calls": active})


async def initialize_session(model: websockets.ClientConnection) -> None:
    update = {"type": "session.update", "session": {
        "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                  "output": {"format": {"type": "audio/pcmu"}}},
        "instructions": "A benchmark agent."}}
    print("Sending session update:", json.dumps(update))
    await model.send(json.dumps(update))
    await model.send(json.dumps({"type": "response.create"}))  # the sample's "AI speaks first" option


async def media_stream(websocket: WebSocket) -> None:
    global active
    print("Client connected")
    await websocket.accept()
    active += 1
    try:
        async with websockets.connect(MODEL_URL, additional_headers=HEADERS) as model:
            await initialize_session(model)
            stream_sid = None
            latest_media_timestamp = 0
            last_assistant_item = None
            mark_queue: list[str] = []
            response_start_timestamp = None

            async def receive_from_twilio() -> None:
                nonlocal stream_sid, latest_media_timestamp, response_start_timestamp, last_assistant_item
                try:
                    async for message in websocket.iter_text():
                        data = json.loads(message)
                        if data["event"] == "media" and model.state.name == "OPEN":
                            latest_media_timestamp = int(data["media"]["timestamp"])
                            await model.send(json.dumps({"type": "input_audio_buffer.append",
                                                         "audio": data["media"]["payload"]}))
                        elif data["event"] == "start":
                            stream_sid = data["start"]["streamSid"]
                            print(f"Incoming stream has started {stream_sid}")
                            response_start_timestamp = None
                            latest_media_timestamp = 0
                            last_assistant_item = None
                        elif data["event"] == "mark":
                            if mark_queue:
                                mark_queue.pop(0)
                        elif data["event"] == "stop":
                            break
                except WebSocketDisconnect:
                    print("Client disconnected.")
                if model.state.name == "OPEN":
                    await model.close()

            async def send_to_twilio() -> None:
                nonlocal last_assistant_item, response_start_timestamp
                try:
                    async for message in model:
                        response = json.loads(message)
                        if response["type"] in LOG_EVENT_TYPES:
                            print(f"Received event: {response['type']}", response)
                        if response.get("type") == "response.output_audio.delta" and "delta" in response:
                            payload = base64.b64encode(base64.b64decode(response["delta"])).decode("utf-8")
                            await websocket.send_json({"event": "media", "streamSid": stream_sid,
                                                       "media": {"payload": payload}})
                            if response.get("item_id") and response["item_id"] != last_assistant_item:
                                response_start_timestamp = latest_media_timestamp
                                last_assistant_item = response["item_id"]
                            await send_mark()
                        if response.get("type") == "input_audio_buffer.speech_started":
                            print("Speech started detected.")
                            if last_assistant_item:
                                await handle_speech_started()
                except Exception as e:  # noqa: BLE001 - the sample logs and ends the task
                    print(f"Error in send_to_twilio: {e}")

            async def handle_speech_started() -> None:
                nonlocal last_assistant_item, response_start_timestamp
                if mark_queue and response_start_timestamp is not None:
                    elapsed = latest_media_timestamp - response_start_timestamp
                    if last_assistant_item:
                        await model.send(json.dumps({"type": "conversation.item.truncate",
                                                     "item_id": last_assistant_item, "content_index": 0,
                                                     "audio_end_ms": elapsed}))
                    await websocket.send_json({"event": "clear", "streamSid": stream_sid})
                    mark_queue.clear()
                    last_assistant_item = None
                    response_start_timestamp = None

            async def send_mark() -> None:
                if stream_sid:
                    await websocket.send_json({"event": "mark", "streamSid": stream_sid,
                                               "mark": {"name": "responsePart"}})
                    mark_queue.append("responsePart")

            await asyncio.gather(receive_from_twilio(), send_to_twilio())
    finally:
        active -= 1
        try:
            await websocket.close()
        except Exception:  # noqa: BLE001 - already closed by the caller
            pass


app = Starlette(routes=[Route("/twilio/voice", incoming_call, methods=["GET", "POST"]),
                        Route("/healthz", health), Route("/readyz", health),
                        WebSocketRoute("/media-stream", media_stream)])


def main(argv: list[str]) -> int:
    uvicorn.run(app, host="127.0.0.1", port=port_from(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
