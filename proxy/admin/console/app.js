// The Bounceback console: a token login, then four pages over the admin API.
// Plain DOM code (no framework, no build step); text is always set as text, never as
// HTML, so nothing the API answers is interpreted as markup.
"use strict";

const KEY = "bounceback.token";
const POLL_MS = 2000;
const HISTORY = 150; // overview samples kept for the throughput chart (5 minutes)

const S = {
  token: "",
  me: null, // {name, scope}
  page: "",
  poll: false,
  history: [], // [{t, submits, receipts, carrier_submits}]
  patterns: null, // the last /v1/stats document
  message: null, // the message shown
};

// ---------------------------------------------------------------- helpers

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

const isAdmin = () => S.me && S.me.scope === "admin";
const dash = "—";
const pct = (v) => (v === null || v === undefined ? dash : `${(v * 100).toFixed(1)}%`);
const num = (v) => (v === null || v === undefined ? dash : Number(v).toLocaleString("en"));
const perSec = (v) => (v === null || v === undefined ? dash : Number(v).toFixed(1));
const secs = (v) => {
  if (v === null || v === undefined) return dash;
  if (v < 90) return `${Math.round(v)} s`;
  if (v < 5400) return `${(v / 60).toFixed(1)} min`;
  return `${(v / 3600).toFixed(1)} h`;
};
// An ISO 8601 time, or epoch seconds (as the timeline's fields carry them).
function when(iso) {
  if (!iso) return dash;
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
const words = (s) => String(s || "").replaceAll("_", " ");

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

async function api(method, path, body, { raw = false } = {}) {
  const headers = { Authorization: `Bearer ${S.token}`, Accept: "application/json, text/csv" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, "network", `the proxy did not answer (${e.message})`);
  }
  if (r.status === 401 && S.me) {
    logout("The proxy refused the token (401): log in again.");
    throw new ApiError(401, "unauthorized", "the token was refused");
  }
  if (raw && r.ok) return r;
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(r.status, err.code, err.message || `HTTP ${r.status}`);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

let toastTimer = null;
function toast(text, ok = true) {
  const t = $("#toast");
  t.textContent = `${ok ? "✔ Done:" : "✖ Refused:"} ${text}`;
  t.className = `toast show ${ok ? "ok" : "err"}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.className = "toast"), 10000);
}

function errorText(e) {
  if (e instanceof ApiError && e.status) return `${e.message} (HTTP ${e.status}${e.code ? `, ${e.code}` : ""})`;
  return e.message || String(e);
}

// A modal confirmation: resolves true when confirmed.
function confirmDialog(title, text, okLabel = "Confirm") {
  const d = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    const done = (v) => {
      $("#confirm-ok").removeEventListener("click", yes);
      $("#confirm-cancel").removeEventListener("click", no);
      d.removeEventListener("cancel", no);
      if (d.open) d.close();
      resolve(v);
    };
    const yes = () => done(true);
    const no = (ev) => {
      if (ev) ev.preventDefault();
      done(false);
    };
    $("#confirm-ok").addEventListener("click", yes);
    $("#confirm-cancel").addEventListener("click", no);
    d.addEventListener("cancel", no);
    d.showModal();
    $("#confirm-cancel").focus();
  });
}

// An admin action: confirm, call, show the result (the API's error when it refuses).
async function act(title, text, okLabel, call, describe) {
  if (!(await confirmDialog(title, text, okLabel))) return null;
  try {
    const out = await call();
    toast(describe(out), true);
    return out ?? true;
  } catch (e) {
    toast(errorText(e), false);
    return null;
  }
}

// `what`: the object, read out to screen readers after the label ("Unblock 4477…").
function adminButton(label, onclick, cls = "", what = "") {
  return h("button", {
    type: "button",
    class: `small admin-action ${cls}`,
    disabled: !isAdmin(),
    title: isAdmin() ? null : "needs an admin token",
    onclick,
  }, label, what ? h("span", { class: "sr-only" }, ` ${what}`) : "");
}

// A table from rows and columns [{key, label, fmt, cls}]; `caption` for screen readers.
function table(caption, columns, rows, { empty = "nothing to show", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted empty-note" }, empty);
  return h("table", { class: "data" },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.cls || "" }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {},
      columns.map((c, i) => {
        const v = c.fmt ? c.fmt(r[c.key], r) : r[c.key] ?? dash;
        const cell = h(i === 0 ? "th" : "td", { class: c.cls || "", ...(i === 0 ? { scope: "row" } : {}), "data-label": c.label });
        cell.append(v instanceof Node ? v : document.createTextNode(String(v)));
        return cell;
      })))));
}

// A state shown as a symbol and a word, never by colour alone.
function badge(kind, text) {
  const sym = { ok: "●", warn: "▲", bad: "✖", paused: "❚❚", info: "○" }[kind] || "○";
  return h("span", { class: `badge ${kind}` }, h("span", { "aria-hidden": "true" }, sym + " "), text);
}

const STATE_KIND = {
  delivered: "ok",
  held: "warn",
  accepted: "info",
  submitting: "info",
  submitted: "info",
  failed: "bad",
  rejected: "bad",
  expired: "bad",
  cancelled: "paused",
};

// ---------------------------------------------------------------- login

function showLogin(message) {
  stopPolling();
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#login-token").value = "";
  $("#login-token").focus();
}

async function login(token) {
  S.token = token;
  let doc;
  try {
    doc = await api("GET", "/v1/overview");
  } catch (e) {
    S.token = "";
    sessionStorage.removeItem(KEY);
    const why = e.status === 401 ? "This token is not valid for this proxy." : errorText(e);
    showLogin(why);
    return;
  }
  sessionStorage.setItem(KEY, token);
  S.me = doc.token || { name: "?", scope: "read" };
  document.body.classList.toggle("read-only", !isAdmin());
  $("#who").textContent = "";
  $("#who").append(
    h("span", { class: "sr-only" }, "Logged in as "),
    h("strong", {}, S.me.name), " ",
    badge(isAdmin() ? "ok" : "info", `${S.me.scope} scope`),
  );
  $$(".admin-action").forEach((b) => {
    b.disabled = !isAdmin();
    b.title = isAdmin() ? "" : "needs an admin token";
  });
  $("#read-only-note").hidden = isAdmin();
  $("#login").hidden = true;
  $("#app").hidden = false;
  S.history = [];
  renderOverview(doc);
  route();
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  S.token = "";
  S.me = null;
  S.patterns = null;
  showLogin(message || "Logged out.");
}

// ---------------------------------------------------------------- routing

const PAGES = ["overview", "patterns", "messages", "actions"];

function route() {
  if (!S.me) return;
  const [, name, arg] = (location.hash || "#/overview").match(/^#\/([a-z]+)\/?(.*)$/) || [];
  const page = PAGES.includes(name) ? name : "overview";
  const changed = page !== S.page;
  S.page = page;
  for (const p of PAGES) $(`#page-${p}`).hidden = p !== page;
  $$("[data-nav]").forEach((a) => {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  document.title = `${$(`#h-${page}`).textContent} · Bounceback console`;
  if (page === "overview") startPolling();
  else stopPolling();
  if (page === "patterns" && !S.patterns) loadPatterns();
  if (page === "messages" && arg) {
    $("#s-query").value = decodeURIComponent(arg);
    $("#s-kind").value = "id";
    search();
  }
  if (page === "actions" && changed) loadActions();
  if (changed) $("#main").focus({ preventScroll: true });
}

// ---------------------------------------------------------------- overview

// One polling loop at a time: a loop whose generation is over stops at its next tick.
let pollGen = 0;

function startPolling() {
  if (S.poll) return;
  S.poll = true;
  const gen = ++pollGen;
  const tick = async () => {
    if (gen !== pollGen) return;
    try {
      if (!document.hidden) renderOverview(await api("GET", "/v1/overview"));
    } catch (e) {
      $("#live").textContent = `▲ update failed: ${errorText(e)}`;
      $("#live").className = "live stale";
    }
    if (gen === pollGen) setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function stopPolling() {
  S.poll = false;
  pollGen++;
}

function kpi(key, label, value, sub) {
  return h("div", { class: "kpi", dataset: { kpi: key } },
    h("div", { class: "kpi-label" }, label),
    h("div", { class: "kpi-value" }, value),
    h("div", { class: "kpi-sub" }, sub || ""));
}

function renderOverview(doc) {
  const t = doc.throughput, o = doc.outcomes;
  S.history.push({
    t: Date.now(),
    submits: t.submits_per_second,
    receipts: t.receipts_per_second,
    carrier: t.carrier_submits_per_second,
  });
  if (S.history.length > HISTORY) S.history.shift();
  const ended = o.delivered + o.hard + o.expired + o.cancelled;
  $("#kpis").replaceChildren(
    kpi("submits", "Submits / s (senders)", perSec(t.submits_per_second), `${num(t.totals.submits)} since start`),
    kpi("receipts", "Receipts / s (carriers)", perSec(t.receipts_per_second), `${num(t.totals.receipts)} since start`),
    kpi("accepted", `Messages, last ${o.minutes} min`, num(o.accepted), `${num(ended)} ended, ${num(o.pending)} on their way`),
    kpi("delivered", "Delivered", pct(o.rates.delivered), `${num(o.delivered)} of those ended`),
    kpi("recovered", "Recovered by retry", pct(o.rates.recovered), `${num(o.recovered)} delivered after a soft bounce`),
    kpi("hard", "Hard bounces", pct(o.rates.hard), num(o.hard)),
    kpi("expired", "Expired", pct(o.rates.expired), num(o.expired)),
    kpi("held", "Held now", num(doc.held.total), "waiting for their next attempt"),
  );
  const pts = (k) => S.history.filter((x) => x[k] !== null && x[k] !== undefined).map((x) => [x.t, x[k]]);
  Charts.line($("#chart-throughput"), [
    { name: "submits from senders / s", points: pts("submits") },
    { name: "submissions to carriers / s", points: pts("carrier") },
    { name: "carrier receipts / s", points: pts("receipts") },
  ], {
    height: 200,
    label: `Throughput over the last minutes: ${perSec(t.submits_per_second)} submits and ${perSec(t.receipts_per_second)} receipts per second now`,
    xFormat: (x) => new Date(x).toISOString().slice(11, 19),
    empty: "collecting: the rates appear after the second update",
  });

  const reasons = Object.entries(doc.held.by_reason).sort((a, b) => b[1] - a[1]);
  const top = Math.max(1, ...reasons.map((r) => r[1]));
  $("#held-reasons").replaceChildren(reasons.length
    ? h("table", { class: "data bars" },
      h("caption", { class: "sr-only" }, "Held messages by reason"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Reason"), h("th", { scope: "col", class: "n" }, "Held"), h("th", { scope: "col", class: "barcell" }, h("span", { class: "sr-only" }, "share")))),
      h("tbody", {}, reasons.map(([r, n]) => {
        const bar = h("span", { class: "hbar" });
        bar.style.width = `${(n / top) * 100}%`;
        return h("tr", {}, h("th", { scope: "row" }, words(r)), h("td", { class: "n" }, num(n)), h("td", { class: "barcell", "aria-hidden": "true" }, bar));
      })))
    : h("p", { class: "muted empty-note" }, "Nothing is held."));

  $("#carriers").replaceChildren(carrierTable(doc.carriers, true));
  renderHealth(doc);
  const live = $("#live");
  live.className = "live";
  live.textContent = `● live: updated ${new Date().toISOString().slice(11, 19)} UTC, every ${POLL_MS / 1000} s; rates over the last ${Math.round(t.window_seconds)} s`;
}

function carrierState(c) {
  if (c.paused) return badge("paused", "paused");
  if (c.state === "up" || (c.bound && c.healthy)) return badge("ok", "up");
  if (c.state === "flapping" || (c.bound && !c.healthy)) return badge("warn", "flapping");
  return badge("bad", "down");
}

function carrierTable(carriers, live) {
  const cols = [
    { key: "name", label: "Carrier" },
    { key: "state", label: "State", fmt: (_, c) => carrierState(c) },
  ];
  if (live) {
    cols.push(
      { key: "submits_per_second", label: "Submits / s", fmt: perSec, cls: "n" },
      { key: "bounce_rate", label: "Bounce rate", fmt: pct, cls: "n" },
      { key: "soft_rate", label: "Soft", fmt: pct, cls: "n" },
      { key: "throttle_rate", label: "Throttled", fmt: pct, cls: "n" },
      { key: "totals", label: "Submitted (since start)", fmt: (v) => num(v.submits), cls: "n" },
    );
  } else {
    cols.push(
      { key: "binds", label: "Binds", cls: "n" },
      { key: "flaps", label: "Flaps", cls: "n" },
      { key: "recent", label: "Messages (15 min)", fmt: (v) => num(v.messages), cls: "n" },
    );
  }
  cols.push({
    key: "paused",
    label: "Action",
    fmt: (paused, c) => paused
      ? adminButton("Resume", () => carrierSwitch(c.name, false), "", c.name)
      : adminButton("Pause", () => carrierSwitch(c.name, true), "danger", c.name),
  });
  return table("Carriers", cols, carriers, { empty: "No carrier configured." });
}

async function carrierSwitch(name, pause) {
  const out = await act(
    pause ? `Pause carrier ${name}?` : `Resume carrier ${name}?`,
    pause
      ? `Nothing new is sent to ${name}: its route's other carriers take its messages, or they wait (held as not_bound). Receipts still come in.`
      : `${name} takes submissions again; what waited for it goes now.`,
    pause ? "Pause" : "Resume",
    () => api("POST", `/v1/carriers/${encodeURIComponent(name)}/${pause ? "pause" : "resume"}`),
    (c) => `carrier ${c.name} is ${c.paused ? "paused" : "resumed"}`,
  );
  if (out) {
    if (S.page === "actions") loadCarrierActions();
    else renderOverview(await api("GET", "/v1/overview"));
  }
}

function renderHealth(doc) {
  const s = doc.store, f = doc.feed;
  const store = h("div", { class: "health-item", dataset: { health: "store" } },
    h("h3", {}, `Store (${s.kind})`),
    s.writable ? badge("ok", "writable") : badge("bad", `cannot write: ${s.fault}`),
    h("p", {}, "Readiness: ", s.ready ? badge("ok", s.readiness) : badge("bad", s.readiness || "unknown")));
  let feedBody;
  if (!f.configured) feedBody = [badge("info", "no [feed] configured")];
  else if (f.connected === undefined) feedBody = [badge("info", "starting")];
  else {
    feedBody = [
      f.connected ? badge("ok", "connected to the broker") : badge("bad", "not connected: events wait in the outbox"),
      h("p", {}, `Outbox backlog: ${num(f.backlog)} events`, f.full ? " " : "", f.full ? badge("bad", "full: new events are dropped") : ""),
    ];
  }
  const feed = h("div", { class: "health-item", dataset: { health: "feed" } }, h("h3", {}, "MQTT feed"), ...feedBody);
  $("#health").replaceChildren(store, feed);
}

// ---------------------------------------------------------------- bounce patterns

const COUNT_COLS = [
  { key: "sent", label: "Sent", fmt: num, cls: "n" },
  { key: "delivered", label: "Delivered", fmt: num, cls: "n" },
  { key: "recovered", label: "Recovered", fmt: num, cls: "n" },
  { key: "soft_bounced", label: "Soft-bounced", fmt: num, cls: "n" },
  { key: "hard", label: "Hard", fmt: num, cls: "n" },
  { key: "expired", label: "Expired", fmt: num, cls: "n" },
  { key: "pending", label: "Pending", fmt: num, cls: "n" },
  { key: "delivery_rate", label: "Delivery %", fmt: pct, cls: "n" },
  { key: "hard_rate", label: "Hard %", fmt: pct, cls: "n" },
  { key: "recovery_rate", label: "Recovery %", fmt: pct, cls: "n" },
  { key: "submissions_per_message", label: "Submissions / msg", fmt: (v) => (v == null ? dash : v.toFixed(2)), cls: "n" },
];
const joinList = (v) => (Array.isArray(v) ? v.join(", ") : v && typeof v === "object" ? Object.entries(v).map(([k, n]) => `${words(k)} ${n}`).join(", ") : v ?? dash);

// The tables of the report; a server without a key simply has no such table.
const SECTIONS = [
  { key: "by_carrier", section: "by_carrier", title: "By carrier", cols: [{ key: "carrier", label: "Carrier" }, ...COUNT_COLS] },
  { key: "by_account", section: "by_account", title: "By account", cols: [{ key: "account", label: "Account" }, ...COUNT_COLS] },
  {
    key: "by_reason", section: "by_reason", title: "By reason: recovery and time to recover", cols: [
      { key: "reason", label: "Reason", fmt: words },
      { key: "kind", label: "Kind", fmt: (v) => badge(v === "hard" ? "bad" : v === "soft" ? "warn" : "info", v || dash) },
      { key: "bounces", label: "Bounces", fmt: num, cls: "n" },
      { key: "messages", label: "Messages", fmt: num, cls: "n" },
      { key: "recovered", label: "Recovered", fmt: num, cls: "n" },
      { key: "recovery_rate", label: "Recovery %", fmt: pct, cls: "n" },
      { key: "recover_median_s", label: "Time to recover (median)", fmt: secs, cls: "n" },
      { key: "recover_p90_s", label: "(90th pct)", fmt: secs, cls: "n" },
    ],
  },
  { key: "by_country", section: "by_country", title: "By destination country", cols: [{ key: "country", label: "Country" }, ...COUNT_COLS] },
  { key: "by_operator", section: "by_operator", title: "By operator", cols: [{ key: "country", label: "Country" }, { key: "operator", label: "Operator" }, ...COUNT_COLS] },
  { key: "by_hour", section: "by_hour", title: "By hour of day", chart: true, cols: [{ key: "hour", label: "Hour", fmt: (v) => `${String(v).padStart(2, "0")}:00` }, ...COUNT_COLS] },
  {
    key: "soft_bouncing_numbers", section: "soft_bouncing_numbers", title: "Repeat soft-bouncers", cols: [
      { key: "number", label: "Number" },
      { key: "country", label: "Country" },
      { key: "operator", label: "Operator" },
      { key: "soft_bounces", label: "Soft bounces", fmt: num, cls: "n" },
      { key: "reasons", label: "Reasons", fmt: joinList },
      { key: "last_at", label: "Last", fmt: when },
    ],
  },
  {
    key: "numbers_to_remove", section: "numbers_to_remove", title: "Hard-bounced numbers to remove", cols: [
      { key: "number", label: "Number" },
      { key: "country", label: "Country" },
      { key: "operator", label: "Operator" },
      { key: "reason", label: "Reason", fmt: words },
      { key: "sources", label: "From", fmt: joinList },
      { key: "hard_bounces", label: "Hard bounces", fmt: num, cls: "n" },
      { key: "last_at", label: "Last", fmt: when },
      { key: "suppressed_until", label: "Blocked until", fmt: when },
    ],
  },
];

function patternsRange() {
  const r = $("#p-range").value;
  let since, until;
  if (r === "custom") {
    const a = $("#p-since").value, b = $("#p-until").value;
    until = b ? new Date(`${b}Z`) : new Date();
    since = a ? new Date(`${a}Z`) : new Date(until.getTime() - 86400e3);
  } else {
    until = new Date();
    since = new Date(until.getTime() - Number(r) * 1000);
  }
  let bucket = $("#p-bucket").value;
  const span = (until - since) / 1000;
  if (bucket === "auto") bucket = span <= 3 * 3600 ? "minute" : span <= 4 * 86400 ? "hour" : "day";
  return { since: since.toISOString(), until: until.toISOString(), bucket };
}

async function loadPatterns() {
  const { since, until, bucket } = patternsRange();
  const params = { since, until, bucket, hours: $("#p-hours").value, top: 50 };
  $("#patterns-status").textContent = "Loading…";
  let doc;
  try {
    doc = await api("GET", `/v1/stats${query(params)}`);
  } catch (e) {
    $("#patterns-status").textContent = `✖ ${errorText(e)}`;
    return;
  }
  S.patterns = { doc, params };
  $("#patterns-status").textContent = `Messages accepted from ${when(doc.since)} to ${when(doc.until)}; hours of day in ${doc.hours === "local" ? "the destination's local time" : "UTC"}.`;
  const tot = doc.totals || {};
  $("#patterns-totals").replaceChildren(
    kpi("sent", "Sent", num(tot.sent)),
    kpi("delivered", "Delivered", pct(tot.delivery_rate), num(tot.delivered)),
    kpi("recovered", "Recovered by retry", num(tot.recovered), `${pct(tot.recovery_rate)} of ${num(tot.soft_bounced)} soft-bounced`),
    kpi("hard", "Hard bounces", pct(tot.hard_rate), num(tot.hard)),
    kpi("expired", "Expired", num(tot.expired)),
    kpi("spm", "Submissions / message", tot.submissions_per_message == null ? dash : tot.submissions_per_message.toFixed(2)),
  );
  renderTimeline(doc, bucket);
  const out = [];
  for (const sec of SECTIONS) {
    if (!Array.isArray(doc[sec.key])) continue;
    const rows = doc[sec.key];
    // Hours without a message are in the chart, not in the table.
    const shown = sec.key === "by_hour" ? rows.filter((r) => r.sent) : rows;
    const card = h("section", { class: "card", "aria-labelledby": `h-${sec.key}`, dataset: { section: sec.key } },
      h("div", { class: "card-head" },
        h("h2", { id: `h-${sec.key}` }, sec.title, h("span", { class: "muted count" }, ` (${shown.length})`)),
        h("button", { type: "button", class: "small", onclick: () => downloadCsv(sec) }, `Download CSV`, h("span", { class: "sr-only" }, ` of ${sec.title}`))));
    if (sec.chart) {
      const box = h("div", { class: "chartbox" });
      card.append(box);
      requestAnimationFrame(() => Charts.bars(box, rows.map((r) => String(r.hour).padStart(2, "0")), outcomeSeries(rows), {
        height: 180, label: `Messages by hour of day: ${sec.title}`, maxTicks: 12,
      }));
    }
    card.append(collapsible(sec.title, sec.cols, shown));
    out.push(card);
  }
  $("#patterns-tables").replaceChildren(...out);
}

// A table showing its first rows, with a button for the rest.
function collapsible(title, cols, rows, first = window.innerWidth < 640 ? 5 : 15) {
  const wrap = h("div", { class: "tablewrap" });
  const draw = (all) => {
    const more = !all && rows.length > first;
    wrap.replaceChildren(
      table(title, cols, more ? rows.slice(0, first) : rows, { empty: "None in this range." }),
      more ? h("button", { type: "button", class: "small more", onclick: () => draw(true) }, `Show all ${rows.length}`) : "",
    );
  };
  draw(false);
  return wrap;
}

function outcomeSeries(rows) {
  return [
    { name: "delivered at the first attempt", values: rows.map((r) => (r.delivered || 0) - (r.recovered || 0)) },
    { name: "recovered by retry", values: rows.map((r) => r.recovered || 0) },
    { name: "hard bounce", values: rows.map((r) => r.hard || 0) },
    { name: "expired", values: rows.map((r) => r.expired || 0) },
    { name: "pending or cancelled", values: rows.map((r) => (r.pending || 0) + (r.cancelled || 0)) },
  ];
}

function renderTimeline(doc, bucket) {
  const box = $("#chart-timeline");
  const tl = doc.timeline;
  if (!tl || !Array.isArray(tl.items)) {
    box.replaceChildren(h("p", { class: "muted empty-note" }, "This proxy's report has no timeline (its /v1/stats answers no \"timeline\"): see the tables by hour of day below."));
    return;
  }
  const b = tl.bucket || bucket;
  const fmt = (iso) => {
    const s = new Date(iso).toISOString();
    return b === "day" ? s.slice(5, 10) : b === "hour" ? `${s.slice(5, 10)} ${s.slice(11, 13)}h` : s.slice(11, 16);
  };
  Charts.bars(box, tl.items.map((x) => fmt(x.start)), outcomeSeries(tl.items), {
    height: 220,
    label: `Messages per ${b} by outcome, ${tl.items.length} ${b}s`
      + (tl.requested && tl.requested !== b ? ` (per ${tl.requested} would be too many bars)` : "")
      + (tl.clipped ? " (the latest part of the range only)" : ""),
    maxTicks: 8,
  });
}

function csvText(cols, rows) {
  const esc = (v) => {
    const s = v === null || v === undefined ? "" : typeof v === "object" ? joinList(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [cols.map((c) => c.key).join(","), ...rows.map((r) => cols.map((c) => esc(r[c.key])).join(","))].join("\r\n") + "\r\n";
}

function saveFile(name, blob) {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function downloadCsv(sec) {
  const { doc, params } = S.patterns;
  const name = `bounceback-${sec.section}-${params.since.slice(0, 16).replaceAll(":", "")}.csv`;
  // The server's own CSV when it has one for this table; else the same rows as CSV here.
  try {
    const r = await api("GET", `/v1/stats${query({ ...params, format: "csv", section: sec.section })}`, undefined, { raw: true });
    if ((r.headers.get("Content-Type") || "").includes("text/csv")) {
      saveFile(name, await r.blob());
      return;
    }
  } catch (e) {
    if (e.status === 401) return;
  }
  saveFile(name, new Blob([csvText(sec.cols, doc[sec.key])], { type: "text/csv" }));
}

// ---------------------------------------------------------------- messages

const EVENT_KIND = {
  accepted: "info",
  submitted: "info",
  resubmitted: "info",
  soft_bounce: "warn",
  carrier_rejected: "bad",
  delivered: "ok",
  hard_bounce: "bad",
  expired: "bad",
  cancelled: "paused",
  suppressed: "bad",
  number_flagged: "warn",
};

async function search() {
  const q = $("#s-query").value.trim();
  if (!q) return;
  let kind = $("#s-kind").value;
  const status = $("#search-status");
  status.textContent = "Searching…";
  $("#search-results").replaceChildren();
  $("#message-detail").hidden = true;
  if (kind === "auto") kind = /^[0-9A-Fa-f]{16}$/.test(q) ? "id" : /^\+?[0-9]{6,21}$/.test(q) ? "destination" : "carrier_id";
  try {
    let items;
    if (kind === "id") {
      items = [await api("GET", `/v1/messages/${encodeURIComponent(q.toUpperCase())}`)];
    } else {
      items = (await api("GET", `/v1/messages${query({ [kind]: q, limit: 100 })}`)).items;
      if (!items.length && $("#s-kind").value === "auto" && kind === "destination") {
        kind = "carrier_id";
        items = (await api("GET", `/v1/messages${query({ carrier_id: q })}`)).items;
      }
    }
    const by = { id: "our id", carrier_id: "carrier id", destination: "destination" }[kind];
    status.textContent = `${items.length} message${items.length === 1 ? "" : "s"} found by ${by} ${q}.`;
    renderResults(items);
    if (items.length === 1) showMessage(items[0]);
  } catch (e) {
    status.textContent = e.status === 404 ? `No message ${q}.` : `✖ ${errorText(e)}`;
  }
}

function renderResults(items) {
  $("#search-results").replaceChildren(table("Messages found", [
    { key: "id", label: "Id", fmt: (v, m) => h("button", { type: "button", class: "link mono", onclick: () => showMessage(m) }, v) },
    { key: "destination", label: "Destination" },
    { key: "state", label: "State", fmt: (v) => badge(STATE_KIND[v] || "info", v) },
    { key: "attempts", label: "Attempts", cls: "n" },
    { key: "carrier", label: "Carrier" },
    { key: "created_at", label: "Accepted", fmt: when, cls: "nowrap" },
  ], items, { empty: "No message." }));
}

function showMessage(m) {
  S.message = m;
  const box = $("#message-detail");
  box.hidden = false;
  $("#h-detail").textContent = `Message ${m.id}`;
  const v = m.verdict;
  const pairs = [
    ["State", badge(STATE_KIND[m.state] || "info", m.state)],
    ["Account", m.account],
    ["From → to", `${m.source} → ${m.destination}`],
    ["Carrier", m.carrier || dash],
    ["Carrier's id", m.carrier_message_id || dash],
    ["Attempts", String(m.attempts)],
    ["Verdict", v ? `${v.kind} · ${words(v.reason)}${v.code ? ` · ${v.code}` : ""}` : dash],
    ["Accepted", when(m.created_at)],
    ["Next attempt", when(m.next_attempt_at)],
    ["Deadline", when(m.deadline)],
    ["Final receipt", m.final_stat ? `${m.final_stat}${m.final_err ? ` err:${m.final_err}` : ""}` : dash],
  ];
  $("#message-summary").replaceChildren(...pairs.flatMap(([k, val]) => [h("dt", {}, k), h("dd", {}, val)]));
  const acts = [];
  if (m.state === "held") acts.push(adminButton("Retry now", () => messageAction(m, "retry")));
  if (!m.final) acts.push(adminButton("Cancel message", () => messageAction(m, "cancel"), "danger"));
  $("#message-actions").replaceChildren(...acts);
  $("#message-timeline").replaceChildren(...(m.timeline || []).map((s) => {
    const rest = Object.entries(s).filter(([k]) => k !== "at" && k !== "event");
    return h("li", { class: `step ${EVENT_KIND[s.event] || "info"}` },
      h("div", { class: "step-head" }, badge(EVENT_KIND[s.event] || "info", words(s.event)), h("time", { datetime: s.at }, when(s.at))),
      rest.length ? h("ul", { class: "fields" }, rest.map(([k, val]) => h("li", {}, h("span", { class: "k" }, `${words(k)}: `), k.endsWith("_at") ? when(val) : typeof val === "object" ? JSON.stringify(val) : String(val)))) : null);
  }));
}

async function messageAction(m, what) {
  const retry = what === "retry";
  const out = await act(
    retry ? `Retry ${m.id} now?` : `Cancel ${m.id}?`,
    retry ? "Its next attempt starts now instead of at its scheduled time." : "The message ends as cancelled; its sender gets the final receipt it asked for (DELETED).",
    retry ? "Retry now" : "Cancel message",
    () => api("POST", retry ? `/v1/held/${m.id}/retry` : `/v1/messages/${m.id}/cancel`),
    (x) => `message ${x.id} is ${x.state}`,
  );
  if (out && out.id) showMessage(out);
}

// ---------------------------------------------------------------- actions

function loadActions() {
  loadSuppression();
  loadHeld();
  loadCarrierActions();
}

async function loadSuppression() {
  try {
    const page = await api("GET", `/v1/suppression${query({ prefix: $("#sup-prefix").value.trim(), limit: 100 })}`);
    $("#suppression").replaceChildren(table("Suppression list", [
      { key: "number", label: "Number", cls: "mono" },
      { key: "reason", label: "Reason" },
      { key: "expires_at", label: "Until", fmt: when, cls: "nowrap" },
      { key: "number", label: "Action", fmt: (n) => adminButton("Unblock", () => unblock(n), "", n) },
    ], page.items, { empty: "No number is blocked." }));
  } catch (e) {
    $("#suppression").replaceChildren(h("p", { class: "error" }, errorText(e)));
  }
}

async function block() {
  const number = $("#b-number").value.trim();
  if (!/^\+?[0-9]{3,21}$/.test(number)) {
    toast("a number is 3 to 21 digits, with an optional leading +", false);
    $("#b-number").focus();
    return;
  }
  const body = { number, reason: $("#b-reason").value.trim() || "blocked by an operator" };
  const hours = parseFloat($("#b-hours").value);
  if (hours > 0) body.expires_in = hours * 3600;
  const out = await act(
    `Block ${number}?`,
    `Every submit_sm to ${number} is refused (ESME_RINVDSTADR) from the next one on, until it is unblocked${hours > 0 ? ` or ${hours} h have passed` : ""}.`,
    "Block",
    () => api("POST", "/v1/suppression", body),
    (s) => `${s.number} is blocked until ${when(s.expires_at)}`,
  );
  if (out) loadSuppression();
}

async function unblock(n) {
  const number = n || $("#b-number").value.trim();
  if (!number) {
    toast("which number? type it in the Number field", false);
    $("#b-number").focus();
    return;
  }
  const out = await act(
    `Unblock ${number}?`,
    `Submits to ${number} are taken again from the next one on.`,
    "Unblock",
    () => api("DELETE", `/v1/suppression/${encodeURIComponent(number)}`),
    () => `${number} is unblocked`,
  );
  if (out) loadSuppression();
}

function heldFilters() {
  return { account: $("#h-account").value.trim(), carrier: $("#h-carrier").value.trim(), reason: $("#h-reason").value.trim() };
}

async function loadHeld() {
  try {
    const page = await api("GET", `/v1/held${query({ ...heldFilters(), limit: 100 })}`);
    $("#held").replaceChildren(table("Held messages", [
      { key: "id", label: "Id", fmt: (v) => h("a", { href: `#/messages/${v}`, class: "mono" }, v) },
      { key: "destination", label: "Destination" },
      { key: "verdict", label: "Reason", fmt: (v) => (v ? words(v.reason) : dash) },
      { key: "attempts", label: "Attempts", cls: "n" },
      { key: "next_attempt_at", label: "Next attempt", fmt: when, cls: "nowrap" },
      { key: "id", label: "Action", fmt: (v, m) => h("span", { class: "actions-row" }, adminButton("Retry", () => messageAction(m, "retry").then(loadHeld), "", m.id), adminButton("Cancel", () => messageAction(m, "cancel").then(loadHeld), "danger", m.id)) },
    ], page.items, { empty: "Nothing is held (with these filters)." }),
    page.next ? h("p", { class: "muted" }, "The first 100 are shown; the actions below take every match.") : "");
  } catch (e) {
    $("#held").replaceChildren(h("p", { class: "error" }, errorText(e)));
  }
}

async function allHeld() {
  const ids = [];
  let cursor = "";
  for (let i = 0; i < 50; i++) {
    const page = await api("GET", `/v1/held${query({ ...heldFilters(), limit: 500, cursor })}`);
    ids.push(...page.items.map((m) => m.id));
    if (!page.next) break;
    cursor = page.next;
  }
  return ids;
}

async function bulk(retry) {
  let ids;
  try {
    ids = await allHeld();
  } catch (e) {
    toast(errorText(e), false);
    return;
  }
  const f = heldFilters();
  const desc = Object.entries(f).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "no filter";
  if (!ids.length) {
    toast(`no held message matches (${desc})`, false);
    return;
  }
  await act(
    `${retry ? "Retry" : "Cancel"} ${ids.length} held message${ids.length === 1 ? "" : "s"}?`,
    `Every held message matching ${desc}: ${retry ? "their next attempt starts now" : "they end as cancelled and their senders get DELETED receipts"}.`,
    retry ? "Retry all" : "Cancel all",
    async () => {
      let ok = 0;
      const failed = [];
      for (const id of ids) {
        try {
          await api("POST", retry ? `/v1/held/${id}/retry` : `/v1/messages/${id}/cancel`);
          ok++;
        } catch (e) {
          if (e.status === 403) throw e;
          failed.push(`${id}: ${e.message}`);
        }
      }
      return { ok, failed };
    },
    (r) => `${retry ? "retried" : "cancelled"} ${r.ok} of ${ids.length}${r.failed.length ? `; ${r.failed.length} were not (${r.failed.slice(0, 3).join("; ")})` : ""}`,
  );
  loadHeld();
}

async function loadCarrierActions() {
  try {
    const page = await api("GET", "/v1/carriers");
    $("#carrier-actions").replaceChildren(carrierTable(page.items, false));
  } catch (e) {
    $("#carrier-actions").replaceChildren(h("p", { class: "error" }, errorText(e)));
  }
}

// ---------------------------------------------------------------- wiring

// A form whose submit runs `fn` in the page instead of reloading it.
function onSubmit(selector, fn) {
  $(selector).addEventListener("submit", (ev) => {
    ev.preventDefault();
    fn();
  });
}

function wire() {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#login-token").value.trim();
    if (!t) {
      $("#login-error").textContent = "Type a token.";
      return;
    }
    login(t);
  });
  $("#logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", route);
  onSubmit("#patterns-form", loadPatterns);
  $("#p-range").addEventListener("change", () => {
    const custom = $("#p-range").value === "custom";
    $$(".field.custom").forEach((f) => (f.hidden = !custom));
    if (custom && !$("#p-since").value) {
      const now = new Date();
      $("#p-until").value = now.toISOString().slice(0, 16);
      $("#p-since").value = new Date(now - 86400e3).toISOString().slice(0, 16);
    }
  });
  onSubmit("#search-form", search);
  onSubmit("#block-form", block);
  $("#unblock-button").addEventListener("click", () => unblock());
  onSubmit("#suppression-form", loadSuppression);
  onSubmit("#held-form", loadHeld);
  $("#retry-all").addEventListener("click", () => bulk(true));
  $("#cancel-all").addEventListener("click", () => bulk(false));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.page === "overview" && S.me) {
      stopPolling();
      startPolling();
    }
  });
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => {
      if (S.page === "patterns" && S.patterns) loadPatterns();
    }, 300);
  });
}

wire();
const saved = sessionStorage.getItem(KEY);
if (saved) login(saved);
else showLogin("");
