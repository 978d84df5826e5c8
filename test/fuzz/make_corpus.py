#!/usr/bin/env python3
"""Writes the seed corpora of the protocol fuzzers under test/fuzz/corpus/.

    python3 test/fuzz/make_corpus.py

The files are committed; run this again after changing a seed here. It writes
the same bytes every time and removes any file of a corpus directory it did
not write, so the directories are exactly what this script says. Seeds stay
small (a few KB a target): libFuzzer grows its own corpus, these only have to
reach each path once. Each file
starts with the target's control bytes (see the comment at the top of each
test/fuzz/fuzz_*.c): fuzz_http1_request and fuzz_h2_server take one byte that
cuts the rest into writes (0: one write, 1: single bytes, 3: 1..16 bytes,
5: 1..512 bytes, 6: two writes); fuzz_http1_response and fuzz_h2_client take a
scenario byte and then such a byte. The fuzz_policy corpus is policies/*.yaml,
copied by the run scripts.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

ONE, BYTES, SMALL, MEDIUM, TWO = 0, 1, 3, 5, 6


WRITTEN = {}  # target -> names written by this run


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    WRITTEN.setdefault(target, set()).add(name)


def remove_stale():
    for target, names in WRITTEN.items():
        d = os.path.join(OUT, target)
        for name in sorted(os.listdir(d)):
            if name not in names:
                os.remove(os.path.join(d, name))
                print("removed stale seed %s/%s" % (target, name))


def crlf(*lines):
    return ("\r\n".join(lines) + "\r\n").encode()


# ---- HTTP/1.1 requests ----

def req(method, target, headers=(), body=b"", version="HTTP/1.1"):
    head = ["%s %s %s" % (method, target, version), "host: fuzz.test"]
    head += ["%s: %s" % h for h in headers]
    return crlf(*head) + b"\r\n" + body


def chunked(*parts, trailers=()):
    out = b""
    for i, p in enumerate(parts):
        ext = ";ext=%d" % i if i % 2 else ""
        out += b"%x%s\r\n%s\r\n" % (len(p), ext.encode(), p)
    out += b"0\r\n"
    for t in trailers:
        out += ("%s: %s\r\n" % t).encode()
    return out + b"\r\n"


def client_hello():
    sni = b"fuzz.test"
    ext_sni = struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    ext_alpn = struct.pack(">HHH", 16, 14, 12) + b"\x02h2\x08http/1.1"
    ext_versions = struct.pack(">HHB", 43, 5, 4) + b"\x03\x04\x03\x03"
    exts = ext_sni + ext_alpn + ext_versions
    body = b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(range(32, 64))
    body += struct.pack(">H", 6) + b"\x13\x01\x13\x02\xc0\x2f" + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def http1_request_corpus():
    t = "fuzz_http1_request"
    get = req("GET", "/")
    write(t, "get", bytes([ONE]) + get)
    write(t, "get-bytewise", bytes([BYTES]) + get)
    write(t, "get-absolute-form", bytes([ONE]) + req("GET", "http://fuzz.test/abort?q=1"))
    write(t, "pipelined", bytes([ONE]) + req("GET", "/one") + req("HEAD", "/two") + req("GET", "/three"))
    write(t, "pipelined-split", bytes([SMALL | 0x10]) + req("GET", "/a") + req("GET", "/abort") + req("GET", "/b"))
    write(t, "post-content-length", bytes([ONE]) +
          req("POST", "/submit", [("content-type", "text/plain"), ("content-length", "11")], b"hello world"))
    write(t, "post-chunked", bytes([SMALL]) +
          req("POST", "/chunked", [("transfer-encoding", "chunked")],
              chunked(b"hello", b" wor", b"ld", trailers=[("x-checksum", "42")])))
    big = [bytes([0x61 + i % 26]) * 300 for i in range(5)]
    write(t, "post-chunked-large", bytes([MEDIUM]) +
          req("POST", "/upload", [("transfer-encoding", "chunked")], chunked(*big)) + req("GET", "/after"))
    write(t, "large-headers", bytes([MEDIUM | 0x08]) +
          req("GET", "/headers", [("x-h%02d" % i, "v" * 60) for i in range(24)]))
    write(t, "upgrade-websocket", bytes([ONE]) +
          req("GET", "/chat", [("upgrade", "websocket"), ("connection", "Upgrade"),
                               ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                               ("sec-websocket-version", "13")]))
    write(t, "upgrade-refused", bytes([ONE]) +
          req("GET", "/refuse", [("upgrade", "websocket"), ("connection", "upgrade")]) + req("GET", "/next"))
    write(t, "connect", bytes([ONE]) + req("CONNECT", "fuzz.test:443"))
    write(t, "http10", bytes([ONE]) + b"GET /old HTTP/1.0\r\n\r\n")
    write(t, "connection-close", bytes([TWO]) +
          req("GET", "/last", [("connection", "close")]) + req("GET", "/ignored"))
    write(t, "expect-continue", bytes([ONE]) +
          req("PUT", "/put", [("expect", "100-continue"), ("content-length", "4")], b"data"))
    write(t, "fault-abort", bytes([ONE]) + req("GET", "/abort/now") + req("GET", "/after-abort"))
    write(t, "fault-head-abort", bytes([ONE]) + req("HEAD", "/abort"))
    write(t, "fault-reset", bytes([ONE]) + req("GET", "/reset"))
    write(t, "fault-delay", bytes([ONE]) + req("GET", "/delay/1") + req("GET", "/delay/2"))
    write(t, "fault-delay-abort", bytes([ONE]) +
          req("POST", "/slowfail", [("content-length", "3")], b"abc") + req("GET", "/"))
    write(t, "fault-dice", bytes([ONE]) + b"".join(req("GET", "/dice/%d" % i) for i in range(6)))
    write(t, "fault-regex", bytes([ONE]) + req("GET", "/re/123") + req("GET", "/re/123", [("authorization", "x")]))
    write(t, "fault-header", bytes([ONE]) + req("GET", "/h", [("x-fault", "abort")]))
    write(t, "fault-header-reset", bytes([ONE]) +
          req("POST", "/p", [("x-chaos", "1"), ("x-tenant", "t-9"), ("content-length", "2")], b"hi"))
    write(t, "fault-grpc-over-h1", bytes([ONE]) +
          req("POST", "/fuzz.Svc/Call", [("content-type", "application/grpc"), ("content-length", "5")],
              b"\x00\x00\x00\x00\x00"))
    write(t, "incomplete-head", bytes([BYTES]) + b"GET / HTTP/1.1\r\nhost: fuzz.test\r\nx-slow: ")
    write(t, "smuggling-cl-te", bytes([ONE]) +
          req("POST", "/", [("content-length", "4"), ("transfer-encoding", "chunked")], b"0\r\n\r\nGET /x HTTP/1.1\r\n\r\n"))
    write(t, "bad-version", bytes([ONE]) + b"GET / HTTP/9.9\r\n\r\n")
    write(t, "bad-header", bytes([ONE]) + b"GET / HTTP/1.1\r\nbad header\x01: v\r\n\r\n")
    write(t, "non-http", bytes([ONE]) + b"hello, this is not HTTP\r\n\x00\xff\xfe")
    write(t, "tls-client-hello", bytes([ONE]) + client_hello())
    write(t, "h2-preface", bytes([ONE]) + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
    write(t, "empty", b"")


# ---- HTTP/1.1 responses: scenario byte (request in bits 0-3), frag byte ----

def resp(status, reason, headers=(), body=b"", version="HTTP/1.1"):
    head = ["%s %d %s" % (version, status, reason)] + ["%s: %s" % h for h in headers]
    return crlf(*head) + b"\r\n" + body


def http1_response_corpus():
    t = "fuzz_http1_response"
    GET, HEAD, POST, CHUNKED_POST, TWO_GETS, UPGRADE, CONNECT, DELAYED = range(8)
    CLOSE_REQ, HTTP10, GET_HEAD, DELAYED_HEAD, EXPECT, OPTIONS, THREE, DELETE = range(8, 16)
    FIN_AT_ONCE, RST, EARLY_FIN = 0x10, 0x20, 0x40
    ok = resp(200, "OK", [("content-length", "5")], b"hello")
    write(t, "content-length", bytes([GET, ONE]) + ok)
    write(t, "content-length-bytewise", bytes([GET, BYTES]) + ok)
    write(t, "chunked", bytes([GET, SMALL]) +
          resp(200, "OK", [("transfer-encoding", "chunked")],
               chunked(b"hello", b" ", b"world", trailers=[("x-t", "1")])))
    write(t, "close-delimited", bytes([GET, TWO]) + resp(200, "OK", [], b"until the upstream closes"))
    write(t, "close-delimited-early-fin", bytes([GET | EARLY_FIN, ONE]) + resp(200, "OK", [], b"body"))
    write(t, "http10-response", bytes([HTTP10, ONE]) + resp(200, "OK", [], b"old", version="HTTP/1.0"))
    write(t, "continue-then-201", bytes([EXPECT, ONE]) +
          resp(100, "Continue") + resp(201, "Created", [("content-length", "0")]))
    write(t, "early-hints", bytes([GET, SMALL]) +
          resp(103, "Early Hints", [("link", "</s.css>; rel=preload")]) + ok)
    write(t, "switching-protocols", bytes([UPGRADE, ONE]) +
          resp(101, "Switching Protocols", [("upgrade", "websocket"), ("connection", "upgrade"),
                                            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")])
          + b"\x81\x05hello")
    write(t, "upgrade-refused", bytes([UPGRADE, ONE]) + resp(426, "Upgrade Required", [("content-length", "0")]))
    write(t, "connect-established", bytes([CONNECT, ONE]) +
          resp(200, "Connection Established") + b"\x16\x03\x03\x00\x02\x02\x00")
    write(t, "connect-refused", bytes([CONNECT | RST, ONE]) +
          resp(407, "Proxy Authentication Required", [("content-length", "0")]))
    write(t, "head-response", bytes([HEAD, ONE]) + resp(200, "OK", [("content-length", "1234")]))
    write(t, "head-delayed", bytes([DELAYED_HEAD, ONE]) + resp(200, "OK", [("content-length", "9")]))
    write(t, "pipelined", bytes([TWO_GETS, SMALL]) + ok + resp(404, "Not Found", [("content-length", "0")]))
    write(t, "pipelined-head", bytes([GET_HEAD, ONE]) + ok + resp(200, "OK", [("content-length", "77")]))
    write(t, "three", bytes([THREE, MEDIUM]) + ok + resp(201, "Created", [("content-length", "0")]) +
          resp(200, "OK", [("transfer-encoding", "chunked")], chunked(b"x")))
    write(t, "delayed-marker", bytes([DELAYED, ONE]) + resp(200, "OK", [("content-length", "2")], b"ok"))
    write(t, "delayed-marker-bytewise", bytes([DELAYED, BYTES]) + resp(200, "OK", [("x-a", "b")], b"eof"))
    write(t, "no-content", bytes([DELETE, ONE]) + resp(204, "No Content") + resp(304, "Not Modified"))
    write(t, "connection-close", bytes([CLOSE_REQ | FIN_AT_ONCE, ONE]) +
          resp(200, "OK", [("connection", "close"), ("content-length", "2")], b"ok"))
    write(t, "keep-alive-then-close", bytes([POST, ONE]) +
          resp(200, "OK", [("content-length", "2")], b"ok"))
    write(t, "chunked-post", bytes([CHUNKED_POST | EARLY_FIN, ONE]) +
          resp(200, "OK", [("content-length", "0")]))
    write(t, "options", bytes([OPTIONS, ONE]) + resp(200, "OK", [("allow", "GET, HEAD"), ("content-length", "0")]))
    write(t, "short-body", bytes([GET | RST, ONE]) + resp(200, "OK", [("content-length", "100")], b"short"))
    write(t, "invalid", bytes([GET, ONE]) + b"this is not a response\r\n\r\n")
    write(t, "nothing", bytes([GET, ONE]))


# ---- HTTP/2 ----

def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def hint(n, prefix_bits, first):
    """HPACK integer with a prefix_bits-bit prefix; first holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = [first | limit]
    n -= limit
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def hstr(s):
    s = s.encode() if isinstance(s, str) else s
    return hint(len(s), 7, 0) + s


def lit(name, value):
    """Literal field without indexing, new name."""
    return b"\x00" + hstr(name) + hstr(value)


def lit_idx(index, value):
    """Literal field without indexing, name from the static table."""
    return hint(index, 4, 0) + hstr(value)


def idx(index):
    return hint(index, 7, 0x80)


def request_block(method="GET", path="/", extra=()):
    b = {"GET": idx(2), "POST": idx(3)}.get(method) or lit_idx(2, method)
    b += idx(6)  # :scheme http
    b += idx(4) if path == "/" else lit_idx(4, path)
    b += lit_idx(1, "fuzz.test")
    for n, v in extra:
        b += lit(n, v)
    return b


GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def h2_server_corpus():
    t = "fuzz_h2_server"
    s = settings((2, 0), (4, 65535))
    ack = frame(SETTINGS, ACK, 0, b"")
    write(t, "settings", bytes([ONE]) + s + ack)
    write(t, "get", bytes([ONE]) + s + frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block()))
    write(t, "get-bytewise", bytes([BYTES]) + s + frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block()))
    write(t, "post-data", bytes([SMALL]) + s +
          frame(HEADERS, END_HEADERS, 1, request_block("POST", "/form", [("content-length", "10")])) +
          frame(DATA, 0, 1, b"hello") + frame(DATA, END_STREAM, 1, b"world"))
    blk = request_block("GET", "/continued", [("x-long", "v" * 200)])
    write(t, "continuation", bytes([ONE]) + s +
          frame(HEADERS, END_STREAM, 1, blk[:20]) + frame(CONTINUATION, 0, 1, blk[20:100]) +
          frame(CONTINUATION, END_HEADERS, 1, blk[100:]))
    write(t, "faults", bytes([ONE]) + s +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block("GET", "/abort")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 3, request_block("GET", "/reset")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 5, request_block("GET", "/delay/x")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 7, request_block("POST", "/slowfail")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 9, request_block("GET", "/dice/1")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 11, request_block("GET", "/h", [("x-fault", "abort")])))
    msg = b"\x00\x00\x00\x00\x03abc"
    write(t, "grpc", bytes([ONE]) + s +
          frame(HEADERS, END_HEADERS, 1, request_block("POST", "/fuzz.Svc/Call", GRPC)) +
          frame(DATA, END_STREAM, 1, msg) +
          frame(HEADERS, END_HEADERS, 3, request_block("POST", "/fuzz.Slow/Call", GRPC)) +
          frame(DATA, END_STREAM, 3, msg) +
          frame(HEADERS, END_HEADERS, 5, request_block("POST", "/fuzz.Echo/Call", GRPC)) +
          frame(DATA, 0, 5, msg) + frame(HEADERS, END_STREAM | END_HEADERS, 5, lit("x-trailer", "1")))
    write(t, "control", bytes([TWO]) + s + ack +
          frame(PING, 0, 0, b"12345678") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)) +
          frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15)) +
          frame(HEADERS, END_HEADERS, 1, request_block("POST", "/up")) +
          frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 4096)) +
          frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) +
          frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0) + b"bye"))
    write(t, "padded-priority", bytes([ONE]) + s +
          frame(HEADERS, END_HEADERS | PADDED | PRIO, 1,
                b"\x04" + struct.pack(">IB", 0, 200) + request_block("POST", "/pad") + b"\x00" * 4) +
          frame(DATA, END_STREAM | PADDED, 1, b"\x03xyz\x00\x00\x00"))
    write(t, "many-streams", bytes([MEDIUM]) + s +
          b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, request_block("GET", "/s%d" % i))
                   for i in range(20)))
    write(t, "rapid-reset", bytes([ONE]) + s +
          b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, request_block("POST", "/r")) +
                   frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", 8)) for i in range(30)))
    write(t, "headers-on-stream-0", bytes([ONE]) + s + frame(HEADERS, END_HEADERS, 0, request_block()))
    write(t, "data-on-idle-stream", bytes([ONE]) + s + frame(DATA, END_STREAM, 7, b"x"))
    write(t, "push-promise-from-client", bytes([ONE]) + s +
          frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + request_block()))
    write(t, "bad-hpack", bytes([ONE]) + s + frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\xff\xff\xff"))
    write(t, "empty", bytes([ONE]))


def h2_client_corpus():
    t = "fuzz_h2_client"
    GET, POST, GRPC_CALL, TWO_GETS = range(4)
    FIN_AT_ONCE, RST = 0x04, 0x08
    s = settings((3, 100), (4, 65535))
    ack = frame(SETTINGS, ACK, 0, b"")
    status200 = idx(8)
    write(t, "headers-only", bytes([GET, ONE]) + s + ack +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, status200))
    write(t, "headers-data", bytes([GET, SMALL]) + s + ack +
          frame(HEADERS, END_HEADERS, 1, status200 + lit_idx(28, "5")) + frame(DATA, END_STREAM, 1, b"hello"))
    write(t, "headers-data-bytewise", bytes([POST, BYTES]) + s + ack +
          frame(HEADERS, END_HEADERS, 1, status200) + frame(DATA, END_STREAM, 1, b"ok"))
    blk = status200 + lit("x-big", "b" * 300)
    write(t, "continuation", bytes([GET, ONE]) + s + ack +
          frame(HEADERS, 0, 1, blk[:10]) + frame(CONTINUATION, END_HEADERS, 1, blk[10:]) +
          frame(DATA, END_STREAM, 1, b""))
    write(t, "grpc-ok", bytes([GRPC_CALL, ONE]) + s + ack +
          frame(HEADERS, END_HEADERS, 1, status200 + lit_idx(31, "application/grpc")) +
          frame(DATA, 0, 1, b"\x00\x00\x00\x00\x02hi") +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, lit("grpc-status", "0") + lit("grpc-message", "ok")))
    write(t, "grpc-trailers-only", bytes([GRPC_CALL, TWO]) + s + ack +
          frame(HEADERS, END_STREAM | END_HEADERS, 1,
                status200 + lit_idx(31, "application/grpc") + lit("grpc-status", "14")))
    write(t, "interim-100", bytes([POST, ONE]) + s + ack +
          frame(HEADERS, END_HEADERS, 1, lit_idx(8, "100")) +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, idx(13)))  # :status 404
    write(t, "rst-stream", bytes([POST | RST, ONE]) + s + ack + frame(RST_STREAM, 0, 1, struct.pack(">I", 2)))
    write(t, "goaway", bytes([TWO_GETS, ONE]) + s + ack +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, status200) +
          frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    write(t, "two-streams", bytes([TWO_GETS, MEDIUM]) + s + ack +
          frame(HEADERS, END_HEADERS, 3, status200) + frame(HEADERS, END_HEADERS, 1, idx(14)) +
          frame(DATA, END_STREAM, 3, b"three") + frame(DATA, END_STREAM, 1, b"one"))
    write(t, "control", bytes([GET | FIN_AT_ONCE, ONE]) + s + ack +
          frame(PING, 0, 0, b"pingpong") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100000)) +
          frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)) +
          frame(HEADERS, END_STREAM | END_HEADERS, 1, status200))
    write(t, "push-promise", bytes([GET, ONE]) + s + ack +
          frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + request_block()))
    write(t, "large-data", bytes([POST, MEDIUM]) + s + ack +
          frame(HEADERS, END_HEADERS, 1, status200) +
          b"".join(frame(DATA, 0, 1, bytes([65 + i]) * 512) for i in range(4)) + frame(DATA, END_STREAM, 1, b""))
    write(t, "no-settings", bytes([GET, ONE]) + frame(HEADERS, END_STREAM | END_HEADERS, 1, status200))
    write(t, "http1-answer", bytes([GET, ONE]) + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    write(t, "nothing", bytes([GET, ONE]))


def main():
    http1_request_corpus()
    http1_response_corpus()
    h2_server_corpus()
    h2_client_corpus()
    remove_stale()


if __name__ == "__main__":
    main()
