'use strict';
// gRPC clients for test/bpf/ingress.sh (the Echo service of test/grpc).
//   node ingress_grpc.js count ADDR METHOD N
//       N calls of METHOD (Unary or Other) on one channel, one at a time; prints one
//       JSON line {n, codes: {code: count}, marked: calls with x-faultline-injected,
//       details: {text: count}}
//   node ingress_grpc.js loop ADDR METHOD INTERVAL_MS STOPFILE
//       one channel, a call every INTERVAL_MS until STOPFILE exists; prints
//       "STATE NAME" at every connectivity change of the channel and
//       "CALL i code=C marked=0|1 details=TEXT" per call, then "END calls=N ready=R"
//       (R: how often the channel became READY: 1 = one connection throughout)
const fs = require('fs');
const path = require('path');
const { grpc, Echo, OPTS } = require(path.join(__dirname, '../grpc/common'));

const [mode, addr, method, ...args] = process.argv.slice(2);
const client = new Echo(addr, grpc.credentials.createInsecure(), OPTS);
const STATE = Object.fromEntries(Object.entries(grpc.connectivityState).map(([k, v]) => [v, k]));

function call() {
  return new Promise((resolve) => {
    client[method]({ data: Buffer.from('x') }, { deadline: Date.now() + 5000 }, (err) => {
      if (!err) return resolve({ code: 0, marked: 0, details: '' });
      const m = err.metadata ? err.metadata.get('x-faultline-injected') : [];
      resolve({ code: err.code, marked: m.length ? 1 : 0, details: err.details || '' });
    });
  });
}

async function count(n) {
  const codes = {}, details = {};
  let marked = 0;
  for (let i = 0; i < n; i++) {
    const r = await call();
    codes[r.code] = (codes[r.code] || 0) + 1;
    if (r.details) details[r.details] = (details[r.details] || 0) + 1;
    marked += r.marked;
  }
  console.log(JSON.stringify({ n, codes, marked, details }));
}

async function loop(interval, stopfile) {
  const ch = client.getChannel();
  let ready = 0, stopped = false;
  const watch = () => {
    if (stopped) return;
    const st = ch.getConnectivityState(false);
    ch.watchConnectivityState(st, Date.now() + 3600e3, (err) => {
      if (err || stopped) return;
      const now = ch.getConnectivityState(false);
      if (now === grpc.connectivityState.READY) ready++;
      console.log(`STATE ${STATE[now]}`);
      watch();
    });
  };
  watch();
  let i = 0;
  while (!fs.existsSync(stopfile)) {
    const r = await call();
    i++;
    console.log(`CALL ${i} code=${r.code} marked=${r.marked} details=${r.details.replace(/\s+/g, '_')}`);
    await new Promise((res) => setTimeout(res, interval));
  }
  stopped = true;
  console.log(`END calls=${i} ready=${ready}`);
}

(async () => {
  if (mode === 'count') await count(Number(args[0]));
  else if (mode === 'loop') await loop(Number(args[0]), args[1]);
  else { console.error(`unknown mode ${mode}`); process.exit(2); }
  client.close();
  process.exit(0);
})();
