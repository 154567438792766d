// `bgciSmoke(name)`: `bgci smoke --env NAME`, bgci.toml's [[smoke]] checks against every instance of
// the environment and through its preview hostname. The report is test-results/smoke-SHA.xml; record
// it with `junit` in a `post { always {} }`.
def call(String name) {
    bgci("smoke --env ${name}")
}
