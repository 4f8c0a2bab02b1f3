// Chat tab: any model of the mesh (GET /v1/models on this origin), answers streamed from
// POST /v1/chat/completions (SSE read from the fetch body), time to first token and tokens per
// second (one streamed chunk is one token), and Stop (aborts the request).
"use strict";

(() => {
  const { el, api, on } = Console;
  const select = document.getElementById("chat-model");
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const stats = document.getElementById("chat-stats");
  const max = document.getElementById("chat-max");
  let history = [];
  let running = null; // AbortController of the request in flight

  async function refreshModels() {
    try {
      const ids = (await api("/v1/models")).data.map((m) => m.id);
      const keep = select.value;
      select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
      if (ids.includes(keep)) select.value = keep;
      if (!ids.length) select.append(el("option", { value: "" }, "no model in the mesh"));
    } catch (e) {
      stats.textContent = `cannot list models: ${e.message}`;
    }
  }

  function show(stage, tokens, t0, first) {
    const now = performance.now();
    const parts = [stage];
    if (first) {
      parts.push(`TTFT ${Math.round(first - t0)} ms`);
      const secs = (now - first) / 1000;
      parts.push(`${tokens} tokens`);
      if (tokens > 1 && secs > 0) parts.push(`${((tokens - 1) / secs).toFixed(1)} tok/s`);
    }
    stats.textContent = parts.join(" · ");
  }

  // Reads `data:` lines of an SSE body; calls `each` with every parsed JSON payload.
  async function readSse(body, each) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        each(JSON.parse(data));
      }
    }
  }

  async function ask(text) {
    const model = select.value;
    if (!model || !text.trim()) return;
    history.push({ role: "user", content: text });
    log.append(el("div", { class: "msg user" }, text));
    const answer = el("div", { class: "msg assistant", "data-streaming": "true" });
    log.append(answer);
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const t0 = performance.now();
    let first = null;
    let tokens = 0;
    let stage = "done";
    show("waiting for the first token…", 0, t0, null);
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model, messages: history, stream: true, max_tokens: Number(max.value) || 256 }),
        signal: running.signal,
      });
      if (!resp.ok) {
        const doc = await resp.json().catch(() => null);
        throw new Error((doc && doc.error && doc.error.message) || resp.statusText);
      }
      await readSse(resp.body, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta || !delta.content) return;
        if (first === null) first = performance.now();
        tokens += 1;
        answer.textContent += delta.content;
        show("streaming", tokens, t0, first);
      });
    } catch (e) {
      if (e.name === "AbortError") stage = "stopped";
      else { stage = "failed"; answer.classList.add("error"); answer.textContent += `\n[${e.message}]`; }
    } finally {
      running = null;
      send.disabled = false;
      stop.disabled = true;
      answer.removeAttribute("data-streaming");
      answer.dataset.stage = stage;
      history.push({ role: "assistant", content: answer.textContent });
      show(stage, tokens, t0, first);
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = "";
    ask(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !running) { ev.preventDefault(); form.requestSubmit(); }
  });
  stop.addEventListener("click", () => running && running.abort());
  document.getElementById("chat-clear").addEventListener("click", () => {
    if (running) running.abort();
    history = [];
    log.replaceChildren();
    stats.textContent = "";
  });
  for (const name of ["status", "model_added", "model_removed", "peer_left", "peer_joined"]) on(name, refreshModels);
  on("tab", (t) => { if (t === "chat") { refreshModels(); input.focus(); } });
})();
