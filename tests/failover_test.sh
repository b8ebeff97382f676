#!/usr/bin/env bash
# Failover on software failure, end to end: two tern nodes share the virtual service address
# 198.18.0.55 through keepalived (VRRPv3, unicast, 250 ms adverts); each node's keepalived
# tracks its own /readyz. A client namespace sends a steady, bounded query stream to the
# address. On node A we inject, one after the other:
#   (a) the dataplane dies (kill -9 tern-dataplane; without a dataplane: kill -9 tern-control)
#   (b) tern-control hangs (SIGSTOP): the port stays open, nothing answers
#   (c) A's upstream path breaks (blackhole route to the lab's authoritative servers); A
#       still answers cached names, but its recursion canary fails
#   (d) the operator drains A (`ternctl drain`) for an upgrade
# and check that the address moves to B by itself and the client's answers resume. Printed per
# case: seconds from the fault to the first answer B served on the address (tcpdump on B) and
# the client queries lost. A is restored, and takes the address back, between cases.
#
# Node shape: when BUILD_DIR has tern-dataplane, each node is the appliance (tern-dataplane
# with a lab-tap profile, its NIC TAP on the lab bridge, tern-control behind the exception
# interface tl-exc0, keepalived on tl-exc0). Without it (or with TERN_FAILOVER_MODE=plain),
# tern-control sits directly on a veth to the lab bridge.
#
# usage: failover_test.sh BUILD_DIR     (root; uses the lab in tests/lab)
set -euo pipefail

BUILD=$(readlink -f "${1:?usage: failover_test.sh BUILD_DIR}")
SRC=$(dirname "$(readlink -f "$0")")/..
LAB=$SRC/tests/lab/lab.sh
TERN_CONTROL=$BUILD/control/tern-control
TERNCTL=$BUILD/control/ternctl
DATAPLANE=$BUILD/dataplane/tern-dataplane
MODE=${TERN_FAILOVER_MODE:-}
if [[ -z $MODE ]]; then
  if [[ -x $DATAPLANE ]]; then MODE=appliance; else MODE=plain; fi
fi

die() {
  echo "failover_test: FAIL: $*" >&2
  [[ -e /run/netns/tl-inet ]] ||
    echo "failover_test: (the lab is gone: another lab.sh stop ran meanwhile and killed the nodes)" >&2
  exit 1
}
log() { echo "failover_test: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for b in "$TERN_CONTROL" "$TERNCTL"; do [[ -x $b ]] || die "$b not built"; done
for c in keepalived curl tcpdump python3; do
  command -v "$c" >/dev/null || die "$c missing: run scripts/install-deps.sh"
done

NS_A=tl-foA NS_B=tl-foB NS_C=tl-focli
A4=198.18.0.53 B4=198.18.0.54 VIP=198.18.0.55 CLIENT4=198.18.0.110
HTTP_PORT=9153
RUN=$(mktemp -d /tmp/tern-failover.XXXXXX)
LAB_STARTED=0
declare -A PIDS=()  # name -> pid of every process this test started
ATTACHED=()
MADE_NS=()

cleanup() {
  local rc=$?
  set +e
  for name in "${!PIDS[@]}"; do
    kill -CONT "${PIDS[$name]}" 2>/dev/null
    kill "${PIDS[$name]}" 2>/dev/null
  done
  sleep 0.3
  for name in "${!PIDS[@]}"; do kill -9 "${PIDS[$name]}" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${ATTACHED[@]}"; do "$LAB" detach-ns "$ns" >/dev/null 2>&1; done
  for ns in "${MADE_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  for nic in tl-nicfoA tl-nicfoB; do ip -n tl-inet link del "$nic" >/dev/null 2>&1; done
  ((LAB_STARTED)) && "$LAB" stop >/dev/null 2>&1
  if ((rc != 0)); then
    log "logs kept in $RUN"
  else
    rm -rf "$RUN"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$LAB" status >/dev/null 2>&1; then
  log "starting the lab"
  "$LAB" start >"$RUN/lab-start.log" 2>&1 || die "lab.sh start failed (see $RUN/lab-start.log)"
  LAB_STARTED=1
fi
eval "$("$LAB" env)"

attach() {
  "$LAB" attach-ns "$1" "$2/16" "$3/64" >/dev/null || die "lab.sh attach-ns $1 failed"
  ATTACHED+=("$1")
}
attach "$NS_C" "$CLIENT4" 2001:2::110
if [[ $MODE == plain ]]; then
  attach "$NS_A" "$A4" 2001:2::53
  attach "$NS_B" "$B4" 2001:2::54
  IF=tl0
else
  for ns in "$NS_A" "$NS_B"; do
    ip netns add "$ns"
    MADE_NS+=("$ns")
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  IF=tl-exc0
fi
log "mode: $MODE (service interface $IF)"

# ------------------------------------------------------------------------- nodes ----
# tern-control binds the virtual address whether or not the node holds it right now
# (ip_nonlocal_bind, as with any VRRP service), so a takeover needs no restart.
write_node() {
  local n=$1 ns=$2 addr=$3 prio=$4 peer=$5 dir=$RUN/$1
  mkdir -p "$dir/state"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_nonlocal_bind=1
  cat >"$dir/tern.conf" <<EOF
[server]
listen = 127.0.0.1:53 $addr:53 $VIP:53
allow = 127.0.0.0/8 198.18.0.0/15
control-socket = $dir/control.sock
$([[ $MODE == appliance ]] && echo "dataplane-socket = $dir/dataplane.sock")
state-dir = $dir/state
[recursion]
root-hints = $LAB_ROOT_HINTS
upstream-timeout = 300ms
retries = 1
[health]
http-listen = 127.0.0.1:$HTTP_PORT
canary = *.$LAB_WILD_SUFFIX A
interval = 300ms
canary-deadline = 800ms
EOF
  # keepalived: a failing readiness check lowers the priority below the peer's (weight), so
  # the healthier node holds the address, and when both fail the address still stays up.
  cat >"$dir/keepalived.conf" <<EOF
global_defs {
  router_id tern-$n
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_script tern_ready {
  script "/usr/bin/curl -sf -m 0.8 -o /dev/null http://127.0.0.1:$HTTP_PORT/readyz"
  interval 1
  timeout 1
  fall 1
  rise 2
  weight -100
}
vrrp_instance tern {
  state BACKUP
  interface $IF
  virtual_router_id 53
  priority $prio
  # 0.25 s, not the 0.1 s of ops/keepalived: the lab's two cores are shared by both nodes'
  # dataplanes and everything else, and a late advert must not look like a dead peer.
  advert_int 0.25
  unicast_src_ip $addr
  unicast_peer {
    $peer
  }
  virtual_ipaddress {
    $VIP/32 dev $IF
  }
  track_script {
    tern_ready
  }
}
EOF
}

# The appliance's dataplane: a lab-tap profile whose NIC TAP is this node's, moved onto the
# lab bridge; the node's address goes on the exception interface.
start_dataplane() {
  local n=$1 ns=$2 addr=$3 dir=$RUN/$1 nic=tl-nicfo$1
  sed "s/iface=tl-nic0/iface=$nic/" "$SRC/hw-profiles/lab-tap.conf" >"$dir/profile.conf"
  rm -f "$dir/dataplane.sock"
  ip netns exec "$ns" "$DATAPLANE" --profile "$dir/profile.conf" --control-socket "$dir/dataplane.sock" \
    --allow 198.18.0.0/15 >>"$dir/tern-dataplane.log" 2>&1 &
  PIDS[dataplane_$n]=$!
  wait_for 20 test -S "$dir/dataplane.sock" || die "tern-dataplane $n did not start: $(tail -3 "$dir/tern-dataplane.log")"
  "$LAB" attach-if "$nic" "$ns" >/dev/null || die "lab.sh attach-if $nic $ns failed"
  ip -n "$ns" addr add "$addr/16" dev tl-exc0
  ip -n "$ns" link set tl-exc0 up
}

start_control() {
  local n=$1 ns=$2
  ip netns exec "$ns" "$TERN_CONTROL" -f -c "$RUN/$n/tern.conf" >>"$RUN/$n/tern-control.log" 2>&1 &
  PIDS[control_$n]=$!
}

start_keepalived() {
  local n=$1 ns=$2 dir=$RUN/$1
  ip netns exec "$ns" keepalived -n -l -D --vrrp -f "$dir/keepalived.conf" \
    -p "$dir/keepalived.pid" -r "$dir/vrrp.pid" >"$dir/keepalived.log" 2>&1 &
  PIDS[keepalived_$n]=$!
}

holds_vip() { ip -n "$1" -4 addr show dev "$IF" 2>/dev/null | grep -q " $VIP/"; }

# Polls `cmd` every 100 ms for up to $1 seconds.
wait_for() {
  local secs=$1
  shift
  local end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

health() { ip netns exec "$1" "$TERNCTL" -s "$RUN/$2/control.sock" health; }
ready() { health "$1" "$2" >/dev/null 2>&1; }

write_node A "$NS_A" "$A4" 150 "$B4"
write_node B "$NS_B" "$B4" 100 "$A4"
if [[ $MODE == appliance ]]; then
  start_dataplane A "$NS_A" "$A4"
  start_dataplane B "$NS_B" "$B4"
fi
start_control A "$NS_A"
start_control B "$NS_B"
wait_for 20 ready "$NS_A" A || die "node A never became ready: $(health "$NS_A" A)"
wait_for 20 ready "$NS_B" B || die "node B never became ready: $(health "$NS_B" B)"
log "A: $(health "$NS_A" A)"
log "B: $(health "$NS_B" B)"

# The HTTP side says the same, and /metrics is a real exposition.
curl_ns() { ip netns exec "$1" curl -s -m 2 "${@:2}"; }
[[ $(curl_ns "$NS_A" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz") == 200 ]] ||
  die "A: /readyz is not 200 while ternctl health says ready"
curl_ns "$NS_A" "http://127.0.0.1:$HTTP_PORT/metrics" >"$RUN/metrics-A.txt"
for m in 'tern_build_info{version="' 'tern_health_ready 1' 'tern_health_check_success{check="canary"} 1' \
  'tern_config_reload_failures_total 0' 'tern_config_lkg_in_use 0'; do
  grep -qF "$m" "$RUN/metrics-A.txt" || die "A: /metrics lacks '$m'"
done
if command -v promtool >/dev/null; then
  promtool check metrics <"$RUN/metrics-A.txt" >"$RUN/promtool.log" 2>&1 ||
    die "promtool check metrics rejects /metrics: $(cat "$RUN/promtool.log")"
fi

start_keepalived A "$NS_A"
start_keepalived B "$NS_B"
wait_for 15 holds_vip "$NS_A" || die "A never took $VIP (see $RUN/A/keepalived.log)"
holds_vip "$NS_B" && die "both nodes hold $VIP"
log "A holds $VIP"

# ------------------------------------------------------------------------ client ----
cat >"$RUN/client.py" <<'EOF'
# Steady query stream: RATE qps for DURATION seconds to ADDR, one UDP socket, each query
# waits at most 1 s. Prints: sent answered lost
import random, select, socket, struct, sys, time
addr, rate, duration, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def q(i):
    hdr = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0)
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.strip(".").split(".")) + b"\0"
    return hdr + wire + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
start = time.time(); sent = {}; answered = 0; lost = 0; total = 0; next_send = start; i = 0
while True:
    now = time.time()
    if now - start >= duration and not sent:
        break
    if now - start < duration and now >= next_send:
        i = (i + 1) & 0xffff
        try:
            total += 1
            s.sendto(q(i), (addr, 53)); sent[i] = now
        except OSError:
            lost += 1
        next_send += 1.0 / rate
    for k in [k for k, t in sent.items() if now - t > 1.0]:
        del sent[k]; lost += 1
    r, _, _ = select.select([s], [], [], max(0.0, min(0.02, next_send - time.time())))
    if r:
        try:
            data = s.recv(2048)
        except OSError:
            continue
        if len(data) >= 12:
            (rid,) = struct.unpack("!H", data[:2])
            if rid in sent and data[3] & 0x0f == 0:
                del sent[rid]; answered += 1
print(total, answered, lost)
EOF

# One fault case: client stream to the VIP, tcpdump on B's link for answers leaving the VIP,
# `inject` at t=2 s, `restore` after the stream.
run_case() {
  local name=$1 inject=$2 restore=$3 dir=$RUN/case-$1
  mkdir -p "$dir"
  # B's answers on the address: plain mode leave through B's veth; in the appliance the fast
  # path answers hits itself, so watch B's NIC TAP on the bridge side.
  if [[ $MODE == plain ]]; then
    ip netns exec "$NS_B" tcpdump -i tl0 -n -l -tt -Q out "udp and src host $VIP and src port 53" \
      >"$dir/b-answers.txt" 2>"$dir/tcpdump.log" &
  else
    ip netns exec tl-inet tcpdump -i tl-nicfoB -n -l -tt "udp and src host $VIP and src port 53" \
      >"$dir/b-answers.txt" 2>"$dir/tcpdump.log" &
  fi
  PIDS[tcpdump]=$!
  sleep 0.5
  ip netns exec "$NS_C" python3 "$RUN/client.py" "$VIP" 50 12 "www.$LAB_WILD_SUFFIX" \
    >"$dir/client.txt" 2>&1 &
  PIDS[client]=$!
  sleep 2
  local t0
  t0=$(date +%s.%N)
  $inject
  # Poll rather than plain `wait`: bash's wait also returns when another child stops (SIGSTOP).
  while kill -0 "${PIDS[client]}" 2>/dev/null; do sleep 0.2; done
  wait "${PIDS[client]}" || die "$name: client failed: $(cat "$dir/client.txt")"
  unset 'PIDS[client]'
  kill "${PIDS[tcpdump]}" 2>/dev/null; wait "${PIDS[tcpdump]}" 2>/dev/null || true
  unset 'PIDS[tcpdump]'
  local first sent answered lost
  read -r sent answered lost <"$dir/client.txt"
  first=$(awk -v t0="$t0" '$1 + 0 >= t0 + 0 { print $1; exit }' "$dir/b-answers.txt")
  [[ -n $first ]] || die "$name: B never answered on $VIP after the fault (address did not move)"
  holds_vip "$NS_B" || die "$name: B does not hold $VIP after the fault"
  ((answered > 0)) || die "$name: the client got no answers at all"
  printf 'failover_test: case %-28s address moved to B, first answer from B %.2f s after the fault; client sent %d, answered %d, lost %d\n' \
    "$name" "$(python3 -c "print($first - $t0)")" \
    "$sent" "$answered" "$lost" >&2
  $restore
  wait_for 20 ready "$NS_A" A || die "$name: A not ready again after restore: $(health "$NS_A" A)"
  wait_for 15 holds_vip "$NS_A" || die "$name: A did not take $VIP back after restore"
  wait_for 5 bash -c "! ip -n $NS_B -4 addr show dev $IF | grep -q ' $VIP/'" ||
    die "$name: B still holds $VIP after A took it back"
}

# (a) the process dies: the dataplane in the appliance, else tern-control
fault_kill() {
  local victim=control_A
  [[ $MODE == appliance ]] && victim=dataplane_A
  kill -9 "${PIDS[$victim]}"
  wait "${PIDS[$victim]}" 2>/dev/null || true
}
restore_kill() {
  local rc=0
  health "$NS_A" A >"$RUN/a-health-dead.txt" 2>&1 || rc=$?
  ((rc == 2)) || die "(a): ternctl health exit $rc with the process dead, want 2 (not live): $(cat "$RUN/a-health-dead.txt")"
  if [[ $MODE == appliance ]]; then
    # The TAPs died with the process: a new dataplane, and keepalived on the new tl-exc0.
    kill "${PIDS[keepalived_A]}"; wait "${PIDS[keepalived_A]}" 2>/dev/null || true
    start_dataplane A "$NS_A" "$A4"
    start_keepalived A "$NS_A"
  else
    start_control A "$NS_A"
  fi
}
# (b) the process hangs
fault_stop() { kill -STOP "${PIDS[control_A]}"; }
restore_stop() {
  local rc=0
  health "$NS_A" A >"$RUN/a-health-stopped.txt" 2>&1 || rc=$?
  ((rc == 2)) || die "(b): ternctl health exit $rc with tern-control stopped, want 2 (not live)"
  kill -CONT "${PIDS[control_A]}"
}
# (c) the upstream path breaks; VRRP to B and the client keep working
fault_upstream() { ip -n "$NS_A" route add blackhole 198.18.1.0/24; }
restore_upstream() {
  local rc=0 out
  out=$(health "$NS_A" A 2>&1) || rc=$?
  ((rc == 1)) || die "(c): ternctl health exit $rc with the upstream broken, want 1: $out"
  [[ $out == *canary* ]] || die "(c): the reason does not name the canary: $out"
  ip -n "$NS_A" route del blackhole 198.18.1.0/24
}
# (d) drained for an upgrade
fault_drain() { ip netns exec "$NS_A" "$TERNCTL" -s "$RUN/A/control.sock" drain >/dev/null; }
restore_drain() {
  local rc=0
  health "$NS_A" A >/dev/null 2>&1 || rc=$?
  ((rc == 1)) || die "(d): ternctl health exit $rc while drained, want 1"
  # Into a file first: /metrics is larger than a pipe buffer, and grep -q closing the
  # pipe early would fail curl (SIGPIPE) under pipefail even on a match.
  curl_ns "$NS_A" "http://127.0.0.1:$HTTP_PORT/metrics" >"$RUN/metrics-A-drained.txt" || true
  grep -qx 'tern_health_draining 1' "$RUN/metrics-A-drained.txt" ||
    die "(d): /metrics does not say tern_health_draining 1"
  # Drained still answers: a client asking A directly gets an answer.
  ip netns exec "$NS_C" python3 "$RUN/client.py" "$A4" 5 1 "www.$LAB_WILD_SUFFIX" >"$RUN/drained-direct.txt"
  read -r _ answered _ <"$RUN/drained-direct.txt"
  ((answered > 0)) || die "(d): drained A stopped answering queries sent to it directly"
  ip netns exec "$NS_A" "$TERNCTL" -s "$RUN/A/control.sock" undrain >/dev/null
}

if [[ $MODE == appliance ]]; then
  run_case "(a) kill -9 tern-dataplane" fault_kill restore_kill
else
  run_case "(a) kill -9 tern-control" fault_kill restore_kill
fi
run_case "(b) SIGSTOP tern-control" fault_stop restore_stop
run_case "(c) upstream blackholed" fault_upstream restore_upstream
run_case "(d) ternctl drain" fault_drain restore_drain
log "PASS"
