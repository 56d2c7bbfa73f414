"use strict";
// One call: the transcript as it happens, a waterfall of each turn (caller's end of speech ->
// model starts answering -> first agent audio sent), what the agent generated and what the
// caller heard at each barge-in, tool calls with their arguments and results, and every raw event.
// Events arrive over SSE: first the stored ones, then live ones; every view is built from them.

const sid = decodeURIComponent(window.location.pathname.split("/").pop());
const transcript = document.getElementById("transcript");
const timeline = document.querySelector("#timeline tbody");
const latency = document.getElementById("latency");
const bargeList = document.getElementById("barge-ins");
const toolsBox = document.getElementById("tools");
const seen = new Set();
const turns = new Map();
const itemTexts = new Map();  // item_id -> {generated, heard}: the agent's text before and after a cut
const bargeIns = [];  // [{data, node}]
const toolPanels = new Map();  // call_id -> {details, result}
const responseStarts = [];  // times of response.started
const waterfall = [];  // [{stopped, started, firstAudio, latency, node}]
let startedAt = null;
let summary = null;
let recording = null;  // {url, ...} from the call's recording.ready event
let probedRecording = false;  // an interrupted call's recording looked for once
const callerLines = [];  // [{t, text}]: each belongs to the last turn whose speech ended before it

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
  showRecording();
}

// The call's recording, when a record has one ({url, content_type}); nothing otherwise. A call
// cut off by a stopped gateway logged no recording.ready: its partial file is looked for once.
function showRecording() {
  const box = document.getElementById("recording");
  const rec = recording || (summary && summary.recording);
  if (!rec && summary && summary.status === "interrupted" && !probedRecording) {
    probedRecording = true;
    const url = "/api/calls/" + encodeURIComponent(sid) + "/recording";
    fetch(url, { method: "HEAD", credentials: "same-origin" }).then((resp) => {
      if (resp.ok && !recording) { recording = { url: url }; showRecording(); }
    }).catch(() => {});
    return;
  }
  if (!rec || !rec.url || box.childElementCount) return;
  const audio = el("audio");
  audio.controls = true;
  audio.preload = "none";
  audio.src = String(rec.url);
  box.appendChild(el("h2", "Recording"));
  box.appendChild(audio);
  box.hidden = false;
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

function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (e) { return value; }
  }
  if (value === null || value === undefined) return "";
  try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
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
  if (d.role === "caller" && d.text) {
    callerLines.push({ t: ev.t, text: d.text });
    if (waterfall.length) renderWaterfall();
  }
  if (d.item_id) {
    const texts = itemTexts.get(d.item_id) || {};
    texts[d.cut ? "heard" : "generated"] = d.text || "";
    itemTexts.set(d.item_id, texts);
    for (const b of bargeIns) if (b.data.item_id === d.item_id) renderBargeIn(b);
  }
}

// --- turn waterfall ------------------------------------------------------------------------

function addTurn(ev) {
  const d = ev.data;
  if (typeof d.latency_ms !== "number") return;
  const stopped = ev.t - d.latency_ms / 1000;
  const started = responseStarts.find((t) => t >= stopped - 0.001 && t <= ev.t);
  const turn = { stopped, started, firstAudio: ev.t, latency: d.latency_ms, node: el("li", null, "turn") };
  waterfall.push(turn);
  latency.appendChild(turn.node);
  renderWaterfall();
}

function renderWaterfall() {
  const longest = Math.max(...waterfall.map((w) => w.latency), 1);
  waterfall.forEach((w, i) => {
    const next = waterfall[i + 1];
    const said = callerLines.filter((c) => c.t >= w.stopped - 0.001 && (!next || c.t < next.stopped - 0.001))
      .map((c) => c.text).join(" ");
    const head = el("div", null, "turn-head");
    head.appendChild(el("span", "Turn " + (i + 1), "turn-no"));
    head.appendChild(el("span", said ? "“" + said + "”" : "", "turn-said"));
    head.appendChild(el("span", Math.round(w.latency) + " ms", "turn-total"));
    const track = el("div", null, "track");
    const total = w.latency / longest;
    if (w.started !== undefined) {
      const modelMs = (w.started - w.stopped) * 1000;
      const audioMs = (w.firstAudio - w.started) * 1000;
      const m = bar(total * modelMs / w.latency, "seg-model");
      m.title = "end of speech → model starts answering: " + fmtMs(modelMs);
      const a = bar(total * audioMs / w.latency, "seg-audio");
      a.title = "model starts answering → first audio sent: " + fmtMs(audioMs);
      track.append(m, a);
    } else {
      const t = bar(total, "seg-total");
      t.title = "end of speech → first audio sent";
      track.appendChild(t);
    }
    const legend = el("div", null, "turn-legend muted");
    if (w.started !== undefined) {
      legend.textContent = "model " + fmtMs((w.started - w.stopped) * 1000) + " · first audio +" +
        fmtMs((w.firstAudio - w.started) * 1000) + " · speech ended at +" + (w.stopped - startedAt).toFixed(2) + " s";
    } else {
      legend.textContent = "speech ended at +" + (w.stopped - startedAt).toFixed(2) + " s";
    }
    w.node.replaceChildren(head, track, legend);
  });
}

// --- barge-ins -----------------------------------------------------------------------------

function addBargeIn(ev) {
  const b = { data: ev.data, t: ev.t, node: el("li", null, "barge-in") };
  bargeIns.push(b);
  bargeList.appendChild(b.node);
  renderBargeIn(b);
}

function renderBargeIn(b) {
  const d = b.data;
  const texts = itemTexts.get(d.item_id) || {};
  const head = el("div", "+" + (b.t - startedAt).toFixed(2) + " s · heard " + d.heard_ms + " ms of " +
    d.produced_ms + " ms produced · " + (d.action || "") + (d.cause ? " · " + d.cause : ""), "barge-head");
  const said = el("dl", null, "said");
  said.appendChild(el("dt", "Generated"));
  said.appendChild(el("dd", texts.generated === undefined ? "–" : texts.generated, "generated"));
  said.appendChild(el("dt", "Heard"));
  const heard = texts.heard !== undefined ? texts.heard : (d.action === "delete" ? "" : undefined);
  said.appendChild(el("dd", heard === undefined ? "–" : (heard || "(nothing)"), "heard"));
  b.node.replaceChildren(head, said);
}

// --- tool calls ----------------------------------------------------------------------------

function toolPanel(callId, name) {
  let panel = toolPanels.get(callId);
  if (panel) return panel;
  const details = el("details", null, "tool");
  const summaryLine = el("summary");
  summaryLine.appendChild(el("span", name || "tool", "tool-name"));
  summaryLine.appendChild(el("span", "running…", "tool-state muted"));
  details.appendChild(summaryLine);
  details.appendChild(el("h3", "Arguments"));
  const args = el("pre", "", "tool-args");
  details.appendChild(args);
  details.appendChild(el("h3", "Result"));
  const result = el("pre", "", "tool-result");
  details.appendChild(result);
  toolsBox.appendChild(details);
  panel = { details, args, result, state: summaryLine.querySelector(".tool-state") };
  if (callId) toolPanels.set(callId, panel);
  return panel;
}

function addToolCall(ev) {
  const p = toolPanel(ev.data.call_id, ev.data.name);
  p.details.dataset.tool = ev.data.name || "";
  p.args.textContent = pretty(ev.data.arguments);
}

function addToolResult(ev) {
  const d = ev.data;
  const p = toolPanel(d.call_id, d.name);
  p.details.dataset.tool = d.name || "";
  p.details.classList.add(d.ok ? "ok" : "failed");
  p.state.textContent = (d.ok ? "ok" : "failed") + (d.duration_ms !== undefined ? " · " + fmtMs(d.duration_ms) : "");
  p.state.className = "tool-state " + (d.ok ? "muted" : "error");
  p.result.textContent = d.ok ? pretty(d.result) : pretty(d.error);
}

// --- what the call came to: answering verdict, warm transfer, post-call summary/extraction ---

function outcomeBox() {
  let box = document.getElementById("outcome");
  if (!box) {
    box = el("section");
    box.id = "outcome";
    box.appendChild(el("h2", "Outcome"));
    box.appendChild(el("dl"));
    document.getElementById("recording").after(box);
  }
  return box.querySelector("dl");
}

function outcomeRow(name, value, cls) {
  const dl = outcomeBox();
  let dd = dl.querySelector('dd[data-name="' + name + '"]');
  if (!dd) {
    dl.appendChild(el("dt", name));
    dd = el("dd", null, cls || "");
    dd.dataset.name = name;
    dl.appendChild(dd);
  }
  dd.textContent = value;
}

function addOutcome(kind, d) {
  if (kind === "amd") outcomeRow("Answered by", d.answered_by || "");
  if (kind === "transfer") {
    outcomeRow("Transfer", (d.mode || "") + " to " + (d.target || "") + ": " + (d.phase || "") +
      (d.status ? " (" + d.status + ")" : ""));
    if (d.summary) outcomeRow("Transfer summary", d.summary);
  }
  if (kind === "post_call") {
    if (d.summary) outcomeRow("Summary", d.summary);
    if (d.extraction !== undefined) {
      outcomeRow("Extraction", pretty(d.extraction), "pre");
      outcomeRow("Extraction valid", d.extraction_valid ? "yes" : "no: " + (d.extraction_errors || []).join("; "));
    }
    if (d.error) outcomeRow("Post-call", d.error);
  }
}

// --- every event ---------------------------------------------------------------------------

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
  document.getElementById("event-count").textContent = String(seen.size);
  const d = ev.data || {};
  ev.data = d;
  if (ev.kind === "transcript") addTranscript(ev);
  if (ev.kind === "response.started") responseStarts.push(ev.t);
  if (ev.kind === "turn.latency") addTurn(ev);
  if (ev.kind === "barge_in") addBargeIn(ev);
  if (ev.kind === "tool.call") addToolCall(ev);
  if (ev.kind === "tool.result") addToolResult(ev);
  if (ev.kind === "recording.ready" && d.url) { recording = d; showRecording(); }
  if (ev.kind === "post_call" || ev.kind === "amd" || ev.kind === "transfer") addOutcome(ev.kind, d);
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
