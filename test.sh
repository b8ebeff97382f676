#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, lab, end to end).
# Ends with meson test's summary; exits non-zero on any failure.
#   BUILD_DIR=build-asan TERN_SANITIZE=1 ./test.sh   # the ASan+UBSan build
#   TERN_FUZZ_SECONDS=0 ./test.sh                    # skip the fuzz pass (default 30 s per target)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

./scripts/install-deps.sh
./scripts/hugepages.sh

build=${BUILD_DIR:-build}
setup=(--buildtype=release)
if [[ ${TERN_SANITIZE:-0} == 1 ]]; then
  setup=(--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false)
fi
if [[ -f $build/build.ninja ]]; then
  meson setup --reconfigure "$build" "${setup[@]}" >/dev/null
else
  meson setup "$build" "${setup[@]}"
fi
ninja -C "$build"
# A short coverage-guided fuzz pass over the wire parsers (clang build of its own).
./scripts/fuzz-pass.sh
# Lab tests are registered non-parallel by their meson.build; unit tests run two at a time.
exec meson test -C "$build" --print-errorlogs --num-processes 2 "$@"
