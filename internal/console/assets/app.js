// nodeq console. Every value shown comes from the fleet or from a record,
// which any producer may have written: it is only ever set as text
// (textContent), never parsed as HTML.
"use strict";

// h builds an element: h("td", {class: "num"}, "3", child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (res.status === 401) { location.href = "/login.html"; }
  if (!res.ok) throw new Error((data && data.error) || res.status + " " + res.statusText);
  return data;
}

function toast(msg, isError) {
  const el = h("div", { class: isError ? "error" : "" }, msg);
  document.getElementById("toast").append(el);
  setTimeout(() => el.remove(), isError ? 10000 : 5000);
}

function fmtTime(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(s) {
  const secs = Math.max(0, Math.round((Date.now() - new Date(s)) / 1000));
  if (secs < 60) return secs + "s ago";
  if (secs < 3600) return Math.floor(secs / 60) + "m ago";
  if (secs < 172800) return Math.floor(secs / 3600) + "h ago";
  return Math.floor(secs / 86400) + "d ago";
}

function plural(n, one, many) { return n + " " + (n === 1 ? one : (many || one + "s")); }

const main = () => document.getElementById("main");

// ---- routing ----

let pageToken = 0; // a page's async work checks it is still the page shown

function route() {
  pageToken++;
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  document.getElementById("nav-overview").classList.toggle("active", parts.length === 0);
  document.getElementById("nav-failures").classList.toggle("active", parts[0] === "failures" || parts[0] === "group" || parts[0] === "record");
  main().replaceChildren();
  if (parts.length === 0) return showOverview();
  if (parts[0] === "failures") return showFailures(new URLSearchParams(query || ""));
  if (parts[0] === "group" && parts[1]) return showGroup(parts[1]);
  if (parts[0] === "record" && parts[1]) return showRecord(parts[1]);
  main().append(h("p", {}, "No such page."));
}

// ---- overview ----

let lastOverview = null;

function startEvents() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("overview", (ev) => {
    lastOverview = JSON.parse(ev.data);
    live.textContent = "live · " + fmtTime(lastOverview.time);
    if (document.getElementById("overview")) renderOverview(lastOverview);
  });
  es.onerror = () => { live.textContent = "reconnecting…"; };
}

function showOverview() {
  main().append(h("div", { id: "overview" }, h("p", { class: "muted" }, "loading…")));
  if (lastOverview) renderOverview(lastOverview);
  else api("GET", "/api/overview").then(renderOverview, (e) => toast(e.message, true));
}

function card(id, label, n, bad) {
  return h("div", { class: "card" + (bad ? " bad" : "") }, h("div", { class: "n", id }, String(n)), h("div", { class: "l" }, label));
}

function renderOverview(o) {
  const root = document.getElementById("overview");
  if (!root) return;
  // Keep what an operator is typing.
  const pauseFor = document.getElementById("pause-for");
  const openFor = document.getElementById("open-for");
  const keep = { pause: pauseFor ? pauseFor.value : "", open: openFor ? openFor.value : "30m" };
  root.replaceChildren();
  if (o.status_error) root.append(h("p", { class: "bad" }, "Fleet status unavailable: " + o.status_error));
  const st = o.status || {};
  root.append(h("div", { class: "cards" },
    card("stat-pending", "pending", st.pending ?? "?"),
    card("stat-inflight", "in flight", st.in_flight ?? "?"),
    card("stat-redelivered", "redelivered in flight", st.redelivered ?? "?"),
    card("stat-held", "held (dead-letter store refusing)", o.held, o.held > 0),
    card("stat-deadletters", "dead letters", st.dead_letters ?? "?", st.dead_letters > 0),
    card("stat-processes", "processes", (st.processes || []).length)));
  if (st.dlq_full) root.append(h("p", { class: "bad" }, "The dead-letter stream is full: it refuses new records (see docs/operations.md)."));

  // Pause and breakers.
  let pauseText = "running";
  if (st.paused) pauseText = st.paused_indefinitely || !st.paused_until ? "paused until resumed" : "paused until " + fmtTime(st.paused_until);
  const fleetBreaker = st.fleet_breaker ? "fleet breaker " + st.fleet_breaker + (st.fleet_breaker === "open" && st.fleet_breaker_until ? " until " + fmtTime(st.fleet_breaker_until) : "") : "breakers per process";
  root.append(h("div", { class: "panel" },
    h("div", { class: "row" },
      h("strong", {}, "Fleet "), h("span", { id: "pause-state", class: st.paused ? "warn" : "ok" }, pauseText),
      h("span", { class: "muted" }, " · " + fleetBreaker)),
    h("div", { class: "row" },
      h("input", { id: "pause-for", placeholder: "for (e.g. 30m; empty: until resumed)", value: keep.pause, size: 30 }),
      h("button", { id: "pause", onclick: () => act("/api/pause", { for: document.getElementById("pause-for").value.trim() || undefined }, "Paused") }, "Pause"),
      h("button", { id: "resume", onclick: () => act("/api/resume", {}, "Resumed") }, "Resume"),
      h("span", { class: "muted" }, " | breakers of every process: "),
      h("button", { id: "breaker-reset-all", onclick: () => act("/api/breaker", { op: "close", reason: "console" }, "Breakers closed") }, "Reset (close)"),
      h("input", { id: "open-for", value: keep.open, size: 6 }),
      h("button", { id: "breaker-open-all", onclick: () => act("/api/breaker", { op: "open", for: document.getElementById("open-for").value.trim(), reason: "console" }, "Breakers opened") }, "Open for"))));

  // Node types.
  root.append(h("h2", {}, "Node types"));
  if (o.node_types_error) root.append(h("p", { class: "warn" }, o.node_types_error));
  const types = o.node_types || [];
  if (types.length === 0) root.append(h("p", { class: "muted" }, "No tasks and no dead letters."));
  else root.append(h("table", { id: "node-types" },
    h("tr", {}, h("th", {}, "node type"), h("th", {}, "queued"), h("th", {}, "dead letters"), h("th", {}, "processes")),
    types.map((t) => h("tr", { class: t.dead_letters > 0 ? "clickable" : "", onclick: t.dead_letters > 0 ? () => { location.hash = "#/failures?node_types=" + encodeURIComponent(t.node_type); } : undefined },
      h("td", { class: "mono" }, t.node_type), h("td", { class: "num" }, t.queued), h("td", { class: "num" }, t.dead_letters), h("td", { class: "num" }, t.processes)))));
  if (o.node_types_left_out) root.append(h("p", { class: "muted" }, plural(o.node_types_left_out, "more node type") + " not listed."));

  // Processes.
  root.append(h("h2", {}, "Processes"));
  if (st.processes_unknown) root.append(h("p", { class: "warn" }, "Process registry unavailable: " + st.processes_unknown));
  const ps = st.processes || [];
  if (ps.length === 0) root.append(h("p", { class: "muted" }, "No consumer process announced."));
  else root.append(h("table", { id: "processes" },
    h("tr", {}, ["id", "version", "node types", "workers", "in flight", "prefetched", "held", "breaker", "paused", "last seen", ""].map((c) => h("th", {}, c))),
    ps.map((p) => {
      const b = p.breaker || {};
      const state = b.state ? (b.scope === "fleet" ? "fleet " : "") + b.state + (b.since ? " since " + fmtTime(b.since) : "") : "off";
      return h("tr", {},
        h("td", { class: "mono" }, p.id), h("td", {}, p.version),
        h("td", { class: "mono" }, (p.node_types || []).join(", ") + (p.more_node_types ? " +" + p.more_node_types : "")),
        h("td", { class: "num" }, p.workers), h("td", { class: "num" }, p.in_flight), h("td", { class: "num" }, p.prefetched),
        h("td", { class: "num" }, p.dlq_held), h("td", { class: "state-" + (b.state || "off") }, state),
        h("td", {}, p.stopping ? "stopping" : p.paused ? "yes" : "no"), h("td", {}, ago(p.last_seen)),
        h("td", {}, b.state && b.state !== "closed" ? h("button", { onclick: () => act("/api/breaker", { op: "close", process: p.id, reason: "console" }, "Breaker of " + p.id + " closed") }, "Reset breaker") : ""));
    })));
  if (st.processes_left_out) root.append(h("p", { class: "muted" }, plural(st.processes_left_out, "more process", "more processes") + " not listed."));
}

async function act(path, body, done) {
  try {
    await api("POST", path, body);
    toast(done);
  } catch (e) {
    toast(e.message, true);
  }
}

// ---- failures ----

const reasons = ["invalid", "unknown_node_type", "permanent_error", "retries_exhausted", "deadline_exceeded", "poison"];
const kinds = ["Execution", "PythonVm", "Wasm", "Transport", "Io", "Manifest", "Marshaling", "Serialization", "Other"];
const filterKeys = ["node_types", "kinds", "reasons", "since", "until", "match", "task_id"];

function specFrom(params) {
  const spec = {};
  for (const k of filterKeys) {
    const v = (params.get(k) || "").trim();
    if (!v) continue;
    spec[k] = ["node_types", "kinds", "reasons"].includes(k) ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  }
  return spec;
}

function queryOf(spec) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(spec)) q.set(k, Array.isArray(v) ? v.join(",") : v);
  return q.toString();
}

function showFailures(params) {
  const token = pageToken;
  const spec = specFrom(params);
  const field = (name, label, opts) => h("label", {}, label, opts
    ? h("select", { name }, h("option", { value: "" }, "any"), opts.map((o) => h("option", { value: o, selected: params.get(name) === o }, o)))
    : h("input", { name, value: params.get(name) || "", size: 14 }));
  const form = h("form", { class: "filters panel", id: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value.trim()) q.set(el.name, el.value.trim());
    location.hash = "#/failures?" + q.toString();
  } },
  field("node_types", "node type"), field("reasons", "reason", reasons), field("kinds", "kind", kinds),
  field("since", "since (2h, 2026-11-28)"), field("until", "until"), field("match", "message contains"), field("task_id", "task id"),
  h("button", { type: "submit", class: "primary" }, "Filter"));
  const list = h("div", { id: "groups" }, h("p", { class: "muted" }, "loading…"));
  main().append(h("h2", {}, "Failures by group"), form, list);
  api("GET", "/api/groups?" + queryOf(spec)).then((ans) => {
    if (token !== pageToken) return;
    list.replaceChildren();
    if (ans.total === 0) { list.append(h("p", { id: "no-failures" }, "No dead letters match.")); return; }
    list.append(h("p", { class: "muted", id: "groups-summary" }, plural(ans.total, "record") + " in " + plural(ans.groups.length, "group")));
    list.append(h("table", {},
      h("tr", {}, ["node type", "reason", "kind", "message (fingerprint)", "count", "first seen", "last seen"].map((c) => h("th", {}, c))),
      ans.groups.map((g) => h("tr", { class: "clickable group-row", "data-group": g.id, onclick: () => { location.hash = "#/group/" + g.id; } },
        h("td", { class: "mono" }, g.node_type), h("td", {}, g.reason), h("td", {}, g.error_kind),
        h("td", { class: "mono", title: g.sample }, g.fingerprint), h("td", { class: "num" }, g.count),
        h("td", {}, fmtTime(g.first_seen)), h("td", {}, fmtTime(g.last_seen))))));
    if (Object.keys(spec).length > 0) {
      list.append(h("h3", {}, "Act on the whole filtered selection"), actionPanel(spec, "the " + plural(ans.total, "record") + " this filter selects"));
    }
  }, (e) => { list.replaceChildren(h("p", { class: "bad" }, e.message)); });
}

// ---- a group ----

function showGroup(id) {
  const token = pageToken;
  const head = h("div", {}, h("p", { class: "muted" }, "loading…"));
  const records = h("div", { id: "records" });
  main().append(h("p", {}, h("a", { href: "#/failures" }, "← all groups")), head, records);
  api("GET", "/api/groups?group=" + encodeURIComponent(id)).then((ans) => {
    if (token !== pageToken) return;
    head.replaceChildren();
    const g = ans.groups[0];
    if (!g) { head.append(h("p", { id: "group-empty" }, "This group has no records (any more).")); return; }
    head.append(h("h2", { id: "group-title" }, g.node_type + " · " + g.reason + " · " + g.error_kind),
      h("pre", { id: "group-fingerprint" }, g.fingerprint),
      h("p", {}, h("span", { id: "group-count" }, plural(g.count, "record")), " · first seen " + fmtTime(g.first_seen) + " · last seen " + fmtTime(g.last_seen) + " · " + plural(g.distinct_messages, "distinct message")),
      h("p", { class: "muted" }, "Newest message: ", h("span", { class: "mono" }, g.sample)),
      actionPanel({ group: g.id }, "this group's " + plural(g.count, "record")));
    loadRecords(records, { group: g.id }, token);
  }, (e) => { head.replaceChildren(h("p", { class: "bad" }, e.message)); });
}

function loadRecords(box, spec, token, before) {
  const q = queryOf(spec) + "&limit=50" + (before ? "&before=" + before : "");
  api("GET", "/api/records?" + q).then((ans) => {
    if (token !== pageToken) return;
    if (!before) box.replaceChildren(h("h3", {}, "Records, newest first"));
    const selected = new Set();
    const selPanel = h("div", { class: "row" });
    const updateSel = () => {
      selPanel.replaceChildren();
      if (selected.size === 0) return;
      selPanel.append(actionPanel({ seqs: [...selected] }, "the " + plural(selected.size, "selected record")));
    };
    box.append(h("table", { class: "record-table" },
      h("tr", {}, ["", "seq", "stored", "task id", "replays", "error"].map((c) => h("th", {}, c))),
      ans.records.map((r) => h("tr", {},
        h("td", {}, h("input", { type: "checkbox", "data-seq": r.seq, onchange: (ev) => { ev.target.checked ? selected.add(r.seq) : selected.delete(r.seq); updateSel(); } })),
        h("td", { class: "num" }, h("a", { href: "#/record/" + r.seq }, String(r.seq))), h("td", {}, fmtTime(r.stored)),
        h("td", { class: "mono" }, r.task_id), h("td", { class: "num" }, r.replays), h("td", { class: "mono" }, r.error)))), selPanel);
    if (ans.next) box.append(h("button", { onclick: (ev) => { ev.target.remove(); loadRecords(box, spec, token, ans.next); } }, "Older records"));
  }, (e) => box.append(h("p", { class: "bad" }, e.message)));
}

// ---- one record ----

function showRecord(seq) {
  const token = pageToken;
  const box = h("div", { id: "record" }, h("p", { class: "muted" }, "loading…"));
  main().append(box);
  api("GET", "/api/records/" + encodeURIComponent(seq)).then((v) => {
    if (token !== pageToken) return;
    box.replaceChildren(h("p", {}, h("a", { href: "#/group/" + v.group }, "← its group")));
    if (v.undecodable) {
      box.append(h("h2", {}, "Record " + v.seq + " is not a dead-letter record"), h("p", { class: "bad" }, v.undecodable), actionPanel({ seqs: [v.seq] }, "this message", true));
      return;
    }
    const r = v.record;
    box.append(h("h2", { id: "record-title" }, "Record " + v.seq + ": " + r.node_type + " · " + r.reason + " · " + r.error_kind));
    const rows = [["stored", fmtTime(v.stored)], ["task id", r.task_id], ["node id", r.node_id], ["correlation id", r.correlation_id],
      ["error", r.error], ["attempts", r.attempts + " in the last of " + r.deliveries + " deliveries"],
      ["replays", (r.headers && r.headers["Nodeq-Replays"] || ["0"])[0]], ["first failure", fmtTime(r.first_failure)], ["last failure", fmtTime(r.last_failure)],
      ["worker", r.worker], ["original", r.subject + " (stream " + r.stream + ", seq " + r.stream_seq + ")"], ["trace id", r.trace_id], ["nodeq version", r.nodeq_version]];
    box.append(h("table", {}, rows.filter(([, val]) => val !== undefined && val !== "").map(([k, val]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, val)))));
    box.append(actionPanel({ seqs: [v.seq] }, "this record"));
    if (r.causes && r.causes.length) box.append(h("h3", {}, "Cause chain"), h("ol", { id: "causes" }, r.causes.map((c) => h("li", { class: "mono" }, c))));
    if (r.stack) box.append(h("h3", {}, "Stack trace"), h("pre", { id: "stack" }, r.stack));
    const hdrs = Object.entries(r.headers || {}).sort();
    box.append(h("h3", {}, "Headers (credentials masked)"), hdrs.length === 0 ? h("p", { class: "muted" }, "none")
      : h("table", { id: "headers" }, hdrs.map(([k, vs]) => vs.map((val) => h("tr", {}, h("th", { class: "mono" }, k), h("td", { class: "mono" }, val))))));
    if (v.task_error) {
      box.append(h("h3", {}, "Original message (" + (r.data ? "not a readable task: " : "") + v.task_error + ")"), h("pre", { id: "payload" }, hexDump(v.data_hex || "")));
      return;
    }
    box.append(h("h3", {}, "Task"), h("pre", { id: "task" }, JSON.stringify(v.task, null, 2)));
    const p = v.payload;
    let shown;
    if (p && typeof p === "object" && !Array.isArray(p) && Object.keys(p).length === 1 && typeof p.hex === "string") shown = hexDump(p.hex);
    else if (typeof p === "string") shown = p;
    else shown = JSON.stringify(p, null, 2);
    box.append(h("h3", {}, "Payload"), h("pre", { id: "payload" }, shown === undefined ? "(none)" : shown));
  }, (e) => { box.replaceChildren(h("p", { class: "bad", id: "record-error" }, e.message)); });
}

function hexDump(hex) {
  const lines = [];
  for (let off = 0; off < hex.length && lines.length < 4096; off += 32) {
    const chunk = hex.slice(off, off + 32);
    const bytes = chunk.match(/../g) || [];
    const text = bytes.map((b) => { const c = parseInt(b, 16); return c >= 32 && c < 127 ? String.fromCharCode(c) : "."; }).join("");
    lines.push((off / 2).toString(16).padStart(8, "0") + "  " + bytes.join(" ").padEnd(48) + "  " + text);
  }
  return lines.join("\n");
}

// ---- actions on a selection: replay (preview first) and purge ----

function actionPanel(spec, what, purgeOnly) {
  const out = h("div", { class: "action-result" });
  const rate = h("input", { class: "replay-rate", placeholder: "rate/s (empty: max)", size: 14 });
  const panel = h("div", { class: "panel actions" },
    h("div", { class: "row" },
      purgeOnly ? "" : h("button", { class: "primary replay-preview", onclick: () => preview() }, "Replay…"),
      h("button", { class: "danger purge-start", onclick: () => purgeAsk() }, "Purge…"),
      h("span", { class: "muted" }, what)),
    out);

  async function preview() {
    out.replaceChildren(h("p", { class: "muted" }, "previewing…"));
    let ans;
    try { ans = await api("POST", "/api/replay", { filter: spec, dry_run: true }); } catch (e) { out.replaceChildren(h("p", { class: "bad" }, e.message)); return; }
    const s = ans.summary;
    out.replaceChildren(h("p", { class: "preview-summary" }, "Dry run: would replay " + s.replayed + ", skip " + s.skipped + ", refuse " + s.refused + ". Nothing was changed."));
    for (const why of (ans.refused || [])) out.append(h("p", { class: "warn mono" }, "refused: " + why));
    for (const why of (ans.skipped || [])) out.append(h("p", { class: "muted mono" }, "skipped: " + why));
    if (ans.records.length) {
      out.append(h("table", {}, h("tr", {}, ["seq", "node type", "task id", "replays", "error"].map((c) => h("th", {}, c))),
        ans.records.map((r) => h("tr", {}, h("td", { class: "num" }, r.seq), h("td", { class: "mono" }, r.node_type), h("td", { class: "mono" }, r.task_id), h("td", { class: "num" }, r.replays), h("td", { class: "mono" }, r.error)))));
      if (s.replayed > ans.records.length) out.append(h("p", { class: "muted" }, "… and " + (s.replayed - ans.records.length) + " more."));
    }
    if (s.replayed === 0) return;
    out.append(h("div", { class: "row" }, rate,
      h("button", { class: "primary replay-run", onclick: (ev) => { ev.target.disabled = true; run(s.replayed, ans.pinned); } }, "Replay " + plural(s.replayed, "record")),
      h("button", { onclick: () => out.replaceChildren() }, "Cancel")));
  }

  // run replays the previewed selection: pinned is the filter the preview
  // pinned to the records that existed then, expected how many it showed.
  async function run(expected, pinned) {
    const body = { filter: pinned };
    const r = parseFloat(rate.value);
    if (rate.value.trim() && !(r > 0)) { toast("rate: want a positive number of records per second", true); return; }
    if (r > 0) body.rate = r;
    body.limit = expected; // no more than the preview showed, and none stored since
    let job;
    try { job = await api("POST", "/api/replay", body); } catch (e) { out.append(h("p", { class: "bad" }, e.message)); return; }
    const bar = h("div");
    const status = h("p", { class: "job-status" }, "replaying…");
    const cancel = h("button", { onclick: () => api("POST", "/api/jobs/" + job.id + "/cancel", {}).catch((e) => toast(e.message, true)) }, "Stop");
    out.append(h("div", { class: "progress" }, bar), h("div", { class: "row" }, status, cancel));
    for (;;) {
      const s = job.summary;
      const settled = s.replayed + s.duplicates + s.skipped + s.refused + s.failed;
      bar.style.width = Math.min(100, Math.round(100 * settled / Math.max(1, expected))) + "%";
      const counts = "replayed " + s.replayed + (s.duplicates ? " (+" + s.duplicates + " already replayed)" : "") + ", skipped " + s.skipped + ", refused " + s.refused + ", failed " + s.failed;
      if (job.done) {
        cancel.remove();
        status.textContent = (job.error ? "Replay stopped (" + job.error + "; run it again to continue): " : "Replay done: ") + counts + " at " + job.rate.toFixed(1) + " records/s";
        status.className = "job-status " + (job.error || s.failed + s.refused > 0 ? "bad" : "ok");
        for (const e of (s.errors || [])) out.append(h("p", { class: "bad mono" }, e));
        return;
      }
      status.textContent = counts + " of " + expected + " · " + job.rate.toFixed(1) + " records/s";
      await new Promise((res) => setTimeout(res, 400));
      try { job = await api("GET", "/api/jobs/" + job.id); } catch (e) { status.textContent = e.message; return; }
    }
  }

  async function purgeAsk() {
    out.replaceChildren(h("p", { class: "muted" }, "counting…"));
    let n, pinned;
    try {
      const ans = await api("GET", "/api/records?limit=1&" + queryOf(spec));
      n = ans.matched;
      pinned = ans.pinned; // the records counted: none stored since
    } catch (e) { out.replaceChildren(h("p", { class: "bad" }, e.message)); return; }
    if (n === 0) { out.replaceChildren(h("p", {}, "Nothing to purge.")); return; }
    out.replaceChildren(h("p", { class: "bad purge-question" }, "Delete " + plural(n, "record") + " for good? This cannot be undone."),
      h("div", { class: "row" },
        h("button", { class: "danger purge-confirm", onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            const ans = await api("POST", "/api/purge", { filter: pinned, confirm: true, expect: n });
            out.replaceChildren(h("p", { class: "ok purge-done" }, "Purged " + plural(ans.purged, "record") + "."));
          } catch (e) { out.replaceChildren(h("p", { class: "bad" }, e.message)); }
        } }, "Delete " + plural(n, "record")),
        h("button", { onclick: () => out.replaceChildren() }, "Cancel")));
  }
  return panel;
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { route(); startEvents(); });
