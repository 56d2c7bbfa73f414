"""The official `openai` SDK drives the local model; every server event must validate.

The SDK itself builds its event objects without validation (construct), so each raw frame is
validated here with pydantic against the SDK's own server-event union: GA events against
`openai.types.realtime.RealtimeServerEvent`, preview events against the beta union.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as PreviewServerEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GAServerEvent
from pydantic import TypeAdapter

from localmodel_helpers import KEY
from voicegw.localmodel.server import LocalModelServer

GA_EVENTS: TypeAdapter[Any] = TypeAdapter(GAServerEvent)
PREVIEW_EVENTS: TypeAdapter[Any] = TypeAdapter(PreviewServerEvent)
ORDER_TOOL = {
    "type": "function", "name": "get_order_status",
    "description": "Look up the delivery status of an order by its order number.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer(api_key=KEY, realtime_factor=8.0) as srv:
        yield srv


class Validated:
    """Receives raw frames through the SDK connection and validates each one."""

    def __init__(self, connection: Any, adapter: TypeAdapter[Any]) -> None:
        self.connection = connection
        self.adapter = adapter
        self.types: list[str] = []

    async def until(self, kind: str) -> list[Any]:
        got = []
        while True:
            raw = await self.connection.recv_bytes()
            event = self.adapter.validate_python(json.loads(raw))  # raises on any invalid event
            assert event.type != "error", event
            self.types.append(event.type)
            got.append(event)
            if event.type == kind:
                return got


async def ga_turn_and_tool_call(connection: Any) -> None:
    events = Validated(connection, GA_EVENTS)
    assert (await events.until("session.created"))[-1].session.type == "realtime"
    await connection.session.update(session={"type": "realtime", "tools": [ORDER_TOOL],
                                              "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    await events.until("session.updated")
    await connection.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]})
    await connection.response.create()
    got = await events.until("response.done")
    assert any(e.type == "response.output_audio.delta" for e in got)
    assert got[-1].response.status == "completed"
    await connection.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "where is my order 4417"}]})
    await connection.response.create()
    got = await events.until("response.done")
    call = next(e for e in got if e.type == "response.function_call_arguments.done")
    assert call.name == "get_order_status" and json.loads(call.arguments) == {"order_id": "4417"}
    await connection.conversation.item.create(item={
        "type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"status": "shipped"})})
    await connection.response.create()
    got = await events.until("response.done")
    said = next(e for e in got if e.type == "response.output_audio_transcript.done").transcript
    assert said == "Here is what I found: status shipped."


async def preview_turn_and_tool_call(connection: Any) -> None:
    events = Validated(connection, PREVIEW_EVENTS)
    assert (await events.until("session.created"))[-1].session.input_audio_format == "pcm16"
    await connection.session.update(session={"tools": [ORDER_TOOL], "modalities": ["text", "audio"]})
    await events.until("session.updated")
    await connection.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "my order is 1 2 3"}]})
    await connection.response.create()
    got = await events.until("response.done")
    call = next(e for e in got if e.type == "response.function_call_arguments.done")
    assert json.loads(call.arguments) == {"order_id": "123"}
    await connection.conversation.item.create(item={
        "type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"eta": "Friday"})})
    await connection.response.create()
    got = await events.until("response.done")
    assert any(e.type == "response.audio.delta" for e in got)
    said = next(e for e in got if e.type == "response.audio_transcript.done").transcript
    assert said == "Here is what I found: eta Friday."
    assert "conversation.created" in events.types


async def test_openai_ga_client(server: LocalModelServer) -> None:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await ga_turn_and_tool_call(connection)


async def test_azure_ga_path_with_openai_client(server: LocalModelServer) -> None:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/openai/v1", api_key=KEY)
    async with client.realtime.connect(model="my-realtime-deployment") as connection:
        await ga_turn_and_tool_call(connection)


async def test_openai_beta_client_speaks_preview(server: LocalModelServer) -> None:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY,
                         websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview-2024-12-17") as connection:
        await preview_turn_and_tool_call(connection)


async def test_azure_preview_client(server: LocalModelServer) -> None:
    client = AsyncAzureOpenAI(azure_endpoint=f"http://127.0.0.1:{server.port}", api_key=KEY,
                              api_version="2024-10-01-preview",
                              websocket_base_url=f"ws://127.0.0.1:{server.port}/openai")
    async with client.beta.realtime.connect(model="my-realtime-deployment") as connection:
        await preview_turn_and_tool_call(connection)
