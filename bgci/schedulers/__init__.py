"""Scheduler backends: the local Docker engine (default, one host) and Marathon (clusters).

Both implement :class:`bgci.schedulers.base.Scheduler`; :func:`get_scheduler`
picks one from the settings (or an explicit name) and imports only that one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bgci.errors import ConfigError

if TYPE_CHECKING:  # the interface lives in bgci.schedulers.base; `bgci test` (the CLI's options) needs only the names
    from bgci.config import Settings
    from bgci.schedulers.base import Scheduler

__all__ = ["BACKENDS", "get_scheduler"]

# name -> "module:class"; each class is built as Class.from_settings(settings, force=force)
BACKENDS = {
    "local": "bgci.schedulers.local:LocalScheduler",
    "marathon": "bgci.schedulers.marathon:MarathonScheduler",
}


def get_scheduler(settings: Settings, name: str | None = None, *, force: bool = False) -> Scheduler:
    """The backend `name` (default: deploy.scheduler in bgci.toml), configured from the settings.

    `force`: override a deployment that locks an environment (Marathon's ?force=true) instead of waiting;
    backends without locks (local) accept and ignore it.
    """
    name = name or settings.deploy.scheduler
    if name not in BACKENDS:
        raise ConfigError(f"scheduler {name!r}: unknown (allowed: {', '.join(BACKENDS)})", option="scheduler")
    module_name, class_name = BACKENDS[name].split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    return backend.from_settings(settings, force=force)
