"""The pure parts of the router and deployer: config text, address checks, state and prune rules.

No nginx runs here; tests/test_router_nginx.py feeds the same text to a real one.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bgci.config import Settings
from bgci.deployer import prunable
from bgci.errors import ConfigError, RouterError, UnsafeUpstream
from bgci.netaddr import listen_address
from bgci.router import site as site_module
from bgci.router.site import (
    Layout,
    Site,
    Upstream,
    render_include,
    render_live,
    render_main,
    render_preview,
    upstream_for,
    validate_address,
)
from bgci.schedulers.base import Environment, Instance
from bgci.state import RouterState, Switch

SHA_A = "a" * 40
SHA_B = "b" * 40


def settings(**nginx: object) -> Settings:
    base = Settings(app="web-app")
    return dataclasses.replace(base, nginx=dataclasses.replace(base.nginx, **nginx))


def site(**nginx: object) -> Site:
    return Site.from_settings(settings(**nginx))


def environment(name: str, *addresses: tuple[object, object], sha: str = SHA_A, created_at: str = "") -> Environment:
    instances = tuple(Instance(id=f"{name}.{i}", host=h, port=p, state="running", healthy=True)  # type: ignore[arg-type]
                      for i, (h, p) in enumerate(addresses, 1))
    return Environment(name=name, app="web-app", sha=sha, image="img", digest="", wanted_instances=len(instances),
                       created_at=created_at, created_by="t", scheduler="test", instances=instances)


# -- rendering ---------------------------------------------------------------------------------------
def test_live_block_routes_server_name_to_every_instance_and_names_the_env() -> None:
    text = render_live(site(), Upstream("blue", SHA_A, ("127.0.0.1:32768", "10.0.0.7:8000")))
    # The live upstream lists exactly the scheduler's instances: that is what nginx balances over.
    upstream = re.search(r"upstream bgci_web_app_live \{(.*?)\}", text, re.S)
    assert upstream is not None
    assert re.findall(r"server (\S+) ", upstream[1]) == ["127.0.0.1:32768", "10.0.0.7:8000"]
    # The live server block answers for server_name on the configured listen address.
    assert "server_name web-app.localhost;" in text
    assert "listen 127.0.0.1:8080;" in text
    # Every response (errors too: `always`) names the environment, and an app cannot forge it.
    assert "add_header X-Bgci-Environment blue always;" in text
    assert "proxy_hide_header X-Bgci-Environment;" in text
    # An instance that refuses a connection is skipped instead of failing the request.
    assert "proxy_next_upstream error timeout http_502 http_503" in text
    assert "proxy_pass http://bgci_web_app_live;" in text
    # The env name is on a marker line the router reads back (`live_env`, and to check a restore).
    assert text.splitlines()[1] == f"# served by: blue {SHA_A}"


def test_live_block_before_the_first_promote_answers_503() -> None:
    text = render_live(site(), None)
    # No upstream at all, so no request can reach an environment nobody promoted.
    assert "upstream" not in text and "proxy_pass" not in text
    assert "return 503" in text and "server_name web-app.localhost;" in text


def test_preview_block_uses_env_hostname_and_its_own_upstream() -> None:
    text = render_preview(site(preview_domain="preview.example.com"), Upstream("green-1", SHA_B, ("127.0.0.1:1",)))
    # Each preview has its own upstream name, so two previews (and live) never collide in one nginx.
    assert "upstream bgci_web_app_preview_green_1 {" in text
    assert "proxy_pass http://bgci_web_app_preview_green_1;" in text
    assert "server_name green-1.preview.example.com;" in text
    assert "add_header X-Bgci-Environment green-1 always;" in text


def test_env_header_name_comes_from_settings() -> None:
    text = render_live(site(env_header="X-Served-By"), Upstream("blue", SHA_A, ("127.0.0.1:1",)))
    # The configured header is the one added and hidden from upstream answers.
    assert "add_header X-Served-By blue always;" in text and "proxy_hide_header X-Served-By;" in text


def test_include_file_pulls_live_and_previews_and_catches_unknown_previews(tmp_path: Path) -> None:
    text = render_include(site(), tmp_path / "live.conf", tmp_path / "previews")
    # A system nginx includes only this file: it must bring in live and every preview.
    assert f'include "{tmp_path}/live.conf";' in text
    assert f'include "{tmp_path}/previews/*.conf";' in text
    # An unknown name under the preview domain is a 404, not the live app.
    assert "server_name .preview.localhost;" in text and "return 404" in text


def test_embedded_main_config_keeps_every_path_inside_the_prefix(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "nginx")
    text = render_main(site(), layout, layout.include_file)
    # A non-root nginx must not touch /var/log/nginx, /run or /var/lib/nginx: every path is under the prefix.
    paths = re.findall(r'"(/[^"]*)"', text)
    assert paths and all(p.startswith(str(layout.root)) for p in paths), paths
    for directive in ("pid", "error_log", "access_log", "client_body_temp_path", "proxy_temp_path",
                      "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"):
        assert re.search(rf"^\s*{directive} \"{re.escape(str(layout.root))}", text, re.M), directive
    # The user's own http-level includes are part of the whole config that nginx -t checks.
    assert f'include "{layout.user_dir}/*.conf";' in text


def test_optional_blocks_leave_no_line_behind_and_every_placeholder_is_filled(tmp_path: Path) -> None:
    """The nginx templates' only rules: `{{ name }}` is replaced once (a value is never scanned
    again), a placeholder alone on its line takes the line with it when empty, and a template
    asking for a value nobody gave fails rather than writing a config with a hole in it."""
    plain = dataclasses.replace(site(), requests_log="")
    logged = dataclasses.replace(plain, requests_log=str(tmp_path / "requests.log"))
    upstream = upstream_for(environment("blue", ("10.0.0.1", 8080), ("10.0.0.2", 8080)))
    with_log = render_live(logged, upstream).splitlines()
    without_log = render_live(plain, upstream).splitlines()
    log_lines = [line for line in with_log if line.startswith(("    set $bgci_", "    access_log"))]
    assert len(log_lines) == 4
    assert [line for line in with_log if line not in log_lines] == without_log
    assert "" not in without_log[without_log.index("server {"):without_log.index("    location / {") - 1]
    assert "{{" not in render_include(logged, tmp_path / "live.conf", tmp_path / "previews")
    with pytest.raises(KeyError):
        site_module._fill("upstream.conf", upstream_name="x")  # `servers` missing
    assert site_module._fill("upstream-server.conf", server="{{ server }}").strip() == (
        "server {{ server }} max_fails=3 fail_timeout=5s;")


def test_paths_nginx_would_misread_are_refused(tmp_path: Path) -> None:
    # A quote or a semicolon in nginx.dir would end the include directive early.
    with pytest.raises(ConfigError, match="misread"):
        render_include(site(), Path('/tmp/x";evil'), tmp_path)


# -- checks on what the scheduler reports ------------------------------------------------------------
@pytest.mark.parametrize(("host", "port", "expected"), [
    ("127.0.0.1", 32768, "127.0.0.1:32768"),
    ("::1", 8000, "[::1]:8000"),
    ("agent-3.mesos", 31000, "agent-3.mesos:31000"),
    ("Agent-3.Example.COM", 1, "agent-3.example.com:1"),
])
def test_valid_addresses_are_accepted_in_canonical_form(host: str, port: int, expected: str) -> None:
    # IPv4, IPv6 (bracketed for nginx) and DNS names are what real schedulers report.
    assert validate_address(host, port) == expected


@pytest.mark.parametrize("host", [
    "127.0.0.1;",
    "127.0.0.1; include /etc/passwd",
    "10.0.0.1}",
    "10.0.0.1\nserver evil:80",
    "10.0.0.1 backup",
    "include",
    "include.example.com",
    "a..b",
    "",
    "-leading-dash",
    "x" * 64,
    "127.0.0.1:80",
    "http://10.0.0.1",
])
def test_hosts_that_could_inject_config_are_refused(host: str) -> None:
    # Only an address may reach the upstream block: ; } newlines, spaces and directives are refused.
    with pytest.raises(UnsafeUpstream):
        validate_address(host, 8000)


@pytest.mark.parametrize("port", [0, 65536, -1, "8000", "8000; include x", True, None, 80.0])
def test_ports_must_be_integers_in_range(port: object) -> None:
    # A port is an int from the scheduler's JSON; strings (which could carry text) are refused.
    with pytest.raises(UnsafeUpstream):
        validate_address("127.0.0.1", port)


def test_upstream_for_validates_every_instance_and_the_name() -> None:
    # One bad instance among good ones refuses the whole environment: no partial upstream.
    with pytest.raises(UnsafeUpstream):
        upstream_for(environment("blue", ("127.0.0.1", 1), ("127.0.0.1;", 2)))
    # The env name becomes a header value and a server_name: it must be a DNS label.
    with pytest.raises(UnsafeUpstream):
        upstream_for(environment("Blue;x", ("127.0.0.1", 1)))
    with pytest.raises(RouterError, match="no instances"):
        upstream_for(environment("blue"))
    assert upstream_for(environment("blue", ("127.0.0.1", 1))).servers == ("127.0.0.1:1",)


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:80", ("127.0.0.1", 80)),
    ("*:80", ("127.0.0.1", 80)),
    ("[::]:8080", ("[::1]", 8080)),
])
def test_listen_address_is_where_verification_connects(listen: str, expected: tuple[str, int]) -> None:
    # Verification asks nginx itself; a wildcard listen is reached on loopback.
    assert listen_address(listen) == expected


@pytest.mark.parametrize("value", ["8080 default_server", "127.0.0.1:99999", "999.1.1.1:80", "host:80;", ""])
def test_bad_listen_values_are_config_errors(value: str) -> None:
    # listen is written into every server block: only a bare address is allowed.
    with pytest.raises(ConfigError):
        site(listen=value)


@pytest.mark.parametrize(("key", "value"), [("server_name", "web app"), ("preview_domain", "x;y")])
def test_bad_names_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        site(**{key: value})


# -- state and prune rules ---------------------------------------------------------------------------
def switch(env: str, action: str = "promote") -> Switch:
    return Switch(env=env, sha=SHA_A, action=action, at="2026-01-01T00:00:00+00:00", by="t")


def test_state_after_a_switch_keeps_the_old_live_as_previous() -> None:
    state = RouterState().after(switch("blue")).after(switch("green"))
    # Promote green over blue: blue is what rollback returns to.
    assert (state.live.env, state.previous.env) == ("green", "blue")  # type: ignore[union-attr]
    # Rollback swaps them, so a second rollback goes forward again.
    state = state.after(switch("blue", "rollback"))
    assert (state.live.env, state.previous.env) == ("blue", "green")  # type: ignore[union-attr]
    # Promoting the live env again (new instances) must not lose the previous one.
    state = state.after(switch("blue"))
    assert state.previous.env == "green"  # type: ignore[union-attr]
    assert [s.env for s in state.history] == ["blue", "green", "blue", "blue"]
    # The JSON form reads back to the same state.
    assert RouterState.from_dict(state.to_dict()) == state


def test_prune_keeps_live_previous_and_newest() -> None:
    envs = [environment(f"e{i}", ("127.0.0.1", 1), created_at=f"2026-01-0{i}T00:00:00Z") for i in range(1, 7)]
    state = RouterState(live=switch("e1"), previous=switch("e3"))
    # Newest two are e6, e5; live e1 and previous e3 are never destroyed; the rest go, oldest first.
    assert prunable(envs, state, keep=2) == ["e2", "e4"]
    assert prunable(envs, state, keep=0) == ["e2", "e4", "e5", "e6"]
    assert prunable(envs, RouterState(), keep=10) == []


def test_probe_each_keeps_order_bounds_threads_and_raises_after_all_ended() -> None:
    """The deployer's and local scheduler's probes: one result per instance in order, never more
    than `threads` at once, and an error only once no probe is still running (nothing left behind)."""
    import threading
    import time

    from bgci.probe import probe_each

    running, most, lock = 0, 0, threading.Lock()

    def probe(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        if item == 3:
            raise ValueError("instance 3")
        return item * 10

    assert probe_each(probe, [0, 1, 2], threads=2) == [0, 10, 20]
    assert most <= 2
    with pytest.raises(ValueError, match="instance 3"):
        probe_each(probe, list(range(8)), threads=4)
    assert running == 0
    assert probe_each(probe, []) == []
