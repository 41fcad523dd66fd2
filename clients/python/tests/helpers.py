"""Test doubles on loopback: an HTTP proxy that loses answers on purpose, and a
scripted HTTP server (used as a fake Stoat for SSE and retry tests)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

# What the proxy does with one request: "forward" it and pass the answer back,
# "lose_answer" (forward it, wait for the server's answer, then close the
# client's connection without passing it on) or "drop" (close the client's
# connection without forwarding anything).
Decision = str


def read_request(sock: socket.socket, buffer: bytearray) -> Optional[Tuple[bytes, str, str]]:
    """One Content-Length framed HTTP message from ``sock``: (raw bytes, method, path)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head_end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:head_end]).decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(buffer) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[: head_end + length])
    del buffer[: head_end + length]
    request_line = head.split("\r\n", 1)[0].split(" ")
    first = request_line[0]
    second = request_line[1] if len(request_line) > 1 else ""
    return message, first, second


class LossyProxy:
    """A loopback HTTP/1.1 proxy; ``decide(method, path)`` picks each request's fate."""

    def __init__(self, upstream_port: int, decide: Callable[[str, str], Decision]) -> None:
        self.upstream_port = upstream_port
        self.decide = decide
        self.seen: List[Tuple[str, str, Decision]] = []
        self.bodies: List[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str, path_start: str) -> List[Decision]:
        with self._lock:
            return [d for m, p, d in self.seen if m == method and p.startswith(path_start)]

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        from_client = bytearray()
        from_upstream = bytearray()
        try:
            while True:
                request = read_request(client, from_client)
                if request is None:
                    return
                message, method, path = request
                decision = self.decide(method, path)
                with self._lock:
                    self.seen.append((method, path, decision))
                    self.bodies.append(message)
                if decision == "drop":
                    return
                upstream.sendall(message)
                answer = read_request(upstream, from_upstream)
                if answer is None or decision == "lose_answer":
                    return
                client.sendall(answer[0])
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


class Reply:
    """A scripted answer: a status and JSON body, or an event stream."""

    def __init__(
        self,
        status: int = 200,
        body: Optional[Dict] = None,
        headers: Optional[Dict[str, str]] = None,
        stream: Optional[List[str]] = None,
        hold: Optional[threading.Event] = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.stream = stream
        self.hold = hold


def sse(event: str, data: Dict, event_id: Optional[int] = None) -> str:
    """One event in API.md's format."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class ScriptedServer:
    """A fake Stoat: for each path prefix, a list of replies used in order
    (the last one repeats). Records every request."""

    def __init__(self, script: Dict[str, List[Reply]]) -> None:
        self.script = script
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                if length:
                    self.rfile.read(length)
                owner.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                reply = owner.next_reply(self.path)
                if reply.stream is not None:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in reply.stream:
                        self.wfile.write(chunk.encode())
                        self.wfile.flush()
                    if reply.hold is not None:
                        reply.hold.wait(10)
                    self.close_connection = True
                    return
                body = json.dumps(reply.body if reply.body is not None else {}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_reply(self, path: str) -> Reply:
        for prefix, replies in self.script.items():
            if path.startswith(prefix):
                return replies.pop(0) if len(replies) > 1 else replies[0]
        return Reply(404, {"error": "not_found", "message": "no such path"})

    def paths(self, prefix: str) -> List[str]:
        return [path for _, path, _ in self.requests if path.startswith(prefix)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
