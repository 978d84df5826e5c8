#!/usr/bin/env bash
# Client timeouts and the graceful end of HTTP/2 connections, timed from a
# client's side: --header-timeout (408 for a head that does not arrive, counted
# from the head's first byte, also on a reused keep-alive connection),
# --idle-timeout for HTTP/1.1 (close) and HTTP/2 (GOAWAY, then close), and
# SIGTERM with an HTTP/2 stream in flight (GOAWAY at once, the stream finishes,
# the daemon exits without waiting out its 10 s drain bound).
source "$(dirname "$0")/lib.sh"
fl_ports 18600
need node

start_backend || { fail "backend starts"; fl_finish; }
next_port H2UP
next_port P

# An h2c upstream (prior knowledge): /hello answers at once, /sleep after 1.5 s,
# /bye answers and then closes its connection gracefully (GOAWAY).
cat >"$FL_TMP/h2up.js" <<'EOJ'
const http2 = require('http2');
const srv = http2.createServer();
srv.on('stream', (s, h) => {
  const reply = () => { s.respond({ ':status': 200 }); s.end('hello\n'); };
  if (h[':path'] === '/sleep') setTimeout(() => { if (!s.destroyed) reply(); }, 1500);
  else if (h[':path'] === '/bye') { const sess = s.session; reply(); s.on('close', () => sess.close()); }
  else reply();
});
srv.listen(+process.argv[2], '127.0.0.1');
EOJ
node "$FL_TMP/h2up.js" "$H2UP" & fl_track $!
wait_port 127.0.0.1 "$H2UP" 5 || fail "h2c upstream starts"
next_port P2

policy=$(write_policy timeouts <<EOF
apiVersion: faultline/v1
kind: FaultPolicy
metadata: {name: timeouts}
spec:
  listeners:
    - {name: h1, listen: "127.0.0.1:$P", upstream: "127.0.0.1:$BACKEND_PORT"}
    - {name: h2, listen: "127.0.0.1:$P2", upstream: "127.0.0.1:$H2UP"}
  rules:
    - {name: aborted, on: [h1], match: {path: {prefix: /abort}}, fault: {abort: {status: 503}}}
EOF
)
start_faultline "$policy" "$P" --header-timeout 1s --idle-timeout 2s || { fail "faultline starts"; fl_finish; }

# HTTP/1.1 client: optionally one full request first, then after PAUSE ms the
# start of a head that never ends (or nothing). Prints the ms from that start
# (or from the first answer, when there is no partial head) to the server's
# answer and close: "<ms to the answer> <ms to close> <the answer's first line>".
cat >"$FL_TMP/h1.js" <<'EOJ'
const net = require('net');
const [port, first, pause, partial] = [+process.argv[2], process.argv[3] === 'yes', +process.argv[4], process.argv[5] === 'yes'];
const firstPath = process.argv[6] || '/';
const s = net.connect(port, '127.0.0.1');
let t0 = 0, buf = '', answered = -1, stage = first ? 'first' : 'partial';
const startPartial = () => { stage = 'partial'; buf = ''; t0 = Date.now(); if (partial) s.write('GET /x HTTP/1.1\r\nHost: t\r\n'); };
s.on('connect', () => {
  if (first) s.write(`GET ${firstPath} HTTP/1.1\r\nHost: t\r\n\r\n`);
  else startPartial();
});
s.on('data', (d) => {
  buf += d;
  if (stage === 'first' && buf.includes('\r\n\r\n')) { stage = 'wait'; setTimeout(startPartial, pause); }
  else if (stage === 'partial' && answered < 0 && buf.includes('\r\n')) answered = Date.now() - t0;
});
s.on('close', () => { console.log(`${answered} ${Date.now() - t0} ${buf.split('\r\n')[0]}`); });
s.on('error', () => {});
setTimeout(() => { console.log('-1 -1 timeout'); process.exit(0); }, 8000);
EOJ

read -r ms _ line < <(node "$FL_TMP/h1.js" "$P" no 0 yes)
assert_eq "header timeout: a head that never ends gets 408" "HTTP/1.1 408 Request Timeout" "$line"
assert_cmp "header timeout: after about 1 s (ms)" "$ms" ">=" 950
assert_cmp "header timeout: not much later (ms)" "$ms" "<" 1800

# The deadline runs from the new head's first byte, not from the connection's
# previous request (whose timer may still be armed).
read -r ms _ line < <(node "$FL_TMP/h1.js" "$P" yes 700 yes)
assert_eq "header timeout on a reused connection: 408" "HTTP/1.1 408 Request Timeout" "$line"
assert_cmp "header timeout on a reused connection: counted from the new head (ms)" "$ms" ">=" 950
assert_cmp "header timeout on a reused connection: not much later (ms)" "$ms" "<" 1800

# Idle keep-alive: closed about 2 s after the answer.
read -r _ closed _ < <(node "$FL_TMP/h1.js" "$P" yes 0 no)
assert_cmp "HTTP/1.1 idle timeout: closed after about 2 s (ms)" "$closed" ">=" 1900
assert_cmp "HTTP/1.1 idle timeout: not much later (ms)" "$closed" "<" 3000

# The same after a request answered by faultline itself (an abort fault).
read -r _ closed _ < <(node "$FL_TMP/h1.js" "$P" yes 0 no /abort)
assert_cmp "HTTP/1.1 idle timeout after an injected answer: closed after about 2 s (ms)" "$closed" ">=" 1900
assert_cmp "HTTP/1.1 idle timeout after an injected answer: not much later (ms)" "$closed" "<" 3000

# A connection that keeps sending requests is not closed by the idle timeout.
cat >"$FL_TMP/busy.js" <<'EOJ'
const http = require('http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const port = +process.argv[2];
let n = 0, sockets = new Set();
const one = () => http.get({ port, host: '127.0.0.1', path: '/', agent }, (r) => {
  sockets.add(r.socket); r.resume();
  r.on('end', () => { if (++n < 12) setTimeout(one, 300); else { console.log(`${n} ${sockets.size}`); process.exit(0); } });
}).on('error', (e) => { console.log(`error ${e.message}`); process.exit(1); });
one();
EOJ
assert_eq "HTTP/1.1: 12 requests 300 ms apart (3.6 s) use one connection" "12 1" "$(node "$FL_TMP/busy.js" "$P")"

# HTTP/2: idle for 2 s after the last stream -> GOAWAY(NO_ERROR), then close.
cat >"$FL_TMP/h2.js" <<'EOJ'
const http2 = require('http2');
const [port, path] = [+process.argv[2], process.argv[3]];
const c = http2.connect(`http://127.0.0.1:${port}`);
let tEnd = 0, goaway = -1, code = -1, status = 0, body = '';
const t0 = Date.now();
c.on('goaway', (errorCode) => { goaway = Date.now() - (tEnd || t0); code = errorCode; });
c.on('error', () => {});
c.on('close', () => { console.log(`${status} ${JSON.stringify(body)} ${goaway} ${code} ${Date.now() - (tEnd || t0)}`); process.exit(0); });
const r = c.request({ ':path': path });
r.on('response', (h) => { status = h[':status']; });
r.on('data', (d) => { body += d; });
r.on('end', () => { tEnd = Date.now(); });
r.on('error', () => {});
setTimeout(() => { console.log('0 "timeout" -1 -1 -1'); process.exit(0); }, 8000);
EOJ
read -r status body goaway code closed < <(node "$FL_TMP/h2.js" "$P2" /hello)
assert_eq "HTTP/2: the stream's answer" '200 "hello\n"' "$status $body"
assert_eq "HTTP/2 idle timeout: GOAWAY with NO_ERROR" 0 "$code"
assert_cmp "HTTP/2 idle timeout: GOAWAY about 2 s after the last stream (ms)" "$goaway" ">=" 1900
assert_cmp "HTTP/2 idle timeout: not much later (ms)" "$goaway" "<" 3000
assert_cmp "HTTP/2 idle timeout: connection closed too (ms)" "$closed" "<" 3500

# The upstream ends its HTTP/2 connection (GOAWAY after /bye): the client's
# next requests, on its connection or a new one if told to go away, succeed.
cat >"$FL_TMP/h2goaway.js" <<'EOJ'
const http2 = require('http2');
const port = +process.argv[2];
let sess = null, ok = 0, codes = [];
const session = () => {
  if (!sess || sess.closed || sess.destroyed) {
    sess = http2.connect(`http://127.0.0.1:${port}`);
    sess.on('error', () => {});
    sess.on('goaway', () => { sess = null; });
  }
  return sess;
};
const one = (path) => new Promise((res) => {
  const r = session().request({ ':path': path });
  r.on('response', (h) => codes.push(h[':status']));
  r.on('data', () => {});
  r.on('end', () => res());
  r.on('error', (e) => { codes.push(`error ${e.code}`); res(); });
});
(async () => {
  for (const p of ['/hello', '/bye', '/hello', '/hello', '/hello']) {
    await one(p);
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(codes.join(' '));
  process.exit(0);
})();
setTimeout(() => { console.log(`timeout ${codes.join(' ')}`); process.exit(0); }, 8000);
EOJ
assert_eq "upstream GOAWAY: every request before and after it answered 200" "200 200 200 200 200" \
    "$(node "$FL_TMP/h2goaway.js" "$P2")"

# SIGTERM with a stream in flight: GOAWAY first, the stream still completes,
# and the daemon exits once it has, well inside the 10 s drain bound.
node "$FL_TMP/h2.js" "$P2" /sleep >"$FL_TMP/drain.out" &
cpid=$!
sleep 0.4
t0=$(date +%s%N)
stop_faultline
rc=$?
exit_ms=$((($(date +%s%N) - t0) / 1000000))
wait "$cpid"
read -r status body goaway code _ <"$FL_TMP/drain.out"
assert_eq "SIGTERM: exit 0" 0 "$rc"
assert_eq "SIGTERM, HTTP/2 stream in flight: it still completes" '200 "hello\n"' "$status $body"
assert_eq "SIGTERM, HTTP/2: the client got GOAWAY with NO_ERROR" 0 "$code"
assert_cmp "SIGTERM, HTTP/2: the daemon exits once the stream is done (ms)" "$exit_ms" "<" 4000
fl_finish
