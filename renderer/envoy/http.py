"""Both ends of a request through Envoy, on 127.0.0.1: a raw HTTP/1.1 client and an upstream server.

Raw sockets rather than http.client: a test may ask for a body sent in N pieces, and the report shows
the pieces as they arrived (Envoy's chunking), which a library that hides framing cannot say.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

Headers = tuple[tuple[str, str], ...]

PIECE_GAP = 0.005  # seconds between the pieces of a body sent in chunks, so each is its own read


@dataclass(frozen=True)
class Message:
    """A request (pseudo-headers :method, :path, :authority) or a response (:status) on the wire."""

    headers: Headers = ()
    body: bytes | None = None
    trailers: Headers = ()
    chunks: int | None = None  # send the body in this many pieces, chunked


@dataclass(frozen=True)
class Received:
    """One message as it arrived: headers in order (names as sent, pseudo-headers first), the body
    and the sizes of the chunks it came in (empty: not chunked)."""

    headers: Headers
    body: bytes
    chunk_sizes: tuple[int, ...] = ()
    trailers: Headers = ()


class Incomplete(Exception):
    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


# ------------------------------------------------------------------------------ framing


def _split(data: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    pseudo = {k: v for k, v in data if k.startswith(":")}
    return pseudo, [(k, v) for k, v in data if not k.startswith(":")]


def _pieces(body: bytes, n: int) -> list[bytes]:
    n = max(1, min(n, len(body))) if body else 1
    size = -(-len(body) // n) if body else 0
    return [body[i:i + size] for i in range(0, len(body), size)] if body else [b""]


def _send_message(sock: socket.socket, start: bytes, headers: list[tuple[str, str]], message: Message) -> None:
    body = message.body
    chunked = message.chunks is not None or bool(message.trailers)
    names = {k.lower() for k, _ in headers}
    lines = [start] + [f"{k}: {v}".encode("latin-1") for k, v in headers]
    if chunked and "transfer-encoding" not in names:
        lines.append(b"transfer-encoding: chunked")
    elif body is not None and "content-length" not in names:
        lines.append(f"content-length: {len(body)}".encode())
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if not chunked:
        sock.sendall(head + (body or b""))
        return
    sock.sendall(head)
    for piece in _pieces(body or b"", message.chunks or 1):
        if piece:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            time.sleep(PIECE_GAP)
    tail = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in message.trailers)
    sock.sendall(b"0\r\n" + tail + b"\r\n")


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.seen = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Incomplete("the connection closed", self.seen)
        self.buf += data
        self.seen += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until_close(self) -> bytes:
        with contextlib.suppress(Incomplete):
            while True:
                self._more()
        data, self.buf = self.buf, b""
        return data

    def headers(self) -> list[tuple[str, str]]:
        out = []
        while line := self.line():
            name, _, value = line.decode("latin-1").partition(":")
            out.append((name.strip(), value.strip()))
        return out

    def body(self, headers: list[tuple[str, str]], *, response: bool, status: int = 200,
             method: str = "GET") -> tuple[bytes, tuple[int, ...], Headers]:
        lower = {k.lower(): v for k, v in headers}
        if response and (status in (204, 304) or 100 <= status < 200 or method == "HEAD"):
            return b"", (), ()
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body, sizes = b"", []
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    break
                body += self.exactly(size)
                sizes.append(size)
                self.line()
            trailers = tuple(self.headers())
            return body, tuple(sizes), trailers
        if "content-length" in lower:
            return self.exactly(int(lower["content-length"])), (), ()
        if response:
            return self.until_close(), (), ()
        return b"", (), ()


# ------------------------------------------------------------------------------ client


@dataclass(frozen=True)
class Exchange:
    response: Received | None  # None: no (complete) response before the timeout or the close
    error: str | None = None
    partial: bytes = b""  # what arrived of an incomplete response
    peer: str = ""  # the client's address as Envoy saw it (127.0.0.1:port): the access log's key


def request(port: int, message: Message, *, timeout: float) -> Exchange:
    """Send one request on a fresh connection and read the whole response (or say why not)."""
    pseudo, headers = _split(message.headers)
    method, path = pseudo.get(":method", "GET"), pseudo.get(":path", "/")
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("host", pseudo.get(":authority", "localhost")))
    start = f"{method} {path} HTTP/1.1".encode("latin-1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    peer = f"127.0.0.1:{local_port(sock)}"
    reader = _Reader(sock)
    try:
        _send_message(sock, start, headers, message)
        status_line = reader.line().decode("latin-1")
        parts = status_line.split(" ", 2)
        status = int(parts[1])
        got = reader.headers()
        body, sizes, trailers = reader.body(got, response=True, status=status, method=method)
        return Exchange(Received(((":status", str(status)), *got), body, sizes, trailers), peer=peer)
    except TimeoutError:
        return Exchange(None, f"no complete response within {timeout:.1f} s", reader.seen, peer)
    except Incomplete as e:
        return Exchange(None, f"{e} before a complete response", e.partial, peer)
    except (OSError, ValueError, IndexError) as e:
        return Exchange(None, f"{type(e).__name__}: {e}", reader.seen, peer)
    finally:
        sock.close()


def local_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ upstream


@dataclass
class _Slot:
    response: Message = field(default_factory=Message)
    received: list[Received] = field(default_factory=list)


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with the current response and
    records what it received; one thread per connection (Envoy pools a few). Use as a context
    manager: the socket is closed and the threads end when it leaves."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = local_port(self._sock)
        self._slot = _Slot()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def __enter__(self) -> Upstream:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(2)

    def answer(self, response: Message) -> list[Received]:
        """From now on answer with `response`; returns the list the requests are recorded into."""
        slot = _Slot(response)
        with self._lock:
            self._slot = slot
        return slot.received

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        reader = _Reader(conn)
        with conn:
            while not self._stop.is_set():
                try:
                    line = reader.line().decode("latin-1")
                except (Incomplete, OSError):
                    return
                if not line:
                    continue
                method, path, _ = (line.split(" ", 2) + ["", ""])[:3]
                try:
                    headers = reader.headers()
                    body, sizes, trailers = reader.body(headers, response=False)
                except (Incomplete, OSError, ValueError):
                    return
                host = next((v for k, v in headers if k.lower() == "host"), "")
                received = Received(((":method", method), (":path", path), (":authority", host), *headers),
                                    body, sizes, trailers)
                with self._lock:
                    slot = self._slot
                    slot.received.append(received)
                try:
                    self._respond(conn, slot.response)
                except OSError:
                    return

    def _respond(self, conn: socket.socket, response: Message) -> None:
        pseudo, headers = _split(response.headers)
        status = int(pseudo.get(":status", "200"))
        start = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}".encode()
        body = response.body
        if body is None and status not in (204, 304) and status >= 200:
            body = b""  # an explicit empty body: content-length 0, not a read until close
        _send_message(conn, start, headers, Message(response.headers, body, response.trailers, response.chunks))


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
