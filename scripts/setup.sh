#!/usr/bin/env bash
# Prepare this machine for bgci: system packages, a running dockerd, the local
# Debian base image and the Python package with its test extras.
# Idempotent and quick (a few seconds) when everything is already there.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=${BGCI_BASE_IMAGE:-bgci-base:bookworm}
DEBIAN_MIRROR=${BGCI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# chromium: the tests open the switch report in it (headless; tests/test_switch_report.py).
# prometheus, mtail, graphite-carbon, python3-whisper: the metrics tests start their own on loopback.
PACKAGES=(docker.io docker-registry nginx debootstrap groovy apache2-utils git chromium
          prometheus mtail graphite-carbon python3-whisper)

log() { printf '[setup] %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' own services (nginx on :80, docker-registry on :5000) are not wanted: bgci runs
  # its own. Debian's policy-rc.d protocol (exit 101: "action forbidden") stops the maintainer
  # scripts from starting them, so nothing needs stopping afterwards, and a system nginx or
  # registry that was already running is left alone. An existing policy-rc.d is kept as it was.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  # --no-install-recommends keeps docker.io from pulling in extras we never use.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ -z "$own_policy" ] || rm -f "$policy"; exit 1; }
  [ -z "$own_policy" ] || rm -f "$policy"
  # Where systemd runs, keep them from starting at the next boot too (their units stay installed).
  if [ -d /run/systemd/system ]; then
    for svc in nginx docker-registry prometheus mtail; do
      [[ " ${missing[*]} " == *" $svc "* ]] && systemctl disable "$svc" >/dev/null 2>&1 || true
    done
  fi
}

docker_answers() { timeout 5 docker version >/dev/null 2>&1; }

start_dockerd() {
  docker_answers && return 0
  if ! pgrep -x dockerd >/dev/null; then
    # A killed daemon leaves its pid file behind, which stops the next start.
    rm -f /var/run/docker.pid
    log "starting dockerd"
    nohup dockerd >/var/log/bgci-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker_answers && return 0
    sleep 0.5
  done
  log "dockerd did not answer within 30 s; see /var/log/bgci-dockerd.log"
  tail -n 20 /var/log/bgci-dockerd.log >&2 || true
  exit 1
}

make_base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  log "making base image $BASE_IMAGE with debootstrap (about a minute)"
  local root
  root=$(mktemp -d /tmp/bgci-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >/tmp/bgci-debootstrap.log 2>&1 || {
    tail -n 20 /tmp/bgci-debootstrap.log >&2; exit 1; }
  # Same sources inside the image as a debian:bookworm-slim image has.
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" \
    >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

# bgci installed from this checkout, with every requirement of pyproject.toml (test extras included)
# present: a checkout that added a dependency since the last install gets it.
python_package_ready() {
  # From /, so that `import bgci` finds the installed package, not this checkout's directory.
  (cd / && python3 - "$REPO_DIR" <<'PY' 2>/dev/null
import importlib.metadata as metadata, os, re, sys, tomllib
import bgci
assert os.path.dirname(os.path.dirname(bgci.__file__)) == sys.argv[1]
project = tomllib.load(open(os.path.join(sys.argv[1], "pyproject.toml"), "rb"))["project"]
for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
    metadata.version(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
PY
  ) && command -v bgci >/dev/null
}

install_python_package() {
  python_package_ready && return 0
  log "installing bgci with its test extras"
  python3 -m pip install -q -e "$REPO_DIR[test]"
}

install_packages
start_dockerd
install_python_package
make_base_image
log "ready: docker $(docker version --format '{{.Server.Version}}'), base image $BASE_IMAGE"
