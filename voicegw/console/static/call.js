"use strict";
// One call: the transcript as it happens, a timeline of every event (barge-ins and tool calls
// stand out), per-turn latency. Events arrive over SSE: first the stored ones, then live ones.

const sid = decodeURIComponent(window.location.pathname.split("/").pop());
const transcript = document.getElementById("transcript");
const timeline = document.querySelector("#timeline tbody");
const latency = document.getElementById("latency");
const seen = new Set();
const turns = new Map();
let startedAt = null;
let summary = null;

document.getElementById("sid").textContent = sid;
document.getElementById("download").href = "/api/calls/" + encodeURIComponent(sid) + "?download=1";

function showSummary() {
  if (!summary) return;
  document.getElementById("status").textContent = summary.status;
  document.getElementById("status").className = "status-" + summary.status;
  document.getElementById("from").textContent = summary.from || "";
  document.getElementById("to").textContent = summary.to || "";
  document.getElementById("agent").textContent = summary.agent || "";
  document.getElementById("end-reason").textContent = summary.end_reason || "";
  const duration = summary.status === "active" ? Date.now() / 1000 - summary.started_at : summary.duration_s;
  document.getElementById("duration").textContent = fmtDuration(duration);
}

function describe(kind, d) {
  switch (kind) {
    case "transcript":
      return (d.role || "") + ": " + (d.text || "") + (d.cut ? "  [cut at barge-in]" : "");
    case "barge_in":
      return "heard " + d.heard_ms + " ms of " + d.produced_ms + " ms produced; " + (d.action || "") +
        (d.cancelled ? ", response cancelled" : "") +
        (d.clear_after_ms !== undefined ? "; clear after " + d.clear_after_ms + " ms" : "");
    case "tool.call":
      return (d.name || "") + "(" + compact(d.arguments) + ")";
    case "tool.result":
      return (d.name || "") + (d.ok ? " → " + compact(d.result) : " failed: " + compact(d.error)) +
        (d.duration_ms !== undefined ? "  (" + Math.round(d.duration_ms) + " ms)" : "");
    case "turn.latency":
      return Math.round(d.latency_ms) + " ms";
    case "dtmf":
      return "digit " + d.digit;
    case "error":
      return (d.source || "") + ": " + (d.message || "") + (d.code ? " (" + d.code + ")" : "");
    default:
      return compact(d);
  }
}

function addTranscript(ev) {
  const d = ev.data;
  let item = d.item_id ? turns.get(d.item_id) : null;
  if (!item) {
    item = el("li", null, d.role === "agent" ? "agent" : "caller");
    item.appendChild(el("span", d.role === "agent" ? "agent: " : "caller: ", "role"));
    item.appendChild(el("span", "", "text"));
    transcript.appendChild(item);
    if (d.item_id) turns.set(d.item_id, item);
  }
  item.querySelector(".text").textContent = d.text || "";
  if (d.cut) item.classList.add("cut");
}

function addEvent(ev) {
  if (seen.has(ev.id)) return;
  seen.add(ev.id);
  if (startedAt === null) startedAt = summary && summary.started_at ? summary.started_at : ev.t;
  const tr = el("tr", null, "kind-" + ev.kind);
  tr.dataset.kind = ev.kind;
  tr.appendChild(el("td", (ev.t - startedAt).toFixed(2)));
  tr.appendChild(el("td", ev.kind));
  tr.appendChild(el("td", describe(ev.kind, ev.data || {}), "details"));
  timeline.appendChild(tr);
  if (ev.kind === "transcript") addTranscript(ev);
  if (ev.kind === "turn.latency") latency.appendChild(el("li", Math.round(ev.data.latency_ms) + " ms"));
  if (ev.kind === "call.ended" && summary) { summary.status = "completed"; showSummary(); }
}

openLive("/api/live?call=" + encodeURIComponent(sid), {
  "call": (data) => { if (data) { summary = data; showSummary(); } },
  "call.started": (data) => { summary = Object.assign({}, summary || {}, data); showSummary(); },
  "call.event": addEvent,
  "call.ended": (data) => {
    summary = Object.assign({}, summary || {}, { status: data.status, end_reason: data.reason,
      duration_s: data.duration_s, ended_at: data.ended_at });
    showSummary();
  },
});
setInterval(() => { if (summary && summary.status === "active") showSummary(); }, 1000);
