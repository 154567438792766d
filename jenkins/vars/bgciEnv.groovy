// `def name = bgciEnv(sha)`: `bgci env create --sha SHA --json` (N instances, healthy, then a preview
// hostname) and the environment's name as bgci reports it: the field `name` of that JSON, never
// rebuilt here from the sha (bgci.toml's app, --name or a later naming rule may differ).
String call(String sha) {
    return bgci.jsonField(bgci.output("env create --sha ${sha} --json"), 'name')
}

// `bgciEnv.previewUrl(name)`: http://<preview host> of environment NAME, from `bgci status --json`,
// or '' when it has none (no preview routed, e.g. nginx not running).
String previewUrl(String name) {
    withEnv(["BGCI_JSON=${bgci.output('status --json')}", "BGCI_ENV_NAME=${name}"]) {
        return sh(script: '''python3 -c 'import json, os
status = json.loads(os.environ["BGCI_JSON"])
hosts = [e.get("preview_host") for e in status.get("environments", []) if e.get("name") == os.environ["BGCI_ENV_NAME"]]
print("http://" + hosts[0] if hosts and hosts[0] else "")'
''', returnStdout: true).trim()
    }
}
