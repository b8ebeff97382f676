#!/usr/bin/env bash
# End to end through the whole appliance in the lab:
#
#   tl-cli (198.18.0.100) --lab bridge-- tl-nic0 (net_tap NIC) --> tern-dataplane worker
#        --miss--> tl-exc0 (exception TAP, 198.18.0.53) --> resolver in tl-node
#        --upstream--> tl-exc0 --> NIC --> lab authoritative servers
#
# Asserts what a user sees: answers via recursion, then from the cache (hit counter on
# the control socket moves, same records), IPv6, TCP and ping through the exception path,
# flush, REFUSED for a client outside the allow list, a service address added to the
# exception interface answered at once (a VIP moving), hits still answered during a
# unique-name flood while the miss limiter drops, the readiness probe (a miss through the
# resolver, then a hit; with tern-control, `ternctl health -v` reports it), with tern-control
# the DNSSEC contract of the fast path (AD exactly as tern-control sets it for DO/AD/neither,
# bogus data never cached from a SERVFAIL, a CD=1 entry never answering CD=0), and a clean
# SIGTERM shutdown.
#
# usage: tests/dataplane_e2e_test.sh BUILD_ROOT      (root; uses only 198.18.0.0/16, 2001:2::/64)
# Resolver: the lab's unbound, or tern-control with TERN_E2E_RESOLVER=tern-control
# (binary: $TERN_CONTROL or BUILD_ROOT/control/tern-control), which then also pushes its
# allow list to the dataplane over the control socket.
set -euo pipefail

SRC=$(dirname "$(readlink -f "$0")")/..
BUILD=$(readlink -f "${1:-$SRC/build}")
DP=$BUILD/dataplane/tern-dataplane
LAB=$SRC/tests/lab/lab.sh
NODE=tl-node CLI=tl-cli OUT=tl-out
TERN4=198.18.0.53 TERN6=2001:2::53 VIP4=198.18.0.55
CLI4=198.18.0.100 CLI6=2001:2::100 OUT4=198.18.0.70 OUT6=2001:2::70
WORK=$(mktemp -d /tmp/tern-dp-e2e.XXXXXX)
SOCK=$WORK/dataplane.sock
DP_PID= LAB_WAS_UP=0 FAILED=0

[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
[[ -x $DP ]] || { echo "FAIL: $DP not built"; exit 1; }
TC=${TERN_CONTROL:-$BUILD/control/tern-control}
TCTL=${TERNCTL:-$(dirname "$TC")/ternctl}
PROBE4=198.18.255.254  # tern-dataplane's default --probe-source4
if [[ ${TERN_E2E_RESOLVER:-unbound} == tern-control && ! -x $TC ]]; then
  echo "FAIL: TERN_E2E_RESOLVER=tern-control but $TC is not built (or set TERN_CONTROL)"; exit 1
fi

log() { echo "e2e: $*"; }
fail() { echo "FAIL: $*" >&2; FAILED=1; }
die() { echo "FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0 || FAILED)) && [[ -S $SOCK ]]; then
    echo "--- dataplane counters (non-zero)"; ctl stats | awk '$NF != "0"'; ctl policy
  fi
  if [[ -n $DP_PID ]] && kill -0 "$DP_PID" 2>/dev/null; then
    kill -TERM "$DP_PID"; wait "$DP_PID" 2>/dev/null
  fi
  "$LAB" detach-ns "$CLI" >/dev/null 2>&1
  "$LAB" detach-ns "$OUT" >/dev/null 2>&1
  "$LAB" unbound-stop "$NODE" >/dev/null 2>&1
  if [[ -e /run/netns/$NODE ]]; then
    for p in $(ip netns pids "$NODE" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    ip netns del "$NODE"
  fi
  # tl-nic0 was moved onto the bridge; it dies with the dataplane's TAP fd, but be sure.
  ip -n tl-inet link del tl-nic0 >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  if ((rc != 0)) && [[ -f $WORK/dp.log ]]; then echo "--- tern-dataplane log"; tail -40 "$WORK/dp.log"; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# One request on the control socket; prints the reply lines, fails on ERR.
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
# Sum of a per-core counter over every core.
counter() { ctl stats | awk -v n="tern_dp_$1_total" '$1 ~ "^"n"[{]" { s += $2 } END { print s + 0 }'; }
# Cache hits answered to clients: the readiness probe (tern-control probes every second) is
# answered from the cache too, and counted in answer_hit as well as in probe_answered.
# One stats snapshot for both counters: a probe answered between two reads would count.
client_hits() {
  ctl stats | awk '$1 ~ /^tern_dp_answer_hit_total[{]/ { h += $2 }
                   $1 ~ /^tern_dp_probe_answered_total[{]/ { p += $2 } END { print h - p }'
}
svc_counter() { ctl stats | awk -v n="tern_dp_service_$1_total" '$1 == n { print $2 }'; }
q() { ip netns exec "$1" kdig +time=3 +retry=1 "${@:2}"; }
# The answer section's records without TTLs, sorted: "same answer, TTLs aside".
rrs() { awk '/ANSWER SECTION/ { a = 1; next } /^;;/ { a = 0 } a && NF >= 5 { $2 = ""; print }' | sort; }

"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
"$LAB" start
# shellcheck disable=SC1091
eval "$("$LAB" env)"

log "node namespace $NODE, tern-dataplane (built-in lab-tap profile)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
ip netns exec "$NODE" "$DP" --control-socket "$SOCK" --allow "$CLI4/32" --allow "$CLI6/128" \
  --miss-rate 100 --miss-burst 50 >"$WORK/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 100); do
  [[ -S $SOCK ]] && ip -n "$NODE" link show tl-exc0 >/dev/null 2>&1 && break
  kill -0 "$DP_PID" 2>/dev/null || die "tern-dataplane exited at startup: $(tail -5 "$WORK/dp.log")"
  sleep 0.1
done
[[ -S $SOCK ]] || die "no control socket after 10 s"
"$LAB" attach-if tl-nic0 "$NODE"
ip -n "$NODE" addr add "$TERN4/16" dev tl-exc0
ip -n "$NODE" addr add "$TERN6/64" dev tl-exc0 nodad

case ${TERN_E2E_RESOLVER:-unbound} in
tern-control)
  log "resolver behind the exception interface: tern-control on $TERN4/$TERN6 (pushes its allow list here)"
  mkdir -p "$WORK/state"
  cat >"$WORK/tern.conf" <<EOF
[server]
listen = $TERN4:53 [$TERN6]:53
allow = $CLI4/32 $CLI6/128 $TERN4/32 $PROBE4/32
control-socket = $WORK/control.sock
dataplane-socket = $SOCK
state-dir = $WORK/state
[recursion]
root-hints = $LAB_ROOT_HINTS
[dnssec]
trust-anchor-file = $LAB_TRUST_ANCHOR
[health]
probe = www.lab A
EOF
  ip netns exec "$NODE" "$TC" -c "$WORK/tern.conf" --foreground >"$WORK/tc.log" 2>&1 &
  ok=0
  for _ in $(seq 100); do
    out=$(ip netns exec "$NODE" kdig +time=2 +retry=0 @"$TERN4" . SOA 2>/dev/null) && [[ $out == *"status: NOERROR"* ]] && { ok=1; break; }
    sleep 0.2
  done
  ((ok)) || die "tern-control does not resolve '. SOA' after 20 s: $(tail -5 "$WORK/tc.log")"
  for _ in $(seq 50); do pol=$(ctl policy); [[ $pol == *"$TERN4/32"* ]] && break; sleep 0.1; done
  [[ $pol == *"$TERN4/32"* ]] || fail "tern-control's allow list was not pushed to the dataplane: $pol"
  ;;
unbound)
  log "resolver behind the exception interface: the lab's unbound on $TERN4/$TERN6"
  # unbound-start waits until '. SOA' resolves: its upstream queries cross the exception path.
  "$LAB" unbound-start "$NODE" "$TERN4" "$TERN6"
  ;;
*) die "TERN_E2E_RESOLVER must be unbound or tern-control" ;;
esac

"$LAB" attach-ns "$CLI" "$CLI4/16" "$CLI6/64"

log "1. first query recursed, second answered from the cache"
hits0=$(counter answer_hit)
fills0=$(svc_counter fill_inserted)
a1=$(q "$CLI" @"$TERN4" www.alpha.lab A) || die "first query failed"
[[ $a1 == *"status: NOERROR"* && $a1 == *198.18.2.1* ]] || die "first answer wrong: $a1"
fills1=$(svc_counter fill_inserted)
((fills1 > fills0)) || fail "the resolver's answer was not stored in the cache (fill_inserted $fills0 -> $fills1)"
a2=$(q "$CLI" @"$TERN4" www.alpha.lab A) || die "second query failed"
hits1=$(counter answer_hit)
((hits1 > hits0)) || fail "second query was not a cache hit (answer_hit $hits0 -> $hits1)"
[[ "$(rrs <<<"$a1")" == "$(rrs <<<"$a2")" ]] || fail "cached answer differs: $(rrs <<<"$a1") vs $(rrs <<<"$a2")"

log "2. IPv6 transport (NDP through the exception path), cached on the second query"
a6=$(q "$CLI" @"$TERN6" www.beta.zz AAAA) || die "IPv6 query failed"
[[ $a6 == *"2001:2::4:1"* ]] || fail "IPv6 answer wrong: $a6"
h=$(counter answer_hit)
q "$CLI" @"$TERN6" www.beta.zz AAAA >/dev/null || fail "second IPv6 query failed"
(($(counter answer_hit) > h)) || fail "second IPv6 query was not a cache hit"

log "3. TCP (Linux and the resolver through the exception path)"
at=$(q "$CLI" +tcp @"$TERN4" www.alpha.lab A) || fail "TCP query failed"
[[ $at == *198.18.2.1* ]] || fail "TCP answer wrong: $at"

log "4. ping and ARP of the service address"
ip -n "$CLI" neigh flush dev tl0
ip netns exec "$CLI" ping -c 2 -W 2 "$TERN4" >/dev/null || fail "ping $TERN4 failed"
ip -n "$CLI" neigh show "$TERN4" | grep -q lladdr || fail "no ARP entry for $TERN4"
ip netns exec "$CLI" ping -6 -c 2 -W 2 "$TERN6" >/dev/null || fail "ping $TERN6 failed"

log "5. flush: the next lookup of a flushed name misses, and the resolver's answer refills it"
# Judged per name, never by the node-wide answer_hit / miss_punted counters: other queries
# move those at any moment (with tern-control, its health probe of www.lab A runs every
# second and is answered from the cache once refilled after the flush). The probe verb
# reports hit or miss for its own query, and nobody but this test asks www.alpha.lab.
# A = type 1; the probe and kdig both send DO=0 CD=0, so they share one cache key.
in_cache() { ctl dump | awk -v n="$1." -v t="type=$2" '$1 == n && $2 == t { f = 1 } END { exit !f }'; }
in_cache www.alpha.lab 1 || fail "www.alpha.lab A is not in the cache before the flush (step 1 stored it)"
out=$(ctl flush) || fail "flush: $out"
[[ $out =~ flushed\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= 1)) || fail "flush reply: $out"
! in_cache www.alpha.lab 1 || fail "www.alpha.lab A is still listed in the cache after the flush"
pf=$(ctl probe www.alpha.lab A) || fail "probe after flush: $pf"
[[ $pf == "result=miss rcode=NOERROR "* ]] || fail "the lookup after the flush was not a miss through the resolver: $pf"
# The probe's reply reached the probe ring only after the service thread offered it to the cache.
in_cache www.alpha.lab 1 || fail "the resolver's answer after the flush did not refill the cache"
h=$(counter answer_hit)
a3=$(q "$CLI" @"$TERN4" www.alpha.lab A) || fail "query after flush failed"
[[ $a3 == *198.18.2.1* ]] || fail "answer after flush wrong: $a3"
(($(counter answer_hit) > h)) || fail "the client's query after the refill was not a cache hit"

log "6. client outside the allow list gets REFUSED"
"$LAB" attach-ns "$OUT" "$OUT4/16" "$OUT6/64"
r=$(counter answer_refused)
ao=$(q "$OUT" @"$TERN4" www.alpha.lab A) || true
[[ $ao == *"status: REFUSED"* ]] || fail "outside client not refused: $ao"
(($(counter answer_refused) > r)) || fail "answer_refused did not move"

log "7. a service address added to the exception interface is answered at once (VIP move)"
ip -n "$NODE" addr add "$VIP4/16" dev tl-exc0
h=$(counter answer_hit) ok=0
for _ in $(seq 20); do
  if av=$(q "$CLI" +time=1 +retry=0 @"$VIP4" www.alpha.lab A 2>/dev/null) && [[ $av == *198.18.2.1* ]]; then ok=1; break; fi
  sleep 0.2
done
((ok)) || fail "no answer at the new service address $VIP4"
(($(counter answer_hit) > h)) || fail "the VIP was not answered from the cache"
ip -n "$NODE" addr del "$VIP4/16" dev tl-exc0

log "8. unique-name flood: the miss limiter drops, hits keep being answered"
for i in $(seq 1 20000); do echo "f$i-$RANDOM.$LAB_WILD_SUFFIX A"; done >"$WORK/flood.txt"
limited0=$(( $(counter drop_rate_limited) + $(counter answer_stale) ))
ip netns exec "$CLI" timeout 15 dnsperf -s "$TERN4" -d "$WORK/flood.txt" -l 4 -Q 3000 -q 3000 -c 4 -t 1 \
  >"$WORK/dnsperf.log" 2>&1 &
flood=$!
sleep 1
answered=0
for _ in $(seq 10); do
  ah=$(q "$CLI" +time=1 +retry=0 @"$TERN4" www.alpha.lab A 2>/dev/null) && [[ $ah == *198.18.2.1* ]] && answered=$((answered + 1))
  sleep 0.1
done
wait "$flood" || true
limited1=$(( $(counter drop_rate_limited) + $(counter answer_stale) ))
((limited1 > limited0)) || fail "the miss limiter never fired during the flood ($limited0 -> $limited1)"
((answered == 10)) || fail "only $answered of 10 cached queries answered during the flood"
log "   flood: $(grep -E 'Queries sent|Queries completed' "$WORK/dnsperf.log" | tr -s ' ' | tr '\n' ' ')"
log "   limited misses: $((limited1 - limited0)), cached answers during the flood: $answered/10"

log "9. readiness probe: injected into a worker; uncached it goes through the resolver, then it is a hit"
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
p1=$(ctl probe beta.zz MX) || fail "probe of an uncached name: $p1"
[[ $p1 == "result=miss rcode=NOERROR "* ]] || fail "uncached probe: want result=miss rcode=NOERROR, got: $p1"
p2=$(ctl probe beta.zz MX) || fail "second probe: $p2"
[[ $p2 == "result=hit rcode=NOERROR "* ]] || fail "second probe was not a cache hit: $p2"
(($(field "$p2" answers) >= 1)) || fail "the probe's answer has no records: $p2"
ip -n "$NODE" neigh show "$PROBE4" dev tl-exc0 | grep -q PERMANENT || fail "no permanent neighbour entry for the probe source"
hit_lat=()
for _ in $(seq 10); do
  p=$(ctl probe beta.zz MX) && [[ $p == "result=hit "* ]] || { fail "probe not a hit: $p"; break; }
  hit_lat+=("$(field "$p" latency_us)")
done
sorted=$(printf '%s\n' "${hit_lat[@]}" | sort -n | tr '\n' ' ')
log "   probe latency: miss (through the resolver) $(field "$p1" latency_us) us; 10 hits (sorted): $sorted us"
np=$(ctl stats | awk '$1 == "tern_dp_probe_hit_total" { print $2 }')
((np >= 11)) || fail "tern_dp_probe_hit_total is ${np:-missing}, want >= 11"
(($(svc_counter probe_replies) >= 1)) || fail "the resolver's answer to the probe did not come back to the probe ring"
if [[ ${TERN_E2E_RESOLVER:-unbound} == tern-control ]]; then
  if [[ -x $TCTL ]]; then
    ok=0
    for _ in $(seq 30); do
      hv=$("$TCTL" --socket "$WORK/control.sock" health -v 2>&1) && [[ $hv == *"probe: ok (hit NOERROR"* ]] && { ok=1; break; }
      sleep 0.2
    done
    ((ok)) || fail "ternctl health -v does not show the probe passing as a hit: $hv"
    log "   ternctl health -v: $(grep '^probe:' <<<"$hv")"
  else
    fail "$TCTL not built: cannot check that tern-control's health uses the probe"
  fi
fi

if [[ ${TERN_E2E_RESOLVER:-unbound} == tern-control ]]; then
  log "11. DNSSEC: the fast path sets AD exactly as tern-control does, and never serves bogus data"
  # flags of a reply as kdig prints them ("Flags: qr rd ra ad; ...")
  adbit() { grep -qE 'Flags: .* ad( |;|$)' <<<"$1" && echo ad || echo noad; }
  # tern-control itself, from the node (the local socket, not through the dataplane)
  tcq() { ip netns exec "$NODE" kdig +time=3 +retry=1 @"$TERN4" "$@"; }
  for flags in "+dnssec" "+adflag" "+noadflag" "+dnssec +noadflag"; do
    # shellcheck disable=SC2086
    q "$CLI" @"$TERN4" $flags www.nsec3.lab A >/dev/null || fail "query ($flags) failed"
    h=$(client_hits)
    # shellcheck disable=SC2086
    fp=$(q "$CLI" @"$TERN4" $flags www.nsec3.lab A) || fail "second query ($flags) failed"
    (($(client_hits) > h)) || fail "www.nsec3.lab A ($flags) was not answered from the fast path"
    # shellcheck disable=SC2086
    direct=$(tcq $flags www.nsec3.lab A) || fail "tern-control query ($flags) failed"
    [[ $(adbit "$fp") == $(adbit "$direct") ]] ||
      fail "AD differs for $flags: fast path $(adbit "$fp"), tern-control $(adbit "$direct")"
    [[ $flags != *dnssec* || $(adbit "$fp") == ad ]] || fail "DO=1 secure answer from the fast path lacks AD"
    [[ $flags != "+noadflag" || $(adbit "$fp") == noad ]] || fail "DO=0 AD=0: the fast path set AD"
    [[ $flags != *dnssec* ]] || grep -q RRSIG <<<"$fp" || fail "DO=1 answer from the fast path has no RRSIG"
    [[ $flags == *dnssec* ]] || ! grep -q RRSIG <<<"$fp" || fail "DO=0 answer from the fast path has an RRSIG"
  done
  fills=$(svc_counter fill_inserted)
  # With EDNS the SERVFAIL carries EDE 6 (RFC 8914), which the fast path never caches.
  for flags in "+edns" "+dnssec" "+edns" "+dnssec"; do
    # shellcheck disable=SC2086
    b=$(q "$CLI" @"$TERN4" $flags www.bogus.lab A) || fail "bogus query failed"
    [[ $b == *"status: SERVFAIL"* ]] || fail "bogus answer ($flags) was not SERVFAIL: $b"
  done
  ! in_cache www.bogus.lab 1 || fail "the fast-path cache holds www.bogus.lab A (SERVFAIL filled it)"
  ((fills == $(svc_counter fill_inserted))) || fail "a SERVFAIL for bogus data filled the fast-path cache"
  # CD=1 gets the bogus data (and may fill a CD=1 entry); CD=0 must still get SERVFAIL.
  for _ in 1 2; do b=$(q "$CLI" @"$TERN4" +cdflag www.bogus.lab A) || fail "CD=1 query failed"; done
  [[ $b == *"status: NOERROR"* && $b == *198.18.2.66* && $(adbit "$b") == noad ]] ||
    fail "CD=1 did not get the unvalidated data without AD: $b"
  b=$(q "$CLI" @"$TERN4" +edns www.bogus.lab A) || fail "bogus query after CD=1 failed"
  [[ $b == *"status: SERVFAIL"* ]] || fail "CD=0 after CD=1 got the CD=1 answer: $b"
fi

log "10. heartbeats move, SIGTERM stops cleanly"
hb0=$(ctl heartbeats | awk '/core="0"/ { print $2 }')
sleep 0.5
hb1=$(ctl heartbeats | awk '/core="0"/ { print $2 }')
((hb1 > hb0)) || fail "worker 0 heartbeat stuck at $hb0"
if ((FAILED)); then echo "--- dataplane counters (non-zero)"; ctl stats | awk '$NF != "0"'; ctl policy; fi
kill -TERM "$DP_PID"
rc=0; wait "$DP_PID" || rc=$?
DP_PID=
((rc == 0)) || fail "tern-dataplane exited $rc on SIGTERM"
[[ ! -e $SOCK ]] || fail "control socket left behind after shutdown"

if ((FAILED)); then echo "dataplane e2e: FAILED"; exit 1; fi
echo "dataplane e2e: all checks passed"
