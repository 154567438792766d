"""One health probe, used wherever bgci asks an instance "are you healthy now?".

Probes go straight to the instance (or to bgci's own nginx): never through an
HTTP proxy from the environment (Jenkins agents often set http_proxy, and a
proxy cannot reach loopback or cluster-internal addresses), never with .netrc
credentials, never retried by urllib3 (the caller's poll loop is the retry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

PROBE_TIMEOUT = (1.0, 2.0)  # connect, read: loopback and cluster networks answer in milliseconds
POOL_SIZE = 16


def direct_session(pool_size: int = POOL_SIZE) -> requests.Session:
    """A requests Session that ignores proxy variables and .netrc (trust_env off), without retries."""
    import requests

    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def http_host(host: str) -> str:
    """A host as it goes into a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_health(session: requests.Session, host: str, port: int, path: str, *,
                 timeout: tuple[float, float] = PROBE_TIMEOUT) -> str:
    """'' when http://host:port/path answers 2xx now, else what is wrong (one short phrase).

    A new connection each time (Connection: close): "healthy now" includes accepting one.
    """
    import requests

    try:
        response = session.get(f"http://{http_host(host)}:{port}{path}", timeout=timeout, allow_redirects=False,
                               headers={"Connection": "close"})
    except requests.RequestException as exc:
        return type(exc).__name__
    return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
