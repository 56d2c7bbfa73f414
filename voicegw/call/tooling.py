"""Tool-call bookkeeping for one call: which calls are running, for which response, and what
happens when they finish (a follow-up response, or an effect such as a transfer)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingTool:
    call_id: str
    name: str
    response_id: str
    started_at: float


@dataclass
class ToolBook:
    running: dict[str, PendingTool] = field(default_factory=dict)
    # responses whose function calls must all finish before the model is asked to go on
    waiting_responses: set[str] = field(default_factory=set)
    done_responses: set[str] = field(default_factory=set)
    outputs_ready: int = 0  # function outputs added since the last response.create

    def start(self, call_id: str, name: str, response_id: str, now: float) -> None:
        self.running[call_id] = PendingTool(call_id, name, response_id, now)
        self.waiting_responses.add(response_id)

    def finish(self, call_id: str) -> PendingTool | None:
        tool = self.running.pop(call_id, None)
        if tool is not None:
            self.outputs_ready += 1
        return tool

    def response_finished(self, response_id: str) -> None:
        if response_id in self.waiting_responses:
            self.done_responses.add(response_id)

    def link_lost(self) -> None:
        """The model session that made the calls is gone: no response.done will come for them."""
        self.done_responses |= self.waiting_responses

    def ready_for_followup(self) -> bool:
        """All calls of every finished tool-calling response are done and outputs await a reply."""
        if self.outputs_ready == 0:
            return False
        for rid in self.waiting_responses:
            if rid not in self.done_responses:
                return False
            if any(t.response_id == rid for t in self.running.values()):
                return False
        return True

    def followup_sent(self) -> None:
        self.outputs_ready = 0
        self.waiting_responses.clear()
        self.done_responses.clear()

    def names_running(self) -> list[str]:
        return [t.name for t in self.running.values()]
