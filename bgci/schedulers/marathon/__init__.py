"""The Marathon backend: an environment is one Marathon app, `/<app>/<env>`, with N tasks.

Split as docker-py is; each module imports only the ones above it in this list:

- :mod:`.models`: typed readers of what Marathon answers (MarathonApp, MarathonTask, TaskFailure).
- :mod:`.definition`: the pure request bodies bgci sends (MarathonOptions, app_definition).
- :mod:`.client`: the transport, MarathonClient (one Session, URL failover, retries, bgci's errors).
- :mod:`.events`: the /v2/events stream, EventWatch (a trigger to re-read, never the truth).
- :mod:`.sandbox`: task logs from the Mesos agents' sandbox files (/state, /files/read).
- :mod:`.scheduler`: the policy, MarathonScheduler (what to send, ready or failed, deployment locks).
"""

from bgci.schedulers.marathon.client import MarathonClient
from bgci.schedulers.marathon.definition import MarathonOptions, app_definition, marathon_app_id
from bgci.schedulers.marathon.events import EventWatch
from bgci.schedulers.marathon.models import MarathonApp, MarathonTask, TaskFailure
from bgci.schedulers.marathon.scheduler import MarathonScheduler

__all__ = ["EventWatch", "MarathonApp", "MarathonClient", "MarathonOptions", "MarathonScheduler", "MarathonTask",
           "TaskFailure", "app_definition", "marathon_app_id"]
