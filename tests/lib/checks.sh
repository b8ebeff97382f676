# Sourced by the tern-control lab tests (control_lab, control_flood, dnssec_rollover):
# TAP-like check lines and the few helpers they all use. Expects the caller's $fails (count
# of failed checks), and for inns/counter its $NS (client namespace), $TERNCTL and $work.
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
inns() { ip netns exec "$NS" "$@"; }
counter() { "$TERNCTL" -s "$work/control.sock" stats 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }'; }
