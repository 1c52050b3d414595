#!/usr/bin/env bash
# Run with: ./scripts/emulated-cpus.sh [CPU...]   (default: Haswell Nehalem)
#
# Runs this build's binaries as older CPUs under Debian's qemu-user (installed when missing, as
# root): `-cpu Haswell` has AVX2 and no AVX-512, `-cpu Nehalem` is x86-64-v2 (SSE4.2, no AVX).
# For each CPU: `ganglion --version`, `ganglion-node init-cluster`, then a node whose engine
# workers run under the same emulated CPU (GANGLION_WORKER_LAUNCHER) answers a short
# generation, and says which llama.cpp kernels it chose. Slow (everything is emulated), but it
# must answer. Uses the build in ./target (CARGO_TARGET_DIR) and the models in the store.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/debug"
[ -x "$bin/ganglion-node" ] || cargo build --quiet --workspace --all-targets
if ! command -v qemu-x86_64 >/dev/null; then
  echo "installing qemu-user (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends qemu-user >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends qemu-user >/dev/null; }
fi
"$bin/ganglion-node" models pull >/dev/null

cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(Haswell Nehalem)
work=$(mktemp -d -t ganglion-emulated.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
token=emulated-admin-token-0123456789
# The node sets libgomp's spin by executing itself again (node/src/openmp.rs), and qemu-user
# runs a program that executes /proc/self/exe natively: set it here so that nothing escapes
# the emulated CPU.
export GOMP_SPINCOUNT=1000
llm=@ganglion/smollm2-135m-instruct

# qemu warns, at every start, of host CPU flags TCG does not emulate (pcid, x2apic, ...).
quiet() { grep -v "TCG doesn't support requested feature" >&2 || true; }
for cpu in "${cpus[@]}"; do
  emulate=(qemu-x86_64 -cpu "$cpu")
  echo "== $cpu: $("${emulate[@]}" "$bin/ganglion" --version 2> >(quiet))"
  "${emulate[@]}" "$bin/ganglion-node" init-cluster --dir "$work/$cpu/cluster" >/dev/null 2> >(quiet)
  "${emulate[@]}" "$bin/ganglion-node" issue-cert --cluster-dir "$work/$cpu/cluster" --name node \
    --out "$work/$cpu/node" >/dev/null 2> >(quiet)
  echo "   init-cluster, issue-cert: ok"
  started=$(date +%s)
  GANGLION_WORKER_LAUNCHER="${emulate[*]}" "${emulate[@]}" "$bin/ganglion-node" run \
    --identity "$work/$cpu/node" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --admin-token "$token" \
    --data-dir "$work/$cpu/data" --allow-anonymous --cache-size 0 --host "$llm" \
    >"$work/$cpu/out" 2>"$work/$cpu/log" &
  pid=$!
  for _ in $(seq 1800); do
    grep -q '"event":"ready"' "$work/$cpu/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "the node died under $cpu:"; cat "$work/$cpu/log"; exit 1; }
    sleep 0.2
  done
  field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$work/$cpu/out"; }
  admin=$(field admin)
  [ -n "$admin" ] || { echo "the node did not start under $cpu:"; cat "$work/$cpu/log"; exit 1; }
  kernels=$(curl -fsS -H "Authorization: Bearer $token" "http://$admin/admin/node" \
    | sed -n 's/.*"variant":"\([^"]*\)".*/\1/p')
  worker=$(curl -fsS -H "Authorization: Bearer $token" "http://$admin/admin/models" \
    | grep -o '"kernels":"[^"]*"' | head -1)
  echo "   node ready in $(( $(date +%s) - started )) s; llama.cpp kernels: $kernels (worker $worker)"
  asked=$(date +%s)
  answer=$("${emulate[@]}" "$bin/ganglion" generate --node "$(field quic)" \
    --ca "$work/$cpu/cluster/ca.crt" --model "$llm" --max-tokens 8 "Name a colour." 2> >(quiet))
  [ -n "$answer" ] || { echo "no answer under $cpu"; cat "$work/$cpu/log"; exit 1; }
  echo "   generation in $(( $(date +%s) - asked )) s: $answer"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
done
echo "every CPU answered"
