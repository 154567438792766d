// Run a Jenkinsfile under Debian's groovy with every pipeline step stubbed, and write down what the
// pipeline did, in order, as JSON. What each stub stands for in Jenkins:
//
// - jenkins/vars/<name>.groovy becomes a global step `name` (workflow-cps-global-lib): one script
//   object per file, `name(...)` calls its `call(...)`, `name.method()` its other methods; the vars
//   and the Jenkinsfile share one binding (env, currentBuild, scm, params, the vars themselves).
// - Declarative (pipeline-model-definition): `pipeline {}` is collected into sections, then run in
//   Jenkins' order. Stage by stage: `when` with beforeOptions, options (timeout and lock wrap the
//   rest), `when` with beforeInput, the `input` directive (the rest of the stage runs inside it: it
//   only goes on once someone answers), `when` with beforeAgent, the stage's agent (a node and an
//   implicit `checkout scm`), `when`, environment, steps or nested stages, then post. A failed stage
//   skips the stages after it; post conditions run on the stage's and the build's result.
// - Steps record themselves. `sh` answers from the scenario's canned outputs (first regex that
//   matches), except `python3 ...`, which really runs, with the environment withEnv/withCredentials/
//   environment{} would give it. A non-zero exit fails the step as Jenkins' AbortException does.
// - Credentials become placeholders (stub-user-<id>, stub-secret-<id>), so a test can see whether a
//   secret value ever reached a command line; `input` answers from the scenario (proceed or abort);
//   `milestone` refuses an ordinal not above the previous one, as Jenkins does.
//
// Usage: groovy run_pipeline.groovy VARS_DIR SCENARIO_JSON LOG_JSON JENKINSFILE
// Scenario: {"env": {...}, "params": {...}, "input": {"answer": "proceed"|"abort", "by": "user"},
//            "sh": [{"match": "regex", "stdout": "...", "exit": 0}, ...]}
// Log: {"result": "SUCCESS"|"FAILURE"|"ABORTED", "error": "...", "events": [{"seq", "kind", "args",
//       "within": [{"kind", "args"}, ...]}, ...]}; `within` lists the enclosing blocks, outermost first.

import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.customizers.ImportCustomizer

/** A step failed (Jenkins: hudson.AbortException, e.g. "script returned exit code 1"). */
class StepFailed extends RuntimeException {
    StepFailed(String message) { super(message) }
}

/** The build was stopped (Jenkins: FlowInterruptedException, e.g. an input answered Abort). */
class Aborted extends RuntimeException {
    Aborted(String message) { super(message) }
}

/** The pipeline is not valid declarative (Jenkins refuses it before anything runs). */
class InvalidPipeline extends RuntimeException {
    InvalidPipeline(String message) { super(message) }
}

/** What `credentials('id')` gives in an environment directive. */
class CredentialRef {
    String id
}

/** Records every call, keeps the block nesting, the environment layers, and answers sh and input. */
class Recorder {
    List<Map> events = []
    List<Map> stack = []
    Map<String, String> globalEnv = [:]
    List<Map<String, String>> layers = []
    Map scenario
    String result = 'SUCCESS'
    Integer lastMilestone = null

    static Object plain(Object value) {
        if (value == null || value instanceof Number || value instanceof Boolean) return value
        if (value instanceof Map) return value.collectEntries { k, v -> [(k.toString()): plain(v)] }
        if (value instanceof Collection || value instanceof Object[]) return value.collect { plain(it) }
        if (value instanceof Closure) return '<closure>'
        if (value instanceof CredentialRef) return "credentials(${value.id})".toString()
        return value.toString()
    }

    Map record(String kind, Map args = [:]) {
        Map event = [seq: events.size(), kind: kind, args: plain(args), within: stack.collect { it }]
        events << event
        return event
    }

    def block(String kind, Map args, Closure body) {
        record(kind, args)
        stack << [kind: kind, args: plain(args)]
        try {
            return body()
        } finally {
            stack.remove(stack.size() - 1)
        }
    }

    boolean inside(String kind) { stack.any { it.kind == kind } }

    Map<String, String> environment() {
        Map<String, String> merged = new LinkedHashMap(globalEnv)
        layers.each { merged.putAll(it) }
        return merged
    }

    def withLayer(Map<String, String> layer, Closure body) {
        layers << layer
        try {
            return body()
        } finally {
            layers.remove(layers.size() - 1)
        }
    }

    Object sh(Map args) {
        String script = args.script.toString()
        Map<String, String> env = environment()
        Map event = record('sh', [script: script, returnStdout: args.returnStdout ?: false,
                                  returnStatus: args.returnStatus ?: false,
                                  credentials: env.keySet().findAll { env[it].startsWith('stub-') }.sort(),
                                  env: env.collectEntries { k, v -> [(k): v.startsWith('stub-') ? '****' : v] }])
        Map answer = script =~ /^\s*python3\b/ ? run(script, env) : canned(script)
        event.exit = answer.exit
        if (answer.stdout) event.stdout = answer.stdout
        if (answer.stderr) event.stderr = answer.stderr
        if (args.returnStatus) return answer.exit
        if (answer.exit != 0) throw new StepFailed("script returned exit code ${answer.exit}: ${script}")
        return args.returnStdout ? answer.stdout : null
    }

    Map canned(String script) {
        Map rule = (scenario.sh ?: []).find { script =~ it.match }
        return [exit: rule?.exit ?: 0, stdout: rule?.stdout ?: '']
    }

    static Map run(String script, Map<String, String> env) {
        ProcessBuilder builder = new ProcessBuilder('/bin/sh', '-c', script)
        builder.environment().clear()
        builder.environment().put('PATH', System.getenv('PATH'))
        builder.environment().putAll(env)
        Process process = builder.start()
        process.outputStream.close()
        def out = new StringBuffer(), err = new StringBuffer()
        // One call that reads both streams into the buffers and joins its reader threads. (consumeProcessOutput
        // followed by a bare waitForProcessOutput() starts a second pair of readers that throw data away, so
        // stderr sometimes came back empty.)
        process.waitForProcessOutput(out, err)
        int exit = process.waitFor()
        return [exit: exit, stdout: out.toString(), stderr: err.toString()]
    }

    /** The answer a person gives to an input (directive or step); abort stops the build. */
    String answer(Map input) {
        Map given = scenario.input ?: [answer: 'proceed', by: 'approver']
        if (given.answer != 'proceed') {
            record('input.aborted', [by: given.by])
            throw new Aborted("Rejected by ${given.by}: ${input.message}")
        }
        record('input.proceeded', [by: given.by])
        return given.by
    }
}

/** The environment object `env`: unset names are null; assignments change the build's environment. */
class EnvVars extends GroovyObjectSupport {
    Recorder recorder

    Object getProperty(String name) { recorder.environment()[name] }

    void setProperty(String name, Object value) {
        recorder.record('env.set', [name: name, value: value])
        recorder.globalEnv[name] = value?.toString()
    }
}

/** `currentBuild`: description, displayName and result are recorded when set. */
class CurrentBuild extends GroovyObjectSupport {
    Recorder recorder
    Map<String, Object> fields = [number: 42, description: null, displayName: '#42', result: null]

    Object getProperty(String name) {
        if (name == 'currentResult') return recorder.result
        if (!fields.containsKey(name)) throw new MissingPropertyException(name, CurrentBuild)
        return fields[name]
    }

    void setProperty(String name, Object value) {
        recorder.record('currentBuild', [field: name, value: value])
        fields[name] = value?.toString()
    }
}

/** The base class of the Jenkinsfile and of every vars/ script: the pipeline steps. */
abstract class PipelineScript extends Script {
    static Recorder R  // closures below name it PipelineScript.R: a vars script cannot see it as R

    def pipeline(Closure body) { new Declarative(R).run(body) }

    def sh(Object script) { PipelineScript.R.sh([script: script]) }

    def sh(Map args) { PipelineScript.R.sh(args) }

    def echo(Object message) { PipelineScript.R.record('echo', [message: message]) }

    def error(Object message) {
        R.record('error', [message: message])
        throw new StepFailed(message.toString())
    }

    def junit(Object pattern) { PipelineScript.R.record('junit', [testResults: pattern]) }

    def junit(Map args) { PipelineScript.R.record('junit', args) }

    def checkout(Object scm) { PipelineScript.R.record('checkout', [scm: scm]) }

    def script(Closure body) { Declarative.runSteps(body) }

    def dir(Object path, Closure body) { PipelineScript.R.block('dir', [path: path], body) }

    def withEnv(List pairs, Closure body) {
        Map<String, String> layer = pairs.collectEntries { String pair = it.toString(); int at = pair.indexOf('=')
            [(pair.substring(0, at)): pair.substring(at + 1)] }
        R.block('withEnv', [names: layer.keySet().toList()]) { PipelineScript.R.withLayer(layer, body) }
    }

    def usernamePassword(Map args) { [type: 'usernamePassword'] + args }

    def string(Map args) { [type: 'string'] + args }

    def withCredentials(List bindings, Closure body) {
        Map<String, String> layer = [:]
        bindings.each { Map b ->
            if (b.type == 'usernamePassword') {
                layer[b.usernameVariable] = "stub-user-${b.credentialsId}".toString()
                layer[b.passwordVariable] = "stub-secret-${b.credentialsId}".toString()
            } else {
                layer[b.variable] = "stub-secret-${b.credentialsId}".toString()
            }
        }
        R.block('withCredentials', [bindings: bindings]) { PipelineScript.R.withLayer(layer, body) }
    }

    def timeout(Map args, Closure body) { PipelineScript.R.block('timeout', args, body) }

    def timeout(Integer minutes, Closure body) { timeout([time: minutes, unit: 'MINUTES'], body) }

    def milestone(Map args = [:]) {
        Integer ordinal = args.ordinal as Integer
        if (ordinal != null && R.lastMilestone != null && ordinal <= R.lastMilestone) {
            throw new StepFailed("Invalid ordinal ${ordinal}, as the previous one was ${R.lastMilestone}")
        }
        R.lastMilestone = ordinal ?: (R.lastMilestone ?: 0) + 1
        R.record('milestone', args + [ordinal: R.lastMilestone])
    }

    def milestone(Integer ordinal) { milestone([ordinal: ordinal]) }

    def lock(Map args, Closure body) { PipelineScript.R.block('lock', args, body) }

    def lock(Object resource, Closure body) { lock([resource: resource], body) }

    def node(Object label, Closure body) { Declarative.onNode(R, label?.toString(), body) }

    def node(Closure body) { node(null, body) }

    def input(Map args) {
        R.block('input', args + [directive: false]) { PipelineScript.R.answer(args) }
    }

    def input(Object message) { input([message: message]) }

    // `name(...)` of a vars/ script reaches its call(...) through Groovy's own fallback for a script
    // (a binding variable named like the method is called with `call`), as Jenkins does; anything
    // else is not a step.
    def methodMissing(String name, Object args) {
        throw new MissingMethodException(name, getClass(), args as Object[])  // Jenkins: No such DSL method
    }
}

// -- declarative sections: each collects what its closure declares ----------------------------------
class Sections {
    static Object collect(Object spec, Closure body) {
        Closure copy = body.rehydrate(spec, body.owner, body.thisObject)
        copy.resolveStrategy = Closure.DELEGATE_FIRST
        copy.call()
        return spec
    }
}

class AgentSpec {
    Map agent = [type: 'any']

    def label(Object label) { agent = [type: 'label', label: label.toString()] }

    def node(Closure body) { Sections.collect(this, body) }

    def docker(Object image) { agent = [type: 'docker', image: image.toString()] }

    def customWorkspace(Object path) { agent.customWorkspace = path.toString() }
}

class OptionsSpec {
    static final List<String> KNOWN = ['buildDiscarder', 'checkoutToSubdirectory', 'disableConcurrentBuilds',
        'disableResume', 'durabilityHint', 'lock', 'newContainerPerStage', 'overrideIndexTriggers',
        'parallelsAlwaysFailFast', 'preserveStashes', 'quietPeriod', 'retry', 'skipDefaultCheckout',
        'skipStagesAfterUnstable', 'timeout', 'timestamps', 'ansiColor']
    List<Map> items = []

    def logRotator(Map args) { [logRotator: args] }

    def methodMissing(String name, Object args) {
        if (!(name in KNOWN)) throw new InvalidPipeline("Invalid option type \"${name}\"")
        List list = (args as Object[]).toList()
        Map item = [name: name, args: list.size() == 1 && list[0] instanceof Map ? list[0] : list]
        items << item
        return item
    }
}

class EnvironmentSpec {
    Map<String, Object> values = [:]

    def credentials(Object id) { new CredentialRef(id: id.toString()) }

    def propertyMissing(String name, Object value) { values[name] = value }
}

class InputSpec {
    Map fields = [:]

    def message(Object value) { fields.message = value.toString() }

    def ok(Object value) { fields.ok = value.toString() }

    def submitter(Object value) { fields.submitter = value?.toString() }

    def submitterParameter(Object value) { fields.submitterParameter = value.toString() }

    def id(Object value) { fields.id = value.toString() }

    def parameters(Closure body) { fields.parameters = '<parameters>' }
}

class WhenSpec {
    Map flags = [beforeAgent: false, beforeInput: false, beforeOptions: false]
    List<Map> conditions = []

    def beforeAgent(boolean value) { flags.beforeAgent = value }

    def beforeInput(boolean value) { flags.beforeInput = value }

    def beforeOptions(boolean value) { flags.beforeOptions = value }

    def branch(Object pattern) { conditions << [branch: pattern.toString()] }

    def expression(Closure body) { conditions << [expression: body] }

    def environment(Map args) { conditions << [environment: args] }

    String when() { flags.beforeOptions ? 'beforeOptions' : flags.beforeInput ? 'beforeInput'
                    : flags.beforeAgent ? 'beforeAgent' : 'afterAgent' }

    boolean holds(Recorder recorder) {
        Map<String, String> env = recorder.environment()
        conditions.every { Map c ->
            if (c.branch) return env.BRANCH_NAME != null && env.BRANCH_NAME ==~ c.branch.replace('*', '.*')
            if (c.environment) return env[c.environment.name] == c.environment.value?.toString()
            return Declarative.runSteps(c.expression) as boolean
        }
    }
}

class PostSpec {
    static final List<String> ORDER = ['always', 'changed', 'fixed', 'regression', 'aborted', 'failure',
                                       'success', 'unstable', 'unsuccessful', 'cleanup']
    Map<String, Closure> conditions = [:]

    def methodMissing(String name, Object args) {
        if (!(name in ORDER)) throw new InvalidPipeline("Invalid condition \"${name}\"")
        conditions[name] = (args as Object[])[0] as Closure
    }
}

class StagesSpec {
    List<Map> stages = []  // name and body: a stage is collected when it runs, as Jenkins evaluates it then

    def stage(Object name, Closure body) { stages << [name: name.toString(), body: body] }
}

/** The sections a pipeline or a stage may declare. */
class SectionSpec {
    Map agent = null
    List<Map> options = []
    Map<String, Object> environment = [:]
    Closure steps = null
    List<Map> stages = null
    Map<String, Closure> post = [:]
    Map input = null
    WhenSpec when = null
    String name

    Map getNone() { [type: 'none'] }

    Map getAny() { [type: 'any'] }

    def agent(Map agent) { this.agent = agent }

    def agent(Closure body) { this.agent = ((AgentSpec) Sections.collect(new AgentSpec(), body)).agent }

    def options(Closure body) { options = ((OptionsSpec) Sections.collect(new OptionsSpec(), body)).items }

    def environment(Closure body) { environment = ((EnvironmentSpec) Sections.collect(new EnvironmentSpec(), body)).values }

    def stages(Closure body) { stages = ((StagesSpec) Sections.collect(new StagesSpec(), body)).stages }

    def steps(Closure body) { steps = body }

    def post(Closure body) { post = ((PostSpec) Sections.collect(new PostSpec(), body)).conditions }

    def input(Closure body) { input = ((InputSpec) Sections.collect(new InputSpec(), body)).fields }

    def when(Closure body) { when = (WhenSpec) Sections.collect(new WhenSpec(), body) }

    def parameters(Closure body) {}

    def triggers(Closure body) {}
}

/** Runs a collected pipeline in Jenkins' order (see the header of this file). */
class Declarative {
    Recorder R

    Declarative(Recorder recorder) { R = recorder }

    static Object runSteps(Closure body) {
        Closure copy = body.rehydrate(body.thisObject, body.thisObject, body.thisObject)
        copy.resolveStrategy = Closure.OWNER_FIRST
        return copy.call()
    }

    static Object onNode(Recorder R, String label, Closure body) {
        R.block('node', [label: label]) {
            R.withLayer([NODE_NAME: label ?: 'built-in', WORKSPACE: "/ws/${label ?: 'any'}".toString()], body)
        }
    }

    void run(Closure body) {
        SectionSpec spec = (SectionSpec) Sections.collect(new SectionSpec(name: 'pipeline'), body)
        if (spec.agent == null) throw new InvalidPipeline('Missing required section "agent"')
        if (spec.stages == null) throw new InvalidPipeline('Missing required section "stages"')
        R.block('pipeline', [:]) {
            R.record('options', [scope: 'pipeline', items: spec.options])
            withOptions(spec.options) {
                withEnvironment(spec.environment) {
                    withAgent(spec.agent) {
                        runStages(spec.stages)
                        runPost(spec.post, R.result)
                    }
                }
            }
        }
    }

    void runStages(List<Map> stages) {
        stages.each { Map stage ->
            if (R.result != 'SUCCESS') {
                R.record('stage', [name: stage.name, skipped: 'earlier failure'])
                return
            }
            SectionSpec spec = (SectionSpec) Sections.collect(new SectionSpec(name: stage.name), stage.body)
            if ([spec.steps != null, spec.stages != null].count(true) != 1) {
                throw new InvalidPipeline("stage ${stage.name}: exactly one of steps or stages")
            }
            R.block('stage', [name: stage.name]) { runStage(spec) }
        }
    }

    void runStage(SectionSpec spec) {
        if (!whenHolds(spec, 'beforeOptions')) return
        if (spec.options) R.record('options', [scope: 'stage', items: spec.options])
        withOptions(spec.options) {
            if (!whenHolds(spec, 'beforeInput')) return
            withInput(spec.input) {
                if (!whenHolds(spec, 'beforeAgent')) return
                withAgent(spec.agent) {
                    if (!whenHolds(spec, 'afterAgent')) return
                    withEnvironment(spec.environment) {
                        String status = 'SUCCESS'
                        try {
                            spec.steps != null ? runSteps(spec.steps) : runStages(spec.stages)
                            if (R.result != 'SUCCESS') status = R.result
                        } catch (StepFailed | MissingMethodException | MissingPropertyException e) {
                            status = fail('FAILURE', e)
                        } catch (Aborted e) {
                            status = fail('ABORTED', e)
                        }
                        runPost(spec.post, status)
                    }
                }
            }
        }
    }

    String fail(String status, Throwable e) {
        R.record('failed', [status: status, message: e.message])
        if (R.result == 'SUCCESS' || status == 'FAILURE') R.result = status
        return status
    }

    boolean whenHolds(SectionSpec spec, String point) {
        if (spec.when == null || spec.when.when() != point) return true
        boolean holds = spec.when.holds(R)
        R.record('when', [point: point, holds: holds])
        if (!holds) R.record('stage.skipped', [name: spec.name, reason: 'when'])
        return holds
    }

    void withOptions(List<Map> options, Closure body) {
        List<Map> wrappers = options.findAll { it.name in ['timeout', 'lock'] }
        Closure wrapped = wrappers.reverse().inject(body) { Closure inner, Map option ->
            Map args = option.args instanceof Map ? option.args : [resource: option.args[0]]
            return { -> R.block(option.name, args + [option: true], inner) }
        }
        wrapped.call()
    }

    void withInput(Map input, Closure body) {
        if (input == null) {
            body.call()
            return
        }
        if (!input.message) throw new InvalidPipeline('input: missing "message"')
        Map args = input + [directive: true]
        R.block('input', args) {
            String by = R.answer(input)
            Map<String, String> layer = input.submitterParameter ? [(input.submitterParameter): by] : [:]
            R.withLayer(layer, body)
        }
    }

    void withAgent(Map agent, Closure body) {
        if (agent == null || agent.type == 'none') {
            body.call()
            return
        }
        onNode(R, agent.label, {
            R.record('checkout', [scm: 'scm', implicit: true])  // declarative's default checkout
            body.call()
        })
    }

    void withEnvironment(Map<String, Object> values, Closure body) {
        Map<String, String> layer = [:]
        values.each { String name, Object value ->
            if (value instanceof CredentialRef) {
                R.record('credentials', [variable: name, credentialsId: value.id])
                layer[name] = "stub-secret-${value.id}".toString()
            } else {
                layer[name] = value?.toString()
            }
        }
        R.withLayer(layer, body)
    }

    void runPost(Map<String, Closure> post, String status) {
        PostSpec.ORDER.each { String condition ->
            Closure body = post[condition]
            boolean applies = condition in ['always', 'cleanup'] ||
                    (condition == 'success' && status == 'SUCCESS') ||
                    (condition == 'failure' && status == 'FAILURE') ||
                    (condition == 'aborted' && status == 'ABORTED') ||
                    (condition == 'unsuccessful' && status != 'SUCCESS')
            if (body != null && applies) {
                R.block('post', [condition: condition]) { runSteps(body) }
            }
        }
    }
}

// -- main ---------------------------------------------------------------------------------------------
if (args.length != 4) {
    System.err.println('usage: run_pipeline.groovy VARS_DIR SCENARIO_JSON LOG_JSON JENKINSFILE')
    System.exit(2)
}
File varsDir = new File(args[0])
Map scenario = new JsonSlurper().parse(new File(args[1])) as Map
File log = new File(args[2])
File jenkinsfile = new File(args[3])

// Jenkins provides @Library (workflow-cps-global-lib) and imports it implicitly: a same-named stand-in.
def loader = new GroovyClassLoader(this.class.classLoader)
loader.parseClass('''
package org.jenkinsci.plugins.workflow.libs
import java.lang.annotation.*
@Retention(RetentionPolicy.SOURCE) @interface Library { String[] value() }
''')
def config = new CompilerConfiguration()
config.scriptBaseClass = PipelineScript.name
config.addCompilationCustomizers(new ImportCustomizer().addImports('org.jenkinsci.plugins.workflow.libs.Library'))

Recorder recorder = new Recorder(scenario: scenario)
recorder.globalEnv.putAll([BUILD_NUMBER: '42', BUILD_URL: 'https://jenkins.example/job/web-app/42/',
                           JOB_NAME: 'web-app'])
(scenario.env ?: [:]).each { k, v -> recorder.globalEnv[k] = v?.toString() }
PipelineScript.R = recorder

Binding binding = new Binding()
binding.setVariable('env', new EnvVars(recorder: recorder))
binding.setVariable('currentBuild', new CurrentBuild(recorder: recorder))
binding.setVariable('params', scenario.params ?: [:])
binding.setVariable('scm', 'scm')
def shell = new GroovyShell(loader, binding, config)
varsDir.listFiles().findAll { it.name.endsWith('.groovy') }.sort { it.name }.each { File file ->
    String name = file.name[0..-8]
    binding.setVariable(name, shell.parse(file.text, name))
}

String error = null
try {
    shell.parse(jenkinsfile).run()
} catch (InvalidPipeline e) {
    recorder.result = 'INVALID'
    error = e.message
} catch (StepFailed | MissingMethodException | MissingPropertyException e) {
    recorder.result = 'FAILURE'
    error = e.message
} catch (Aborted e) {
    recorder.result = 'ABORTED'
    error = e.message
}
log.text = JsonOutput.prettyPrint(JsonOutput.toJson([result: recorder.result, error: error, events: recorder.events]))
println "${recorder.result}: ${recorder.events.size()} events"
