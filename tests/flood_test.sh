#!/usr/bin/env bash
# A flood at the node's exception path while it serves, end to end in the lab:
#
#   tl-flF (flooder, 198.18.0.130): UDP to a closed port and TCP SYNs to port 53 of the node,
#          random source ports, each at >= 10x its per-node exception budget
#   tl-flC (client, 198.18.0.120):  a steady stream of queries for a few hot names (cache hits)
#          and of unique names (misses: recursion through the exception path)
#   tl-flN (node): tern-dataplane (lab-tap profile, small budgets for "other" and "dns-tcp") +
#          tern-control behind the exception interface + keepalived (VRRPv3, backup)
#   tl-flP (peer, 198.18.0.54): keepalived, master, unicast adverts every 250 ms to the node
#
# A baseline phase, then the same client stream under the flood. Asserts what a user would
# notice: recursion still answers, the hit rate does not drop, the hot names keep being answered,
# and the node's keepalived never stops hearing its peer (no VRRP flap: it never becomes master).
# Prints the figures of both phases.
#
# usage: tests/flood_test.sh BUILD_DIR      (root; the lab in tests/lab; 198.18.0.0/16 only)
set -euo pipefail

BUILD=$(readlink -f "${1:?usage: flood_test.sh BUILD_DIR}")
SRC=$(dirname "$(readlink -f "$0")")/..
LAB=$SRC/tests/lab/lab.sh
DP=$BUILD/dataplane/tern-dataplane
TC=$BUILD/control/tern-control
NODE=tl-flN PEER=tl-flP CLI=tl-flC FLOOD=tl-flF NIC=tl-nicfl
NODE4=198.18.0.53 PEER4=198.18.0.54 VIP=198.18.0.56 CLI4=198.18.0.120 FLOOD4=198.18.0.130
BASE_SECS=${TERN_FLOOD_BASE_SECS:-8} FLOOD_SECS=${TERN_FLOOD_SECS:-10}
# Per-worker budgets under test (tern.conf [dataplane] punt-*, pushed by tern-control), and the
# flood rates (frames/s).
OTHER_RATE=200 DNS_TCP_RATE=300
UDP_PPS=${TERN_FLOOD_UDP_PPS:-8000} SYN_PPS=${TERN_FLOOD_SYN_PPS:-8000}
WORK=$(mktemp -d /tmp/tern-flood.XXXXXX)
SOCK=$WORK/dataplane.sock
LAB_WAS_UP=0
declare -A PIDS=()
ATTACHED=()

log() { echo "flood: $*"; }
die() { echo "flood: FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
for b in "$DP" "$TC"; do [[ -x $b ]] || die "$b not built"; done
for c in keepalived python3 kdig; do command -v "$c" >/dev/null || die "$c missing: run scripts/install-deps.sh"; done

cleanup() {
  local rc=$?
  set +e
  for n in "${!PIDS[@]}"; do kill "${PIDS[$n]}" 2>/dev/null; done
  sleep 0.3
  for n in "${!PIDS[@]}"; do kill -9 "${PIDS[$n]}" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${ATTACHED[@]}"; do "$LAB" detach-ns "$ns" >/dev/null 2>&1; done
  if [[ -e /run/netns/$NODE ]]; then
    for p in $(ip netns pids "$NODE" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$NODE"
  fi
  ip -n tl-inet link del "$NIC" >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  if ((rc != 0)); then
    for f in dp.log tc.log node-keepalived.log peer-keepalived.log; do
      [[ -f $WORK/$f ]] && { echo "--- $f"; tail -15 "$WORK/$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # SECONDS CMD...: polls every 100 ms
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

ctl() {
  python3 - "$SOCK" "$*" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
out = data.decode()
sys.stdout.write(out)
sys.exit(0 if out.rstrip("\n").split("\n")[-1] == "OK" else 1)
EOF
}
# Every dataplane counter, summed over cores: "name value" lines.
snapshot() {
  ctl stats | awk '/^tern_dp_/ { n = $1; sub(/[{].*/, "", n); s[n] += $2 } END { for (k in s) print k, s[k] }' | sort
}
val() { awk -v n="tern_dp_$2_total" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }' "$1"; }
delta() { echo $(($(val "$2" "$3") - $(val "$1" "$3"))); }

"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
"$LAB" start >"$WORK/lab.log" 2>&1 || die "lab.sh start failed: $(tail -5 "$WORK/lab.log")"
# shellcheck disable=SC1091
eval "$("$LAB" env)"

# ------------------------------------------------------------------------- the node ----
log "node: tern-dataplane + tern-control ([dataplane] punt-other = $OTHER_RATE/50, punt-dns-tcp = $DNS_TCP_RATE/60) + keepalived"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
sed "s/iface=tl-nic0/iface=$NIC/" "$SRC/hw-profiles/lab-tap.conf" >"$WORK/profile.conf"
ip netns exec "$NODE" "$DP" --profile "$WORK/profile.conf" --control-socket "$SOCK" --allow 198.18.0.0/15 \
  >"$WORK/dp.log" 2>&1 &
PIDS[dp]=$!
wait_for 20 test -S "$SOCK" || die "tern-dataplane did not start: $(tail -3 "$WORK/dp.log")"
"$LAB" attach-if "$NIC" "$NODE" >/dev/null || die "lab.sh attach-if $NIC failed"
ip -n "$NODE" addr add "$NODE4/16" dev tl-exc0
ip -n "$NODE" link set tl-exc0 up

mkdir -p "$WORK/state"
cat >"$WORK/tern.conf" <<EOF
[server]
listen = $NODE4:53
allow = 198.18.0.0/15
control-socket = $WORK/control.sock
dataplane-socket = $SOCK
state-dir = $WORK/state
[recursion]
root-hints = $LAB_ROOT_HINTS
[dataplane]
punt-other = $OTHER_RATE/50
punt-dns-tcp = $DNS_TCP_RATE/60
EOF
ip netns exec "$NODE" "$TC" -c "$WORK/tern.conf" --foreground >"$WORK/tc.log" 2>&1 &
PIDS[tc]=$!
resolves() { ip netns exec "$NODE" kdig +time=2 +retry=0 @"$NODE4" . SOA 2>/dev/null | grep -q "status: NOERROR"; }
wait_for 30 resolves || die "tern-control does not resolve '. SOA': $(tail -5 "$WORK/tc.log")"
# The budgets come from tern.conf: tern-control's push, not a dataplane flag.
pushed() { ctl policy | grep -q "punt-dns-tcp=$DNS_TCP_RATE/60 punt-other=$OTHER_RATE/50"; }
wait_for 10 pushed || die "tern.conf's punt budgets did not reach the dataplane: $(ctl policy)"
WORKERS=$(ctl stats | grep -c '^tern_dp_rx_packets_total{')

# ------------------------------------------------------------------------ VRRP pair ----
"$LAB" attach-ns "$PEER" "$PEER4/16" 2001:2::54/64 >/dev/null || die "attach-ns $PEER failed"
ATTACHED+=("$PEER")
keepalived_conf() {  # NAME IFACE PRIORITY SRC PEER
  cat <<EOF
global_defs {
  router_id tern-flood-$1
  vrrp_version 3
}
vrrp_instance tern {
  state BACKUP
  interface $2
  virtual_router_id 56
  priority $3
  advert_int 0.25
  unicast_src_ip $4
  unicast_peer {
    $5
  }
  virtual_ipaddress {
    $VIP/32 dev $2
  }
}
EOF
}
keepalived_conf peer tl0 150 "$PEER4" "$NODE4" >"$WORK/peer-keepalived.conf"
keepalived_conf node tl-exc0 100 "$NODE4" "$PEER4" >"$WORK/node-keepalived.conf"
start_keepalived() {  # NAME NS
  ip netns exec "$2" keepalived -n -l -D --vrrp -f "$WORK/$1-keepalived.conf" \
    -p "$WORK/$1-keepalived.pid" -r "$WORK/$1-vrrp.pid" >"$WORK/$1-keepalived.log" 2>&1 &
  PIDS[keepalived_$1]=$!
}
# The peer first, so the election is settled before the node joins: the node must then stay
# backup for the whole test, hearing the peer's adverts through its dataplane.
start_keepalived peer "$PEER"
peer_master() { ip -n "$PEER" -4 addr show dev tl0 | grep -q " $VIP/"; }
wait_for 15 peer_master || die "the peer never became VRRP master (see peer-keepalived.log)"
start_keepalived node "$NODE"
node_backup() { grep -q "Entering BACKUP STATE" "$WORK/node-keepalived.log"; }
wait_for 10 node_backup || die "the node's keepalived did not start as backup (see node-keepalived.log)"
sleep 2
transitions() { grep -c "Entering MASTER STATE" "$WORK/$1-keepalived.log" || true; }
NODE_MASTER0=$(transitions node) PEER_MASTER0=$(transitions peer)
((NODE_MASTER0 == 0)) || die "the node became VRRP master before any flood: adverts from the peer do not reach it"

# -------------------------------------------------------------------- client, flooder ----
"$LAB" attach-ns "$CLI" "$CLI4/16" 2001:2::120/64 >/dev/null || die "attach-ns $CLI failed"
ATTACHED+=("$CLI")
"$LAB" attach-ns "$FLOOD" "$FLOOD4/16" 2001:2::130/64 >/dev/null || die "attach-ns $FLOOD failed"
ATTACHED+=("$FLOOD")

cat >"$WORK/client.py" <<'EOF'
# HOT_QPS queries/s over 20 hot names and MISS_QPS/s unique names, for SECS seconds; a hot query
# waits at most 2 s, a recursed one 5 s (the resolver's own upstream timeouts and retries). Prints: hot_sent hot_answered miss_sent miss_answered p50_ms p99_ms
import random, select, socket, struct, sys, time
addr, hot_qps, miss_qps, secs, suffix = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def query(i, name):
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1)
hot = ["hot%d.%s" % (i, suffix) for i in range(20)]
tag = random.randrange(1 << 30)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
pending = {}  # id -> (sent time, kind)
sent = {"hot": 0, "miss": 0}; answered = {"hot": 0, "miss": 0}; lat = []
start = time.time(); nh = start; nm = start; i = 0; k = 0
while True:
    now = time.time()
    if now - start >= secs and not pending:
        break
    for kind, rate in (("hot", hot_qps), ("miss", miss_qps)):
        due = nh if kind == "hot" else nm
        while now - start < secs and now >= due and rate > 0:
            i = (i + 1) & 0xffff
            if i in pending:
                break
            name = hot[i % len(hot)] if kind == "hot" else "u%d-%d.%s" % (tag, k, suffix)
            k += kind == "miss"
            try:
                s.sendto(query(i, name), (addr, 53))
            except OSError:
                pass
            sent[kind] += 1; pending[i] = (now, kind)
            due += 1.0 / rate
        if kind == "hot": nh = due
        else: nm = due
    for q in [q for q, (t, kind) in pending.items() if now - t > (2.0 if kind == "hot" else 5.0)]:
        del pending[q]
    r, _, _ = select.select([s], [], [], 0.002)
    while r:
        try:
            data = s.recv(4096)
        except OSError:
            break
        if len(data) >= 12:
            (rid,) = struct.unpack("!H", data[:2])
            if rid in pending and data[3] & 0x0f == 0:
                t, kind = pending.pop(rid)
                answered[kind] += 1
                lat.append((time.time() - t) * 1000)
        r, _, _ = select.select([s], [], [], 0)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
print(sent["hot"], answered["hot"], sent["miss"], answered["miss"], "%.2f" % p(0.5), "%.2f" % p(0.99))
EOF

cat >"$WORK/flood.py" <<'EOF'
# UDP to port 9 and TCP SYNs to port 53 of DST from SRC, random source ports, UDP_PPS and SYN_PPS
# frames/s for SECS seconds (raw sockets; 256 prebuilt frames of each kind). Prints: udp_sent syn_sent secs
import random, socket, struct, sys, time
src, dst, udp_pps, syn_pps, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
S, D = socket.inet_aton(src), socket.inet_aton(dst)
def ip(proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), random.randrange(65536), 0, 64, proto, 0, S, D)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
def udp(sport):
    data = b"flood" * 4
    return ip(17, struct.pack("!HHHH", sport, 9, 8 + len(data), 0) + data)
def syn(sport):
    seq = random.randrange(1 << 32)
    t = struct.pack("!HHIIBBHHH", sport, 53, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    ph = S + D + struct.pack("!BBH", 0, 6, len(t))
    t = t[:16] + struct.pack("!H", csum(ph + t)) + t[18:]
    return ip(6, t)
frames = {"udp": [udp(random.randrange(1024, 65536)) for _ in range(256)],
          "syn": [syn(random.randrange(1024, 65536)) for _ in range(256)]}
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = {"udp": 0, "syn": 0}
start = time.time(); due = {"udp": start, "syn": start}; rate = {"udp": udp_pps, "syn": syn_pps}
while True:
    now = time.time()
    if now - start >= secs:
        break
    for kind in ("udp", "syn"):
        n = 0
        while due[kind] <= now and n < 64:
            try:
                s.sendto(frames[kind][sent[kind] & 255], (dst, 0))
                sent[kind] += 1
            except OSError:
                pass
            due[kind] += 1.0 / rate[kind]
            n += 1
    wait = min(due.values()) - time.time()
    if wait > 0:
        time.sleep(min(0.001, wait))
print(sent["udp"], sent["syn"], "%.2f" % (time.time() - start))
EOF

# The hot names, cached before the measurement.
ip netns exec "$CLI" python3 "$WORK/client.py" "$NODE4" 100 0 1 "$LAB_WILD_SUFFIX" >/dev/null

HOT_QPS=200 MISS_QPS=10
run_phase() {  # NAME FLOOD(0|1) -> $WORK/NAME.{before,after,client,flood}
  local name=$1 flood=$2
  snapshot >"$WORK/$name.before"
  if ((flood)); then
    ip netns exec "$FLOOD" python3 "$WORK/flood.py" "$FLOOD4" "$NODE4" "$UDP_PPS" "$SYN_PPS" "$FLOOD_SECS" \
      >"$WORK/$name.flood" 2>&1 &
    PIDS[flood]=$!
    sleep 0.5  # the flood is on before the client starts
  fi
  local secs=$BASE_SECS
  ((flood)) && secs=$((FLOOD_SECS - 1))
  ip netns exec "$CLI" python3 "$WORK/client.py" "$NODE4" "$HOT_QPS" "$MISS_QPS" "$secs" "$LAB_WILD_SUFFIX" \
    >"$WORK/$name.client" 2>&1 || die "$name: client failed: $(cat "$WORK/$name.client")"
  if ((flood)); then
    wait "${PIDS[flood]}" || die "flood generator failed: $(cat "$WORK/$name.flood")"
    unset 'PIDS[flood]'
  fi
  snapshot >"$WORK/$name.after"
}

log "baseline: $HOT_QPS hot + $MISS_QPS unique queries/s for ${BASE_SECS}s"
run_phase base 0
log "flood: UDP to a closed port at $UDP_PPS/s and SYNs to port 53 at $SYN_PPS/s for ${FLOOD_SECS}s, same client"
run_phase flood 1

# ------------------------------------------------------------------------- figures ----
report() {  # NAME
  local n=$1 hs ha ms ma p50 p99 qok hit
  read -r hs ha ms ma p50 p99 <"$WORK/$n.client"
  qok=$(delta "$WORK/$n.before" "$WORK/$n.after" query_ok)
  hit=$(delta "$WORK/$n.before" "$WORK/$n.after" answer_hit)
  printf 'flood: %-8s hot answered %d/%d, recursion answered %d/%d, latency p50 %s ms p99 %s ms, hit rate %s (%d hits / %d queries)\n' \
    "$n" "$ha" "$hs" "$ma" "$ms" "$p50" "$p99" "$(python3 -c "print('%.3f' % ($hit / max($qok, 1)))")" "$hit" "$qok"
}
report base
report flood
read -r udp_sent syn_sent flood_secs <"$WORK/flood.flood"
udp_pps=$(python3 -c "print(int($udp_sent / $flood_secs))")
syn_pps=$(python3 -c "print(int($syn_sent / $flood_secs))")
b=$WORK/flood.before a=$WORK/flood.after
log "flood sent: UDP $udp_sent ($udp_pps/s), SYN $syn_sent ($syn_pps/s) in ${flood_secs}s; budgets per node ($WORKERS workers): other $((OTHER_RATE * WORKERS))/s, dns-tcp $((DNS_TCP_RATE * WORKERS))/s"
log "node counters during the flood: rx $(delta "$b" "$a" rx_packets), dropped over budget: other $(delta "$b" "$a" drop_punt_other), dns-tcp $(delta "$b" "$a" drop_punt_dns_tcp); punted to Linux: not-ours $(delta "$b" "$a" punt_not_ours), not-udp $(delta "$b" "$a" punt_not_udp); ring full $(delta "$b" "$a" drop_exception_full), ring reserve $(delta "$b" "$a" drop_exception_reserve); routing over budget $(delta "$b" "$a" drop_punt_routing), resolver replies over budget $(delta "$b" "$a" drop_punt_resolver)"
NODE_MASTER=$(transitions node) PEER_MASTER=$(transitions peer)
log "VRRP: node became master $((NODE_MASTER - NODE_MASTER0)) times, peer $((PEER_MASTER - PEER_MASTER0)) times during the test"

# ------------------------------------------------------------------------- verdicts ----
fails=0
check() { if ! eval "$1"; then echo "flood: FAIL: $2" >&2; fails=$((fails + 1)); fi; }
read -r bhs bha bms bma _ _ <"$WORK/base.client"
read -r fhs fha fms fma _ _ <"$WORK/flood.client"
check "((udp_pps >= 10 * OTHER_RATE * WORKERS))" "the UDP flood ($udp_pps/s) is not 10x the 'other' budget ($((OTHER_RATE * WORKERS))/s): generator too slow here"
check "((syn_pps >= 10 * DNS_TCP_RATE * WORKERS))" "the SYN flood ($syn_pps/s) is not 10x the 'dns-tcp' budget ($((DNS_TCP_RATE * WORKERS))/s): generator too slow here"
check "(($(delta "$b" "$a" drop_punt_other) > 0 && $(delta "$b" "$a" drop_punt_dns_tcp) > 0))" "the flood never reached the budgets"
# Recursion under the flood as well as without it (a loaded lab machine slows both phases alike).
check "((fma * 100 >= fms * 95 || fma * bms * 100 >= bma * fms * 95))" \
  "under the flood recursion answered only $fma of $fms (baseline $bma of $bms)"
check "((fha * 100 >= fhs * 99))" "under the flood the hot names were answered only $fha of $fhs"
bq=$(delta "$WORK/base.before" "$WORK/base.after" query_ok) bh=$(delta "$WORK/base.before" "$WORK/base.after" answer_hit)
fq=$(delta "$b" "$a" query_ok) fh=$(delta "$b" "$a" answer_hit)
check "python3 -c 'import sys; sys.exit(0 if $fh / max($fq, 1) >= $bh / max($bq, 1) - 0.02 else 1)'" \
  "the hit rate dropped under the flood ($fh/$fq vs $bh/$bq)"
check "((NODE_MASTER == NODE_MASTER0 && PEER_MASTER == PEER_MASTER0))" "VRRP flapped: the node stopped hearing its peer"
check "kill -0 ${PIDS[dp]} 2>/dev/null" "tern-dataplane died"
((fails == 0)) || exit 1
log "all checks passed"
