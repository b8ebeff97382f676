#!/usr/bin/env bash
# tern lab: a small DNS hierarchy of real authoritative servers (Debian's knotd,
# one process per server namespace) on one bridged L2 segment, in network
# namespaces, plus Debian's unbound as the reference recursive resolver.
# See tests/lab/README.md for the topology and every name it serves.
#
#   lab.sh start | stop | status | env
#   lab.sh attach-ns NS ADDR4/PLEN ADDR6/PLEN | detach-ns NS
#   lab.sh attach-if IFNAME [FROM_NS]
#   lab.sh unbound-start NS ADDR4 [ADDR6] | unbound-stop NS
#
# Needs root. Uses only 198.18.0.0/16 and 2001:2::/64, inside namespaces named
# tl-* (LAB_NS_PREFIX); nothing is configured in the caller's namespace.
# Environment: LAB_NS_PREFIX (default tl), LAB_RUN (default /run/ternlab),
# LAB_KEEP_ON_FAILURE=1 (a failed start keeps what it built).
set -euo pipefail

LAB_DIR=$(dirname "$(readlink -f "$0")")
# LAB_NS_PREFIX names every namespace (P-inet, P-root, ...), the bridge (Pbr0)
# and its ports. The default "tl" is the lab others code against; another
# prefix gives a second, fully separate lab on the same machine (same
# addresses, its own namespaces): the selftest uses one so it never disturbs
# the shared lab.
P=${LAB_NS_PREFIX:-tl}
[[ $P =~ ^[a-z][a-z0-9]{0,3}$ ]] || { echo "lab.sh: LAB_NS_PREFIX '$P' must be 1-4 lowercase letters/digits" >&2; exit 2; }
if [[ $P == tl ]]; then LAB_RUN=${LAB_RUN:-/run/ternlab}; else LAB_RUN=${LAB_RUN:-/run/ternlab-$P}; fi
LAB_NS_INET=$P-inet
LAB_BRIDGE=${P}br0

# Server table: namespace P-<name>, addresses, zones. Signed zones get a fresh
# key at every start and their DS goes into the parent's zone file.
SERVERS=(root lab zz alpha beta dead slow)
declare -A SRV_V4=([root]=198.18.1.1 [lab]=198.18.1.2 [zz]=198.18.1.3
  [alpha]=198.18.1.10 [beta]=198.18.1.11 [dead]=198.18.1.20 [slow]=198.18.1.21)
declare -A SRV_V6=([root]=2001:2::1:1 [lab]=2001:2::1:2 [zz]=2001:2::1:3
  [alpha]=2001:2::1:10 [beta]=2001:2::1:11)
declare -A SRV_ZONES=([root]=. [lab]=lab. [zz]=zz.
  [alpha]="alpha.lab. bogus.lab. nsec3.lab. nokey.lab. unsupalg.lab. expired.lab. nosig.lab. unsigned.lab."
  [beta]="beta.zz. partlame.zz. v6only.zz." [dead]="" [slow]=slow.zz.)
# Signed by knotd at load (children before parents); NSEC3_ZONES use NSEC3 (RFC 5155).
SIGNED_ZONES=(alpha.lab. bogus.lab. nsec3.lab. nokey.lab. unsupalg.lab. lab. .)
NSEC3_ZONES=(nsec3.lab.)
# Signed offline by this script with ldns-signzone and served as they are: knotd would
# re-sign them. expired.lab.'s signatures expired in 2020; nosig.lab. lacks one RRSIG.
OFFLINE_ZONES=(expired.lab. nosig.lab.)
declare -A PARENT=([alpha.lab.]=lab. [bogus.lab.]=lab. [nsec3.lab.]=lab. [nokey.lab.]=lab.
  [unsupalg.lab.]=lab. [expired.lab.]=lab. [nosig.lab.]=lab. [lab.]=.)
# bogus.lab.'s DS is published with a corrupted digest (broken chain of trust).
BOGUS_ZONE=bogus.lab.
# nokey.lab.'s DS names a key the zone never publishes (DNSKEY missing).
NOKEY_ZONE=nokey.lab.
# unsupalg.lab.'s DS says algorithm 200, which no validator implements (insecure).
UNSUPALG_ZONE=unsupalg.lab.
SLOW_DELAY=0.8       # seconds the slow server holds each query
WAIT_SECS=20         # how long start waits for a server before giving up

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"; }

# Commands that change the lab serialize on a lock of this script file itself
# (it always exists, so no lock file is left behind; labs of every prefix share
# it, which costs nothing: commands are short). fd 9 must not leak into the
# daemons we start (they would hold the lock forever): every daemon launch
# below closes it with 9>&-.
lock() {
  exec 9<"$LAB_DIR/lab.sh"
  flock -w 120 9 || die "another lab.sh command has held the lock on $LAB_DIR/lab.sh for 120 s"
}

ns_exists() { [[ -e /run/netns/$1 ]]; }
zone_file() { if [[ $1 == . ]]; then echo root.zone; else echo "${1%.}.zone"; fi; }
zone_server() {
  local s z
  for s in "${SERVERS[@]}"; do
    for z in ${SRV_ZONES[$s]}; do [[ $z == "$1" ]] && { echo "$s"; return; }; done
  done
  die "internal: no server for zone $1"
}
srv_dir() { echo "$LAB_RUN/srv/$1"; }

# ---------------------------------------------------------------- env ----
print_env() {
  cat <<EOF
LAB_RUN=$LAB_RUN
LAB_DIR=$LAB_DIR
LAB_NS_INET=$LAB_NS_INET
LAB_BRIDGE=$LAB_BRIDGE
LAB_BRIDGE_V4=198.18.0.1
LAB_BRIDGE_V6=2001:2::1
LAB_PREFIX4=16
LAB_PREFIX6=64
LAB_ROOT_HINTS=$LAB_RUN/root.hints
LAB_TRUST_ANCHOR=$LAB_RUN/root.ds
LAB_QUERIES=$LAB_DIR/queries.txt
LAB_COMPARE=$LAB_DIR/compare.py
LAB_WILD_SUFFIX=wild.beta.zz
LAB_TERN_V4=198.18.0.53
LAB_TERN_V6=2001:2::53
LAB_TERN2_V4=198.18.0.54
LAB_TERN2_V6=2001:2::54
LAB_VIP_V4=198.18.0.55
LAB_NS_PREFIX=$P
LAB_REF_NS=$P-ref
LAB_REF_V4=198.18.0.60
LAB_REF_V6=2001:2::60
LAB_OTHER_V4_FIRST=198.18.0.70
LAB_OTHER_V4_LAST=198.18.0.79
LAB_CLIENT_V4_FIRST=198.18.0.100
LAB_CLIENT_V4_LAST=198.18.0.119
LAB_SERVERS="${SERVERS[*]}"
EOF
  local s u
  for s in "${SERVERS[@]}"; do
    u=${s^^}
    echo "LAB_SRV_${u}_NS=$P-$s"
    echo "LAB_SRV_${u}_V4=${SRV_V4[$s]}"
    [[ -n ${SRV_V6[$s]:-} ]] && echo "LAB_SRV_${u}_V6=${SRV_V6[$s]}"
  done
  return 0
}

# ------------------------------------------------------------ network ----
# A namespace with lo up and DAD off, so addresses are usable at once.
make_ns() {
  local ns=$1
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
    net.ipv6.conf.default.accept_dad=0 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
}

# veth name on the bridge side for namespace NS: <P>p-<name>, or for names too
# long for IFNAMSIZ (16 incl. NUL) a prefix of it plus a hash of the whole name.
port_name() {
  local n=${1#"$P"-} h
  if ((${#P} + 2 + ${#n} <= 15)); then echo "${P}p-$n"; return; fi
  h=$(printf '%s' "$1" | cksum | awk '{ printf "%05x", $1 % 1048576 }')
  n="${P}p-${n}"
  echo "${n:0:10}$h"
}

# plug NS into the bridge through a veth; NS's end is called tl0.
plug_ns() {
  local ns=$1 port
  port=$(port_name "$ns")
  if ip -n "$LAB_NS_INET" link show "$port" &>/dev/null; then
    ip netns exec "$ns" ip link show tl0 &>/dev/null ||
      die "bridge port $port exists but $ns has no tl0: the port belongs to another namespace whose name hashes alike; pick another name"
    return 0
  fi
  ip -n "$LAB_NS_INET" link add "$port" type veth peer name tl0 netns "$ns"
  ip -n "$LAB_NS_INET" link set "$port" master "$LAB_BRIDGE" up
  ip -n "$ns" link set tl0 up
}

make_inet() {
  make_ns "$LAB_NS_INET"
  if ! ip -n "$LAB_NS_INET" link show "$LAB_BRIDGE" &>/dev/null; then
    ip -n "$LAB_NS_INET" link add "$LAB_BRIDGE" type bridge stp_state 0 \
      forward_delay 0 mcast_snooping 0
    ip -n "$LAB_NS_INET" addr add 198.18.0.1/16 dev "$LAB_BRIDGE"
    ip -n "$LAB_NS_INET" addr add 2001:2::1/64 dev "$LAB_BRIDGE" nodad
    ip -n "$LAB_NS_INET" link set "$LAB_BRIDGE" up
  fi
}

make_server_net() {
  local s=$1 ns=$P-$1
  make_ns "$ns"
  plug_ns "$ns"
  if [[ $s == dead ]]; then
    # Never answers, never rejects: the address is local (so ARP resolves and
    # packets are accepted) but there is no listener, and with no connected
    # route every reply, ICMP port unreachable included, hits the blackhole.
    ip -n "$ns" addr add "${SRV_V4[$s]}/32" dev tl0
    ip -n "$ns" route add blackhole default
    return 0
  fi
  ip -n "$ns" addr add "${SRV_V4[$s]}/16" dev tl0
  [[ -n ${SRV_V6[$s]:-} ]] && ip -n "$ns" addr add "${SRV_V6[$s]}/64" dev tl0 nodad
  return 0
}

# ---------------------------------------------------------------- knot ----
write_knot_conf() {
  local s=$1 d listen z
  d=$(srv_dir "$s")
  mkdir -p "$d/run" "$d/db" "$d/zones"
  if [[ $s == slow ]]; then
    listen="127.0.0.1@53"   # the delay relay owns the public address
  else
    listen="${SRV_V4[$s]}@53"
    [[ -n ${SRV_V6[$s]:-} ]] && listen+=", ${SRV_V6[$s]}@53"
  fi
  {
    cat <<EOF
# generated by tests/lab/lab.sh for lab server $s (namespace $P-$s)
server:
    identity: "$P-$s"
    rundir: "$d/run"
    pidfile: "$d/run/knot.pid"
    listen: [ $listen ]
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: "$d/knot.log"
    any: info
database:
    storage: "$d/db"
control:
    listen: "$d/run/knot.sock"
policy:
  - id: lab
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
  - id: lab-nsec3
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
    nsec3: on
    nsec3-iterations: 0
    nsec3-salt-length: 0
template:
  - id: default
    storage: "$d/zones"
    semantic-checks: on
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
EOF
    for z in ${SRV_ZONES[$s]}; do
      echo "  - domain: \"$z\""
      echo "    file: \"$(zone_file "$z")\""
      if [[ " ${SIGNED_ZONES[*]} " == *" $z "* ]]; then
        echo "    dnssec-signing: on"
        if [[ " ${NSEC3_ZONES[*]} " == *" $z "* ]]; then
          echo "    dnssec-policy: lab-nsec3"
        else
          echo "    dnssec-policy: lab"
        fi
      fi
      # served as signed offline: no checks that would refuse expired signatures
      [[ " ${OFFLINE_ZONES[*]} " == *" $z "* ]] && echo "    semantic-checks: off"
      true
    done
  } >"$d/knot.conf"
}

# DS records (digest SHA-256) of zone Z's key, from its server's KASP database.
zone_ds() {
  local z=$1 s
  s=$(zone_server "$z")
  keymgr -c "$(srv_dir "$s")/knot.conf" "$z" ds | awk '$2 == "DS" && $5 == 2'
}

# Replace the marker "; @DS zone@" in the parent zone file with DS lines.
insert_ds() {
  local parent_file=$1 child=$2 ds=$3 tmp
  grep -qF "; @DS $child@" "$parent_file" ||
    die "zone template $(basename "$parent_file") has no '; @DS $child@' marker"
  tmp=$(mktemp "$parent_file.XXXX")
  awk -v marker="; @DS $child@" -v ds="$ds" '$0 == marker { print ds; next } { print }' \
    "$parent_file" >"$tmp"
  mv "$tmp" "$parent_file"
}

# Signs zone Z's file in place with a fresh ECDSA P-256 key (ldns-signzone, NSEC) and
# puts its DS into the parent's file. expired.lab.: signatures valid only in January 2020.
# nosig.lab.: the RRSIG over www A is removed afterwards.
sign_offline() {
  local z=$1 s f d k ds pf
  s=$(zone_server "$z")
  f="$(srv_dir "$s")/zones/$(zone_file "$z")"
  d=$(mktemp -d "$LAB_RUN/offline.XXXX")
  k=$(cd "$d" && ldns-keygen -a ECDSAP256SHA256 -k "$z") || die "ldns-keygen failed for $z"
  if [[ $z == expired.lab. ]]; then
    ldns-signzone -i 20200101000000 -e 20200201000000 -f "$f.signed" "$f" "$d/$k" ||
      die "ldns-signzone failed for $z"
  else
    ldns-signzone -f "$f.signed" "$f" "$d/$k" || die "ldns-signzone failed for $z"
  fi
  if [[ $z == nosig.lab. ]]; then
    awk '!($1 == "www.nosig.lab." && $4 == "RRSIG" && $5 == "A")' "$f.signed" >"$f"
    rm -f "$f.signed"
  else
    mv "$f.signed" "$f"
  fi
  ds=$(ldns-key2ds -n -2 "$d/$k.key") || die "ldns-key2ds failed for $z"
  pf="$(srv_dir "$(zone_server "${PARENT[$z]}")")/zones/$(zone_file "${PARENT[$z]}")"
  insert_ds "$pf" "$z" "$ds"
}

build_zones() {
  local s z f
  for s in "${SERVERS[@]}"; do
    write_knot_conf "$s"
    for z in ${SRV_ZONES[$s]}; do
      f=$(zone_file "$z")
      [[ -f $LAB_DIR/zones/$f ]] || die "missing zone template $LAB_DIR/zones/$f"
      cp "$LAB_DIR/zones/$f" "$(srv_dir "$s")/zones/$f"
    done
  done
  # Children first: a parent's file must hold its children's DS before it loads.
  local ds pf
  for z in "${SIGNED_ZONES[@]}"; do
    s=$(zone_server "$z")
    keymgr -c "$(srv_dir "$s")/knot.conf" "$z" generate algorithm=ecdsap256sha256 \
      ksk=yes zsk=yes >/dev/null || die "keymgr could not generate a key for $z"
    ds=$(zone_ds "$z")
    [[ -n $ds ]] || die "keymgr produced no DS for $z"
    if [[ $z == "$NOKEY_ZONE" ]]; then
      # the DS of a key that is generated here and thrown away
      ds=$(cd "$(mktemp -d "$LAB_RUN/nokey.XXXX")" &&
        ldns-key2ds -n -2 "$(ldns-keygen -a ECDSAP256SHA256 -k "$z").key") ||
        die "ldns-keygen/ldns-key2ds failed for $z"
    fi
    if [[ $z == "$UNSUPALG_ZONE" ]]; then
      ds=$(awk '{ $4 = 200; print }' <<<"$ds")  # owner DS tag ALG digest-type digest
    fi
    if [[ $z == "$BOGUS_ZONE" ]]; then
      # flip the last digest digit: the key tag still matches, the digest does not
      ds=$(awk '{ d = $NF; l = substr(d, length(d)); r = (l == "0") ? "1" : "0";
                  $NF = substr(d, 1, length(d) - 1) r; print }' <<<"$ds")
    fi
    if [[ -n ${PARENT[$z]:-} ]]; then
      pf="$(srv_dir "$(zone_server "${PARENT[$z]}")")/zones/$(zone_file "${PARENT[$z]}")"
      insert_ds "$pf" "$z" "$ds"
    fi
  done
  for z in "${OFFLINE_ZONES[@]}"; do sign_offline "$z"; done
  # Trust anchor for validating resolvers: the root key's DS.
  zone_ds . | sed 's/ DS / IN DS /' >"$LAB_RUN/root.ds"
  cat >"$LAB_RUN/root.hints" <<EOF
; root hints of the tern lab (generated by lab.sh)
.              3600000  NS    a.root.lab.
a.root.lab.    3600000  A     ${SRV_V4[root]}
a.root.lab.    3600000  AAAA  ${SRV_V6[root]}
EOF
}

start_server() {
  local s=$1 d
  d=$(srv_dir "$s")
  [[ $s == dead ]] && return 0
  ip netns exec "$P-$s" knotd -c "$d/knot.conf" -d 9>&- ||
    die "knotd for $P-$s failed to start; see $d/knot.log"
  if [[ $s == slow ]]; then
    ip netns exec "$P-$s" setsid python3 "$LAB_DIR/delay_relay.py" \
      --listen "${SRV_V4[$s]}" --upstream 127.0.0.1:53 --delay "$SLOW_DELAY" \
      --pidfile "$d/run/relay.pid" </dev/null >>"$d/relay.log" 2>&1 9>&- &
  fi
}

# Succeeds when the server for zone Z answers its SOA authoritatively (and
# signed, for signed zones) on every address it has.
zone_answers() {
  local z=$1 s a out
  s=$(zone_server "$z")
  for a in ${SRV_V4[$s]} ${SRV_V6[$s]:-}; do
    out=$(ip netns exec "$LAB_NS_INET" kdig @"$a" "$z" SOA +norec +dnssec \
      +time=2 +retry=0 2>/dev/null) || return 1
    [[ $out == *"status: NOERROR"* && $out == *"Flags: qr aa"* ]] || return 1
    if [[ " ${SIGNED_ZONES[*]} " == *" $z "* ]]; then
      [[ $out == *RRSIG* ]] || return 1
    fi
  done
}

wait_servers() {
  local s z deadline=$((SECONDS + WAIT_SECS))
  for s in "${SERVERS[@]}"; do
    for z in ${SRV_ZONES[$s]}; do
      until zone_answers "$z"; do
        # a zone that failed to load will never answer: say so at once
        grep -qF "error: [$z] zone event 'load' failed" "$(srv_dir "$s")/knot.log" 2>/dev/null &&
          die "server $P-$s could not load zone $z:
$(grep -F "[$z]" "$(srv_dir "$s")/knot.log" | grep error)"
        ((SECONDS < deadline)) ||
          die "server $P-$s does not answer for zone $z after ${WAIT_SECS}s; last lines of its log:
$(tail -n 8 "$(srv_dir "$s")/knot.log" 2>/dev/null; tail -n 4 "$(srv_dir "$s")/relay.log" 2>/dev/null)"
        sleep 0.2
      done
    done
  done
}

# ------------------------------------------------------------ commands ----
# What the running lab was built from. A lab started from older templates or
# scripts still counts as up (others may be using it: never rebuild it under
# them); start and status warn, and stop + start rebuilds it.
fingerprint() {
  cat "$LAB_DIR"/zones/*.zone "$LAB_DIR/lab.sh" "$LAB_DIR/delay_relay.py" | sha256sum | cut -c1-16
}

stale_warning() {
  [[ -f $LAB_RUN/lab.env ]] || return 0
  [[ $(cat "$LAB_RUN/fingerprint" 2>/dev/null) == "$(fingerprint)" ]] && return 0
  log "warning: the running lab was built from older zone templates or scripts;" \
    "lab.sh stop && lab.sh start rebuilds it (when nobody else is using it)"
}

# Succeeds when the whole lab runs. A zone gets three tries, so one lost
# datagram does not make start tear down a lab that others are using.
lab_up() {
  [[ -f $LAB_RUN/lab.env ]] && ns_exists "$LAB_NS_INET" || return 1
  local s z i
  for s in "${SERVERS[@]}"; do
    ns_exists "$P-$s" || { LAB_DOWN_WHY="namespace $P-$s missing"; return 1; }
    for z in ${SRV_ZONES[$s]}; do
      for ((i = 0; ; i++)); do
        zone_answers "$z" && break
        ((i < 2)) || { LAB_DOWN_WHY="$P-$s does not answer for $z"; return 1; }
        sleep 0.3
      done
    done
  done
}

cmd_start() {
  need_root; lock
  LAB_DOWN_WHY=
  if lab_up; then
    log "lab already up ($LAB_RUN)"
    stale_warning
    return 0
  fi
  [[ -n $LAB_DOWN_WHY ]] && log "lab partly up ($LAB_DOWN_WHY): tearing it down and starting afresh"
  do_stop quiet
  # A failed start leaves nothing behind (callers only stop labs they started);
  # LAB_KEEP_ON_FAILURE=1 keeps the wreck in $LAB_RUN for debugging.
  trap 'start_failed' EXIT
  mkdir -p "$LAB_RUN/srv"
  build_zones
  make_inet
  local s
  for s in "${SERVERS[@]}"; do make_server_net "$s"; done
  for s in "${SERVERS[@]}"; do start_server "$s"; done
  wait_servers
  fingerprint >"$LAB_RUN/fingerprint"
  print_env >"$LAB_RUN/lab.env"
  trap - EXIT
  log "lab up: ${#SERVERS[@]} servers on $LAB_BRIDGE in $LAB_NS_INET; env in $LAB_RUN/lab.env"
}

start_failed() {
  if [[ ${LAB_KEEP_ON_FAILURE:-0} == 1 ]]; then
    log "start failed; LAB_KEEP_ON_FAILURE=1: leaving the lab as it is ($LAB_RUN)"
  else
    log "start failed; tearing down what was built (LAB_KEEP_ON_FAILURE=1 keeps it)"
    do_stop quiet
  fi
}

# Every namespace of the lab: the $P-* ones and whatever attach-ns recorded.
lab_namespaces() {
  {
    ip netns list | awk '{ print $1 }' | grep "^$P-" || true
    [[ -f $LAB_RUN/attached.list ]] && cat "$LAB_RUN/attached.list"
  } | sort -u | while read -r ns; do ns_exists "$ns" && echo "$ns"; done
  return 0
}

kill_ns_pids() {
  local ns=$1 i
  local -a pids
  mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
    ((${#pids[@]})) || return 0
    sleep 0.1
  done
  log "namespace $ns: processes ${pids[*]} ignored SIGTERM for 5 s; sending SIGKILL"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 0.2
}

do_stop() {
  local ns
  for ns in $(lab_namespaces); do kill_ns_pids "$ns"; done
  for ns in $(lab_namespaces); do ip netns del "$ns" || log "could not delete namespace $ns"; done
  rm -rf "$LAB_RUN"
  [[ ${1:-} == quiet ]] || log "lab stopped"
}

cmd_stop() { need_root; lock; do_stop; }

cmd_status() {
  need_root
  local s z ok=0 state
  if ns_exists "$LAB_NS_INET"; then
    echo "namespace $LAB_NS_INET: bridge $LAB_BRIDGE $(ip -n "$LAB_NS_INET" -br link show "$LAB_BRIDGE" 2>/dev/null | awk '{print $2}')"
  else
    echo "namespace $LAB_NS_INET: absent"; ok=1
  fi
  for s in "${SERVERS[@]}"; do
    if ! ns_exists "$P-$s"; then echo "server $s: namespace $P-$s absent"; ok=1; continue; fi
    if [[ $s == dead ]]; then
      echo "server $s: ${SRV_V4[$s]} silent by design (pids: none expected)"; continue
    fi
    for z in ${SRV_ZONES[$s]}; do
      if zone_answers "$z"; then state=answers; else state="NOT ANSWERING"; ok=1; fi
      echo "server $s: zone $z $state (${SRV_V4[$s]} ${SRV_V6[$s]:-})"
    done
  done
  local f ns
  if [[ -f $LAB_RUN/attached.list ]]; then
    while read -r ns; do echo "attached namespace: $ns"; done <"$LAB_RUN/attached.list"
  fi
  for f in "$LAB_RUN"/unbound-*/unbound.pid; do
    [[ -f $f ]] || continue
    ns=$(basename "$(dirname "$f")"); ns=${ns#unbound-}
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      echo "unbound in $ns: running (pid $(cat "$f"))"
    else
      echo "unbound in $ns: pid file but not running"
    fi
  done
  [[ -f $LAB_RUN/lab.env ]] || ok=1
  stale_warning
  if ((ok == 0)); then echo "lab: up"; else echo "lab: NOT fully up"; fi
  return $ok
}

# start writes the same lines to $LAB_RUN/lab.env once the lab is up; env must
# not write it (others take the file's presence to mean "the lab is up").
cmd_env() { print_env; }

cmd_attach_ns() {
  need_root
  (($# == 3)) || die "usage: lab.sh attach-ns NS ADDR4/PLEN ADDR6/PLEN"
  local ns=$1 a4=$2 a6=$3
  [[ $a4 == */* && $a6 == */* ]] || die "attach-ns: addresses need a prefix length (e.g. 198.18.0.100/16 2001:2::100/64)"
  lock
  ns_exists "$LAB_NS_INET" || die "lab is not running (no $LAB_NS_INET); run lab.sh start first"
  make_ns "$ns"
  plug_ns "$ns"
  ip -n "$ns" addr replace "$a4" dev tl0
  ip -n "$ns" addr replace "$a6" dev tl0 nodad
  grep -qxF "$ns" "$LAB_RUN/attached.list" 2>/dev/null || echo "$ns" >>"$LAB_RUN/attached.list"
}

cmd_detach_ns() {
  need_root
  (($# == 1)) || die "usage: lab.sh detach-ns NS"
  local ns=$1
  lock
  unbound_stop "$ns"
  if ns_exists "$ns"; then kill_ns_pids "$ns"; ip netns del "$ns"; fi
  if [[ -f $LAB_RUN/attached.list ]]; then
    grep -vxF "$ns" "$LAB_RUN/attached.list" >"$LAB_RUN/attached.list.new" || true
    mv "$LAB_RUN/attached.list.new" "$LAB_RUN/attached.list"
  fi
}

cmd_attach_if() {
  need_root
  (($# >= 1 && $# <= 2)) || die "usage: lab.sh attach-if IFNAME [FROM_NS]"
  local ifn=$1 from=${2:-}
  lock
  ns_exists "$LAB_NS_INET" || die "lab is not running (no $LAB_NS_INET); run lab.sh start first"
  if [[ -n $from ]]; then
    ip -n "$from" link set "$ifn" netns "$LAB_NS_INET" ||
      die "cannot move $ifn from namespace $from into $LAB_NS_INET"
  elif ! ip -n "$LAB_NS_INET" link show "$ifn" &>/dev/null; then
    ip link set "$ifn" netns "$LAB_NS_INET" ||
      die "cannot move $ifn into $LAB_NS_INET (does it exist in this namespace?)"
  fi
  ip -n "$LAB_NS_INET" link set "$ifn" master "$LAB_BRIDGE" up
}

# ------------------------------------------------------------- unbound ----
unbound_stop() {
  local ns=$1 d pid i
  d=$LAB_RUN/unbound-$ns
  [[ -f $d/unbound.pid ]] || { rm -rf "$d"; return 0; }
  pid=$(cat "$d/unbound.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -rf "$d"
}

cmd_unbound_start() {
  need_root
  (($# >= 2 && $# <= 3)) || die "usage: lab.sh unbound-start NS ADDR4 [ADDR6]"
  local ns=$1 a4=$2 a6=${3:-} d
  lock
  [[ -f $LAB_RUN/lab.env ]] || die "lab is not running; run lab.sh start first"
  ns_exists "$ns" || die "namespace $ns does not exist; create it with lab.sh attach-ns $ns ADDR4/16 ADDR6/64"
  local a
  for a in $a4 $a6; do
    ip -n "$ns" -o addr show | awk '{ print $4 }' | grep -q "^$a/" ||
      die "address $a is not configured in namespace $ns (lab.sh attach-ns $ns ADDR4/16 ADDR6/64 adds them)"
  done
  unbound_stop "$ns"
  d=$LAB_RUN/unbound-$ns
  mkdir -p "$d"
  cat >"$d/unbound.conf" <<EOF
# reference resolver of the tern lab, generated by lab.sh (namespace $ns)
server:
    interface: $a4
$( [[ -n $a6 ]] && echo "    interface: $a6" )
    port: 53
    do-ip6: yes
    num-threads: 1
    username: ""
    chroot: ""
    directory: "$d"
    pidfile: "$d/unbound.pid"
    logfile: "$d/unbound.log"
    use-syslog: no
    verbosity: 1
    log-servfail: yes
    root-hints: "$LAB_RUN/root.hints"
    trust-anchor-file: "$LAB_RUN/root.ds"
    val-log-level: 2
    access-control: 0.0.0.0/0 refuse
    access-control: ::/0 refuse
    access-control: 127.0.0.0/8 allow
    access-control: ::1 allow
    access-control: 198.18.0.0/15 allow
    access-control: 2001:2::/48 allow
    do-not-query-localhost: yes
    qname-minimisation: yes
    minimal-responses: no
    # A server that never answers (tl-dead) must end in SERVFAIL within seconds,
    # not minutes: cap the retransmit backoff at 3 s (the slow server answers in
    # 0.8 s, well inside it), and reply to clients however long recursion takes
    # (Debian's 1.17 silently drops clients after discard-timeout, 1.9 s).
    infra-cache-max-rtt: 3000
    discard-timeout: 0
remote-control:
    control-enable: no
EOF
  # unbound-checkconf catches config errors with a line number before we daemonize
  unbound-checkconf "$d/unbound.conf" >/dev/null ||
    die "unbound-checkconf rejected $d/unbound.conf"
  ip netns exec "$ns" unbound -c "$d/unbound.conf" 9>&- ||
    die "unbound failed to start in $ns; see $d/unbound.log"
  local deadline=$((SECONDS + WAIT_SECS)) out
  until out=$(ip netns exec "$ns" kdig @"$a4" . SOA +time=2 +retry=0 2>/dev/null) &&
        [[ $out == *"status: NOERROR"* ]]; do
    ((SECONDS < deadline)) || die "unbound in $ns does not resolve '. SOA' after ${WAIT_SECS}s; see $d/unbound.log:
$(tail -n 8 "$d/unbound.log" 2>/dev/null)"
    sleep 0.2
  done
}

cmd_unbound_stop() {
  need_root
  (($# == 1)) || die "usage: lab.sh unbound-stop NS"
  lock
  unbound_stop "$1"
}

usage() {
  sed -n "2,15p" "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

cmd=${1:-}
shift || true
case $cmd in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  env) cmd_env "$@" ;;
  attach-ns) cmd_attach_ns "$@" ;;
  detach-ns) cmd_detach_ns "$@" ;;
  attach-if) cmd_attach_if "$@" ;;
  unbound-start) cmd_unbound_start "$@" ;;
  unbound-stop) cmd_unbound_stop "$@" ;;
  *) usage ;;
esac
