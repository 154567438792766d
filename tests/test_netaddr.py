"""Addresses: where an nginx `listen` value is reached, and `host:port` with IPv6 brackets."""

from __future__ import annotations

import pytest

from bgci.errors import ConfigError
from bgci.netaddr import join_host_port, listen_address, listen_url


@pytest.mark.parametrize(("listen", "expected"), [
    ("10.1.2.3:8080", ("10.1.2.3", 8080)),
    ("8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:80", ("127.0.0.1", 80)),
    ("*:80", ("127.0.0.1", 80)),
    ("[::]:80", ("[::1]", 80)),  # nginx's IPv6 socket takes no IPv4 by default: reach it on IPv6 loopback
    ("[::1]:8080", ("[::1]", 8080)),
    ("localhost:81", ("localhost", 81)),
])
def test_listen_address_is_a_place_to_connect_to(listen: str, expected: tuple[str, int]) -> None:
    assert listen_address(listen) == expected


@pytest.mark.parametrize("listen", ["", "0", "65536", "1.2.3.4:0", "999.1.1.1:80", "::1:80", "[::1]", "host:80",
                                    "8080 default_server", "127.0.0.1:80;"])
def test_listen_address_refuses_anything_but_a_plain_address(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"nginx\.listen"):
        listen_address(listen)


def test_listen_url_is_what_smoke_and_verification_ask() -> None:
    assert listen_url("[::]:8080") == "http://[::1]:8080"
    assert listen_url("8081") == "http://127.0.0.1:8081"


def test_join_host_port_brackets_ipv6_only() -> None:
    assert join_host_port("127.0.0.1", 80) == "127.0.0.1:80"
    assert join_host_port("app.internal", 80) == "app.internal:80"
    assert join_host_port("::1", 8080) == "[::1]:8080"
