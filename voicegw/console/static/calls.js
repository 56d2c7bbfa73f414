"use strict";
// The calls page: a filterable, paginated list that refreshes when calls start or end.

const tbody = document.querySelector("#calls tbody");
const moreButton = document.getElementById("more");
const filters = document.getElementById("filters");
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
  tr.appendChild(el("td", fmtTime(call.started_at)));
  const duration = call.status === "active" ? Date.now() / 1000 - call.started_at : call.duration_s;
  tr.appendChild(el("td", fmtDuration(duration), "duration"));
  tr.appendChild(el("td", call.from));
  tr.appendChild(el("td", call.to));
  tr.appendChild(el("td", call.agent));
  tr.appendChild(el("td", call.end_reason || ""));
  tr.addEventListener("click", () => {
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

function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; load(false); }, 300);
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
openLive("/api/live", { "call.started": refreshSoon, "call.ended": refreshSoon });
