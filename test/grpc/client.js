'use strict';
// gRPC client for the integration tests. Usage: node client.js MODE ADDR [ARGS]
// Prints "ok NAME" / "FAIL NAME: why" lines or one JSON line; exits 1 on failure.
//   calls ADDR                        every call type, incl. a 16 MiB unary by hash
//   abort ADDR CODE MESSAGE RULE      Unary fails exactly so; Other on the same channel works
//   reset ADDR                        Unary's stream is reset (INTERNAL); Other works
//   delay ADDR N                      latency of N Unary and N Other calls (JSON, ms)
//   percent ADDR N CONC               N Unary calls, CONC at a time: counts by status (JSON)
//   loop ADDR MS                      Unary calls for MS ms (JSON counts)
//   meta ADDR KEY=VALUE...            one Unary call with that metadata: prints JSON
//                                     {code, details, ms, injected}
//   deadline ADDR MS                  Unary with an MS deadline must expire (it is held
//                                     longer); then Other and a patient Unary succeed
const crypto = require('crypto');
const { grpc, Echo, OPTS, block, sha256 } = require('./common');

const [mode, addr, ...args] = process.argv.slice(2);
const client = new Echo(addr, grpc.credentials.createInsecure(), OPTS);
let failed = 0;

function ok(name) { console.log(`ok ${name}`); }
function fail(name, why) { failed++; console.log(`FAIL ${name}: ${why}`); }

function unary(method, data) {
  return new Promise((resolve) => {
    client[method]({ data }, (err, res) => resolve({ err, res }));
  });
}

async function calls() {
  let r = await unary('Unary', Buffer.from('hello'));
  if (r.err) fail('unary', r.err.message);
  else if (r.res.data.toString() !== 'hello') fail('unary', 'wrong echo');
  else ok('unary');

  const big = crypto.randomBytes(16 * 1024 * 1024);
  const want = sha256(big);
  r = await unary('Unary', big);
  if (r.err) fail('unary-16MiB', r.err.message);
  else if (r.res.note !== want) fail('unary-16MiB', 'server saw another hash');
  else if (sha256(r.res.data) !== want) fail('unary-16MiB', 'echo hash differs');
  else ok('unary-16MiB');

  await new Promise((resolve) => {
    const count = 200, size = 64 * 1024;
    const got = [];
    const call = client.ServerStream({ count, size });
    call.on('data', (m) => got.push(m.data));
    call.on('error', (e) => { fail('server-stream', e.message); resolve(); });
    call.on('end', () => {
      const exp = [];
      for (let i = 0; i < count; i++) exp.push(block(i, size));
      if (got.length !== count) fail('server-stream', `${got.length} of ${count} messages`);
      else if (sha256(got) !== sha256(exp)) fail('server-stream', 'hash differs');
      else ok('server-stream');
      resolve();
    });
  });

  await new Promise((resolve) => {
    const parts = [];
    for (let i = 0; i < 100; i++) parts.push(crypto.randomBytes(1 + ((i * 7919) % 200000)));
    const call = client.ClientStream((err, res) => {
      const total = parts.reduce((a, b) => a + b.length, 0);
      if (err) fail('client-stream', err.message);
      else if (res.note !== sha256(parts) || res.total !== total) fail('client-stream', 'hash or length differs');
      else ok('client-stream');
      resolve();
    });
    for (const p of parts) call.write({ data: p });
    call.end();
  });

  await new Promise((resolve) => {
    const n = 300;
    const sent = [];
    let i = 0, back = 0, bad = 0;
    const call = client.Bidi();
    call.on('data', (m) => {
      if (!m.data.equals(sent[back])) bad++;
      back++;
      if (i < n) send();
      else if (back === n) call.end();
    });
    call.on('error', (e) => { fail('bidi', e.message); resolve(); });
    call.on('end', () => {
      if (back !== n || bad) fail('bidi', `${back} of ${n} echoes, ${bad} differ`);
      else ok('bidi');
      resolve();
    });
    // Ping-pong: each message goes out after the previous echo came back.
    function send() {
      const d = crypto.randomBytes(1 + ((i * 104729) % 50000));
      sent.push(d);
      i++;
      call.write({ data: d, note: String(i) });
    }
    send();
  });
}

async function metaMode(pairs) {
  const md = new grpc.Metadata();
  for (const p of pairs) {
    const i = p.indexOf('=');
    md.set(p.slice(0, i), p.slice(i + 1));
  }
  const t0 = process.hrtime.bigint();
  const r = await new Promise((resolve) => {
    client.Unary({ data: Buffer.from('m') }, md, (err, res) => resolve({ err, res }));
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const mark = r.err ? r.err.metadata.get('x-faultline-injected') : [];
  console.log(JSON.stringify({ code: r.err ? r.err.code : 0, details: r.err ? r.err.details : '',
                               ms: Math.round(ms), injected: mark.length ? String(mark[0]) : null }));
}

async function abortMode(code, message, rule) {
  for (let k = 0; k < 10; k++) {
    const [a, b] = await Promise.all([unary('Unary', Buffer.from('x')), unary('Other', Buffer.from('y'))]);
    if (!a.err) { fail('abort', 'Unary succeeded'); break; }
    if (a.err.code !== Number(code)) { fail('abort', `code ${a.err.code}, want ${code}`); break; }
    if (a.err.details !== message) { fail('abort', `message "${a.err.details}", want "${message}"`); break; }
    const mark = a.err.metadata.get('x-faultline-injected');
    if (String(mark[0]) !== rule) { fail('abort', `x-faultline-injected "${mark}", want "${rule}"`); break; }
    if (b.err || b.res.note !== 'other') { fail('abort-other', b.err ? b.err.message : 'bad reply'); break; }
  }
  if (!failed) ok(`abort code ${code} "${message}", Other unaffected (10 rounds, one channel)`);
}

async function resetMode() {
  const [a, b] = await Promise.all([unary('Unary', Buffer.from('x')), unary('Other', Buffer.from('y'))]);
  if (!a.err) fail('reset', 'Unary succeeded');
  else if (a.err.code !== grpc.status.INTERNAL) fail('reset', `code ${a.err.code} (${a.err.details})`);
  else if (b.err) fail('reset-other', b.err.message);
  else ok(`reset: Unary INTERNAL (${a.err.details}), Other unaffected`);
}

async function delayMode(n) {
  const t = { Unary: [], Other: [] };
  for (let i = 0; i < n; i++) {
    for (const m of ['Unary', 'Other']) {
      const t0 = process.hrtime.bigint();
      const r = await unary(m, Buffer.from('d'));
      if (r.err) { fail('delay', r.err.message); return; }
      t[m].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const med = (a) => a.slice().sort((x, y) => x - y)[a.length >> 1];
  console.log(JSON.stringify({
    unary_min: Math.min(...t.Unary), unary_median: med(t.Unary),
    other_max: Math.max(...t.Other), other_median: med(t.Other),
  }));
}

async function percentMode(n, conc) {
  const counts = {};
  let next = 0;
  async function worker() {
    while (next < n) {
      next++;
      const r = await unary('Unary', Buffer.from('p'));
      const k = r.err ? r.err.code : 0;
      counts[k] = (counts[k] || 0) + 1;
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  console.log(JSON.stringify({ n, counts }));
}

async function deadlineMode(ms) {
  const r = await new Promise((resolve) => {
    client.Unary({ data: Buffer.from('d') }, { deadline: Date.now() + ms }, (err, res) => resolve({ err, res }));
  });
  if (!r.err || r.err.code !== grpc.status.DEADLINE_EXCEEDED)
    return fail('deadline', r.err ? `code ${r.err.code}` : 'succeeded');
  const [a, b] = await Promise.all([unary('Unary', Buffer.from('u')), unary('Other', Buffer.from('o'))]);
  if (a.err || b.err) return fail('deadline-after', (a.err || b.err).message);
  ok('deadline: a held call cancelled by its deadline; the channel goes on');
}

async function loopMode(ms) {
  const end = Date.now() + ms;
  let good = 0, bad = 0;
  while (Date.now() < end) {
    const r = await unary('Unary', Buffer.from('l'));
    if (r.err) bad++; else good++;
  }
  console.log(JSON.stringify({ ok: good, fail: bad }));
}

(async () => {
  if (mode === 'calls') await calls();
  else if (mode === 'abort') await abortMode(args[0], args[1], args[2]);
  else if (mode === 'reset') await resetMode();
  else if (mode === 'delay') await delayMode(Number(args[0]));
  else if (mode === 'percent') await percentMode(Number(args[0]), Number(args[1]));
  else if (mode === 'loop') await loopMode(Number(args[0]));
  else if (mode === 'deadline') await deadlineMode(Number(args[0]));
  else if (mode === 'meta') await metaMode(args);
  else { console.error(`unknown mode ${mode}`); process.exit(2); }
  client.close();
  process.exit(failed ? 1 : 0);
})();
