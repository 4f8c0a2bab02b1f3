// Discover tab: meshes offered on the node's Nostr relays (GET /api/discover), best score
// first with every term of the score, filters, and Join (POST /api/join with the offer's ticket).
"use strict";

(() => {
  const { el, row, fill, api, bytes, short } = Console;
  const form = document.getElementById("discover-form");
  const table = document.getElementById("offers");
  const status = document.getElementById("discover-status");

  function terms(o) {
    if (o.excluded) return el("span", { class: "bad" }, `excluded: ${o.excluded}`);
    return el("ul", { class: "terms" }, (o.terms || []).map((t) =>
      el("li", {}, el("span", { class: t.points < 0 ? "bad" : "ok" }, (t.points >= 0 ? "+" : "") + t.points.toFixed(2)),
        `${t.name}: ${t.detail}`)));
  }

  async function join(o, button) {
    button.disabled = true;
    status.textContent = `joining ${o.offer.name}…`;
    try {
      const doc = await api("/api/join", { ticket: o.offer.ticket });
      status.textContent = `joined ${o.offer.name}: dialled ${doc.peers_dialled} node(s); see the Mesh tab`;
    } catch (e) {
      status.textContent = `cannot join ${o.offer.name}: ${e.message}`;
      button.disabled = false;
    }
  }

  function render(doc) {
    const offers = doc.offers || [];
    fill(table, offers.map((o) => {
      const c = o.offer;
      const joinable = c.public && c.ticket;
      const button = el("button", { type: "button", disabled: !joinable,
        title: joinable ? "join this mesh" : "a private mesh: ask its owner for a ticket" }, "Join");
      button.addEventListener("click", () => join(o, button));
      return row(table, [
        el("strong", {}, o.score.toFixed(2)),
        [el("div", {}, c.name), el("div", { class: "mono muted", title: o.mesh_id }, short(o.mesh_id))],
        c.models.map((m) => el("div", {}, `${m.name} `, el("span", { class: "muted" }, `${m.free_slots}/${m.slots} free`))),
        c.region || "—",
        [`${c.nodes} serving, ${c.clients}/${c.max_clients} clients`, el("div", { class: "muted" }, bytes(c.memory_bytes))],
        terms(o),
        button,
      ], { "data-mesh-id": o.mesh_id });
    }), "no offers found");
    const relays = doc.relays || [];
    const down = relays.filter((r) => !r.ok).length;
    status.textContent = `${offers.length} offer(s) from ${relays.length - down} of ${relays.length} relay(s)` +
      ((doc.rejected || []).length ? `; ${doc.rejected.length} rejected` : "");
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const k of ["model", "region", "min_memory"]) {
      const v = String(data.get(k) || "").trim();
      if (v) q.set(k, v);
    }
    q.set("probe", data.get("probe") ? "true" : "false");
    status.textContent = "asking the relays…";
    try { render(await api(`/api/discover?${q}`)); }
    catch (e) { status.textContent = `cannot discover: ${e.message}`; fill(table, [], "no offers"); }
  });
})();
