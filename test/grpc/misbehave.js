'use strict';
// Abusive HTTP/2 clients written as raw bytes, so nothing in a client library
// smooths them over. Usage: node misbehave.js MODE HOST PORT
//   garbage   the preface, then bytes that are not HTTP/2 frames
//   resets    a burst of HEADERS + RST_STREAM(CANCEL) pairs (rapid reset)
// Prints one JSON line: the GOAWAY error code received (or null), whether the
// proxy closed the connection, and how long that took.
const net = require('net');

const [mode, host, port] = process.argv.slice(2);
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

function frame(type, flags, id, payload) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

// HPACK: :method GET, :scheme http, :path / (static indexes), :authority "x"
// (literal, not indexed, name index 1).
const HEADERS_BLOCK = Buffer.from([0x82, 0x86, 0x84, 0x01, 0x01, 0x78]);

const sock = net.connect(Number(port), host);
const t0 = Date.now();
let goaway = null;
let buf = Buffer.alloc(0);

sock.on('connect', () => {
  const parts = [PREFACE, frame(4, 0, 0, Buffer.alloc(0))];
  if (mode === 'garbage') {
    parts.push(Buffer.from('GARBAGE! '.repeat(200)));
  } else {
    const rst = Buffer.alloc(4);
    rst.writeUInt32BE(8); // CANCEL
    for (let i = 0; i < 2000; i++) {
      const id = 1 + 2 * i;
      parts.push(frame(1, 0x4 | 0x1, id, HEADERS_BLOCK)); // END_HEADERS | END_STREAM
      parts.push(frame(3, 0, id, rst));
    }
  }
  sock.write(Buffer.concat(parts));
});

sock.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  while (buf.length >= 9) {
    const len = buf.readUIntBE(0, 3);
    if (buf.length < 9 + len) break;
    if (buf[3] === 7 && len >= 8) goaway = buf.readUInt32BE(9 + 4);
    buf = buf.subarray(9 + len);
  }
});

function done(closed) {
  console.log(JSON.stringify({ mode, goaway, closed, ms: Date.now() - t0 }));
  process.exit(0);
}
sock.on('error', () => {});
sock.on('close', () => done(true));
setTimeout(() => done(false), 5000);
