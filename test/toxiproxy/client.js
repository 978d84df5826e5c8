// The real toxiproxy-node-client (npm, 4.1.0) driving faultline's Toxiproxy
// API, and plain sockets (net) and fetch seeing the effects. Prints one
// "ok   - ..." or "FAIL - ..." line per check (test/integration/toxiproxy.sh
// counts them).
//   node client.js API_PORT TCP_ECHO_PORT HTTP_BACKEND_PORT
'use strict';
const net = require('net');
const { Toxiproxy } = require('toxiproxy-node-client');

const [apiPort, echoPort, httpPort] = process.argv.slice(2).map(Number);
const tp = new Toxiproxy(`http://127.0.0.1:${apiPort}`);
const ECHO = `127.0.0.1:${echoPort}`;

let failed = 0;
function check(what, cond, detail) {
  if (cond) console.log(`ok   - ${what}`);
  else { failed++; console.log(`FAIL - ${what}${detail !== undefined ? `: ${JSON.stringify(detail)}` : ''}`); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function hostPort(listen) { const i = listen.lastIndexOf(':'); return [listen.slice(0, i), Number(listen.slice(i + 1))]; }

// Sends bytes, reads until EOF, reset, `expect` bytes or `wait` ms:
// {got, eof, reset, ms, first, reads, refused}
function exchange(listen, bytes, wait = 5000, fin = false, expect = 0) {
  const [host, port] = hostPort(listen);
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const r = { got: 0, eof: false, reset: false, refused: false, reads: 0, first: null, ms: 0, data: Buffer.alloc(0) };
    const s = net.connect(port, host);
    s.setNoDelay(true);
    const done = () => { r.ms = ms(); clearTimeout(timer); s.destroy(); resolve(r); };
    const timer = setTimeout(done, wait);
    s.on('connect', () => { s.write(bytes); if (fin) s.end(); });
    s.on('data', (d) => {
      if (r.first === null) r.first = ms();
      r.reads++; r.got += d.length; r.data = Buffer.concat([r.data, d]);
      if (expect && r.got >= expect) done();
    });
    s.on('end', () => { r.eof = true; done(); });
    s.on('error', (e) => { if (e.code === 'ECONNRESET') r.reset = true; if (e.code === 'ECONNREFUSED') r.refused = true; done(); });
  });
}
// One echo round trip on a new connection: ms until the line is back.
async function rtt(listen) {
  const line = Buffer.from('ping\n');
  const [host, port] = hostPort(listen);
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.setNoDelay(true);
    let t0, got = 0;
    s.on('connect', () => { t0 = process.hrtime.bigint(); s.write(line); });
    s.on('data', (d) => { got += d.length; if (got >= line.length) { resolve(Number(process.hrtime.bigint() - t0) / 1e6); s.destroy(); } });
    s.on('error', () => resolve(-1));
  });
}
// A connection kept open: trip() is one echo round trip on it (ms, or -1 once closed).
function opened(listen) {
  const [host, port] = hostPort(listen);
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.setNoDelay(true);
    let waiting = null, closed = false;
    s.on('data', () => { if (waiting) { const w = waiting; waiting = null; w(); } });
    const gone = () => { closed = true; if (waiting) { const w = waiting; waiting = null; w(); } };
    s.on('close', gone);
    s.on('error', gone);
    s.on('connect', () => resolve({
      trip: () => new Promise((res) => {
        if (closed) return res(-1);
        const t0 = process.hrtime.bigint();
        waiting = () => res(closed ? -1 : Number(process.hrtime.bigint() - t0) / 1e6);
        s.write('p');
      }),
      closed: () => closed,
      end: () => s.destroy(),
    }));
  });
}
async function status(promise) {
  try { await promise; return 'ok'; } catch (e) { return e.message; }
}
const pattern = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

(async () => {
  const v = await tp.getVersion();
  check('getVersion: Toxiproxy\'s JSON form', v === '{"version": "2.12.0"}\n', v);

  // ---- proxies ----
  const echo = await tp.createProxy({ name: 'echo', listen: 'localhost:0', upstream: ECHO });
  check('createProxy: localhost:0 is resolved to a real port', /^127\.0\.0\.1:[1-9][0-9]*$/.test(echo.listen), echo.listen);
  check('createProxy: enabled by default', echo.enabled === true);
  let t = await rtt(echo.listen);
  check('the proxy relays: a round trip without toxics is fast', t >= 0 && t < 50, t);
  check('createProxy with the same name: 409',
        (await status(tp.createProxy({ name: 'echo', listen: 'localhost:0', upstream: ECHO }))) === 'Request failed with status code 409');
  check('createProxy without upstream: 400',
        (await status(tp.createProxy({ name: 'x', listen: 'localhost:0' }))) === 'Request failed with status code 400');
  const all = await tp.getAll();
  check('getAll: keyed by name', Object.keys(all).join() === 'echo' && all.echo.listen === echo.listen, Object.keys(all));
  const got = await tp.get('echo');
  check('get: the proxy as created', got.upstream === ECHO && got.listen === echo.listen);
  check('get of a missing proxy: 404', (await status(tp.get('nope'))) === 'Request failed with status code 404');

  // ---- each toxic type, added, seen, updated, removed ----
  let lat = await echo.addToxic({ type: 'latency', attributes: { latency: 200 } });
  check('addToxic latency: default name, stream and toxicity',
        lat.name === 'latency_downstream' && lat.stream === 'downstream' && lat.toxicity === 1 &&
        lat.attributes.latency === 200 && lat.attributes.jitter === 0, lat.toJson());
  t = await rtt(echo.listen);
  check('latency 200 ms downstream: a round trip takes at least 200 ms', t >= 200 && t < 300, t);
  check('addToxic with the same name: 409',
        (await status(echo.addToxic({ type: 'latency', attributes: { latency: 1 } }))) === 'Request failed with status code 409');
  lat = await lat.update({ attributes: { latency: 50 } });
  check('toxic.update: attributes merged', lat.attributes.latency === 50 && lat.attributes.jitter === 0, lat.toJson());
  t = await rtt(echo.listen);
  check('latency updated to 50 ms: the next connection sees 50 ms', t >= 50 && t < 150, t);
  const up = await echo.addToxic({ type: 'latency', stream: 'upstream', attributes: { latency: 100 } });
  check('a second latency upstream: named latency_upstream', up.name === 'latency_upstream');
  t = await rtt(echo.listen);
  check('latency 50 down + 100 up stack: at least 150 ms', t >= 150 && t < 260, t);
  const fetched = await echo.getToxic('latency_upstream');
  check('getToxic: the toxic as added', fetched.attributes.latency === 100 && fetched.stream === 'upstream');
  check('getToxic of a missing toxic: 404', (await status(echo.getToxic('nope'))) === 'Request failed with status code 404');
  await lat.remove();
  await up.remove();
  t = await rtt(echo.listen);
  check('toxics removed: fast again', t >= 0 && t < 50, t);

  let x = await echo.addToxic({ type: 'bandwidth', attributes: { rate: 100 } }); // 100 KB/s
  let r = await exchange(echo.listen, pattern(200000), 8000, false, 200000);
  check('bandwidth 100 KB/s: 200,000 bytes come back in about 2 s', r.got === 200000 && r.ms >= 1800 && r.ms < 2600, { got: r.got, ms: r.ms });
  check('  ... intact', r.data.equals(pattern(200000)));
  await x.remove();

  x = await echo.addToxic({ type: 'slicer', attributes: { average_size: 10, size_variation: 5, delay: 10000 } });
  r = await exchange(echo.listen, pattern(100), 3000, false, 100);
  check('slicer 10 +- 5 bytes, 10 ms apart: 100 bytes in many reads', r.got === 100 && r.reads >= 6 && r.ms >= 60, { reads: r.reads, ms: r.ms });
  await x.remove();

  x = await echo.addToxic({ type: 'limit_data', attributes: { bytes: 1000 } });
  r = await exchange(echo.listen, pattern(3000), 3000);
  check('limit_data 1000: exactly 1000 bytes, then the close', r.got === 1000 && r.eof && r.data.equals(pattern(1000)), { got: r.got, eof: r.eof });
  await x.remove();

  x = await echo.addToxic({ type: 'timeout', attributes: { timeout: 500 } });
  r = await exchange(echo.listen, pattern(10), 3000);
  check('timeout 500: nothing relayed, closed after 500 ms', r.got === 0 && r.eof && r.ms >= 480 && r.ms < 900, { got: r.got, ms: r.ms });
  await x.remove();

  x = await echo.addToxic({ type: 'slow_close', attributes: { delay: 1000 } });
  r = await exchange(echo.listen, pattern(10), 4000, true);
  check('slow_close 1000: the bytes come back, the close 1 s later', r.got === 10 && r.eof && r.ms >= 1000 && r.ms < 1500, { got: r.got, ms: r.ms });
  await x.remove();

  x = await echo.addToxic({ type: 'reset_peer', attributes: { timeout: 300 } });
  r = await exchange(echo.listen, pattern(10), 3000);
  check('reset_peer 300: ECONNRESET after 300 ms', r.reset && r.ms >= 290 && r.ms < 700, { reset: r.reset, ms: r.ms });
  await x.remove();

  // toxicity: rolled per connection
  x = await echo.addToxic({ type: 'limit_data', name: 'some', toxicity: 0.3, attributes: { bytes: 0 } });
  let cut = 0;
  for (let i = 0; i < 400; i++) {
    r = await exchange(echo.listen, Buffer.from('x'), 1000, false, 1);
    if (r.got === 0) cut++;
  }
  // 30% of 400: mean 120, sd 9.2: 4 sd = 37
  check('toxicity 0.3 over 400 connections: 83-157 cut', cut >= 83 && cut <= 157, cut);
  await x.remove();

  check('addToxic of an unknown type: 400',
        (await status(echo.addToxic({ type: 'jitterbug' }))) === 'Request failed with status code 400');
  check('addToxic with a bad stream: 400',
        (await status(echo.addToxic({ type: 'latency', stream: 'sideways' }))) === 'Request failed with status code 400');
  check('addToxic with a bad attribute: 400',
        (await status(echo.addToxic({ type: 'latency', attributes: { latency: 'slow' } }))) === 'Request failed with status code 400');

  // ---- toxics on connections already open, as Toxiproxy's links ----
  const live = await opened(echo.listen);
  t = await live.trip();
  check('an open connection: fast', t >= 0 && t < 50, t);
  const lv = await echo.addToxic({ type: 'latency', attributes: { latency: 150 } });
  t = await live.trip();
  check('a toxic added reaches the open connection', t >= 150 && t < 300, t);
  await lv.remove();
  t = await live.trip();
  check('removed: the open connection is fast again', t >= 0 && t < 50, t);
  await echo.update({ enabled: false, listen: echo.listen, upstream: echo.upstream });
  await sleep(100);
  check('enabled:false closes the proxy\'s open connections', live.closed() && (await live.trip()) === -1);
  await echo.update({ enabled: true, listen: echo.listen, upstream: echo.upstream });

  // ---- the added L7 types, on an HTTP proxy ----
  const web = await tp.createProxy({ name: 'web', listen: 'localhost:0', upstream: `127.0.0.1:${httpPort}` });
  const url = `http://${web.listen}/hello`;
  const ab = await web.addToxic({ type: 'http_abort', attributes: { status: 503, body: 'injected\n' } });
  let res = await fetch(url);
  check('http_abort: 503 with the body, marked', res.status === 503 && (await res.text()) === 'injected\n' &&
        res.headers.get('x-faultline-injected') === 'web.http_abort_downstream', res.status);
  await ab.update({ toxicity: 0.5 });
  let n503 = 0;
  for (let i = 0; i < 400; i++) { res = await fetch(url); await res.text(); if (res.status === 503) n503++; }
  // 50% of 400: mean 200, sd 10: 4 sd = 40
  check('http_abort toxicity 0.5, per request: 160-240 of 400', n503 >= 160 && n503 <= 240, n503);
  await ab.remove();
  const dl = await web.addToxic({ type: 'http_delay', attributes: { latency: 300 } });
  let t0 = Date.now();
  res = await fetch(url);
  check('http_delay 300: the request is held 300 ms, then answered', res.status === 200 && Date.now() - t0 >= 299, Date.now() - t0);
  await dl.remove();

  // ---- enabled, populate, reset, remove ----
  const off = await echo.update({ enabled: false, listen: echo.listen, upstream: echo.upstream });
  check('update enabled:false: reported', off.enabled === false);
  r = await exchange(echo.listen, Buffer.from('x'), 1000);
  check('  ... and the listener is closed (connection refused)', r.refused, r);
  const on = await echo.update({ enabled: true, listen: echo.listen, upstream: echo.upstream });
  check('update enabled:true: it listens again on the same address', on.enabled && on.listen === echo.listen && (await rtt(echo.listen)) >= 0);
  await echo.addToxic({ type: 'latency', attributes: { latency: 100 } });
  const pop = await tp.populate([
    { name: 'echo', listen: echo.listen, upstream: ECHO },
    { name: 'more', listen: 'localhost:0', upstream: ECHO },
  ]);
  check('populate: both proxies returned', pop.echo && pop.more && /^127\.0\.0\.1:\d+$/.test(pop.more.listen), Object.keys(pop));
  t = await rtt(echo.listen);
  check('populate: an unchanged proxy is kept, toxics and all', t >= 100, t);
  t = await rtt(pop.more.listen);
  check('populate: the new proxy relays', t >= 0 && t < 50, t);
  await (await tp.get('more')).update({ enabled: false, listen: pop.more.listen, upstream: ECHO });
  await tp.reset();
  t = await rtt(echo.listen);
  check('reset: every toxic removed', t >= 0 && t < 50, t);
  check('reset: every proxy enabled again', (await tp.get('more')).enabled === true && (await rtt(pop.more.listen)) >= 0);
  await echo.remove();
  check('remove: gone from the API', (await status(tp.get('echo'))) === 'Request failed with status code 404');
  r = await exchange(echo.listen, Buffer.from('x'), 1000);
  check('remove: its listener is closed', r.refused, r);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log(`FAIL - the script stopped: ${e.stack}`); process.exit(1); });
