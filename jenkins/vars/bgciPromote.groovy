// `bgciPromote(name)`: `bgci promote NAME`: make the environment live (every instance healthy now,
// nginx tested, switched, reloaded, verified; the previous files restored on any failure). Run it on
// the router's node and inside lock(resource: '<app>-live'), as bgciPipeline does, so no two Jenkins
// builds switch the same app at once.
def call(String name) {
    bgci("promote ${name}")
}
