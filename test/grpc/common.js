'use strict';
// Shared by server.js and client.js: the loaded service and deterministic payloads.
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const def = loader.loadSync(path.join(__dirname, 'echo.proto'), {
  longs: Number, defaults: true,
});
const Echo = grpc.loadPackageDefinition(def).faultline.test.Echo;

const MAX_MSG = 64 * 1024 * 1024;
const OPTS = {
  'grpc.max_receive_message_length': MAX_MSG,
  'grpc.max_send_message_length': MAX_MSG,
};

// Message i of a server stream: size bytes that depend on i, so reordering
// or corruption changes the hash.
function block(i, size) {
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k++) b[k] = (i * 31 + k * 7) & 0xff;
  return b;
}

function sha256(bufs) {
  const h = crypto.createHash('sha256');
  for (const b of [].concat(bufs)) h.update(b);
  return h.digest('hex');
}

module.exports = { grpc, Echo, OPTS, block, sha256 };
