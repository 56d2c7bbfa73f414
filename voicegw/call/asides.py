"""Questions the gateway asks the model on the side: the post-call summary and extraction, the
summary a warm transfer reads to the human who takes the call.

Each is an out-of-band response (`conversation: "none"`, text only) that sees the whole
conversation but adds nothing to it, and that must call one function whose parameters are the
answer's shape: the arguments come back as JSON the gateway validates, instead of prose it would
have to parse. Part of the call core (`CallCore` inherits it); it returns actions, never awaits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from voicegw.call.actions import Action, AsideDone, ToModel
from voicegw.realtime import events as ev

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

POST_CALL = "post_call"
TRANSFER_SUMMARY = "transfer_summary"
ASIDE_KINDS = frozenset({POST_CALL, TRANSFER_SUMMARY})
RECORD_TOOL = "record_call"
SUMMARY_FIELD = {"type": "string", "description": "What the call was about and how it ended, in at most three "
                                                  "sentences, for a colleague who did not hear it."}
POST_CALL_INSTRUCTIONS = (
    "The phone call above has ended. Do not speak to the caller. Call the function record_call once, "
    "filling its fields from what was said in the call; leave out what was not said.")
TRANSFER_INSTRUCTIONS = (
    "The caller is being transferred to a human colleague. Do not speak to the caller. Call the function "
    "record_call once with a summary the colleague will hear before taking the call: who is calling, what "
    "they need, and what has been done so far, in at most two short sentences.")


@dataclass
class Aside:
    purpose: str
    asked_at: float
    schema: dict[str, Any] | None = None  # the extraction's JSON Schema (post-call)
    response_id: str | None = None
    arguments: str | None = None
    text: list[str] = field(default_factory=list)


def record_tool(summary: bool, extract: dict[str, Any] | None) -> ev.ToolDecl:
    """The function the answer comes back through: `summary` and/or `extraction`."""
    props: dict[str, Any] = {}
    required = []
    if summary:
        props["summary"] = SUMMARY_FIELD
        required.append("summary")
    if extract is not None:
        props["extraction"] = extract
        required.append("extraction")
    return ev.ToolDecl(RECORD_TOOL, "Record what the call was about.",
                       {"type": "object", "properties": props, "required": required})


def _parse(aside: Aside) -> tuple[dict[str, Any], str | None]:
    """The answer's fields, and what was wrong with it (None: nothing)."""
    if aside.arguments is None:
        said = "".join(aside.text).strip()
        if aside.purpose == TRANSFER_SUMMARY and said:
            return {"summary": said}, None  # a model that answered in prose: still a summary
        return {}, "the model did not call record_call"
    try:
        args = json.loads(aside.arguments)
    except ValueError:
        return {}, "record_call arguments are not JSON"
    if not isinstance(args, dict):
        return {}, "record_call arguments are not an object"
    return args, None


class Asides:
    def _ask_aside(self: CallCore, purpose: str, now: float, instructions: str, tool: ev.ToolDecl,
                   schema: dict[str, Any] | None = None) -> list[Action]:
        """Ask on the live link; nothing when there is none (the caller of this decides what then)."""
        if not self.link.ready:
            return []
        self.asides[purpose] = Aside(purpose, now, schema)
        self._requested += 1
        return [ToModel(ev.CreateResponse(instructions=instructions, conversation="none", metadata={"voicegw": purpose},
                                          modalities=("text",), tools=(tool,), tool_choice=tool.name), self.link.live)]

    def _aside_for(self: CallCore, response_id: str) -> Aside | None:
        for aside in self.asides.values():
            if aside.response_id == response_id:
                return aside
        return None

    def _aside_started(self: CallCore, e: ev.ResponseStarted) -> bool:
        purpose = str((e.metadata or {}).get("voicegw") or "")
        aside = self.asides.get(purpose)
        if aside is None or aside.response_id is not None:
            return False
        aside.response_id = e.response_id
        self._requested = max(0, self._requested - 1)
        return True

    def _aside_event(self: CallCore, e: ev.ServerEvent, now: float) -> list[Action] | None:
        """An event of an aside's response: its actions; None when the event is not one."""
        if not self.asides:
            return None
        if isinstance(e, ev.ResponseStarted):
            return [] if self._aside_started(e) else None
        rid = getattr(e, "response_id", None)
        aside = self._aside_for(rid) if rid else None
        if aside is None:
            return None
        if isinstance(e, ev.FunctionCall):
            if e.name == RECORD_TOOL and aside.arguments is None:
                aside.arguments = e.arguments
            return []
        if isinstance(e, ev.TextDelta):
            aside.text.append(e.delta)
            return []
        if isinstance(e, ev.ResponseDone):
            return self._aside_finished(aside, now, e.status)
        return []

    def _aside_finished(self: CallCore, aside: Aside, now: float, status: str) -> list[Action]:
        del self.asides[aside.purpose]
        args, problem = _parse(aside) if status == "completed" else ({}, f"the response ended {status}")
        if aside.purpose == POST_CALL:
            return self._post_call_result(aside, now, args, problem)
        summary = args.get("summary") if isinstance(args.get("summary"), str) else None
        return self._transfer_summary_ready(summary, problem, now)

    def _post_call_result(self: CallCore, aside: Aside, now: float, args: dict[str, Any],
                          problem: str | None) -> list[Action]:
        data: dict[str, Any] = {"duration_ms": round((now - aside.asked_at) * 1000)}
        if self.opts.post_call_summary:
            summary = args.get("summary")
            data["summary"] = self.redactor.mask(summary) if isinstance(summary, str) else None
        if aside.schema is not None:
            extraction = args.get("extraction")
            errors = [] if problem else _schema_errors(aside.schema, extraction)
            data["extraction"] = self.redactor.mask_value(extraction) if self.redactor.active else extraction
            data["extraction_valid"] = problem is None and not errors
            if errors:
                data["extraction_errors"] = errors
        if problem:
            data["error"] = problem
        return [self._log(POST_CALL, now, **data), AsideDone(POST_CALL)]

    def post_call_timed_out(self: CallCore, now: float) -> list[Action]:
        """The post-call answer did not come within its time (the session is being closed)."""
        aside = self.asides.pop(POST_CALL, None)
        if aside is None:
            return []
        return [self._log(POST_CALL, now, error=f"no answer within {self.opts.post_call_timeout_s:.0f}s",
                          duration_ms=round((now - aside.asked_at) * 1000))]

    def _ask_post_call(self: CallCore, now: float) -> list[Action]:
        """At the end of the call: ask for the summary/extraction when the agent wants them and
        there was a conversation; the model session then stays open until the answer (bounded)."""
        o = self.opts
        if not (o.post_call_summary or o.post_call_schema is not None) or not len(self.history):
            return []
        acts = self._ask_aside(POST_CALL, now, POST_CALL_INSTRUCTIONS,
                               record_tool(o.post_call_summary, o.post_call_schema), o.post_call_schema)
        if not acts:
            return [self._log(POST_CALL, now, error="no model session at the end of the call")]
        return acts


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
            for err in list(validator.iter_errors(value))[:10]]
