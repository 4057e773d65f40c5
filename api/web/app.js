// Live view of `clusterer api`: polls the API with the user's bearer token (kept in
// sessionStorage); no third-party code, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 3000;
const state = { token: null, scope: null, eventsCursor: null, events: [], picked: null,
                lastOffsets: null, timer: null };

const $ = (id) => document.getElementById(id);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" }[c]));
}

class Unauthorized extends Error {}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else if (v !== null && v !== undefined) url.searchParams.set(k, v);
  }
  const r = await fetch(url, { headers: { Authorization: "Bearer " + state.token } });
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function showLogin(message) {
  clearTimeout(state.timer);
  $("view").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function span(s) {
  if (!s) return "";
  const a = s[0].slice(0, 16).replace("T", " "), b = s[1].slice(0, 16).replace("T", " ");
  return a === b ? a : a + " → " + b;
}

function clusterRows(tbody, items) {
  tbody.innerHTML = items.map((c) => `<tr class="cluster" data-id="${esc(c.cluster_id)}">
    <td>${esc(c.cluster_label || c.cluster_id)}</td><td class="num">${c.cluster_size}</td>
    <td>${esc(span(c.temporal_span))}</td>
    <td class="muted">${esc((c.representative_ids || []).slice(0, 3).join(", "))}</td></tr>`).join("");
  for (const tr of tbody.querySelectorAll("tr")) {
    tr.addEventListener("click", () => pick(tr.dataset.id));
  }
}

function drawMap(m) {
  const cv = $("map"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const pts = m.points;
  if (!pts.length) { g.fillStyle = "#8a94a3"; g.fillText("no centroids in this scope", 10, 20); return; }
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const times = pts.map((p) => (p.last_event_time ? Date.parse(p.last_event_time) : 0));
  const tmax = Math.max(...times), tmin = Math.min(...times);
  const maxSize = Math.max(...pts.map((p) => p.cluster_size));
  pts.forEach((p, i) => {
    const x = 20 + ((p.x - x0) / (x1 - x0 || 1)) * (cv.width - 40);
    const y = cv.height - 20 - ((p.y - y0) / (y1 - y0 || 1)) * (cv.height - 40);
    const age = tmax > tmin ? (tmax - times[i]) / (tmax - tmin) : 0;  // 0 newest, 1 oldest
    g.fillStyle = `hsla(${Math.round(10 + age * 200)}, 75%, 48%, 0.75)`;
    g.beginPath();
    g.arc(x, y, 3 + 9 * Math.sqrt(p.cluster_size / maxSize), 0, 2 * Math.PI);
    g.fill();
    if (p.cluster_id === state.picked) { g.strokeStyle = "#000"; g.lineWidth = 2; g.stroke(); }
  });
}

async function drawSizes() {
  const cv = $("sizes"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (!state.picked) return;
  const h = await api(`/api/v1/clusters/${encodeURIComponent(state.picked)}/history`, { limit: 500 });
  const pts = h.items.filter((e) => e.cluster_id === state.picked && e.event_time)
    .map((e) => [Date.parse(e.event_time), e.payload.size]);
  if (!pts.length) return;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0], smax = Math.max(...pts.map((p) => p[1]), 1);
  g.strokeStyle = "#1565c0"; g.lineWidth = 2; g.beginPath();
  pts.forEach(([t, s], i) => {
    const x = 30 + ((t - t0) / (t1 - t0 || 1)) * (cv.width - 40);
    const y = cv.height - 20 - (s / smax) * (cv.height - 40);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#1d232b"; g.fillText(String(smax), 4, 22); g.fillText("0", 4, cv.height - 20);
}

function pick(id) {
  state.picked = id;
  $("picked").textContent = id;
  drawSizes().catch(() => {});
}

async function refresh() {
  const stats = await api("/api/v1/statistics");
  const health = await fetch("/health").then((r) => r.ok).catch(() => false);
  $("health").textContent = health ? "healthy" : "unhealthy";
  $("health").className = "pill " + (health ? "ok" : "bad");
  const lag = stats.consumer_lag;
  $("lag").textContent = lag.status === "ok" ? lag.total : "unknown";
  $("dlq").textContent = lag.dead_letters ?? "unknown";
  // items the clustering worker committed (by-scope topic): their rate is the throughput
  const offsets = lag.partitions.filter((p) => p.topic.endsWith(".by-scope"))
    .reduce((n, p) => n + (p.committed || 0), 0);
  const now = Date.now();
  if (state.lastOffsets && lag.status === "ok") {
    const rate = (offsets - state.lastOffsets[0]) / ((now - state.lastOffsets[1]) / 1000);
    $("rate").textContent = Math.max(0, rate).toFixed(1) + " ev/s";
  }
  if (lag.status === "ok") state.lastOffsets = [offsets, now];
  $("lagtable").querySelector("tbody").innerHTML = lag.partitions.map((p) =>
    `<tr><td>${esc(p.group)}</td><td>${esc(p.topic)}</td><td class="num">${p.partition}</td>
     <td class="num">${p.committed ?? "–"}</td><td class="num">${p.high_watermark}</td>
     <td class="num">${p.lag}</td></tr>`).join("");
  const sel = $("scope");
  const scopes = stats.scopes.map((s) => s.scope);
  if (sel.options.length !== scopes.length || [...sel.options].some((o, i) => o.value !== scopes[i])) {
    sel.innerHTML = scopes.map((s) => `<option>${esc(s)}</option>`).join("");
    if (state.scope && scopes.includes(state.scope)) sel.value = state.scope;
  }
  state.scope = sel.value || null;
  if (state.scope) {
    const [big, fresh, map] = await Promise.all([
      api("/api/v1/clusters", { scope: state.scope, sort: "size", limit: 10 }),
      api("/api/v1/clusters", { scope: state.scope, sort: "first_event_time", limit: 10 }),
      api("/api/v1/map", { scope: state.scope }),
    ]);
    clusterRows($("biggest").querySelector("tbody"), big.items);
    clusterRows($("newest").querySelector("tbody"), fresh.items);
    drawMap(map);
  }
  const ev = await api("/api/v1/events", { limit: 100, cursor: state.eventsCursor,
                                           kind: ["created", "merged", "split", "retired"] });
  state.eventsCursor = ev.next_cursor;
  state.events = ev.items.reverse().concat(state.events).slice(0, 200);
  $("events").innerHTML = state.events.slice(0, 60).map((e) =>
    `<li><span class="kind kind-${esc(e.kind)}">${esc(e.kind)}</span> ${esc(e.cluster_id)}
     ${e.related_ids.length ? "↔ " + esc(e.related_ids.join(", ")) : ""}
     <span class="muted">${esc(e.event_time || "")} · size ${e.payload.size ?? ""}</span></li>`).join("");
  if (state.picked) await drawSizes();
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function loop() {
  try {
    await refresh();
    state.timer = setTimeout(loop, POLL_MS);
  } catch (e) {
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem("clusterer-token");
      showLogin("the token was refused");
      return;
    }
    $("updated").textContent = "error: " + e.message;
    state.timer = setTimeout(loop, POLL_MS);
  }
}

function start(token) {
  state.token = token;
  sessionStorage.setItem("clusterer-token", token);
  $("login").hidden = true;
  $("view").hidden = false;
  loop();
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) start(t);
});
$("scope").addEventListener("change", () => {
  state.scope = $("scope").value;
  state.picked = null;
  clearTimeout(state.timer);
  loop();
});

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) history.replaceState(null, "", location.pathname);
const saved = fromHash || sessionStorage.getItem("clusterer-token");
if (saved) start(saved); else showLogin();
