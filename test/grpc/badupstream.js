'use strict';
// An HTTP/2 upstream written as raw bytes, so nothing in a server library stops
// it from sending malformed responses. Usage: node badupstream.js PORT
// On each connection, requests are answered in turn by:
//   1. a header block without :status (END_STREAM)
//   2. a valid 200 with body "ok\n"
//   3. a valid head, then a second block carrying :status as "trailers"
//   4. a valid 200 with body "ok\n"
// and so on, cycling. A proxy must turn 1 and 3 into stream errors and pass
// 2 and 4 unchanged.
const net = require('net');

const port = Number(process.argv[2]);
const PREFACE_LEN = 24;

function frame(type, flags, id, payload) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}
const END_STREAM = 0x1, END_HEADERS = 0x4;
const NO_STATUS = Buffer.from([0x00, 0x01, 0x78, 0x01, 0x79]); // "x: y", literal
const STATUS_200 = Buffer.from([0x88]); // :status 200, static index 8

net.createServer((sock) => {
  let buf = Buffer.alloc(0), preface = false, n = 0;
  sock.write(frame(4, 0, 0, Buffer.alloc(0)));
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!preface) {
      if (buf.length < PREFACE_LEN) return;
      buf = buf.subarray(PREFACE_LEN);
      preface = true;
    }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3), type = buf[3], flags = buf[4];
      const id = buf.readUInt32BE(5) & 0x7fffffff;
      if (buf.length < 9 + len) break;
      buf = buf.subarray(9 + len);
      if (type === 4 && !(flags & 1)) sock.write(frame(4, 1, 0, Buffer.alloc(0)));
      if (type !== 1) continue;
      switch (n++ % 4) {
        case 0:
          sock.write(frame(1, END_HEADERS | END_STREAM, id, NO_STATUS));
          break;
        case 2:
          sock.write(Buffer.concat([frame(1, END_HEADERS, id, STATUS_200),
            frame(0, 0, id, Buffer.from('partial\n')),
            frame(1, END_HEADERS | END_STREAM, id, STATUS_200)]));
          break;
        default:
          sock.write(Buffer.concat([frame(1, END_HEADERS, id, STATUS_200),
            frame(0, END_STREAM, id, Buffer.from('ok\n'))]));
      }
    }
  });
  sock.on('error', () => {});
}).listen(port, '127.0.0.1');
