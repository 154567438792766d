// `bgciTest(sha)`: `bgci test --sha SHA`, the app's suite inside its production image. The report is
// test-results/unit-SHA.xml (bgci writes one even when the suite wrote none or was killed); record it
// with `junit` in a `post { always {} }` so a red suite is still reported.
def call(String sha) {
    bgci("test --sha ${sha}")
}
