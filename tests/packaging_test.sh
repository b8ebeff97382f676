#!/usr/bin/env bash
# Package upgrade safety, end to end (suite lab: needs root and network namespaces).
#
#   tests/packaging_test.sh BUILD_DIR
#
# 1. The packaged files: scripts parse, the shipped tern.conf passes `ternctl check` and
#    lists every option of the options table (and nothing else), units name real paths.
# 2. The decision logic, i.e. packaging/tern-upgrade-check, the very file the package
#    installs as /usr/libexec/tern/tern-upgrade-check, against the real `ternctl check`:
#    clean config -> restart; removed option -> restart with the warning printed;
#    unknown option -> no restart, the reason, non-zero exit, a recorded hold, and a
#    rerun after the fix (what `dpkg --configure -a` does) completes the upgrade.
# 3. The incident, replayed in the lab: version N of tern-control serves in a namespace
#    while a client queries it in a loop; the "package upgrade" renames N+1 over N's
#    binary exactly as dpkg does and runs the upgrade check.
#      a. config with an option N+1 removed: every query is answered throughout and the
#         node ends on N+1 with the warning printed;
#      b. config with an option N accepted and N+1 rejects: N keeps running and
#         answering, the check says why; after the fix the rerun moves the node to N+1.
#    "Version N" in 3b is the real tern-control behind a wrapper that accepts one extra
#    option (`[server] legacy-listen-backlog`) and hides it from the binary, which is how
#    a version that still knew the option behaved.
# 4. With TERN_PACKAGING_BUILD=1 (slow: a full build from a copy of the tree): builds the
#    .deb, checks its contents with dpkg-deb -c and runs lintian.
set -euo pipefail

build=${1:?usage: packaging_test.sh BUILD_DIR}
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
check_script=$src/packaging/tern-upgrade-check
ternctl_bin=$build/control/ternctl
control_bin=$build/control/tern-control
lab=$src/tests/lab/lab.sh

fails=0
pass() { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
die() { echo "packaging_test: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for b in "$ternctl_bin" "$control_bin"; do
  [[ -x $b ]] || die "$b is not built (ninja -C $build control/ternctl control/tern-control)"
done

tmp=$(mktemp -d /tmp/tern-pkgtest.XXXXXX)
NODE_NS=tl-pkg-node
CLIENT_NS=tl-pkg-cli
NODE_V4=198.18.0.77
NODE_V6=2001:2::77
CLIENT_V4=198.18.0.78
CLIENT_V6=2001:2::78
started_lab=0
loop_pid=

cleanup() {
  set +e
  [[ -n $loop_pid ]] && kill "$loop_pid" 2>/dev/null
  for pidf in "$tmp"/run/*.pid; do
    [[ -f $pidf ]] && kill "$(cat "$pidf")" 2>/dev/null
  done
  sleep 0.2
  for pidf in "$tmp"/run/*.pid; do
    [[ -f $pidf ]] && kill -KILL "$(cat "$pidf")" 2>/dev/null
  done
  if ip netns list 2>/dev/null | grep -q "^$NODE_NS\b"; then "$lab" detach-ns "$NODE_NS" >/dev/null 2>&1; fi
  if ip netns list 2>/dev/null | grep -q "^$CLIENT_NS\b"; then "$lab" detach-ns "$CLIENT_NS" >/dev/null 2>&1; fi
  ((started_lab)) && "$lab" stop >/dev/null 2>&1
  if ((fails)) && [[ -f $tmp/tern-control.log ]]; then
    echo "--- tern-control log (last 30 lines)"; tail -n 30 "$tmp/tern-control.log"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/run"

# ---------------------------------------------------------------- 1. files ----
for f in "$check_script" "$src/packaging/build-deb.sh" "$src/scripts/hugepages.sh"; do
  if bash -n "$f"; then pass "bash -n $(basename "$f")"; else fail "bash -n $f"; fi
done
for f in "$src"/debian/tern.postinst "$src"/debian/tern.prerm "$src"/debian/tern.postrm; do
  # Maintainer scripts run under /bin/sh (dash): no bashisms allowed.
  if sed 's/^#DEBHELPER#$/:/' "$f" | dash -n; then pass "dash -n $(basename "$f")"; else fail "dash -n $f"; fi
  # debhelper replaces the token wherever it appears, comments included.
  n=$(grep -c '#DEBHELPER#' "$f" || true)
  if [[ $f == */debian/* ]] && ((n != 1)); then
    fail "$(basename "$f") mentions the debhelper token $n times (must be exactly once, on its own line)"
  fi
done

# The shipped config: what every fresh install runs with. Its cross-checks need the state
# directory, which the package creates; point a copy at a scratch one only for that.
shipped=$src/packaging/tern.conf
mkdir -p "$tmp/state"
sed "s|^# state-dir = .*|state-dir = $tmp/state|; s|^# control-socket = .*|control-socket = $tmp/run/ctl.sock|" \
  "$shipped" >"$tmp/shipped.conf"
if out=$("$ternctl_bin" check "$tmp/shipped.conf" 2>&1); then
  pass "shipped tern.conf: ternctl check exits 0"
else
  fail "shipped tern.conf: ternctl check exit $?: $out"
fi

# Every option of the table appears (commented or not) in its section, and nothing else
# does: the table is the single source of truth, the shipped file must not drift from it.
"$control_bin" --dump-options-markdown >"$tmp/options.md"
awk '/^## \[/ { gsub(/[][#]/, ""); sec = $1 } /^\| `[a-z0-9-]+` \|/ && sec != "" {
       n = $2; gsub(/`/, "", n); print sec "." n }
     /^## [A-Z]/ { sec = "" }' "$tmp/options.md" | sort >"$tmp/table.keys"
awk '/^\[[a-z]+\]/ { sec = substr($1, 2, length($1) - 2); next }
     /^#? ?[a-z0-9-]+ =( |$)/ { line = $0; sub(/^# ?/, "", line); split(line, kv, " ");
       print sec "." kv[1] }' "$shipped" | sort -u >"$tmp/conf.keys"
if [[ -s $tmp/table.keys ]] && diff -u "$tmp/table.keys" "$tmp/conf.keys" >"$tmp/keys.diff"; then
  pass "shipped tern.conf lists all $(wc -l <"$tmp/table.keys") options of the table"
else
  fail "shipped tern.conf and the options table differ (- table, + tern.conf):"; cat "$tmp/keys.diff"
fi

for u in "$src"/packaging/*.service; do
  bad=$(grep -Eo '^Exec[A-Za-z]*=[-+!@]*[^ ]+' "$u" | sed 's/^[^=]*=[-+!@]*//' |
        while read -r p; do
          case $p in
            /usr/sbin/tern-control|/usr/bin/ternctl|/usr/bin/tern-dataplane|/usr/libexec/tern/hugepages.sh) ;;
            *) echo "$p" ;;
          esac
        done)
  if [[ -z $bad ]]; then pass "$(basename "$u"): Exec paths are packaged binaries"
  else fail "$(basename "$u") runs paths the package does not install: $bad"; fi
done

# ------------------------------------------------------- 2. decision logic ----
# A service manager stand-in that records what it is asked to do. Both units "run".
cat >"$tmp/fake-svc" <<EOF
#!/bin/bash
echo "\$*" >>"$tmp/svc.log"
case \$1 in
  is-active) exit 0 ;;
  restart) [[ -e "$tmp/restart-fails" ]] && exit 1; exit 0 ;;
esac
EOF
chmod +x "$tmp/fake-svc"

run_check() {  # run_check CONFIG [extra args...]; sets rc, out
  : >"$tmp/svc.log"
  set +e
  out=$("$check_script" --config "$1" --ternctl "$ternctl_bin" --tern-control "$control_bin" \
        --service-cmd "$tmp/fake-svc" --socket "$tmp/run/nobody.sock" \
        --state-dir "$tmp/state" --from-version 0.0.9 "${@:2}" 2>&1)
  rc=$?
  set -e
}
restarted() { grep -qx "restart $1" "$tmp/svc.log"; }

base_conf() {  # base_conf FILE [extra [server] lines...]
  {
    echo "[server]"
    echo "listen = 127.0.0.1:5353"
    echo "state-dir = $tmp/state"
    echo "control-socket = $tmp/run/ctl.sock"
    local l; for l in "${@:2}"; do echo "$l"; done
    echo "[recursion]"
    echo "root-hints = /usr/share/dns/root.hints"
  } >"$1"
}

base_conf "$tmp/good.conf"
run_check "$tmp/good.conf"
if ((rc == 0)) && restarted tern-control.service && ! restarted tern-dataplane.service \
   && [[ $out == *"is valid for"* && $out == *"tern-dataplane keeps running"* ]]; then
  pass "clean config: exit 0, tern-control restarted, dataplane kept and told how to move it"
else
  fail "clean config: rc=$rc svc=[$(tr '\n' ' ' <"$tmp/svc.log")] out: $out"
fi

base_conf "$tmp/warn.conf" "dnssec-enable = yes"
run_check "$tmp/warn.conf"
if ((rc == 0)) && restarted tern-control.service && [[ $out == *"with warnings"* \
   && $out == *"warn.conf:5"* && $out == *"dnssec-enable"* ]]; then
  pass "removed option: exit 0, restarted, warning printed with file:line"
else
  fail "removed option: rc=$rc svc=[$(tr '\n' ' ' <"$tmp/svc.log")] out: $out"
fi

base_conf "$tmp/broken.conf" "frobnicate = yes"
run_check "$tmp/broken.conf"
if ((rc == 1)) && ! grep -q '^restart' "$tmp/svc.log" && [[ $out == *"NOT restarting"* \
   && $out == *"broken.conf:5"* && $out == *"frobnicate"* && $out == *"dpkg --configure -a"* ]] \
   && grep -q '^reason=config errors' "$tmp/state/upgrade-held"; then
  pass "unknown option: exit 1, nothing restarted, file:line and the fix printed, hold recorded"
else
  fail "unknown option: rc=$rc svc=[$(tr '\n' ' ' <"$tmp/svc.log")] out: $out"
fi

# The state dir is _tern's, the check runs as root: symlinks planted there (at the old
# temporary name, at upgrade-held itself, to a file and to a directory) must not make root
# write anywhere else. Issue 15 item 13.
printf 'precious\n' >"$tmp/victim"
mkdir -p "$tmp/victim-dir"
rm -f "$tmp/state/upgrade-held"
ln -s "$tmp/victim" "$tmp/state/upgrade-held.tmp"
ln -s "$tmp/victim-dir" "$tmp/state/upgrade-held"
run_check "$tmp/broken.conf"
planted_ok=1
[[ $(cat "$tmp/victim") == precious ]] || planted_ok=0
[[ -z $(ls -A "$tmp/victim-dir") ]] || planted_ok=0
[[ -f $tmp/state/upgrade-held && ! -L $tmp/state/upgrade-held ]] || planted_ok=0
grep -q '^reason=config errors' "$tmp/state/upgrade-held" 2>/dev/null || planted_ok=0
if ((rc == 1 && planted_ok)); then
  pass "planted symlinks in the state dir: nothing written through them, hold recorded"
else
  fail "planted symlinks: rc=$rc victim=[$(cat "$tmp/victim")] victim-dir=[$(ls -A "$tmp/victim-dir")]" \
       "upgrade-held=[$(ls -l "$tmp/state/upgrade-held" 2>&1)]"
fi
# The same, with the symlink to the file at upgrade-held itself.
rm -f "$tmp/state/upgrade-held" "$tmp/state/upgrade-held.tmp"
ln -s "$tmp/victim" "$tmp/state/upgrade-held"
run_check "$tmp/broken.conf"
if ((rc == 1)) && [[ $(cat "$tmp/victim") == precious && ! -L $tmp/state/upgrade-held ]] &&
   [[ -z $(find "$tmp/state" -name '.upgrade-held.*') ]]; then
  pass "symlink at upgrade-held: replaced, not written through; no temporary left"
else
  fail "symlink at upgrade-held: rc=$rc victim=[$(cat "$tmp/victim")] state=[$(ls -la "$tmp/state")]"
fi

# The operator fixes the file and reruns (dpkg --configure -a calls postinst again).
base_conf "$tmp/broken.conf"
run_check "$tmp/broken.conf"
if ((rc == 0)) && restarted tern-control.service && [[ ! -e $tmp/state/upgrade-held ]]; then
  pass "after the fix the rerun restarts and clears the hold"
else
  fail "rerun after fix: rc=$rc svc=[$(tr '\n' ' ' <"$tmp/svc.log")] out: $out"
fi

run_check "$tmp/good.conf" --dataplane restart
if ((rc == 0)) && [[ $(grep '^restart' "$tmp/svc.log" | tr '\n' ' ') == \
     "restart tern-control.service restart tern-dataplane.service " ]]; then
  pass "--dataplane restart: tern-control first, then tern-dataplane"
else
  fail "--dataplane restart: rc=$rc svc=[$(tr '\n' ' ' <"$tmp/svc.log")]"
fi

: >"$tmp/svc.log"
set +e
out=$("$check_script" --config "$tmp/good.conf" --ternctl "$tmp/no-such-ternctl" \
      --service-cmd "$tmp/fake-svc" --state-dir "$tmp/state" 2>&1); rc=$?
set -e
if ((rc == 3)) && ! grep -q '^restart' "$tmp/svc.log"; then
  pass "ternctl missing: exit 3, nothing restarted"
else
  fail "ternctl missing: rc=$rc out: $out"
fi

touch "$tmp/restart-fails"
run_check "$tmp/good.conf"
rm -f "$tmp/restart-fails"
if ((rc == 4)) && [[ $out == *"journalctl -u tern-control.service"* ]]; then
  pass "failed restart: exit 4 with where to look"
else
  fail "failed restart: rc=$rc out: $out"
fi

# ---------------------------------------------------- 3. incident replay ----
if ! "$lab" status >/dev/null 2>&1; then
  "$lab" start >"$tmp/lab.log" 2>&1 || { cat "$tmp/lab.log"; die "lab.sh start failed"; }
  started_lab=1
fi
eval "$("$lab" env)"
"$lab" attach-ns "$NODE_NS" "$NODE_V4/$LAB_PREFIX4" "$NODE_V6/$LAB_PREFIX6" >/dev/null
"$lab" attach-ns "$CLIENT_NS" "$CLIENT_V4/$LAB_PREFIX4" "$CLIENT_V6/$LAB_PREFIX6" >/dev/null

# The node's filesystem as the package lays it out.
root=$tmp/root
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/etc/tern" "$tmp/nstate"
install_binary() {  # install_binary SRC DEST: what dpkg does (write aside, rename over)
  cp "$1" "$2.dpkg-new" && mv -f "$2.dpkg-new" "$2"
}

# Service manager for the node: one tern-control in $NODE_NS, tracked by a pid file.
cat >"$tmp/node-svc" <<EOF
#!/bin/bash
pidf=$tmp/run/tern-control.pid
alive() { [[ -f \$pidf ]] && kill -0 "\$(cat "\$pidf")" 2>/dev/null; }
start() {
  ip netns exec $NODE_NS "$root/usr/sbin/tern-control" --foreground -c "$root/etc/tern/tern.conf" \
    >>"$tmp/tern-control.log" 2>&1 </dev/null &
  echo \$! >"\$pidf"
  # Ready when it answers; bounded.
  for _ in \$(seq 100); do
    ip netns exec $CLIENT_NS kdig +short +retry=0 +timeout=1 @$NODE_V4 www.alpha.lab A 2>/dev/null |
      grep -qx 198.18.2.1 && return 0
    alive || return 1
    sleep 0.1
  done
  return 1
}
case \$1 in
  is-active)
    # tern-dataplane "runs" when the test says so; its restarts are only recorded.
    [[ \$2 == tern-dataplane.service ]] && { [[ -e $tmp/dp-active ]]; exit; }
    [[ \$2 == tern-control.service ]] && alive ;;
  restart)
    [[ \$2 == tern-dataplane.service ]] && { echo restart >>"$tmp/dp-restarts"; exit 0; }
    [[ \$2 == tern-control.service ]] || exit 0
    if alive; then
      pid=\$(cat "\$pidf"); kill -TERM "\$pid"
      for _ in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.05; done
    fi
    start ;;
  start) start ;;
esac
EOF
chmod +x "$tmp/node-svc"

node_conf() {  # node_conf [extra [server] lines...]
  {
    echo "[server]"
    echo "listen = $NODE_V4:53 [$NODE_V6]:53"
    echo "allow = 198.18.0.0/15 2001:2::/48"
    echo "state-dir = $tmp/nstate"
    echo "control-socket = $tmp/run/node-ctl.sock"
    local l; for l in "$@"; do echo "$l"; done
    echo "[recursion]"
    echo "root-hints = $LAB_ROOT_HINTS"
  } >"$root/etc/tern/tern.conf"
}

# Clients query in a loop, with the retry a stub resolver has (3 tries, 1 s each), for
# a bounded count. Every query must end in the right answer.
start_query_loop() {  # start_query_loop LOGFILE
  (
    for i in $(seq 400); do
      [[ -e $tmp/loop-stop ]] && break
      a=$(ip netns exec $CLIENT_NS kdig +short +retry=2 +timeout=1 @$NODE_V4 www.alpha.lab A 2>/dev/null)
      if [[ $a == 198.18.2.1 ]]; then echo "$i ok"; else echo "$i FAIL ${a:-no answer}"; fi
      sleep 0.02
    done
  ) >"$1" 2>&1 &
  loop_pid=$!
}
stop_query_loop() {
  touch "$tmp/loop-stop"; wait "$loop_pid" || true; loop_pid=; rm -f "$tmp/loop-stop"
}
running_pid() { cat "$tmp/run/tern-control.pid"; }
# True when the running process executes the file now at $root/usr/sbin/tern-control.
runs_installed_binary() {
  local pid; pid=$(running_pid)
  kill -0 "$pid" 2>/dev/null &&
    [[ $(stat -L -c %i "/proc/$pid/exe") == $(stat -c %i "$root/usr/sbin/tern-control") ]]
}
node_check() {  # the postinst's call, on the node; sets rc, out
  set +e
  out=$("$check_script" --config "$root/etc/tern/tern.conf" --ternctl "$root/usr/bin/ternctl" \
        --tern-control "$root/usr/sbin/tern-control" --socket "$tmp/run/node-ctl.sock" \
        --service-cmd "$tmp/node-svc" --state-dir "$tmp/nstate" --from-version N "$@" 2>&1)
  rc=$?
  set -e
}
upgrade() {  # unpack N+1 (real binaries, renamed over), then the postinst's check
  install_binary "$control_bin" "$root/usr/sbin/tern-control"
  install_binary "$ternctl_bin" "$root/usr/bin/ternctl"
  node_check
}
count() { grep -c " $1" "$2" || true; }

# 3a. Removed option: N+1 warns and the node moves to it without a lost query.
install_binary "$control_bin" "$root/usr/sbin/tern-control"
install_binary "$ternctl_bin" "$root/usr/bin/ternctl"
node_conf "dnssec-enable = yes"
"$tmp/node-svc" start || { cat "$tmp/tern-control.log"; die "version N did not start in $NODE_NS"; }
pid_n=$(running_pid)
start_query_loop "$tmp/loop-a.log"
sleep 2
upgrade
sleep 2
stop_query_loop
ok=$(count ok "$tmp/loop-a.log"); bad=$(count FAIL "$tmp/loop-a.log")
if ((rc == 0)) && [[ $out == *dnssec-enable* ]] && [[ $(running_pid) != "$pid_n" ]] \
   && runs_installed_binary; then
  pass "incident, removed option: upgraded to N+1 (new pid, new binary) with the warning printed"
else
  fail "incident, removed option: rc=$rc pid $pid_n -> $(running_pid); out: $out"
fi
if ((ok > 0 && bad == 0)); then
  pass "incident, removed option: all $ok client queries answered across the restart"
else
  fail "incident, removed option: $bad of $((ok + bad)) queries failed:"; grep FAIL "$tmp/loop-a.log" | head
fi

# 3a'. The dataplane follows only a drained node (the default policy, if-drained).
touch "$tmp/dp-active"
node_check
if ((rc == 0)) && [[ ! -e $tmp/dp-restarts && $out == *"tern-dataplane keeps running"* ]]; then
  pass "dataplane running, node not drained: upgrade leaves the dataplane alone"
else
  fail "dataplane, not drained: rc=$rc restarts=$(cat "$tmp/dp-restarts" 2>/dev/null); out: $out"
fi
"$root/usr/bin/ternctl" --socket "$tmp/run/node-ctl.sock" drain >/dev/null
node_check
if ((rc == 0)) && [[ $(cat "$tmp/dp-restarts" 2>/dev/null) == restart ]]; then
  pass "dataplane running, node drained: the drain survived the tern-control restart and the dataplane restarted"
else
  fail "dataplane, drained: rc=$rc restarts=$(cat "$tmp/dp-restarts" 2>/dev/null); out: $out"
fi
"$root/usr/bin/ternctl" --socket "$tmp/run/node-ctl.sock" undrain >/dev/null
rm -f "$tmp/dp-active" "$tmp/dp-restarts"

# 3b. An option N+1 rejects: N keeps serving, the check says why, the fix completes it.
stop_node() {
  local pid; pid=$(running_pid); kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}
stop_node
mkdir -p "$tmp/vN"
cp "$control_bin" "$tmp/vN/tern-control.real"
cat >"$tmp/vN/tern-control" <<EOF
#!/bin/bash
# Version N: knew [server] legacy-listen-backlog, which N+1 dropped.
args=()
while ((\$#)); do
  if [[ \$1 == -c || \$1 == --config ]]; then
    grep -v '^legacy-listen-backlog' "\$2" >"$tmp/vN/effective.conf"
    args+=(-c "$tmp/vN/effective.conf"); shift 2
  else
    args+=("\$1"); shift
  fi
done
exec "$tmp/vN/tern-control.real" "\${args[@]}"
EOF
chmod +x "$tmp/vN/tern-control"
install_binary "$tmp/vN/tern-control" "$root/usr/sbin/tern-control"
node_conf "legacy-listen-backlog = 512"
"$tmp/node-svc" start || { cat "$tmp/tern-control.log"; die "version N (wrapper) did not start"; }
pid_n=$(running_pid)
start_query_loop "$tmp/loop-b.log"
sleep 1
upgrade
held_rc=$rc held_out=$out
sleep 1
if ((held_rc == 1)) && [[ $(running_pid) == "$pid_n" ]] && kill -0 "$pid_n" \
   && ! runs_installed_binary && [[ $held_out == *"NOT restarting"* \
   && $held_out == *"tern.conf:6"* && $held_out == *legacy-listen-backlog* ]]; then
  pass "incident, rejected option: upgrade held (exit 1), N still running, reason with file:line"
else
  fail "incident, rejected option: rc=$held_rc pid $pid_n -> $(running_pid); out: $held_out"
fi
node_conf
node_check   # what `dpkg --configure -a` runs after the fix
sleep 1
stop_query_loop
ok=$(count ok "$tmp/loop-b.log"); bad=$(count FAIL "$tmp/loop-b.log")
if ((rc == 0)) && [[ $(running_pid) != "$pid_n" ]] && runs_installed_binary; then
  pass "incident, rejected option: after the fix the rerun moved the node to N+1"
else
  fail "incident, rejected option, rerun after fix: rc=$rc; out: $out"
fi
if ((ok > 0 && bad == 0)); then
  pass "incident, rejected option: all $ok client queries answered (hold, fix, restart)"
else
  fail "incident, rejected option: $bad of $((ok + bad)) queries failed:"; grep FAIL "$tmp/loop-b.log" | head
fi

# ----------------------------------------------------------- 4. package ----
# TERN_DEB=path uses a .deb built before (packaging/build-deb.sh); TERN_PACKAGING_BUILD=1
# builds one from a copy of the tree (minutes: the whole project, unit tests included).
deb=${TERN_DEB:+$(readlink -f "$TERN_DEB")}
if [[ -z $deb && ${TERN_PACKAGING_BUILD:-0} == 1 ]]; then
  if deb=$("$src/packaging/build-deb.sh" "$tmp/deb" 2>"$tmp/deb.err" | tail -n1) && [[ -f $deb ]]; then
    pass "dpkg-buildpackage -us -uc -b: $(basename "$deb")"
  else
    fail "package build failed:"; tail -n 30 "$tmp/deb.err"; deb=
  fi
fi
if [[ -n $deb ]]; then
  dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$tmp/contents"
  for p in /usr/sbin/tern-control /usr/bin/ternctl /usr/bin/tern-dataplane \
           /usr/libexec/tern/tern-upgrade-check /usr/libexec/tern/hugepages.sh \
           /etc/tern/tern.conf /etc/default/tern /lib/systemd/system/tern-control.service \
           /lib/systemd/system/tern-dataplane.service /lib/systemd/system/tern-hugepages.service \
           /usr/lib/tmpfiles.d/tern.conf /usr/lib/sysusers.d/tern.conf \
           /usr/share/tern/hw-profiles/lab-tap.conf /usr/share/doc/tern/config-reference.md.gz; do
    if grep -qx "$p" "$tmp/contents"; then pass "package has $p"; else fail "package lacks $p"; fi
  done
  if cmp -s <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/libexec/tern/tern-upgrade-check) \
       "$check_script"; then
    pass "the packaged tern-upgrade-check is the file tested above"
  else
    fail "the packaged tern-upgrade-check differs from packaging/tern-upgrade-check"
  fi
  dpkg-deb -e "$deb" "$tmp/ctrl"
  if grep -qx '/etc/tern/tern.conf' "$tmp/ctrl/conffiles" && grep -qx '/etc/default/tern' "$tmp/ctrl/conffiles"; then
    pass "tern.conf and /etc/default/tern are conffiles"
  else
    fail "conffiles: $(tr '\n' ' ' <"$tmp/ctrl/conffiles")"
  fi
  if lintian --fail-on error,warning "$deb" >"$tmp/lintian.log" 2>&1; then
    pass "lintian: no errors or warnings (overrides: debian/tern.lintian-overrides)"
  else
    fail "lintian:"; cat "$tmp/lintian.log"
  fi

  # Install and upgrade with the real dpkg and the real maintainer scripts, in a throwaway
  # copy-on-write root: an overlay over / whose writes land in a tmpfs, inside a private
  # mount namespace, so nothing reaches the host. systemd is not running in there, so the
  # check decides but restarts nothing; the restarts themselves are covered by part 3.
  # N+1 is the same package with its version bumped.
  dpkg-deb -R "$deb" "$tmp/next"
  sed -i 's/^Version: .*/&+next1/' "$tmp/next/DEBIAN/control"
  dpkg-deb -b -Zgzip "$tmp/next" "$tmp/tern-next.deb" >/dev/null
  v_next=$(dpkg-deb -f "$tmp/tern-next.deb" Version)
  cp "$deb" "$tmp/tern-cur.deb"
  cat >"$tmp/in-root.sh" <<'EOS'
set -u
r=/merged
say() { echo "== $*"; }
say "install N"
chroot $r dpkg -i /pkg/tern-cur.deb; echo "rc=$?"
chroot $r getent passwd _tern >/dev/null && say "user _tern exists"
chroot $r stat -c '%U:%G %a' /run/tern
say "systemd-analyze verify"
chroot $r systemd-analyze verify --man=no tern-control.service tern-dataplane.service \
  tern-hugepages.service 2>&1; echo "rc=$?"
say "upgrade to N+1 with a removed option"
printf '[server]\ndnssec-enable = yes\n' >>$r/etc/tern/tern.conf.new
cat $r/etc/tern/tern.conf $r/etc/tern/tern.conf.new >$r/tmp/c && mv $r/tmp/c $r/etc/tern/tern.conf
chroot $r dpkg -i /pkg/tern-next.deb; echo "rc=$?"
say "reinstall N over N+1 with a rejected option"
sed -i 's/^dnssec-enable = yes$/frobnicate = yes/' $r/etc/tern/tern.conf
chroot $r dpkg -i /pkg/tern-cur.deb; echo "rc=$?"
chroot $r dpkg-query -W -f='status=${Status} version=${Version}\n' tern
say "fix and dpkg --configure -a"
sed -i '/^frobnicate = yes$/d' $r/etc/tern/tern.conf
chroot $r dpkg --configure -a; echo "rc=$?"
chroot $r dpkg-query -W -f='status=${Status} version=${Version}\n' tern
say "purge"
chroot $r dpkg --purge tern; echo "rc=$?"
[ -e $r/var/lib/tern ] || say "state removed"
EOS
  cat >"$tmp/overlay.sh" <<EOS
set -eu
mount -t tmpfs tmpfs "$tmp/ov"
mkdir -p "$tmp/ov/upper" "$tmp/ov/work"
mount -t overlay overlay -o lowerdir=/,upperdir="$tmp/ov/upper",workdir="$tmp/ov/work" "$tmp/merged"
for d in proc sys dev; do mount --rbind "/\$d" "$tmp/merged/\$d"; done
mount -t tmpfs tmpfs "$tmp/merged/run"
mkdir -p "$tmp/merged/pkg" && mount --bind "$tmp" "$tmp/merged/pkg"
sed 's|^r=/merged$|r=$tmp/merged|' "$tmp/in-root.sh" | bash
EOS
  mkdir -p "$tmp/ov" "$tmp/merged"
  unshare -m --propagation private bash "$tmp/overlay.sh" >"$tmp/dpkg.log" 2>&1 || true
  section() {  # section TITLE: the log lines after "== TITLE" up to the next "=="
    awk -v t="== $1" '$0 == t { on = 1; next } /^== / { on = 0 } on' "$tmp/dpkg.log"
  }
  s=$(section "install N")
  if [[ $s == *rc=0* ]] && grep -q '^== user _tern exists' "$tmp/dpkg.log" \
     && grep -q '^root:_tern 1770$' "$tmp/dpkg.log"; then
    pass "dpkg -i: installs, creates _tern and /run/tern (root:_tern 1770, sticky)"
  else
    fail "dpkg -i (fresh):"; cat "$tmp/dpkg.log"
  fi
  s=$(section "systemd-analyze verify")
  if [[ $s == rc=0 ]]; then
    pass "systemd-analyze verify: the installed units are clean"
  else
    fail "systemd-analyze verify on the installed units:"; echo "$s"
  fi
  s=$(section "upgrade to N+1 with a removed option")
  if [[ $s == *rc=0* && $s == *dnssec-enable* && $s == *"with warnings"* ]]; then
    pass "dpkg upgrade, removed option: configured, warning printed by postinst"
  else
    fail "dpkg upgrade, removed option:"; echo "$s"
  fi
  s=$(section "reinstall N over N+1 with a rejected option")
  if [[ $s != *rc=0* && $s == *"NOT restarting"* && $s == *frobnicate* \
        && $s == *"status=install ok half-configured"* ]]; then
    pass "dpkg upgrade, rejected option: postinst fails, package left half-configured, reason printed"
  else
    fail "dpkg upgrade, rejected option:"; echo "$s"
  fi
  s=$(section "fix and dpkg --configure -a")
  if [[ $s == *rc=0* && $s == *"status=install ok installed"* ]]; then
    pass "after the fix, dpkg --configure -a completes the upgrade"
  else
    fail "dpkg --configure -a after fix:"; echo "$s"
  fi
  s=$(section purge)
  if [[ $s == *rc=0* ]] && grep -q '^== state removed' "$tmp/dpkg.log"; then
    pass "dpkg --purge removes the package and /var/lib/tern"
  else
    fail "dpkg --purge:"; echo "$s"
  fi
fi

echo "packaging_test: $fails failure(s)"
((fails == 0))
