// mesh console: shared helpers (elements, API calls, formatting), the tabs, and the one
// EventSource on /api/events that the tabs listen to. Talks only to its own origin.
"use strict";

const Console = (() => {
  // An element with attributes and children (strings become text nodes: nothing a peer
  // announces is ever parsed as HTML).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // A table row whose cells carry their column's name (shown as labels at phone width).
  function row(table, cells, attrs) {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
    return el("tr", attrs, cells.map((c, i) => el("td", { "data-label": heads[i] || null }, c)));
  }

  function fill(table, rows, empty) {
    const body = table.querySelector("tbody");
    const cols = table.querySelectorAll("thead th").length;
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: cols, class: "empty" }, empty))]));
  }

  // GET or POST JSON; throws an Error with the API's message on a non-2xx answer.
  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const resp = await fetch(path, init);
    const text = await resp.text();
    let doc = null;
    try { doc = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const msg = (doc && doc.error && doc.error.message) || text || resp.statusText;
      throw new Error(`${resp.status}: ${msg}`);
    }
    return doc;
  }

  function bytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KB", "MB", "GB", "TB"];
    const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
    return `${(n / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function count(n) {
    if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
    if (n >= 1e6) return `${Math.round(n / 1e6)}M`;
    return String(n);
  }

  const short = (id) => (id || "").slice(0, 10);

  // Events: one EventSource for every tab. `on(name, fn)` gets each event's parsed data.
  const listeners = {};
  function on(name, fn) { (listeners[name] = listeners[name] || []).push(fn); }
  function emit(name, data) { for (const fn of listeners[name] || []) fn(data); }
  const EVENTS = ["status", "peer_joined", "peer_left", "model_added", "model_removed",
    "path_changed", "download", "lagged"];
  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource("/api/events");
    source.onopen = () => { live.textContent = "live"; live.className = "pill live"; };
    source.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill down"; };
    for (const name of EVENTS) {
      source.addEventListener(name, (ev) => {
        let data = null;
        try { data = JSON.parse(ev.data); } catch (_) { return; }
        emit(name, data);
        emit("*", { name, data });
      });
    }
  }

  // Tabs: WAI-ARIA tabs with arrow keys, Home and End; the URL hash keeps the choice.
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function select(name, focus) {
    for (const t of tabs) {
      const on_ = t.dataset.tab === name;
      t.setAttribute("aria-selected", on_);
      t.tabIndex = on_ ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on_;
      if (on_ && focus) t.focus();
    }
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    emit("tab", name);
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => select(t.dataset.tab));
    t.addEventListener("keydown", (ev) => {
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      select(tabs[(to + tabs.length) % tabs.length].dataset.tab, true);
    });
  });
  const current = () => (tabs.find((t) => t.getAttribute("aria-selected") === "true") || {}).dataset?.tab;

  const named = (hash) => { const n = hash.slice(1); return tabs.some((t) => t.dataset.tab === n) ? n : null; };
  // Links to #mesh, #models, … and the browser's back and forward select tabs too.
  window.addEventListener("hashchange", () => { const n = named(location.hash); if (n) select(n); });

  function start() {
    select(named(location.hash) || "mesh");
    connect();
  }

  return { el, row, fill, api, bytes, count, short, on, current, start };
})();

// Every tab's script has run once the page has loaded: select a tab and connect.
window.addEventListener("DOMContentLoaded", () => Console.start());
