"""Metrics: what bgci measures about environments and deploys, and the analysis gate built on it.

    prometheus.py  PrometheusClient (HTTP API on one Session) and typed readers of its answers
    analysis.py    the figures of an environment over a window, and the pure verdict on them
    exporter.py    `bgci exporter`: request metrics from nginx's requests.log, deploy series
    events.py      the durable log of deploy events (create, destroy, promote, rollback, auto-rollback)
    targets.py     the Prometheus file_sd target file of every instance
    graphite.py    deploy events to carbon's plaintext protocol
"""
