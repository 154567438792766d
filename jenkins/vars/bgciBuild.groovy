// `bgciBuild(rev: sha, credentialsId: 'bgci-registry')`: `bgci build auto` (full, delta or nothing, as
// bgci's plan says), pushing when a registry is configured (bgci.toml or BGCI_REGISTRY). The registry
// login comes from a Jenkins username/password credential into BGCI_REGISTRY_USERNAME and
// BGCI_REGISTRY_PASSWORD, never onto the command line; without credentialsId, the agent's docker login.
def call(Map config = [:]) {
    String command = config.rev ? "build auto --rev ${config.rev}" : 'build auto'
    if (!config.credentialsId) {
        bgci(command)
        return
    }
    withCredentials([usernamePassword(credentialsId: config.credentialsId,
            usernameVariable: 'BGCI_REGISTRY_USERNAME', passwordVariable: 'BGCI_REGISTRY_PASSWORD')]) {
        bgci(command)
    }
}
