#!/usr/bin/env bash
# The main job on one machine: set up, then take the sample app from a commit to production
# and back: full build, test in the image, environment, smoke, promote; then a code change as
# a delta build, a second environment, promote, rollback. Everything runs on local Docker, a
# loopback registry and bgci's own nginx. BGCI_DEMO_KEEP=1 leaves the environments and nginx up.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO_DIR/scripts/setup.sh"

WORK=$(mktemp -d /tmp/bgci-demo.XXXXXX)
REGISTRY_PORT=${BGCI_DEMO_REGISTRY_PORT:-5055}
HTTP_PORT=${BGCI_DEMO_HTTP_PORT:-8080}
cleanup() {
  if [ "${BGCI_DEMO_KEEP:-0}" != 1 ] && [ -d "$WORK/web-app" ]; then
    (cd "$WORK/web-app" && bgci -q router stop >/dev/null 2>&1) || true
    for env in blue green; do  # the live one cannot be destroyed through bgci, by design
      docker ps -aq --filter label=io.bgci.app=web-app --filter "label=io.bgci.env=$env" | xargs -r docker rm -f >/dev/null
    done
  fi
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true
}
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
printf '\n[nginx]\nlisten = "127.0.0.1:%s"\n' "$HTTP_PORT" >> bgci.toml
git init -q -b main && git add -A && git -c user.name=demo -c user.email=demo@bgci commit -qm "sample app"

step "bgci plan (no from-scratch image yet: full)"
bgci plan
step "bgci build auto"
bgci build auto
BLUE_SHA=$(bgci sha)

step "bgci test: the suite inside that image (plus memcached in a test image), JUnit in test-results/"
bgci test

step "bgci router start: bgci's own nginx on 127.0.0.1:$HTTP_PORT"
bgci router start

step "bgci env create: 2 instances of $BLUE_SHA, then its preview hostname"
bgci env create --sha "$BLUE_SHA" --name blue
bgci smoke --env blue
step "bgci promote blue"
bgci promote blue
curl -fsS -H "Host: web-app.localhost" "http://127.0.0.1:$HTTP_PORT/" && echo "  <- live answers blue's sha"

step "a code change: bgci plan says code, the delta takes a second or two"
echo "# demo change $(date +%s)" >> lib/WebApp.pm
git -c user.name=demo -c user.email=demo@bgci commit -qam "code change"
bgci plan
bgci build auto
GREEN_SHA=$(bgci sha)
bgci test

step "green: create, smoke (every instance and the preview), promote"
bgci env create --sha "$GREEN_SHA" --name green
bgci smoke --env green
bgci promote green
curl -fsS -H "Host: web-app.localhost" "http://127.0.0.1:$HTTP_PORT/" && echo "  <- live answers green's sha"

step "bgci rollback: blue is live again"
bgci rollback
bgci status

echo
echo "demo done: blue $BLUE_SHA is live, green $GREEN_SHA is previous (work dir $WORK)"
