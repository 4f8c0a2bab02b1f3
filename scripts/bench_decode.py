#!/usr/bin/env python3
"""Decode benchmark for `mesh serve` (and, when given, llama.cpp's llama-server for comparison).

Measures, on the same model and thread count:
  - 1 stream: decode tokens/s of one streaming request (first to last generated token);
  - N streams: aggregate tokens/s of N concurrent streaming requests (all tokens / wall time
    from the first request sent to the last token received), and per-stream decode tokens/s.
Each request generates exactly --tokens tokens (`ignore_eos`). Standard library only.
Results go to stdout as a Markdown table; paste them into docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {timeout}s")


def stream(base, model, tokens, prompt):
    """One streaming completion; returns (t_sent, t_first, t_last, n_tokens)."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True}).encode()
    req = urllib.request.Request(f"{base}/v1/completions", body, {"Content-Type": "application/json"})
    t_sent = time.perf_counter()
    t_first = t_last = None
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise SystemExit(f"stream error: {chunk}")
            if chunk["choices"] and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
                n += 1
    return t_sent, t_first, t_last, n


def run_suite(base, model, tokens, streams, runs):
    prompt = "Write a long story about a lighthouse keeper."
    stream(base, model, 16, prompt)  # warm-up
    single = []
    for _ in range(runs):
        _, first, last, n = stream(base, model, tokens, prompt)
        single.append((n - 1) / (last - first))
    multi, per_stream = [], []
    for _ in range(runs):
        results = [None] * streams
        def work(i):
            results[i] = stream(base, model, tokens, f"{prompt} (variant {i})")
        threads = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        start = min(r[0] for r in results)
        end = max(r[2] for r in results)
        total = sum(r[3] for r in results)
        multi.append(total / (end - start))
        per_stream.extend((r[3] - 1) / (r[2] - r[1]) for r in results)
    return statistics.median(single), statistics.median(multi), statistics.median(per_stream)


def start_mesh(binary, model, threads, streams, ctx):
    port, api = free_port(), free_port()
    proc = subprocess.Popen([binary, "serve", "--model", model, "--port", str(port), "--api-port", str(api),
                             "--parallel", str(streams), "--ctx", str(ctx), "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    name = None
    for line in proc.stdout:
        m = re.match(r"mesh \S+ serving (\S+)", line)
        if m:
            name = m.group(1)
        if "Ctrl-C" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/v1/models", proc)
    return proc, base, name


def start_llama_server(binary, model, threads, streams, ctx):
    port = free_port()
    proc = subprocess.Popen([binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
                             "-tb", str(threads), "-np", str(streams), "-c", str(ctx * streams), "--no-webui"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/health", proc)
    return proc, base, "model"


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", required=True, help="path to the mesh binary (a release build)")
    ap.add_argument("--model", required=True, help="GGUF model file")
    ap.add_argument("--llama-server", help="llama-server binary to compare with (optional)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both servers")
    ap.add_argument("--streams", type=int, default=8, help="concurrent streams in the batched run")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--ctx", type=int, default=1024, help="context per stream")
    ap.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported")
    args = ap.parse_args()

    servers = [("mesh", start_mesh, args.mesh)]
    if args.llama_server:
        servers.append(("llama-server", start_llama_server, args.llama_server))
    rows = {}
    for label, start, binary in servers:
        proc, base, name = start(binary, args.model, args.threads, args.streams, args.ctx)
        try:
            rows[label] = run_suite(base, name, args.tokens, args.streams, args.runs)
        finally:
            stop(proc)
    print(f"\nmodel {os.path.basename(args.model)}, {args.threads} threads, {args.tokens} tokens per request, "
          f"median of {args.runs} runs\n")
    print(f"| server | 1 stream tok/s | {args.streams} streams aggregate tok/s | per-stream tok/s at {args.streams} |")
    print("|---|---|---|---|")
    for label, (one, many, per) in rows.items():
        print(f"| {label} | {one:.1f} | {many:.1f} | {per:.1f} |")
    if "llama-server" in rows:
        m, l = rows["mesh"], rows["llama-server"]
        print(f"| mesh ÷ llama-server | {m[0] / l[0]:.2f} | {m[1] / l[1]:.2f} | {m[2] / l[2]:.2f} |")


if __name__ == "__main__":
    main()
