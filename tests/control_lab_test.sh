#!/usr/bin/env bash
# tern-control alone in its own namespace of the lab, against the reference unbound:
#   1. every case of the lab query set gives the same rcode and answer RRsets (compare.py)
#   2. transport and message rules: TCP, pipelined TCP, TC over UDP, EDNS echo, BADVERS,
#      REFUSED outside `allow`, RD=0 answered from cache only, NOTIMP, FORMERR
#   3. lame and dead servers: answers still come, counters say why
#   4. serve-stale: upstreams made unreachable from tern's namespace, expired data is
#      served with the stale TTL; a name never seen is SERVFAIL
#
# TERN_LAB_THREADS=N runs all of it with [server] threads = N (meson: control_lab_threads2),
# and checks that N loops each hold their own sockets and that their counters are summed.
#
# usage: control_lab_test.sh TERN_CONTROL TERNCTL
# Needs root. Starts the lab if it is not running (and then stops it again); the tern
# namespace and everything under $work are removed on exit, also on failure.
set -euo pipefail

TERN_CONTROL=$(readlink -f "${1:?usage: control_lab_test.sh TERN_CONTROL TERNCTL}")
TERNCTL=$(readlink -f "${2:?usage: control_lab_test.sh TERN_CONTROL TERNCTL}")
HERE=$(dirname "$(readlink -f "$0")")
LAB=$HERE/lab/lab.sh
NS=${TERN_LAB_NS:-tl-tern-ctl}
# The lab reserves .53 for tern; TERN_LAB_V4/V6 let a developer run beside other tests.
V4=${TERN_LAB_V4:-198.18.0.53}
V6=${TERN_LAB_V6:-2001:2::53}
THREADS=${TERN_LAB_THREADS:-1}

[[ $(id -u) -eq 0 ]] || { echo "control_lab_test: needs root (network namespaces)"; exit 77; }
for t in kdig python3 ip; do command -v $t >/dev/null || { echo "control_lab_test: $t missing"; exit 77; }; done

work=$(mktemp -d /tmp/tern-control-lab.XXXXXX)
started_lab=0
started_ref=0
tern_pid=
fails=0

cleanup() {
  set +e
  [[ -n $tern_pid ]] && kill "$tern_pid" 2>/dev/null && wait "$tern_pid" 2>/dev/null
  [[ $started_ref == 1 ]] && "$LAB" unbound-stop "$NS" >/dev/null 2>&1
  "$LAB" detach-ns "$NS" >/dev/null 2>&1
  [[ $started_lab == 1 ]] && "$LAB" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=lib/checks.sh
. "$HERE/lib/checks.sh"  # ok, bad, check, inns, counter
dig4() { inns kdig @"$V4" +timeout=6 +retry=0 "$@" 2>&1; }

# ---------------------------------------------------------------- lab ----
if ! "$LAB" status >/dev/null 2>&1; then
  "$LAB" start
  started_lab=1
fi
eval "$("$LAB" env)"
"$LAB" attach-ns "$NS" "$V4/$LAB_PREFIX4" "$V6/$LAB_PREFIX6"
ip -n "$NS" link set lo up

ref=$LAB_REF_V4
if ! ip netns exec "$NS" kdig @"$ref" +timeout=2 +retry=1 www.lab A >/dev/null 2>&1 ||
   ! ip netns exec "$NS" kdig @"$ref" +timeout=2 +retry=1 www.lab A 2>/dev/null | grep -q NOERROR; then
  # No reference running: our own, on a spare lab address inside our namespace.
  ref=${LAB_OTHER_V4_LAST:-198.18.0.79}
  ip -n "$NS" addr add "$ref/$LAB_PREFIX4" dev tl0
  "$LAB" unbound-start "$NS" "$ref"
  started_ref=1
fi

# ----------------------------------------------------------- tern-control ----
write_conf() {  # $1: extra [cache] lines, $2: extra [dnssec] lines
  cat >"$work/tern.conf" <<EOF
[server]
listen = $V4:53
listen = [$V6]:53
listen = 127.0.0.1:53
# 127.0.0.1 listens but is not allowed: the REFUSED case below.
allow = 198.18.0.0/15
allow = 2001:2::/48
control-socket = $work/control.sock
state-dir = $work
tcp-idle-timeout = 2000
threads = $THREADS
[recursion]
root-hints = $LAB_ROOT_HINTS
[dnssec]
trust-anchor-file = $LAB_TRUST_ANCHOR
${2:-}
[cache]
$1
EOF
}
write_conf ""
# `ip netns exec` execs tern-control, so $! is the daemon itself (signals reach it).
ip netns exec "$NS" "$TERN_CONTROL" -c "$work/tern.conf" -f >"$work/tern.log" 2>&1 &
tern_pid=$!
for _ in $(seq 50); do
  dig4 +short www.lab A | grep -q 198.18.3.1 && break
  kill -0 "$tern_pid" 2>/dev/null || { cat "$work/tern.log"; echo "FAIL - tern-control exited"; exit 1; }
  sleep 0.2
done

# ----------------------------------------------------------- 0. threads ----
check "threads = $THREADS: the daemon runs $THREADS event loops" test "$(counter threads_current)" -eq "$THREADS"
# One UDP and one TCP socket per loop on each listen address (SO_REUSEPORT), seen by the kernel.
check "$THREADS UDP sockets bound to $V4:53" test "$(inns ss -Hlun "src $V4:53" | wc -l)" -eq "$THREADS"
check "$THREADS TCP listeners on $V4:53" test "$(inns ss -Hltn "src $V4:53" | wc -l)" -eq "$THREADS"

# ----------------------------------------------------------- 1. compare ----
# tern-control does not validate DNSSEC: --no-dnssec skips AD and validation-only cases.
# Validating, like the reference: rcode, AD and answers equal unbound's for every case,
# and the Extended DNS Error of each failure is the one queries.txt names.
if inns python3 "$LAB_COMPARE" --queries "$LAB_QUERIES" --reference "$ref" --candidate "$V4" \
     --ede >"$work/compare.out" 2>&1; then
  ok "lab query set: same rcode, AD and answers as unbound ($(tail -1 "$work/compare.out"))"
else
  cat "$work/compare.out"
  bad "lab query set differs from unbound"
fi
# The same over IPv6 transport for a few cases.
check "IPv6 listener answers" bash -c "ip netns exec $NS kdig @$V6 +short www.beta.zz A | grep -qx 198.18.4.1"

# ------------------------------------------------- 2. transport and rules ----
check "TCP answers" bash -c "ip netns exec $NS kdig @$V4 +tcp +short www.alpha.lab A | grep -qx 198.18.2.1"

# Pipelined TCP (RFC 7766 §6.2.1.1): three queries written at once, three answers by ID.
cat >"$work/pipeline.py" <<'EOF'
import socket, struct, sys
def q(i, name, t):
    h = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    n = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
    m = h + n + struct.pack(">HH", t, 1)
    return struct.pack(">H", len(m)) + m
s = socket.create_connection((sys.argv[1], 53), timeout=5)
s.sendall(q(101, "www.alpha.lab", 1) + q(102, "www.beta.zz", 28) + q(103, "nope.alpha.lab", 1))
ids, buf = {}, b""
while len(ids) < 3:
    d = s.recv(65535)
    if not d: break
    buf += d
    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
        l = struct.unpack(">H", buf[:2])[0]; m = buf[2:2 + l]; buf = buf[2 + l:]
        ids[struct.unpack(">H", m[:2])[0]] = m[3] & 0x0f
print(sorted(ids.items()))
sys.exit(0 if ids == {101: 0, 102: 0, 103: 3} else 1)
EOF
check "pipelined TCP queries all answered, matched by ID" inns python3 "$work/pipeline.py" "$V4"

# TC: txt-big is larger than 512 bytes; without EDNS the UDP reply must be truncated and
# empty, and the full answer comes over TCP.
big=$(awk '$4 ~ /tc/ || $5 ~ /tc/ {print $1" "$2; exit}' "$LAB_QUERIES")
if [[ -n $big ]]; then
  out=$(dig4 +noedns +notcp $big)
  check "TC over UDP without EDNS (${big})" bash -c "grep -q 'flags: qr tc' <<<'$out' || grep -q ' tc ' <<<'$out' || grep -qE 'Flags: .*tc' <<<'$out'"
  check "TC reply carries no answer records" bash -c "grep -qE 'ANSWER: 0' <<<'$out'"
  check "the same answer in full over TCP" bash -c "ip netns exec $NS kdig @$V4 +tcp $big | grep -qE 'ANSWER: [1-9]'"
else
  bad "no 'tc' case in $LAB_QUERIES"
fi

out=$(dig4 +noedns www.lab A)
check "no OPT in the reply when the query had none" bash -c "! grep -q 'EDNS PSEUDOSECTION' <<<'$out'"
out=$(dig4 +bufsize=4096 www.lab A)
check "OPT echoed with our 1232-byte buffer" bash -c "grep -qE 'UDP size: 1232|udp: 1232' <<<'$out'"
out=$(dig4 +edns=1 www.lab A)
check "EDNS version 1 gets BADVERS" bash -c "grep -q BADVERS <<<'$out'"
out=$(inns kdig @127.0.0.1 +timeout=3 +retry=0 www.lab A 2>&1)
check "client outside allow gets REFUSED" bash -c "grep -q 'status: REFUSED' <<<'$out'"
check "REFUSED by ACL is counted" test "$(counter refused_acl)" -ge 1

# RD=0: cached name answered, uncached name not resolved.
out=$(dig4 +norec www.lab A)
check "RD=0 answered from cache" bash -c "grep -q 198.18.3.1 <<<'$out'"
sent=$(counter upstream_udp_sent)
dig4 +norec "never-$RANDOM.alpha.lab" A >/dev/null
check "RD=0 miss sends nothing upstream" test "$(counter upstream_udp_sent)" -eq "$sent"

cat >"$work/raw.py" <<'EOF'
import socket, struct, sys
addr, kind = sys.argv[1], sys.argv[2]
name = b"\3www\3lab\0"
if kind == "notimp":    # opcode NOTIFY (4)
    m = struct.pack(">HHHHHH", 7, 4 << 11, 1, 0, 0, 0) + name + struct.pack(">HH", 6, 1)
else:                   # FORMERR: qdcount 2 with one question
    m = struct.pack(">HHHHHH", 7, 0x0100, 2, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(m, (addr, 53))
r = s.recv(4096)
print(r[3] & 0x0f)
EOF
check "opcode NOTIFY gets NOTIMP" bash -c "[[ \$(ip netns exec $NS python3 $work/raw.py $V4 notimp) == 4 ]]"
check "qdcount 2 gets FORMERR" bash -c "[[ \$(ip netns exec $NS python3 $work/raw.py $V4 formerr) == 1 ]]"

# ------------------------------------------------------ 3. lame and dead ----
lame=$(awk '$1 ~ /lame/ {print $1" "$2; exit}' "$LAB_QUERIES")
if [[ -n $lame ]]; then dig4 $lame >/dev/null; fi
check "lame servers detected and counted" test "$(counter resolver_lame_servers)" -ge 1
out=$(inns kdig @"$V4" +timeout=15 +retry=0 "x$RANDOM.dead.zz" A 2>&1)
check "a zone whose only server is dead: SERVFAIL" bash -c "grep -q 'status: SERVFAIL' <<<'$out'"
check "upstream timeouts counted" test "$(counter upstream_timeouts)" -ge 1

# ---------------------------------------------------------- 4. DNSSEC ----
has_ad() { grep -qE 'Flags: .* ad( |;|$)' <<<"$1"; }
out=$(dig4 +dnssec www.alpha.lab A)
check "DO=1: secure answer has AD and its RRSIG" bash -c "$(declare -f has_ad); has_ad '$out' && grep -q RRSIG <<<'$out'"
out=$(dig4 +noadflag www.alpha.lab A)
check "DO=0 AD=0: no AD, no RRSIG (RFC 6840 5.7, RFC 4035 3.2.1)" bash -c "$(declare -f has_ad); ! has_ad '$out' && ! grep -q RRSIG <<<'$out'"
out=$(dig4 +adflag www.alpha.lab A)
check "AD=1 without DO: AD, no RRSIG" bash -c "$(declare -f has_ad); has_ad '$out' && ! grep -q RRSIG <<<'$out'"
for i in 1 2; do out=$(dig4 +cd www.bogus.lab A); done
check "CD=1 twice (second from the message cache): bogus data, NOERROR, no AD" bash -c "$(declare -f has_ad); grep -q 'status: NOERROR' <<<'$out' && grep -q 198.18.2.66 <<<'$out' && ! has_ad '$out'"
out=$(dig4 +edns www.bogus.lab A)
check "CD=0 after CD=1: SERVFAIL, never the CD=1 answer" bash -c "grep -q 'status: SERVFAIL' <<<'$out'"
check "bogus answer carries EDE 6 (DNSSEC Bogus)" bash -c "grep -qE 'EDE: 6' <<<'$out'"
"$TERNCTL" -s "$work/control.sock" nta add bogus.lab >/dev/null
out=$(dig4 www.bogus.lab A)
check "ternctl nta add: the broken zone answers, insecure" bash -c "$(declare -f has_ad); grep -q 'status: NOERROR' <<<'$out' && ! has_ad '$out'"
check "ternctl nta list shows it" bash -c "'$TERNCTL' -s '$work/control.sock' nta list | grep -qx bogus.lab."
"$TERNCTL" -s "$work/control.sock" nta remove bogus.lab >/dev/null
out=$(dig4 www.bogus.lab A)
check "ternctl nta remove: SERVFAIL again" bash -c "grep -q 'status: SERVFAIL' <<<'$out'"
# RFC 8198: a second unknown name that the first NXDOMAIN's NSECs already cover is answered
# from them (secure NXDOMAIN with AD), with nothing sent upstream.
dig4 +dnssec "zzz-$RANDOM-a.alpha.lab" A >/dev/null
sent=$(counter upstream_udp_sent)
agg=$(counter dnssec_aggressive_nxdomain)
out=$(dig4 +dnssec "zzz-$RANDOM-b.alpha.lab" A)
check "aggressive NSEC (RFC 8198): NXDOMAIN with AD from cached NSECs" bash -c "$(declare -f has_ad); grep -q 'status: NXDOMAIN' <<<'$out' && has_ad '$out' && grep -q NSEC <<<'$out'"
check "aggressive NSEC: nothing sent upstream, counted" bash -c "(( $(counter upstream_udp_sent) == $sent && $(counter dnssec_aggressive_nxdomain) > $agg ))"
out=$(dig4 +dnssec "zzz-$RANDOM-c.nx.alpha.lab" A)
check "aggressive NSEC: a name below a nonexistent name is NXDOMAIN too" bash -c "grep -q 'status: NXDOMAIN' <<<'$out'"
n=0
for k in dnssec_secure dnssec_insecure dnssec_bogus; do (( $(counter $k) > 0 )) && n=$((n + 1)); done
check "outcomes counted (tern_dnssec_secure/insecure/bogus_total)" test "$n" -eq 3
write_conf "" "validation = no"
kill -HUP "$tern_pid"
sleep 1
out=$(dig4 www.bogus.lab A)
check "validation = no (reload): bogus zone answers" bash -c "grep -q 'status: NOERROR' <<<'$out'"
out=$(dig4 +dnssec www.alpha.lab A)
check "validation = no: no AD" bash -c "$(declare -f has_ad); ! has_ad '$out'"
write_conf ""
kill -HUP "$tern_pid"
sleep 1
out=$(dig4 www.bogus.lab A)
check "validation back on (reload): SERVFAIL" bash -c "grep -q 'status: SERVFAIL' <<<'$out'"

# ----------------------------------------------------------- 5. stale ----
# Short TTLs through a reload (SIGHUP), fill the cache, then make every lab server
# unreachable from tern's namespace only (a blackhole route: the shared lab keeps running).
write_conf "ttl-cap = 2"
kill -HUP "$tern_pid"
sleep 1
"$TERNCTL" -s "$work/control.sock" cache flush >/dev/null 2>&1 || true
check "fresh answer before the outage" bash -c "ip netns exec $NS kdig @$V4 +short www.beta.zz A | grep -qx 198.18.4.1"
ip -n "$NS" route add blackhole 198.18.1.0/24
ip -n "$NS" -6 route add blackhole 2001:2::1:0/112
sleep 3
out=$(inns kdig @"$V4" +edns +timeout=8 +retry=0 www.beta.zz A 2>&1)
check "serve-stale: expired answer served while upstreams are down" bash -c "grep -q 'status: NOERROR' <<<'$out' && grep -q 198.18.4.1 <<<'$out'"
check "serve-stale: stale TTL is 30" bash -c "grep -E 'www.beta.zz.\s+30\s+IN\s+A' <<<'$out' >/dev/null"
check "stale answers counted" test "$(counter resolver_answers_stale)" -ge 1
check "stale answer carries EDE 3 (Stale Answer)" bash -c "grep -qE 'EDE: 3' <<<'$out'"
out=$(inns kdig @"$V4" +timeout=8 +retry=0 "never-seen-$RANDOM.beta.zz" A 2>&1)
check "a name never seen: SERVFAIL during the outage" bash -c "grep -q 'status: SERVFAIL' <<<'$out'"
ip -n "$NS" route del blackhole 198.18.1.0/24
ip -n "$NS" -6 route del blackhole 2001:2::1:0/112

# Counters are the sum over loops: every UDP query the clients sent above is counted once.
check "per-loop counters summed: UDP queries counted" test "$(counter queries_udp)" -ge 40
kill -0 "$tern_pid" 2>/dev/null && ok "tern-control still running" || bad "tern-control died"
if ((fails > 0)); then
  echo "--- tern-control log"; tail -30 "$work/tern.log"
  echo "control_lab_test: $fails check(s) failed"
  exit 1
fi
echo "control_lab_test: all checks passed"
