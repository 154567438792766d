"""What bgci writes for nginx: validated inputs, the config text (pure) and where the files live.

Layout, under ``[nginx] dir`` (all owned by bgci)::

    bgci.conf            include this from the http {} block of a system nginx
    live.conf            upstream + server block of ``server_name``: the live environment
    previews/<env>.conf  upstream + server block of ``<env>.<preview_domain>``
    conf.d/*.conf        yours: extra http-level directives (embedded mode includes them)
    nginx.conf, run/, logs/, tmp/   the embedded nginx (``bgci router start``)

Nothing a scheduler reports reaches the config text unchecked: hosts must be IP
addresses or DNS names, ports integers, environment names DNS labels.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.config import ENV_NAME_PATTERN
from bgci.errors import ConfigError, RouterError, UnsafeUpstream
from bgci.netaddr import join_host_port, listen_address

if TYPE_CHECKING:
    from bgci.config import Settings
    from bgci.schedulers.base import Environment

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@=,-]*$")  # no quotes, spaces, ; { } $ or newlines in include paths
# A name spelling an nginx directive is refused too: no real scheduler reports one, and
# refusing it keeps the rule simple to state.
DIRECTIVE_WORDS = {"include", "server", "upstream", "location", "return"}

SHA = re.compile(r"^(?:[0-9a-f]{7,64})?$")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "nginx"
# `{{ name }}`, or one alone on its line (group "line"): then an empty value removes the line.
PLACEHOLDER = re.compile(r"^\{\{ (?P<line>[a-z_]+) \}\}\n|\{\{ (?P<inline>[a-z_]+) \}\}", re.MULTILINE)


# -- validated inputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """The nginx settings that reach the config text, each checked once."""

    app: str
    listen: str
    server_name: str
    preview_domain: str
    env_header: str
    # One JSON line per request bgci's servers proxy (see templates/nginx/include-log-format.conf); "" logs none.
    requests_log: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Site:
        n = settings.nginx
        listen_address(n.listen)
        for key, value in (("server_name", n.server_name), ("preview_domain", n.preview_domain)):
            if not HOSTNAME.match(value) or len(value) > 253:
                raise ConfigError(f"nginx.{key}: {value!r} is not a host name")
        requests_log = str(_safe_path(Layout(settings.path(n.dir)).requests_log)) if n.requests_log else ""
        return cls(app=settings.app, listen=n.listen, server_name=n.server_name.lower(),
                   preview_domain=n.preview_domain.lower(), env_header=n.env_header, requests_log=requests_log)

    @property
    def log_format(self) -> str:
        """The name of this app's request log format (unique per app in a shared nginx)."""
        return "bgci_requests_" + re.sub(r"[^a-z0-9]", "_", self.app)

    def preview_host(self, env: str) -> str:
        return f"{env}.{self.preview_domain}"

    def upstream_name(self, env: str | None) -> str:
        """A name unique per app in a shared nginx: live, or one per preview."""
        app = re.sub(r"[^a-z0-9]", "_", self.app)
        return f"bgci_{app}_live" if env is None else f"bgci_{app}_preview_{env.replace('-', '_')}"


@dataclass(frozen=True)
class Upstream:
    """An environment as nginx sees it: its name, sha and validated `host:port` servers."""

    env: str
    sha: str
    servers: tuple[str, ...]


def validate_address(host: object, port: object) -> str:
    """`host:port` safe to write into an upstream block, or UnsafeUpstream naming what is wrong."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UnsafeUpstream(f"scheduler reported port {port!r}: not an integer in 1-65535")
    if not isinstance(host, str) or not host:
        raise UnsafeUpstream(f"scheduler reported host {host!r}: not a host name or IP address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return join_host_port(str(address), port)
    labels = host.lower().split(".")
    if not HOSTNAME.match(host) or len(host) > 253 or DIRECTIVE_WORDS.intersection(labels):
        raise UnsafeUpstream(f"scheduler reported host {host!r}: not a host name or IP address",
                             hint="refused so that nothing but an address can reach the nginx config")
    return join_host_port(host.lower(), port)


def validate_env_name(name: str) -> str:
    if not re.match(ENV_NAME_PATTERN, name or ""):
        raise UnsafeUpstream(f"environment name {name!r} is not a DNS label (a-z, 0-9, -)")
    return name


def upstream_for(env: Environment) -> Upstream:
    """The environment's instances as an upstream; every address validated, at least one instance."""
    validate_env_name(env.name)
    if not SHA.match(env.sha):  # it reaches the config (a comment, a variable): hex or nothing
        raise UnsafeUpstream(f"environment {env.name}: sha {env.sha[:80]!r} is not a git sha")
    servers = tuple(validate_address(i.host, i.port) for i in env.instances)
    if not servers:
        raise RouterError(f"environment {env.name} has no instances")
    return Upstream(env=env.name, sha=env.sha, servers=servers)


# -- pure rendering ---------------------------------------------------------------------------------
# The nginx files are filled from templates/nginx/*.conf: `{{ name }}` placeholders and nothing else.
# Composition (optional blocks, one line per server) is plain Python below. Not jinja2 (bgci's
# choice for HTML): `bgci promote` renders these in a new process, where importing jinja2 and
# compiling the templates cost ~45 ms before the switch; here it is a file read and two re.sub.
def render_live(site: Site, upstream: Upstream | None) -> str:
    """live.conf: the live upstream behind server_name, or a 503 until the first promote."""
    if upstream is None:
        return _fill("live-none.conf", app=site.app, listen=site.listen, server_name=site.server_name)
    return _fill("live.conf", **_environment_values(site, upstream, site.upstream_name(None), "live"),
                 server_name=site.server_name)


def render_preview(site: Site, upstream: Upstream) -> str:
    """previews/<env>.conf: the environment behind `<env>.<preview_domain>`."""
    return _fill("preview.conf", **_environment_values(site, upstream, site.upstream_name(upstream.env), "preview"),
                 preview_domain=site.preview_domain)


def render_include(site: Site, live_file: Path, previews_dir: Path) -> str:
    """bgci.conf: what the user's http {} block includes."""
    logged = bool(site.requests_log)
    return _fill("include.conf", app=site.app, listen=site.listen, preview_domain=site.preview_domain,
                 live_file=str(_safe_path(live_file)), previews_dir=str(_safe_path(previews_dir)),
                 log_format=_block("include-log-format.conf", log_format=site.log_format, app=site.app)
                 if logged else "",
                 log_variables=_block("include-log-variables.conf") if logged else "")


def render_main(site: Site, layout: Layout, include_file: Path) -> str:
    """nginx.conf of the embedded nginx: every path inside the prefix, nothing root-owned."""
    for path in (layout.root, include_file):
        _safe_path(path)
    return _fill("main.conf", app=site.app, listen=site.listen, include_file=str(include_file),
                 user_dir=str(layout.user_dir), pid_file=str(layout.pid_file), error_log=str(layout.error_log),
                 access_log=str(layout.access_log), tmp_dir=str(layout.tmp_dir))


def _environment_values(site: Site, upstream: Upstream, upstream_name: str, role: str) -> dict[str, str]:
    """What live.conf and a preview file share: the upstream block, the request log lines, the proxy block."""
    servers = "\n".join(_block("upstream-server.conf", server=server) for server in upstream.servers)
    requests_log = _block("requests-log.conf", env=upstream.env, sha=upstream.sha, role=role,
                          requests_log=site.requests_log, log_format=site.log_format) if site.requests_log else ""
    return {"app": site.app, "listen": site.listen, "env": upstream.env, "sha": upstream.sha,
            "upstream": _block("upstream.conf", upstream_name=upstream_name, servers=servers),
            "requests_log": requests_log,
            "proxy": _block("proxy.conf", upstream_name=upstream_name, env_header=site.env_header, env=upstream.env)}


def _fill(name: str, **values: str) -> str:
    """Template `name` with every `{{ key }}` replaced by values[key] (a missing key is a KeyError).

    A placeholder alone on its line takes the line with it when its value is empty, so an
    optional block leaves no blank line behind.
    """
    def value(match: re.Match[str]) -> str:
        if match["inline"]:
            return values[match["inline"]]
        line = values[match["line"]]
        return line + "\n" if line else ""

    return PLACEHOLDER.sub(value, _template(name))  # one pass: a value is never scanned for placeholders


def _block(name: str, **values: str) -> str:
    """A template filled for use inside another one: without its final newline."""
    return _fill(name, **values).removesuffix("\n")


@functools.cache
def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def served_by(text: str | None) -> str | None:
    """The environment a rendered live or preview file routes to (its marker line), or None."""
    match = re.search(r"^# served by: (\S+) ", text or "", re.MULTILINE)
    return match[1] if match else None


def _safe_path(path: Path) -> Path:
    if not SAFE_PATH.match(str(path)):
        raise ConfigError(f"nginx.dir: {str(path)!r} has characters nginx would misread",
                          hint="use letters, digits and . _ - / only")
    return path


# -- where the files live ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where bgci's nginx files live."""

    root: Path

    @property
    def include_file(self) -> Path:
        return self.root / "bgci.conf"

    @property
    def live_file(self) -> Path:
        return self.root / "live.conf"

    @property
    def previews_dir(self) -> Path:
        return self.root / "previews"

    @property
    def user_dir(self) -> Path:
        return self.root / "conf.d"

    @property
    def main_file(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "access.log"

    @property
    def requests_log(self) -> Path:
        """JSON lines, one per proxied request, naming the environment: what metrics and reports read."""
        return self.root / "logs" / "requests.log"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def lock_file(self) -> Path:
        return self.root / "bgci.lock"

    def preview_file(self, env: str) -> Path:
        return self.previews_dir / f"{validate_env_name(env)}.conf"

