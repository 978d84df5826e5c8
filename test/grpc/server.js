'use strict';
// Upstreams for the tests: the gRPC Echo service on GRPC_PORT and a plain
// HTTP/2 (h2c, prior knowledge) server on H2_PORT. Prints "ready" when both listen.
//   /hello        200 "hello\n"
//   /echo         echoes the request body
//   /status/N     answers N
//   /bytes/N      N bytes, (i * 7 + 3) & 255, with content-length and an etag
const http2 = require('http2');
const { grpc, Echo, OPTS, block, sha256 } = require('./common');

const [grpcPort, h2Port] = process.argv.slice(2).map(Number);

const impl = {
  Unary(call, cb) {
    cb(null, { data: call.request.data, note: sha256(call.request.data) });
  },
  Other(call, cb) {
    cb(null, { data: call.request.data, note: 'other' });
  },
  ServerStream(call) {
    const { count, size } = call.request;
    let i = 0;
    const more = () => {
      while (i < count) {
        const ok = call.write({ data: block(i, size), note: String(i) });
        i++;
        if (!ok) return call.once('drain', more);
      }
      call.end();
    };
    more();
  },
  ClientStream(call, cb) {
    const bufs = [];
    let total = 0;
    call.on('data', (m) => { bufs.push(m.data); total += m.data.length; });
    call.on('end', () => cb(null, { note: sha256(bufs), total }));
    call.on('error', () => {});
  },
  Bidi(call) {
    call.on('data', (m) => call.write({ data: m.data, note: m.note }));
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
};

const server = new grpc.Server(OPTS);
server.addService(Echo.service, impl);
server.bindAsync(`127.0.0.1:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  h2.on('stream', (stream, headers) => {
    const p = headers[':path'];
    if (p === '/echo') {
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
      stream.pipe(stream);
      return;
    }
    const b = /^\/bytes\/(\d+)$/.exec(p);
    if (b) {
      const n = Number(b[1]);
      const body = Buffer.alloc(n);
      for (let i = 0; i < n; i++) body[i] = (i * 7 + 3) & 0xff;
      stream.respond({ ':status': 200, 'content-length': String(n), 'etag': '"v1"' });
      stream.end(body);
      return;
    }
    const m = /^\/status\/(\d+)$/.exec(p);
    if (m) {
      stream.respond({ ':status': Number(m[1]) });
      stream.end(`status ${m[1]}\n`);
      return;
    }
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('hello\n');
  });
  h2.on('sessionError', () => {});
  h2.listen(h2Port, '127.0.0.1', () => console.log('ready'));
});
