#!/usr/bin/env bash
# tern-control config safety, end to end: the incident tern exists for, replayed.
#
#   control_reload_test.sh TERN_CONTROL TERNCTL
#
# Runs in a network namespace of its own (unshare --net: only its loopback, nothing reaches
# outside). A real authoritative server (knotd) serves `test.` on 127.0.0.2:5300; tern-control
# routes it there with a stub-zone and answers on 127.0.0.1. Checks, as a user would see them:
#   1. reload with a good file: the new listener answers, the old one still does;
#   2. reload with a bad file: ternctl exits 1 naming FILE:LINE, the old config keeps
#      answering, and a query loop running across the attempts (and across a good reload)
#      loses no query;
#   3. reload with a removed option: a warning, and the file applies;
#   4. restart with a broken file: tern-control serves from the last-known-good copy and says
#      so (log, ternctl status, stats config_lkg_in_use 1); fixing the file + reload ends it;
#   5. restart with a broken file and no good copy: tern-control refuses, exit 1, with the error.
set -euo pipefail

if [[ ${TERN_IN_NETNS:-0} != 1 ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "control_reload_test: needs root (network namespace)" >&2; exit 77; }
  exec unshare --net env TERN_IN_NETNS=1 "$0" "$@"
fi

TC=$(readlink -f "${1:?usage: control_reload_test.sh TERN_CONTROL TERNCTL}")
CTL=$(readlink -f "${2:?usage: control_reload_test.sh TERN_CONTROL TERNCTL}")
for b in "$TC" "$CTL" /usr/sbin/knotd /usr/bin/kdig python3; do
  command -v "$b" >/dev/null || { echo "control_reload_test: missing $b" >&2; exit 1; }
done

ip link set lo up
W=$(mktemp -d /tmp/tern-reload-test.XXXXXX)
KNOT_PID= TC_PID= LOOP_PID= NOTIFY_PID=
cleanup() {
  local rc=$?
  for p in $NOTIFY_PID $LOOP_PID $TC_PID $KNOT_PID; do kill "$p" 2>/dev/null || true; done
  for p in $NOTIFY_PID $LOOP_PID $TC_PID $KNOT_PID; do wait "$p" 2>/dev/null || true; done
  if ((rc != 0)); then
    echo "---- tern-control log ($W/tc.log) ----" >&2
    cat "$W"/tc*.log >&2 2>/dev/null || true
  fi
  rm -rf "$W"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
SOCK=$W/run/ctl.sock
ctl() { "$CTL" --socket "$SOCK" --timeout 10 "$@"; }

# Answer for www.test. A through PORT, or nothing.
q() { kdig +time=2 +retry=0 +short @127.0.0.1 -p "$1" www.test. A 2>/dev/null | head -1; }
wait_answer() {  # PORT
  for _ in $(seq 1 50); do [[ $(q "$1") == 198.18.7.7 ]] && return 0; sleep 0.1; done
  return 1
}

# ---- the authoritative side
mkdir -p "$W/knot" "$W/run"
cat >"$W/test.zone" <<'EOF'
$ORIGIN test.
$TTL 300
@    SOA ns.test. admin.test. 1 3600 600 86400 60
@    NS  ns.test.
ns   A   127.0.0.2
www  A   198.18.7.7
EOF
cat >"$W/knot.conf" <<EOF
server:
  listen: 127.0.0.2@5300
  rundir: $W/knot
database:
  storage: $W/knot
zone:
  - domain: test.
    file: $W/test.zone
    zonefile-load: whole
    journal-content: none
EOF
/usr/sbin/knotd -c "$W/knot.conf" >"$W/knot.log" 2>&1 &
KNOT_PID=$!
for _ in $(seq 1 50); do
  [[ $(kdig +time=1 +short @127.0.0.2 -p 5300 www.test. A 2>/dev/null) == 198.18.7.7 ]] && break
  sleep 0.1
done
[[ $(kdig +time=1 +short @127.0.0.2 -p 5300 www.test. A) == 198.18.7.7 ]] ||
  fail "knotd did not come up: $(cat "$W/knot.log")"

# ---- tern-control
cat >"$W/root.hints" <<'EOF'
.            3600000 NS a.root.test-hints.
a.root.test-hints. 3600000 A 127.0.0.3
EOF
CONF=$W/tern.conf
STATE=$W/state
good() {  # extra lines for [server]
  cat <<EOF
[server]
listen = 127.0.0.1:5353
control-socket = $SOCK
state-dir = $STATE
$*
[recursion]
root-hints = $W/root.hints
stub-zone = test. 127.0.0.2@5300
EOF
}
start_tc() {  # LOG
  "$TC" --config "$CONF" --foreground 2>"$1" &
  TC_PID=$!
  for _ in $(seq 1 50); do [[ -S $SOCK ]] && return 0; kill -0 $TC_PID 2>/dev/null || return 1; sleep 0.1; done
  return 1
}
stop_tc() {
  kill -TERM "$TC_PID"
  local rc=0
  wait "$TC_PID" || rc=$?
  TC_PID=
  ((rc == 0)) || fail "tern-control exited $rc on SIGTERM"
  [[ ! -e $SOCK ]] || fail "control socket $SOCK left behind after shutdown"
}
stat_of() { ctl stats | awk -v k="$1" '$1 == k { print $2 }'; }
generation() { ctl status | awk '$1 == "generation" { print $2 }'; }

# The first start runs under a stand-in for systemd's notify socket (Type=notify, WatchdogSec):
# it records every sd_notify datagram, bounded to 60 s.
cat >"$W/notify.py" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(1.0)
end = time.monotonic() + 60
with open(sys.argv[2], "a", buffering=1) as log:
    while time.monotonic() < end:
        try:
            log.write(s.recv(4096).decode().replace("\n", " ") + "\n")
        except socket.timeout:
            pass
EOF
python3 "$W/notify.py" "$W/notify.sock" "$W/notify.log" &
NOTIFY_PID=$!
for _ in $(seq 1 50); do [[ -S $W/notify.sock ]] && break; sleep 0.1; done

good >"$CONF"
NOTIFY_SOCKET=$W/notify.sock WATCHDOG_USEC=400000 start_tc "$W/tc.log" ||
  fail "tern-control did not start"
wait_answer 5353 || fail "no answer on 127.0.0.1:5353 after start: $(kdig +time=2 @127.0.0.1 -p 5353 www.test. A 2>&1)"
[[ $(stat -c %a "$SOCK") == 600 ]] || fail "control socket mode is $(stat -c %a "$SOCK"), want 600"
[[ -s $W/state/last-known-good.conf ]] || fail "no last-known-good copy written after start"
pass "started, answers through the stub zone, socket 0600, last-known-good written"
ctl reload >/dev/null || fail "reload of an unchanged file failed"
for _ in $(seq 1 30); do (($(grep -c "WATCHDOG=1" "$W/notify.log") >= 2)) && break; sleep 0.1; done
kill "$NOTIFY_PID"; wait "$NOTIFY_PID" 2>/dev/null || true; NOTIFY_PID=
grep -q "^READY=1" "$W/notify.log" || fail "no READY=1 sent to NOTIFY_SOCKET: $(cat "$W/notify.log")"
awk '/^RELOADING=1/ { r = 1 } r && /^READY=1/ { ok = 1 } END { exit !ok }' "$W/notify.log" ||
  fail "no RELOADING=1 followed by READY=1 around a reload: $(cat "$W/notify.log")"
(($(grep -c "WATCHDOG=1" "$W/notify.log") >= 2)) || fail "watchdog not kicked: $(cat "$W/notify.log")"
pass "sd_notify: READY=1 at start, RELOADING=1 then READY=1 around a reload, WATCHDOG=1 kicks"

# ---- 1. good reload: a listener is added, the old one keeps its socket
g0=$(generation)
good "listen = 127.0.0.1:5354" >"$CONF"
out=$(ctl reload) || fail "good reload failed: $out"
wait_answer 5354 || fail "new listener 127.0.0.1:5354 does not answer after reload"
[[ $(q 5353) == 198.18.7.7 ]] || fail "old listener 127.0.0.1:5353 stopped answering"
[[ $(generation) == $((g0 + 1)) ]] || fail "generation after one reload is $(generation), want $((g0 + 1))"
pass "good reload: new listener answers, old still answers, generation $((g0 + 1))"

# ---- 2. bad reload while a query loop runs: nothing lost, nothing changed
cat >"$W/loop.py" <<'EOF'
import os, socket, struct, sys, time
# Queries www.test. A on 127.0.0.1:5353 until STOP_FILE appears (bounded: at most 20000
# queries or 60 s); every query must be answered NOERROR with an answer record. Prints
# "sent answered" and exits 1 on any loss.
start_file, stop_file = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
qname = b"".join(bytes([len(l)]) + l for l in b"www.test".split(b".")) + b"\0"
n = answered = 0
open(start_file, "w").close()
deadline = time.monotonic() + 60
while n < 20000 and time.monotonic() < deadline and not os.path.exists(stop_file):
    qid = n & 0xffff
    n += 1
    s.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1),
             ("127.0.0.1", 5353))
    try:
        while True:
            data, _ = s.recvfrom(4096)
            rid, flags, _, an, _, _ = struct.unpack("!HHHHHH", data[:12])
            if rid == qid:
                break
    except socket.timeout:
        print(f"query {n}: no answer within 2 s", file=sys.stderr)
        continue
    if flags & 0xf == 0 and an >= 1:
        answered += 1
    else:
        print(f"query {n}: rcode {flags & 0xf}, {an} answers", file=sys.stderr)
    time.sleep(0.002)
print(n, answered)
sys.exit(0 if answered == n and os.path.exists(stop_file) else 1)
EOF
python3 "$W/loop.py" "$W/loop.started" "$W/loop.stop" >"$W/loop.out" 2>"$W/loop.err" &
LOOP_PID=$!
for _ in $(seq 1 50); do [[ -e $W/loop.started ]] && break; sleep 0.1; done

# A good reload in the middle of traffic: the listener that stays keeps its socket.
good "listen = 127.0.0.1:5354
edns-buffer-size = 1400" >"$CONF"
ctl reload >/dev/null || fail "good reload under load failed"
g0=$(generation)
{ good "listen = 127.0.0.1:5354"; echo "[server]"; echo "listen-adress = 127.0.0.1:5355"; } >"$CONF"
badline=$(grep -n '^listen-adress' "$CONF" | cut -d: -f1)
for i in 1 2 3; do
  rc=0
  out=$(ctl reload 2>&1) || rc=$?
  ((rc == 1)) || fail "bad reload #$i: ternctl exit $rc, want 1; output: $out"
  grep -qF "$CONF:$badline: error: [server] listen-adress: unknown option; did you mean [server] listen?" <<<"$out" ||
    fail "bad reload #$i: reply does not name $CONF:$badline; got: $out"
  grep -q "reload failed" <<<"$out" || fail "bad reload #$i: no 'reload failed' in: $out"
  sleep 0.2
done
# A reload whose file parses but cannot be applied (an address this host does not have)
# must fail the same way, after the parser said yes.
good "listen = 127.0.0.1:5354
listen = 198.18.99.99:5353" >"$CONF"
rc=0
out=$(ctl reload 2>&1) || rc=$?
((rc == 1)) || fail "unbindable listener: ternctl exit $rc, want 1; output: $out"
grep -q "198.18.99.99" <<<"$out" || fail "apply failure does not name the address: $out"
# SIGHUP takes the same path.
{ good "listen = 127.0.0.1:5354"; echo "oops"; } >"$CONF"
kill -HUP "$TC_PID"
sleep 0.3
touch "$W/loop.stop"  # the loop ran across every attempt above; it exits 1 if it hit a bound
rc=0
wait "$LOOP_PID" || rc=$?
LOOP_PID=
read -r sent answered <"$W/loop.out" || true
((rc == 0)) || fail "query loop across failed reloads: sent $sent answered $answered (or it stopped early); $(head -5 "$W/loop.err")"
[[ $(stat_of config_reload_failures_total) == 5 ]] ||
  fail "config_reload_failures_total is $(stat_of config_reload_failures_total), want 5"
[[ $(generation) == "$g0" ]] || fail "failed reloads changed the generation: $g0 -> $(generation)"
[[ $(q 5354) == 198.18.7.7 ]] || fail "listener 5354 lost after failed reloads"
grep -q "reload (SIGHUP) failed" "$W/tc.log" || fail "SIGHUP reload failure not logged"
pass "under a query loop, a good reload then bad reloads (unknown option x3, unbindable address, SIGHUP syntax error): exit 1 with FILE:LINE, $answered/$sent queries answered meanwhile, config kept"

# ---- 3. a removed option is a warning, and the rest applies
good "listen = 127.0.0.1:5354
dnssec-enable = yes" >"$CONF"
rc=0
"$CTL" check "$CONF" >/dev/null || rc=$?
((rc == 2)) || fail "ternctl check of a file with a removed option: exit $rc, want 2"
rc=0
"$TC" --check "$CONF" 2>/dev/null || rc=$?
((rc == 2)) || fail "tern-control --check of a file with a removed option: exit $rc, want 2"
g0=$(generation)
out=$(ctl reload 2>&1) || fail "reload with a removed option failed: $out"
grep -q "warning: \[server\] dnssec-enable: option was removed in 0.1 and is ignored" <<<"$out" ||
  fail "no removed-option warning in: $out"
[[ $(generation) == $((g0 + 1)) ]] || fail "removed-option reload did not apply"
pass "removed option: warning, check exits 2, reload applies"

# ---- 3a. a restart-only option changed by a reload: a warning, the rest applies, the running
# value stays (the last-known-good copy keeps going to the state-dir in use)
STATE=$W/state-new good "listen = 127.0.0.1:5354
edns-buffer-size = 1300" >"$CONF"
out=$(ctl reload 2>&1) || fail "reload with a changed restart-only option failed: $out"
grep -q "\[server\] state-dir: changed, needs restart" <<<"$out" || fail "no needs-restart warning in: $out"
grep -q "^edns-buffer-size = 1300$" "$W/state/last-known-good.conf" ||
  fail "reloadable edns-buffer-size did not apply (last-known-good copy in the running state-dir)"
[[ ! -e $W/state-new ]] || fail "restart-only state-dir took effect without a restart"
pass "restart-only option on reload: 'needs restart' warning, running value kept, the rest applied"

# ---- 3a'. [server] threads is restart-only: a reload that changes it says a restart is needed
# and the daemon keeps its running loops (one), rather than half-applying a new count.
good "listen = 127.0.0.1:5354
threads = 2" >"$CONF"
out=$(ctl reload 2>&1) || fail "reload with a changed threads failed: $out"
grep -q "\[server\] threads: changed, needs restart" <<<"$out" || fail "no needs-restart warning for threads in: $out"
[[ $(stat_of threads_current) == 1 ]] || fail "threads_current is $(stat_of threads_current) after the reload, want 1"
pass "threads changed by reload: 'needs restart' warning, the running loop count kept"

# ---- 3b. the allow list reaches the dataplane after an apply. The peer speaks the dataplane
# control socket's framing (request line; reply lines; OK/ERR) and records what it got.
cat >"$W/dp.py" <<'EOF'
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path); s.listen(4); s.settimeout(30)
c, _ = s.accept()
line = c.makefile().readline().strip()
open(log, "w").write(line + "\n")
c.sendall(b"policy applied\nOK\n"); c.close()
EOF
python3 "$W/dp.py" "$W/dp.sock" "$W/dp.log" &
LOOP_PID=$!
for _ in $(seq 1 50); do [[ -S $W/dp.sock ]] && break; sleep 0.1; done
good "listen = 127.0.0.1:5354
allow = 127.0.0.0/8
allow = 198.18.0.0/15
dataplane-socket = $W/dp.sock" >"$CONF"
ctl reload >/dev/null || fail "reload with a dataplane socket failed"
wait "$LOOP_PID" || fail "the dataplane peer got no request"
LOOP_PID=
# The whole policy (proto/policy.h), with this config's generation and allow list.
[[ $(cat "$W/dp.log") =~ ^policy\ generation=[0-9]+\ allow=127.0.0.0/8,198.18.0.0/15\ refuse=1\  ]] ||
  fail "dataplane got '$(cat "$W/dp.log")', want 'policy generation=N allow=127.0.0.0/8,198.18.0.0/15 refuse=1 ...'"
for _ in $(seq 1 20); do [[ $(stat_of dataplane_policy_pushes_total) == 1 ]] && break; sleep 0.1; done
[[ $(stat_of dataplane_policy_pushes_total) == 1 ]] || fail "dataplane_policy_pushes_total is not 1"
pass "allow list pushed to the dataplane socket after apply"

# ---- 4. restart with a broken file: last-known-good
stop_tc
good "listen = 127.0.0.1:5354
dnssec-enable = yes
edns-buffer-size = lots" >"$CONF"
start_tc "$W/tc2.log" || fail "tern-control did not start on last-known-good: $(cat "$W/tc2.log")"
grep -q "RUNNING ON LAST-KNOWN-GOOD CONFIG $W/state/last-known-good.conf" "$W/tc2.log" ||
  fail "log does not say it runs on last-known-good: $(cat "$W/tc2.log")"
grep -q "$CONF:7: error: \[server\] edns-buffer-size: 'lots'" "$W/tc2.log" ||
  fail "log does not name the broken line: $(cat "$W/tc2.log")"
wait_answer 5353 && wait_answer 5354 || fail "last-known-good config does not answer on both listeners"
[[ $(ctl status | awk '$1 == "lkg_in_use" { print $2 }') == 1 ]] || fail "status does not show lkg_in_use 1"
[[ $(stat_of config_lkg_in_use) == 1 ]] || fail "stats config_lkg_in_use is not 1"
good "listen = 127.0.0.1:5354" >"$CONF"
ctl reload >/dev/null || fail "reload of the fixed file failed"
[[ $(stat_of config_lkg_in_use) == 0 ]] || fail "config_lkg_in_use still 1 after a good reload"
pass "broken file at start: serves from last-known-good, says so, a fixed reload ends it"

# ---- 5. broken file and no good copy: refuse, exit 1, say why
stop_tc
rm -rf "$W/state"
{ good; echo "frobnicate = 1"; } >"$CONF"
rc=0
timeout 20 "$TC" --config "$CONF" --foreground 2>"$W/tc3.log" || rc=$?
((rc == 1)) || fail "start with a broken file and no good copy: exit $rc, want 1"
grep -q "$CONF:9: error: \[recursion\] frobnicate: unknown option" "$W/tc3.log" ||
  fail "refusal does not name the error: $(cat "$W/tc3.log")"
grep -q "no last-known-good copy at $W/state/last-known-good.conf: refusing to start" "$W/tc3.log" ||
  fail "refusal does not say why: $(cat "$W/tc3.log")"
[[ ! -e $SOCK ]] || fail "a refused start left the control socket behind"
rc=0
out=$("$CTL" --socket "$SOCK" status 2>&1) || rc=$?
((rc == 3)) && grep -q "tern-control is not running" <<<"$out" ||
  fail "ternctl against a stopped daemon: exit $rc, output: $out"
pass "broken file without a good copy: refused with exit 1 and the error; ternctl exits 3"
