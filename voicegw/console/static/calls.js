"use strict";
// The calls page: a filterable, paginated list that refreshes when calls start, change or end.

const tbody = document.querySelector("#calls tbody");
const moreButton = document.getElementById("more");
const filters = document.getElementById("filters");
// the figures that change during a call (turns, latency, tools, barge-ins) come from these events
const FIGURE_KINDS = new Set(["transcript", "turn.latency", "tool.call", "tool.result", "barge_in"]);
let nextCursor = null;
let refreshTimer = null;

function query(cursor) {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(filters).entries()) {
    if (value) params.set(key, String(value));
  }
  params.set("limit", "50");
  if (cursor) params.set("cursor", cursor);
  return "/api/calls?" + params.toString();
}

function row(call) {
  const tr = el("tr", null, "clickable");
  tr.dataset.sid = call.call_sid;
  tr.dataset.status = call.status;
  tr.dataset.started = String(call.started_at || "");
  tr.appendChild(el("td", call.status, "status-" + call.status));
  const sid = el("td", null, "sid");
  sid.appendChild(callLink(call.call_sid));
  sid.title = call.call_sid;
  tr.appendChild(sid);
  const started = el("td", fmtShortTime(call.started_at), "started");
  started.title = fmtTime(call.started_at);
  tr.appendChild(started);
  const duration = call.status === "active" ? Date.now() / 1000 - call.started_at : call.duration_s;
  tr.appendChild(el("td", fmtDuration(duration), "duration"));
  tr.appendChild(el("td", call.from));
  tr.appendChild(el("td", call.to));
  tr.appendChild(el("td", call.agent, "agent"));
  const snippet = el("td", call.snippet || "", "snippet");
  if (call.snippet_role) snippet.dataset.role = call.snippet_role;
  snippet.title = call.snippet || "";
  tr.appendChild(snippet);
  tr.appendChild(el("td", call.turns, "num turns"));
  tr.appendChild(el("td", fmtMs(call.latency_p50_ms), "num p50"));
  const tools = el("td", call.tools, "num tools");
  if (call.tool_errors) tools.appendChild(el("span", " (" + call.tool_errors + " failed)", "error"));
  tr.appendChild(tools);
  tr.appendChild(el("td", call.barge_in_count, "num barge-ins"));
  tr.appendChild(el("td", call.end_reason || "", "end-reason"));
  tr.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    window.location.assign("/console/calls/" + encodeURIComponent(call.call_sid));
  });
  return tr;
}

async function load(append) {
  const data = await getJSON(query(append ? nextCursor : null));
  if (!append) tbody.replaceChildren();
  for (const call of data.calls) tbody.appendChild(row(call));
  nextCursor = data.next_cursor;
  moreButton.hidden = !nextCursor;
}

function refreshSoon(delay) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; load(false); }, delay || 300);
}

function onEvent(ev) {
  // a listed call's figures changed: reload the first page, at most once a second
  if (FIGURE_KINDS.has(ev.kind) && tbody.querySelector("tr[data-sid='" + CSS.escape(ev.call_sid) + "']")) {
    refreshSoon(1000);
  }
}

function tick() {
  for (const tr of tbody.querySelectorAll("tr[data-status='active']")) {
    const cell = tr.querySelector("td.duration");
    cell.textContent = fmtDuration(Date.now() / 1000 - Number(tr.dataset.started));
  }
}

filters.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
moreButton.addEventListener("click", () => load(true));
setInterval(tick, 1000);
load(false);
openLive("/api/live", { "call.started": () => refreshSoon(), "call.ended": () => refreshSoon(), "call.event": onEvent });
