// Mesh tab: every node of the mesh (this one highlighted) from GET /api/nodes, redrawn on each
// mesh event of /api/events and every few seconds for the load figures (slots, RTT).
"use strict";

(() => {
  const { el, row, fill, api, short, on } = Console;
  const table = document.getElementById("nodes");
  const summary = document.getElementById("mesh-summary");
  const REFRESH_MS = 3000;
  let status = null;

  function path(n) {
    if (n.this_node) return "—";
    const cls = n.connection === "direct" ? "ok" : n.connection === "relay" ? "warn" : "muted";
    return el("span", { class: cls }, n.connection || "none");
  }

  function render(nodes) {
    fill(table, nodes.map((n) => row(table, [
      [el("strong", {}, n.name || "?"), n.this_node ? el("span", { class: "badge" }, "this node") : null,
        el("div", { class: "mono muted", title: n.node_id }, short(n.node_id))],
      n.role,
      n.region || "—",
      n.models.length ? n.models.map((m) => el("div", {}, m.name)) : el("span", { class: "muted" }, "none (client)"),
      n.slots_total ? `${n.slots_busy}/${n.slots_total}` + (n.queue_depth ? ` · ${n.queue_depth} queued` : "") : "—",
      path(n),
      n.rtt_ms == null ? "—" : `${n.rtt_ms.toFixed(1)} ms`,
    ], { "data-node-id": n.node_id, class: n.this_node ? "mine" : null })), "no nodes");
    const peers = nodes.length - 1;
    const parts = [];
    if (status && status.mesh_id) {
      parts.push(`mesh ${short(status.mesh_id)} (${status.mesh_public ? "public" : "private"})`);
    } else {
      parts.push("no mesh: this node runs alone");
    }
    parts.push(`${nodes.length} node${nodes.length === 1 ? "" : "s"} (${peers} peer${peers === 1 ? "" : "s"})`);
    if (status) parts.push(`version ${status.version}`);
    summary.textContent = parts.join(" · ");
  }

  let pending = null;
  async function refresh() {
    if (pending) return pending;
    pending = (async () => {
      try { render((await api("/api/nodes")).nodes); }
      catch (e) { summary.textContent = `cannot read the nodes: ${e.message}`; }
      finally { pending = null; }
    })();
    return pending;
  }

  on("status", (s) => { status = s; refresh(); });
  on("peer_left", (ev) => {
    // Drop the row at once; the refresh that follows confirms it.
    const gone = table.querySelector(`tr[data-node-id="${CSS.escape(ev.node_id)}"]`);
    if (gone) gone.remove();
    refresh();
  });
  for (const name of ["peer_joined", "model_added", "model_removed", "path_changed", "lagged"]) {
    on(name, refresh);
  }
  setInterval(() => { if (!document.hidden && Console.current() === "mesh") refresh(); }, REFRESH_MS);
  on("tab", (t) => { if (t === "mesh") refresh(); });
})();
