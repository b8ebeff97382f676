#!/usr/bin/env bash
# A random-subdomain flood against one lab zone, tern-control on two event loops with
# [recursion] fetches-per-zone = $LIMIT:
#
#   flood:    unique names under slow.zz. (its only server holds every query 0.8 s) at
#             $RATE queries/s for $SECS s, from tern's own namespace (dnsperf)
#   watched:  every packet between tern and slow.zz's server (tcpdump in tern's namespace):
#             the upstream queries in flight at once, paired query -> reply by port and ID,
#             must never exceed the limit (without it they reach RATE x 0.8 s)
#   meanwhile: names in other zones, never asked before, must keep resolving (NOERROR)
#
# The slow server's RTT is learned first (a few sequential names), so that tern's upstream
# timeout is above its 0.8 s: a query in flight on the wire is then one tern counts.
# Prints the figures. usage: control_flood_test.sh TERN_CONTROL TERNCTL (root)
set -euo pipefail

TERN_CONTROL=$(readlink -f "${1:?usage: control_flood_test.sh TERN_CONTROL TERNCTL}")
TERNCTL=$(readlink -f "${2:?usage: control_flood_test.sh TERN_CONTROL TERNCTL}")
HERE=$(dirname "$(readlink -f "$0")")
LAB=$HERE/lab/lab.sh
NS=${TERN_FLOOD_NS:-tl-tern-fl}
V4=${TERN_LAB_V4:-198.18.0.53}
LIMIT=${TERN_FLOOD_LIMIT:-8}
RATE=${TERN_FLOOD_RATE:-300}
SECS=${TERN_FLOOD_SECS:-6}

[[ $(id -u) -eq 0 ]] || { echo "control_flood_test: needs root (network namespaces)"; exit 77; }
for t in kdig dnsperf tcpdump python3 ip; do
  command -v $t >/dev/null || { echo "control_flood_test: $t missing"; exit 77; }
done

work=$(mktemp -d /tmp/tern-control-flood.XXXXXX)
started_lab=0
tern_pid= dump_pid=
fails=0

cleanup() {
  set +e
  [[ -n $dump_pid ]] && kill "$dump_pid" 2>/dev/null && wait "$dump_pid" 2>/dev/null
  [[ -n $tern_pid ]] && kill "$tern_pid" 2>/dev/null && wait "$tern_pid" 2>/dev/null
  "$LAB" detach-ns "$NS" >/dev/null 2>&1
  [[ $started_lab == 1 ]] && "$LAB" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=lib/checks.sh
. "$HERE/lib/checks.sh"  # ok, bad, check, inns, counter

if ! "$LAB" status >/dev/null 2>&1; then
  "$LAB" start
  started_lab=1
fi
eval "$("$LAB" env)"
SLOW=${LAB_SRV_SLOW_V4:-198.18.1.21}
"$LAB" attach-ns "$NS" "$V4/$LAB_PREFIX4" "2001:2::53/$LAB_PREFIX6"
ip -n "$NS" link set lo up

cat >"$work/tern.conf" <<EOF
[server]
listen = $V4:53
allow = 198.18.0.0/15
control-socket = $work/control.sock
state-dir = $work
threads = 2
# The flood comes from one address: without these it would be capped per client first.
max-outstanding-per-client = 100000
max-outstanding-total = 100000
[recursion]
root-hints = $LAB_ROOT_HINTS
fetches-per-zone = $LIMIT
EOF
ip netns exec "$NS" "$TERN_CONTROL" -c "$work/tern.conf" -f >"$work/tern.log" 2>&1 &
tern_pid=$!
for _ in $(seq 50); do
  inns kdig @"$V4" +timeout=2 +retry=0 +short www.lab A 2>/dev/null | grep -q 198.18.3.1 && break
  kill -0 "$tern_pid" 2>/dev/null || { cat "$work/tern.log"; echo "FAIL - tern-control exited"; exit 1; }
  sleep 0.2
done

# Learn slow.zz's delegation and its server's RTT, one name at a time.
tag=$$-$RANDOM
for i in 1 2 3 4; do inns kdig @"$V4" +timeout=8 +retry=0 "warm$i-$tag.slow.zz" A >/dev/null 2>&1 || true; done

slow_timeouts() {
  "$TERNCTL" -s "$work/control.sock" stats 2>/dev/null |
    awk -v k="upstream_timeouts_total{server=\"$SLOW\"}" '$1 == k { n = $2 } END { print n + 0 }'
}
timeouts_before=$(slow_timeouts)
inns tcpdump -i tl0 -n -l -tt -U "udp and host $SLOW and port 53" >"$work/dump.txt" 2>"$work/tcpdump.err" &
dump_pid=$!
sleep 1

for i in $(seq $((RATE * SECS))); do echo "f$i-$tag.slow.zz A"; done >"$work/flood.txt"
inns dnsperf -s "$V4" -d "$work/flood.txt" -l "$SECS" -Q "$RATE" -q 5000 -t 4 >"$work/dnsperf.txt" 2>&1 &
perf_pid=$!

# Other zones during the flood: fresh names (cold), one every 0.4 s.
other_ok=0 other_n=0
sleep 0.5
for i in $(seq 10); do
  other_n=$((other_n + 1))
  z=$([[ $((i % 2)) == 0 ]] && echo wild.beta.zz || echo wild.alpha.lab)
  if inns kdig @"$V4" +timeout=3 +retry=0 "o$i-$tag.$z" A 2>/dev/null | grep -q 'status: NOERROR'; then
    other_ok=$((other_ok + 1))
  fi
  sleep 0.4
done
wait "$perf_pid" || true
sleep 2  # the last upstream replies
kill "$dump_pid" 2>/dev/null; wait "$dump_pid" 2>/dev/null || true
dump_pid=

# In flight: a query from tern stays in flight until the reply with its port and ID, or
# until tern asks the same name again (it gave the first up at its timeout: the slot went
# back then, though the slow server still holds the query).
read -r upstream peak abandoned < <(python3 - "$work/dump.txt" "$SLOW" <<'EOF'
import re, sys
slow = sys.argv[2]
pat = re.compile(r"^(\d+\.\d+) IP (\S+) > (\S+): (\d+)(.*)$")
qpat = re.compile(r" (\S+)\? (\S+) ")
events, sent, by_name, abandoned = [], {}, {}, 0
for line in open(sys.argv[1]):
    m = pat.match(line)
    if not m: continue
    t, src, dst, qid, rest = float(m[1]), m[2], m[3], m[4], m[5]
    if dst.startswith(slow + "."):
        q = qpat.search(rest)
        name = q[2].lower() if q else None
        old = by_name.get(name)
        if name and old in sent:
            del sent[old]; events.append((t, -1)); abandoned += 1
        sent[(src, qid)] = t; by_name[name] = (src, qid); events.append((t, 1))
    elif src.startswith(slow + ".") and (dst, qid) in sent:
        del sent[(dst, qid)]; events.append((t, -1))
events.sort(key=lambda e: (e[0], e[1]))
cur = peak = 0
for _, d in events:
    cur += d; peak = max(peak, cur)
print(sum(1 for e in events if e[1] == 1), peak, abandoned)
EOF
)
# Queries tern timed out and did not ask again (it gave the resolution up) stay open on the
# wire until the slow server answers, after tern gave their slot back: the wire may show
# one more in flight for each of those, and only for those (tern counts them in its tally).
timeouts=$(( $(slow_timeouts) - timeouts_before ))
given_up=$(( timeouts > abandoned ? timeouts - abandoned : 0 ))
sent=$(awk '/Queries sent:/ {print $3}' "$work/dnsperf.txt")
done_q=$(awk '/Queries completed:/ {print $3}' "$work/dnsperf.txt")
dropped=$(counter resolver_fetches_zone_dropped)
echo "flood: $sent queries for unique names under slow.zz at $RATE/s for ${SECS}s, $done_q answered"
echo "flood: upstream queries to slow.zz's server: $upstream ($abandoned asked again after a timeout), at most $peak in flight at once (limit $LIMIT; without it ~$((RATE * 8 / 10)))"
echo "flood: upstream timeouts at tern: $timeouts ($given_up not asked again)"
echo "flood: resolutions refused by fetches-per-zone: $dropped; tern's own peak count: $(counter fetches_zone_peak_current)"
echo "flood: other zones during the flood: $other_ok/$other_n fresh names resolved"

check "the flood reached tern ($sent queries)" test "${sent:-0}" -ge $((RATE * SECS / 2))
check "tern sent the zone upstream queries ($upstream)" test "${upstream:-0}" -ge "$LIMIT"
check "upstream queries in flight to the flooded zone never above fetches-per-zone ($peak <= $LIMIT + $given_up timed out)" \
  test "${peak:-999}" -le $((LIMIT + given_up))
check "the wire bound stays meaningful: few timed-out queries given up ($given_up <= $LIMIT)" \
  test "$given_up" -le "$LIMIT"
check "drops over the limit are counted ($dropped)" test "${dropped:-0}" -ge 1
check "other zones keep resolving during the flood ($other_ok/$other_n)" test "$other_ok" -eq "$other_n"
kill -0 "$tern_pid" 2>/dev/null && ok "tern-control still running" || bad "tern-control died"
if ((fails > 0)); then
  cp "$work/dump.txt" /tmp/tern-flood-dump.last 2>/dev/null && echo "(packet log kept in /tmp/tern-flood-dump.last)"
  echo "--- tern-control log"; tail -20 "$work/tern.log"
  echo "--- dnsperf"; cat "$work/dnsperf.txt"
  echo "control_flood_test: $fails check(s) failed"
  exit 1
fi
echo "control_flood_test: all checks passed"
