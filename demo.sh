#!/usr/bin/env bash
# Quick start, part one: installs what is missing, builds, starts the appliance on its
# embedded default (tern-dataplane on a TAP port with tern-control behind it, in front of
# the lab's authoritative hierarchy) and shows real answers and live stats until Ctrl-C.
#   ./demo.sh           interactive: answers, then a stats line every second
#   ./demo.sh --smoke   non-interactive: exits 0 only if the answers were right
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

./scripts/install-deps.sh
./scripts/hugepages.sh
build=${BUILD_DIR:-build}
[[ -f $build/build.ninja ]] || meson setup "$build" --buildtype=release
ninja -C "$build"
BUILD_DIR=$build exec ./scripts/demo-appliance.sh "$@"
