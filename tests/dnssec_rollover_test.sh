#!/usr/bin/env bash
# RFC 5011 in the lab: the root rolls its KSK and tern-control follows.
#
# tern-control starts with the lab's shipped anchor (the DS of the root's key) and
# rfc5011-hold-down = 4s. A second key is added to the root (knot's keymgr, the zone
# re-signed by both keys): tern-control's managed anchor file lists it as pending, then,
# after the hold-down, as trusted. The old key is then removed from the root: tern-control
# keeps validating (AD) through the new anchor, also after a restart, while a second
# tern-control that knows only the shipped anchor answers SERVFAIL (DNSKEY missing).
#
# Uses a private lab (prefix `tr`, it changes the root's keys) and removes it at the end.
# usage: tests/dnssec_rollover_test.sh TERN_CONTROL TERNCTL     (root)
set -euo pipefail

TERN_CONTROL=$(readlink -f "${1:?usage: dnssec_rollover_test.sh TERN_CONTROL TERNCTL}")
TERNCTL=$(readlink -f "${2:?usage: dnssec_rollover_test.sh TERN_CONTROL TERNCTL}")
HERE=$(dirname "$(readlink -f "$0")")
LAB=$HERE/lab/lab.sh
export LAB_NS_PREFIX=tr
NS=tr-roll
V4=198.18.0.53 V4B=198.18.0.54

[[ $(id -u) -eq 0 ]] || { echo "dnssec_rollover_test: needs root"; exit 77; }
for t in kdig keymgr knotc; do command -v $t >/dev/null || { echo "dnssec_rollover_test: $t missing"; exit 77; }; done

work=$(mktemp -d /tmp/tern-rollover.XXXXXX)
pids=()
fails=0
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  "$LAB" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=lib/checks.sh
. "$HERE/lib/checks.sh"  # ok, bad, check, inns, counter

"$LAB" stop >/dev/null 2>&1 || true  # this prefix is ours alone: start from scratch
"$LAB" start >/dev/null
eval "$("$LAB" env)"
"$LAB" attach-ns "$NS" "$V4/$LAB_PREFIX4" "2001:2::53/$LAB_PREFIX6" >/dev/null
ip -n "$NS" addr add "$V4B/$LAB_PREFIX4" dev tl0
root_conf=$LAB_RUN/srv/root/knot.conf

start_tern() {  # name address state-dir
  mkdir -p "$3"
  cat >"$work/$1.conf" <<EOC
[server]
listen = $2:53
allow = 198.18.0.0/15
control-socket = $work/$1.sock
state-dir = $3
[recursion]
root-hints = $LAB_ROOT_HINTS
[dnssec]
trust-anchor-file = $LAB_TRUST_ANCHOR
rfc5011-hold-down = 4s
EOC
  ip netns exec "$NS" "$TERN_CONTROL" -c "$work/$1.conf" -f >>"$work/$1.log" 2>&1 &
  pids+=($!)
}
ad_answer() {  # address -> 0 when www.alpha.lab A comes back NOERROR with AD
  local out
  out=$(ip netns exec "$NS" kdig @"$1" +dnssec +timeout=2 +retry=0 www.alpha.lab A 2>&1) || return 1
  [[ $out == *"status: NOERROR"* ]] && grep -qE 'Flags: .* ad( |;|$)' <<<"$out"
}
wait_for() {  # seconds command...: polls every 0.2 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.2; done
}

start_tern a "$V4" "$work/state-a"
managed=$work/state-a/trust-anchors/managed.key
if wait_for 20 ad_answer "$V4"; then ok "secure answer (AD) with the shipped anchor"; else bad "no AD with the shipped anchor"; fi
[[ -s $managed ]] && ! grep -v '^;' "$managed" | grep -q DNSKEY &&
  ok "managed anchor file seeded from the shipped one (DS only)" || bad "managed file: $(cat "$managed" 2>&1)"

old_id=$(keymgr -c "$root_conf" . list | awk '{ print $1; exit }')
new_id=$(keymgr -c "$root_conf" . generate algorithm=ecdsap256sha256 ksk=yes zsk=yes)
knotc -c "$root_conf" zone-sign . >/dev/null
newpub=$(keymgr -c "$root_conf" . dnskey "$new_id" | awk '{ print $NF }')
[[ -n $newpub ]] || bad "keymgr did not print the new key"
pending() { grep -q "^;pending .*$newpub" "$managed" 2>/dev/null; }
trusted() { grep -v '^;' "$managed" 2>/dev/null | grep -qF "$newpub"; }
t0=$SECONDS
if wait_for 15 pending; then ok "new root KSK seen and pending (add hold-down)"; else bad "new KSK never pending: $(cat "$managed")"; fi
trusted && bad "new KSK trusted before its hold-down" || ok "not trusted during the hold-down"
if wait_for 20 trusted; then ok "new root KSK trusted after the hold-down ($((SECONDS - t0)) s)"; else bad "new KSK never trusted: $(cat "$managed")"; fi

# The old key leaves the root: only the RFC 5011 anchor can validate it now.
keymgr -c "$root_conf" . delete "$old_id" >/dev/null
knotc -c "$root_conf" zone-sign . >/dev/null
"$TERNCTL" -s "$work/a.sock" cache flush >/dev/null
if wait_for 15 ad_answer "$V4"; then ok "after the old KSK is gone: still AD through the new anchor"; else bad "no AD after the rollover"; fi

start_tern b "$V4B" "$work/state-b"
out=""
wait_for 20 bash -c "ip netns exec $NS kdig @$V4B +timeout=2 +retry=0 www.alpha.lab A 2>&1 | grep -q 'status: SERVFAIL'" &&
  ok "a resolver with only the shipped anchor: SERVFAIL (the rollover is what kept the other one secure)" ||
  bad "a resolver without the new anchor did not fail"

kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
start_tern a "$V4" "$work/state-a"
if wait_for 20 ad_answer "$V4"; then ok "restarted: the managed anchor file is used (AD)"; else bad "no AD after restart"; fi

if ((fails)); then
  echo "--- tern-control a"; tail -20 "$work/a.log"
  echo "dnssec_rollover_test: $fails check(s) failed"; exit 1
fi
echo "dnssec_rollover_test: all checks passed"
