"""Addresses as nginx and URLs spell them: `listen` values and `host:port` with IPv6 brackets."""

from __future__ import annotations

import ipaddress
import re

from bgci.errors import ConfigError

LISTEN = re.compile(r"^(?:(?P<host>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]|\*|localhost):)?(?P<port>\d{1,5})$")


def listen_address(listen: str) -> tuple[str, int]:
    """(host to connect to, port) for an nginx `listen` value; ConfigError if it is not a plain address.

    A bare port or a wildcard means this host, reached on loopback (`[::]` on `[::1]`,
    as nginx's IPv6 sockets do not take IPv4 by default).
    """
    match = LISTEN.match(listen)
    port = int(match["port"]) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ConfigError(f"nginx.listen: {listen!r} is not ADDRESS:PORT or PORT")
    host = match["host"] or "127.0.0.1"
    if host in ("*", "0.0.0.0"):
        host = "127.0.0.1"  # listening everywhere: reach it on loopback
    elif host == "[::]":
        host = "[::1]"
    elif not host.startswith("[") and host != "localhost":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"nginx.listen: {listen!r} has an invalid address") from None
    return host, port


def listen_url(listen: str) -> str:
    """`http://host:port` where nginx's `listen` is reached (see :func:`listen_address`)."""
    host, port = listen_address(listen)
    return f"http://{host}:{port}"


def join_host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets (as URLs and nginx upstreams need)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
