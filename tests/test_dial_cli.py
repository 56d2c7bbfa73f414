"""`voicegw dial`: one call, and CSV campaigns (concurrency, results, resuming from the state file),
against a running gateway whose Twilio is the fake REST API; the test plays Twilio's part."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import json
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fake_twilio_rest import FakeTwilioRest
from tests.harness import AUTH_TOKEN, OPERATOR_TOKEN, GatewayHandle
from tests.test_outbound import FROM, TO, outbound_gateway
from voicegw.cli import main
from voicegw.sim.callee import CalleeAudio, SimulatedCallee, person_audio
from voicegw.telephony.grants import verify_grant

pytestmark = pytest.mark.e2e


class PlayingTwilio:
    """Answers each call the gateway places: a simulated person says hello, hears the start of the
    greeting and hangs up. `live` counts the calls answered and not yet hung up."""

    def __init__(self, gw: GatewayHandle, fake: FakeTwilioRest, person: CalleeAudio,
                 unanswered: frozenset[str] = frozenset()) -> None:
        self.gw, self.person, self.unanswered = gw, person, unanswered
        self.loop = asyncio.get_running_loop()
        self.live = self.max_live = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        fake.on_create = lambda placed: self.loop.call_soon_threadsafe(self._ring, dict(placed))

    def _ring(self, placed: dict[str, Any]) -> None:
        if placed["To"] in self.unanswered:
            return
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        task = asyncio.ensure_future(self._answer(placed))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, placed: dict[str, Any]) -> None:
        callee = SimulatedCallee(placed, self.person, auth_token=AUTH_TOKEN)
        try:
            await callee.answer()
            await callee.classify()
            await callee.caller.wait_for_audio(10)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            self.live -= 1  # before the hang-up: the gateway cannot have seen the call end yet
            await callee.caller.hang_up()


@contextlib.asynccontextmanager
async def twilio_and_gateway(unanswered: frozenset[str] = frozenset()) -> AsyncIterator[
        tuple[GatewayHandle, FakeTwilioRest, PlayingTwilio]]:
    person = await person_audio()
    async with outbound_gateway() as (gw, fake):
        twilio = PlayingTwilio(gw, fake, person, unanswered)
        yield gw, fake, twilio
        if twilio.tasks:
            await asyncio.wait(twilio.tasks, timeout=20)
        assert not twilio.errors, twilio.errors


async def dial(gw: GatewayHandle, *args: str) -> int:
    """`voicegw dial ...` against the gateway, in a thread (the CLI runs its own event loop)."""
    return await asyncio.to_thread(main, ["dial", "--url", gw.url, "--token", OPERATOR_TOKEN, "--from", FROM, *args])


def context_of(gw: GatewayHandle, placed: dict[str, Any]) -> dict[str, str]:
    token = parse_qs(urlsplit(placed["Url"]).query)["outbound"][0]
    return verify_grant(gw.settings.stream_secret, token, "voice", now=0).context


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


async def test_dial_prints_the_call_sid_and_says_why_a_call_was_refused(capsys: pytest.CaptureFixture[str]) -> None:
    async with outbound_gateway() as (gw, fake):
        assert await dial(gw, "--to", TO, "--context", "customer_name=Ada", "--no-machine-detection") == 0
        out, err = capsys.readouterr()
        assert out.strip() == fake.created[0]["Sid"]
        assert "order_id" in err  # the agent's instructions use it; the context lacks it
        assert context_of(gw, fake.created[0]) == {"customer_name": "Ada"}
        assert "MachineDetection" not in fake.created[0]
        assert await dial(gw, "--to", "12345") == 1
        out, err = capsys.readouterr()
        assert out == "" and "HTTP 422" in err and "E.164" in err
        assert await dial(gw, "--to", TO, "--context", "no equals sign") == 2
        assert len(fake.created) == 1


async def test_a_campaign_keeps_at_most_n_calls_in_flight_and_writes_a_result_per_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numbers = [f"+1555010{i:04d}" for i in range(5)]
    rows = [{"to": n, "customer_name": f"Customer {i}", "order_id": f"A{i}"} for i, n in enumerate(numbers)]
    csv_path = write_csv(tmp_path / "numbers.csv", rows + [rows[0]])  # a repeated number is called once
    results = tmp_path / "results.csv"
    async with twilio_and_gateway() as (gw, fake, twilio):
        code = await dial(gw, "--csv", str(csv_path), "--concurrency", "2", "--out", str(results))
    assert code == 0
    assert twilio.max_live == 2
    assert sorted(p["To"] for p in fake.created) == numbers
    assert context_of(gw, next(p for p in fake.created if p["To"] == numbers[3])) == {
        "customer_name": "Customer 3", "order_id": "A3"}
    with results.open() as f:
        got = {row["to"]: row for row in csv.DictReader(f)}
    assert sorted(got) == numbers
    assert {row["status"] for row in got.values()} == {"ended"}
    assert {row["answered_by"] for row in got.values()} == {"human"}
    assert {row["call_sid"] for row in got.values()} == {p["Sid"] for p in fake.created}
    state = json.loads((tmp_path / "numbers.csv.state.json").read_text())
    assert {n: e["status"] for n, e in state["numbers"].items()} == {n: "ended" for n in numbers}
    assert not list(tmp_path.glob("*.tmp"))
    err = capsys.readouterr().err
    assert "5 numbers: 0 already done, 5 to call, 2 at a time" in err and "done: 5 ended" in err


async def test_a_number_nobody_answers_frees_its_slot_after_the_answer_timeout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quiet, other = "+15550109001", "+15550109002"
    csv_path = write_csv(tmp_path / "n.csv", [{"to": quiet}, {"to": other}])
    async with twilio_and_gateway(unanswered=frozenset({quiet})) as (gw, fake, twilio):
        code = await dial(gw, "--csv", str(csv_path), "--concurrency", "1", "--answer-timeout", "1")
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["to"], r["status"]) for r in lines] == [(quiet, "no_answer"), (other, "ended")]


async def test_a_rerun_skips_what_is_done_never_redials_a_call_in_flight_and_retries_failures_on_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done, in_flight, fresh, refused = "+15550108001", "+15550108002", "+15550108003", "+15550108004"
    csv_path = write_csv(tmp_path / "c.csv", [{"to": n} for n in (done, in_flight, fresh, refused)])
    state = tmp_path / "progress.json"
    state.write_text(json.dumps({"version": 1, "numbers": {  # as a run stopped mid-way left it
        done: {"to": done, "status": "created", "call_sid": "CA" + "1" * 32},
        in_flight: {"to": in_flight, "status": "placed", "call_sid": "CA" + "2" * 32}}}))
    base = ["--csv", str(csv_path), "--state", str(state), "--until", "created", "--concurrency", "1"]
    async with outbound_gateway() as (gw, fake):
        fake.on_create = lambda placed: setattr(fake, "refuse_create", (400, 21211, "Invalid 'To' Phone Number"))
        assert await dial(gw, *base) == 1  # the refused number failed
        assert [p["To"] for p in fake.created] == [fresh]
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["to"], r["status"]) for r in out] == [(in_flight, "created"), (fresh, "created"), (refused, "failed")]
        assert out[0]["call_sid"] == "CA" + "2" * 32 and "Invalid 'To'" in out[2]["error"]

        fake.on_create, fake.refuse_create = None, None
        assert await dial(gw, *base) == 0
        assert len(fake.created) == 1 and capsys.readouterr().out == ""
        assert await dial(gw, *base, "--retry-failed") == 0
        assert [p["To"] for p in fake.created] == [fresh, refused]
    numbers = json.loads(state.read_text())["numbers"]
    assert {n: e["status"] for n, e in numbers.items()} == {n: "created" for n in (done, in_flight, fresh, refused)}


async def test_a_campaign_places_at_most_cps_calls_a_second(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numbers = [f"+1555020{i:04d}" for i in range(4)]
    csv_path = write_csv(tmp_path / "paced.csv", [{"to": n} for n in numbers])
    async with twilio_and_gateway() as (gw, fake, twilio):
        code = await dial(gw, "--csv", str(csv_path), "--concurrency", "4", "--cps", "4", "--until", "created")
    assert code == 0 and sorted(p["To"] for p in fake.created) == numbers
    state = json.loads((tmp_path / "paced.csv.state.json").read_text())
    placed = sorted(e["placed_at"] for e in state["numbers"].values())
    gaps = [b - a for a, b in zip(placed, placed[1:])]
    assert min(gaps) >= 0.2, gaps  # one slot every 0.25 s, though four workers were free at once
    assert "4 at a time, 4 placed a second" in capsys.readouterr().err
    assert await dial(gw, "--csv", str(csv_path), "--cps", "-1") == 2
