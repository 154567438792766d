"""HTTP/1.1 on a socket bgci opened: the client side its probes and its engine client need.

Why not http.client: importing it imports the email package and ssl (OpenSSL starts up),
about 60 M instructions, a sixth of what a new `bgci test` or `bgci promote` process spends
before it does anything (benchmarks/importcost.py). What bgci sends is small and fixed (GET,
HEAD, POST or DELETE, a JSON body at most, `Connection: close`), and what it reads are the
answers of Go's net/http (the Docker engine), of nginx and of apps: a status line, headers,
then a body that ends after Content-Length bytes, after its last chunk (chunked transfer
coding) or when the peer closes the connection.

Every error is an OSError (a ProtocolError when the peer breaks the protocol), so a caller's
`except OSError` covers a refused connection, a timeout and a garbled answer alike.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from typing import BinaryIO

MAX_LINE = 65536  # bytes in a status, header or chunk-size line (http.client's limit)
MAX_HEADERS = 100  # header lines in an answer (http.client's limit)
BODYLESS_STATUSES = (204, 304)


class ProtocolError(ConnectionError):
    """The peer's answer is not HTTP/1.x, or it ended before its body did."""


class RemoteDisconnected(ProtocolError):
    """The peer closed the connection without answering (http.client's name for it)."""


class Headers:
    """An answer's header fields; names are looked up without regard to case, as HTTP defines them."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields = {name.lower(): value for name, value in fields.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Response:
    """An answer whose status line and headers have been read; `read` reads its body.

    It owns the connection: `close` closes the socket (a request per connection, as bgci sends).
    """

    def __init__(self, sock: socket.socket, file: BinaryIO, status: int, reason: str, headers: Headers,
                 method: str) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self._sock, self._file = sock, file
        self._chunked = False
        self._left: int | None = 0  # bytes left of the body (or of the current chunk); None: up to the close
        if method != "HEAD" and status not in BODYLESS_STATUSES:
            if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
                self._chunked = True
            else:
                self._left = _content_length(headers.get("Content-Length"))
        self._done = self._left == 0 and not self._chunked

    def read(self, size: int = -1) -> bytes:
        """`size` bytes of the body (all of the rest when negative); fewer only at its end, b"" after it."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while not self._done and (wanted is None or wanted > 0):
            part = self._read_some(wanted)
            parts.append(part)
            if wanted is not None:
                wanted -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def _read_some(self, wanted: int | None) -> bytes:
        if self._chunked and self._left == 0:
            self._left = self._next_chunk_size()
            if self._left == 0:
                self._done = True
                return b""
        if self._left is None:  # the body ends when the peer closes
            part = self._file.read(-1 if wanted is None else wanted)
            self._done = wanted is None or len(part) < wanted
            return part
        count = self._left if wanted is None else min(wanted, self._left)
        part = self._file.read(count)
        if len(part) < count:
            raise ProtocolError(f"the answer ended {self._left - len(part)} bytes before its body did")
        self._left -= count
        if self._left == 0:
            if self._chunked:
                self._end_chunk()
            else:
                self._done = True
        return part

    def _next_chunk_size(self) -> int:
        line = _read_line(self._file, "chunk size")
        text = line.split(b";", 1)[0].strip()  # a chunk extension follows ';'
        if not text or text.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError(f"not a chunk size: {line[:40]!r}")
        size = int(text, 16)
        if size == 0:
            _read_fields(self._file)  # the trailer, usually empty
        return size

    def _end_chunk(self) -> None:
        if _read_line(self._file, "chunk end").strip():
            raise ProtocolError("a chunk is longer than its size says")


def exchange(sock: socket.socket, method: str, path: str, *, host: str, headers: Mapping[str, str] | None = None,
             body: bytes | None = None) -> Response:
    """Send one request on `sock` and read the answer's status line and headers.

    `host` is the Host header unless `headers` has one; the peer is asked to close the connection
    after answering. The Response owns `sock` from here; on an error the socket is closed.
    """
    try:
        sock.sendall(_request_bytes(method, path, host, headers or {}, body))
        file = sock.makefile("rb")
    except BaseException:
        sock.close()
        raise
    try:
        return _read_answer(sock, file, method)
    except BaseException:
        file.close()
        sock.close()
        raise


def _request_bytes(method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    for text in (path, host, *headers, *headers.values()):
        if "\r" in text or "\n" in text:  # it would end the line early: header injection
            raise ValueError("a line break in the request's path or a header")  # no value: it may be a secret
    given = {name.lower() for name in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    if "connection" not in given:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _read_answer(sock: socket.socket, file: BinaryIO, method: str) -> Response:
    while True:
        line = file.readline(MAX_LINE + 1)
        if not line:
            raise RemoteDisconnected("the peer closed the connection without an answer")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP status line: {line[:40]!r}")
        headers = Headers(_read_fields(file))
        status = int(code)
        if not 100 <= status < 200:  # an interim answer (100 Continue) is followed by the real one
            return Response(sock, file, status, reason.strip(), headers, method)


def _read_fields(file: BinaryIO) -> dict[str, str]:
    """Header (or trailer) lines up to the empty line; a repeated name's values joined with ', '."""
    fields: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _read_line(file, "header")
        if line in (b"\r\n", b"\n"):
            return fields
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"not a header line: {line[:40]!r}")
        key = name.strip().lower()
        fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    raise ProtocolError(f"more than {MAX_HEADERS} header lines")


def _read_line(file: BinaryIO, what: str) -> bytes:
    line = file.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a {what} line longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise ProtocolError(f"the answer ended inside a {what} line")
    return line


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ProtocolError(f"not a Content-Length: {value[:40]!r}")
    return int(value)
