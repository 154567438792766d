// `bgci 'build auto'`: run the bgci CLI on the agent, in the current directory (where the app's
// bgci.toml is, or below it). Credentials reach bgci through the environment (withCredentials),
// never on the command line.
def call(String arguments) {
    sh "bgci ${arguments}"
}

// `bgci.output('status --json')`: the same, returning what bgci printed on stdout, trimmed. Progress
// goes to stderr, so the build log still shows it.
String output(String arguments) {
    return sh(script: "bgci ${arguments}", returnStdout: true).trim()
}

// `bgci.sha()`: the full sha of the checked-out commit, as bgci tags images with it (refuses a dirty
// work tree: an image tag must name exactly what is inside).
String sha() {
    return output('sha')
}

// `bgci.jsonField(json, 'name')`: one non-empty string field of a JSON object printed by `bgci ... --json`.
// Read by the agent's python3, which is there wherever bgci is (bgci is a Python program), so no
// plugin is needed; the JSON travels in the environment, not through a file or the command line.
String jsonField(String json, String field) {
    withEnv(["BGCI_JSON=${json}", "BGCI_JSON_FIELD=${field}"]) {
        return sh(script: '''python3 -c 'import json, os, sys
field = os.environ["BGCI_JSON_FIELD"]
try:
    value = json.loads(os.environ["BGCI_JSON"]).get(field)
except (ValueError, AttributeError):
    value = None
if not isinstance(value, str) or not value:
    sys.exit("bgci --json printed no string field %r: %.200s" % (field, os.environ["BGCI_JSON"]))
print(value)'
''', returnStdout: true).trim()
    }
}
