"""bgci.toml validation: every problem at once, each naming file, key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgci.config import load_settings
from bgci.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bgci.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'app = "web-app"\n'), environ={})
    assert settings.app == "web-app"
    assert settings.image_repository == "web-app"  # no registry: images stay local
    assert settings.build.app_dir == "/app"
    assert settings.deploy.scheduler == "local"
    assert settings.project_dir == tmp_path.resolve()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
app = "Web App"
colour = "blue"
[build]
layer_budget = 500
max_age_hours = "daily"
[deploy]
scheduler = "kubernetes"
instances = 0
[[smoke]]
path = "health"
""")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    problems = caught.value.problems
    text = str(caught.value)
    assert str(path) in text.splitlines()[0]
    expected = {
        "colour: unknown key": "allowed: app, build",
        "app: 'Web App' is not allowed": "lower-case letters",
        "build.layer_budget: 500 is above the maximum 127": "",
        "build.max_age_hours: expected float, got a string": "",
        "deploy.scheduler: 'kubernetes' is not allowed": "allowed: local, marathon",
        "deploy.instances: 0 is below the minimum 1": "",
        "smoke[0].name: required": "",
        "smoke[0].path: 'health' is not allowed": "a path starting with /",
    }
    for fragment, allowed in expected.items():
        line = next((p for p in problems if fragment in p), None)
        assert line is not None, f"{fragment!r} not reported in {problems}"
        assert line.startswith("bgci.toml: ")  # each line names the file
        assert allowed in line
    assert len(problems) == len(expected)


def test_invalid_toml_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "app = \n"), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "bgci.toml", environ={})


def test_environment_overrides_registry_and_carries_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("hunter2\n")
    settings = load_settings(write(tmp_path, 'app = "web-app"\n[registry]\nurl = "file.example:5000"\n'), environ={
        "BGCI_REGISTRY": "127.0.0.1:5000",
        "BGCI_REGISTRY_USERNAME": "ci",
        "BGCI_REGISTRY_PASSWORD_FILE": str(secret_file),
    })
    assert settings.registry.url == "127.0.0.1:5000"  # the environment wins over the file
    assert settings.image_repository == "127.0.0.1:5000/web-app"
    assert settings.registry_credentials.password == "hunter2"
    assert "hunter2" not in repr(settings)  # secrets never show in reprs, logs or errors


def test_unreadable_secret_file_names_the_variable_not_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BGCI_REGISTRY_PASSWORD_FILE: cannot read"):
        load_settings(write(tmp_path, 'app = "web-app"\n'),
                      environ={"BGCI_REGISTRY_PASSWORD_FILE": str(tmp_path / "missing")})


def test_command_may_be_one_string(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'app = "a"\n[test]\ncommand = "prove -l t/"\n'), environ={})
    assert settings.test.command == ["prove", "-l", "t/"]


def test_log_driver_options_and_the_agent_port(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """app = "web-app"
[deploy]
log_driver = "fluentd"
log_options = { "fluentd-address" = "127.0.0.1:24224", tag = "web.{{.Name}}" }
[deploy.marathon]
agent_port = 5052
"""), environ={})
    assert settings.deploy.log_driver == "fluentd"
    assert settings.deploy.log_options == {"fluentd-address": "127.0.0.1:24224", "tag": "web.{{.Name}}"}
    assert settings.deploy.marathon.agent_port == 5052
    defaults = load_settings(write(tmp_path, 'app = "web-app"\n'), environ={})
    # Unset: the engine's default driver, and Mesos' agent port.
    assert (defaults.deploy.log_driver, defaults.deploy.log_options, defaults.deploy.marathon.agent_port) == (
        "", {}, 5051)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, """app = "web-app"
[deploy]
log_driver = "json file"
log_options = { max-size = 10 }
[deploy.marathon]
agent_port = 0
"""), environ={})
    problems = "\n".join(caught.value.problems)
    assert "deploy.log_driver: 'json file' is not allowed (allowed: a Docker log driver name" in problems
    assert "deploy.log_options: expected a table of strings" in problems
    assert "deploy.marathon.agent_port: 0 is below the minimum 1" in problems
