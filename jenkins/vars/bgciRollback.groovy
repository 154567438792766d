// `bgciRollback()`: `bgci rollback`: make the previous environment live again (it must still run and
// be healthy). Like bgciPromote: on the router's node, inside lock(resource: '<app>-live').
def call() {
    bgci('rollback')
}
