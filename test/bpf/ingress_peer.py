#!/usr/bin/env python3
"""Keep-alive client for test/bpf/ingress.sh (standard library only).

  ingress_peer.py keepalive HOST PORT PATH INTERVAL_MS STOPFILE
      One HTTP/1.1 connection, a GET PATH every INTERVAL_MS until STOPFILE exists.
      Prints "CONNECT n local=ADDR:PORT" for each connection it opens (n counts them),
      "RESP i conn=n status=S injected=0|1" per response and "ERR i conn=n WHAT" when
      the connection fails (reset, aborted, closed); after an error it opens a new
      connection for the next request ("CLOSE i conn=n" when a response said
      "connection: close"). Ends with "END responses=R connections=n errors=E".
"""
import os
import socket
import sys
import time


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def response(f):
    """Reads one response; returns (status, injected) or raises ConnectionError."""
    line = f.readline()
    if not line:
        raise ConnectionError("closed by peer")
    parts = line.split()
    status = int(parts[1]) if len(parts) > 1 else 0
    n, injected, close = 0, 0, False
    while True:
        h = f.readline()
        if not h:
            raise ConnectionError("closed in headers")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode(errors="replace").partition(":")
        k, v = k.strip().lower(), v.strip()
        if k == "content-length":
            n = int(v)
        elif k == "x-faultline-injected":
            injected = 1
        elif k == "connection" and v.lower() == "close":
            close = True
    body = f.read(n) if n else b""
    if len(body) != n:
        raise ConnectionError("closed in body")
    return status, injected, close


def keepalive(host, port, path, interval, stopfile):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = f = None
    conns = responses = errors = i = 0
    while not os.path.exists(stopfile):
        i += 1
        try:
            if s is None:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect((host, port))
                f = s.makefile("rb")
                conns += 1
                print(f"CONNECT {conns} local={fmt(s.getsockname())}", flush=True)
            s.sendall(f"GET {path}/{i} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
            status, injected, close = response(f)
            responses += 1
            print(f"RESP {i} conn={conns} status={status} injected={injected}", flush=True)
            if close:  # the server's choice, not a failure: reconnect quietly
                print(f"CLOSE {i} conn={conns}", flush=True)
                s.close()
                s = f = None
        except (OSError, ConnectionError) as e:
            errors += 1
            what = getattr(e, "strerror", None) or str(e)
            print(f"ERR {i} conn={conns} {type(e).__name__}: {what}".replace("\n", " "), flush=True)
            if s is not None:
                s.close()
            s = f = None
        time.sleep(interval / 1000)
    print(f"END responses={responses} connections={conns} errors={errors}", flush=True)


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "keepalive":
        a = sys.argv[2:]
        keepalive(a[0], int(a[1]), a[2], int(a[3]), a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
