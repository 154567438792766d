// `bgciPipeline(app: 'web-app')`: the whole pipeline of an app built with bgci, so that an app's
// Jenkinsfile is two lines: `@Library('bgci') _` and this call.
//
// Build, Test and Environment run on one router agent, in one workspace: the image, test-results/
// and the environment (the local scheduler runs it on that engine; its preview hostname goes into
// that router's nginx) are all there. Promote waits for a person outside any node (no executor is
// held while nobody answers), then switches on the router's node, under a lock on the app's live
// route. Milestones make sure an older build can never promote after a newer one.
//
// config:
//   app                  bgci.toml's app (required): names the lock "<app>-live"
//   dir                  where bgci.toml is, in the checkout (default '.')
//   routerLabel          label of the agent that runs the router (default: env ROUTER_LABEL, else 'bgci-router')
//   registry             registry host:port, as BGCI_REGISTRY (default: bgci.toml's, or the agent's BGCI_REGISTRY)
//   registryCredentials  id of a username/password credential for the registry (default 'bgci-registry';
//                        null: the agent's docker login)
//   promoters            who may answer the promote input: users or groups, comma-separated (default
//                        'bgci-promoters'; Jenkins administrators always may)
//   promoteBranch        only builds of this branch offer to promote (default 'main'; null: every branch;
//                        a job that is not multibranch has no BRANCH_NAME and always offers)
//   promoteTimeoutHours  how long the promote input waits before the build is aborted (default 24)
//   buildsToKeep         build records kept (default 30)
def call(Map config = [:]) {
    if (!config.app) {
        error "bgciPipeline: pass the app of bgci.toml, e.g. bgciPipeline(app: 'web-app')"
    }
    String app = config.app
    String appDir = config.dir ?: '.'
    String results = appDir == '.' ? 'test-results' : "${appDir}/test-results"
    String routerLabel = config.routerLabel ?: env.ROUTER_LABEL ?: 'bgci-router'
    String registry = config.registry ?: env.BGCI_REGISTRY ?: ''
    String registryCredentials = config.containsKey('registryCredentials') ? config.registryCredentials : 'bgci-registry'
    String promoters = config.promoters ?: 'bgci-promoters'
    String promoteBranch = config.containsKey('promoteBranch') ? config.promoteBranch : 'main'
    int promoteTimeoutHours = config.promoteTimeoutHours ?: 24
    int buildsToKeep = config.buildsToKeep ?: 30

    pipeline {
        agent none
        options {
            buildDiscarder(logRotator(numToKeepStr: "${buildsToKeep}"))
            disableConcurrentBuilds()
            timestamps()
        }
        environment {
            BGCI_REGISTRY = "${registry}"  // empty: bgci.toml's registry.url
        }
        stages {
            stage('Build, test, preview') {
                agent { label routerLabel }
                stages {
                    stage('Build') {
                        steps {
                            dir(appDir) {
                                script {
                                    env.BGCI_SHA = bgci.sha()
                                    bgciBuild(rev: env.BGCI_SHA, credentialsId: registryCredentials)
                                }
                            }
                        }
                    }
                    stage('Test') {
                        steps {
                            dir(appDir) { bgciTest(env.BGCI_SHA) }
                        }
                        post {
                            always { junit "${results}/unit-${env.BGCI_SHA}.xml" }
                        }
                    }
                    stage('Environment') {
                        steps {
                            dir(appDir) {
                                script {
                                    env.BGCI_ENV_NAME = bgciEnv(env.BGCI_SHA)
                                    String preview = bgciEnv.previewUrl(env.BGCI_ENV_NAME)
                                    currentBuild.description = preview ? "${env.BGCI_ENV_NAME}: ${preview}" : env.BGCI_ENV_NAME
                                    bgciSmoke(env.BGCI_ENV_NAME)
                                }
                            }
                            milestone(ordinal: 10, label: 'preview ready')
                        }
                        post {
                            always { junit "${results}/smoke-${env.BGCI_SHA}.xml" }
                        }
                    }
                }
            }
            stage('Promote') {
                agent none
                when {
                    beforeInput true
                    expression { !promoteBranch || env.BRANCH_NAME == null || env.BRANCH_NAME == promoteBranch }
                }
                options {
                    timeout(time: promoteTimeoutHours, unit: 'HOURS')
                }
                input {
                    message "Promote ${env.BGCI_ENV_NAME} to live?"
                    ok 'Promote'
                    submitter promoters
                    submitterParameter 'BUILD_USER_ID'  // bgci records who promoted from BUILD_USER_ID
                }
                steps {
                    milestone(ordinal: 20, label: 'promote approved')
                    lock(resource: "${app}-live", inversePrecedence: true) {
                        milestone(ordinal: 30, label: 'promote')
                        node(routerLabel) {
                            checkout scm
                            dir(appDir) { bgciPromote(env.BGCI_ENV_NAME) }
                        }
                    }
                }
            }
        }
    }
}
