#!/usr/bin/env bash
# Chaos in network namespaces (root): 5 nodes, each in its own namespace with its own address
# on a bridge, and clients on the host sending metered requests while the network fails:
#   partition  every packet to and from one node is dropped (nftables), then the rule goes;
#   flapping   one node's link goes down and up every 1.5 s for 12 s;
#   kill       kill -9 of a node during a burst, then a restart on the same data folder.
#   executor   kill -9 of the node running an LLM request: before its first token (the entry
#              node must retry it elsewhere, and the client gets a whole answer), and
#              mid-stream (the client gets a clear error, and nobody is charged for it).
# After each scenario: the majority kept serving; the cut node was dropped within the liveness
# timeout and rejoined by itself; every peer list is exactly the other nodes (no ghost); every
# answer a client received has exactly one ledger record, or came from the cache (texts repeat,
# and the cache is on); no answer is another text's vector. One line per scenario; cleans up.
# (tc netem is not in this kernel: slow links are covered on loopback by testkit/src/relay.rs.)
# Installs nftables from Debian when `nft` is missing.
#
# Run as root (a root shell, or `sudo -E env PATH="$PATH" ./scripts/chaos.sh`); it builds the
# workspace and pulls the models when missing. Exits non-zero when a promise was broken.
# SCENARIOS="kill executor" runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet -p ganglion-node -p ganglion-cli
command -v nft >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
bin="$CARGO_TARGET_DIR/debug"
"$bin/ganglion-node" models pull >/dev/null

N=5
NET=10.77.0
BR=gchaos0
LIVENESS=3   # seconds; the promise is "dropped within the liveness timeout"
work=$(mktemp -d -t ganglion-chaos.XXXXXX)
token=chaos-admin-token-0123456789
embedder=@ganglion/all-minilm-l6-v2
llm=@ganglion/smollm2-135m-instruct
pids=()
clients=()   # LLM clients still running
# n4 and n5 also host the LLM, one request at a time each, so that a request can be made to
# wait in a queue before its first token.
extra=()
extra[4]="--host $llm --model-concurrency 1"
extra[5]="--host $llm --model-concurrency 1"

cleanup() {
  for pid in "${pids[@]}" "${clients[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for i in $(seq $N); do ip netns del "gchaos$i" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The network: a bridge on the host (the clients' side) and a veth into each namespace.
ip link add "$BR" type bridge
ip addr add "$NET.254/24" dev "$BR"
ip link set "$BR" up
for i in $(seq $N); do
  ip netns add "gchaos$i"
  ip link add "gc$i" type veth peer name "gc${i}n"
  ip link set "gc${i}n" netns "gchaos$i"
  ip link set "gc$i" master "$BR"
  ip link set "gc$i" up
  ip netns exec "gchaos$i" ip addr add "$NET.$i/24" dev "gc${i}n"
  ip netns exec "gchaos$i" ip link set "gc${i}n" up
  ip netns exec "gchaos$i" ip link set lo up
done

"$bin/ganglion-node" init-cluster --dir "$work/cluster" >/dev/null
key=$("$bin/ganglion-node" issue-key --cluster-dir "$work/cluster" --account chaos --plan paid)
export GANGLION_API_KEY=$key
# A free account limited to 40 Neurons a day (1 Neuron a request), spent during the partition.
LIMIT=40
limited=$("$bin/ganglion-node" issue-key --cluster-dir "$work/cluster" --account limited --daily-limit $LIMIT)
broken=0

start() { # start I: node nI in namespace gchaosI, seeded with n1 (n1 with n2)
  local i=$1 seed=1
  [ "$i" = 1 ] && seed=2
  [ -d "$work/n$i" ] || "$bin/ganglion-node" issue-cert --cluster-dir "$work/cluster" --name "n$i" --out "$work/n$i" >/dev/null
  : >"$work/n$i.out"
  ip netns exec "gchaos$i" "$bin/ganglion-node" run --identity "$work/n$i" \
    --listen "$NET.$i:7400" --admin 127.0.0.1:7480 --admin-token "$token" \
    --data-dir "$work/n$i/data" --seed "$NET.$seed:7400" --host "$embedder" \
    --liveness-timeout "${LIVENESS}s" --cache-size 64MiB ${extra[$i]:-} >"$work/n$i.out" 2>>"$work/n$i.log" &
  pids[$i]=$!
  for _ in $(seq 300); do
    grep -q '"event":"ready"' "$work/n$i.out" 2>/dev/null && return
    sleep 0.1
  done
  echo "n$i did not start:"; tail -5 "$work/n$i.log"; exit 1
}
admin() { ip netns exec "gchaos$1" curl -fsS -m 2 -H "Authorization: Bearer $token" "http://127.0.0.1:7480$2"; }
# The connected peers node I sees, sorted, one line.
peers() { admin "$1" /admin/peers 2>/dev/null | python3 -c 'import json,sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin) if p["state"]=="connected")))' 2>/dev/null || echo "?"; }
others() { local out=""; for j in $(seq $N); do [ "$j" != "$1" ] && out="$out n$j"; done; echo "${out# }"; }
full_mesh() { # waits until every node sees exactly the others; prints the seconds it took
  local start=$(date +%s.%N)
  for _ in $(seq 600); do
    local ok=1
    for i in $(seq $N); do [ "$(peers "$i")" = "$(others "$i")" ] || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$(echo "$(date +%s.%N) - $start" | bc)"; return; }
    sleep 0.1
  done
  echo "never"; for i in $(seq $N); do echo "n$i sees: $(peers "$i")" >&2; done; exit 1
}
# Metered requests from the host to the given nodes, in the background: one JSON line each.
# Texts repeat every TEXTS requests (default: never), so that the cache answers some.
burst() { # burst NAME COUNT NODES...
  local name=$1 count=$2; shift 2
  for k in $(seq "$count"); do
    local i=${@:$(( (k % $#) + 1 )):1} text="$name $(( k % ${TEXTS:-1000000} ))"
    echo -n "$text" >"$work/r-$name-$k.text"
    ( "$bin/ganglion" embed --node "$NET.$i:7400" --ca "$work/cluster/ca.crt" --model "$embedder" \
        --timeout 20 --json "$text" >"$work/r-$name-$k.json" 2>"$work/r-$name-$k.err" || true ) &
    sleep 0.05
  done
  wait
}
# An LLM request from the host through node I (prompt: $PROMPT, or a story), in the
# background; its pid in $gen_pid. The cache is skipped: it would make a request with the same
# prompt wait for the first one's answer.
gen() { # gen NAME I MAX_TOKENS [--json]
  local name=$1 i=$2 max=$3; shift 3
  "$bin/ganglion" generate --node "$NET.$i:7400" --ca "$work/cluster/ca.crt" --model "$llm" \
    --max-tokens "$max" --timeout 60 --skip-cache "$@" "${PROMPT:-Tell me a long story about the sea, part $name.}" \
    >"$work/g-$name.out" 2>"$work/g-$name.err" &
  gen_pid=$!
  clients+=("$gen_pid")
}
# FIELD (queued, in_flight) of the LLM's stats on node I.
llm_stat() {
  admin "$1" /admin/models 2>/dev/null | python3 -c "import json,sys
m=[m for m in json.load(sys.stdin)['models'] if m['id']=='$llm']
print((m[0].get('stats') or {}).get('$2', 0) if m else 0)" 2>/dev/null || echo 0
}
until_true() { # until_true SECONDS COMMAND...: polls every 0.05 s; fails when time runs out
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.05; done
}
answers() { find "$work" -name "r-$1-*.json" -size +0 | wc -l; }
failures() { local f n=0; for f in "$work"/r-"$1"-*.err; do [ -s "$f" ] && n=$((n + 1)); done; echo "$n"; }
# Every node's ledger into $work/ledgers.jsonl, a line each: {"node": "nI", "records": [...]}.
# Fails when a node does not answer.
ledgers() {
  local i body
  : >"$work/ledgers.jsonl"
  for i in $(seq $N); do
    body=$(admin "$i" /admin/ledger) || return 1
    printf '{"node":"n%s","records":%s}\n' "$i" "$body" >>"$work/ledgers.jsonl"
  done
}
ledger_check() { # every answer has exactly one record on the node that ran it, or is a cache hit
  ledgers || { echo "a ledger could not be read"; return 1; }
  python3 - "$work" <<'EOF'
import glob, json, math, sys
work = sys.argv[1]
answers = {}
for path in glob.glob(f"{work}/r-*.json"):
    body = open(path).read().strip()
    if body:
        answers[path] = json.loads(body)
records = {}
for line in open(f"{work}/ledgers.jsonl"):
    node = json.loads(line)
    for rec in node["records"]:
        records.setdefault(rec["request_id"], []).append(node["node"])
hits = {p for p, r in answers.items() if r["cache"]["status"].lower() == "hit"}
bad = [p for p, r in answers.items()
       if records.get(r["id"]) != (None if p in hits else [r["route"]["executed_by"]])]
twice = [r for r, holders in records.items() if len(holders) > 1]
# The cache never answered for another request: every answer's vector is nearest to the
# vector computed (not cached) for its own text, and a hit's is that vector.
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
text = {p: open(p[:-len(".json")] + ".text").read() for p in answers}
computed = {}
for p, r in answers.items():
    if p not in hits:
        computed.setdefault(text[p], r["embeddings"][0])
wrong = 0
unverified = 0
for p, r in answers.items():
    if text[p] not in computed:  # a hit whose text no client got computed: nothing to compare
        unverified += 1
        continue
    v = r["embeddings"][0]
    nearest = max(computed, key=lambda t: cos(v, computed[t]))
    if nearest != text[p] or (p in hits and cos(v, computed[text[p]]) < 0.9999):
        wrong += 1
print(f"{len(answers)} answers ({len(hits)} from the cache, {wrong} wrong, {unverified} unverifiable), {len(records)} records, "
      f"{len(bad)} without their one record, {len(twice)} charged twice")
sys.exit(1 if bad or twice or wrong else 0)
EOF
}

# Scenarios to run, in this order (default: all).
SCENARIOS=${SCENARIOS:-partition flapping kill executor}
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

for i in $(seq $N); do start "$i"; done
formed=$(full_mesh)
echo "mesh of $N formed in $formed s"

if wants partition; then
# Partition: n5's traffic dropped both ways, requests to n1..n4 meanwhile, and the limited account
# spending twice its allocation.
TEXTS=10 burst partition 60 1 2 3 4 &
requests=$!
GANGLION_API_KEY=$limited burst quota $((2 * LIMIT)) 1 2 3 4 &
quota_requests=$!
cut=$(date +%s.%N)
# A silent black hole, as a partition between hosts is: no error, no reset, nothing. The
# namespace's own loopback (its admin listener) stays reachable.
ip netns exec gchaos5 nft -f - <<'NFT'
table inet partition {
  chain input { type filter hook input priority 0; policy drop; iifname "lo" accept; }
  chain output { type filter hook output priority 0; policy drop; oifname "lo" accept; }
}
NFT
# Each of n1..n4 is watched on its own, at the same time, every 0.1 s.
watchers=()
for i in 1 2 3 4; do
  (
    for _ in $(seq 200); do
      if [ "$(peers "$i")" = "$(others "$i" | sed 's/ *n5//')" ]; then
        echo "$(date +%s.%N) - $cut" | bc | cut -c1-4 >"$work/dropped-$i"
        exit 0
      fi
      sleep 0.1
    done
  ) &
  watchers+=($!)
done
wait "${watchers[@]}"
dropped=""
for i in 1 2 3 4; do
  if [ -s "$work/dropped-$i" ]; then dropped="$dropped $(cat "$work/dropped-$i")"; else dropped="$dropped never"; broken=1; fi
done
sleep 2
ip netns exec gchaos5 nft delete table inet partition
rejoined=$(full_mesh)
wait "$requests" "$quota_requests"
ledger=$(ledger_check) || broken=1
[ "$(failures partition)" = 0 ] || broken=1   # the majority kept serving
# The allocation holds, up to the requests in flight when the account's home changed.
spent=$(for i in $(seq $N); do admin "$i" "/admin/ledger?account=limited"; echo; done | python3 -c '
import json, sys
print(sum(r["micro_neurons"] for line in sys.stdin if line.strip() for r in json.loads(line)) // 1000000)')
[ "$spent" -le $((LIMIT + 8)) ] || broken=1
quota="limited account: $spent of $LIMIT Neurons spent ($(answers quota) answered, $(failures quota) refused of $((2 * LIMIT)))"
echo "partition: n5 dropped by n1..n4 after$dropped s (liveness ${LIVENESS} s); rejoined and no ghosts after ${rejoined} s; $(answers partition) answered, $(failures partition) failed of 60; $quota; ledger: $ledger"
fi

if wants flapping; then
# Flapping: n4's link down and up every 1.5 s for 12 s, requests to n1..n3.
TEXTS=10 burst flapping 60 1 2 3 &
requests=$!
for _ in $(seq 4); do ip link set gc4 down; sleep 1.5; ip link set gc4 up; sleep 1.5; done
settled=$(full_mesh)
wait "$requests"
ledger=$(ledger_check) || broken=1
[ "$(failures flapping)" = 0 ] || broken=1
echo "flapping: converged, no ghosts ${settled} s after the last flap; $(answers flapping) answered, $(failures flapping) failed of 60; ledger: $ledger"
fi

if wants kill; then
# Kill: kill -9 of n3 during a burst to every node, then a restart on its data folder.
TEXTS=10 burst kill 80 1 2 3 4 5 &
requests=$!
sleep 1.5
kill -9 "${pids[3]}"
sleep 1
start 3
back=$(full_mesh)
wait "$requests"
ledger=$(ledger_check) || broken=1
echo "kill: n3 killed mid-burst, restarted, full mesh again after ${back} s; $(answers kill) answered, $(failures kill) failed of 80; ledger: $ledger"
fi

if wants executor; then
# Executor lost before the first token: n4 and n5 each run one long stream (their one slot);
# a request entering at n1 waits in the queue of one of them, x, which is killed -9. n1 must
# hand it to the other, y; the client of y's long stream leaves, so that it runs at once. The
# client gets a whole answer.
long="Tell me a very long story about the sea."   # 1,500 tokens, greedily
# One after the other, so that n5 knows n4 is busy (adverts go out every second) and keeps
# its own.
PROMPT=$long gen block4 4 1500 --json; block4=$gen_pid
runs() { [ "$(llm_stat "$1" in_flight)" = 1 ]; }
until_true 30 runs 4 || { echo "executor: n4's long stream never ran"; exit 1; }
sleep 1.5
PROMPT=$long gen block5 5 1500 --json; block5=$gen_pid
busy() { runs 4 && runs 5; }
until_true 30 busy || { echo "executor: the long streams never ran together (in flight on n4, n5: $(llm_stat 4 in_flight), $(llm_stat 5 in_flight))"; cat "$work"/g-block*.err; exit 1; }
gen before 1 16 --json; before=$gen_pid
queued_at() { local n; for n in 4 5; do [ "$(llm_stat $n queued)" = 1 ] && { echo $n; return 0; }; done; return 1; }
x=""
for _ in $(seq 300); do x=$(queued_at) && break; x=""; sleep 0.05; done
[ -n "$x" ] || { echo "executor: the request never queued"; exit 1; }
y=$(( 9 - x ))
# Still waiting, with its first token to come, right before the kill.
[ "$(llm_stat "$x" queued)" = 1 ] && [ ! -s "$work/g-before.out" ] || { echo "executor: the request left the queue before the kill"; exit 1; }
kill -9 "${pids[$x]}"
cut=$(date +%s.%N)
if [ "$y" = 4 ]; then kill "$block4"; else kill "$block5"; fi
wait "$before" || true
retried=$(echo "$(date +%s.%N) - $cut" | bc | cut -c1-4)
verdict=$(python3 - "$work/g-before.out" "n$x" "n$y" <<'EOF'
import json, sys
path, dead, alive = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception:
    print("no answer"); sys.exit(1)
ok = r["route"]["executed_by"] == alive and any(a["node"] == dead for a in r["route"]["attempts"])
print(f"answered by {alive} after {dead} failed" if ok else f"unexpected route {r['route']}")
sys.exit(0 if ok and r["text"] else 1)
EOF
) || broken=1
wait "$block4" "$block5" || true
start "$x"

# Executor lost mid-stream: the client has text already, so nothing may be retried: it gets a
# clear error within its deadline, and nobody charges for the request.
PROMPT=$long gen mid 1 300; mid=$gen_pid
running_at() { local n; for n in 4 5; do [ "$(llm_stat $n in_flight)" = 1 ] && { echo $n; return 0; }; done; return 1; }
until_true 30 test -s "$work/g-mid.out" || { echo "executor: no first token"; exit 1; }
x=$(running_at) || { echo "executor: no node runs the stream"; exit 1; }
kill -9 "${pids[$x]}"
cut=$(date +%s.%N)
wait "$mid" && { echo "executor: the cut stream ended without an error"; broken=1; }
told=$(echo "$(date +%s.%N) - $cut" | bc | cut -c1-4)
error=$(tail -1 "$work/g-mid.err")
start "$x"
full_mesh >/dev/null
# Every LLM answer has exactly one record. The only other record is the long stream on y whose
# client left: it is charged for the text it received (docs/metering.md). The killed nodes
# charged nothing: neither the request cut mid-stream nor the long stream on x.
llm_ledger=$(ledgers && python3 - "$work" "$llm" "n$y" <<'EOF'
import json, glob, sys
work, llm, left = sys.argv[1:]
answers = set()
for path in glob.glob(f"{work}/g-*.out"):
    try:
        answers.add(json.load(open(path))["id"])
    except Exception:
        pass
records = []
for line in open(f"{work}/ledgers.jsonl"):
    node = json.loads(line)
    records += [(r["request_id"], node["node"]) for r in node["records"] if r["model"] == llm]
ids = [r for r, _ in records]
others = [node for r, node in records if r not in answers]
ok = all(ids.count(a) == 1 for a in answers) and others == [left]
print(f"{len(answers)} LLM answers, each with one record; other records: {' '.join(others) or 'none'}"
      + ("" if ok else f" (expected one, on {left})"))
sys.exit(0 if ok else 1)
EOF
) || broken=1
echo "executor: killed before the first token: $verdict, $retried s after the kill; killed mid-stream: the client was told in $told s ($error); ledger: $llm_ledger"
fi
exit $broken
