"use strict";
// Active calls as they happen: one card per call with its numbers, agent, running time, the last
// thing said and the running figures (turns, last turn latency, tools, barge-ins). The live
// stream's snapshot lists the calls in progress; call.started/event/ended keep the cards current.

const list = document.getElementById("active");
const cards = new Map();  // call_sid -> card state

function card(call) {
  let c = cards.get(call.call_sid);
  if (c) return c;
  const node = el("li", null, "live-call");
  node.dataset.sid = call.call_sid;
  c = { node, call: Object.assign({}, call), items: new Set(), last: null,
    turns: call.turns || 0, tools: call.tools || 0, bargeIns: call.barge_in_count || 0,
    latency: call.latency_p50_ms === undefined ? null : call.latency_p50_ms };
  if (call.snippet) c.last = { role: call.snippet_role || "", text: call.snippet };
  cards.set(call.call_sid, c);
  list.prepend(node);
  render(c);
  return c;
}

function figure(label, value, className) {
  const f = el("span", null, "figure " + className);
  f.appendChild(el("span", value, "value"));
  f.appendChild(el("span", " " + label, "muted"));
  return f;
}

function render(c) {
  const call = c.call;
  const head = el("div", null, "live-head");
  head.appendChild(callLink(call.call_sid));
  head.appendChild(el("span", (call.from || "?") + " → " + (call.to || "?"), "numbers"));
  head.appendChild(el("span", call.agent || "", "agent"));
  head.appendChild(el("span", fmtDuration(Date.now() / 1000 - call.started_at), "duration"));
  const said = el("p", null, "last-said");
  if (c.last) {
    said.appendChild(el("span", c.last.role + ": ", "role"));
    said.appendChild(el("span", c.last.text, "text"));
  } else {
    said.appendChild(el("span", "(nothing said yet)", "muted"));
  }
  const figures = el("div", null, "figures");
  figures.append(figure("turns", c.turns, "turns"), figure("last latency", fmtMs(c.latency), "latency"),
    figure("tools", c.tools, "tools"), figure("barge-ins", c.bargeIns, "barge-ins"));
  c.node.replaceChildren(head, said, figures);
}

function onEvent(ev) {
  const c = cards.get(ev.call_sid);
  if (!c) return;
  const d = ev.data || {};
  if (ev.kind === "transcript") {
    if (d.item_id && !c.items.has(d.item_id)) { c.items.add(d.item_id); c.turns += 1; }
    if (d.text) c.last = { role: d.role || "", text: d.text };
  } else if (ev.kind === "turn.latency") {
    c.latency = d.latency_ms;
  } else if (ev.kind === "tool.call") {
    c.tools += 1;
  } else if (ev.kind === "barge_in") {
    c.bargeIns += 1;
  } else {
    return;
  }
  render(c);
}

function remove(sid) {
  const c = cards.get(sid);
  if (!c) return;
  cards.delete(sid);
  c.node.remove();
  updateCount();
}

function updateCount() {
  document.getElementById("active-count").textContent = String(cards.size);
  document.getElementById("none").hidden = cards.size > 0;
}

openLive("/api/live", {
  "snapshot": (data) => {
    for (const sid of [...cards.keys()]) remove(sid);
    for (const call of data.calls.slice().reverse()) card(call);
    updateCount();
  },
  "call.started": (data) => { card(data); updateCount(); },
  "call.event": onEvent,
  "call.ended": (data) => remove(data.call_sid),
});
setInterval(() => {
  for (const c of cards.values()) {
    const d = c.node.querySelector(".duration");
    if (d) d.textContent = fmtDuration(Date.now() / 1000 - c.call.started_at);
  }
}, 1000);
