// luna-sender live event viewer: plain JS, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("filters");
const tbody = document.querySelector("#events tbody");
const MAX_ROWS = 500;
let socket = null;
let paused = false;
let total = 0;
let window_count = 0;

function kind() {
  return form.querySelector("input[name=kind]:checked").value;
}

function setStatus(text, cls) {
  $("status").textContent = text;
  $("status").className = cls;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function query() {
  const params = new URLSearchParams();
  const k = kind();
  const box = k === "face" ? $("face-filters") : $("general-filters");
  for (const el of box.querySelectorAll("input, select")) {
    if (!el.value.trim()) continue;
    let name = el.name.replace(/^general_/, "");
    params.append(name, el.value.trim());
  }
  const token = $("token").value.trim();
  if (token) params.set("token", token);
  const extra = $("extra").value.trim();
  if (extra) {
    for (const [key, value] of new URLSearchParams(extra)) params.append(key, value);
  }
  return params;
}

function dig(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = cur[part];
  }
  return cur;
}

function topMatch(event) {
  let best = null;
  for (const m of event.matches || []) {
    for (const c of m.candidates || []) {
      if (typeof c.similarity === "number" && (!best || c.similarity > best.sim)) {
        best = { label: m.label, sim: c.similarity };
      }
    }
  }
  return best ? `${best.label} (${best.sim.toFixed(3)})` : "";
}

function attributes(event) {
  const parts = [];
  const gender = dig(event, "face_attributes.basic_attributes.gender");
  const age = dig(event, "face_attributes.basic_attributes.age");
  if (gender !== undefined && gender !== null) parts.push(gender === 1 ? "male" : "female");
  if (age !== undefined && age !== null) parts.push(`age ${age}`);
  const live = dig(event, "aggregate_estimations.face.attributes.liveness.prediction");
  if (live) parts.push(`liveness ${live}`);
  const emo = dig(event, "aggregate_estimations.face.attributes.emotions.predominant_emotion");
  if (emo) parts.push(emo);
  return parts.join(", ");
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  row.appendChild(td);
  return td;
}

function addRow(msg) {
  const event = msg.event || {};
  const row = document.createElement("tr");
  row.className = "event";
  cell(row, new Date().toLocaleTimeString());
  cell(row, event.source);
  cell(row, msg.handler_id);
  cell(row, msg.event_type || "face/body");
  cell(row, attributes(event));
  cell(row, topMatch(event));
  const raw = document.createElement("td");
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "JSON";
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(msg, null, 2);
  details.append(summary, pre);
  raw.appendChild(details);
  row.appendChild(raw);
  tbody.insertBefore(row, tbody.firstChild);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
}

function wsUrl(path, params) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${path}?${params}`;
}

async function connect(ev) {
  ev.preventDefault();
  disconnect();
  showError("");
  const k = kind();
  const params = query();
  if (k === "face" && !params.get("account_id") && !params.get("token")) {
    showError("An account id (or, in jwt mode, a token) is required for face/body events.");
    return;
  }
  // Browsers hide the HTTP error of a refused websocket handshake, so validate first.
  const check = new URLSearchParams(params);
  check.set("kind", k);
  let resp;
  try {
    resp = await fetch(`/viewer/validate?${check}`);
  } catch (err) {
    showError(`Service unreachable: ${err}`);
    setStatus("error", "error");
    return;
  }
  if (resp.status !== 204) {
    let text = `HTTP ${resp.status}`;
    try {
      const body = await resp.json();
      text = `Error ${body.error_code}: ${body.desc}. ${body.detail}`;
    } catch (_) { /* not JSON */ }
    showError(text);
    setStatus("rejected", "error");
    return;
  }
  const path = k === "face" ? "/viewer/ws" : "/ws/general";
  socket = new WebSocket(wsUrl(path, params));
  setStatus("connecting…", "idle");
  socket.onopen = () => {
    setStatus(`connected to ${path}`, "open");
    $("connect").disabled = true;
    $("disconnect").disabled = false;
  };
  socket.onmessage = (m) => {
    total += 1;
    window_count += 1;
    $("total").textContent = total;
    if (!paused) addRow(JSON.parse(m.data));
  };
  socket.onerror = () => showError("Websocket error (see the browser console).");
  socket.onclose = (e) => {
    setStatus(`disconnected (code ${e.code}${e.reason ? ": " + e.reason : ""})`,
              e.code === 1000 || e.code === 1005 ? "idle" : "error");
    $("connect").disabled = false;
    $("disconnect").disabled = true;
    socket = null;
  };
}

function disconnect() {
  if (socket) socket.close(1000);
}

form.addEventListener("submit", connect);
$("disconnect").addEventListener("click", disconnect);
$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("paused-note").hidden = !paused;
});
$("clear").addEventListener("click", () => {
  tbody.innerHTML = "";
  total = 0;
  $("total").textContent = "0";
});
for (const radio of form.querySelectorAll("input[name=kind]")) {
  radio.addEventListener("change", () => {
    $("face-filters").hidden = kind() !== "face";
    $("general-filters").hidden = kind() !== "general";
  });
}
setInterval(() => {
  $("eps").textContent = window_count;
  window_count = 0;
}, 1000);
