"""bgci.http11 byte by byte, against a scripted peer on a real socket.

The real peers are covered elsewhere: the Docker engine (Go's net/http: chunked streams for
logs, Content-Length for JSON, tests/test_engine.py), nginx and the sample app (the router
and promote tests). Here each way HTTP/1.1 frames a body, and each way a peer can break the
protocol, is sent exactly, so every branch of the reader is exercised.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bgci import http11, probe
from bgci.engine.transport import Transport
from bgci.errors import DockerUnavailable


class Peer:
    """Accepts one connection, records the request, sends `answer` and closes (unless `hold`)."""

    def __init__(self, answer: bytes, *, hold: bool = False) -> None:
        self.answer, self.hold = answer, hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            while b"\r\n\r\n" not in self.request:
                part = connection.recv(65536)
                if not part:
                    break
                self.request += part
            connection.sendall(self.answer)
            if self.hold:
                self.done.wait(10)
        self.listener.close()

    def get(self, method: str = "GET", path: str = "/", **kwargs: object) -> http11.Response:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return http11.exchange(sock, method, path, host=f"127.0.0.1:{self.port}",
                               **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.done.set()


def serve(peers: list[Peer], answer: bytes, **kwargs: bool) -> Peer:
    peer = Peer(answer, **kwargs)
    peers.append(peer)
    return peer


def read_whole(response: http11.Response, piece: int) -> bytes:
    parts = []
    while part := response.read(piece):
        parts.append(part)
    response.close()
    return b"".join(parts)


def test_a_chunked_body_is_read_whole_in_any_piece_size(peers: list[Peer]) -> None:
    """Go's net/http and nginx send a body of unknown length in chunks; a chunk may carry an
    extension after ';' and the last one a trailer. A read may span chunks (an 8-byte frame
    header of the engine's log stream often does)."""
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n")
    for piece in (1, 3, 8, 100):
        response = serve(peers, answer).get()
        assert response.status == 200 and read_whole(response, piece) == b"hello 0123456789"
    assert serve(peers, answer).get().read() == b"hello 0123456789"


def test_content_length_and_close_delimited_bodies(peers: list[Peer]) -> None:
    """A body ends after Content-Length bytes (bytes after it are not the body's), or, with
    neither length nor chunking (an HTTP/1.0 app), when the peer closes."""
    sized = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbodyEXTRA").get()
    assert sized.read(2) == b"bo" and sized.read() == b"dy" and sized.read() == b""
    to_close = serve(peers, b"HTTP/1.0 200 OK\r\nServer: app\r\n\r\nuntil the end").get()
    assert read_whole(to_close, 5) == b"until the end"


def test_answers_without_a_body(peers: list[Peer]) -> None:
    """HEAD (the engine's archive stat), 204 and 304 carry no body whatever their headers say;
    a 100 Continue comes before the real answer."""
    head = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nX-Docker-Container-Path-Stat: e30=\r\n\r\n",
                 hold=True).get("HEAD")
    assert head.read() == b"" and head.headers["x-docker-container-path-stat"] == "e30="
    assert serve(peers, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", hold=True).get().read() == b""
    interim = serve(peers, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok").get()
    assert (interim.status, interim.reason, interim.read()) == (201, "Created", b"ok")


def test_header_names_ignore_case_and_repeats_are_joined(peers: list[Peer]) -> None:
    response = serve(peers, b"HTTP/1.1 200 OK\r\nX-Env: blue\r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n").get()
    assert response.headers.get("x-env") == "blue" and "X-ENV" in response.headers
    assert response.headers["Vary"] == "a, b" and response.headers.get("missing") is None


def test_the_request_as_sent(peers: list[Peer]) -> None:
    """One request per connection: Host (unless given), the body's length (0 for a POST without
    one, which the engine's POST /start and /wait are), and Connection: close."""
    peer = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    peer.get("POST", "/containers/x/start", headers={"Accept": "application/json"}).close()
    peer.thread.join(5)
    assert peer.request == (f"POST /containers/x/start HTTP/1.1\r\nHost: 127.0.0.1:{peer.port}\r\n"
                            "Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()
    named = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    named.get(headers={"Host": "blue.preview.test"}).close()
    named.thread.join(5)
    assert b"Host: blue.preview.test\r\n" in named.request and named.request.count(b"Host:") == 1


def test_a_line_break_in_a_header_is_refused_before_sending(peers: list[Peer]) -> None:
    peer = serve(peers, b"", hold=True)
    with pytest.raises(ValueError, match="line break") as refused:
        peer.get(headers={"X-Registry-Auth": "secret\r\nX-Injected: 1"})
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(("answer", "error", "phrase"), [
    (b"", http11.RemoteDisconnected, "without an answer"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", http11.ProtocolError, "not an HTTP status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd", http11.ProtocolError, "6 bytes before"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", http11.ProtocolError, "bytes before"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http11.ProtocolError, "not a chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", http11.ProtocolError,
     "longer than its size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", http11.ProtocolError, "not a Content-Length"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http11.ProtocolError, "not a header line"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", http11.ProtocolError, "longer than 65536"),
    (b"HTTP/1.1 200 OK\r\nX-Cut: ab", http11.ProtocolError, "ended inside a header line"),
])
def test_a_peer_that_breaks_the_protocol_is_an_os_error(peers: list[Peer], answer: bytes, error: type,
                                                        phrase: str) -> None:
    """Callers catch OSError for refused, reset and timed-out connections; a garbled or cut
    answer is one too, so none of them escapes as anything else."""
    with pytest.raises(error, match=phrase) as raised:
        serve(peers, answer).get().read()
    assert isinstance(raised.value, OSError)


def test_a_read_timeout_is_a_timeout_error(peers: list[Peer]) -> None:
    """The engine's POST /wait sends its headers at once and its body when the container stops:
    the socket's timeout is the wait's, and must surface as TimeoutError (EngineTimeout)."""
    peer = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", hold=True)
    sock = socket.create_connection(("127.0.0.1", peer.port), timeout=0.2)
    response = http11.exchange(sock, "POST", "/wait", host="localhost")
    with pytest.raises(TimeoutError):
        response.read()
    response.close()


def test_probes_and_the_engine_transport_word_protocol_faults(peers: list[Peer]) -> None:
    """check_health names what went wrong in a phrase; the engine transport makes any fault of
    the engine's connection DockerUnavailable, with the hint to start dockerd."""
    assert probe.check_health("127.0.0.1", serve(peers, b"").port, "/health") == "RemoteDisconnected"
    assert probe.check_health("127.0.0.1", serve(peers, b"HTTP/1.1 503 x\r\n\r\n").port, "/health") == "HTTP 503"
    ok = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert probe.check_health("127.0.0.1", ok.port, "/health") == ""
    cut = serve(peers, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
    with pytest.raises(DockerUnavailable, match="Docker daemon not answering") as raised:
        Transport(f"tcp://127.0.0.1:{cut.port}").request("GET", "/_ping", "connect")
    assert "start dockerd" in raised.value.hint
