#!/usr/bin/env bash
# One-time set-up of a fresh machine for building and testing mesh (Debian/Ubuntu).
# Installs: cmake and libclang-dev (to build llama.cpp), nftables, iproute2 and openssl (the
# network-namespace NAT lab of tests/it/netns), chromium (the console's browser test), the `just`
# runner and the `openai` and `playwright` Python clients (from PyPI; Playwright drives the
# system's chromium, so no `playwright install`), cargo-nextest if missing, `iroh-relay` (the
# lab's relay server), and the test model.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v cmake >/dev/null || need+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null || need+=(clang)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
# The web console's browser test (tests/it/console.rs) drives the system's Chromium.
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check rust-just openai ollama playwright
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! command -v just >/dev/null; then
  echo "setup: 'just' is installed in $scripts_dir; add it to PATH"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The relay server of the NAT lab (TLS with its own certificate, QUIC address discovery), the
# same version as the iroh the project uses.
if ! iroh-relay --version 2>/dev/null | grep -q "1.4.1"; then
  echo "setup: cargo install iroh-relay 1.4.1 (a few minutes)"
  cargo install --locked --quiet iroh-relay --version 1.4.1 --features server
fi
scripts/fetch-test-model.sh
echo "setup: done"
