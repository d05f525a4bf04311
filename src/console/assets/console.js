// ringcast's operator console: one page, no dependencies. Every state-changing request carries
// the session's CSRF token; the session itself is an HttpOnly cookie this script never sees.
"use strict";

const $ = (sel) => document.querySelector(sel);
let csrf = null;
let info = null;
let events = null;
let destCursor = "";
let destNext = null;
let sesNext = null;
let tryWs = null;

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 && path !== "/console/login") showLogin();
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  return td;
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en");
}

function showLogin() {
  csrf = null;
  if (events) { events.close(); events = null; }
  $("#nav").hidden = true;
  document.querySelectorAll(".page").forEach((p) => (p.hidden = true));
  $("#login").hidden = false;
}

async function start() {
  try {
    info = await api("GET", "/console/api/session");
  } catch (e) {
    return showLogin();
  }
  csrf = info.csrf;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  const sel = $("#try-project");
  sel.replaceChildren(...info.signing_projects.map((p) => new Option(p, p)));
  if (!events) watch();
  route();
}

function route() {
  if (!csrf) return;
  const page = (location.hash || "#overview").slice(1);
  document.querySelectorAll(".page").forEach((p) => (p.hidden = p.id !== `page-${page}`));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  if (page === "destinations") loadDestinations("");
  if (page === "sessions") loadSessions("");
}

// ---- overview: server-sent events, one sample a second ----
let samples = [];

function watch() {
  events = new EventSource("/console/api/events");
  events.addEventListener("history", (e) => { samples = JSON.parse(e.data); draw(); });
  events.addEventListener("ended", () => showLogin());
  events.onmessage = (e) => {
    samples.push(JSON.parse(e.data));
    if (samples.length > 300) samples.shift();
    draw();
  };
}

function draw() {
  const s = samples[samples.length - 1];
  if (!s) return;
  $("#ov-connections").textContent = fmt(s.connections);
  $("#ov-deliveries").textContent = fmt(s.deliveries_per_s);
  $("#ov-publishes").textContent = fmt(s.publishes_per_s);
  $("#ov-drops").textContent = fmt(s.dropped);
  $("#ov-slow").textContent = fmt(s.slow_closed);
  $("#ov-rss").textContent = `${(s.rss_bytes / 1048576).toFixed(1)} MiB`;
  $("#ov-age").textContent = `as of ${new Date(s.t).toLocaleTimeString()}`;
  const rows = Object.entries(s.sessions_by_project || {}).map(([p, n]) => {
    const tr = document.createElement("tr");
    tr.append(cell(p), cell(fmt(n)));
    return tr;
  });
  if (s.anonymous) {
    const tr = document.createElement("tr");
    tr.append(cell("(no user yet, or raw without auth)"), cell(fmt(s.anonymous)));
    rows.push(tr);
  }
  $("#ov-projects").replaceChildren(...rows);
  chart();
  const nodes = s.cluster && s.cluster.nodes;
  $("#ov-cluster-box").hidden = !nodes;
  if (nodes) {
    $("#ov-cluster").replaceChildren(...nodes.map((n) => {
      const tr = document.createElement("tr");
      tr.append(cell(n.node), cell(n.listen), cell(fmt(n.stats ? n.stats.connections : null)));
      return tr;
    }));
  }
}

const COLORS = ["#2f6fde", "#d9822b", "#2e9e5b", "#b3261e", "#7b4fd6", "#4a4f5c"];

function chart() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 300 100");
  svg.setAttribute("preserveAspectRatio", "none");
  const shards = (samples[samples.length - 1].shards || []).length;
  let max = 1;
  for (const s of samples) for (const sh of s.shards) max = Math.max(max, sh.connections);
  for (let i = 0; i < shards; i++) {
    const pts = samples.map((s, x) => `${x + (300 - samples.length)},${98 - (96 * (s.shards[i] ? s.shards[i].connections : 0)) / max}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[i % COLORS.length]);
    line.setAttribute("stroke-width", "1.2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    line.dataset.shard = String(i);
    svg.append(line);
  }
  $("#ov-chart").replaceChildren(svg);
  const span = Math.round((samples.length ? samples[samples.length - 1].t - samples[0].t : 0) / 1000);
  const legend = Array.from({ length: shards }, (_, i) => {
    const b = document.createElement("span");
    b.className = "swatch";
    b.style.borderColor = COLORS[i % COLORS.length];
    b.textContent = `shard ${i}`;
    return b;
  });
  const note = document.createElement("span");
  note.textContent = `top of the chart: ${fmt(max)} connections; ${span} s of samples kept`;
  $("#ov-chart-note").replaceChildren(...legend, note);
}

// ---- destinations, a page at a time ----
async function loadDestinations(after) {
  destCursor = after;
  const q = encodeURIComponent($("#dest-q").value);
  const d = await api("GET", `/console/api/destinations?q=${q}&after=${encodeURIComponent(after)}`);
  destNext = d.next;
  $("#dest-next").disabled = !d.next;
  $("#dest-table").replaceChildren(...d.items.map((x) => {
    const tr = document.createElement("tr");
    tr.append(cell(x.project), cell(x.kind), cell(x.destination), cell(x.user), cell(fmt(x.subscribers)));
    return tr;
  }));
}

// ---- sessions, a page at a time, with disconnect ----
async function loadSessions(after) {
  const p = encodeURIComponent($("#ses-project").value);
  const u = encodeURIComponent($("#ses-user").value);
  const d = await api("GET", `/console/api/sessions?project=${p}&user=${u}&after=${encodeURIComponent(after)}`);
  sesNext = d.next;
  $("#ses-next").disabled = !d.next;
  $("#ses-table").replaceChildren(...d.items.map((s) => {
    const tr = document.createElement("tr");
    const subs = s.subscriptions.map((x) => x.destination).join(", ");
    const when = new Date(s.connected_at * 1000).toLocaleTimeString();
    tr.append(cell(s.project), cell(s.user), cell(s.protocol), cell(s.remote), cell(when), cell(subs));
    const td = document.createElement("td");
    if (s.user) {
      const b = document.createElement("button");
      b.className = "disconnect secondary";
      b.type = "button";
      b.textContent = "Disconnect user";
      b.dataset.project = s.project;
      b.dataset.user = s.user;
      b.onclick = () => disconnect(s.project, s.user);
      td.append(b);
    }
    tr.append(td);
    return tr;
  }));
}

async function disconnect(project, user) {
  try {
    const r = await api("POST", "/console/api/disconnect", { project, user });
    $("#ses-result").textContent = `closed ${r.sessions ?? r.disconnected ?? 0} session(s) of ${user}`;
  } catch (e) {
    $("#ses-result").textContent = e.message;
  }
  setTimeout(() => loadSessions(""), 300);
}

// ---- publish ----
async function publish(ev) {
  ev.preventDefault();
  const body = {
    project: $("#pub-project").value,
    destination: $("#pub-destination").value,
    body: $("#pub-body").value,
  };
  if ($("#pub-kind").value === "user") body.user = $("#pub-user").value;
  const headers = {};
  for (const line of $("#pub-headers").value.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  if (Object.keys(headers).length) body.headers = headers;
  try {
    const r = await api("POST", "/console/api/publish", body);
    $("#pub-result").textContent = `reached ${r.sessions} session(s)`;
    $("#pub-result").className = "";
  } catch (e) {
    $("#pub-result").textContent = e.message;
    $("#pub-result").className = "error";
  }
}

// ---- try it: a STOMP client in the page ----
function stompFrame(command, headers, body = "") {
  return `${command}\n${Object.entries(headers).map(([k, v]) => `${k}:${v}`).join("\n")}\n\n${body}\0`;
}

async function tryIt(ev) {
  ev.preventDefault();
  if (tryWs) tryWs.close();
  const project = $("#try-project").value;
  const user = $("#try-user").value;
  const dest = $("#try-destination").value;
  let token;
  try {
    token = (await api("POST", "/console/api/token", { project, user })).token;
  } catch (e) {
    $("#try-status").textContent = e.message;
    return;
  }
  const scheme = info.ws.tls ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.hostname}:${info.ws.port}${info.ws.path}`, ["v12.stomp"]);
  tryWs = ws;
  $("#try-status").textContent = "connecting…";
  ws.onopen = () => ws.send(stompFrame("CONNECT", {
    "accept-version": "1.2", host: location.hostname, token, projectId: project, "heart-beat": "0,0",
  }));
  ws.onmessage = (m) => {
    const text = typeof m.data === "string" ? m.data : "";
    const cmd = text.split("\n", 1)[0];
    if (cmd === "CONNECTED") {
      ws.send(stompFrame("SUBSCRIBE", { id: "try-0", destination: dest, receipt: "sub" }));
    } else if (cmd === "RECEIPT") {
      $("#try-status").textContent = `connected as ${user}, subscribed to ${dest}`;
    } else if (cmd === "MESSAGE") {
      const li = document.createElement("li");
      li.textContent = text.slice(text.indexOf("\n\n") + 2).replace(/\0$/, "");
      $("#try-log").prepend(li);
    } else if (cmd === "ERROR") {
      $("#try-status").textContent = text;
    }
  };
  ws.onclose = (e) => {
    if (tryWs === ws) $("#try-status").textContent = `closed (${e.code}${e.reason ? ": " + e.reason : ""})`;
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      await api("POST", "/console/login", { key: $("#key").value });
      $("#key").value = "";
      await start();
    } catch (e) {
      $("#login-error").textContent = e.message;
    }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/console/logout", {}); } catch (e) { /* gone already */ }
    if (tryWs) tryWs.close();
    showLogin();
  });
  $("#dest-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadDestinations(""); });
  $("#dest-first").addEventListener("click", () => loadDestinations(""));
  $("#dest-next").addEventListener("click", () => destNext && loadDestinations(destNext));
  $("#ses-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadSessions(""); });
  $("#ses-first").addEventListener("click", () => loadSessions(""));
  $("#ses-next").addEventListener("click", () => sesNext && loadSessions(sesNext));
  $("#pub-form").addEventListener("submit", publish);
  $("#try-form").addEventListener("submit", tryIt);
  window.addEventListener("hashchange", route);
  start();
});
