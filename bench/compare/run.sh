#!/usr/bin/env bash
# bench/compare/run.sh [--quick]: tern next to Debian's unbound, knot-resolver (kresd),
# pdns-recursor and dnsdist (packet cache, in front of unbound), one after the other, in the
# lab, driven by the same dnsperf with the same query sets. See bench/compare/README.md.
#
# Every server gets CPU 1 (taskset; tern's worker lcore is 1), dnsperf runs on CPU 0.
# Per server and query set: one throughput run (no rate limit: as fast as dnsperf goes,
# -l bounded) and one latency run at the same fixed rate for every server (dnsperf -v,
# percentiles from every answer). Server CPU comes from /proc/PID/stat (and per thread
# for tern, whose service thread is on CPU 0) before and after each run.
#
# Cost: before those runs, every server also gets the all-hit set at a few fixed offered
# rates (COST_QPS, each COST_REPS times): answered qps, loss and server CPU per answer (tern:
# worker busy cycles + service thread + tern-control; the others: process CPU), with and
# without the kernel's softirq time. tern runs twice: lab-veth (af_packet) and lab-veth-xdp
# (AF_XDP, server "tern-xdp"). The last line printed is the ratio of CPU per answer, best
# other server / tern.
#
# Output: results/compare-<date>/ (or $OUT): results.md (the table), results.kv (figures
# tern-bench plan reads), results.tsv, *.png (gnuplot), machine.txt, raw/ (dnsperf output).
# Needs root, the lab (tests/lab/lab.sh; started and stopped here if it was not up) and a
# build with tern-dataplane and tern-control (BUILD_DIR, else build-bench/, else the newest
# build*/). Tears down everything it made, also on failure or Ctrl-C.
set -euo pipefail
ROOT=$(dirname "$(readlink -f "$0")")/../..
ROOT=$(readlink -f "$ROOT")
cd "$ROOT"
HERE=$ROOT/bench/compare
QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare: unknown argument '$a' (usage: bench/compare/run.sh [--quick])" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "compare: needs root (network namespaces)" >&2; exit 1; }
(( $(nproc) >= 2 )) || { echo "compare: needs 2 CPUs (server on CPU 1, dnsperf on CPU 0)" >&2; exit 1; }

# Run lengths. Every dnsperf run is bounded by -l; the latency runs also by -Q.
if ((QUICK)); then DUR=5 LAT_DUR=2 WARM_NAMES=2000 KX_DUR=3 COST_DUR=3; else DUR=20 LAT_DUR=5 WARM_NAMES=20000 KX_DUR=6 COST_DUR=8; fi
# Offered loads of the cost steps: rates dnsperf holds on one core through the lab's veths
# (it tops out near 60-80 kqps here), the same for every server. Each step COST_REPS times.
COST_QPS=${COST_QPS:-"5000 20000 40000"}
COST_REPS=${COST_REPS:-3}
LAT_QPS=${LAT_QPS:-5000}       # offered rate of the latency runs, the same for every server
MISS_QPS=${MISS_QPS:-20000}    # cap for runs with unique names: each one is a recursion in the lab
SERVERS=${SERVERS:-"tern tern-xdp unbound kresd pdns dnsdist"}
# With --quick the full-rate, latency, kxdpgun, mix and miss runs are left out unless
# QUICK_ALL=1: --quick is the cost comparison, bounded to a few minutes.
QUICK_ALL=${QUICK_ALL:-0}

find_bin() {
  local b
  if [[ -n ${BUILD_DIR:-} && -x $BUILD_DIR/$1 ]]; then readlink -f "$BUILD_DIR/$1"; return; fi
  [[ -x build-bench/$1 ]] && { readlink -f "build-bench/$1"; return; }
  for b in $(ls -dt build*/ 2>/dev/null); do [[ -x $b$1 ]] && { readlink -f "$b$1"; return; }; done
  return 1
}

DATE=$(date -u +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/results/compare-$DATE}
mkdir -p "$OUT/raw" "$OUT/sets"
WORK=$(mktemp -d /tmp/tern-compare.XXXXXX)
LAB=$ROOT/tests/lab/lab.sh
CLI=tl-bc-cli CLI4=198.18.0.118
NS_PREFIX=tl-bc-
declare -A ADDR=([unbound]=198.18.0.70 [kresd]=198.18.0.71 [pdns]=198.18.0.72 [dnsdist]=198.18.0.73
                 [tern]=198.18.0.74 [tern-xdp]=198.18.0.75)
LAB_WAS_UP=0 PIDS=() CUR_NS=
say() { echo "compare: $*"; }

stop_server() {
  local p ns=$CUR_NS
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  PIDS=()
  if [[ -n $ns ]]; then
    ip -n tl-inet link del tl-bnic0 >/dev/null 2>&1 || true
    ip -n tl-inet link del tl-bdpp0 >/dev/null 2>&1 || true
    "$LAB" detach-ns "$ns" >/dev/null 2>&1 || true
    if [[ -e /run/netns/$ns ]]; then ip netns del "$ns" 2>/dev/null || true; fi
  fi
  CUR_NS=
}

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  stop_server
  "$LAB" detach-ns "$CLI" >/dev/null 2>&1
  ((LAB_WAS_UP)) || "$LAB" stop >/dev/null 2>&1
  rm -rf "$WORK"
  ((rc != 0)) && say "failed (exit $rc); partial results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ machine ----
{
  echo "date_utc=$DATE"
  echo "cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cpus=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "debian=$(cat /etc/debian_version)"
  for p in dnsperf knot-dnsutils unbound knot-resolver pdns-recursor dnsdist knot gnuplot-nox librte-net-af-packet23 \
    librte-net-af-xdp23; do
    echo "pkg_$p=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo absent)"
  done
  echo "tern=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "mode=$( ((QUICK)) && echo quick || echo full) duration_s=$DUR latency_qps=$LAT_QPS miss_qps_cap=$MISS_QPS"
} >"$OUT/machine.txt"

HAVE_KX=0
if command -v kxdpgun >/dev/null; then HAVE_KX=1; else say "no kxdpgun (knot-dnsutils): the hit runs use dnsperf only"; fi

attach_cli() { "$LAB" attach-ns "$CLI" "$CLI4/16" "2001:2::118/64" >/dev/null; }

# A lab that exists (even partly) when we start belongs to someone else: never stop it.
"$LAB" status >/dev/null 2>&1 && LAB_WAS_UP=1
"$LAB" start >/dev/null
# shellcheck disable=SC1091
eval "$("$LAB" env)"
attach_cli

# ------------------------------------------------------------------ query sets ----
# warm: WARM_NAMES fixed names (A), asked once to fill the cache, then replayed (all hits).
# miss: unique names under the lab's wildcard zone, fresh per server (all misses).
# mix:  19 warm names to 1 unique name (95 % hits), fresh per server.
for ((i = 0; i < WARM_NAMES; i++)); do echo "w$i.$LAB_WILD_SUFFIX A"; done >"$OUT/sets/warm.txt"
make_sets() {  # make_sets TAG: unique-name sets for one server (enough for DUR at the cap)
  local tag=$1 n=$((MISS_QPS * (DUR + 2)))
  awk -v n="$n" -v t="$tag" -v s="$LAB_WILD_SUFFIX" 'BEGIN { for (i = 0; i < n; i++) printf "m%s%d.%s A\n", t, i, s }' \
    >"$WORK/miss-$tag.txt"
  awk -v n="$((n * 4))" -v w="$WARM_NAMES" -v t="$tag" -v s="$LAB_WILD_SUFFIX" 'BEGIN {
      for (i = 0; i < n; i++) {
        if (i % 20 == 19) printf "x%s%d.%s A\n", t, i, s; else printf "w%d.%s A\n", (i * 7919) % w, s
      } }' >"$WORK/mix-$tag.txt"
}

# ------------------------------------------------------------------ servers ----
# Each start_X NS ADDR starts the server in namespace NS (already attached to the lab
# bridge with ADDR), pinned to CPU 1, and appends its PIDs to PIDS.
ROOT_NS_IP=$(awk '$3 == "A" { print $4; exit }' "$LAB_ROOT_HINTS")

start_unbound() {  # start_unbound NS ADDR [PORT]: the Unbound "howto optimise" settings for one thread
  local ns=$1 a=$2 port=${3:-53} d=$WORK/unbound
  mkdir -p "$d"
  cat >"$d/unbound.conf" <<EOF
server:
  interface: $a
  port: $port
  do-ip6: no
  access-control: 198.18.0.0/15 allow
  username: ""
  chroot: ""
  directory: "$d"
  pidfile: "$d/unbound.pid"
  logfile: "$d/unbound.log"
  use-syslog: no
  verbosity: 0
  root-hints: "$LAB_ROOT_HINTS"
  trust-anchor-file: "$LAB_TRUST_ANCHOR"
  # one core: one thread, one slab per cache (no lock striping to pay for)
  num-threads: 1
  msg-cache-slabs: 1
  rrset-cache-slabs: 1
  infra-cache-slabs: 1
  key-cache-slabs: 1
  msg-cache-size: 128m
  rrset-cache-size: 256m
  outgoing-range: 8192
  num-queries-per-thread: 4096
  so-rcvbuf: 4m
  so-sndbuf: 4m
  minimal-responses: yes
  prefetch: no
  qname-minimisation: no
EOF
  ip netns exec "$ns" taskset -c 1 unbound -d -c "$d/unbound.conf" >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
}

start_kresd() {  # kresd is single-threaded by design: one process = one core
  local ns=$1 a=$2 d=$WORK/kresd
  mkdir -p "$d/cache"
  cat >"$d/config.lua" <<EOF
net.listen('$a', 53, { kind = 'dns' })
net.ipv6 = false
cache.open(256 * MB, 'lmdb://$d/cache')
modules.load('hints > iterate')
hints.root({ ['a.root.lab.'] = '$ROOT_NS_IP' })
trust_anchors.remove('.')
trust_anchors.add('$(grep -v '^;' "$LAB_TRUST_ANCHOR" | head -1)')
-- no prefetch/predict: the same work per query as the others
EOF
  ip netns exec "$ns" taskset -c 1 kresd -n -q -c "$d/config.lua" "$d" >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
}

start_pdns() {  # threads=1, the kernel distributes (reuseport), packet cache on (default)
  local ns=$1 a=$2 d=$WORK/pdns ds
  mkdir -p "$d"
  ds=$(grep -v '^;' "$LAB_TRUST_ANCHOR" | head -1 | awk '{ print $4, $5, $6, $7 }')
  echo "addTA('.', '$ds')" >"$d/ta.lua"
  ip netns exec "$ns" taskset -c 1 pdns_recursor --config-dir="$d" --socket-dir="$d" --local-address="$a" \
    --hint-file="$LAB_ROOT_HINTS" --lua-config-file="$d/ta.lua" --dnssec=validate \
    --allow-from=198.18.0.0/15 --threads=1 --pdns-distributes-queries=no --reuseport=yes \
    --max-cache-entries=2000000 --max-packetcache-entries=2000000 --query-local-address=0.0.0.0 \
    --disable-syslog --log-common-errors=no --loglevel=3 --daemon=no --write-pid=no \
    --setuid=root --setgid=root >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
}

start_dnsdist() {  # packet cache in front of unbound (127.0.0.1:5300), both on CPU 1
  local ns=$1 a=$2 d=$WORK/dnsdist
  mkdir -p "$d"
  start_unbound "$ns" 127.0.0.1 5300
  cat >"$d/dnsdist.conf" <<EOF
setLocal('$a:53')
setACL({'198.18.0.0/15'})
newServer({address = '127.0.0.1:5300', name = 'unbound', checkName = 'a.root.lab.'})
pc = newPacketCache(2000000, { maxTTL = 86400, minTTL = 0 })
getPool(''):setCache(pc)
setMaxUDPOutstanding(65535)
setRingBuffersSize(0)
EOF
  ip netns exec "$ns" taskset -c 1 dnsdist --supervised --disable-syslog -C "$d/dnsdist.conf" >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
}

DP_SOCK=
# tern-dataplane with the lab-veth profile (net_af_packet on a veth whose other end is a
# port of the lab bridge; worker lcore 1, service lcore 0) + tern-control (CPU 1) behind
# its exception TAP. The miss limiter (production default 2000/s per worker, there to keep
# a random-subdomain flood off the resolver) is raised to the miss-heavy cap so that set
# measures tern-control. TERN_PROFILE picks another profile (e.g. lab-tap, the kernel TAP
# path); its interface names are renamed to tl-b* so a demo or test running at the same
# time (tl-dp0/tl-nic0/tl-exc0) is not disturbed.
TERN_PROFILE=${TERN_PROFILE:-lab-veth}
TERN_XDP_PROFILE=${TERN_XDP_PROFILE:-lab-veth-xdp}
start_tern-xdp() { start_tern "$1" "$2" "$TERN_XDP_PROFILE"; }
start_tern() {
  local ns=$1 a=$2 prof=${3:-$TERN_PROFILE} d=$WORK/tern dp tc
  dp=$(find_bin dataplane/tern-dataplane) || { say "no tern-dataplane built: ninja -C build-bench dataplane/tern-dataplane"; return 1; }
  tc=$(find_bin control/tern-control) || { say "no tern-control built: ninja -C build-bench control/tern-control"; return 1; }
  mkdir -p "$d/state"
  sed -e 's/iface=tl-nic0/iface=tl-bnic0/' -e 's/iface=tl-dp0/iface=tl-bdp0/' -e 's/^name = tl-exc0/name = tl-bexc0/' \
    "hw-profiles/$prof.conf" >"$d/profile.conf"
  rm -rf "$d/state"; mkdir -p "$d/state"
  if grep -q 'iface=tl-bdp0' "$d/profile.conf"; then
    # The DPDK port is one end of a veth pair (made here, in tern's namespace); the other
    # end, tl-bdpp0, becomes a port of the lab bridge like every other server's tl0.
    ip -n "$ns" link add tl-bdp0 type veth peer name tl-bdpp0
    # The kernel of tern's namespace must not answer what arrives on the DPDK port: it owns
    # the service address (on the exception TAP), so it would pass queries from tl-bdp0 to
    # tern-control's socket, next to the PMD, and answer twice. No ARP on the veth, and
    # strict reverse-path filtering (the route back is the TAP) drops them in the kernel;
    # the PMD's AF_PACKET sockets have their copy before that.
    ip -n "$ns" link set tl-bdp0 arp off
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.tl-bdp0.disable_ipv6=1 net.ipv4.conf.all.rp_filter=1 \
      net.ipv4.conf.tl-bdp0.rp_filter=1
    ip -n "$ns" link set tl-bdp0 up
    "$LAB" attach-if tl-bdpp0 "$ns" >/dev/null
    # Packets from local sockets cross veths and the bridge with their UDP checksum left
    # to "hardware" (CHECKSUM_PARTIAL); a kernel receiver accepts that, but the AF_PACKET
    # PMD hands the raw frame on, so tern would see (and drop) a wrong checksum on every
    # query from dnsperf and every answer from the lab's servers. Without TX checksum
    # offload on the bridge port towards tern, the kernel completes the checksum there, as
    # frames arrive from a real wire.
    ip netns exec "$LAB_NS_INET" ethtool -K tl-bdpp0 tx off >/dev/null ||
      say "warning: ethtool -K tl-bdpp0 tx off failed (install ethtool): tern drops frames with partial checksums"
  fi
  DP_SOCK=$d/dataplane.sock
  ip netns exec "$ns" "$dp" --profile "$d/profile.conf" --control-socket "$DP_SOCK" --allow 198.18.0.96/27 \
    --miss-rate "$MISS_QPS" --miss-burst 5000 >"$d/dp.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [[ -S $DP_SOCK ]] && break; kill -0 "${PIDS[-1]}" 2>/dev/null || break; sleep 0.1; done
  [[ -S $DP_SOCK ]] || { say "tern-dataplane did not start: $(tail -3 "$d/dp.log")"; return 1; }
  if grep -q 'iface=tl-bnic0' "$d/profile.conf"; then "$LAB" attach-if tl-bnic0 "$ns" >/dev/null; fi
  ip -n "$ns" addr add "$a/16" dev tl-bexc0
  cat >"$d/tern.conf" <<EOF
[server]
listen = $a:53
allow = 198.18.0.96/27 $a/32
control-socket = $d/control.sock
dataplane-socket = $DP_SOCK
state-dir = $d/state
[recursion]
root-hints = $LAB_ROOT_HINTS
EOF
  ip netns exec "$ns" taskset -c 1 "$tc" -c "$d/tern.conf" --foreground >"$d/tc.log" 2>&1 &
  PIDS+=($!)
}

# CPU jiffies (utime + stime) of every PID given, summed.
cpu_ticks() {
  local p s=0 f
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat")
    s=$((s + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$s"
}
# Jiffies of tern-dataplane's threads last seen on CPU 0 (the service lcore, the control
# socket thread): the part of tern's CPU not on the server core, reported separately.
cpu0_thread_ticks() {
  local t s=0
  for t in /proc/"${PIDS[0]}"/task/*/stat; do
    s=$((s + $(sed 's/^.*) //' "$t" | awk '{ print ($37 == 0) ? $12 + $13 : 0 }')))
  done
  echo "$s"
}

resolves() {  # resolves ADDR: a wildcard name answers NOERROR through the server
  ip netns exec "$CLI" kdig +time=2 +retry=0 @"$1" "probe$RANDOM.$LAB_WILD_SUFFIX" A 2>/dev/null | grep -q 'status: NOERROR'
}

# "busy idle" jiffies of one CPU from /proc/stat (busy includes irq and softirq: the kernel's
# network stack work that no process is charged for).
cpu_busy() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

CLK=$(getconf CLK_TCK)
TSV=$OUT/results.tsv
echo -e "server\tset\tsent\tanswered\tloss_pct\tqps\tserver_cpu_pct\tcpu0_pct\tdnsperf_cpu_pct\tqps_per_core\tp50_ms\tp99_ms\tp999_ms\tlat_qps\tgen_limited\tcpu0_busy_pct\tcpu1_busy_pct" >"$TSV"

# run_set SERVER SET FILE ADDR EXTRA...: throughput run then latency run, one TSV row.
run_set() {
  local srv=$1 set=$2 file=$3 a=$4
  shift 4
  local raw=$OUT/raw/$srv-$set t0 t1 c0 c1 z0 z1 w0 w1 tf
  t0=$(cpu_ticks "${PIDS[@]}"); z0=0; [[ $srv == tern* ]] && z0=$(cpu0_thread_ticks)
  local b0 b1
  b0="$(cpu_busy 0) $(cpu_busy 1)"
  w0=$(date +%s.%N)
  tf=$WORK/time
  # dnsperf's own CPU (user + sys): bash's time keyword, children included.
  { TIMEFORMAT='%U %S %R'; time ip netns exec "$CLI" taskset -c 0 dnsperf -s "$a" -d "$file" -l "$DUR" \
      -c 8 -T 1 -q 500 -t 2 "$@" >"$raw.txt" 2>&1; } 2>"$tf" || true
  if ! grep -q 'Queries sent:' "$raw.txt"; then
    say "  $srv $set: dnsperf printed no statistics ($(tr '\n' ' ' <"$tf" | head -c 200)); row skipped"
    return 0
  fi
  w1=$(date +%s.%N)
  b1="$(cpu_busy 0) $(cpu_busy 1)"
  t1=$(cpu_ticks "${PIDS[@]}"); z1=0; [[ $srv == tern* ]] && z1=$(cpu0_thread_ticks)
  # latency at a fixed offered rate, every answer's latency from -v
  ip netns exec "$CLI" taskset -c 0 dnsperf -s "$a" -d "$file" -l "$LAT_DUR" -Q "$LAT_QPS" -c 8 -T 1 -q 500 \
    -t 2 -v >"$raw.lat.txt" 2>&1 || true
  python3 "$HERE/summarize.py" row --server "$srv" --set "$set" --dnsperf "$raw.txt" --latency "$raw.lat.txt" \
    --time "$tf" --wall "$w0" "$w1" --server-ticks "$t0" "$t1" --cpu0-ticks "$z0" "$z1" --clk "$CLK" --cpu-busy $b0 $b1 \
    --lat-qps "$LAT_QPS" >>"$TSV"
  tail -1 "$TSV" | awk -F'\t' '{ printf "compare:   %-8s %-5s %9.0f qps answered, loss %5.2f%%, server CPU %5.1f%%, dnsperf CPU %5.1f%%, CPU0/1 busy %s/%s%%, p99 %s ms%s\n", $1, $2, $6, $5, $7, $9, $16, $17, $12, ($15 == "yes" ? "  [load generator limit]" : "") }'
}

# dp_stats FILE: tern-dataplane's counters (its control socket's "stats"), for the record.
dp_stats() {
  [[ -S $DP_SOCK ]] || return 0
  python3 - "$DP_SOCK" >"$1" 2>&1 <<'EOF' || true
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"stats\n"); d = b""
while (b := s.recv(65536)): d += b
sys.stdout.write(d.decode())
EOF
}

# run_xdp SERVER FILE ADDR RATE: the cache-warm set again, sent by kxdpgun (AF_XDP on the
# client's veth, native XDP; one thread on CPU 0, which sends and receives) at RATE for
# KX_DUR seconds. One TSV row (set warm-xdp) into $WORK/xdp-rows; its latency columns are the
# dnsperf latency run of the warm set (kxdpgun 3.2 measures none). Asked for far more than
# a server answers, kxdpgun's own receive side (the same thread, busy sending) and the
# kernel drop answers, so every server is stepped through KX_RATES and its best step kept.
KX_RATES=${KX_RATES:-"50000 100000 150000 200000 300000"}
run_xdp() {
  local srv=$1 file=$2 a=$3 KX_QPS=$4 raw=$OUT/raw/$1-warm-xdp-$4 t0 t1 z0 z1 w0 w1 b0 b1 tf=$WORK/time
  # kxdpgun takes the server's MAC from the neighbour table: make sure it is there.
  ip netns exec "$CLI" ping -c 1 -W 1 "$a" >/dev/null 2>&1 || true
  t0=$(cpu_ticks "${PIDS[@]}"); z0=0; [[ $srv == tern* ]] && z0=$(cpu0_thread_ticks)
  b0="$(cpu_busy 0) $(cpu_busy 1)"
  w0=$(date +%s.%N)
  local perf_pid=
  if [[ -n ${PERF:-} ]] && command -v perf >/dev/null; then
    # where both CPUs go during the run (cpu-clock sampling: the VM has no HW counters)
    perf record -a -e cpu-clock -F 499 -o "$WORK/perf.data" -- sleep $((KX_DUR > 2 ? KX_DUR - 1 : 1)) >/dev/null 2>&1 &
    perf_pid=$!
  fi
  { TIMEFORMAT='%U %S %R'; time timeout $((KX_DUR + 15)) ip netns exec "$CLI" kxdpgun -t "$KX_DUR" -Q "$KX_QPS" -b 64 \
      -F 0 -I tl0 -i "$file" "$a" >"$raw.txt" 2>&1; } 2>"$tf" || true
  w1=$(date +%s.%N)
  b1="$(cpu_busy 0) $(cpu_busy 1)"
  t1=$(cpu_ticks "${PIDS[@]}"); z1=0; [[ $srv == tern* ]] && z1=$(cpu0_thread_ticks)
  if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || true
    { perf report -i "$WORK/perf.data" --stdio --sort cpu,comm 2>/dev/null | grep -v '^#' | grep . | head -20
      echo; perf report -i "$WORK/perf.data" --stdio --sort cpu,comm,dso,sym 2>/dev/null | grep -v '^#' | grep . | head -80
    } >"$raw.perf.txt" || true
    rm -f "$WORK/perf.data"
  fi
  if ! grep -q 'total queries:' "$raw.txt"; then
    say "  $srv warm-xdp: kxdpgun printed no statistics ($(tail -2 "$raw.txt" | tr '\n' ' ' | head -c 200)); row skipped"
    return 0
  fi
  python3 "$HERE/summarize.py" row --server "$srv" --set warm-xdp --kxdpgun "$raw.txt" --kx-duration "$KX_DUR" \
    --kx-qps "$KX_QPS" --latency "$OUT/raw/$srv-warm.lat.txt" --time "$tf" --wall "$w0" "$w1" \
    --server-ticks "$t0" "$t1" --cpu0-ticks "$z0" "$z1" --clk "$CLK" --cpu-busy $b0 $b1 --lat-qps "$LAT_QPS" >>"$WORK/xdp-rows"
  tail -1 "$WORK/xdp-rows" | awk -F'\t' -v r="$KX_QPS" '{ printf "compare:   %-8s %-8s %6d/s: %9.0f qps answered of %.0f sent, loss %5.2f%%, server CPU %5.1f%% (CPU 0 part %s%%), kxdpgun CPU %5.1f%%, CPU0/1 busy %s/%s%%%s\n", $1, $2, r, $6, $3, $5, $7, $8, $9, $16, $17, ($15 == "yes" ? "  [load generator limit]" : "") }'
}

# ------------------------------------------------------------------ cost ----
TSC_HZ=$(python3 "$HERE/summarize.py" tsc-hz)
echo "tsc_hz=$TSC_HZ" >>"$OUT/machine.txt"
COST_TSV=$OUT/cost.tsv
echo -e "server\tprofile\toffered_qps\trep\tsent\tanswered\tloss_pct\tqps\twall_s\tserver_cpu_s\tworker_busy_s\tworker_thread_s\tservice_s\tcontrol_s\tsoftirq_s\tus_per_answer\tus_per_answer_softirq" >"$COST_TSV"

# utime+stime jiffies of one thread: thread_ticks PID TID
thread_ticks() { sed 's/^.*) //' "/proc/$1/task/$2/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0; }
# cost_snap SERVER: key=value words for summarize.py cost-row. tern: the dataplane's busy_cycles
# (every core), its main thread (the service lcore), its worker thread(s) (EAL names them
# rte-worker-N; shown, not summed) and tern-control; others: every process's CPU.
cost_snap() {
  local srv=$1 t w=0 dp=${PIDS[0]}
  printf 'wall=%s softirq=%s' "$(date +%s.%N)" "$(awk '$1 ~ /^cpu[0-9]+$/ { s += $8 } END { print s + 0 }' /proc/stat)"
  if [[ $srv == tern* ]]; then
    for t in /proc/"$dp"/task/*; do
      [[ $(cat "$t/comm" 2>/dev/null) == *-worker-* ]] && w=$((w + $(thread_ticks "$dp" "${t##*/}")))
    done
    printf ' busy_cycles=%s service_ticks=%s worker_ticks=%s control_ticks=%s' \
      "$(dp_stats /dev/stdout | awk '$1 ~ /^tern_dp_busy_cycles_total[{]/ { s += $2 } END { printf "%.0f", s }')" \
      "$(thread_ticks "$dp" "$dp")" "$w" "$(cpu_ticks "${PIDS[1]}")"
  else
    printf ' proc_ticks=%s' "$(cpu_ticks "${PIDS[@]}")"
  fi
}
# run_cost SERVER FILE ADDR RATE REP: the all-hit set at RATE for COST_DUR seconds, one row.
run_cost() {
  local srv=$1 file=$2 a=$3 rate=$4 k=$5 raw=$OUT/raw/$1-cost-$4-$5.txt before after prof=-
  [[ $srv == tern ]] && prof=$TERN_PROFILE
  [[ $srv == tern-xdp ]] && prof=$TERN_XDP_PROFILE
  before=$(cost_snap "$srv")
  ip netns exec "$CLI" taskset -c 0 dnsperf -s "$a" -d "$file" -l "$COST_DUR" -Q "$rate" -c 8 -T 1 -q 500 -t 2 \
    >"$raw" 2>&1 || true
  after=$(cost_snap "$srv")
  if ! grep -q 'Queries sent:' "$raw"; then say "  $srv cost $rate/s: dnsperf printed no statistics; row skipped"; return 0; fi
  # shellcheck disable=SC2086
  python3 "$HERE/summarize.py" cost-row --server "$srv" --profile "$prof" --offered "$rate" --rep "$k" --dnsperf "$raw" \
    --before $before --after $after --clk "$CLK" --tsc-hz "$TSC_HZ" >>"$COST_TSV"
  tail -1 "$COST_TSV" | awk -F'\t' '{ printf "compare:   %-8s cost %6s/s #%s: %7.0f qps answered, loss %5.2f%%, %7.2f us CPU/answer, %7.2f with softirq\n", $1, $3, $4, $8, $7, $16, $17 }'
}

for srv in $SERVERS; do
  case $srv in
    tern|tern-xdp|unbound|kresd|pdns|dnsdist) ;;
    *) say "unknown server '$srv' in SERVERS"; exit 2 ;;
  esac
  case $srv in
    unbound) command -v unbound >/dev/null || { say "skip unbound: not installed"; continue; } ;;
    kresd) command -v kresd >/dev/null || { say "skip kresd: not installed (scripts/install-deps.sh)"; continue; } ;;
    pdns) command -v pdns_recursor >/dev/null || { say "skip pdns: not installed (scripts/install-deps.sh)"; continue; } ;;
    dnsdist) command -v dnsdist >/dev/null || { say "skip dnsdist: not installed (scripts/install-deps.sh)"; continue; } ;;
  esac
  a=${ADDR[$srv]} ns=$NS_PREFIX$srv
  say "$srv at $a (namespace $ns)"
  # what else runs on this shared machine (its CPU shows in "CPU 0 / 1 busy")
  top -b -n 1 -w 200 2>/dev/null | head -20 >"$OUT/raw/$srv-top-before.txt" || true
  # The lab is shared: another test may have stopped it (and killed our client with it)
  # since the last server. lab.sh start is idempotent; the client namespace is re-made.
  "$LAB" start >/dev/null
  [[ -e /run/netns/$CLI ]] || attach_cli
  if [[ $srv == tern* ]]; then
    ip netns add "$ns"; ip -n "$ns" link set lo up
  elif ! "$LAB" attach-ns "$ns" "$a/16" "2001:2::$((0x${a##*.} + 0))/64" >/dev/null; then
    say "skip $srv: could not attach $ns to the lab"; continue
  fi
  CUR_NS=$ns
  if ! "start_$srv" "$ns" "$a"; then say "skip $srv: did not start"; stop_server; continue; fi
  up=0
  for _ in $(seq 100); do resolves "$a" && { up=1; break; }; sleep 0.2; done
  if ((!up)); then
    say "skip $srv: no NOERROR for a wildcard name within 20 s (logs: $(ls "$WORK/$srv"/*.log 2>/dev/null | tr '\n' ' '))"
    for f in "$WORK/$srv"/*.log; do [[ -f $f ]] && cp "$f" "$OUT/raw/$srv-$(basename "$f")"; done
    tail -5 "$WORK/$srv"/*.log 2>/dev/null | sed 's/^/compare:   | /' || true
    stop_server; continue
  fi
  make_sets "$srv"
  # Warm: every warm name once, at a bounded rate (each is a recursion the first time).
  ip netns exec "$CLI" taskset -c 0 dnsperf -s "$a" -d "$OUT/sets/warm.txt" -n 1 -Q "$MISS_QPS" -c 8 -q 200 \
    -t 5 >"$OUT/raw/$srv-warmup.txt" 2>&1 || true
  [[ $srv == tern* ]] && dp_stats "$OUT/raw/$srv-stats-0-warmed.txt"
  for r in $COST_QPS; do
    for ((k = 1; k <= COST_REPS; k++)); do run_cost "$srv" "$OUT/sets/warm.txt" "$a" "$r" "$k"; done
  done
  [[ $srv == tern* ]] && dp_stats "$OUT/raw/$srv-stats-0-cost.txt"
  ((QUICK && !QUICK_ALL)) && { stop_server; continue; }
  run_set "$srv" warm "$OUT/sets/warm.txt" "$a"
  [[ $srv == tern* ]] && dp_stats "$OUT/raw/$srv-stats-1-warm.txt"
  if ((HAVE_KX)); then
    : >"$WORK/xdp-rows"
    for r in $KX_RATES; do run_xdp "$srv" "$OUT/sets/warm.txt" "$a" "$r"; done
    # every step for the record; the best (most NOERROR answers/s) is the server's row
    awk -v OFS='\t' 'NR == FNR { r[FNR] = $0; next } { print r[FNR], $0 }' <(printf '%s\n' $KX_RATES) "$WORK/xdp-rows" \
      >>"$OUT/results-xdp-steps.tsv"
    sort -t $'\t' -k6,6gr "$WORK/xdp-rows" | head -1 >>"$TSV" || true
  fi
  [[ $srv == tern* ]] && dp_stats "$OUT/raw/$srv-stats-2-warm-xdp.txt"
  [[ -n ${ONLY_WARM:-} ]] && { stop_server; continue; }
  run_set "$srv" mix "$WORK/mix-$srv.txt" "$a"
  run_set "$srv" miss "$WORK/miss-$srv.txt" "$a" -Q "$MISS_QPS"
  [[ $srv == tern* ]] && dp_stats "$OUT/raw/$srv-dataplane-stats.txt"
  stop_server
done

python3 "$HERE/summarize.py" report --tsv "$TSV" --machine "$OUT/machine.txt" --out "$OUT" --miss-cap "$MISS_QPS"
python3 "$HERE/summarize.py" cost-report --tsv "$COST_TSV" --out "$OUT" >"$WORK/ratio.txt"
if command -v gnuplot >/dev/null; then
  (cd "$OUT" && gnuplot -e "tsv='results.tsv'" "$HERE/plots.gp") || say "gnuplot failed; the table is still in results.md"
fi
say "results: $OUT/results.md"
cat "$OUT/results.md"
echo
sed 's/^/compare: /' "$WORK/ratio.txt"
