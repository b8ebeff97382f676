#!/usr/bin/env bash
# Reserves 2 MiB hugepages and mounts hugetlbfs for DPDK. Idempotent.
# Usage: scripts/hugepages.sh [PAGES]   (default 512 = 1 GiB)
# Prints one line: "hugepages: ok N pages at MOUNT" or "hugepages: no-huge (reason)".
# With no-huge, start DPDK programs with --no-huge (tern-dataplane does that by itself
# when this script says so); performance is lower but everything works.
set -u
want=${1:-${TERN_HUGEPAGES:-512}}
mnt=${TERN_HUGE_MOUNT:-/dev/hugepages}
sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

fallback() { echo "hugepages: no-huge ($1); DPDK will run with --no-huge"; exit 0; }

[[ -w $sys ]] || fallback "cannot write $sys: not root, or no hugepage support in this kernel"
have=$(cat "$sys")
if (( have < want )); then
  echo "$want" >"$sys" 2>/dev/null || fallback "kernel refused to reserve $want pages"
  have=$(cat "$sys")
  (( have >= want )) || fallback "only $have of $want pages could be reserved (memory fragmented); try after reboot or lower TERN_HUGEPAGES"
fi
if ! mountpoint -q "$mnt"; then
  mkdir -p "$mnt"
  mount -t hugetlbfs -o pagesize=2M nodev "$mnt" 2>/dev/null || fallback "cannot mount hugetlbfs on $mnt"
fi
echo "hugepages: ok $have pages at $mnt"
