#!/usr/bin/env python3
"""A raw TCP client for the connection-fault tests: plain sockets, as a
database driver or any non-HTTP client would use them. Prints one JSON line.

  tcpclient.py rtt HOST PORT N [PAUSE]    N echo round trips, PAUSE s after the first:
                                          {"rtt": [s, ...]}
  tcpclient.py send HOST PORT BYTES [WAIT] [EXPECT]
                                          sends BYTES, reads until EOF, reset, EXPECT bytes
                                          or WAIT s (default 10): {"got", "eof", "reset", "t", "reads",
                                          "first", "gaps_min", "intact"}
  tcpclient.py fin HOST PORT              sends a line and a FIN, times the peer's FIN
  tcpclient.py many HOST PORT N           N connections one after another, each a round
                                          trip: {"ok": N_ok, "failed": N_failed}
"""
import json
import socket
import sys
import time


def connect(host, port):
    s = socket.create_connection((host, port), timeout=15)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rtt(host, port, n, pause=0.0):
    s = connect(host, port)
    out = []
    for i in range(n):
        if i == 1 and pause:
            time.sleep(pause)
        msg = b"ping %d\n" % i
        t = time.monotonic()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(65536)
            if not d:
                break
            got += d
        out.append(round(time.monotonic() - t, 4))
        if got != msg:
            return {"rtt": out, "error": "echo mismatch: %r" % got}
    s.close()
    return {"rtt": out}


def send(host, port, nbytes, wait, expect=0):
    s = connect(host, port)
    payload = bytes((i * 7 + 3) & 0xFF for i in range(nbytes))
    t0 = time.monotonic()
    s.sendall(payload)
    s.settimeout(wait)
    got, reads, stamps = b"", 0, []
    eof = reset = 0
    try:
        while True:
            d = s.recv(65536)
            if not d:
                eof = 1
                break
            got += d
            reads += 1
            stamps.append(time.monotonic())
            if expect and len(got) >= expect:
                break
    except ConnectionResetError:
        reset = 1
    except socket.timeout:
        pass
    t = time.monotonic() - t0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    s.close()
    return {"got": len(got), "eof": eof, "reset": reset, "t": round(t, 4), "reads": reads,
            "first": round(stamps[0] - t0, 4) if stamps else None,
            "gaps_min": round(min(gaps), 4) if gaps else None,
            "intact": got == payload[:len(got)]}


def fin(host, port):
    s = connect(host, port)
    s.sendall(b"bye\n")
    t0 = time.monotonic()
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return {"t": round(time.monotonic() - t0, 4), "got": got.decode()}


def many(host, port, n):
    ok = failed = 0
    for i in range(n):
        try:
            s = connect(host, port)
            s.sendall(b"x")
            if s.recv(1) == b"x":
                ok += 1
            else:
                failed += 1
            s.close()
        except OSError:
            failed += 1
    return {"ok": ok, "failed": failed}


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        sys.exit(__doc__)
    mode, host, port = a[0], a[1], int(a[2])
    if mode == "rtt":
        r = rtt(host, port, int(a[3]), float(a[4]) if len(a) > 4 else 0.0)
    elif mode == "send":
        r = send(host, port, int(a[3]), float(a[4]) if len(a) > 4 else 10.0,
                 int(a[5]) if len(a) > 5 else 0)
    elif mode == "fin":
        r = fin(host, port)
    elif mode == "many":
        r = many(host, port, int(a[3]))
    else:
        sys.exit(__doc__)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
