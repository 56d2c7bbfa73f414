"use strict";
// Post-call events (webhooks): how many are pending, delivered and failed, and the list for one
// status (failed first: what an operator has to look at), with each one's last error. Refreshed
// every 15 s.

const eventFilters = document.getElementById("event-filters");

// One row of an events table; `withCall` adds the call's SID as a link.
function eventRow(ev, withCall) {
  const tr = el("tr", null, "event-" + ev.status);
  tr.dataset.id = ev.id;
  const created = el("td", fmtShortTime(ev.created_at), "started");
  created.title = fmtTime(ev.created_at);
  tr.appendChild(created);
  tr.appendChild(el("td", ev.type, "type"));
  if (withCall) {
    const sid = el("td", null, "sid");
    sid.appendChild(callLink(ev.call_sid));
    sid.title = ev.call_sid;
    tr.appendChild(sid);
  }
  appendDeliveryCells(tr, ev);
  tr.appendChild(el("td", ev.next_attempt_at ? fmtShortTime(ev.next_attempt_at) : "", "started"));
  return tr;
}

async function loadEvents() {
  const status = new FormData(eventFilters).get("status") || "";
  const data = await getJSON("/api/events?limit=200" + (status ? "&status=" + encodeURIComponent(status) : ""));
  document.getElementById("events-off").hidden = data.enabled;
  for (const name of ["pending", "delivered", "failed"]) {
    document.getElementById("count-" + name).textContent = String(data.counts[name] || 0);
  }
  const rows = data.events.map((ev) => eventRow(ev, true));
  document.querySelector("#events tbody").replaceChildren(...rows);
  document.getElementById("events-empty").hidden = rows.length > 0;
  setLiveState("updated " + new Date().toLocaleTimeString());
}

eventFilters.addEventListener("change", loadEvents);
eventFilters.addEventListener("submit", (event) => { event.preventDefault(); loadEvents(); });
loadEvents();
setInterval(loadEvents, 15000);
