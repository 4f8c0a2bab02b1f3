// Models tab: the mesh's models with their replicas and load (GET /api/models), and the
// catalog with fits / installed and a download button (GET /api/catalog,
// POST /api/catalog/download); download progress arrives as `download` events.
"use strict";

(() => {
  const { el, row, fill, api, bytes, count, on } = Console;
  const meshTable = document.getElementById("mesh-models");
  const catalogTable = document.getElementById("catalog");
  const filter = document.getElementById("catalog-filter");
  const fitsOnly = document.getElementById("catalog-fits");
  const room = document.getElementById("catalog-room");
  const REFRESH_MS = 3000;
  let catalog = [];
  const progress = {}; // model → latest download event

  function load(m) {
    return el("span", {}, el("meter", { min: 0, max: m.slots_total || 1, value: m.slots_busy,
      title: `${m.slots_busy} of ${m.slots_total} slots busy` }), ` ${m.slots_busy}/${m.slots_total} busy`);
  }

  async function refreshMesh() {
    try {
      const doc = await api("/api/models");
      fill(meshTable, doc.models.map((m) => row(meshTable, [
        el("strong", {}, m.name),
        m.replicas.map((r) => el("div", {}, r.name, r.this_node ? el("span", { class: "badge" }, "this node") : null,
          el("span", { class: "muted" }, ` ${r.slots_total - r.slots_busy}/${r.slots_total} free, ctx ${r.ctx}`))),
        load(m),
        String(m.queue_depth),
      ], { "data-model": m.name })), "no model is served in the mesh yet");
    } catch (e) {
      fill(meshTable, [], `cannot read the models: ${e.message}`);
    }
  }

  function action(m) {
    const p = progress[m.name] || m.downloading;
    if (p && (p.stage === "started" || p.stage === "progress")) {
      const pct = p.total ? Math.floor((100 * p.bytes) / p.total) : null;
      return el("span", { class: "downloading" },
        el("progress", { max: p.total || 1, value: p.total ? p.bytes : null, "aria-label": `downloading ${m.name}` }),
        ` ${bytes(p.bytes)}${p.total ? ` / ${bytes(p.total)} (${pct}%)` : ""}`);
    }
    if (m.installed) return el("span", { class: "ok" }, "installed");
    const failed = p && p.stage === "failed" ? el("div", { class: "bad" }, p.error || "failed") : null;
    return [el("button", { type: "button", class: "secondary", "data-download": m.name,
      onclick: () => start(m.name) }, "Download"), failed];
  }

  function renderCatalog() {
    const words = filter.value.trim().toLowerCase();
    const rows = catalog
      .filter((m) => !fitsOnly.checked || m.fits)
      .filter((m) => !words || `${m.name} ${m.family} ${m.quant}`.toLowerCase().includes(words))
      .map((m) => row(catalogTable, [
        el("strong", {}, m.name),
        count(m.params),
        m.quant,
        (m.approx_size ? "~" : "") + bytes(m.size),
        m.fits ? el("span", { class: "ok" }, "yes") : el("span", { class: "muted", title: `needs ${bytes(m.need_bytes)}` }, "no"),
        m.installed ? "yes" : "—",
        action(m),
      ], { "data-catalog": m.name }));
    fill(catalogTable, rows, "no catalog model matches");
  }

  async function refreshCatalog() {
    try {
      const doc = await api("/api/catalog");
      catalog = doc.models;
      room.textContent = `room for models here: ${bytes(doc.available_bytes)}`;
      renderCatalog();
    } catch (e) {
      fill(catalogTable, [], `cannot read the catalog: ${e.message}`);
    }
  }

  async function start(name) {
    progress[name] = { model: name, stage: "started", bytes: 0, total: 0 };
    renderCatalog();
    try {
      await api("/api/catalog/download", { model: name });
    } catch (e) {
      progress[name] = { model: name, stage: "failed", error: e.message };
      renderCatalog();
    }
  }

  on("download", (ev) => {
    progress[ev.model] = ev;
    if (ev.stage === "done") { delete progress[ev.model]; refreshCatalog(); } else renderCatalog();
  });
  filter.addEventListener("input", renderCatalog);
  fitsOnly.addEventListener("change", renderCatalog);
  for (const name of ["status", "peer_joined", "peer_left", "model_added", "model_removed", "lagged"]) {
    on(name, () => { if (Console.current() === "models") refreshMesh(); });
  }
  setInterval(() => { if (!document.hidden && Console.current() === "models") refreshMesh(); }, REFRESH_MS);
  on("tab", (t) => { if (t === "models") { refreshMesh(); refreshCatalog(); } });
})();
