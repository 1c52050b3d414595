#!/usr/bin/env bash
# Run with: ./examples/local-mesh.sh [--keep]
#
# Builds ganglion-node, creates a throw-away cluster (CA, cookie, three node identities),
# starts three nodes on loopback (b and c know only a), waits until every node sees the
# other two, and prints each node's view of its peers. With --keep the mesh keeps running
# until Ctrl-C; otherwise it stops after printing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ganglion/target}"
cargo build --quiet -p ganglion-node
bin="$CARGO_TARGET_DIR/debug/ganglion-node"

work=$(mktemp -d -t ganglion-local-mesh.XXXXXX)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" init-cluster --dir "$work/cluster" >/dev/null
for name in a b c; do
  "$bin" issue-cert --cluster-dir "$work/cluster" --name "$name" --out "$work/$name" >/dev/null
done

# start NAME QUIC_PORT ADMIN_PORT [SEED]: ports are picked by the OS (0) and read back from the
# node's "ready" line on stdout.
start() {
  local name=$1 seed=${2:-}
  local args=(run --identity "$work/$name" --listen 127.0.0.1:0 --admin 127.0.0.1:0
              --admin-token "$token" --data-dir "$work/$name/data")
  [ -n "$seed" ] && args+=(--seed "$seed")
  "$bin" "${args[@]}" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q '"event":"ready"' "$work/$name.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '"event":"ready"' "$work/$name.out" || { cat "$work/$name.log"; exit 1; }
}
field() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" "$work/$1.out"; }

start a
start b "$(field a quic)"
start c "$(field a quic)"

peers() { curl -fsS -H "Authorization: Bearer $token" "http://$(field "$1" admin)/admin/peers"; }
connected() { peers "$1" | grep -o '"state":"connected"' | wc -l; }
echo "waiting for the mesh to form..."
for _ in $(seq 100); do
  [ "$(connected a)" = 2 ] && [ "$(connected b)" = 2 ] && [ "$(connected c)" = 2 ] && break
  sleep 0.1
done

pretty() { if command -v python3 >/dev/null; then python3 -m json.tool; else cat; fi; }
for name in a b c; do
  echo "== node $name (quic $(field $name quic), admin $(field $name admin)) sees:"
  peers "$name" | pretty
done
if [ "${1:-}" = "--keep" ]; then
  echo "mesh running; admin token: $token; Ctrl-C to stop"
  wait
fi
