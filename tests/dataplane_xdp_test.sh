#!/usr/bin/env bash
# tern-dataplane on net_af_xdp in the lab (hw-profiles/lab-veth-xdp.conf):
#
#   tl-xcli (198.18.0.102) --lab bridge-- tl-xdpp0 ==veth== tl-dp0 (XDP program -> tern's XDP
#   socket, net_af_xdp) --> worker --miss--> tl-exc0 (TAP, 198.18.0.53) --> the lab's unbound
#
# Asserts what a user sees: the port is an AF_XDP one (an XDP program on tl-dp0 while tern runs,
# none after), a query recursed through the exception path and then answered from the cache
# (hit counter, same records), IPv6, TCP and ping (the service thread's frames leave through
# worker 0's TX queue: a veth has one queue pair), and a clean SIGTERM shutdown.
#
# usage: tests/dataplane_xdp_test.sh BUILD_ROOT   (root; uses only 198.18.0.0/16, 2001:2::/64)
set -euo pipefail

SRC=$(dirname "$(readlink -f "$0")")/..
BUILD=$(readlink -f "${1:-$SRC/build}")
DP=$BUILD/dataplane/tern-dataplane
LAB=$SRC/tests/lab/lab.sh
PROFILE=$SRC/hw-profiles/lab-veth-xdp.conf
NODE=tl-xnode CLI=tl-xcli
TERN4=198.18.0.53 TERN6=2001:2::53 CLI4=198.18.0.102 CLI6=2001:2::102
WORK=$(mktemp -d /tmp/tern-dp-xdp.XXXXXX)
SOCK=$WORK/dataplane.sock
DP_PID= LAB_WAS_UP=0 FAILED=0

[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
[[ -x $DP ]] || { echo "FAIL: $DP not built"; exit 1; }
# The PMD is a plugin (librte-net-af-xdp23, scripts/install-deps.sh); without it the vdev cannot probe.
ls /usr/lib/*/dpdk/pmds-*/librte_net_af_xdp.so* >/dev/null 2>&1 ||
  { echo "FAIL: no net_af_xdp PMD (apt-get install librte-net-af-xdp23)"; exit 1; }

log() { echo "xdp: $*"; }
fail() { echo "FAIL: $*" >&2; FAILED=1; }
die() { echo "FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0 || FAILED)) && [[ -S $SOCK ]]; then
    echo "--- dataplane counters (non-zero)"; ctl stats | awk '$NF != "0"'
  fi
  if [[ -n $DP_PID ]] && kill -0 "$DP_PID" 2>/dev/null; then
    kill -TERM "$DP_PID"; wait "$DP_PID" 2>/dev/null
  fi
  "$LAB" detach-ns "$CLI" >/dev/null 2>&1
  "$LAB" unbound-stop "$NODE" >/dev/null 2>&1
  if [[ -e /run/netns/$NODE ]]; then
    for p in $(ip netns pids "$NODE" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    ip netns del "$NODE"
  fi
  ip -n tl-inet link del tl-xdpp0 >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  if ((rc != 0 || FAILED)) && [[ -f $WORK/dp.log ]]; then echo "--- tern-dataplane log"; tail -40 "$WORK/dp.log"; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

ctl() {
  python3 - "$SOCK" "$*" <<'PY'
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
PY
}
counter() { ctl stats | awk -v n="tern_dp_$1_total" '$1 ~ "^"n"[{]" { s += $2 } END { print s + 0 }'; }
q() { ip netns exec "$1" kdig +time=3 +retry=1 "${@:2}"; }
rrs() { awk '/ANSWER SECTION/ { a = 1; next } /^;;/ { a = 0 } a && NF >= 5 { $2 = ""; print }' | sort; }
xdp_prog() { ip -n "$NODE" -d link show tl-dp0 2>/dev/null | grep -Eo 'prog/xdp id [0-9]+|xdp(generic|drv)? ' | head -1; }

"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
"$LAB" start
# shellcheck disable=SC1091
eval "$("$LAB" env)"

log "node namespace $NODE: veth tl-dp0 (one queue pair) to the lab bridge"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
ip -n "$NODE" link add tl-dp0 type veth peer name tl-xdpp0
# Nothing but tern answers on tl-dp0: no addresses, no IPv6 link-local, no ARP.
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.tl-dp0.disable_ipv6=1
ip -n "$NODE" link set tl-dp0 arp off up
"$LAB" attach-if tl-xdpp0 "$NODE"
# Frames from local sockets cross veths and the bridge with the UDP checksum left to "hardware"
# (CHECKSUM_PARTIAL); XDP hands the raw frame on, so complete it on the bridge port, as a wire would.
ip netns exec "$LAB_NS_INET" ethtool -K tl-xdpp0 tx off >/dev/null

log "tern-dataplane --profile lab-veth-xdp"
ip netns exec "$NODE" "$DP" --profile "$PROFILE" --control-socket "$SOCK" --allow "$CLI4/32" --allow "$CLI6/128" \
  >"$WORK/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 150); do
  [[ -S $SOCK ]] && ip -n "$NODE" link show tl-exc0 >/dev/null 2>&1 && break
  kill -0 "$DP_PID" 2>/dev/null || die "tern-dataplane exited at startup: $(tail -8 "$WORK/dp.log")"
  sleep 0.1
done
[[ -S $SOCK ]] || die "no control socket after 15 s"
grep -q 'NIC net_af_xdp0 (net_af_xdp)' "$WORK/dp.log" || fail "the NIC port is not net_af_xdp: $(grep 'NIC ' "$WORK/dp.log")"
grep -q 'service thread sends through worker 0' "$WORK/dp.log" ||
  fail "one queue pair, but the service thread does not send through worker 0: $(grep 'NIC ' "$WORK/dp.log")"
prog=$(xdp_prog)
[[ -n $prog ]] || fail "no XDP program attached to tl-dp0 while tern-dataplane runs: $(ip -n "$NODE" -d link show tl-dp0)"
log "   $(grep 'NIC ' "$WORK/dp.log" | sed 's/^tern-dataplane: //'); tl-dp0: $prog"
ip -n "$NODE" addr add "$TERN4/16" dev tl-exc0
ip -n "$NODE" addr add "$TERN6/64" dev tl-exc0 nodad

log "resolver behind the exception interface: the lab's unbound on $TERN4/$TERN6"
# unbound-start waits until '. SOA' resolves: its upstream queries leave through worker 0's queue.
"$LAB" unbound-start "$NODE" "$TERN4" "$TERN6"
"$LAB" attach-ns "$CLI" "$CLI4/16" "$CLI6/64"

log "1. first query recursed, second answered from the cache, through the XDP socket"
rx0=$(counter rx_packets)
fills0=$(ctl stats | awk '$1 == "tern_dp_service_fill_inserted_total" { print $2 }')
a1=$(q "$CLI" @"$TERN4" www.alpha.lab A) || die "first query failed"
[[ $a1 == *"status: NOERROR"* && $a1 == *198.18.2.1* ]] || die "first answer wrong: $a1"
fills1=$(ctl stats | awk '$1 == "tern_dp_service_fill_inserted_total" { print $2 }')
((fills1 > fills0)) || fail "the resolver's answer was not stored in the cache (fill_inserted $fills0 -> $fills1)"
h=$(counter answer_hit)
a2=$(q "$CLI" @"$TERN4" www.alpha.lab A) || die "second query failed"
(($(counter answer_hit) > h)) || fail "second query was not a cache hit"
[[ "$(rrs <<<"$a1")" == "$(rrs <<<"$a2")" ]] || fail "cached answer differs: $(rrs <<<"$a1") vs $(rrs <<<"$a2")"
(($(counter rx_packets) > rx0)) || fail "the worker received nothing from the AF_XDP queue"

log "2. 100 cached queries, every one answered from the cache"
for i in $(seq 100); do echo "www.alpha.lab A"; done >"$WORK/hits.txt"
h=$(counter answer_hit)
ip netns exec "$CLI" dnsperf -s "$TERN4" -d "$WORK/hits.txt" -n 1 -c 1 -q 10 -t 2 >"$WORK/dnsperf.log" 2>&1 ||
  fail "dnsperf failed: $(tail -3 "$WORK/dnsperf.log")"
grep -q 'Queries completed: *100 ' "$WORK/dnsperf.log" || fail "not every query answered: $(grep -E 'Queries (sent|completed|lost)' "$WORK/dnsperf.log" | tr -s ' ')"
dh=$(($(counter answer_hit) - h))
((dh == 100)) || fail "answer_hit moved by $dh for 100 cached queries"

log "3. IPv6 (NDP through the exception path), cached on the second query"
a6=$(q "$CLI" @"$TERN6" www.beta.zz AAAA) || die "IPv6 query failed"
[[ $a6 == *"2001:2::4:1"* ]] || fail "IPv6 answer wrong: $a6"
h=$(counter answer_hit)
q "$CLI" @"$TERN6" www.beta.zz AAAA >/dev/null || fail "second IPv6 query failed"
(($(counter answer_hit) > h)) || fail "second IPv6 query was not a cache hit"

log "4. TCP and ping (the service thread's frames through worker 0's TX queue)"
at=$(q "$CLI" +tcp @"$TERN4" www.alpha.lab A) || fail "TCP query failed"
[[ $at == *198.18.2.1* ]] || fail "TCP answer wrong: $at"
ip netns exec "$CLI" ping -c 2 -W 2 "$TERN4" >/dev/null || fail "ping $TERN4 failed"
ip netns exec "$CLI" ping -6 -c 2 -W 2 "$TERN6" >/dev/null || fail "ping $TERN6 failed"
drops=$(ctl stats | awk '$1 == "tern_dp_service_to_nic_dropped_total" { print $2 }')
((drops == 0)) || fail "the service thread dropped $drops frames for the NIC"

log "5. SIGTERM stops cleanly and takes the XDP program off tl-dp0"
kill -TERM "$DP_PID"
rc=0; wait "$DP_PID" || rc=$?
DP_PID=
((rc == 0)) || fail "tern-dataplane exited $rc on SIGTERM"
[[ ! -e $SOCK ]] || fail "control socket left behind after shutdown"
[[ -z $(xdp_prog) ]] || fail "XDP program still attached to tl-dp0 after shutdown: $(xdp_prog)"

if ((FAILED)); then echo "dataplane xdp: FAILED"; exit 1; fi
echo "dataplane xdp: all checks passed"
