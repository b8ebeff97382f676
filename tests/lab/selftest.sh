#!/usr/bin/env bash
# Self-test of the lab: start it, plug a client namespace in, start the
# reference unbound in tl-ref (198.18.0.60, 2001:2::60), check every case of
# queries.txt against it over IPv4 and IPv6 (TC then TCP included), check the
# silent server drops rather than rejects and that attach-if bridges a foreign
# interface, then stop and verify that nothing is left behind.
#
# By default it builds its own lab under the namespace prefix "ts" (ts-inet,
# ts-root, ...; same addresses, separate namespaces), so it neither disturbs nor
# is disturbed by the shared "tl" lab others work in. LAB_NS_PREFIX=tl tests the
# shared lab itself; if that one is already up the selftest uses it, leaves it
# running, skips the start/stop and leftover checks, and only removes the
# namespaces it created.
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
LAB=$HERE/lab.sh
export LAB_NS_PREFIX=${LAB_NS_PREFIX:-ts}
P=$LAB_NS_PREFIX
CLIENT_NS=$P-stclient
IF_NS=$P-stif
REF_NS=$P-ref
REF_V4=198.18.0.60
REF_V6=2001:2::60

fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
step() { echo "selftest: $*"; }

[[ $(id -u) -eq 0 ]] || { echo "selftest: needs root (network namespaces)"; exit 77; }

owned=1
ref_started=0
if "$LAB" status >/dev/null 2>&1; then
  owned=0
  step "lab '$P' already up: running against it, leaving it up"
fi

cleanup() {
  local rc=$?
  set +e
  if ((owned)); then
    "$LAB" stop >/dev/null 2>&1
  else
    ((ref_started)) && "$LAB" unbound-stop "$REF_NS" >/dev/null 2>&1
    "$LAB" detach-ns "$CLIENT_NS" >/dev/null 2>&1
    ip netns del "$IF_NS" 2>/dev/null
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((owned)); then
  step "lab.sh start"
  "$LAB" start || fail "lab.sh start failed"
  "$LAB" start 2>&1 | grep -q 'already up' || fail "second lab.sh start did not see the running lab (not idempotent)"
fi
"$LAB" status >/dev/null || { "$LAB" status; fail "lab.sh status reports the lab not fully up"; }
eval "$("$LAB" env)"
[[ -s $LAB_ROOT_HINTS && -s $LAB_TRUST_ANCHOR ]] || fail "lab.env names $LAB_ROOT_HINTS / $LAB_TRUST_ANCHOR but they are missing or empty"
cmp -s <("$LAB" env) "$LAB_RUN/lab.env" || fail "lab.sh env and $LAB_RUN/lab.env differ"

step "attach-ns $CLIENT_NS (198.18.0.100)"
"$LAB" attach-ns "$CLIENT_NS" 198.18.0.100/16 2001:2::100/64
in_client() { ip netns exec "$CLIENT_NS" "$@"; }

if ((owned)) || [[ ! -f $LAB_RUN/unbound-$REF_NS/unbound.pid ]]; then
  step "unbound-start $REF_NS $REF_V4 $REF_V6"
  "$LAB" attach-ns "$REF_NS" "$REF_V4/16" "$REF_V6/64"
  "$LAB" unbound-start "$REF_NS" "$REF_V4" "$REF_V6"
  ref_started=1
fi

step "compare.py --expect-only $REF_V4 (every case of queries.txt)"
in_client python3 "$HERE/compare.py" --queries "$LAB_QUERIES" --expect-only "$REF_V4" ||
  fail "the reference resolver does not give the expected answers over IPv4"
step "compare.py --expect-only [$REF_V6]:53"
in_client python3 "$HERE/compare.py" --queries "$LAB_QUERIES" --expect-only "[$REF_V6]:53" ||
  fail "the reference resolver does not give the expected answers over IPv6"
step "compare.py --reference $REF_V4 --candidate [$REF_V6]:53 (the comparison mode)"
in_client python3 "$HERE/compare.py" --queries "$LAB_QUERIES" --reference "$REF_V4" \
  --candidate "[$REF_V6]:53" || fail "comparison of the reference with itself reports differences"

# The silent server must drop: a resolver that got ICMP port unreachable would
# fail fast and never exercise its timeout path.
step "$LAB_SRV_DEAD_NS ($LAB_SRV_DEAD_V4) drops queries instead of rejecting them"
in_client python3 - "$LAB_SRV_DEAD_V4" <<'EOF' || fail "the dead server did not stay silent"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 53))
s.settimeout(1.5)
for _ in range(2):
    s.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x04dead\x02zz\x00\x00\x01\x00\x01")
    try:
        s.recv(512)
        sys.exit("got a reply")
    except socket.timeout:
        pass
    except ConnectionRefusedError:
        sys.exit("got ICMP port unreachable (rejected, not dropped)")
EOF
# ...and the host itself must be there (ARP resolves): silence, not absence.
ip -n "$CLIENT_NS" neigh show "$LAB_SRV_DEAD_V4" | grep -q lladdr ||
  fail "$LAB_SRV_DEAD_V4 does not answer ARP: the dead server must be present and silent"

step "attach-if: a veth end from $IF_NS joins the bridge"
ip netns add "$IF_NS"
ip -n "$IF_NS" link add "${P}st0" type veth peer name "${P}st1"
"$LAB" attach-if "${P}st0" "$IF_NS"
ip -n "$IF_NS" addr add 198.18.0.101/16 dev "${P}st1"
ip -n "$IF_NS" addr add 2001:2::101/64 dev "${P}st1" nodad
ip -n "$IF_NS" link set "${P}st1" up
out=$(ip netns exec "$IF_NS" kdig @"$LAB_SRV_ROOT_V6" . SOA +norec +time=2 +retry=2) ||
  fail "no answer from the root server through an interface plugged in with attach-if"
[[ $out == *"status: NOERROR"* ]] || fail "root server via attach-if: unexpected reply: $out"
ip netns del "$IF_NS"

if ((!owned)); then
  step "PASS (shared lab: start/stop and leftover checks skipped)"
  exit 0
fi

# Teardown: record what runs, stop (twice: idempotent), then look for leftovers.
lab_ns() { ip netns list | awk -v p="$P-" 'index($1, p) == 1 { print $1 }'; }
pids=$(for ns in $(lab_ns); do ip netns pids "$ns"; done)
[[ -n $pids ]] || fail "no process runs in the lab namespaces before stop"
step "lab.sh stop (twice)"
"$LAB" stop
"$LAB" stop
left=$(lab_ns)
[[ -z $left ]] || fail "namespaces left after stop: $left"
left=$(ip -o link show | awk -F': ' -v p="$P" 'index($2, p) == 1 { print $2 }')
[[ -z $left ]] || fail "interfaces left in the root namespace after stop: $left"
for p in $pids; do
  # a zombie is already dead; anything else still running is a leak
  if [[ -r /proc/$p/stat ]] && [[ $(awk '{ print $3 }' "/proc/$p/stat") != Z ]]; then
    fail "process $p ($(tr '\0' ' ' <"/proc/$p/cmdline")) survived lab.sh stop"
  fi
done
[[ ! -e $LAB_RUN ]] || fail "$LAB_RUN left after stop"
trap - EXIT
step "PASS"
