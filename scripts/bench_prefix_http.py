#!/usr/bin/env python3
"""Prefix reuse over HTTP: `mesh serve` against llama.cpp's llama-server (`cache_prompt`).

Both servers get the same model, threads, one slot and a 4096-token context. Each round is a new
conversation (its system prompt starts with the round number, as in examples/bench_prefix.rs):
turn 1 (a ~1,900-token system prompt and a question, 32 tokens generated), then turn 2 (turn 1,
its answer, a short question). Measured: the time from sending turn 2 to its first streamed
text ("warm"), and the same turn-2 request sent cold, as the first request of a conversation the
server never saw ("cold"). Rounds alternate between the servers so that a noisy machine slows
both alike. Median of --runs rounds. Standard library only; prints a Markdown table.
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import start_llama_server, start_mesh, stop  # noqa: E402


def turn1(conversation):
    system = f"Conversation {conversation}. You are the assistant of a harbour master. "
    for i in range(95):
        system += (f"Rule {i}: ships of class {i % 7} keep {10 + i} metres from the pier "
                   f"and report at {i % 24}:00. ")
    return [{"role": "system", "content": system},
            {"role": "user", "content": "Which rules apply to a class 3 ship arriving at night?"}]


def chat(base, model, messages, max_tokens):
    """One streaming chat request; returns (seconds to the first text, whole text)."""
    body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "cache_prompt": True}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
    sent = time.perf_counter()
    first, text = None, ""
    with urllib.request.urlopen(req, timeout=900) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            chunk = json.loads(line[5:])
            if "error" in chunk:
                raise SystemExit(f"stream error: {chunk}")
            delta = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if delta:
                first = first or time.perf_counter() - sent
                text += delta
    return first, text


def turn2(messages, answer):
    return messages + [{"role": "assistant", "content": answer},
                       {"role": "user", "content": "And a class 5 ship in the morning?"}]


def round_on(base, model, conversation):
    """(warm, cold) turn-2 times to first text for one conversation number."""
    first = turn1(conversation)
    _, answer = chat(base, model, first, 32)
    warm, _ = chat(base, model, turn2(first, answer), 16)
    # The same turn 2 for a conversation the server never saw (another number, same length).
    cold_first = turn1(conversation + 10_000)
    cold, _ = chat(base, model, turn2(cold_first, answer), 16)
    return warm, cold


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", required=True, help="mesh binary")
    ap.add_argument("--llama-server", required=True, help="llama-server binary (scripts/build-llama-server.sh)")
    ap.add_argument("--model", required=True, help="GGUF model file")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    servers = {}
    try:
        for label, start, binary in (("mesh", start_mesh, args.mesh),
                                     ("llama-server", start_llama_server, args.llama_server)):
            servers[label] = start(binary, args.model, args.threads, 1, 4096)
        for _, base, model in servers.values():
            chat(base, model, [{"role": "user", "content": "Hello"}], 4)  # warm-up
        results = {label: [] for label in servers}
        for r in range(args.runs):
            for label, (_, base, model) in servers.items():
                results[label].append(round_on(base, model, r))
    finally:
        for proc, _, _ in servers.values():
            stop(proc)

    print(f"\nmodel {os.path.basename(args.model)}, {args.threads} threads, 1 slot, ctx 4096, "
          f"median of {args.runs} rounds\n")
    print("| server | turn 2 after turn 1 (prefix reused), s | same turn 2 cold, s | cold ÷ warm |")
    print("|---|---|---|---|")
    med = {}
    for label, rows in results.items():
        warm = statistics.median(w for w, _ in rows)
        cold = statistics.median(c for _, c in rows)
        med[label] = warm
        print(f"| {label} | {warm:.3f} | {cold:.3f} | {cold / warm:.1f}× |")
    print(f"| mesh ÷ llama-server (warm) | {med['mesh'] / med['llama-server']:.2f} | | |")


if __name__ == "__main__":
    main()
