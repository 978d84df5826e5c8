#!/usr/bin/env node
// Runs one HTTP transcript case (test/integration/cases/*.case) against a running
// faultline and prints what it expected next to what it got.
//
//   node casecheck.js policy CASE   -> the case's policy, placeholders filled, on stdout
//   node casecheck.js run CASE      -> sends, checks; exit 0 when every check passed
//
// Placeholders come from the environment: @LISTEN_A@ @LISTEN_B@ (proxy listeners "a"
// and "b"), @BACKEND@ (host:port), @BACKEND_PORT@, @TCP_ECHO@, @DEAD@ (a port where
// nothing listens). FAULT_LOG names the daemon's fault log for `log` checks.
//
// Case file format (sections start with "--- "):
//   # comments (before the first section)
//   --- policy          rules only (listeners a and b are added), or a whole policy
//                       when the section starts with "apiVersion:"
//   --- send [a|b] [end] [same]
//                       each line is sent followed by CRLF; a line ending in "\c" is
//                       sent without it; escapes \r \n \t \\ \xHH; @@rep(N,TEXT)@@
//                       repeats TEXT N times. A new connection to listener a (default)
//                       or b, unless "same"; "end" half-closes after sending.
//   --- pause MS
//   --- expect          checks on the connection of the send before it:
//       [rN] status CODE           response N (default 1) has this status
//       [rN] header NAME [VALUE]   has header NAME (with exactly VALUE)
//       [rN] no-header NAME
//       [rN] body "TEXT"           body equals TEXT (escapes as above)
//       [rN] body-contains "TEXT"
//       [rN] time >= MS | time < MS  ms from the first byte sent to this response's end
//       responses N                exactly N complete responses
//       [rN] body-length N
//       tail "TEXT"                raw bytes after a 101 / CONNECT 2xx response
//       received "TEXT"            every byte received on the connection (raw TCP)
//       closed | reset | open      how the connection ended (EOF / ECONNRESET / still open)
//       log N [key=value]...       exactly N fault-log lines carry all these fields
//       timeout MS                 how long to wait for the above (default 5000)
'use strict';
const fs = require('fs');
const net = require('net');

function unescape(s) {
  s = s.replace(/@@rep\((\d+),([^)]*)\)@@/g, (_, n, t) => t.repeat(Number(n)));
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== '\\' || i + 1 >= s.length) { out += c; continue; }
    const d = s[++i];
    if (d === 'r') out += '\r';
    else if (d === 'n') out += '\n';
    else if (d === 't') out += '\t';
    else if (d === '\\') out += '\\';
    else if (d === '"') out += '"';
    else if (d === 'x') { out += String.fromCharCode(parseInt(s.substr(i + 1, 2), 16)); i += 2; }
    else out += '\\' + d;
  }
  return out;
}

function subst(s) {
  return s.replace(/@([A-Z_]+)@/g, (m, k) => (process.env[k] !== undefined ? process.env[k] : m));
}

function parseCase(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const secs = [];
  let cur = null;
  for (const l of lines) {
    if (l.startsWith('--- ')) {
      const w = l.slice(4).trim().split(/\s+/);
      cur = { kind: w[0], args: w.slice(1), lines: [] };
      secs.push(cur);
    } else if (cur) cur.lines.push(l);
  }
  return secs;
}

function policyText(secs, name) {
  const p = secs.find((s) => s.kind === 'policy');
  if (!p) throw new Error('case has no "--- policy" section');
  let body = p.lines.join('\n').replace(/\s+$/, '') + '\n';
  if (!/^\s*apiVersion:/.test(body)) {
    const indented = body.split('\n').map((l) => (l ? '  ' + l : l)).join('\n');
    body = 'apiVersion: faultline/v1\nkind: FaultPolicy\nmetadata:\n  name: ' + name + '\n' +
           'spec:\n  listeners:\n' +
           '    - {name: a, listen: "@LISTEN_A@", upstream: "@BACKEND@"}\n' +
           '    - {name: b, listen: "@LISTEN_B@", upstream: "@BACKEND@"}\n' + indented;
  }
  return subst(body);
}

function hostPort(s) {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`bad address ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

// Incremental HTTP/1.x response parser over everything a connection received.
function parseResponses(buf, methods) {
  const out = [];
  let off = 0;
  let tail = null;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', off);
    if (end < 0) break;
    const head = buf.slice(off, end).toString('latin1');
    const [statusLine, ...hl] = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) { out.push({ bad: statusLine, status: 0, headers: {}, body: '' }); break; }
    const status = Number(m[1]);
    const headers = {};
    for (const h of hl) {
      const i = h.indexOf(':');
      if (i > 0) {
        const k = h.slice(0, i).trim().toLowerCase();
        const v = h.slice(i + 1).trim();
        headers[k] = headers[k] === undefined ? v : headers[k] + ', ' + v;
      }
    }
    const method = methods[out.length] || 'GET';
    let p = end + 4;
    let body = Buffer.alloc(0);
    let complete = false;
    if (status === 101 || (method === 'CONNECT' && status >= 200 && status < 300)) {
      out.push({ status, headers, body: '', line: statusLine, complete: true, endOff: p });
      tail = buf.slice(p);
      break;
    }
    if ((status >= 100 && status < 200) || status === 204 || status === 304 || method === 'HEAD') {
      complete = true;
      if (status >= 100 && status < 200) { off = p; continue; } // interim, skip
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le < 0) break;
        const size = parseInt(buf.slice(p, le).toString('latin1'), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          // last-chunk, optional trailer fields, then an empty line
          const te = buf.indexOf('\r\n\r\n', le);
          if (te >= 0) { p = te + 4; complete = true; }
          break;
        }
        if (buf.length < le + 2 + size + 2) break;
        parts.push(buf.slice(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length >= p + n) { body = buf.slice(p, p + n); p += n; complete = true; }
      else body = buf.slice(p);
    } else {
      body = buf.slice(p); // until close
      p = buf.length;
      complete = 'eof';
    }
    out.push({ status, headers, body: body.toString('latin1'), line: statusLine, complete, endOff: p });
    if (complete !== true) break;
    off = p;
  }
  return { responses: out, tail };
}

function parseExpect(lines) {
  const ex = { checks: [], received: null, responses: null, ending: null, tail: null, logs: [], timeout: 5000, maxR: 0 };
  for (const raw of lines) {
    const l = subst(raw.trim());
    if (!l || l.startsWith('#')) continue;
    let r = 1;
    let rest = l;
    const rm = /^r(\d+)\s+(.*)$/.exec(l);
    if (rm) { r = Number(rm[1]); rest = rm[2]; }
    const sp = rest.indexOf(' ');
    const key = sp < 0 ? rest : rest.slice(0, sp);
    const arg = sp < 0 ? '' : rest.slice(sp + 1).trim();
    const str = () => { const q = /^"(.*)"$/.exec(arg); return unescape(q ? q[1] : arg); };
    switch (key) {
      case 'status': case 'header': case 'no-header': case 'body': case 'body-contains': case 'time':
      case 'body-length':
        ex.checks.push({ r, key, arg, str: (key === 'body' || key === 'body-contains') ? str() : null });
        ex.maxR = Math.max(ex.maxR, r);
        break;
      case 'responses': ex.responses = Number(arg); break;
      case 'tail': ex.tail = str(); break;
      case 'received': ex.received = str(); break;
      case 'closed': case 'reset': case 'open': ex.ending = key; break;
      case 'log': {
        const w = arg.split(/\s+/);
        const fields = {};
        for (const kv of w.slice(1)) { const i = kv.indexOf('='); fields[kv.slice(0, i)] = kv.slice(i + 1); }
        ex.logs.push({ n: Number(w[0]), fields, text: l });
        break;
      }
      case 'timeout': ex.timeout = Number(arg); break;
      default: throw new Error(`unknown expectation: ${l}`);
    }
  }
  return ex;
}

function requestMethods(data) {
  // Method of each request line sent, in order, to know which responses have no body.
  const out = [];
  const re = /(?:^|\r\n\r\n|\r\n)([A-Z]+) \S+ HTTP\/1\.[01]\r\n/g;
  let m;
  while ((m = re.exec(data)) !== null) out.push(m[1]);
  return out;
}

let failures = 0, passes = 0;
function check(ok, what, expected, got) {
  if (ok) { passes++; return; }
  failures++;
  console.log(`  FAIL ${what}\n       expected: ${expected}\n       got:      ${got}`);
}
const show = (s) => JSON.stringify(s === undefined ? null : (s.length > 200 ? s.slice(0, 200) + '...' : s));

function openConn(addr) {
  const c = { buf: Buffer.alloc(0), ended: null, sent: '', sock: null, t0: 0, times: [], waiters: [] };
  c.sock = net.connect(hostPort(addr));
  c.ready = new Promise((res, rej) => { c.sock.once('connect', res); c.sock.once('error', rej); });
  c.sock.on('data', (d) => {
    c.buf = Buffer.concat([c.buf, d]);
    const { responses } = parseResponses(c.buf, requestMethods(c.sent));
    const now = Date.now();
    responses.forEach((r, i) => { if (r.complete === true && c.times[i] === undefined) c.times[i] = now - c.t0; });
    c.waiters.forEach((w) => w());
  });
  c.sock.on('end', () => { if (!c.ended) c.ended = 'closed'; c.waiters.forEach((w) => w()); });
  c.sock.on('error', (e) => {
    c.ended = e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'reset' : 'error:' + e.code;
    c.waiters.forEach((w) => w());
  });
  c.sock.on('close', () => { if (!c.ended) c.ended = 'closed'; c.waiters.forEach((w) => w()); });
  return c;
}

function waitFor(c, cond, ms) {
  return new Promise((resolve) => {
    if (cond()) return resolve(true);
    const t = setTimeout(() => { done(); resolve(false); }, ms);
    const w = () => { if (cond()) { clearTimeout(t); done(); resolve(true); } };
    const done = () => { c.waiters = c.waiters.filter((x) => x !== w); };
    c.waiters.push(w);
  });
}

function readLog() {
  const f = process.env.FAULT_LOG;
  if (!f || !fs.existsSync(f)) return [];
  return fs.readFileSync(f, 'utf8').split('\n').filter((l) => l.trim()).map((l) => {
    try { return JSON.parse(l); } catch (e) { return { unparsable: l }; }
  });
}

function logMatches(lines, fields) {
  return lines.filter((o) => Object.entries(fields).every(([k, v]) => String(o[k]) === v)).length;
}

async function runExpect(c, ex) {
  const want = ex.responses !== null ? ex.responses : ex.maxR;
  const rawOnly = ex.received !== null;
  const cond = () => {
    const { responses, tail } = parseResponses(c.buf, requestMethods(c.sent));
    const nComplete = rawOnly ? want : responses.filter((r) => r.complete === true).length;
    if (c.ended) return true;
    if (ex.ending === 'closed' || ex.ending === 'reset') return false;
    if (nComplete < want) return false;
    if (ex.received !== null && c.buf.length < Buffer.byteLength(ex.received, 'latin1')) return false;
    if (ex.tail !== null && (!tail || tail.length < Buffer.byteLength(ex.tail, 'latin1'))) return false;
    return true;
  };
  await waitFor(c, cond, ex.timeout);
  if (ex.ending === 'open') await new Promise((r) => setTimeout(r, 200));
  const { responses, tail } = parseResponses(c.buf, requestMethods(c.sent));
  const rs = responses.filter((r) => r.complete);
  if (ex.responses !== null)
    check(rs.length === ex.responses, 'number of responses', ex.responses,
          `${rs.length} (${rs.map((r) => r.status).join(',')})`);
  for (const ch of ex.checks) {
    const r = responses[ch.r - 1];
    const label = `r${ch.r} ${ch.key} ${ch.arg}`;
    if (!r) { check(false, label, `response ${ch.r}`, `only ${responses.length} response(s), connection ${c.ended || 'open'}`); continue; }
    switch (ch.key) {
      case 'status': check(r.status === Number(ch.arg), label, ch.arg, r.line || r.bad); break;
      case 'header': {
        const sp = ch.arg.indexOf(' ');
        const name = (sp < 0 ? ch.arg : ch.arg.slice(0, sp)).toLowerCase();
        const val = sp < 0 ? null : unescape(ch.arg.slice(sp + 1).replace(/^"(.*)"$/, '$1'));
        const got = r.headers[name];
        check(got !== undefined && (val === null || got === val), label,
              val === null ? `${name} present` : `${name}: ${val}`, got === undefined ? `${name} absent` : `${name}: ${got}`);
        break;
      }
      case 'no-header': {
        const got = r.headers[ch.arg.toLowerCase()];
        check(got === undefined, label, `${ch.arg} absent`, `${ch.arg}: ${got}`);
        break;
      }
      case 'body': check(r.body === ch.str, label, show(ch.str), show(r.body)); break;
      case 'body-length': check(r.body.length === Number(ch.arg), label, ch.arg, r.body.length); break;
      case 'body-contains': check(r.body.includes(ch.str), label, `body containing ${show(ch.str)}`, show(r.body)); break;
      case 'time': {
        const [op, v] = ch.arg.split(/\s+/);
        const t = c.times[ch.r - 1];
        const ok = t !== undefined && (op === '>=' ? t >= Number(v) : op === '<' ? t < Number(v) : false);
        check(ok, label, `${op} ${v} ms`, t === undefined ? 'not complete' : `${t} ms`);
        break;
      }
    }
  }
  if (ex.received !== null) {
    const got = c.buf.toString('latin1');
    check(got === ex.received, 'bytes received', show(ex.received), show(got));
  }
  if (ex.tail !== null) {
    const got = tail ? tail.toString('latin1') : null;
    check(got === ex.tail, 'tail bytes after switch', show(ex.tail), got === null ? 'no protocol switch' : show(got));
  }
  if (ex.ending) {
    const got = c.ended || 'open';
    // A reset may also surface as a plain close when the RST races our read.
    check(got === ex.ending, `connection ${ex.ending}`, ex.ending, got);
  }
  for (const lg of ex.logs) {
    let n = 0;
    const deadline = Date.now() + 2000;
    for (;;) {
      n = logMatches(readLog(), lg.fields);
      if (n === lg.n && Date.now() > deadline - 1700) break; // settled for 300 ms
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    check(n === lg.n, lg.text, `${lg.n} matching line(s)`,
          `${n}; log: ${show(readLog().map((o) => JSON.stringify(o)).join('\n'))}`);
  }
}

async function run(file) {
  const secs = parseCase(file);
  let c = null;
  const conns = [];
  for (const s of secs) {
    if (s.kind === 'policy') continue;
    if (s.kind === 'pause') { await new Promise((r) => setTimeout(r, Number(s.args[0]))); continue; }
    if (s.kind === 'send') {
      const same = s.args.includes('same');
      const lst = s.args.includes('b') ? 'LISTEN_B' : 'LISTEN_A';
      if (!same || !c) {
        c = openConn(process.env[lst]);
        conns.push(c);
        try { await c.ready; } catch (e) { check(false, 'connect', process.env[lst], e.message); return; }
      }
      const lines = [...s.lines];
      while (lines.length && lines[lines.length - 1] === '' && lines.length > 1 && lines[lines.length - 2] === '') lines.pop();
      let data = '';
      for (const l of lines) data += l.endsWith('\\c') ? unescape(l.slice(0, -2)) : unescape(l) + '\r\n';
      if (!c.t0) c.t0 = Date.now();
      c.sent += data;
      if (!c.ended) c.sock.write(Buffer.from(data, 'latin1'));
      if (s.args.includes('end')) c.sock.end();
      continue;
    }
    if (s.kind === 'expect') {
      if (!c) {
        // log-only expectations with no connection
        await runExpect({ buf: Buffer.alloc(0), sent: '', ended: 'none', times: [], waiters: [] }, parseExpect(s.lines));
      } else await runExpect(c, parseExpect(s.lines));
      continue;
    }
    throw new Error(`unknown section --- ${s.kind}`);
  }
  for (const x of conns) x.sock.destroy();
}

const [mode, file] = process.argv.slice(2);
if (mode === 'policy') {
  const name = require('path').basename(file).replace(/\.case$/, '').replace(/[^a-z0-9-]/gi, '-').toLowerCase();
  process.stdout.write(policyText(parseCase(file), name));
} else if (mode === 'run') {
  run(file).then(() => {
    if (passes + failures === 0) { console.log('  FAIL case checked nothing'); process.exit(1); }
    process.exit(failures ? 1 : 0);
  }, (e) => { console.log(`  FAIL ${e.stack}`); process.exit(1); });
} else {
  console.error('usage: casecheck.js policy|run CASE');
  process.exit(2);
}
