# mesh tasks. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

export MESH_TEST_MODEL := env_var_or_default("MESH_TEST_MODEL", env_var_or_default("MESH_TEST_CACHE", env_var("HOME") + "/.cache/mesh-test") + "/SmolLM2-135M-Instruct.Q4_1.gguf")
export MESH_TEST_MODEL2 := env_var_or_default("MESH_TEST_MODEL2", env_var_or_default("MESH_TEST_CACHE", env_var("HOME") + "/.cache/mesh-test") + "/gemma-3-270m-q4_k_m.gguf")

# Install build tools, test tools and the test model (fresh machine).
setup:
    scripts/setup.sh

# Build, then run every test against the real test model.
test:
    scripts/fetch-test-model.sh
    cargo build --all-targets
    cargo nextest run --no-fail-fast

# Lints (CI runs them too): formatting, clippy, and the layer check (imports only point down).
# rustfmt and clippy are rustup components: where one is missing it is skipped with a warning.
lint:
    cargo test --test layers
    if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; else echo "lint: rustfmt missing, skipped" >&2; fi
    if cargo clippy --version >/dev/null 2>&1; then cargo clippy --all-targets -- -D warnings; else echo "lint: clippy missing, skipped" >&2; fi

# Decode speed: 1 stream and 8 concurrent streams, 128 tokens each (results: docs/BENCHMARKS.md).
bench:
    scripts/fetch-test-model.sh
    cargo build --release
    python3 scripts/bench_decode.py --mesh target/release/mesh --model "$MESH_TEST_MODEL"

# Split serving: decode tok/s of the test model split over two nodes (RPC over iroh) vs whole
# on one, loopback (docs/BENCHMARKS.md).
bench-split:
    scripts/fetch-test-model.sh
    cargo build --release
    python3 scripts/bench_split.py --mesh target/release/mesh --model "$MESH_TEST_MODEL"

# Download throughput from a local fake hub vs a plain GET (256 MiB, 5 rounds; docs/BENCHMARKS.md).
bench-download:
    cargo build --release --example bench_download
    target/release/examples/bench_download 256 5 0

# Serve the test model on 127.0.0.1:9337.
serve *ARGS:
    cargo run --release -- serve --model "$MESH_TEST_MODEL" {{ARGS}}

# Mesh overhead: time to first token and streaming tok/s through another node vs. locally.
bench-mesh:
    scripts/fetch-test-model.sh
    cargo build --release
    python3 scripts/bench_mesh.py --mesh target/release/mesh --model "$MESH_TEST_MODEL"

# Offline end to end: a relay, a node publishing its mesh, `mesh --auto --client` joining it,
# a chat completion through the client (all on 127.0.0.1; README "Demo").
demo:
    scripts/fetch-test-model.sh
    cargo build
    scripts/demo.sh

# `mesh --auto` start → first token with a local relay and the model cached (docs/BENCHMARKS.md).
bench-auto:
    scripts/fetch-test-model.sh
    cargo build --release
    python3 scripts/bench_auto.py --mesh target/release/mesh --model "$MESH_TEST_MODEL"

# NAT lab (root, network namespaces): per pairing of NAT types, seconds to a first answer, the
# path after 10 s, and streaming tok/s through the pairing / on the host itself (docs/BENCHMARKS.md).
bench-net:
    scripts/fetch-test-model.sh
    cargo build --release
    cargo build --tests
    MESH_BIN=target/release/mesh cargo nextest run --run-ignored only --no-capture -E 'test(netns::bench_net)'

# Prefix reuse: time to first token of turn 2 of a ~2k-token chat, with and without reuse of
# turn 1's KV cache (median of 5 conversations; docs/BENCHMARKS.md).
bench-prefix:
    scripts/fetch-test-model.sh
    cargo run --release --example bench_prefix -- "$MESH_TEST_MODEL" 5

# The same over HTTP against llama.cpp's llama-server and its prompt cache (built by
# scripts/build-llama-server.sh; docs/BENCHMARKS.md).
bench-prefix-http:
    scripts/fetch-test-model.sh
    cargo build --release
    python3 scripts/bench_prefix_http.py --mesh target/release/mesh --llama-server "$(scripts/build-llama-server.sh)" --model "$MESH_TEST_MODEL"

# Scoring 10,000 offers: score, probe the top 5, score again, pick (docs/BENCHMARKS.md).
bench-score:
    cargo run --release --example bench_score -- 10000 50

# Membership at scale: N client nodes on loopback in one process, real iroh endpoints
# (docs/BENCHMARKS.md, "Membership at scale"). Release build: a debug build of 40 or more
# nodes in one process starves this 2-core machine, and starved nodes time out each other's
# probes and admissions (the mesh then never converges: a measurement of the machine).

bench-membership nodes="100" idle="60" wait="120" settle="30":
    cargo run --release --example bench_membership -- {{nodes}} {{idle}} {{wait}} {{settle}}

# What a QUIC connection costs with the mesh's keep-alive (bytes per second each way), idle or
# carrying RATE messages of SIZE bytes a second.
bench-keepalive conns="8" rate="0" size="243":
    cargo run --release --example bench_keepalive -- {{conns}} {{rate}} {{size}}

# What one short-lived QUIC connection costs (both ends' bytes), with and without path MTU
# discovery: a connection opened, one message, held `hold` seconds, closed.
bench-connect conns="5" hold="10":
    cargo run --release --example bench_connect -- {{conns}} {{hold}}

# Membership at scale in simulated time: the real gossip and membership protocols, N nodes in
# one process, with the network simulated (docs/BENCHMARKS.md, "Membership at scale").
sim-membership nodes="1000" idle="900" seed="1" strays="1":
    cargo run --release --features sim --example sim_membership -- {{nodes}} {{idle}} {{seed}} {{strays}}
