#!/bin/sh
# Switch the sample app's dependency layer to Acme-BgciSample-VERSION
# (default 0.02). Both tarballs are shipped in vendor/cache; this rewrites
# the three files that pin the version:
#   cpanfile                                   requires 'Acme::BgciSample', '== VERSION'
#   cpanfile.snapshot                          pathname + provides of that dist
#   vendor/cache/modules/02packages.details.txt.gz   (what `carton bundle` writes)
# 0.01 installs lib/perl5/Acme/BgciSample/V1.pm, 0.02 installs .../V2.pm instead,
# so after a dependency rebuild V1.pm must be gone.
#   sh tools/bump-dependency.sh          # -> 0.02
#   sh tools/bump-dependency.sh 0.01     # back to the committed state
set -eu
cd "$(dirname "$0")/.."
version=${1:-0.02}
case $version in
    0.01) sub=V1 ;;
    0.02) sub=V2 ;;
    *) echo "usage: $0 [0.01|0.02]" >&2; exit 2 ;;
esac
dist=Acme-BgciSample-$version
pathname=B/BG/BGCI/$dist.tar.gz
if [ ! -f "vendor/cache/authors/id/$pathname" ]; then
    echo "missing vendor/cache/authors/id/$pathname (run tools/make-dists.sh)" >&2
    exit 1
fi

sed -i "s/^requires 'Acme::BgciSample', '[=0-9. ]*';/requires 'Acme::BgciSample', '== $version';/" cpanfile
grep -q "^requires 'Acme::BgciSample', '== $version';" cpanfile

cat > cpanfile.snapshot <<SNAP
# carton snapshot format: version 1.0
DISTRIBUTIONS
  $dist
    pathname: $pathname
    provides:
      Acme::BgciSample $version
      Acme::BgciSample::$sub $version
    requirements:
      ExtUtils::MakeMaker 0
SNAP

mkdir -p vendor/cache/modules
{
    cat <<HEAD
File:         02packages.details.txt
URL:          http://www.perl.com/CPAN/modules/02packages.details.txt
Description:  Package names found in cpanfile.snapshot
Columns:      package name, version, path
Intended-For: Automated fetch routines, namespace documentation.
Written-By:   tools/bump-dependency.sh
Line-Count:   2
Last-Updated: Mon, 01 Jan 2024 00:00:00 GMT

HEAD
    printf '%-30s %8s  %s\n' Acme::BgciSample "$version" "$pathname"
    printf '%-30s %8s  %s\n' "Acme::BgciSample::$sub" "$version" "$pathname"
} | gzip -9n > vendor/cache/modules/02packages.details.txt.gz

echo "dependency layer now pins $dist (module Acme::BgciSample::$sub)"
