#!/usr/bin/env bash
# One-time set-up of a fresh machine for building and testing mesh (Debian/Ubuntu).
# Installs: cmake and libclang-dev (to build llama.cpp), the `just` runner and the `openai`
# Python client (from PyPI), cargo-nextest if missing, and the test model.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v cmake >/dev/null || need+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null || need+=(clang)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check rust-just openai
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! command -v just >/dev/null; then
  echo "setup: 'just' is installed in $scripts_dir; add it to PATH"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
scripts/fetch-test-model.sh
echo "setup: done"
