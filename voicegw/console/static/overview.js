"use strict";
// The overview: calls per hour, p50/p95 turn latency, tool error rate and end reasons over a
// period, as computed by the API from the store. Refreshed every 30 s.

const form = document.getElementById("window");

function hbar(label, value, max, className) {
  const row = el("div", null, "hbar " + (className || ""));
  row.appendChild(el("span", label, "hbar-label"));
  const track = el("span", null, "track");
  track.appendChild(bar(max ? value / max : 0, "fill"));
  row.appendChild(track);
  row.appendChild(el("span", String(value), "hbar-value"));
  return row;
}

function hourLabel(epoch, withDay) {
  const d = new Date(epoch * 1000);
  const hh = String(d.getHours()).padStart(2, "0") + ":00";
  return withDay ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + hh : hh;
}

async function load() {
  const hours = Number(new FormData(form).get("hours") || 24);
  const until = Date.now() / 1000;
  const data = await getJSON("/api/overview?since=" + (until - hours * 3600).toFixed(0) + "&until=" + until.toFixed(0));
  document.getElementById("calls-total").textContent = String(data.calls);
  document.getElementById("p50").textContent = fmtMs(data.latency.p50_ms);
  document.getElementById("p95").textContent = fmtMs(data.latency.p95_ms);
  document.getElementById("tool-errors").textContent = data.tools.error_rate === null ? "–" :
    (100 * data.tools.error_rate).toFixed(1) + " % of " + data.tools.calls;

  const perHour = document.getElementById("per-hour");
  const maxCalls = Math.max(1, ...data.calls_per_hour.map((h) => h.calls));
  const rows = data.calls_per_hour.map((h) => hbar(hourLabel(h.hour, hours > 24), h.calls, maxCalls, "hour"));
  perHour.replaceChildren(...(rows.length ? rows : [el("p", "No calls in this period.", "muted")]));

  const reasons = document.getElementById("end-reasons");
  const maxReason = Math.max(1, ...data.end_reasons.map((r) => r.calls));
  const rrows = data.end_reasons.map((r) => hbar(r.reason, r.calls, maxReason, "reason"));
  reasons.replaceChildren(...(rrows.length ? rrows : [el("p", "No calls in this period.", "muted")]));
  document.getElementById("live-state").textContent = "updated " + new Date().toLocaleTimeString();
}

form.addEventListener("change", load);
form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
load();
setInterval(load, 30000);
