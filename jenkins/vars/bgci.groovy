// Shared-library step: `bgci 'build auto'` runs the bgci CLI on the agent, from the app's directory.
// Credentials reach bgci through the environment (withCredentials), never on the command line.
def call(String arguments) {
    sh "bgci ${arguments}"
}

// The sha of the checked-out commit, as bgci tags images with it.
def sha() {
    return sh(script: 'bgci sha', returnStdout: true).trim()
}
