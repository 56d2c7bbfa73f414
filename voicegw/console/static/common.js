"use strict";
// Shared helpers. Every piece of call data is placed with textContent: transcripts come from
// callers and tool results from other systems, so none of it is ever parsed as HTML.

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m + ":" + String(s % 60).padStart(2, "0");
}

function fmtTime(epoch) {
  if (!epoch) return "";
  return new Date(epoch * 1000).toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtShortTime(epoch) {
  if (!epoch) return "";
  return new Date(epoch * 1000).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hour12: false });
}

function compact(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  try { return JSON.stringify(value); } catch (e) { return String(value); }
}

async function getJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) { window.location.assign("/console/login"); throw new Error("login required"); }
  if (!resp.ok) throw new Error(url + ": HTTP " + resp.status);
  return resp.json();
}

function setLiveState(text) {
  const node = document.getElementById("live-state");
  if (node) node.textContent = text;
}

function openLive(url, handlers) {
  const source = new EventSource(url);
  source.onopen = () => setLiveState("live");
  source.onerror = () => setLiveState("reconnecting…");
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (msg) => fn(JSON.parse(msg.data)));
  }
  return source;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "–";
  return Math.round(ms) + " ms";
}

function callLink(sid, text) {
  const a = el("a", text === undefined ? sid : text);
  a.href = "/console/calls/" + encodeURIComponent(sid);
  return a;
}

// A horizontal bar whose width is a fraction of its track (set through the CSSOM, which the CSP
// allows; style attributes in markup it would not).
function bar(fraction, className) {
  const b = el("span", null, "bar " + (className || ""));
  b.style.width = Math.max(0, Math.min(1, fraction)) * 100 + "%";
  return b;
}

// The current page's navigation link stands out.
for (const link of document.querySelectorAll("nav a[data-nav]")) {
  if (link.dataset.nav === document.body.dataset.page) link.classList.add("current");
}

// A webhook event's status, attempts, last attempt and last error (every attempt on hover): the
// cells the Events page and a call's page share.
function appendDeliveryCells(tr, ev) {
  tr.appendChild(el("td", ev.status, "status status-event-" + ev.status));
  tr.appendChild(el("td", ev.attempts, "num attempts"));
  tr.appendChild(el("td", ev.last_attempt_at ? fmtShortTime(ev.last_attempt_at) : "", "started"));
  const error = el("td", ev.status === "delivered" ? "" : ev.last_error || "", "last-error");
  error.title = (ev.history || []).map((a) => fmtTime(a.at) + "  " + (a.error || "HTTP " + a.status)).join("\n");
  tr.appendChild(error);
}
