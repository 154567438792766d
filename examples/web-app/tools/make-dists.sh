#!/bin/sh
# Rebuild the tarballs of the tiny in-repo distribution Acme-BgciSample
# (sources in tools/dists/) into vendor/cache, reproducibly (fixed mtime,
# owner and order, gzip -n), then rewrite the index for the pinned version.
# Only needed after editing tools/dists/; the tarballs are committed.
set -eu
cd "$(dirname "$0")/.."
out=vendor/cache/authors/id/B/BG/BGCI
mkdir -p "$out"
for src in tools/dists/Acme-BgciSample-*; do
    dist=$(basename "$src")
    tar -C tools/dists --sort=name --mtime='2024-01-01 00:00:00Z' \
        --owner=0 --group=0 --numeric-owner --mode='u+rw,go+r,go-w' \
        --format=ustar -cf - "$dist" | gzip -9n > "$out/$dist.tar.gz"
    echo "wrote $out/$dist.tar.gz"
done
version=$(sed -n "s/^requires 'Acme::BgciSample', '[= ]*\([0-9.]*\)';.*/\1/p" cpanfile)
exec sh tools/bump-dependency.sh "$version"
