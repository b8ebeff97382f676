#!/usr/bin/env bash
# tern-control owns the dataplane's policy, in the lab (issue: one appliance):
#
#   1. start: tern-dataplane runs with no --allow (everyone REFUSED); tern-control pushes
#      tern.conf's policy, readiness waits for it, the client is answered.
#   2. restart tern-dataplane under client load: answered again with no manual step, ready
#      again with the config's generation, no REFUSED once ready again; the hit
#      ratio of the first 10 s after a restart, cold ([dataplane] warm-restart = no) and warm.
#   3. reload ttl-cap = 2s, serve-stale = no, miss-rate = 0: TTL capped in the fast path,
#      an expired entry over the limit is dropped, never served stale.
#   4. ternctl cache flush NAME: both caches report a count, the next query misses the fast path.
#   5. a 2,000-prefix allow list is pushed and enforced.
#   6. a policy the dataplane refuses ([dataplane] cache-bytes = 1T): counted, old policy kept,
#      readiness fails with the reason; fixed by the next reload.
#
# usage: tests/appliance_policy_test.sh BUILD_ROOT   (root; 198.18.0.0/15 and 2001:2::/64 only)
set -euo pipefail

SRC=$(dirname "$(readlink -f "$0")")/..
BUILD=$(readlink -f "${1:-$SRC/build}")
DP=$BUILD/dataplane/tern-dataplane TC=$BUILD/control/tern-control TCTL=$BUILD/control/ternctl
LAB=$SRC/tests/lab/lab.sh
NODE=tl-node CLI=tl-cli OUT=tl-out
TERN4=198.18.0.53 TERN6=2001:2::53 CLI4=198.18.0.100 CLI6=2001:2::100 OUT4=198.18.0.70 OUT6=2001:2::70
PROBE4=198.18.255.254 HTTP=127.0.0.1:9153
WORK=$(mktemp -d /tmp/tern-appliance.XXXXXX)
SOCK=$WORK/dataplane.sock CSOCK=$WORK/control.sock
DP_PID= TC_PID= LOAD_PID= LAB_WAS_UP=0 FAILED=0

[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
for b in "$DP" "$TC" "$TCTL"; do [[ -x $b ]] || { echo "FAIL: $b not built"; exit 1; }; done

log() { echo "appliance: $*"; }
fail() { echo "FAIL: $*" >&2; FAILED=1; }
die() { echo "FAIL: $*" >&2; exit 1; }

stop_dp() {
  if [[ -n $DP_PID ]] && kill -0 "$DP_PID" 2>/dev/null; then kill -TERM "$DP_PID"; wait "$DP_PID" 2>/dev/null || true; fi
  DP_PID=
}
cleanup() {
  local rc=$?
  set +e
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
  if ((rc != 0 || FAILED)); then
    echo "--- ternctl health -v"; "$TCTL" --socket "$CSOCK" health -v
    echo "--- tern-control log"; tail -30 "$WORK/tc.log"
    echo "--- tern-dataplane log"; tail -20 "$WORK/dp.log"
  fi
  [[ -n $TC_PID ]] && kill -TERM "$TC_PID" 2>/dev/null && wait "$TC_PID" 2>/dev/null
  stop_dp
  "$LAB" detach-ns "$CLI" >/dev/null 2>&1
  "$LAB" detach-ns "$OUT" >/dev/null 2>&1
  if [[ -e /run/netns/$NODE ]]; then
    for p in $(ip netns pids "$NODE" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    ip netns del "$NODE"
  fi
  ip -n tl-inet link del tl-nic0 >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  [[ -n ${TERN_TEST_KEEP_WORK:-} ]] && echo "kept $WORK" || rm -rf "$WORK"
  ((FAILED && rc == 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT INT TERM

# The dataplane's control socket, through ternctl (one framing for every client).
ctl() { "$TCTL" --dataplane-socket "$SOCK" "$@"; }
counter() { ctl stats | awk -v n="tern_dp_$1_total" '$1 ~ "^"n"[{]" || $1 == n { s += $2 } END { print s + 0 }'; }
dp_gen() { ctl heartbeats 2>/dev/null | awk '$1 == "tern_dp_policy_generation" { print $2 }'; }
cfg_gen() { "$TCTL" --socket "$CSOCK" status | awk '$1 == "generation" { print $2 }'; }
readyz() { ip netns exec "$NODE" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$HTTP/readyz" || true; }
q() { ip netns exec "$1" kdig +time=2 +retry=0 "${@:2}"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 100 ms
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "$what (not within ${secs} s)"; return 1
}
is_ready() { [[ $(readyz) == 200 ]]; }

# The dataplane as systemd starts it: the packaged unit passes no policy flags at all.
start_dp() {
  ip netns exec "$NODE" "$DP" --control-socket "$SOCK" >>"$WORK/dp.log" 2>&1 &
  DP_PID=$!
  for _ in $(seq 100); do
    [[ -S $SOCK ]] && ip -n "$NODE" link show tl-exc0 >/dev/null 2>&1 && break
    kill -0 "$DP_PID" 2>/dev/null || die "tern-dataplane exited at startup: $(tail -5 "$WORK/dp.log")"
    sleep 0.1
  done
  # What the node's network configuration does for a new exception interface.
  "$LAB" attach-if tl-nic0 "$NODE"
  ip -n "$NODE" addr add "$TERN4/16" dev tl-exc0
  ip -n "$NODE" addr add "$TERN6/64" dev tl-exc0 nodad
}

write_conf() {  # write_conf "EXTRA [dataplane] LINES" "EXTRA [cache] LINES" "EXTRA allow LINES"
  cat >"$WORK/tern.conf" <<EOF
[server]
listen = $TERN4:53 [$TERN6]:53
allow = $CLI4/32 $CLI6/128 $TERN4/32 $PROBE4/32
${3:-}
control-socket = $CSOCK
dataplane-socket = $SOCK
state-dir = $WORK/state
[recursion]
root-hints = $LAB_ROOT_HINTS
[dataplane]
${1:-}
$([[ ${1:-} == *miss-rate* ]] || printf 'miss-rate = 100\nmiss-burst = 50')
[cache]
${2:-}
[health]
http-listen = $HTTP
probe = www.lab A
EOF
}
reload() { "$TCTL" --socket "$CSOCK" reload >"$WORK/reload.out" 2>&1 || { fail "reload: $(cat "$WORK/reload.out")"; return 1; }; }

"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
"$LAB" start
eval "$("$LAB" env)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
mkdir -p "$WORK/state"

log "1. the dataplane starts with no allow list; tern-control's push brings the config's"
start_dp
"$LAB" attach-ns "$CLI" "$CLI4/16" "$CLI6/64"
"$LAB" attach-ns "$OUT" "$OUT4/16" "$OUT6/64"
r=$(q "$CLI" @"$TERN4" www.alpha.lab A || true)
[[ $r == *"status: REFUSED"* ]] || fail "before any push the dataplane should refuse everyone: $r"
write_conf
ip netns exec "$NODE" "$TC" -c "$WORK/tern.conf" --foreground >"$WORK/tc.log" 2>&1 &
TC_PID=$!
wait_for 30 "ready after start" is_ready
[[ $(dp_gen) == "$(cfg_gen)" ]] || fail "dataplane generation $(dp_gen) != config generation $(cfg_gen)"
r=$(q "$CLI" @"$TERN4" www.alpha.lab A) || fail "query after the push failed"
[[ $r == *198.18.2.1* ]] || fail "answer after the push: $r"

log "2. restart tern-dataplane under client load"
NAMES=800
for i in $(seq $NAMES); do echo "w$i.alpha.lab A"; done >"$WORK/names.txt"
ip netns exec "$CLI" timeout 60 dnsperf -s "$TERN4" -d "$WORK/names.txt" -n 2 -Q 200 -t 2 >/dev/null 2>&1 || true
# The hit ratio of the first 10 s after a restart: the new process's answer_hit / query_ok
# once a 10 s load that starts with it has ended. /readyz meanwhile: false at least until the
# heartbeats of the new process have been seen twice and its policy generation is the config's.
# Not in a $(...) subshell: start_dp sets DP_PID, which the next stop_dp needs. Sets RATIO, READY_MS
# and TIMELINE (readiness and the dataplane's policy generation, every 500 ms for the first 5 s).
restart_hit_ratio() {
  stop_dp
  # The old process's TAPs go with it; the node's network configuration acts on the new ones.
  wait_for 10 "the old exception interface gone" bash -c "! ip -n $NODE link show tl-exc0"
  # The stopped dataplane removed its socket: tern-control's watch has failed readiness already.
  local z; z=$(readyz)
  [[ $z != 200 ]] || fail "/readyz says 200 while tern-dataplane is stopped"
  local t0 t g; t0=$(date +%s%N)
  start_dp
  ip netns exec "$CLI" timeout 15 dnsperf -s "$TERN4" -d "$WORK/names.txt" -l 10 -Q 300 -t 1 >"$WORK/perf.out" 2>&1 &
  LOAD_PID=$!
  TIMELINE= READY_MS=
  for _ in $(seq 10); do
    t=$((($(date +%s%N) - t0) / 1000000))
    # readyz first: once it says 200 the policy generation must already be the config's
    # (generations only move forward), so a later sample that differs is a readiness lie.
    z=$(readyz) g=$(dp_gen)
    TIMELINE+=" ${t}ms:$z/gen$g"
    [[ $z != 200 || $g == "$(cfg_gen)" ]] || fail "/readyz 200 at ${t} ms while the dataplane runs policy generation '$g', config $(cfg_gen)"
    [[ -z $READY_MS && $z == 200 ]] && READY_MS=$t
    sleep 0.5
  done
  wait_for 30 "ready after the dataplane restart" is_ready
  [[ -n $READY_MS ]] || READY_MS=$((($(date +%s%N) - t0) / 1000000))
  wait "$LOAD_PID" || true; LOAD_PID=
  local h1 q1
  h1=$(counter answer_hit); q1=$(counter query_ok)
  RATIO=$(awk -v h="$h1" -v q="$q1" 'BEGIN { printf "%.3f", (q ? h / q : 0) }')
  RATIO_DETAIL="$h1 hits / $q1 queries; warm-up stored $(ctl stats | awk '$1 == "tern_dp_warm_inserted_total" { print $2 }'), refused $(ctl stats | awk '$1 == "tern_dp_warm_rejected_total" { print $2 }')"
}
reload_with() { write_conf "$@"; reload; }
reload_with "warm-restart = no"
restart_hit_ratio
cold=$RATIO
refused=$(counter answer_refused)
log "   cold restart: hit ratio in the first 10 s $cold ($RATIO_DETAIL), ready with the policy after $READY_MS ms"
log "     readyz/policy generation:$TIMELINE"
grep -E 'Queries (sent|completed)|Response codes' "$WORK/perf.out" | sed 's/^/     /'
# Load the names again so tern-control's answer cache holds them all.
ip netns exec "$CLI" timeout 60 dnsperf -s "$TERN4" -d "$WORK/names.txt" -n 2 -Q 200 -t 2 >/dev/null 2>&1 || true
reload_with "warm-restart = yes"
restart_hit_ratio
warm=$RATIO
log "   warm restart: hit ratio in the first 10 s $warm ($RATIO_DETAIL), ready with the policy after $READY_MS ms"
log "     readyz/policy generation:$TIMELINE"
grep -E 'Queries (sent|completed)|Response codes' "$WORK/perf.out" | sed 's/^/     /'
awk -v c="$cold" -v w="$warm" 'BEGIN { exit !(w > c) }' || fail "warm restart ($warm) not better than cold ($cold)"
[[ $(dp_gen) == "$(cfg_gen)" ]] || fail "after the restart the dataplane runs generation $(dp_gen), config $(cfg_gen)"
# Ready again: no allowed client is refused any more.
r0=$(counter answer_refused)
for i in $(seq 20); do
  r=$(q "$CLI" @"$TERN4" "w$i.alpha.lab" A || true)
  [[ $r == *"status: NXDOMAIN"* ]] || fail "query $i after readiness returned: $(grep -o 'status: [A-Z]*' <<<"$r")"
done
(($(counter answer_refused) == r0)) || fail "an allowed client was REFUSED after readiness returned"

log "3. reload ttl-cap = 2s, serve-stale = no, miss-rate = 0: the fast path obeys"
reload_with "" "ttl-cap = 2s
serve-stale = no"
q "$CLI" @"$TERN4" www.beta.zz A >/dev/null || fail "query www.beta.zz"
a=$(q "$CLI" @"$TERN4" www.beta.zz A) || fail "second query www.beta.zz"
ttl=$(awk '/ANSWER SECTION/ { getline; print $2 }' <<<"$a")
[[ -n $ttl ]] && ((ttl <= 2)) || fail "answer TTL $ttl above ttl-cap 2s: $a"
ctl policy | grep -q 'stale-window=0' || fail "serve-stale = no did not reach the dataplane: $(ctl policy)"
reload_with "miss-rate = 0
miss-burst = 1" "ttl-cap = 2s
serve-stale = no"
q "$CLI" @"$TERN4" www.beta.zz A >/dev/null || true   # takes the one token
sleep 3                                                # the entry is expired now
s0=$(counter answer_stale); d0=$(counter drop_rate_limited)
for _ in 1 2 3; do q "$CLI" @"$TERN4" www.beta.zz A >/dev/null 2>&1 || true; done
(($(counter answer_stale) == s0)) || fail "an expired entry was served stale with serve-stale = no"
(($(counter drop_rate_limited) > d0)) || fail "over the miss limit the expired entry should be dropped"

log "4. ternctl cache flush NAME empties both caches"
reload_with
wait_for 10 "ready after reload" is_ready
q "$CLI" @"$TERN4" www.alpha.lab A >/dev/null; q "$CLI" @"$TERN4" www.alpha.lab A >/dev/null
out=$("$TCTL" --socket "$CSOCK" cache flush www.alpha.lab) || fail "cache flush: $out"
[[ $out =~ flushed\ [0-9]+\ tern-control,\ [1-9][0-9]*\ dataplane ]] || fail "flush reply should count both caches: $out"
m=$(counter miss_punted)
a=$(q "$CLI" @"$TERN4" www.alpha.lab A) || fail "query after flush"
[[ $a == *198.18.2.1* ]] || fail "answer after flush: $a"
(($(counter miss_punted) > m)) || fail "the query after the flush was answered by the fast path's old entry"

log "5. a 2,000-prefix allow list, pushed and enforced"
allow=$(for i in $(seq 0 1998); do printf '198.19.%d.%d/32 ' $((i / 256)) $((i % 256)); done)
reload_with "" "" "allow = $allow $OUT4/32"
wait_for 10 "ready with 2,000 prefixes" is_ready
n=$(ctl policy | tr ',' '\n' | grep -c '/32')
((n >= 2000)) || fail "the dataplane holds $n prefixes, not 2,000+"
r=$(q "$OUT" @"$TERN4" www.alpha.lab A || true)
[[ $r == *198.18.2.1* ]] || fail "the 2,000th prefix ($OUT4) not allowed: $(grep -o 'status: [A-Z]*' <<<"$r")"
reload_with
wait_for 10 "ready after the short list" is_ready
r=$(q "$OUT" @"$TERN4" www.alpha.lab A || true)
[[ $r == *"status: REFUSED"* ]] || fail "$OUT4 should be refused once out of the list: $(grep -o 'status: [A-Z]*' <<<"$r")"

log "6. a policy the dataplane refuses: old policy kept, counted, readiness says why"
g0=$(dp_gen); rej0=$(ctl heartbeats | awk '$1 == "tern_dp_policy_rejects_total" { print $2 }')
reload_with "cache-bytes = 1T"
not_ready() { [[ $(readyz) != 200 ]]; }
wait_for 10 "not ready after a refused push" not_ready
h=$("$TCTL" --socket "$CSOCK" health) && fail "ternctl health exit 0 with a refused policy: $h"
[[ $h == *"refused the push"*"cache-bytes"* ]] || fail "health reason should quote the refusal: $h"
[[ $(dp_gen) == "$g0" ]] || fail "the refused push changed the generation ($g0 -> $(dp_gen))"
rej1=$(ctl heartbeats | awk '$1 == "tern_dp_policy_rejects_total" { print $2 }')
((rej1 > rej0)) || fail "the refusal was not counted ($rej0 -> $rej1)"
r=$(q "$CLI" @"$TERN4" www.alpha.lab A) && [[ $r == *198.18.2.1* ]] || fail "clients lost service while the old policy should hold"
reload_with
wait_for 10 "ready after the fix" is_ready

((FAILED)) && die "see above"
log "PASS (hit ratio in the first 10 s after a restart: cold $cold, warm $warm)"
