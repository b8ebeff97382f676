#!/usr/bin/env bash
# Builds the tern Debian package from a copy of this work tree, so the tree itself never
# collects build litter (obj-*/, debian/tern/, ../*.deb).
#
#   packaging/build-deb.sh [OUT_DIR] [VERSION]
#
# OUT_DIR (default ./results) receives the .deb, .buildinfo and .changes. VERSION, when
# given, replaces the top debian/changelog entry's version in the copy only (the upgrade
# tests build N and N+1 this way). Copies tracked and untracked-but-not-ignored files, i.e.
# what a fresh clone would have once they are committed. DEB_BUILD_OPTIONS passes through
# (nocheck skips the unit tests). Prints the path of the .deb on its last line.
set -euo pipefail

src=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
out=$(mkdir -p "${1:-$src/results}" && cd "${1:-$src/results}" && pwd)
version=${2:-}

work=$(mktemp -d /tmp/tern-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tern"
(cd "$src" && git ls-files -z --cached --others --exclude-standard |
   xargs -0 cp --parents -P -t "$work/tern" 2>/dev/null) ||
  { echo "build-deb: copying the work tree to $work failed" >&2; exit 1; }
# cp --parents keeps going past files listed by git but deleted in the tree; check the
# package's own files arrived.
[[ -f $work/tern/debian/rules && -f $work/tern/meson.build ]] ||
  { echo "build-deb: $work/tern lacks debian/rules or meson.build" >&2; exit 1; }

cd "$work/tern"
if [[ -n $version ]]; then
  # Same text as `dch`, without needing a configured maintainer identity.
  sed -i "1s/^tern ([^)]*)/tern ($version)/" debian/changelog
fi
jobs=${TERN_DEB_JOBS:-2}
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-} parallel=$jobs"
if ! dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  cp "$work/build.log" "$out/build-failed.log"
  echo "build-deb: dpkg-buildpackage failed; full log in $out/build-failed.log" >&2
  exit 1
fi
v=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
cp "$work/build.log" "$out/build-$v.log"
for f in "$work"/tern_"$v"_*; do cp "$f" "$out/"; done
echo "$out/tern_${v}_${arch}.deb"
