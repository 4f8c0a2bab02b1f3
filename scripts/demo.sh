#!/usr/bin/env bash
# Offline, end to end, on one machine (`just demo`):
#   1. `mesh relay`: a Nostr relay on 127.0.0.1
#   2. node A serves the test model in a public mesh and publishes an offer to that relay
#   3. `mesh discover` lists the offer with its score
#   4. node B runs `mesh --auto --client`: finds A's mesh on the relay, joins it over iroh
#   5. a chat completion through B's OpenAI API is answered by A's model
# Every process binds 127.0.0.1 on free ports and uses a temporary MESH_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
mesh=${MESH_BIN:-target/debug/mesh}
# Everything on 127.0.0.1: no iroh relays, LAN (loopback) addresses in the public offer.
export MESH_OFFLINE=1
model=${MESH_TEST_MODEL:-$HOME/.cache/mesh-test/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -x "$mesh" ] || { echo "demo: $mesh not built (cargo build)"; exit 1; }
[ -f "$model" ] || { echo "demo: no test model at $model (scripts/fetch-test-model.sh)"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Starts a mesh process logging to $work/$1.log and waits for its banner's last line.
start() {
  local name=$1; shift
  "$@" >"$work/$name.log" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    if grep -q "Ctrl-C to stop" "$work/$name.log"; then
      sed 's/^/    /' "$work/$name.log"
      return 0
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "demo: $name exited:"; cat "$work/$name.err"; exit 1
    fi
    sleep 0.1
  done
  echo "demo: $name did not start in 30 s:"; cat "$work/$name.err"; exit 1
}

field() { grep -m1 "$2" "$work/$1.log" | awk '{print $NF}'; }

step "1. mesh relay --port 0"
start relay "$mesh" relay --port 0
relay=$(grep -m1 '^relay ' "$work/relay.log" | awk '{print $2}')

step "2. node A: mesh serve --model $(basename "$model") --public --publish --relay $relay"
start a env MESH_HOME="$work/a" "$mesh" serve --model "$model" --public --publish --relay "$relay" \
  --port 0 --api-port 0 --mesh-bind 127.0.0.1:0 --name node-a --region local
a_api=$(field a 'management' | sed 's|/api/status||')
for _ in $(seq 1 100); do
  curl -sf "$a_api/api/publish" | grep -q '"published":[1-9]' && break
  sleep 0.1
done

step "3. mesh discover --relay $relay --explain"
MESH_HOME="$work/c" "$mesh" discover --relay "$relay" --explain

step "4. node B: mesh --auto --client --relay $relay"
start b env MESH_HOME="$work/b" "$mesh" --auto --client --relay "$relay" \
  --port 0 --api-port 0 --mesh-bind 127.0.0.1:0 --name node-b --region local
b_base=$(field b 'OpenAI API')

step "5. chat completion through B: POST $b_base/chat/completions"
for _ in $(seq 1 100); do
  curl -sf "$b_base/models" | grep -q '"id"' && break
  sleep 0.1
done
model_id=$(curl -sf "$b_base/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
curl -sf "$b_base/chat/completions" -H 'content-type: application/json' \
  -d "{\"model\": \"$model_id\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello in five words.\"}], \"max_tokens\": 24}" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("    model:  ", r["model"]); print("    answer: ", r["choices"][0]["message"]["content"].strip())'

step "done: node B used node A's model, found through the relay, over iroh (all on 127.0.0.1)"
