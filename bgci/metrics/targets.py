"""The Prometheus file_sd target file: every instance of every environment, labelled app, env, sha, role.

Prometheus' file_sd_config reads a JSON list of `{"targets": ["host:port"...],
"labels": {...}}` groups and re-reads it when it changes; bgci replaces it
atomically, so Prometheus never reads half a file. One group per environment.
`role` is the environment's main role: live, previous, preview, or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bgci.files import write_atomic
from bgci.netaddr import join_host_port
from bgci.schedulers.base import Environment
from bgci.state import RouterState


def role_of(env: str, state: RouterState, previews: set[str]) -> str:
    if state.live is not None and state.live.env == env:
        return "live"
    if state.previous is not None and state.previous.env == env:
        return "previous"
    return "preview" if env in previews else "none"


def target_groups(app: str, environments: Iterable[Environment], state: RouterState,
                  previews: Iterable[str]) -> list[dict[str, Any]]:
    """The file's content (pure), sorted by environment name; environments with no address are left out."""
    previews = set(previews)
    groups = []
    for env in sorted(environments, key=lambda e: e.name):
        targets = sorted(join_host_port(i.host, i.port) for i in env.instances if i.host and i.port)
        if targets:
            groups.append({"targets": targets, "labels": {"app": app, "env": env.name, "sha": env.sha,
                                                          "role": role_of(env.name, state, previews)}})
    return groups


def write_targets(path: Path, groups: list[dict[str, Any]]) -> bool:
    """Replace the file when its content changes; True when it was written."""
    text = json.dumps(groups, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return True
