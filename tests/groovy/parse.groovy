// Compile (not run) Jenkins Groovy files the way Jenkins' CPS compiler first parses them:
// syntax errors and malformed annotations fail here. Jenkins provides @Library from the
// workflow-cps-global-lib plugin and imports it implicitly; a same-named stand-in does that here.
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.customizers.ImportCustomizer

def loader = new GroovyClassLoader()
loader.parseClass('''
package org.jenkinsci.plugins.workflow.libs
import java.lang.annotation.*
@Retention(RetentionPolicy.SOURCE) @interface Library { String[] value() }
''')
def config = new CompilerConfiguration()
config.addCompilationCustomizers(new ImportCustomizer().addImports('org.jenkinsci.plugins.workflow.libs.Library'))
def shell = new GroovyShell(loader, new Binding(), config)
args.each { path ->
    shell.parse(new File(path))
    println "parsed ${path}"
}
