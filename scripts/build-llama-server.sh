#!/usr/bin/env bash
# Builds llama.cpp's own llama-server (CPU only, Release, no -march=native) for the comparisons
# in docs/BENCHMARKS.md, into target/llama-server/bin/llama-server, and prints its path.
# Idempotent. The llama.cpp vendored in the llama-cpp-sys-2 crate ships without the server's
# sources, so they come from the llama-cpp-python sdist on PyPI (the only registry reachable
# here), version LLAMA_CPP_PYTHON (default 0.3.36). Needs cmake and a C++ compiler
# (scripts/setup.sh); takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/llama-server
bin="$out/build/bin/llama-server"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
version=${LLAMA_CPP_PYTHON:-0.3.36}
mkdir -p "$out"
if [ ! -d "$out/src" ]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$out" "llama-cpp-python==$version" >&2
    mkdir -p "$out/src"
    tar -xzf "$out/llama_cpp_python-$version.tar.gz" -C "$out/src" --strip-components=3 \
        "llama_cpp_python-$version/vendor/llama.cpp"
fi
cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$out/build" --target llama-server -j "$(nproc)" >&2
echo "$bin"
