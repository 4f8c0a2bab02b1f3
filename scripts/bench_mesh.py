#!/usr/bin/env python3
"""Mesh overhead benchmark: the same model served locally vs. reached through another node.

Starts node B (`mesh serve --model`) and node A (`mesh serve --client --join <B's ticket>`) on
loopback, then alternates streaming completions sent to B directly ("local") and to A, which
forwards them over iroh to B ("remote"). Reports, as medians over --runs requests each:
  - time to first token (request sent → first text chunk) and the time the mesh adds;
  - streaming decode tok/s (first to last text chunk) and remote ÷ local.
Each request generates exactly --tokens tokens (`ignore_eos`). Standard library only.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import free_port, stop, stream, wait_ready  # noqa: E402


def start(binary, args, home):
    port, api = free_port(), free_port()
    cmd = [binary, "serve", *args, "--port", str(port), "--api-port", str(api), "--ephemeral",
           "--mesh-bind", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "MESH_HOME": home, "MESH_OFFLINE": "1"})
    info = {}
    for line in proc.stdout:
        m = re.match(r"mesh \S+ serving (\S+)", line)
        if m:
            info["model"] = m.group(1)
        m = re.match(r"\s+ticket\s+(\S+)", line)
        if m:
            info["ticket"] = m.group(1)
        if "Ctrl-C" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/v1/models", proc)
    return proc, base, info


def wait_model(base, model, timeout=60):
    import json
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as r:
            if any(m["id"] == model for m in json.load(r)["data"]):
                return
        time.sleep(0.1)
    raise SystemExit(f"{model} did not appear at {base}")


def compare(sides, model, tokens, runs):
    """Streams to each side's base URL in turn (one warm-up each, then `runs` rounds) and returns
    the medians per side: time to first token (ms) and streaming decode tok/s."""
    prompt = "Write a long story about a lighthouse keeper."
    for base in sides.values():  # warm-up: model caches, tunnel connection
        stream(base, model, 16, prompt)
    ttft = {side: [] for side in sides}
    rate = {side: [] for side in sides}
    for _ in range(runs):
        for side, base in sides.items():
            sent, first, last, n = stream(base, model, tokens, prompt)
            ttft[side].append((first - sent) * 1000)
            rate[side].append((n - 1) / (last - first))
    med = {k: statistics.median(v) for k, v in ttft.items()}
    tps = {k: statistics.median(v) for k, v in rate.items()}
    return med, tps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", required=True, help="path to the mesh binary (a release build)")
    ap.add_argument("--model", required=True, help="GGUF model file")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for llama.cpp")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--runs", type=int, default=10, help="requests per side; medians are reported")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="mesh-bench-")
    host, local, info = start(args.mesh, ["--model", args.model, "--threads", str(args.threads),
                                          "--parallel", "1", "--ctx", "512"], home)
    client = None
    try:
        client, remote, _ = start(args.mesh, ["--client", "--join", info["ticket"]], home)
        model = info["model"]
        wait_model(remote, model)
        med, tps = compare({"local": local, "remote": remote}, model, args.tokens, args.runs)
        print(f"\nmodel {os.path.basename(args.model)}, {args.threads} threads, {args.tokens} tokens per "
              f"request, median of {args.runs} requests per side, loopback\n")
        print("| path | time to first token (ms) | streaming tok/s |")
        print("|---|---|---|")
        print(f"| local (B directly) | {med['local']:.2f} | {tps['local']:.1f} |")
        print(f"| remote (A → iroh → B) | {med['remote']:.2f} | {tps['remote']:.1f} |")
        print(f"| mesh adds / ratio | +{med['remote'] - med['local']:.2f} ms | "
              f"{tps['remote'] / tps['local']:.3f} |")
    finally:
        if client:
            stop(client)
        stop(host)


if __name__ == "__main__":
    main()
