#!/usr/bin/env bash
# A short, bounded libFuzzer pass over the two parsers that take bytes from the wire:
# the dataplane's parse-and-answer and the cache's insert_response. Run by test.sh
# (TERN_FUZZ_SECONDS per target, default 30; 0 skips). Needs clang (installed by
# scripts/install-deps.sh). Any crash or sanitizer report fails the script, and the
# reproducer is left in the printed artifact path.
#   scripts/fuzz-pass.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
secs=${1:-${TERN_FUZZ_SECONDS:-30}}
((secs > 0)) || { echo "fuzz-pass: skipped (0 seconds)"; exit 0; }
b=${FUZZ_BUILD_DIR:-build-fuzz}
if [[ ! -f $b/build.ninja ]]; then
  CC=clang CXX=clang++ meson setup "$b" -Dfuzz=true -Dlab_tests=false --buildtype=debugoptimized >/dev/null
fi
ninja -C "$b" dataplane/fuzz_parse_answer cache/fuzz_insert

work=$(mktemp -d /tmp/tern-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
for t in dataplane/fuzz_parse_answer:dataplane/fuzz-corpus cache/fuzz_insert:cache/fuzz-corpus; do
  bin=$b/${t%%:*} seeds=${t#*:}
  corpus=$work/$(basename "$bin")
  mkdir -p "$corpus" "$work/artifacts"
  cp "$seeds"/* "$corpus"/
  echo "fuzz-pass: $(basename "$bin") for ${secs}s from $(ls "$seeds" | wc -l) seeds"
  # -detect_leaks=0: the cache packs a tag into its entry pointers, which hides live
  # entries from LeakSanitizer; ASan and UBSan still run.
  if ! "$bin" -max_total_time="$secs" -max_len=1600 -detect_leaks=0 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$corpus" >"$work/log" 2>&1; then
    tail -40 "$work/log"
    mkdir -p results/fuzz && cp "$work"/artifacts/* results/fuzz/ 2>/dev/null || true
    echo "fuzz-pass: $(basename "$bin") FAILED; reproducers in results/fuzz/" >&2
    exit 1
  fi
  grep -E 'stat::number_of_executed_units|stat::new_units_added' "$work/log" | tr '\n' ' '; echo
done
echo "fuzz-pass: ok"
