#!/usr/bin/env bash
# tern-control vs unbound (num-threads: 1) in the lab, one after the other, same dnsperf:
#   cache-hit: a small set of names (primed first), answered from cache
#   cold:      unique names under the lab's wildcard zone, every one a miss
# Prints a small table of queries per second. Not a test: it asserts nothing.
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

work=$(mktemp -d /tmp/tern-bench.XXXXXX)
started_lab=0
tern_pid=
cleanup() {
  set +e
  [[ -n $tern_pid ]] && kill "$tern_pid" 2>/dev/null && wait "$tern_pid" 2>/dev/null
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

cat >"$work/tern.conf" <<EOF
[server]
listen = $TERN4:53
allow = 198.18.0.0/15
control-socket = $work/control.sock
state-dir = $work
max-outstanding-per-client = 10000
[recursion]
root-hints = $LAB_ROOT_HINTS
[dnssec]
trust-anchor-file = $LAB_TRUST_ANCHOR
EOF
ip netns exec "$NS" "$TERN_CONTROL" -c "$work/tern.conf" -f >"$work/tern.log" 2>&1 &
tern_pid=$!
# Unbound refuses everything but what the lab allows; open it to our client address.
sleep 0.5

# Query files: the hit set is the lab's plain names; the cold set is unique wildcard names.
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
awk -v n="$cold_n" -v s="$RANDOM$RANDOM" -v suf="$LAB_WILD_SUFFIX" \
  'BEGIN { for (i = 0; i < n; i++) printf "c%s-%d.%s A\n", s, i, suf }' >"$work/cold-tern.txt"
sed 's/^c/u/' "$work/cold-tern.txt" >"$work/cold-unbound.txt"
# Cold and signed: every name is a fresh expansion of the signed wildcard *.wild.alpha.lab,
# so each answer costs both validators a signature check and an NSEC proof (RFC 4035 5.3.4).
sed "s/\.$LAB_WILD_SUFFIX A\$/.wild.alpha.lab A/; s/^c/s/" "$work/cold-tern.txt" >"$work/signed-tern.txt"
sed 's/^s/v/' "$work/signed-tern.txt" >"$work/signed-unbound.txt"

run() {  # addr file passes -> qps (cold runs pass the file once: every name is new)
  ip netns exec "$NS" dnsperf -s "$1" -a "$CLI4" -d "$2" -l "$SECS" -Q "$MAXQPS" -c 4 -q 500 \
    -n "$3" >>"$work/dnsperf.log" 2>&1 || { cat "$work/dnsperf.log" >&2; return 1; }
  awk '/Queries per second/ { print int($4) }' "$work/dnsperf.log"
}
lost() { awk '/Queries lost/ { l = $3 } END { print l }' "$work/dnsperf.log"; }
# CPU the server spent (user+system, in clock ticks) — on a shared machine qps alone
# says as much about the neighbours as about the server; CPU per answer does not.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
completed() { awk '/Queries completed/ { print $3 }' "$work/dnsperf.log"; }
us_per_q() {  # ticks_before ticks_after queries
  awk -v a="$1" -v b="$2" -v q="$3" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", q ? (b - a) * 1e6 / hz / q : 0 }'
}

for a in $TERN4 $UNB4; do  # wait for both and prime the hit set
  for _ in $(seq 50); do
    ip netns exec "$NS" kdig @"$a" +short +timeout=2 www.lab A 2>/dev/null | grep -q 198.18 && break
    sleep 0.2
  done
  while read -r n t; do ip netns exec "$NS" kdig @"$a" +short "$n" "$t" >/dev/null 2>&1; done <"$work/hit.txt"
done

: >"$work/dnsperf.log"
unb_pid=$(cat "$LAB_RUN/unbound-$NS/unbound.pid")
for p in "$tern_pid" "$unb_pid"; do
  [[ -r /proc/$p/stat ]] || { echo "control_vs_unbound: server pid $p is gone" >&2; cat "$work/tern.log" >&2; exit 1; }
done
measure() {  # name pid addr file passes: sets NAME (qps), NAME_lost, NAME_cpu (us/answer)
  local c0 c1
  : >"$work/dnsperf.log"
  c0=$(cpu "$2")
  printf -v "$1" '%s' "$(run "$3" "$4" "$5")"
  c1=$(cpu "$2")
  printf -v "$1_lost" '%s' "$(lost)"
  printf -v "$1_cpu" '%s' "$(us_per_q "$c0" "$c1" "$(completed)")"
}
measure t_hit "$tern_pid" $TERN4 "$work/hit.txt" 100000000
measure u_hit "$unb_pid" $UNB4 "$work/hit.txt" 100000000
measure t_cold "$tern_pid" $TERN4 "$work/cold-tern.txt" 1
measure u_cold "$unb_pid" $UNB4 "$work/cold-unbound.txt" 1
measure t_sig "$tern_pid" $TERN4 "$work/signed-tern.txt" 1
measure u_sig "$unb_pid" $UNB4 "$work/signed-unbound.txt" 1

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
printf '\n%-20s %12s %12s %6s   %15s %15s\n' "workload (${SECS}s)" "tern qps" "unbound qps" "ratio" \
  "tern us/answer" "unbound us/ans"
printf '%-20s %12s %12s %6s   %15s %15s\n' "cache hit" "$t_hit" "$u_hit" "$(ratio "$t_hit" "$u_hit")" \
  "$t_hit_cpu" "$u_hit_cpu"
printf '%-20s %12s %12s %6s   %15s %15s\n' "cold (unique names)" "$t_cold" "$u_cold" \
  "$(ratio "$t_cold" "$u_cold")" "$t_cold_cpu" "$u_cold_cpu"
printf '%-20s %12s %12s %6s   %15s %15s\n' "cold signed (AD)" "$t_sig" "$u_sig" \
  "$(ratio "$t_sig" "$u_sig")" "$t_sig_cpu" "$u_sig_cpu"
echo "(both validate: tern with [dnssec] on and the lab anchor, unbound with the lab anchor)"
echo "(us/answer: server CPU time, user+system, per completed query; load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf 'lost queries: tern hit %s cold %s signed %s; unbound hit %s cold %s signed %s\n' \
  "${t_hit_lost:-?}" "${t_cold_lost:-?}" "${t_sig_lost:-?}" "${u_hit_lost:-?}" "${u_cold_lost:-?}" "${u_sig_lost:-?}"
