#!/usr/bin/env python3
"""Opens N keep-alive connections to a server, makes one request on each, and
holds them idle until stdin closes. Prints 'ready' once all are idle.

Used by bench/run to measure a server's memory with many idle connections.
"""
import socket
import sys


def main() -> int:
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sockets = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                print(f"connection {len(sockets)} closed by the server", file=sys.stderr)
                return 1
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            print(f"connection {len(sockets)}: {data[:80]!r}", file=sys.stderr)
            return 1
        sockets.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
