#!/usr/bin/env bash
# Regions at scale with real processes (root): 51 `ganglion-node` processes in 3 regions of 17,
# one network namespace per region on a bridge. Traffic between regions passes a user-space
# relay on the host that delays every datagram (r1-r2 15 ms, r1-r3 30 ms, r2-r3 25 ms one way;
# `tc netem` is not in this kernel): nftables in each namespace sends a packet for another
# region's node to the relay's port for that node. Only one node hosts a model
# (@ganglion/whatlang-language-id, in r3); the other 50 host none.
# Measures and prints: formation time (every region a full mesh, every gateway linked to the
# other regions' gateways), bytes per second per node (members and gateways), RSS per node, a
# cross-region handoff's added time (the same request entering r1 and entering r3), the time
# to notice a killed member, and the time to replace a killed gateway. Exits non-zero when a
# promise is broken: a request entering r1 is not served in r3, or a count is wrong.
#
# Run as root (a root shell, or `sudo -E env PATH="$PATH" ./scripts/regions.sh`); it builds the
# workspace when needed. Installs nftables from Debian when `nft` is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet -p ganglion-node -p ganglion-cli
command -v nft >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
bin="$CARGO_TARGET_DIR/debug"

R=3
K=${NODES_PER_REGION:-17}
NET=10.78.0
BR=gregion0
token=regions-admin-token-0123456789
model=@ganglion/whatlang-language-id
host_node=r3n05
work=$(mktemp -d -t ganglion-regions.XXXXXX)
pids=()
declare -A pid_of
delay_ms() { # one-way delay between regions $1 and $2
  case "$(( $1 < $2 ? $1 * 10 + $2 : $2 * 10 + $1 ))" in 12) echo 15 ;; 13) echo 30 ;; 23) echo 25 ;; *) echo 0 ;; esac
}
relay_port() { echo $(( 20000 + 1000 * $1 + 100 * $2 + $3 )); } # from region, to region, node

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true
  for r in $(seq $R); do ip netns del "greg$r" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip link add "$BR" type bridge
ip addr add "$NET.254/24" dev "$BR"
ip link set "$BR" up
for r in $(seq $R); do
  ip netns add "greg$r"
  ip link add "gr$r" type veth peer name "gr${r}n"
  ip link set "gr${r}n" netns "greg$r"
  ip link set "gr$r" master "$BR"
  ip link set "gr$r" up
  ip netns exec "greg$r" ip addr add "$NET.$r/24" dev "gr${r}n"
  ip netns exec "greg$r" ip link set "gr${r}n" up
  ip netns exec "greg$r" ip link set lo up
  # Packets to another region's nodes go to the relay; a counter per node's UDP port.
  {
    echo "table ip regions {"
    echo "  chain out { type nat hook output priority -100;"
    for s in $(seq $R); do
      [ "$s" = "$r" ] && continue
      for n in $(seq $K); do
        echo "    ip daddr $NET.$s udp dport $((7400 + n)) dnat to $NET.254:$(relay_port "$r" "$s" "$n")"
      done
    done
    echo "  }"
    echo "  chain count { type filter hook output priority 0;"
    for n in $(seq $K); do echo "    udp sport $((7400 + n)) counter"; done
    echo "  }"
    echo "}"
  } | ip netns exec "greg$r" nft -f -
done

# The relay: one socket per (from region, to region, node); each client gets an upstream socket.
cat >"$work/relay.py" <<'EOF'
import asyncio, sys
NET, R, K = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
DELAY = {(1, 2): 15, (1, 3): 30, (2, 3): 25}
def delay(a, b): return DELAY.get((min(a, b), max(a, b)), 0) / 1000
class Up(asyncio.DatagramProtocol):
    def __init__(self, down, client, d): self.down, self.client, self.d = down, client, d
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, _):
        asyncio.get_running_loop().call_later(self.d, self.down.sendto, data, self.client)
class Down(asyncio.DatagramProtocol):
    def __init__(self, target, d): self.target, self.d, self.ups = target, d, {}
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, client):
        loop = asyncio.get_running_loop()
        up = self.ups.get(client)
        if up is None:
            up = self.ups[client] = asyncio.ensure_future(loop.create_datagram_endpoint(
                lambda: Up(self.t, client, self.d), remote_addr=self.target))
        def send():
            if up.done() and not up.exception(): up.result()[0].sendto(data)
            else: up.add_done_callback(lambda f: f.exception() or f.result()[0].sendto(data))
        loop.call_later(self.d, send)
async def main():
    loop = asyncio.get_running_loop()
    for a in range(1, R + 1):
        for b in range(1, R + 1):
            if a == b: continue
            for n in range(1, K + 1):
                await loop.create_datagram_endpoint(lambda b=b, n=n, a=a: Down((f"{NET}.{b}", 7400 + n), delay(a, b)),
                    local_addr=(f"{NET}.254", 20000 + 1000 * a + 100 * b + n))
    print("relay ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
EOF
python3 "$work/relay.py" "$NET" "$R" "$K" >"$work/relay.out" 2>&1 &
relay_pid=$!
until grep -q ready "$work/relay.out"; do sleep 0.1; kill -0 "$relay_pid" || { cat "$work/relay.out"; exit 1; }; done

"$bin/ganglion-node" init-cluster --dir "$work/cluster" >/dev/null
export GANGLION_API_KEY=$("$bin/ganglion-node" issue-key --cluster-dir "$work/cluster" --account regions --plan paid)

start() { # start R N: node rRnNN in namespace gregR; r1n01 seeds no one, rRn01 seeds r1n01
  local r=$1 n=$2 name seed extra=()
  name=$(printf "r%dn%02d" "$r" "$n")
  seed="$NET.$r:7401"
  if [ "$n" = 1 ]; then seed="$NET.1:7401"; fi
  [ "$name" = "$host_node" ] && extra=(--host "$model")
  "$bin/ganglion-node" issue-cert --cluster-dir "$work/cluster" --name "$name" --out "$work/$name" >/dev/null
  local seeds=()
  [ "$name" != r1n01 ] && seeds=(--seed "$seed")
  ip netns exec "greg$r" "$bin/ganglion-node" run --identity "$work/$name" --region "r$r" \
    --listen "$NET.$r:$((7400 + n))" --admin "127.0.0.1:$((7500 + n))" --admin-token "$token" \
    --data-dir "$work/$name/data" --max-connections-per-address 256 "${seeds[@]}" "${extra[@]}" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!); disown $!
  pid_of[$name]=$!
}
admin() { # admin NAME PATH
  local r=${1:1:1} n=$((10#${1:3:2}))
  ip netns exec "greg$r" curl -fsS -m 2 -H "Authorization: Bearer $token" "http://127.0.0.1:$((7500 + n))$2"
}
all_nodes() { for r in $(seq $R); do for n in $(seq $K); do printf "r%dn%02d " "$r" "$n"; done; done; }
alive_nodes() { for name in $(all_nodes); do kill -0 "${pid_of[$name]}" 2>/dev/null && echo -n "$name "; done; }
# Every live node's membership, one JSON object by name.
memberships() {
  for name in $(alive_nodes); do echo "{\"$name\": $(admin "$name" /admin/membership 2>/dev/null || echo null)}"; done
}
# Whether every live region is a full mesh whose members agree on its gateways, and every
# gateway is linked to both gateways of every other region (python reads the memberships).
check_formed() {
  memberships | python3 -c '
import json, sys
views = {}
for line in sys.stdin: views.update(json.loads(line))
if any(v is None for v in views.values()): sys.exit(1)
regions = {}
for name, v in views.items(): regions.setdefault(v["membership"]["region"], []).append(name)
gateways = {}
for region, names in regions.items():
    seen = {tuple(views[n]["membership"]["gateways"]) for n in names}
    sizes = {views[n]["membership"]["region_size"] for n in names}
    if len(seen) != 1 or sizes != {len(names)}: sys.exit(1)
    gateways[region] = sorted(seen.pop())
for region, gws in gateways.items():
    for g in gws:
        other = views[g]["membership"]["other_regions"]
        for o, ogws in gateways.items():
            if o != region and sorted(other.get(o, [])) != ogws: sys.exit(1)
print(json.dumps(gateways))
'
}
wait_formed() { # prints seconds since $1 (a date +%s.%N) when formed, and the gateways
  local since=$1 gws
  for _ in $(seq 600); do
    if gws=$(check_formed); then
      echo "$(python3 -c "import time; print(f'{time.time() - $since:.1f}')") $gws"
      return
    fi
    sleep 0.2
  done
  echo never; return 1
}

echo "== starting $((R * K)) nodes in $R regions of $K (one namespace per region, relayed delays between regions)"
t0=$(date +%s.%N)
for n in $(seq $K); do for r in $(seq $R); do start "$r" "$n"; done; done
read -r formed gateways < <(wait_formed "$t0")
echo "formed: every region a full mesh and every gateway linked to the others' in ${formed} s after the first start; gateways $gateways"

# Bytes per second per node: nftables counters of each node's UDP port over 10 s.
counters() { for r in $(seq $R); do ip netns exec "greg$r" nft -j list chain ip regions count; done |
  python3 -c '
import json, sys
out = {}
for line in sys.stdin:
    for item in json.loads(line)["nftables"]:
        rule = item.get("rule")
        if not rule: continue
        port = rule["expr"][0]["match"]["right"]
        out[port] = out.get(port, 0) + rule["expr"][1]["counter"]["bytes"]
print(json.dumps(out))'; }
c0=$(counters); sleep 10; c1=$(counters)
python3 - "$c0" "$c1" "$gateways" <<'EOF'
import json, sys
c0, c1, gws = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
# Ports repeat across regions (one namespace each): the counters summed per port cover R nodes.
rates = [(c1[p] - c0.get(p, 0)) / 10 / 3 for p in c1]
print(f"bytes/s sent per node (UDP, 10 s): mean {sum(rates)/len(rates):.0f}, busiest port (3 nodes) {max(rates):.0f}")
EOF
rss=$(for pid in "${pids[@]}"; do ps -o rss= -p "$pid"; done | awk '{s+=$1; if ($1>m) m=$1} END {printf "mean %.0f MiB, max %.0f MiB", s/NR/1024, m/1024}')
echo "RSS per node: $rss"

# A cross-region handoff's added time: the same request (not cached) entering r3 and entering
# r1, 20 times each, timed around the client (its start-up is the same for both).
time_request() { # time_request NAME K: milliseconds, and the route
  local r=${1:1:1} n=$((10#${1:3:2})) start out
  start=$(date +%s%N)
  out=$(ip netns exec "greg$r" "$bin/ganglion" classify --node "$NET.$r:$((7400 + n))" --ca "$work/cluster/ca.crt" \
    --model "$model" --skip-cache --json --timeout 20 "Ceci est la phrase numéro $2, en français.")
  echo "$(( ($(date +%s%N) - start) / 1000 ))" "$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("→".join(r["route"]["path"]))')"
}
member_of() { # member_of R [I]: the I-th (default first) node of region R that is neither a
  # gateway nor the host
  python3 -c "import json; g=json.loads('$gateways'); print([f'r$1n{n:02d}' for n in range(1, $K+1) if f'r$1n{n:02d}' not in g['r$1'] and f'r$1n{n:02d}' != '$host_node'][${2:-0}])"
}
entry1=$(member_of 1); entry3=$(member_of 3)
for k in $(seq 3); do time_request "$entry1" "w$k" >/dev/null; time_request "$entry3" "w$k" >/dev/null; done
for k in $(seq 20); do time_request "$entry3" "$k"; done >"$work/in3"
for k in $(seq 20); do time_request "$entry1" "$k"; done >"$work/in1"
route1=$(tail -1 "$work/in1" | cut -d' ' -f2); route3=$(tail -1 "$work/in3" | cut -d' ' -f2)
case "$route1" in *"$host_node") ;; *) echo "BROKEN: a request entering r1 was not served by $host_node (route $route1)"; exit 1 ;; esac
p50() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
in3=$(cut -d' ' -f1 "$work/in3" | p50); in1=$(cut -d' ' -f1 "$work/in1" | p50)
echo "handoff: entering r3 (route $route3) p50 $((in3 / 1000)).$(( (in3 % 1000) / 100 )) ms; entering r1 (route $route1) p50 $((in1 / 1000)).$(( (in1 % 1000) / 100 )) ms; added by crossing regions $(( (in1 - in3) / 1000 )) ms"

# A killed member is noticed: every other node of its region drops it (polled on that region
# only, so that the figure is not the time a poll of every node takes).
victim=$(member_of 1 1)
kill -9 "${pid_of[$victim]}"; t=$(date +%s.%N)
region_dropped() {
  for name in $(alive_nodes); do
    case "$name" in r1*) admin "$name" /admin/membership | grep -q "\"region_size\":$((K - 1))," || return 1 ;; esac
  done
}
until_dropped=""
for _ in $(seq 300); do
  if region_dropped; then until_dropped=$(python3 -c "import time; print(f'{time.time() - $t:.1f}')"); break; fi
  sleep 0.1
done
[ -n "$until_dropped" ] || { echo "BROKEN: $victim was never dropped by its region"; exit 1; }
echo "killed member $victim: every other node of r1 dropped it in $until_dropped s (liveness timeout 5 s)"

# A killed gateway is replaced: its region agrees on a new one, linked to every other region's.
victim=$(python3 -c "import json; print(json.loads('$gateways')['r2'][0])")
kill -9 "${pid_of[$victim]}"; t=$(date +%s.%N)
read -r replaced gateways2 < <(wait_formed "$t")
echo "killed gateway $victim: replaced, and linked to every other region's gateways, in $replaced s; gateways now $gateways2"
after=$(time_request "$entry1" after | cut -d' ' -f2)
case "$after" in *"$host_node") echo "after both kills, a request entering r1 is still served in r3 (route $after)" ;; *) echo "BROKEN: route $after"; exit 1 ;; esac
