"""ToolSet.run: every failure becomes an outcome the model can act on, secrets never leak, and a
tool cancelled by the end of the call leaves nothing behind. HTTP tests use a real server on
127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import threading
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from voicegw.tools.contract import HangUp, ToolContext, Transfer
from voicegw.config import Settings, load_agent
from voicegw.tools import hosts
from voicegw.tools.runner import MAX_OUTPUT_CHARS, ToolSet, load_toolset

SECRET = "s3cr3t-token-0f-the-api"
CTX = ToolContext(call_sid="CA1", stream_sid="MZ1", from_number="+15550001111", to_number="+15550002222", agent="agent.yaml")
SETTINGS = Settings(tool_hosts=("127.0.0.1",))


# --- a small real HTTP service ----------------------------------------------------------------


class Service:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.hang_started = threading.Event()
        self.disconnected = threading.Event()
        self.port = 0

    def app(self) -> Starlette:
        async def order(request: Request) -> Response:
            self.hits["order"] += 1
            auth = request.headers.get("authorization", "")
            return JSONResponse({
                "order": {"id": request.path_params["oid"], "status": "shipped"},
                "customer": {"name": "Ada", "email": "ada@example.com"},
                "seen_auth": auth,  # a careless API echoing the credential back
            })

        async def flaky(request: Request) -> Response:
            key = request.path_params["key"]
            self.hits[key] += 1
            if self.hits[key] < 3:
                return PlainTextResponse("try later", status_code=503)
            return JSONResponse({"ok": True, "attempt": self.hits[key]})

        async def status(request: Request) -> Response:
            code = int(request.path_params["code"])
            return PlainTextResponse(f"failure {code}; auth was {request.headers.get('authorization')}", status_code=code)

        async def big(request: Request) -> Response:
            return JSONResponse({"items": [{"n": i, "text": "x" * 40} for i in range(1000)]})

        async def hang(request: Request) -> Response:
            self.hang_started.set()
            message = await asyncio.wait_for(request.receive(), 10)  # the request body
            if message["type"] != "http.disconnect":
                message = await asyncio.wait_for(request.receive(), 10)
            if message["type"] == "http.disconnect":
                self.disconnected.set()
            return PlainTextResponse("late")

        async def away(request: Request) -> Response:
            return RedirectResponse(f"http://localhost:{self.port}/orders/1", status_code=302)

        async def same(request: Request) -> Response:
            return RedirectResponse("/orders/77", status_code=302)

        return Starlette(routes=[
            Route("/orders/{oid}", order),
            Route("/flaky/{key}", flaky, methods=["GET", "POST"]),
            Route("/status/{code}", status),
            Route("/big", big),
            Route("/hang", hang, methods=["GET", "POST"]),
            Route("/away", away),
            Route("/same", same),
        ])


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = Service()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue in the backlog until the server loop accepts them
    svc.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(svc.app(), log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield svc
    server.should_exit = True
    thread.join(10)
    sock.close()


def toolset(tmp_path: Path, tools_yaml: str, settings: Settings = SETTINGS) -> ToolSet:
    path = tmp_path / "agent.yaml"
    path.write_text("name: t\ntools:\n" + textwrap.indent(textwrap.dedent(tools_yaml).strip("\n"), "  ") + "\n")
    return load_toolset(load_agent(path), settings)


def http_tool(url: str, extra: str = "", name: str = "fetch", params: str = "{type: object, properties: {}}") -> str:
    return f"""
    - name: {name}
      description: fetch something
      parameters: {params}
      timeout: 5s
      http:
        url: "{url}"
        headers: {{Authorization: "Bearer ${{DEMO_SECRET}}"}}
    """.rstrip() + "\n" + textwrap.indent(textwrap.dedent(extra).strip("\n"), " " * 8) + "\n"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_SECRET", SECRET)


def assert_no_secret(outcome: Any) -> None:
    for text in (outcome.output, outcome.error or "", json.dumps(outcome.logged_result)):
        assert SECRET not in text


# --- arguments ----------------------------------------------------------------------------------

STATIC = """
- name: echo
  description: fixed answer
  parameters:
    type: object
    properties:
      order_id: {type: string, pattern: "^[0-9]+$"}
      count: {type: integer, minimum: 1}
    required: [order_id]
  static: {result: {answer: 42}}
"""


async def test_invalid_arguments_go_back_to_the_model(tmp_path: Path) -> None:
    tools = toolset(tmp_path, STATIC)
    out = await tools.run(CTX, "echo", json.dumps({"order_id": "12ab", "count": 0}))
    assert not out.ok and out.error == "invalid arguments"
    problems = json.loads(out.output)["problems"]
    assert any(p.startswith("order_id:") and "does not match" in p for p in problems)
    assert any(p.startswith("count:") and "minimum" in p for p in problems)

    missing = await tools.run(CTX, "echo", "{}")
    assert "'order_id' is a required property" in json.loads(missing.output)["problems"][0]

    bad_json = await tools.run(CTX, "echo", '{"order_id": ')
    assert not bad_json.ok and "not valid JSON" in json.loads(bad_json.output)["problems"][0]

    not_object = await tools.run(CTX, "echo", "[1, 2]")
    assert json.loads(not_object.output)["problems"] == ["arguments must be a JSON object"]

    good = await tools.run(CTX, "echo", '{"order_id": "123"}')
    assert good.ok and json.loads(good.output) == {"answer": 42} and good.logged_result == {"answer": 42}


async def test_unknown_tool(tmp_path: Path) -> None:
    out = await toolset(tmp_path, STATIC).run(CTX, "launch", "{}")
    assert not out.ok
    assert json.loads(out.output) == {"error": "unknown tool 'launch'", "available_tools": ["echo"]}


# --- python handlers, timeout, cancellation ------------------------------------------------------


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    state = types.SimpleNamespace(started=asyncio.Event(), never=asyncio.Event(), cleaned_up=False)
    mod = types.ModuleType("voicegw_test_handlers")

    def add(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return {"sum": arguments["a"] + arguments["b"], "in_thread": threading.current_thread() is not threading.main_thread()}

    async def who(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return {"agent": context.agent, "caller": context.from_number}

    async def hang(arguments: dict[str, Any], context: ToolContext) -> None:
        state.started.set()
        try:
            await state.never.wait()
        finally:
            state.cleaned_up = True

    def crash(arguments: dict[str, Any], context: ToolContext) -> None:
        raise RuntimeError(f"database password {SECRET} rejected")

    mod.add, mod.who, mod.hang, mod.crash = add, who, hang, crash  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voicegw_test_handlers", mod)
    return state


PY_TOOLS = """
- name: add
  description: add
  parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
  python: {entry: "voicegw_test_handlers:add"}
- name: who
  description: who
  python: {entry: "voicegw_test_handlers:who"}
- name: hang
  description: never returns
  timeout: 300ms
  python: {entry: "voicegw_test_handlers:hang"}
- name: crash_py
  description: raises
  python: {entry: "voicegw_test_handlers:crash"}
- name: uses_secret
  description: makes DEMO_SECRET a configured secret of this agent
  http: {url: "http://127.0.0.1:9/x", headers: {X-Key: "${DEMO_SECRET}"}}
"""


async def test_python_handlers_sync_in_thread_and_async(tmp_path: Path, handlers: types.SimpleNamespace) -> None:
    tools = toolset(tmp_path, PY_TOOLS)
    out = await tools.run(CTX, "add", '{"a": 2, "b": 3.5}')
    assert out.ok and json.loads(out.output) == {"sum": 5.5, "in_thread": True}
    out = await tools.run(CTX, "who", "")
    assert json.loads(out.output) == {"agent": "agent.yaml", "caller": "+15550001111"}


async def test_crashing_handler_is_reported_without_its_secret(tmp_path: Path, handlers: types.SimpleNamespace,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    out = await toolset(tmp_path, PY_TOOLS).run(CTX, "crash_py", "{}")
    assert not out.ok and out.error == "the tool failed (RuntimeError)"
    assert "[secret]" in caplog.text and SECRET not in caplog.text
    assert_no_secret(out)


async def test_hanging_tool_times_out(tmp_path: Path, handlers: types.SimpleNamespace) -> None:
    out = await asyncio.wait_for(toolset(tmp_path, PY_TOOLS).run(CTX, "hang", "{}"), 5)
    assert not out.ok and out.error == "the tool timed out after 0.3s"
    assert out.duration_ms >= 300
    assert handlers.cleaned_up


async def test_call_ending_cancels_a_running_tool(tmp_path: Path, handlers: types.SimpleNamespace) -> None:
    tools = toolset(tmp_path, PY_TOOLS.replace("timeout: 300ms", "timeout: 60s"))
    task = asyncio.create_task(tools.run(CTX, "hang", "{}"))
    await asyncio.wait_for(handlers.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handlers.cleaned_up
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelling_an_http_tool_closes_its_connection(tmp_path: Path, service: Service) -> None:
    tools = toolset(tmp_path, http_tool(f"http://127.0.0.1:{service.port}/hang"))
    task = asyncio.create_task(tools.run(CTX, "fetch", "{}"))
    assert await asyncio.to_thread(service.hang_started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert await asyncio.to_thread(service.disconnected.wait, 5)  # the server saw the client go away


# --- http ---------------------------------------------------------------------------------------


async def test_http_get_with_select_redaction_and_scrubbed_secret(tmp_path: Path, service: Service) -> None:
    tools = toolset(tmp_path, f"""
    - name: fetch
      description: fetch an order
      parameters: {{type: object, properties: {{order_id: {{type: string}}}}, required: [order_id]}}
      redact: [customer.email, order.id]
      http:
        url: "http://127.0.0.1:{service.port}/orders/{{{{order_id}}}}"
        headers: {{Authorization: "Bearer ${{DEMO_SECRET}}"}}
    """)
    out = await tools.run(CTX, "fetch", '{"order_id": "12 34?admin=1#x"}')
    assert out.ok, out.output
    result = json.loads(out.output)
    # the argument stayed inside its path segment: no query or fragment injected
    assert result["order"] == {"id": "12 34?admin=1#x", "status": "shipped"}
    assert result["customer"]["email"] == "ada@example.com"  # the model may read it back to the caller
    assert result["seen_auth"] == "Bearer [secret]"
    assert out.logged_result["customer"] == {"name": "Ada", "email": "[redacted]"}
    assert out.logged_result["order"]["id"] == "[redacted]"
    assert_no_secret(out)


async def test_http_select_picks_one_field(tmp_path: Path, service: Service) -> None:
    tools = toolset(tmp_path, http_tool(f"http://127.0.0.1:{service.port}/orders/5", extra="select: $.order.status"))
    out = await tools.run(CTX, "fetch", "{}")
    assert out.ok and json.loads(out.output) == "shipped"


@pytest.mark.parametrize("code", [404, 500])
async def test_http_errors_are_short_and_secret_free(tmp_path: Path, service: Service, code: int) -> None:
    tools = toolset(tmp_path, http_tool(f"http://127.0.0.1:{service.port}/status/{code}"))
    out = await tools.run(CTX, "fetch", "{}")
    assert not out.ok and out.error is not None and out.error.startswith(f"HTTP {code}")
    body = json.loads(out.output)
    assert body["status"] == code and "[secret]" in body["detail"]
    assert_no_secret(out)


async def test_retries_only_for_idempotent_methods(tmp_path: Path, service: Service) -> None:
    base = f"http://127.0.0.1:{service.port}/flaky"
    tools = toolset(tmp_path, http_tool(f"{base}/get", "retries: 2", name="get")
                    + http_tool(f"{base}/post", "method: POST\nbody: arguments", name="post")
                    + http_tool(f"{base}/get0", "", name="get0"))
    out = await tools.run(CTX, "get", "{}")
    assert out.ok and json.loads(out.output) == {"ok": True, "attempt": 3}
    assert service.hits["get"] == 3

    out = await tools.run(CTX, "post", "{}")
    assert not out.ok and out.error == "HTTP 503 Service Unavailable"
    assert service.hits["post"] == 1

    out = await tools.run(CTX, "get0", "{}")
    assert not out.ok and service.hits["get0"] == 1


async def test_connection_refused_is_an_error_for_the_model(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = await toolset(tmp_path, http_tool(f"http://127.0.0.1:{port}/x")).run(CTX, "fetch", "{}")
    assert not out.ok and out.error == "request failed: could not connect"


async def test_redirect_to_another_host_is_refused(tmp_path: Path, service: Service) -> None:
    settings = Settings(tool_hosts=("127.0.0.1", "localhost"))
    tools = toolset(tmp_path, http_tool(f"http://127.0.0.1:{service.port}/away"), settings)
    before = service.hits["order"]
    out = await tools.run(CTX, "fetch", "{}")
    assert not out.ok and "redirected to another host" in (out.error or "")
    assert service.hits["order"] == before

    same = await toolset(tmp_path, http_tool(f"http://127.0.0.1:{service.port}/same")).run(CTX, "fetch", "{}")
    assert same.ok and json.loads(same.output)["order"]["id"] == "77"


async def test_private_address_refused_unless_explicitly_allowlisted(
    tmp_path: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_resolve(host: str, port: int, timeout: float) -> list[str]:
        return {"api.example.com": ["10.1.2.3"], "public.example.com": ["93.184.216.34"]}[host]

    monkeypatch.setattr(hosts, "resolve", fake_resolve)
    tools = toolset(tmp_path, http_tool("http://api.example.com/orders/1"), Settings(tool_hosts=("*.example.com",)))
    out = await tools.run(CTX, "fetch", "{}")
    assert not out.ok and out.error == "host 'api.example.com' resolves to an internal address; refusing"

    policy = hosts.HostPolicy.of(["*.example.com", "127.0.0.1"])
    await policy.check("public.example.com", 80, 1.0)  # a public address under a wildcard is fine
    await policy.check("127.0.0.1", 80, 1.0)  # explicitly allowlisted: no resolution, allowed
    with pytest.raises(hosts.HostRefused, match="not on the tool host allowlist"):
        await policy.check("localhost", 80, 1.0)


async def test_size_caps(tmp_path: Path, service: Service) -> None:
    url = f"http://127.0.0.1:{service.port}/big"
    tools = toolset(tmp_path, http_tool(url, name="big") + http_tool(url, "max_bytes: 1000", name="small"))
    out = await tools.run(CTX, "big", "{}")
    assert out.ok and len(out.output) <= MAX_OUTPUT_CHARS
    capped = json.loads(out.output)
    assert capped["truncated"] is True and capped["partial"].startswith('{"items": [{"n": 0')

    out = await tools.run(CTX, "small", "{}")
    assert not out.ok and out.error == "the response is larger than 1000 bytes"


# --- builtins and lookup ------------------------------------------------------------------------


async def test_builtins_return_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_LINE", "+15557654321")
    tools = toolset(tmp_path, """
    - name: human
      description: transfer
      builtin: {name: transfer_call, target: "${SUPPORT_LINE}", announcement: "A caller about an order"}
    - name: bye
      description: hang up
      builtin: {name: hang_up}
    """)
    out = await tools.run(CTX, "human", "{}")
    assert out.ok and out.effect == Transfer("+15557654321", "A caller about an order")
    assert "+15557654321" not in out.output
    bye = await tools.run(CTX, "bye", "{}")
    assert bye.ok and bye.effect == HangUp()


async def test_lookup_in_csv_and_yaml_tables(tmp_path: Path) -> None:
    (tmp_path / "slots.csv").write_text("day,time,slot_id\nMonday,09:00,101\nmonday,10:30,102\nTuesday,14:00,201\n")
    (tmp_path / "plans.yaml").write_text("gold: {price: 30}\nsilver: {price: 20}\n")
    tools = toolset(tmp_path, """
    - name: find_slots
      description: free slots on a day
      parameters: {type: object, properties: {day: {type: string}}, required: [day]}
      builtin: {name: lookup, table: slots.csv, key: day, columns: [time, slot_id]}
    - name: plan
      description: plan price
      parameters: {type: object, properties: {plan_name: {type: string}}, required: [plan_name]}
      builtin: {name: lookup, table: plans.yaml, key: plan, argument: plan_name, limit: 1}
    """)
    out = await tools.run(CTX, "find_slots", '{"day": "  MONDAY "}')
    assert json.loads(out.output) == {
        "found": True, "count": 2, "rows": [{"time": "09:00", "slot_id": "101"}, {"time": "10:30", "slot_id": "102"}]
    }
    none = await tools.run(CTX, "find_slots", '{"day": "sunday"}')
    assert json.loads(none.output) == {"found": False, "count": 0, "rows": []}
    gold = await tools.run(CTX, "plan", '{"plan_name": "Gold"}')
    assert json.loads(gold.output)["rows"] == [{"plan": "gold", "price": 30}]


async def test_switch_agent_names_the_target_whose_own_toolset_runs_its_tools(tmp_path: Path) -> None:
    from voicegw.tools.loader import AgentLoader

    (tmp_path / "billing.yaml").write_text(textwrap.dedent("""\
        tools:
          - name: balance
            description: the balance
            static: {result: {balance: 12}}
        """))
    (tmp_path / "agent.yaml").write_text(textwrap.dedent("""\
        name: t
        tools:
          - name: to_billing
            description: hand over
            builtin: {name: switch_agent, agent: billing.yaml}
        """))
    loader = AgentLoader(SETTINGS, tmp_path)
    key = loader.add(load_agent(tmp_path / "agent.yaml"))
    entries = loader.build()
    out = await entries[key].tools.run(CTX, "to_billing", "{}")
    assert out.effect is not None and out.effect.agent == "billing.yaml"  # type: ignore[union-attr]
    assert [d.name for d in out.effect.session.tools] == ["balance"]  # type: ignore[union-attr]
    after = ToolContext(**{**CTX.__dict__, "agent": "billing.yaml"})
    balance = await entries["billing.yaml"].tools.run(after, "balance", "{}")
    assert balance.ok and json.loads(balance.output) == {"balance": 12}
    # each toolset runs only its own agent's tools: the switch is the call core's, not the runner's
    assert not (await entries[key].tools.run(after, "balance", "{}")).ok


async def test_the_gateway_gives_each_call_its_tools_redact_paths() -> None:
    """A call's core knows which argument fields its tools mark `redact`, so the first tool.call
    entry is already masked (tests/test_core_hostile.py shows the masking)."""
    import httpx

    from tests.harness import AUTH_TOKEN, running_gateway
    from voicegw.telephony.twilio import sign

    agent = textwrap.dedent("""
        name: payments
        instructions: You take payments.
        audio_mode: g711_ulaw
        tools:
          - name: charge
            description: charge a card
            parameters: {type: object, properties: {card: {type: string}, amount: {type: number}}}
            redact: [card]
            static: {result: {ok: true}}
          - name: balance
            description: the balance
            parameters: {type: object, properties: {}}
            static: {result: {balance: 3}}
        """)
    async with running_gateway(agent_yaml=agent) as gw:
        sid, url = "CA" + "5" * 32, gw.url + "/twilio/voice"
        form = {"CallSid": sid, "AccountSid": "AC" + "1" * 32, "From": "+15550100001", "To": "+15550100002"}
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            resp = await http.post(url, data=form, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, form)})
        assert resp.status_code == 200
        assert gw.gateway.calls[sid].core.opts.tool_redact == {"charge": (("card",),)}
