#!/usr/bin/env python3
"""Split serving benchmark: the same model whole on one node vs split over two (loopback).

Starts W (`mesh serve --model M`: the whole model), S (`mesh serve --split-worker`) and H
(`mesh serve --model M --split 2 --join <S's ticket>`: the model's first layers on H, the rest on S
through llama.cpp's RPC backend over `mesh/rpc/1`). Then alternates streaming completions to W and
to H and reports, as medians over --runs requests each: time to first token and streaming decode
tok/s (first to last text chunk), and split ÷ whole. Each request generates exactly --tokens tokens
(`ignore_eos`). Standard library only.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import stop  # noqa: E402
from bench_mesh import compare, start, wait_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", required=True, help="path to the mesh binary")
    ap.add_argument("--model", required=True, help="GGUF model file")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for llama.cpp")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--runs", type=int, default=5, help="requests per side; medians are reported")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="mesh-bench-split-")
    common = ["--threads", str(args.threads), "--parallel", "1", "--ctx", "512"]
    procs = []
    try:
        whole, whole_base, info = start(args.mesh, ["--model", args.model, *common], home + "/w")
        procs.append(whole)
        worker, _, winfo = start(args.mesh, ["--split-worker"], home + "/s")
        procs.append(worker)
        model = info["model"]
        host, split_base, _ = start(args.mesh, ["--model", args.model, "--split", "2",
                                                "--join", winfo["ticket"], *common], home + "/h")
        procs.append(host)
        wait_model(split_base, model, timeout=300)
        med, tps = compare({"whole": whole_base, "split": split_base}, model, args.tokens, args.runs)
        print(f"\nmodel {os.path.basename(args.model)}, {args.threads} threads, {args.tokens} tokens per "
              f"request, median of {args.runs} requests per side, loopback\n")
        print("| serving | time to first token (ms) | decode tok/s |")
        print("|---|---|---|")
        print(f"| whole (one node) | {med['whole']:.1f} | {tps['whole']:.1f} |")
        print(f"| split over 2 nodes (RPC over iroh) | {med['split']:.1f} | {tps['split']:.1f} |")
        print(f"| split ÷ whole | {med['split'] / med['whole']:.2f} | {tps['split'] / tps['whole']:.3f} |")
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    main()
