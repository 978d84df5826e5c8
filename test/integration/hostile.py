#!/usr/bin/env python3
"""Crafted clients and misbehaving backends for test/integration/hostile.sh.

Standard library only. Every client talks to 127.0.0.1 only, every loop is
bounded in count and in time, and each prints one line of KEY=VALUE fields that
the shell script asserts on:

  backend MODE PORT          a backend that prints "ready" once it listens:
      up101    answers every request head with 101 Switching Protocols, then closes
      count    answers 200 to every request and counts them; GET /__count (sent to it
               directly) answers "requests=N" and is not counted itself
      silent   accepts, reads, never writes, never closes
      fin2     reads two request heads, then closes (FIN) without answering
      rst2     reads two request heads, then resets the connection (RST)
      backlog  listen(2) with backlog 0 and never accept()s; the queue is pre-filled
               so further SYNs are dropped
  upgrade-keepalive PORT N   GET / with Upgrade: foo, then N requests /x/I on one connection
  upgrade-101 PORT           an Upgrade request answered 101; how long until EOF
  h1-nonreader PORT SECS PID CAP_KB    pipelines GET /x/I for SECS s, never reads
  h2-nonreader PORT CONNS SECS PID CAP_KB   CONNS h2c connections flooding PING, never read
  long-target PORT LEN NPIPE  a LEN-byte target, then NPIPE pipelined requests
  long-target-partial PORT LEN SECS   a LEN-byte target whose line never ends
  hpack-bomb PORT SECS RATE   HEADERS+CONTINUATION blocks that expand to ~48 MB each
  smuggle PORT NAME           one bad-framing request on a fresh connection
  count PORT                  asks a `backend count` for its count
  pipeline PORT N PREFIX SECS N pipelined GET PREFIX/I; order and time of the answers
  slowloris PORT N SECS       N heads trickling one byte per second
  churn PORT TOTAL BATCH      TOTAL connections opened and closed BATCH at a time

CAP_KB is a safety valve: the flooding clients stop early (early_stop=1) when the
daemon's VmRSS passes it, so a daemon that buffers without bound cannot take the
machine down with it.
"""
import errno
import re
import select
import socket
import struct
import sys
import threading
import time

HOST = '127.0.0.1'


def out(**kv):
    print(' '.join('%s=%s' % (k, v) for k, v in kv.items()), flush=True)


def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def connect(port, rcvbuf=0, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # before connect(), so that the advertised window is small from the start
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


# ---- reading HTTP/1.1 responses ------------------------------------------------

class Reader:
    """Buffered reads from a socket, each bounded by an absolute deadline."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b''
        self.eof = False
        self.reset = False

    def fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.s], [], [], left)
        if not r:
            return False
        try:
            d = self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            return False
        except (BlockingIOError, socket.timeout):
            return True
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def until(self, delim, deadline):
        while delim not in self.buf:
            if not self.fill(deadline):
                return None
        i = self.buf.index(delim) + len(delim)
        r, self.buf = self.buf[:i], self.buf[i:]
        return r

    def exactly(self, n, deadline):
        while len(self.buf) < n:
            if not self.fill(deadline):
                return None
        r, self.buf = self.buf[:n], self.buf[n:]
        return r

    def to_eof(self, deadline):
        while self.fill(deadline):
            pass
        r, self.buf = self.buf, b''
        return r


def read_response(rd, deadline):
    """Returns (status, headers, body) or None when no whole response arrived."""
    head = rd.until(b'\r\n\r\n', deadline)
    if head is None:
        return None
    lines = head[:-4].split(b'\r\n')
    m = re.match(rb'HTTP/1\.[01] (\d{3})', lines[0])
    if not m:
        return (-1, {}, head)
    status = int(m.group(1))
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b':')
        hdrs[k.strip().lower().decode('latin-1')] = v.strip().decode('latin-1')
    if 100 <= status < 200 or status in (204, 304):
        return (status, hdrs, b'')
    if 'chunked' in hdrs.get('transfer-encoding', '').lower():
        body = b''
        while True:
            line = rd.until(b'\r\n', deadline)
            if line is None:
                return None
            size = int(line.split(b';')[0].strip() or b'0', 16)
            if size == 0:
                while True:  # trailers
                    t = rd.until(b'\r\n', deadline)
                    if t is None or t == b'\r\n':
                        break
                return (status, hdrs, body)
            chunk = rd.exactly(size + 2, deadline)
            if chunk is None:
                return None
            body += chunk[:-2]
    if 'content-length' in hdrs:
        body = rd.exactly(int(hdrs['content-length']), deadline)
        if body is None:
            return None
        return (status, hdrs, body)
    return (status, hdrs, rd.to_eof(deadline))


def get(path):
    return b'GET %s HTTP/1.1\r\nHost: x\r\n\r\n' % path.encode()


# ---- backends ----------------------------------------------------------------------

def serve(port, handler, backlog=128):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(backlog)
    print('ready', flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def backend_up101(c):
    try:
        rd = Reader(c)
        if rd.until(b'\r\n\r\n', time.monotonic() + 10) is not None:
            c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n')
    except OSError:
        pass
    c.close()


COUNT = {'requests': 0, 'last': '-'}
COUNT_LOCK = threading.Lock()


def backend_count(c):
    rd = Reader(c)
    try:
        for _ in range(100000):
            head = rd.until(b'\r\n\r\n', time.monotonic() + 60)
            if head is None:
                break
            first = head.split(b'\r\n', 1)[0].decode('latin-1')
            lower = head.lower()
            if first.startswith('GET /__count '):
                with COUNT_LOCK:
                    body = ('requests=%d last=%s\n' % (COUNT['requests'], COUNT['last'].replace(' ', '_'))).encode()
            else:
                with COUNT_LOCK:
                    COUNT['requests'] += 1
                    COUNT['last'] = first
                m = re.search(rb'\r\ncontent-length:\s*(\d+)', lower)
                if b'\r\ntransfer-encoding:' in lower:
                    rd.until(b'0\r\n\r\n', time.monotonic() + 5)
                elif m:
                    rd.exactly(int(m.group(1)), time.monotonic() + 5)
                body = b'counted\n'
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body))
    except OSError:
        pass
    c.close()


HELD = []


def backend_silent(c):
    HELD.append(c)  # never closed
    try:
        for _ in range(1 << 30):
            if not c.recv(65536):
                break
    except OSError:
        pass
    # stays open: the peer's close is not answered


def backend_close_after_two(c, rst):
    rd = Reader(c)
    try:
        for _ in range(2):
            if rd.until(b'\r\n\r\n', time.monotonic() + 10) is None:
                break
        if rst:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    except OSError:
        pass
    c.close()


def backend_backlog(port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(0)
    filled = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((HOST, port))
        _, w, _ = select.select([], [s], [], 0.3)
        filled.append(s)
        if not w or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            break  # this SYN was dropped: the queue is full
    print('ready prefilled=%d' % len(filled), flush=True)
    while True:
        time.sleep(3600)


def cmd_backend(a):
    mode, port = a[0], int(a[1])
    if mode == 'backlog':
        backend_backlog(port)
    serve(port, {'up101': backend_up101, 'count': backend_count, 'silent': backend_silent,
                 'fin2': lambda c: backend_close_after_two(c, False),
                 'rst2': lambda c: backend_close_after_two(c, True)}[mode])


def cmd_count(a):
    s = connect(int(a[0]))
    s.sendall(get('/__count'))
    r = read_response(Reader(s), time.monotonic() + 3)
    s.close()
    print(r[2].decode().strip() if r else 'requests=? last=none', flush=True)


# ---- 1. upgrade -----------------------------------------------------------------

def cmd_upgrade_keepalive(a):
    port, n = int(a[0]), int(a[1])
    s = connect(port)
    rd = Reader(s)
    end = time.monotonic() + 20
    s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n')
    r = read_response(rd, min(end, time.monotonic() + 3))
    first = r[0] if r else 0
    codes = {}
    got = 0
    for i in range(n):
        if time.monotonic() > end:
            break
        try:
            s.sendall(get('/x/%d' % i))
        except OSError:
            break
        r = read_response(rd, min(end, time.monotonic() + 2))
        if r is None:
            break
        got += 1
        codes[r[0]] = codes.get(r[0], 0) + 1
    s.close()
    out(first=first, answered=got, n503=codes.get(503, 0),
        codes=','.join('%d:%d' % kv for kv in sorted(codes.items())) or '-')


def cmd_upgrade_101(a):
    port = int(a[0])
    s = connect(port)
    rd = Reader(s)
    t0 = time.monotonic()
    s.sendall(b'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n')
    r = read_response(rd, t0 + 3)
    status = r[0] if r else 0
    rest = rd.to_eof(t0 + 5)
    eof_ms = int((time.monotonic() - t0) * 1000) if rd.eof else -1
    s.close()
    out(status=status, eof=int(rd.eof), eof_ms=eof_ms, extra=len(rest))


# ---- 2. clients that never read -----------------------------------------------------

def flood(socks, chunk_for, secs, pid, cap_kb, period=0.0):
    """Writes chunk_for(i) to every socket as fast as it takes (or every `period`
    seconds), never reading. Samples the daemon's RSS every second."""
    for s in socks:
        s.setblocking(False)
    pending = [bytearray() for _ in socks]
    alive = [True] * len(socks)
    t0 = time.monotonic()
    end = t0 + secs
    next_sample, next_check, next_burst = t0 + 1, t0, t0
    samples, rss_max, sent, early, peer_closed = [], 0, 0, 0, 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_check:
            r = rss_kb(pid)
            rss_max = max(rss_max, r)
            next_check = now + 0.05
            if now >= next_sample:
                samples.append(r)
                next_sample += 1
            if r > cap_kb:
                early = 1
                break
        if now >= next_burst:
            for i in range(len(socks)):
                if alive[i] and len(pending[i]) < 65536:
                    pending[i] += chunk_for(i)
            next_burst = now + period
        ws = [socks[i] for i in range(len(socks)) if alive[i] and pending[i]]
        if not any(alive):
            break
        wait = min(0.05, max(0.0, end - now))
        if period:
            wait = min(wait, max(0.0, next_burst - time.monotonic()))
        if ws:
            _, w, _ = select.select([], ws, [], wait)
        else:
            w = []
            time.sleep(wait)
        for s in w:
            i = socks.index(s)
            try:
                k = s.send(pending[i])
                sent += k
                del pending[i][:k]
            except BlockingIOError:
                pass
            except OSError:
                alive[i] = False
                peer_closed += 1
    r = rss_kb(pid)
    rss_max = max(rss_max, r)
    for s in socks:
        s.close()
    return dict(sent_bytes=sent, rss_max_kb=rss_max, rss_samples=','.join(map(str, samples)) or '-',
                early_stop=early, peer_closed=peer_closed,
                secs='%.1f' % (time.monotonic() - t0))


def cmd_h1_nonreader(a):
    port, secs, pid, cap = int(a[0]), float(a[1]), int(a[2]), int(a[3])
    s = connect(port, rcvbuf=8192)
    seq = [0]

    def batch(_):
        b = b''.join(get('/x/%d' % (seq[0] + k)) for k in range(500))
        seq[0] += 500
        return b
    r = flood([s], batch, secs, pid, cap)
    out(requests_sent=seq[0], **r)


PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


def frame(ftype, flags, sid, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([ftype, flags]) + struct.pack('>I', sid) + payload


def cmd_h2_nonreader(a):
    port, n, secs, pid, cap = int(a[0]), int(a[1]), float(a[2]), int(a[3]), int(a[4])
    socks = []
    for _ in range(n):
        s = connect(port, rcvbuf=8192)
        s.sendall(PREFACE + frame(4, 0, 0))
        socks.append(s)
    burst = frame(6, 0, 0, b'hostile!') * 50
    r = flood(socks, lambda i: burst, secs, pid, cap, period=0.01)
    out(conns=n, **r)


# ---- 3. a 63,000-byte request target ---------------------------------------------

def cmd_long_target(a):
    port, n, npipe = int(a[0]), int(a[1]), int(a[2])
    prefix = a[3].encode() if len(a) > 3 else b'/'
    s = connect(port)
    rd = Reader(s)
    req = b'GET ' + prefix + b'a' * n + b' HTTP/1.1\r\nHost: x\r\n\r\n'
    req += b''.join(get('/x/%d' % i) for i in range(npipe))
    box = {}

    def reader():
        t = time.monotonic() + 5
        r = read_response(rd, t)
        box['first'] = r
        box['rest'] = rd.to_eof(t)
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        s.sendall(req)
        send_ok = 1
    except OSError:
        send_ok = 0  # the server may close before it has read everything
    th.join(7)
    s.close()
    r = box.get('first')
    rest = box.get('rest', b'')
    line = r and r[0]
    out(status=line or 0, sent_all=send_ok, eof=int(rd.eof), reset=int(rd.reset),
        extra_bytes=len(rest), extra_responses=len(re.findall(rb'HTTP/1\.[01] \d{3}', rest)),
        n503=len(re.findall(rb'HTTP/1\.[01] 503', rest)), n200=len(re.findall(rb'HTTP/1\.[01] 200', rest)))


def cmd_long_target_partial(a):
    port, n, secs = int(a[0]), int(a[1]), float(a[2])
    s = connect(port)
    rd = Reader(s)
    t0 = time.monotonic()
    s.sendall(b'GET /' + b'a' * n)
    line = rd.until(b'\r\n', t0 + secs)
    ms = int((time.monotonic() - t0) * 1000)
    s.close()
    out(line=(line or b'none').decode('latin-1').strip().replace(' ', '_'), ms=ms if line else -1)


# ---- 4. HPACK bomb ----------------------------------------------------------------

def hpack_int(v, bits, first):
    lim = (1 << bits) - 1
    if v < lim:
        return bytes([first | v])
    b = [first | lim]
    v -= lim
    while v >= 128:
        b.append((v & 0x7f) | 0x80)
        v >>= 7
    b.append(v)
    return bytes(b)


def bomb_block(value_len=4000, refs=12000):
    blk = b'\x82\x86\x84'             # :method GET, :scheme http, :path / (static)
    blk += b'\x01\x01x'                 # :authority x (static name 1, not indexed)
    blk += b'\x40\x06x-bomb' + hpack_int(value_len, 7, 0) + b'b' * value_len  # incremental indexing
    blk += b'\xbe' * refs               # index 62: the entry just added, again and again
    return blk


def header_frames(sid, blk, maxf=16384):
    parts = [blk[i:i + maxf] for i in range(0, len(blk), maxf)]
    fr = []
    for k, p in enumerate(parts):
        last = k == len(parts) - 1
        if k == 0:
            fr.append(frame(1, 0x1 | (0x4 if last else 0), sid, p))  # HEADERS, END_STREAM
        else:
            fr.append(frame(9, 0x4 if last else 0, sid, p))          # CONTINUATION
    return b''.join(fr)


def cmd_hpack_bomb(a):
    port, secs, rate = int(a[0]), float(a[1]), float(a[2])
    blk = bomb_block()
    stats = {'rst': 0, 'goaway': 0, 'settings': 0}
    lock = threading.Lock()

    def reader(s, st):
        buf = b''
        end = time.monotonic() + secs + 3
        while time.monotonic() < end and not st['closed']:
            try:
                r, _, _ = select.select([s], [], [], 0.2)
                if not r:
                    continue
                d = s.recv(65536)
            except (OSError, ValueError):
                break
            if not d:
                break
            buf += d
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], 'big')
                if len(buf) < 9 + ln:
                    break
                ft, fl = buf[3], buf[4]
                buf = buf[9 + ln:]
                with lock:
                    if ft == 3:
                        stats['rst'] += 1
                    elif ft == 7:
                        stats['goaway'] += 1
                    elif ft == 4 and not fl & 1:
                        stats['settings'] += 1
                        try:
                            s.sendall(frame(4, 1, 0))  # SETTINGS ACK
                        except OSError:
                            pass
        st['closed'] = True

    t0 = time.monotonic()
    end = t0 + secs
    sent, blocks, conns = 0, 0, 0
    while time.monotonic() < end and conns < 400:
        try:
            s = connect(port, timeout=1)
        except OSError:
            time.sleep(0.05)
            continue
        conns += 1
        st = {'closed': False}
        th = threading.Thread(target=reader, args=(s, st), daemon=True)
        th.start()
        with lock:
            s.sendall(PREFACE + frame(4, 0, 0))
        sid = 1
        while time.monotonic() < end and not st['closed'] and sid < (1 << 31) - 2:
            data = header_frames(sid, blk)
            try:
                with lock:
                    s.sendall(data)
            except socket.timeout:
                continue  # the daemon is not reading just now
            except OSError:
                break
            sent += len(data)
            blocks += 1
            sid += 2
            pause = t0 + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, max(0.0, end - time.monotonic())))
        st['closed'] = True
        th.join(1)
        s.close()
    with lock:
        out(blocks=blocks, sent_bytes=sent, conns=conns, block_bytes=len(blk),
            rst=stats['rst'], goaway=stats['goaway'], frames_back=stats['rst'] + stats['goaway'])


# ---- 6. smuggling and bad framing -----------------------------------------------

SMUGGLE = {
    'te-xchunked': b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    'chunk-huge': b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n',
    'chunk-negative': b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n',
    'cl-and-te': b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'two-cl': b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
    'obs-fold': b'GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n',
    'space-colon': b'GET / HTTP/1.1\r\nHost: x\r\nX-Spaced : a\r\n\r\n',
    'normal-post': b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
}


def cmd_smuggle(a):
    port, name = int(a[0]), a[1]
    s = connect(port)
    rd = Reader(s)
    t0 = time.monotonic()
    s.sendall(SMUGGLE[name])
    r = read_response(rd, t0 + 2)
    status = r[0] if r else 0
    if name != 'normal-post':
        rd.to_eof(t0 + 2)
    s.close()
    out(status=status, closed=int(rd.eof), ms=int((time.monotonic() - t0) * 1000))


# ---- 7. pipelined delays --------------------------------------------------------

def cmd_pipeline(a):
    port, n, prefix, secs = int(a[0]), int(a[1]), a[2], float(a[3])
    s = connect(port)
    rd = Reader(s)
    t0 = time.monotonic()
    end = t0 + secs
    box = {}

    def sender():
        try:
            s.sendall(b''.join(get('%s%d' % (prefix, i)) for i in range(n)))
            box['ok'] = 1
        except OSError:
            box['ok'] = 0
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got, inorder, codes = 0, 0, set()
    for i in range(n):
        r = read_response(rd, end)
        if r is None:
            break
        got += 1
        codes.add(r[0])
        if r[0] == 200 and r[2].strip() == ('%s%d' % (prefix, i)).encode():
            inorder += 1
    ms = int((time.monotonic() - t0) * 1000)
    th.join(1)
    s.close()
    out(got=got, inorder=inorder, ms=ms, codes=','.join(map(str, sorted(codes))) or '-')


# ---- 8. slowloris ----------------------------------------------------------------

def cmd_slowloris(a):
    port, n, secs = int(a[0]), int(a[1]), float(a[2])
    t0 = time.monotonic()
    socks, bufs, closed, first = [], [], [], []
    for _ in range(n):
        s = connect(port)
        s.sendall(b'GET / HTTP/1.1\r\n')
        s.setblocking(False)
        socks.append(s)
        bufs.append(b'')
        closed.append(-1.0)
        first.append(-1.0)
    trickle = b'X-Slow: ' + b's' * 64
    pos, next_byte = 0, t0 + 1
    end = t0 + secs
    while time.monotonic() < end:
        open_ = [s for i, s in enumerate(socks) if closed[i] < 0]
        if not open_:
            break
        r, _, _ = select.select(open_, [], [], 0.05)
        now = time.monotonic()
        for s in r:
            i = socks.index(s)
            try:
                d = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                d = b''
            except BlockingIOError:
                continue
            if d:
                if first[i] < 0:
                    first[i] = now - t0
                bufs[i] += d
            else:
                closed[i] = now - t0
        if now >= next_byte and pos < len(trickle):
            for i, s in enumerate(socks):
                if closed[i] < 0 and first[i] < 0:
                    try:
                        s.send(trickle[pos:pos + 1])
                    except OSError:
                        pass  # it is being closed; the read side notes it
            pos += 1
            next_byte += 1
    for s in socks:
        s.close()
    n408 = sum(1 for b in bufs if b.startswith(b'HTTP/1.1 408'))
    nclosed = sum(1 for c in closed if c >= 0)
    out(conns=n, n408=n408, closed=nclosed, max_408_ms=int(max(first) * 1000) if n408 else -1,
        max_close_ms=int(max(closed) * 1000) if nclosed == n else -1,
        other=','.join(sorted(set(b.split(b'\r\n')[0].decode('latin-1').replace(' ', '_') or 'none'
                                  for b in bufs if not b.startswith(b'HTTP/1.1 408')))) or '-')


# ---- 9. descriptor churn -----------------------------------------------------------

def cmd_churn(a):
    port, total, batch = int(a[0]), int(a[1]), int(a[2])
    t0 = time.monotonic()
    done, errors = 0, 0
    linger0 = struct.pack('ii', 1, 0)
    while done < total and time.monotonic() < t0 + 60:
        socks = []
        for _ in range(min(batch, total - done)):
            try:
                socks.append(connect(port, timeout=2))
            except OSError:
                errors += 1
        for j, s in enumerate(socks):
            k = (done + j) % 3
            try:
                if k == 1:
                    s.sendall(b'GET /hal')
                elif k == 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
            except OSError:
                errors += 1
            s.close()
        done += len(socks) or batch
    out(connections=done, errors=errors, ms=int((time.monotonic() - t0) * 1000))


CMDS = {
    'backend': cmd_backend, 'count': cmd_count,
    'upgrade-keepalive': cmd_upgrade_keepalive, 'upgrade-101': cmd_upgrade_101,
    'h1-nonreader': cmd_h1_nonreader, 'h2-nonreader': cmd_h2_nonreader,
    'long-target': cmd_long_target, 'long-target-partial': cmd_long_target_partial,
    'hpack-bomb': cmd_hpack_bomb, 'smuggle': cmd_smuggle, 'pipeline': cmd_pipeline,
    'slowloris': cmd_slowloris, 'churn': cmd_churn,
}

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    try:
        CMDS[sys.argv[1]](sys.argv[2:])
    except KeyboardInterrupt:
        sys.exit(130)
