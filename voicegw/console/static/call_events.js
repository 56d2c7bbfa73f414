"use strict";
// The call page's webhook events: each post-call event of this call with its delivery status and
// last error. Shown only when the call has events; looked at again every 15 s while one is
// pending or none has been created yet (a call that just ended), for at most 10 minutes.

const callEventsSid = decodeURIComponent(window.location.pathname.split("/").pop());
const callEventsBox = document.getElementById("call-events");
let callEventsPolls = 0;

function callEventRow(ev) {
  const tr = el("tr", null, "event-" + ev.status);
  tr.dataset.id = ev.id;
  tr.appendChild(el("td", ev.type, "type"));
  appendDeliveryCells(tr, ev);
  return tr;
}

async function loadCallEvents() {
  callEventsPolls += 1;
  const data = await getJSON("/api/events?limit=50&call=" + encodeURIComponent(callEventsSid));
  const events = data.events.slice().reverse();  // oldest first: started, recording, ended
  callEventsBox.hidden = events.length === 0;
  callEventsBox.querySelector("tbody").replaceChildren(...events.map(callEventRow));
  const unsettled = events.length === 0 || events.some((ev) => ev.status === "pending");
  if (data.enabled && unsettled && callEventsPolls < 40) setTimeout(loadCallEvents, 15000);
}

loadCallEvents();
