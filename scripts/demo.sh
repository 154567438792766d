#!/usr/bin/env bash
# The main job on one machine: set up, then take the sample app from a commit to a built,
# tested image, with a delta build for a code change. Everything runs on local Docker,
# a loopback registry and (once routing lands) nginx.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO_DIR/scripts/setup.sh"

WORK=$(mktemp -d /tmp/bgci-demo.XXXXXX)
REGISTRY_PORT=${BGCI_DEMO_REGISTRY_PORT:-5055}
cleanup() { [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a loopback registry on 127.0.0.1:$REGISTRY_PORT"
cat >"$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
export BGCI_REGISTRY=127.0.0.1:$REGISTRY_PORT

step "the sample app in its own git repository: $WORK/web-app"
cp -r "$REPO_DIR/examples/web-app" "$WORK/web-app"
cd "$WORK/web-app"
sed -i 's/^BASE_IMAGE = .*/BASE_IMAGE = "bgci-base:bookworm"/' bgci.toml  # no image can be pulled here
git init -q -b main && git add -A && git -c user.name=demo -c user.email=demo@bgci commit -qm "sample app"

step "bgci plan (no from-scratch image yet: full)"
bgci plan
step "bgci build auto"
bgci build auto

step "a code change: bgci plan says code, the delta takes a second or two"
echo "# demo change $(date +%s)" >> lib/WebApp.pm
git -c user.name=demo -c user.email=demo@bgci commit -qam "code change"
bgci plan
bgci build auto
SHA=$(bgci sha)
echo
echo "demo done: image $BGCI_REGISTRY/web-app:$SHA (work dir $WORK)"
