"""Post-call events (webhooks): Standard Webhooks signatures, payloads from the stored record, the
durable delivery table on SQLite and PostgreSQL, and calls through the real gateway whose events
reach a receiver listening on a real 127.0.0.1 socket."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pg_fixture import pg_server, pg_url  # noqa: F401  (fixtures)
from tests.harness import AUTH_TOKEN, OPERATOR_TOKEN, running_gateway
from tests.speech import speech_pcm8k
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.service import CallLogService, open_calllog
from voicegw.config import Settings
from voicegw.events.dispatcher import EventDispatcher, EventOptions
from voicegw.events.sender import Sender, verdict
from voicegw.events.signing import Signer, message_id, parse_secret
from voicegw.events.store import Attempt, DeliveryStore, Verdict, deliveries_for
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.source import AudioSchedule
from voicegw.tools.paths import parse_path
from voicegw.yamlsrc import ConfigError

SECRET = "whsec_" + base64.b64encode(bytes(range(7, 39))).decode()
FAST = (0.05, 0.05)  # retry delays for tests: three attempts in a tenth of a second

AGENT = """
name: support
instructions: You are a friendly support agent for Acme.
greeting: "Hello! How can I help you today?"
audio_mode: g711_ulaw
tools:
  - name: opening_hours
    description: The opening hours.
    static:
      result: {weekdays: "9 am to 5 pm", weekends: closed}
"""


# ----------------------------------------------------------------------------- a webhook receiver

@dataclass
class Received:
    headers: dict[str, str]
    body: str
    status: int

    @property
    def type(self) -> str:
        return str(json.loads(self.body)["type"])

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """Answers each POST with `answer(event type, n)`, n counting the requests of one webhook-id."""

    def __init__(self, answer: Callable[[str, int], int]) -> None:
        self.answer = answer
        self.got: list[Received] = []
        self.hold: asyncio.Event | None = None  # set: requests wait on it before answering
        self._changed = asyncio.Condition()

    async def handle(self, request: Request) -> Response:
        body = (await request.body()).decode()
        headers = {k.lower(): v for k, v in request.headers.items()}
        n = 1 + sum(1 for r in self.got if r.id == headers["webhook-id"])
        status = self.answer(json.loads(body)["type"], n)
        async with self._changed:
            self.got.append(Received(headers, body, status))
            self._changed.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        return Response(status_code=status)

    async def wait(self, done: Callable[[list[Received]], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: done(self.got))

    def of(self, event_type: str) -> list[Received]:
        return [r for r in self.got if r.type == event_type]


@contextlib.asynccontextmanager
async def receiving(answer: Callable[[str, int], int]) -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver(answer)
    app = Starlette(routes=[Route("/hooks/voicegw", rx.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # requests wait in the backlog until the server accepts them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield rx, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/voicegw"
    finally:
        if rx.hold is not None:
            rx.hold.set()
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task
        sock.close()


def spec_signature(secret: str, msg_id: str, timestamp: str, body: str) -> str:
    """The spec's signature, computed here without the library."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verified(r: Received) -> dict[str, Any]:
    """The body of a received event after checking its signature twice: with the spec's library, as a
    receiver would, and with the spec's formula."""
    payload = Webhook(SECRET).verify(r.body, r.headers)
    assert r.headers["webhook-signature"] == spec_signature(SECRET, r.id, r.headers["webhook-timestamp"], r.body)
    assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
    return dict(payload)


def dispatcher_of(calllog: CallLogService) -> EventDispatcher:
    found = [x for x in calllog.listeners if isinstance(x, EventDispatcher)]
    assert len(found) == 1, calllog.listeners
    return found[0]


# ----------------------------------------------------------------------------- signatures, settings

def test_signature_matches_the_spec_test_vector() -> None:
    # the test vector of the Standard Webhooks reference libraries
    signer = Signer("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = signer.headers("msg_p5jXN8AQM9LWM0D4loKWxJek", '{"test": 2432232314}', 1614265330.7)
    assert headers == {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                       "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


def test_a_signed_body_verifies_and_any_change_breaks_it() -> None:
    body = json.dumps({"type": "call.ended", "timestamp": "2025-01-01T00:00:00.000Z", "data": {"x": "é"}},
                      ensure_ascii=False)
    headers = Signer(SECRET).headers(message_id("call.ended", "CA1"), body, time.time())
    assert Webhook(SECRET).verify(body, headers)["data"] == {"x": "é"}
    assert headers["webhook-signature"] == spec_signature(SECRET, headers["webhook-id"],
                                                          headers["webhook-timestamp"], body)
    for tampered in (body.replace("é", "e"), body + " "):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()).verify(body, headers)


def test_message_ids_are_stable_per_event_and_distinct_between_events() -> None:
    assert message_id("call.ended", "CA1") == message_id("call.ended", "CA1")
    ids = {message_id("call.ended", "CA1"), message_id("call.started", "CA1"), message_id("call.ended", "CA2"),
           message_id("recording.ready", "CA1", "7"), message_id("recording.ready", "CA1", "8")}
    assert len(ids) == 5 and all(i.startswith("msg_") for i in ids)


@pytest.mark.parametrize("env, variable, words", [
    ({"VOICEGW_EVENTS_URL": "https://hooks.example.com/x"}, "VOICEGW_EVENTS_SECRET", "required"),
    ({"VOICEGW_EVENTS_URL": "ftp://hooks.example.com/x", "VOICEGW_EVENTS_SECRET": SECRET}, "VOICEGW_EVENTS_URL", "http"),
    ({"VOICEGW_EVENTS_URL": "hooks.example.com/x", "VOICEGW_EVENTS_SECRET": SECRET}, "VOICEGW_EVENTS_URL", "http"),
    ({"VOICEGW_EVENTS_SECRET": "c2VjcmV0LXdpdGhvdXQtcHJlZml4LTAxMjM0NTY3"}, "VOICEGW_EVENTS_SECRET", "whsec_"),
    ({"VOICEGW_EVENTS_SECRET": "whsec_not*base64*at*all"}, "VOICEGW_EVENTS_SECRET", "base64"),
    ({"VOICEGW_EVENTS_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "VOICEGW_EVENTS_SECRET", "24 to 64"),
])
def test_bad_event_settings_refuse_to_start_naming_the_variable(env: dict[str, str], variable: str,
                                                                 words: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.field == variable and words in err.value.message, str(err.value)
    secret = env.get("VOICEGW_EVENTS_SECRET", "")
    assert not secret or secret.removeprefix("whsec_") not in str(err.value), "the secret was echoed"


def test_good_event_settings_are_kept_and_the_secret_stays_out_of_repr() -> None:
    s = Settings.from_env({"VOICEGW_EVENTS_URL": "https://hooks.example.com/x", "VOICEGW_EVENTS_SECRET": SECRET})
    assert (s.events_url, s.events_secret) == ("https://hooks.example.com/x", SECRET)
    assert SECRET not in repr(s)
    assert len(parse_secret(SECRET)) == 32
    assert Settings.from_env({}).events_url is None


def test_verdicts_follow_the_schedule_410_stops_and_retry_after_is_honoured() -> None:
    delays = (5.0, 30.0, 120.0)

    def at(status: int | None) -> Attempt:
        return Attempt(1000.0, status, None if status == 200 else "x", 1.0)

    assert verdict(1, at(200), delays).status == "delivered"
    assert verdict(4, at(204), delays).status == "delivered"
    assert verdict(1, at(410), delays).status == "failed"
    assert [verdict(n, at(500), delays).next_at for n in (1, 2, 3)] == [1005.0, 1030.0, 1120.0]
    assert verdict(4, at(500), delays).status == "failed"
    assert verdict(1, at(None), delays).next_at == 1005.0  # no answer at all
    assert verdict(1, at(301), delays).status == "pending"  # redirects are not followed
    assert verdict(1, at(429), delays, retry_after=60).next_at == 1060.0
    assert verdict(1, at(503), delays, retry_after=86400).next_at == 1120.0  # never beyond the schedule


async def test_an_attempt_is_bounded_and_its_error_never_shows_the_url() -> None:
    async with receiving(lambda t, n: 200) as (rx, url):
        rx.hold = asyncio.Event()  # the receiver never answers
        sender = Sender(url + "?token=receiver-secret", Signer(SECRET), timeout_s=0.3)
        try:
            answer = await sender.send("msg_1", '{"type":"call.ended"}')
        finally:
            await sender.aclose()
    assert answer.attempt.status is None and answer.attempt.error == "no answer within 0.3 s"
    assert answer.attempt.ms < 3000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hooks?token=receiver-secret"
    sender = Sender(closed, Signer(SECRET), timeout_s=2)
    try:
        answer = await sender.send("msg_1", "{}")
    finally:
        await sender.aclose()
    assert answer.attempt.status is None and answer.attempt.error
    assert "receiver-secret" not in answer.attempt.error


# ----------------------------------------------------------------------------- the delivery table

@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    return str(request.getfixturevalue("pg_url"))


@contextlib.asynccontextmanager
async def calllog_at(url: str) -> AsyncIterator[CallLogService]:
    svc = await open_calllog(url)
    try:
        yield svc
    finally:
        await svc.aclose()


async def stored_call(svc: CallLogService, sid: str, t: float = 1_700_000_000.0) -> None:
    svc.call_started(CallInfo(sid, "MZ" + sid, "+15550001111", "+15559990000", "support", t))
    await svc.flush()


async def test_claims_are_exclusive_and_a_lapsed_lease_passes_the_event_on(db_url: str) -> None:
    async with calllog_at(db_url) as a, calllog_at(db_url) as b:
        da, db = deliveries_for(a.store, lease_s=60), deliveries_for(b.store, lease_s=60)
        assert da.owner != db.owner
        await stored_call(a, "CA1")
        now = time.time()
        assert await da.add("msg_1", "CA1", "call.ended", "{}", now)
        assert not await db.add("msg_1", "CA1", "call.ended", "{}", now)  # the same event once
        assert await db.claim(now, 10) == []  # a's, and a's lease runs
        assert await db.next_due() == pytest.approx(now + 60)
        (mine,) = await da.claim(now, 10)
        assert await da.claim(now, 10) == []  # in flight: not due again while the claim lasts
        # a stops answering: after its lease b takes the event over, and a's late result is refused
        (taken,) = await db.claim(now + 61, 10)
        assert taken.id == "msg_1"
        assert not await da.finish(mine, Attempt(now + 62, 200, None, 5.0), Verdict("delivered"))
        failed = Attempt(now + 62, 500, "HTTP 500", 5.0)
        assert await db.finish(taken, failed, verdict(1, failed, (30.0,)))
        (row,) = await db.list(call_sid="CA1")
        assert row["status"] == "pending" and row["attempts"] == 1 and row["last_error"] == "HTTP 500"
        assert row["next_attempt_at"] == pytest.approx(now + 92) and row["history"][0]["status"] == 500
        assert await da.claim(now + 100, 10) == []  # b's now, until its lease after the retry time


async def test_concurrent_claims_hand_out_each_event_once(db_url: str) -> None:
    async with calllog_at(db_url) as a, calllog_at(db_url) as b:
        stores: list[DeliveryStore] = [deliveries_for(a.store), deliveries_for(b.store)]
        await stored_call(a, "CA1")
        now = time.time()
        for i in range(40):
            await stores[0].add(f"msg_{i:02d}", "CA1", "call.ended", "{}", now)
        await stores[0].release(now, [])  # both may claim them now
        batches = await asyncio.gather(*(stores[i % 2].claim(now, 3) for i in range(30)))
    ids = [d.id for batch in batches for d in batch]
    assert sorted(ids) == [f"msg_{i:02d}" for i in range(40)], "an event was claimed twice or never"


async def test_an_event_in_flight_at_shutdown_is_delivered_after_a_restart(db_url: str) -> None:
    async with receiving(lambda t, n: 200) as (stuck, stuck_url), receiving(lambda t, n: 204) as (rx, url):
        stuck.hold = asyncio.Event()  # the first process's attempt never gets an answer
        async with calllog_at(db_url) as first:
            sender = Sender(stuck_url, Signer(SECRET))
            events = EventDispatcher(deliveries_for(first.store), first.store, sender,
                                     EventOptions(retry_delays=FAST, close_grace_s=0.2))
            await events.start()
            first.listeners.append(events)
            await stored_call(first, "CA1")
            await stuck.wait(lambda got: len(got) == 1)
        # the first process has stopped; its event is pending, released, due now
        async with calllog_at(db_url) as second:
            (row,) = await deliveries_for(second.store).list(call_sid="CA1")
            assert row["status"] == "pending" and row["attempts"] == 0
            events = EventDispatcher(deliveries_for(second.store), second.store, Sender(url, Signer(SECRET)),
                                     EventOptions(retry_delays=FAST))
            await events.start()
            second.listeners.append(events)
            await rx.wait(lambda got: len(got) == 1)
            await events.settled()
            (row,) = await deliveries_for(second.store).list(call_sid="CA1")
    assert verified(rx.got[0])["type"] == "call.started" and rx.got[0].id == stuck.got[0].id
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["last_status"] == 204


async def test_call_ended_is_built_from_the_stored_record(db_url: str) -> None:
    """Every part of the record the payload carries, from entries as the call core writes them, and a
    tool argument at a `redact` path (logged before the tool ran) masked in the payload."""
    t0 = 1_700_000_000.0
    card = "4242424242424242"
    entries = [
        ("transcript", 1.0, {"role": "agent", "item_id": "a1", "text": "Hello! How can I help?", "cut": False}),
        ("transcript", 3.0, {"role": "caller", "item_id": "u1", "text": "Charge my card please.", "cut": False}),
        ("turn.latency", 3.6, {"item_id": "a2", "latency_ms": 610.0}),
        ("tool.call", 4.0, {"call_id": "c1", "name": "charge", "arguments": {"card": card, "amount": 12}}),
        ("tool.result", 4.2, {"call_id": "c1", "name": "charge", "ok": True, "result": {"card": "[redacted]",
                                                                                      "paid": True}, "duration_ms": 200.0}),
        ("transcript", 4.5, {"role": "agent", "item_id": "a2", "text": "Done, and your receipt", "cut": False}),
        ("barge_in", 5.0, {"item_id": "a2", "heard_ms": 900, "produced_ms": 2000, "audio_end_ms": 900,
                           "action": "truncate", "cancelled": True, "cause": "speech"}),
        ("transcript", 5.0, {"role": "agent", "item_id": "a2", "text": "Done, and", "cut": True}),
        ("call.ended", 7.0, {"reason": "caller_hangup", "duration_s": 7.0}),
        ("post_call", 8.0, {"summary": "The caller paid by card.", "extraction": {"paid": True},
                            "extraction_valid": True, "duration_ms": 800}),
        ("recording.ready", 8.1, {"mode": "dual", "channels": 2, "duration_s": 7.0, "bytes": 224044,
                                  "url": "/api/calls/CA9/recording", "content_type": "audio/wav"}),
    ]
    sent: list[httpx.Request] = []
    three = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 3:
            three.set()
        return httpx.Response(200)

    async with calllog_at(db_url) as svc:
        sender = Sender("https://hooks.example.com/voicegw", Signer(SECRET), transport=httpx.MockTransport(handler))
        events = EventDispatcher(deliveries_for(svc.store), svc.store, sender,
                                 EventOptions(public_url="https://voice.example.com"),
                                 redactions={"charge": (parse_path("card"),)})
        await events.start()
        svc.listeners.append(events)
        svc.call_started(CallInfo("CA9", "MZ9", "+15550001111", "+15559990000", "support", t0))
        for kind, dt, data in entries:
            svc.event("CA9", CallLogEntry(kind, t0 + dt, data))
        svc.call_ended("CA9", "caller_hangup", t0 + 8.2)
        await svc.flush()
        async with asyncio.timeout(20):
            await three.wait()
        await events.settled()
        rows = await events.deliveries.list(call_sid="CA9")
    assert sorted(r["status"] for r in rows) == ["delivered"] * 3
    bodies = {}
    for request in sent:
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload = Webhook(SECRET).verify(request.content.decode(), headers)
        bodies[payload["type"]] = payload
        assert headers["content-type"] == "application/json" and headers["user-agent"].startswith("voicegw/")
    assert bodies["call.started"]["data"] == {"call_sid": "CA9", "from": "+15550001111", "to": "+15559990000",
                                              "agent": "support", "started_at": "2023-11-14T22:13:20.000Z"}
    assert bodies["recording.ready"]["data"]["url"] == "https://voice.example.com/api/calls/CA9/recording"
    ended = bodies["call.ended"]
    assert ended["timestamp"] == "2023-11-14T22:13:28.200Z"
    d = ended["data"]
    assert (d["call_sid"], d["from"], d["to"], d["agent"], d["end_reason"]) == (
        "CA9", "+15550001111", "+15559990000", "support", "caller_hangup")
    assert d["started_at"] == "2023-11-14T22:13:20.000Z" and d["ended_at"] == "2023-11-14T22:13:28.200Z"
    assert d["duration_s"] == pytest.approx(8.2)
    assert d["transcript"] == [{"role": "agent", "text": "Hello! How can I help?", "t": 1.0},
                               {"role": "caller", "text": "Charge my card please.", "t": 3.0},
                               {"role": "agent", "text": "Done, and", "t": 4.5}]  # as the caller heard it
    assert d["tool_calls"] == [{"name": "charge", "arguments": {"card": "[redacted]", "amount": 12}, "ok": True,
                                "duration_ms": 200.0, "t": 4.0, "result": {"card": "[redacted]", "paid": True}}]
    assert d["barge_ins"] == [{"t": 5.0, "cause": "speech", "action": "truncate", "heard_ms": 900,
                               "produced_ms": 2000}]
    assert d["turn_latencies"] == [{"t": 3.6, "latency_ms": 610.0}] and d["turn_latency_p50_ms"] == 610.0
    assert (d["summary"], d["extraction"], d["extraction_valid"]) == ("The caller paid by card.", {"paid": True}, True)
    assert d["recording"] == {"mode": "dual", "channels": 2, "duration_s": 7.0, "bytes": 224044,
                              "content_type": "audio/wav", "url": "https://voice.example.com/api/calls/CA9/recording"}
    assert card not in json.dumps(bodies)


# ----------------------------------------------------------------------------- through the gateway

def events_env(url: str) -> dict[str, str]:
    return {"VOICEGW_EVENTS_URL": url, "VOICEGW_EVENTS_SECRET": SECRET}


@pytest.mark.e2e
async def test_a_call_reaches_the_receiver_as_signed_events_with_its_transcript() -> None:
    question = speech_pcm8k("Hello, what are your opening hours?")
    async with receiving(lambda t, n: 204) as (rx, url):
        # the summary and the recording are written after the caller has gone, before the call closes
        agent = AGENT + "post_call: {summary: true}\nrecording: mixed\n"
        async with running_gateway(agent_yaml=agent, env=events_env(url)) as gw:
            caller = SimulatedCaller(gw.url, audio=AudioSchedule.from_segments([(4000, question)]),
                                     auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=2500, timeout_s=40)
            record = await gw.call_record(result.call_sid, timeout=30)
            await rx.wait(lambda got: {"call.started", "recording.ready", "call.ended"} <= {r.type for r in got})
            await dispatcher_of(gw.calllog).settled()
            metrics = gw.gateway.metrics
            delivered = metrics.c_events_delivered.labels("call.ended")._value.get()
    assert [r.type for r in rx.got].count("call.ended") == 1
    started = verified(rx.of("call.started")[0])["data"]
    assert started["call_sid"] == result.call_sid and started["agent"] == "support"
    ended = verified(rx.of("call.ended")[0])
    d = ended["data"]
    assert d["call_sid"] == result.call_sid and d["end_reason"] == "caller_hangup" and d["agent"] == "support"
    said = [(t["role"], t["text"]) for t in d["transcript"]]
    assert said[0] == ("agent", "Hello! How can I help you today?"), said
    assert [t["text"] for t in record["transcript"] if t["role"] == "caller"] == \
        [text for role, text in said if role == "caller"] != []
    assert [(c["name"], c["ok"]) for c in d["tool_calls"]] == [("opening_hours", True)], d["tool_calls"]
    assert d["tool_calls"][0]["result"] == {"weekdays": "9 am to 5 pm", "weekends": "closed"}
    assert len(d["turn_latencies"]) == len(record["latency"]) >= 1
    assert d["duration_s"] == round(record["duration_s"], 3)
    asked = [text for role, text in said if role == "caller"]
    assert d["summary"] == record["summary"] and asked[0] in d["summary"], d.get("summary")
    recording = verified(rx.of("recording.ready")[0])["data"]
    assert recording["call_sid"] == result.call_sid and recording["mode"] == "mixed" and recording["bytes"] > 44
    assert recording["url"] == f"/api/calls/{result.call_sid}/recording"  # no VOICEGW_PUBLIC_URL here
    assert d["recording"] == {k: v for k, v in recording.items() if k != "call_sid"}
    for r in rx.got:  # no credential of the gateway's in any event
        for secret in (AUTH_TOKEN, OPERATOR_TOKEN, SECRET.removeprefix("whsec_")):
            assert secret not in r.body
    assert delivered == 1


@pytest.mark.e2e
async def test_a_receiver_that_fails_first_gets_the_same_event_again() -> None:
    async with receiving(lambda t, n: 503 if n == 1 else 200) as (rx, url):
        async with running_gateway(agent_yaml=AGENT, env=events_env(url), events_retry=FAST) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=800, timeout_s=30)
            await gw.call_record(result.call_sid)
            await rx.wait(lambda got: [r.status for r in got if r.type == "call.ended"] == [503, 200])
            await dispatcher_of(gw.calllog).settled()
            async with httpx.AsyncClient(base_url=gw.url, timeout=10,
                                         headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as http:
                listed = (await http.get("/api/events", params={"call": result.call_sid})).json()
            retried = gw.gateway.metrics.c_events_retried.labels("call.ended")._value.get()
    first, second = rx.of("call.ended")
    assert first.id == second.id and verified(first) == verified(second)  # one message, tried twice
    ended = next(e for e in listed["events"] if e["type"] == "call.ended")
    assert ended["status"] == "delivered" and ended["attempts"] == 2 and ended["last_status"] == 200
    assert [a["status"] for a in ended["history"]] == [503, 200] and ended["history"][0]["error"] == "HTTP 503"
    assert retried == 1


@pytest.fixture(params=["sqlite", "postgres"])
def gateway_db(request: pytest.FixtureRequest) -> str | None:
    """The gateway's VOICEGW_DATABASE_URL: None (its own SQLite file) or a PostgreSQL database."""
    return str(request.getfixturevalue("pg_url")) if request.param == "postgres" else None


@pytest.mark.e2e
async def test_a_receiver_that_always_fails_leaves_a_failed_event_in_the_api(gateway_db: str | None) -> None:
    async with receiving(lambda t, n: 500) as (rx, url):
        async with running_gateway(agent_yaml=AGENT, env=events_env(url), events_retry=FAST,
                                   database_url=gateway_db) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=800, timeout_s=30)
            await gw.call_record(result.call_sid)
            await rx.wait(lambda got: len([r for r in got if r.type == "call.ended"]) == 1 + len(FAST))
            await dispatcher_of(gw.calllog).settled()
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
                refused = await http.get("/api/events", params={"status": "failed"})
                http.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
                failed = (await http.get("/api/events", params={"status": "failed"})).json()
                bad = await http.get("/api/events", params={"status": "lost"})
                page = await http.get("/console/events")
                exposition = (await http.get("/metrics")).text
    assert refused.status_code == 401 and bad.status_code == 400
    assert failed["enabled"] is True and failed["counts"]["failed"] == 2  # call.started and call.ended
    ended = next(e for e in failed["events"] if e["type"] == "call.ended")
    assert ended["call_sid"] == result.call_sid and ended["attempts"] == 1 + len(FAST)
    assert ended["last_status"] == 500 and ended["last_error"] == "HTTP 500" and ended["next_attempt_at"] is None
    assert "body" not in ended
    assert page.status_code == 200 and "/console/static/events.js" in page.text
    assert 'voicegw_events_failed_total{type="call.ended"} 1.0' in exposition
    assert 'voicegw_events_retried_total{type="call.ended"} 2.0' in exposition


@pytest.mark.browser
async def test_the_console_lists_failed_events_and_a_call_shows_its_own(tmp_path: Any) -> None:
    from calllog_support import serve_console
    from playwright.async_api import async_playwright
    from test_console_browser import ARGS, CHROMIUM, WAIT_MS, login

    token = "events-op-token"
    async with calllog_at(f"sqlite:///{tmp_path / 'c.db'}") as svc:
        await stored_call(svc, "CAEV1", time.time() - 60)
        store = deliveries_for(svc.store)
        now = time.time()
        for i, (kind, status, error) in enumerate((("call.started", 200, None),
                                                   ("call.ended", 500, "HTTP 500: <b>upstream</b> down"))):
            await store.add(message_id(kind, "CAEV1"), "CAEV1", kind, "{}", now + i)
            (claimed,) = await store.claim(now + i, 1)
            attempt = Attempt(now + i, status, error, 12.0)
            await store.finish(claimed, attempt, verdict(9, attempt, FAST))
        errors: list[str] = []
        async with serve_console(svc, Settings.from_env({}, operator_tokens=(token,))) as base, \
                async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
            try:
                page = await browser.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                await login(page, base, token)
                await page.click("nav a[data-nav=events]")
                await page.wait_for_url(base + "/console/events", timeout=WAIT_MS)
                row = page.locator("#events tbody tr.event-failed")
                await row.wait_for(timeout=WAIT_MS)
                cells = await row.locator("td").all_text_contents()
                assert cells[1:5] == ["call.ended", "CAEV1", "failed", "1"], cells
                assert cells[6] == "HTTP 500: <b>upstream</b> down"  # as text, never as markup
                assert await page.locator("#events tbody tr").count() == 1  # failed ones by default
                assert [await page.locator(f"#count-{s}").text_content() for s in ("pending", "delivered", "failed")] \
                    == ["0", "1", "1"]
                assert await page.locator("#events-off").is_visible()  # no VOICEGW_EVENTS_URL here
                await page.select_option("#event-filters select", "")
                await page.locator("#events tbody tr.event-delivered").wait_for(timeout=WAIT_MS)
                await row.locator("td.sid a").click()
                await page.wait_for_url(base + "/console/calls/CAEV1", timeout=WAIT_MS)
                box = page.locator("#call-events")
                await box.locator("tbody tr").nth(1).wait_for(timeout=WAIT_MS)
                assert await box.is_visible()
                assert await box.locator("tbody tr td.type").all_text_contents() == ["call.started", "call.ended"]
                assert await page.locator("b").count() == 0
            finally:
                await browser.close()
    assert errors == []


async def test_pruning_a_call_removes_its_events(db_url: str) -> None:
    async with calllog_at(db_url) as svc:
        await stored_call(svc, "CAOLD", time.time() - 90 * 86400)
        svc.call_ended("CAOLD", "caller_hangup", time.time() - 90 * 86400 + 30)
        await stored_call(svc, "CANEW")
        store = deliveries_for(svc.store)
        for sid in ("CAOLD", "CANEW"):
            await store.add(message_id("call.started", sid), sid, "call.started", "{}", time.time())
        assert await svc.store.prune(30 * 86400) == 1
        assert [r["call_sid"] for r in await store.list()] == ["CANEW"]
