#!/usr/bin/env python3
"""A fixed, deterministic commit workload for bench/profile.

    profile_client.py HOST PORT COMMITS CONNECTIONS [SEED]

CONNECTIONS keep-alive connections send COMMITS conditional commits
between them (COMMITS / CONNECTIONS each, the remainder one more each on
the first connections) in a closed loop (one request in flight per
connection): 1 point_read + 1 write on keys drawn from a seeded generator
over 1,000,000 keys (the same key shape as bench/wrk/common.lua), with
read_version the highest version seen in any response so far, as
bench/wrk/stoat_commit.lua does. Prints one line:

    profile client: N requests in S s, statuses 200=A 409=B
"""

import base64
import random
import selectors
import socket
import sys
import time


def key(n):
    return base64.b64encode(b"stoat-bench-" + n.to_bytes(4, "big")).decode()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    commits, connections = int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    if not 0 < connections <= commits:
        sys.exit("profile_client: need 0 < CONNECTIONS <= COMMITS")
    rng = random.Random(seed)
    # The keys of every request, fixed by the seed whatever the timing.
    plan = [[(key(rng.randrange(1_000_000)), key(rng.randrange(1_000_000)))
             for _ in range(commits // connections + (1 if index < commits % connections else 0))]
            for index in range(connections)]
    state = {"read_version": 0}
    statuses = {}

    def request(read_key, write_key):
        body = ('{"read_version":%d,"preconditions":[{"type":"point_read","key":"%s"}],'
                '"operations":[{"type":"write","key":"%s","value":"dmFsdWU="}]}'
                % (state["read_version"], read_key, write_key)).encode()
        return (b"POST /v1/commit HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (host.encode(), len(body))) + body

    selector = selectors.DefaultSelector()
    started = time.monotonic()
    for index in range(connections):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = {"sock": sock, "next": 0, "buffer": b"", "keys": plan[index]}
        sock.sendall(request(*conn["keys"][0]))
        selector.register(sock, selectors.EVENT_READ, conn)
    open_connections = connections
    while open_connections:
        events = selector.select(timeout=120)
        if not events:
            sys.exit("profile_client: no answer for 120 s")
        for selected, _ in events:
            conn = selected.data
            data = conn["sock"].recv(65536)
            if not data:
                sys.exit("profile_client: the server closed a connection")
            conn["buffer"] += data
            while True:
                head_end = conn["buffer"].find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = conn["buffer"][:head_end].decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(conn["buffer"]) < head_end + 4 + length:
                    break
                body = conn["buffer"][head_end + 4:head_end + 4 + length]
                conn["buffer"] = conn["buffer"][head_end + 4 + length:]
                status = int(head.split(" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
                marker = body.find(b'"version":')
                if marker >= 0:
                    digits = body[marker + 10:].split(b",")[0].split(b"}")[0]
                    if digits.isdigit():
                        state["read_version"] = max(state["read_version"], int(digits))
                conn["next"] += 1
                if conn["next"] < len(conn["keys"]):
                    conn["sock"].sendall(request(*conn["keys"][conn["next"]]))
                else:
                    selector.unregister(conn["sock"])
                    conn["sock"].close()
                    open_connections -= 1
                    break
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    parts = " ".join("%d=%d" % (status, count) for status, count in sorted(statuses.items()))
    print("profile client: %d requests in %.1f s, statuses %s" % (total, elapsed, parts))
    if total != commits:
        sys.exit("profile_client: %d answers for %d commits" % (total, commits))


if __name__ == "__main__":
    main()
