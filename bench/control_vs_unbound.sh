#!/usr/bin/env bash
# tern-control vs unbound in the lab, each with 1 and then 2 threads ([server] threads,
# num-threads), one after the other in the same run, same dnsperf:
#   cache-hit: a small set of names (primed first), answered from cache
#   cold:      unique names under the lab's wildcard zone, every one a miss
# Every (server, threads) pair starts fresh (empty cache). Prints queries per second, the
# tern/unbound ratios and each server's 2-thread/1-thread scaling. Not a test: it asserts
# nothing. Writes control_qps and control_qps_threads2 (cold, tern) as KEY=VALUE to
# $TERN_BENCH_RESULTS (default ./control_vs_unbound.kv) for `tern-bench plan --results`.
#
# usage: control_vs_unbound.sh TERN_CONTROL [SECONDS] [MAX_QPS]
# Bounded: dnsperf -l SECONDS (default 10) -Q MAX_QPS (default 300000). Needs root.
set -euo pipefail

TERN_CONTROL=$(readlink -f "${1:?usage: control_vs_unbound.sh TERN_CONTROL [SECONDS] [MAX_QPS]}")
SECS=${2:-10}
MAXQPS=${3:-300000}
HERE=$(dirname "$(readlink -f "$0")")
LAB=$HERE/../tests/lab/lab.sh
NS=tl-bench-ctl
# Spare lab addresses (LAB_OTHER_V4_*): tern, unbound and the client in one namespace.
TERN4=198.18.0.71
UNB4=198.18.0.72
CLI4=198.18.0.73

[[ $(id -u) -eq 0 ]] || { echo "control_vs_unbound: needs root" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "control_vs_unbound: dnsperf missing" >&2; exit 1; }

RESULTS=${TERN_BENCH_RESULTS:-$PWD/control_vs_unbound.kv}
work=$(mktemp -d /tmp/tern-bench.XXXXXX)
started_lab=0
tern_pid= unb_pid=
stop_servers() {
  [[ -n $tern_pid ]] && kill "$tern_pid" 2>/dev/null && wait "$tern_pid" 2>/dev/null
  [[ -n $unb_pid ]] && kill "$unb_pid" 2>/dev/null
  for _ in $(seq 50); do [[ -n $unb_pid ]] && kill -0 "$unb_pid" 2>/dev/null || break; sleep 0.1; done
  tern_pid= unb_pid=
}
cleanup() {
  set +e
  stop_servers
  "$LAB" unbound-stop "$NS" >/dev/null 2>&1
  "$LAB" detach-ns "$NS" >/dev/null 2>&1
  [[ $started_lab == 1 ]] && "$LAB" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

if ! "$LAB" status >/dev/null 2>&1; then "$LAB" start >/dev/null; started_lab=1; fi
eval "$("$LAB" env)"
"$LAB" attach-ns "$NS" "$TERN4/$LAB_PREFIX4" "2001:2::71/$LAB_PREFIX6" >/dev/null
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$UNB4/$LAB_PREFIX4" dev tl0
ip -n "$NS" addr add "$CLI4/$LAB_PREFIX4" dev tl0
"$LAB" unbound-start "$NS" "$UNB4" >/dev/null

# The lab's reference unbound config, with num-threads as asked: started once by lab.sh (it
# writes and checks the config), then run by us from a copy, one per thread count.
cp "$LAB_RUN/unbound-$NS/unbound.conf" "$work/unbound-lab.conf"
"$LAB" unbound-stop "$NS" >/dev/null
start_unbound() {  # threads
  sed -e "s/num-threads: 1/num-threads: $1/" \
      -e "s|pidfile: .*|pidfile: \"$work/unbound-$1.pid\"|" \
      -e "s|logfile: .*|logfile: \"$work/unbound-$1.log\"|" \
      -e "s|directory: .*|directory: \"$work\"|" \
      "$work/unbound-lab.conf" >"$work/unbound-$1.conf"
  grep -q "num-threads: $1" "$work/unbound-$1.conf" || { echo "control_vs_unbound: cannot set num-threads" >&2; exit 1; }
  ip netns exec "$NS" unbound -c "$work/unbound-$1.conf"
  for _ in $(seq 50); do [[ -s $work/unbound-$1.pid ]] && break; sleep 0.1; done
  unb_pid=$(cat "$work/unbound-$1.pid")
}
start_tern() {  # threads
  cat >"$work/tern-$1.conf" <<EOF
[server]
listen = $TERN4:53
allow = 198.18.0.0/15
control-socket = $work/control.sock
state-dir = $work
max-outstanding-per-client = 10000
threads = $1
[recursion]
root-hints = $LAB_ROOT_HINTS
[dnssec]
trust-anchor-file = $LAB_TRUST_ANCHOR
EOF
  ip netns exec "$NS" "$TERN_CONTROL" -c "$work/tern-$1.conf" -f >"$work/tern-$1.log" 2>&1 &
  tern_pid=$!
}

# Query files: the hit set is the lab's plain names; the cold set is unique wildcard names,
# one file per (server, threads) so that every cold name is new to the server asked.
cat >"$work/hit.txt" <<EOF
www.alpha.lab A
www.alpha.lab AAAA
www.lab A
www.beta.zz A
www.beta.zz AAAA
alpha.lab MX
chain.beta.zz A
www.partlame.zz A
EOF
cold_n=$((SECS * 30000))
seed=$RANDOM$RANDOM
for f in t1 t2 u1 u2; do
  awk -v n="$cold_n" -v s="$f$seed" -v suf="$LAB_WILD_SUFFIX" \
    'BEGIN { for (i = 0; i < n; i++) printf "c%s-%d.%s A\n", s, i, suf }' >"$work/cold-$f.txt"
  # Cold and signed: every name is a fresh expansion of the signed wildcard *.wild.alpha.lab,
  # so each answer costs both validators a signature check and an NSEC proof (RFC 4035 5.3.4).
  sed "s/\.$LAB_WILD_SUFFIX A\$/.wild.alpha.lab A/; s/^c/s/" "$work/cold-$f.txt" >"$work/signed-$f.txt"
done

run() {  # addr file passes -> qps (cold runs pass the file once: every name is new)
  ip netns exec "$NS" dnsperf -s "$1" -a "$CLI4" -d "$2" -l "$SECS" -Q "$MAXQPS" -c 4 -q 500 \
    -n "$3" >>"$work/dnsperf.log" 2>&1 || { cat "$work/dnsperf.log" >&2; return 1; }
  awk '/Queries per second/ { print int($4) }' "$work/dnsperf.log"
}
lost() { awk '/Queries lost/ { l = $3 } END { print l }' "$work/dnsperf.log"; }
# CPU the server spent (user+system, in clock ticks, all its threads) — on a shared machine
# qps alone says as much about the neighbours as about the server; CPU per answer does not.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
completed() { awk '/Queries completed/ { print $3 }' "$work/dnsperf.log"; }
us_per_q() {  # ticks_before ticks_after queries
  awk -v a="$1" -v b="$2" -v q="$3" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", q ? (b - a) * 1e6 / hz / q : 0 }'
}
measure() {  # name pid addr file passes: sets NAME (qps), NAME_lost, NAME_cpu (us/answer)
  local c0 c1
  : >"$work/dnsperf.log"
  c0=$(cpu "$2")
  printf -v "$1" '%s' "$(run "$3" "$4" "$5")"
  c1=$(cpu "$2")
  printf -v "$1_lost" '%s' "$(lost)"
  printf -v "$1_cpu" '%s' "$(us_per_q "$c0" "$c1" "$(completed)")"
}

for T in 1 2; do
  start_tern "$T"
  start_unbound "$T"
  for a in $TERN4 $UNB4; do  # wait for both and prime the hit set
    for _ in $(seq 50); do
      ip netns exec "$NS" kdig @"$a" +short +timeout=2 www.lab A 2>/dev/null | grep -q 198.18 && break
      sleep 0.2
    done
    while read -r n t; do ip netns exec "$NS" kdig @"$a" +short "$n" "$t" >/dev/null 2>&1; done <"$work/hit.txt"
  done
  for p in "$tern_pid" "$unb_pid"; do
    [[ -r /proc/$p/stat ]] || { echo "control_vs_unbound: server pid $p is gone" >&2; cat "$work/tern-$T.log" >&2; exit 1; }
  done
  measure "t_hit_$T" "$tern_pid" $TERN4 "$work/hit.txt" 100000000
  measure "u_hit_$T" "$unb_pid" $UNB4 "$work/hit.txt" 100000000
  measure "t_cold_$T" "$tern_pid" $TERN4 "$work/cold-t$T.txt" 1
  measure "u_cold_$T" "$unb_pid" $UNB4 "$work/cold-u$T.txt" 1
  measure "t_sig_$T" "$tern_pid" $TERN4 "$work/signed-t$T.txt" 1
  measure "u_sig_$T" "$unb_pid" $UNB4 "$work/signed-u$T.txt" 1
  stop_servers
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
row() {  # label threads tern unbound tern_cpu unbound_cpu
  printf '%-20s %7s %12s %12s %6s   %15s %15s\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$4")" "$5" "$6"
}
printf '\n%-20s %7s %12s %12s %6s   %15s %15s\n' "workload (${SECS}s)" "threads" "tern qps" "unbound qps" \
  "ratio" "tern us/answer" "unbound us/ans"
row "cache hit" 1 "$t_hit_1" "$u_hit_1" "$t_hit_1_cpu" "$u_hit_1_cpu"
row "cache hit" 2 "$t_hit_2" "$u_hit_2" "$t_hit_2_cpu" "$u_hit_2_cpu"
row "cold (unique names)" 1 "$t_cold_1" "$u_cold_1" "$t_cold_1_cpu" "$u_cold_1_cpu"
row "cold (unique names)" 2 "$t_cold_2" "$u_cold_2" "$t_cold_2_cpu" "$u_cold_2_cpu"
row "cold signed (AD)" 1 "$t_sig_1" "$u_sig_1" "$t_sig_1_cpu" "$u_sig_1_cpu"
row "cold signed (AD)" 2 "$t_sig_2" "$u_sig_2" "$t_sig_2_cpu" "$u_sig_2_cpu"
printf '2 threads / 1 thread: tern hit %s cold %s; unbound hit %s cold %s\n' \
  "$(ratio "$t_hit_2" "$t_hit_1")" "$(ratio "$t_cold_2" "$t_cold_1")" \
  "$(ratio "$u_hit_2" "$u_hit_1")" "$(ratio "$u_cold_2" "$u_cold_1")"
echo "(both validate: tern with [dnssec] on and the lab anchor, unbound with the lab anchor)"
echo "(us/answer: server CPU time, user+system, per completed query; $(nproc) CPUs shared with dnsperf;" \
  "load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf 'lost queries: tern hit %s/%s cold %s/%s signed %s/%s; unbound hit %s/%s cold %s/%s signed %s/%s (1/2 threads)\n' \
  "${t_hit_1_lost:-?}" "${t_hit_2_lost:-?}" "${t_cold_1_lost:-?}" "${t_cold_2_lost:-?}" "${t_sig_1_lost:-?}" "${t_sig_2_lost:-?}" \
  "${u_hit_1_lost:-?}" "${u_hit_2_lost:-?}" "${u_cold_1_lost:-?}" "${u_cold_2_lost:-?}" "${u_sig_1_lost:-?}" "${u_sig_2_lost:-?}"
printf 'control_qps=%s\ncontrol_qps_threads2=%s\n' "$t_cold_1" "$t_cold_2" >"$RESULTS"
echo "figures for tern-bench plan: $RESULTS"
