#!/usr/bin/env bash
# The main job on one machine: set up, then take the sample app from a commit to production
# and back: full build, test in the image, environment, smoke, promote; then, under a steady
# background load, a code change as a delta build, a second environment, promote and rollback
# (with a picture of each switch); last, a bad build that passes its tests is promoted with
# --analyze and rolled back by itself. Everything runs on local Docker, a loopback registry,
# bgci's own nginx and Prometheus. BGCI_DEMO_KEEP=1 leaves the environments and nginx up.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO_DIR/scripts/setup.sh"

WORK=$(mktemp -d /tmp/bgci-demo.XXXXXX)
REGISTRY_PORT=${BGCI_DEMO_REGISTRY_PORT:-5055}
HTTP_PORT=${BGCI_DEMO_HTTP_PORT:-8080}
PROMETHEUS_PORT=${BGCI_DEMO_PROMETHEUS_PORT:-9095}
EXPORTER_PORT=${BGCI_DEMO_EXPORTER_PORT:-9469}
cleanup() {
  for pid in ${LOAD_PID:-} ${EXPORTER_PID:-} ${PROMETHEUS_PID:-}; do kill "$pid" 2>/dev/null || true; done
  if [ "${BGCI_DEMO_KEEP:-0}" != 1 ] && [ -d "$WORK/web-app" ]; then
    (cd "$WORK/web-app" && bgci -q router stop >/dev/null 2>&1) || true
    for env in blue green bad; do  # the live one cannot be destroyed through bgci, by design
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
# Prometheus scrapes `bgci exporter` every second here, so the analysis lag is short.
printf '\n[metrics]\nprometheus_url = "http://127.0.0.1:%s"\nexporter_listen = "127.0.0.1:%s"\nlag = 4\n' \
  "$PROMETHEUS_PORT" "$EXPORTER_PORT" >> bgci.toml
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
curl -fsS --noproxy '*' -H "Host: web-app.localhost" "http://127.0.0.1:$HTTP_PORT/" && echo "  <- live answers blue's sha"

step "a code change: bgci plan says code, the delta takes a second or two"
echo "# demo change $(date +%s)" >> lib/WebApp.pm
git -c user.name=demo -c user.email=demo@bgci commit -qam "code change"
bgci plan
bgci build auto
GREEN_SHA=$(bgci sha)
bgci test

step "green: create, smoke (every instance and the preview)"
bgci env create --sha "$GREEN_SHA" --name green
bgci smoke --env green

step "a steady load through nginx (4 keep-alive connections) while green is promoted and rolled back"
python3 "$REPO_DIR/scripts/load.py" --url "http://127.0.0.1:$HTTP_PORT/?user=1" --host web-app.localhost \
  --out "$WORK/load.json" >/dev/null &
LOAD_PID=$!
sleep 3
bgci promote green --report "$WORK/switch-green.html"
curl -fsS --noproxy '*' -H "Host: web-app.localhost" "http://127.0.0.1:$HTTP_PORT/" && echo "  <- live answers green's sha"

step "bgci rollback: blue is live again"
bgci rollback --report "$WORK/rollback-blue.html"
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=
bgci status

step "what the load saw across both switches"
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
load = json.load(open(f"{work}/load.json"))
print(f"{'requests':<20} {load['requests']}")
print(f"{'failed requests':<20} {load['failed']}  {load['failures'] or ''}")
print(f"{'retries':<20} {load['retries']}  (a request sent as a reload closed its idle connection, sent again)")
for env, count in sorted(load["by_env"].items()):
    print(f"{'share of ' + env:<20} {count / max(1, load['requests']):.1%}  ({count})")
print(f"{'switch reports':<20} {work}/switch-green.html, {work}/rollback-blue.html")
PY

step "Prometheus on 127.0.0.1:$PROMETHEUS_PORT, scraping bgci exporter (request metrics by environment)"
printf '{"global": {"scrape_interval": "1s"}, "scrape_configs": [{"job_name": "bgci", "static_configs": [{"targets": ["127.0.0.1:%s"]}]}]}\n' \
  "$EXPORTER_PORT" > "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROMETHEUS_PID=$!
bgci exporter >"$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
python3 "$REPO_DIR/scripts/load.py" --url "http://127.0.0.1:$HTTP_PORT/?user=1" --host web-app.localhost \
  --out "$WORK/load-bad.json" >/dev/null &
LOAD_PID=$!

step "a bad build: its tests and health check pass, but real traffic (?user=...) gets 500"
perl -0pi -e 's{(\s+return text\(200, \$self->revision)}{\n        return text(500, "bug: a user parameter crashes this build\\n") if \$target =~ /[?&]user=/;$1}' lib/WebApp.pm
git -c user.name=demo -c user.email=demo@bgci commit -qam "a bug only real traffic meets"
bgci build auto
BAD_SHA=$(bgci sha)
bgci test
bgci env create --sha "$BAD_SHA" --name bad
bgci smoke --env bad

step "bgci promote bad --analyze: live traffic is judged for 10 s, and the bad build rolls back by itself"
if bgci promote bad --analyze --window 10s --report "$WORK/auto-rollback.html"; then
  echo "unexpected: the bad build stayed live" >&2; exit 1
fi
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=
curl -fsS --noproxy '*' -H "Host: web-app.localhost" "http://127.0.0.1:$HTTP_PORT/" && echo "  <- live answers blue's sha again"
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
load = json.load(open(f"{work}/load-bad.json"))
print(f"requests {load['requests']}, failed {load['failed']} (all while the bad build was live: {load['failures']})")
PY
bgci status

echo
echo "demo done: blue $BLUE_SHA is live; green $GREEN_SHA ran and was rolled back by hand; the bad"
echo "build $BAD_SHA was rolled back by the analysis. Reports: $WORK/*.html (work dir $WORK)"
