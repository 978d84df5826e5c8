#!/usr/bin/env python3
"""Peers for test/bpf/transparent.sh (standard library only).

  tp_peer.py server HOST:PORT...      HTTP/1.1 server on each address:
                                        GET /peer      -> "peer=ADDR:PORT" (who connected)
                                        GET /bytes/N   -> N bytes of the test pattern
                                        POST /sink     -> "len=N sha256=HEX" of the body
                                        anything else  -> 200 "server PATH", x-served-by: server
  tp_peer.py client HOST PORT PATH... one TCP connection, one GET per PATH; prints
                                      "PEER ADDR:PORT" (getpeername), then per response
                                      "STATUS n" and "BODY text"
  tp_peer.py impostor HOST PORT LOG   an unmarked listener; logs each connection to LOG
  tp_peer.py pattern N                writes N bytes of the test pattern to stdout
  tp_peer.py pipe FIFO OUT            copies FIFO to OUT through a 4 KiB pipe; SIGUSR1
                                      stops reading (the writer blocks), SIGUSR2 resumes
"""
import hashlib
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading
import time

BLOCK = bytes(range(256)) * 4096  # 1 MiB


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def pattern(n, write):
    while n > 0:
        k = min(n, len(BLOCK))
        write(BLOCK[:k])
        n -= k


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, body, extra=()):
        b = body.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(b)))
        self.send_header("x-served-by", "server")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        if self.path == "/peer":
            return self.reply(f"peer={fmt(self.client_address)}\n")
        if self.path.startswith("/bytes/"):
            n = int(self.path[7:])
            self.send_response(200)
            self.send_header("content-length", str(n))
            self.end_headers()
            return pattern(n, self.wfile.write)
        return self.reply(f"server {self.path}\n")

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        h, got = hashlib.sha256(), 0
        while got < n:
            b = self.rfile.read(min(1 << 20, n - got))
            if not b:
                break
            h.update(b)
            got += len(b)
        return self.reply(f"len={got} sha256={h.hexdigest()}\n")


def server(addrs):
    for a in addrs:
        host, port = split_hostport(a)

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        srv = S((host, port), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("READY", flush=True)
    while True:
        time.sleep(3600)


def recv_response(f):
    status = f.readline().split()
    n = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            n = int(v)
    body = f.read(n) if n else b""
    return int(status[1]) if len(status) > 1 else 0, body.decode(errors="replace")


def client(host, port, paths):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
    print("PEER", fmt(s.getpeername()), flush=True)
    f = s.makefile("rb")
    for p in paths:
        s.sendall(f"GET {p} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        st, body = recv_response(f)
        print("STATUS", st)
        print("BODY", body.strip())
    s.close()


def impostor(host, port, log):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, port))
    s.listen(16)
    print("READY", flush=True)
    while True:
        c, a = s.accept()
        with open(log, "a") as f:
            f.write(f"conn {fmt(a)}\n")
        c.close()


def pipe(fifo, out):
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *a: stop.set())
    signal.signal(signal.SIGUSR2, lambda *a: stop.clear())
    fd = os.open(fifo, os.O_RDONLY)
    import fcntl

    fcntl.fcntl(fd, 1031, 4096)  # F_SETPIPE_SZ: a few lines fill it
    with open(out, "ab", buffering=0) as o:
        while True:
            if stop.is_set():
                time.sleep(0.02)
                continue
            b = os.read(fd, 4096)
            if not b:
                return
            o.write(b)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        server(args)
    elif cmd == "client":
        client(args[0], int(args[1]), args[2:])
    elif cmd == "impostor":
        impostor(args[0], int(args[1]), args[2])
    elif cmd == "pattern":
        pattern(int(args[0]), sys.stdout.buffer.write)
    elif cmd == "pipe":
        pipe(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
