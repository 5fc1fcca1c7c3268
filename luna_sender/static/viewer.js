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

// Reconnecting (#18): a socket the user did not close is reopened after an exponential backoff
// with jitter (so a restarted service is not hit by every open page at once), capped so a long
// outage is still noticed within seconds of its end. With recovery on, the new socket carries
// since=<the last offset received> and the service replays what was missed.
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_CAP_MS = 15000;
const SEEN_MAX = 5000;
let stream = null; // {kind, path, params} of the stream the user asked for
let generation = 0; // handlers of an older socket ignore everything once a newer one exists
let attempt = 0;
let timer = null;
let lastOffset = null;
const seen = new Set(); // recent offsets: at-least-once delivery is shown exactly once
const seenOrder = [];

function backoffMs(n) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** Math.min(n - 1, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function notice(text, cls) {
  const el = $("recovery");
  el.textContent = text ? `${new Date().toLocaleTimeString()} · ${text}` : "";
  el.className = cls || "";
  el.hidden = !text;
}

function firstSeen(offset) {
  if (seen.has(offset)) return false;
  seen.add(offset);
  seenOrder.push(offset);
  if (seenOrder.length > SEEN_MAX) seen.delete(seenOrder.shift());
  return true;
}

// Validation answers a refused handshake's LUNA error, which the websocket itself hides.
// Returns "ok", "rejected" (shown; retrying would not help) or "unreachable".
async function validate(k, params, quiet = false) {
  const check = new URLSearchParams(params);
  check.set("kind", k);
  let resp;
  try {
    resp = await fetch(`/viewer/validate?${check}`);
  } catch (err) {
    showError(`Service unreachable: ${err}`);
    return "unreachable";
  }
  if (resp.status === 204) return "ok";
  let text = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    text = `Error ${body.error_code}: ${body.desc}. ${body.detail}`;
  } catch (_) { /* not JSON */ }
  if (!quiet) showError(text);
  return resp.status >= 500 ? "unreachable" : "rejected";
}

async function connect(ev) {
  ev.preventDefault();
  disconnect();
  showError("");
  notice("");
  const k = kind();
  const params = query();
  if (k === "face" && !params.get("account_id") && !params.get("token")) {
    showError("An account id (or, in jwt mode, a token) is required for face/body events.");
    return;
  }
  const outcome = await validate(k, params);
  if (outcome !== "ok") {
    setStatus(outcome === "rejected" ? "rejected" : "error", "error");
    return;
  }
  let recover = $("recover").checked;
  if (recover && k === "general") {
    // In jwt mode a tenant's token may not recover on the general stream (docs/recovery.md).
    const probe = new URLSearchParams(params);
    probe.set("recover", "true");
    if (await validate(k, probe, true) === "rejected") {
      recover = false;
      notice("Resuming after a reconnect needs an admin token on the general stream: " +
             "connected without it, so events may be missed while disconnected.", "warn");
    }
  }
  if (recover) params.set("recover", "true");
  lastOffset = null;
  seen.clear();
  seenOrder.length = 0;
  attempt = 0;
  stream = { kind: k, path: k === "face" ? "/viewer/ws" : "/ws/general", params };
  openSocket(false);
}

function openSocket(resuming) {
  const gen = ++generation;
  if (socket) socket.close(1000); // a second Connect while the first was validating
  const params = new URLSearchParams(stream.params);
  // The box, or recover/since typed into the extra query (the service's booleans).
  const recovering = ["true", "1"].includes(params.get("recover")) || params.has("since");
  // Offsets only arrive on a recovering socket, so one seen means resuming is possible.
  if (resuming && lastOffset !== null) params.set("since", lastOffset);
  const path = stream.path;
  socket = new WebSocket(wsUrl(path, params));
  setStatus(resuming ? "reconnecting…" : "connecting…", "idle");
  $("connect").disabled = true;
  $("disconnect").disabled = false;
  socket.onopen = () => {
    if (gen !== generation) return;
    attempt = 0;
    showError("");
    setStatus(`connected to ${path}`, "open");
    if (!resuming) return;
    // Without since the service sends no recovery frame: say here what the page cannot know.
    if (!recovering) {
      notice("Reconnected without recovery: events may have been missed while disconnected.", "warn");
    } else if (lastOffset === null) {
      notice("Reconnected; no event had arrived before the break, so there was nothing to " +
             "resume from: events may have been missed while disconnected.", "warn");
    }
  };
  socket.onmessage = (m) => {
    if (gen !== generation) return;
    const msg = JSON.parse(m.data);
    if (msg.recovery && typeof msg.recovery === "object" && !("event" in msg)) {
      const r = msg.recovery;
      if (r.recovered) {
        const n = r.replayed;
        notice(`Resumed after reconnect: ${n} missed event${n === 1 ? "" : "s"} replayed.`, "ok");
      } else {
        notice("Reconnected, but recovery failed (the last event seen is outside the " +
               "service's history window, or the service's own event stream was interrupted): " +
               "events may have been missed while disconnected.", "warn");
      }
      return;
    }
    if (typeof msg.offset === "string") {
      if (!firstSeen(msg.offset)) return;
      lastOffset = msg.offset;
    }
    total += 1;
    window_count += 1;
    $("total").textContent = total;
    if (!paused) addRow(msg);
  };
  let opened = false;
  socket.addEventListener("open", () => { opened = true; });
  socket.onerror = () => {
    // A refused handshake; a dropped open socket is told by the status line instead.
    if (gen === generation && !opened) showError("Websocket error (see the browser console).");
  };
  socket.onclose = (e) => {
    if (gen !== generation) return;
    socket = null;
    const why = `code ${e.code}${e.reason ? ": " + e.reason : ""}`;
    if (stream === null) {
      setStatus(`disconnected (${why})`, e.code === 1000 || e.code === 1005 ? "idle" : "error");
      $("connect").disabled = false;
      $("disconnect").disabled = true;
      return;
    }
    schedule(why);
  };
}

function schedule(why) {
  attempt += 1;
  const wait = backoffMs(attempt);
  setStatus(`disconnected (${why}); reconnecting in ${(wait / 1000).toFixed(1)} s ` +
            `(attempt ${attempt})`, "error reconnecting");
  $("connect").disabled = false;
  $("disconnect").disabled = false;
  timer = setTimeout(reconnect, wait);
}

async function reconnect() {
  timer = null;
  const target = stream;
  if (target === null) return;
  const gen = ++generation; // a Connect or Disconnect meanwhile makes this attempt stale
  const outcome = await validate(target.kind, withoutRecovery(target.params));
  if (gen !== generation || stream !== target) return;
  if (outcome === "ok") {
    openSocket(true);
  } else if (outcome === "rejected") {
    stream = null; // e.g. the token expired: retrying would be refused the same way
    setStatus("rejected", "error");
    $("connect").disabled = false;
    $("disconnect").disabled = true;
  } else {
    schedule("service unreachable");
  }
}

function withoutRecovery(params) {
  const plain = new URLSearchParams(params);
  plain.delete("recover");
  plain.delete("since");
  return plain;
}

function disconnect() {
  stream = null;
  generation += 1;
  if (timer) {
    clearTimeout(timer);
    timer = null;
  }
  if (socket) {
    socket.close(1000);
    socket = null;
  }
  setStatus("disconnected", "idle");
  $("connect").disabled = false;
  $("disconnect").disabled = true;
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
