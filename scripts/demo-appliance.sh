#!/usr/bin/env bash
# The whole appliance with its embedded default profile, in the lab:
#   lab (authoritative servers) + node namespace tl-node running tern-dataplane (lab-tap)
#   + the resolver behind its exception interface (tern-control when it is built and
#   resolves, else the lab's unbound) + a client namespace tl-cli sending real queries.
# Shows the answers (first by recursion, then from the cache), then one stats line per
# second from the control socket (qps, hit ratio, per worker) until Ctrl-C.
#
#   scripts/demo-appliance.sh           interactive, Ctrl-C to stop
#   scripts/demo-appliance.sh --smoke   checks the answers and the cache hit, exits 0/1
#
# Needs root and a build (BUILD_DIR, else the first build*/ with tern-dataplane).
# Always tears down what it made (trap); stops the lab only if it started it.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "$0")")/..
cd "$ROOT"
SMOKE=0
[[ ${1:-} == --smoke ]] && SMOKE=1
[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }

find_bin() {  # find_bin REL_PATH: BUILD_DIR first, then build*/ newest first
  local b
  if [[ -n ${BUILD_DIR:-} && -x $BUILD_DIR/$1 ]]; then echo "$BUILD_DIR/$1"; return; fi
  for b in $(ls -dt build*/ 2>/dev/null); do [[ -x $b$1 ]] && { echo "$b$1"; return; }; done
  return 1
}
DP=$(find_bin dataplane/tern-dataplane) || { echo "demo: no tern-dataplane built; run: meson setup build && ninja -C build" >&2; exit 1; }
TC=$(find_bin control/tern-control || true)
DP=$(readlink -f "$DP"); [[ -n $TC ]] && TC=$(readlink -f "$TC")
LAB=$ROOT/tests/lab/lab.sh
NODE=tl-node CLI=tl-cli
TERN4=198.18.0.53 TERN6=2001:2::53 CLI4=198.18.0.100 CLI6=2001:2::100
WORK=$(mktemp -d /tmp/tern-demo.XXXXXX)
SOCK=$WORK/dataplane.sock
DP_PID= TC_PID= LOAD_PID= LAB_WAS_UP=0 RESOLVER=

say() { echo "demo: $*"; }

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  [[ -n $TC_PID ]] && kill -TERM "$TC_PID" 2>/dev/null && wait "$TC_PID" 2>/dev/null
  [[ -n $DP_PID ]] && kill -TERM "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null
  "$LAB" detach-ns "$CLI" >/dev/null 2>&1
  "$LAB" unbound-stop "$NODE" >/dev/null 2>&1
  if [[ -e /run/netns/$NODE ]]; then
    for p in $(ip netns pids "$NODE" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    sleep 0.3; ip netns del "$NODE"
  fi
  ip -n tl-inet link del tl-nic0 >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  ((rc != 0)) && [[ -f $WORK/dp.log ]] && { echo "--- tern-dataplane log"; tail -20 "$WORK/dp.log"; }
  rm -rf "$WORK"
  say "torn down"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

ctl() {
  python3 - "$SOCK" "$*" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while (b := s.recv(65536)):
    data += b
out = data.decode(); sys.stdout.write(out)
sys.exit(0 if out.rstrip("\n").split("\n")[-1] == "OK" else 1)
EOF
}
sum() { ctl stats | awk -v n="tern_dp_$1_total" '$1 ~ "^"n"[{]" { s += $2 } END { print s + 0 }'; }

"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
say "starting the lab (authoritative servers in namespaces)"
"$LAB" start
# shellcheck disable=SC1091
eval "$("$LAB" env)"

say "node $NODE: $DP (built-in lab-tap profile)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
ip netns exec "$NODE" "$DP" --control-socket "$SOCK" --allow 198.18.0.96/27 --allow 2001:2::100/120 \
  >"$WORK/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 100); do
  [[ -S $SOCK ]] && break
  kill -0 "$DP_PID" 2>/dev/null || { echo "demo: tern-dataplane failed to start" >&2; exit 1; }
  sleep 0.1
done
"$LAB" attach-if tl-nic0 "$NODE"
ip -n "$NODE" addr add "$TERN4/16" dev tl-exc0
ip -n "$NODE" addr add "$TERN6/64" dev tl-exc0 nodad

resolves() { local o; o=$(ip netns exec "$NODE" kdig +time=2 +retry=0 @"$TERN4" . SOA 2>/dev/null) && [[ $o == *"status: NOERROR"* ]]; }
if [[ -n $TC ]]; then
  mkdir -p "$WORK/state"
  cat >"$WORK/tern.conf" <<EOF
[server]
listen = $TERN4:53 [$TERN6]:53
allow = 198.18.0.96/27 2001:2::100/120 $TERN4/32
control-socket = $WORK/control.sock
dataplane-socket = $SOCK
state-dir = $WORK/state
[recursion]
root-hints = $LAB_ROOT_HINTS
EOF
  ip netns exec "$NODE" "$TC" -c "$WORK/tern.conf" --foreground >"$WORK/tc.log" 2>&1 &
  TC_PID=$!
  for _ in $(seq 100); do resolves && { RESOLVER="tern-control ($TC)"; break; }; kill -0 "$TC_PID" 2>/dev/null || break; sleep 0.2; done
  if [[ -z $RESOLVER ]]; then
    say "tern-control did not resolve '. SOA' within 20 s ($(tail -1 "$WORK/tc.log"))"
    # The smoke check is about the appliance: a fallback resolver would hide the failure.
    ((SMOKE)) && { echo "--- tern-control log"; tail -20 "$WORK/tc.log"; exit 1; }
    say "using the lab's unbound for the show"
    kill -TERM "$TC_PID" 2>/dev/null || true
    wait "$TC_PID" 2>/dev/null || true
    TC_PID=
  fi
fi
if [[ -z $RESOLVER ]]; then
  "$LAB" unbound-start "$NODE" "$TERN4" "$TERN6"
  RESOLVER="the lab's unbound"
fi
say "resolver behind tl-exc0: $RESOLVER"
"$LAB" attach-ns "$CLI" "$CLI4/16" "$CLI6/64"

ok=1
show() {  # show LABEL EXPECT ARGS...: one query from the client, printed as the answer records
  local label=$1 expect=$2 out h0 h1
  shift 2
  h0=$(sum answer_hit)
  out=$(ip netns exec "$CLI" kdig +time=3 +retry=1 "$@" 2>&1) || true
  h1=$(sum answer_hit)
  local how=resolver; ((h1 > h0)) && how="cache hit"
  printf '  %-34s %-10s %s\n' "kdig $*" "[$how]" "$(awk '/ANSWER SECTION/ { a = 1; next } /^;;/ { a = 0 } a && NF { printf "%s %s %s  ", $1, $4, $5 }' <<<"$out")"
  [[ $out == *"$expect"* ]] || { echo "  expected $expect"; ok=0; }
  [[ $label == hit && $how != "cache hit" ]] && { echo "  expected a cache hit"; ok=0; }
  [[ $label == miss && $how != resolver ]] && { echo "  expected a miss answered by the resolver"; ok=0; }
  return 0
}
say "queries from $CLI ($CLI4)"
show miss 198.18.2.1 @"$TERN4" www.alpha.lab A
show hit 198.18.2.1 @"$TERN4" www.alpha.lab A
show miss 2001:2::4:1 @"$TERN6" www.beta.zz AAAA
show hit 2001:2::4:1 @"$TERN6" www.beta.zz AAAA
show any 198.18.2.1 +tcp @"$TERN4" www.alpha.lab A

if ((SMOKE)); then
  if ((ok)); then say "smoke: OK (recursion, then cache hits, over IPv4, IPv6 and TCP)"; exit 0; fi
  say "smoke: FAILED"; exit 1
fi

say "background load: 50 queries/s over 20 names from $CLI (bounded to 1 hour); Ctrl-C to stop"
( for ((t = 0; t < 3600; t++)); do
    for i in $(seq 0 19); do echo "n$i.wild.beta.zz A"; done >"$WORK/names"
    ip netns exec "$CLI" dnsperf -s "$TERN4" -d "$WORK/names" -l 1 -Q 50 >/dev/null 2>&1 || sleep 1
  done ) &
LOAD_PID=$!
prev=$(ctl stats) prev_t=$(date +%s.%N)
while sleep 1; do
  cur=$(ctl stats) cur_t=$(date +%s.%N)
  python3 - "$prev" "$cur" "$prev_t" "$cur_t" <<'EOF'
import re, sys
def parse(t):
    d = {}
    for l in t.splitlines():
        m = re.match(r'(\w+)(?:\{core="(\d+)"\})? (\d+)$', l)
        if m: d[(m[1], m[2])] = int(m[3])
    return d
a, b = parse(sys.argv[1]), parse(sys.argv[2])
dt = float(sys.argv[4]) - float(sys.argv[3])
cores = sorted({c for (_, c) in b if c is not None}, key=int)
delta = lambda n, c: b.get((n, c), 0) - a.get((n, c), 0)
q = sum(delta("tern_dp_query_ok_total", c) for c in cores)
hit = sum(delta("tern_dp_answer_hit_total", c) + delta("tern_dp_answer_stale_total", c) for c in cores)
per = " ".join(f"core{c}: {delta('tern_dp_query_ok_total', c) / dt:.0f}q/s" for c in cores)
fills = delta("tern_dp_service_fill_inserted_total", None) + delta("tern_dp_service_fill_replaced_total", None)
print(f"qps {q / dt:7.0f}  hit ratio {100 * hit / q if q else 0:5.1f}%  misses->resolver {sum(delta('tern_dp_miss_punted_total', c) for c in cores) / dt:5.0f}/s"
      f"  fills {fills / dt:4.0f}/s  cache entries {b.get(('tern_dp_cache_entries', None), 0)}  [{per}]", flush=True)
EOF
  prev=$cur prev_t=$cur_t
done
