#!/usr/bin/env bash
# Installs every Debian package tern needs to build, test and run its lab.
# Idempotent and fast when everything is present: dpkg is asked first, apt only
# when something is missing. Runs non-interactively (CI has no stdin).
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config clang lld
  libclang-rt-14-dev
  # libraries (found through pkg-config)
  dpdk-dev libdpdk-dev librte-net-af-xdp23 libldns-dev libjemalloc-dev libboost-program-options-dev
  libbenchmark-dev libgtest-dev libgmock-dev libnuma-dev libsystemd-dev
  # lab: authoritative servers, reference resolver, tools
  knot knot-dnsutils unbound unbound-anchor ldnsutils dnsperf
  # bench/compare: the other resolvers tern is measured next to, and the plots
  # (ethtool: the lab bridge port towards tern-dataplane completes UDP checksums, as a wire would)
  knot-resolver pdns-recursor dnsdist gnuplot-nox ethtool
  iproute2 iputils-ping procps psmisc python3 tcpdump
  # operations: VRRP failover, BGP anycast sample, alert rule validation (promtool), /metrics checks
  keepalived bird2 prometheus curl
  # packaging
  debhelper devscripts fakeroot dpkg-dev lintian
  dns-root-data   # /usr/share/dns/root.hints: the packaged tern.conf's root-hints (a Depends of tern)
)

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$st" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's knot/unbound packages start their services on install; the lab runs its
# own instances in namespaces, so keep the system ones from starting.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[[ $made_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
echo "install-deps: done"
