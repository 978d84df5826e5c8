#!/usr/bin/env node
// Sample HTTP backend for faultline's demo and integration tests.
// Node's built-in modules only, so Debian 12's nodejs (18) runs it as is.
//
//   node examples/backend.js --port 8080 [--host ADDR]... [--tcp-echo PORT]
//
// Routes (any method):
//   /                  200 "hello from backend\n" (also every unknown path)
//   /echo              streams the request body back; x-echo-method, x-echo-path
//   /bytes?n=N&seed=S  N deterministic pseudo-random bytes, with content-length
//   /chunked?n=N&seed=S the same bytes, sent chunked (no content-length)
//   /status/CODE       responds with CODE
//   /sleep?ms=M        responds after M milliseconds
//   /headers           the request's headers as JSON
//   /ws                with Upgrade: answers 101, then echoes raw bytes
//   CONNECT any        answers 200, then echoes raw bytes
// --tcp-echo PORT adds a raw TCP echo server (same hosts), for non-HTTP passthrough.
// `node backend.js --gen N SEED` writes the /bytes body to stdout (for checksums).
'use strict';
const http = require('http');
const net = require('net');

function usage(msg) {
  if (msg) process.stderr.write(`backend.js: ${msg}\n`);
  process.stderr.write('usage: node backend.js --port P [--host ADDR]... [--tcp-echo PORT]\n' +
                       '       node backend.js --gen N SEED\n');
  process.exit(2);
}

// xorshift32 keyed by seed: fast, and identical for every consumer of the stream.
function byteStream(seed) {
  let x = (seed >>> 0) || 0x9e3779b9;
  return function fill(buf) {
    let i = 0;
    const n4 = buf.length & ~3;
    for (; i < n4; i += 4) {
      x ^= x << 13; x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5; x >>>= 0;
      buf.writeUInt32LE(x, i);
    }
    for (; i < buf.length; i++) {
      x ^= x << 13; x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5; x >>>= 0;
      buf[i] = x & 0xff;
    }
  };
}

// Writes n bytes to a writable, honouring backpressure; calls done() at the end.
function pump(out, n, seed, done) {
  const fill = byteStream(seed);
  const CHUNK = 64 * 1024;
  let left = n;
  function more() {
    while (left > 0) {
      const len = Math.min(CHUNK, left);
      const b = Buffer.allocUnsafe(len);
      fill(b);
      left -= len;
      if (!out.write(b)) { out.once('drain', more); return; }
    }
    done();
  }
  more();
}

function intParam(url, name, dflt) {
  const v = url.searchParams.get(name);
  if (v === null) return dflt;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : dflt;
}

function handle(req, res) {
  let url;
  try { url = new URL(req.url, 'http://backend'); } catch (e) { url = new URL('http://backend/'); }
  const p = url.pathname;
  if (p === '/echo') {
    res.setHeader('x-echo-method', req.method);
    res.setHeader('x-echo-path', req.url);
    if (req.headers['content-length'] !== undefined)
      res.setHeader('content-length', req.headers['content-length']);
    res.writeHead(200);
    req.pipe(res);
    return;
  }
  // Every other route ignores the request body but must drain it.
  req.resume();
  if (p === '/bytes' || p === '/chunked') {
    const n = intParam(url, 'n', 1024);
    const seed = intParam(url, 'seed', 1);
    res.setHeader('content-type', 'application/octet-stream');
    if (p === '/bytes') res.setHeader('content-length', String(n));
    res.writeHead(200);
    if (req.method === 'HEAD') return res.end();
    pump(res, n, seed, () => res.end());
    return;
  }
  const m = /^\/status\/(\d{3})$/.exec(p);
  if (m) {
    const code = Number(m[1]);
    res.writeHead(code, { 'content-type': 'text/plain' });
    res.end(code === 204 || code === 304 ? undefined : `status ${code}\n`);
    return;
  }
  if (p === '/sleep') {
    const ms = intParam(url, 'ms', 1000);
    const t = setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`slept ${ms}ms\n`);
    }, ms);
    res.on('close', () => clearTimeout(t));
    return;
  }
  if (p === '/headers') {
    const body = JSON.stringify(req.headers) + '\n';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('hello from backend\n');
}

function upgrade(req, sock, head) {
  if (!req.url.startsWith('/ws')) {
    sock.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  sock.write('HTTP/1.1 101 Switching Protocols\r\n' +
             `upgrade: ${req.headers.upgrade || 'websocket'}\r\n` +
             'connection: Upgrade\r\n\r\n');
  if (head && head.length) sock.write(head);
  sock.pipe(sock);
  sock.on('error', () => {});
}

// CONNECT: answer 200, then echo raw bytes (a stand-in for a tunnel).
function connect(req, sock, head) {
  sock.on('error', () => {});
  sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  if (head && head.length) sock.write(head);
  sock.pipe(sock);
}

function listenAll(makeServer, port, hosts, label) {
  const started = [];
  let pending = hosts.length;
  let failed = false;
  return new Promise((resolve, reject) => {
    for (const host of hosts) {
      const srv = makeServer();
      srv.once('error', (e) => {
        // ::1 may be missing (IPv6 disabled): fine when it was only implied.
        if (e.code === 'EADDRNOTAVAIL' && host === '::1' && hosts.implied) {
          if (--pending === 0 && !failed) resolve(started);
          return;
        }
        failed = true;
        reject(new Error(`${label} cannot listen on ${host} port ${port}: ${e.message}`));
      });
      srv.listen({ port, host, exclusive: true, ipv6Only: host.includes(':') }, () => {
        started.push(host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
        if (--pending === 0 && !failed) resolve(started);
      });
    }
  });
}

function main(argv) {
  let port = null, tcpEcho = null;
  const hosts = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === '--port') port = Number(val());
    else if (a === '--host') hosts.push(val());
    else if (a === '--tcp-echo') tcpEcho = Number(val());
    else if (a === '--gen') {
      const n = Number(val()), seed = Number(val());
      process.stdout.on('error', () => process.exit(0));
      pump(process.stdout, n, seed, () => {});
      return;
    } else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) usage('give --port P (1-65535)');
  if (tcpEcho !== null && (!Number.isInteger(tcpEcho) || tcpEcho < 1 || tcpEcho > 65535))
    usage('--tcp-echo takes a port number');
  if (hosts.length === 0) { hosts.push('127.0.0.1', '::1'); hosts.implied = true; }

  const mkHttp = () => {
    // Heads up to 96 KiB, so the proxy's 64 KiB limit is what tests see.
    const s = http.createServer({ maxHeaderSize: 96 * 1024 }, handle);
    s.keepAliveTimeout = 30000;
    s.headersTimeout = 60000;
    s.requestTimeout = 0; // 64 MiB uploads through a slow proxy must not be cut off
    s.on('upgrade', upgrade);
    s.on('connect', connect);
    s.on('clientError', (err, sock) => {
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    });
    return s;
  };
  const mkEcho = () => net.createServer((sock) => {
    sock.on('error', () => {});
    sock.pipe(sock); // ends our side when the peer ends its side (half-close honoured)
  });

  const jobs = [listenAll(mkHttp, port, hosts, 'backend')];
  if (tcpEcho !== null) jobs.push(listenAll(mkEcho, tcpEcho, hosts, 'tcp echo'));
  Promise.all(jobs).then(([h, e]) => {
    let line = `backend listening on ${h.join(' ')}`;
    if (e) line += `; tcp echo on ${e.join(' ')}`;
    console.log(line);
  }, (err) => {
    console.error(`backend.js: ${err.message}`);
    process.exit(1);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
}

main(process.argv.slice(2));
