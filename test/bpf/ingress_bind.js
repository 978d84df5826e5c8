'use strict';
// Preload for test/grpc/server.js in test/bpf/ingress.sh:
//   FL_BIND_HOST=ADDR node -r test/bpf/ingress_bind.js test/grpc/server.js GRPC_PORT H2_PORT
// server.js listens on 127.0.0.1 only. An ingress-intercepted pod's server must
// listen on the pod's own address (the proxy dials the address the caller
// dialled, from inside the pod netns), so both of its listeners are moved to
// FL_BIND_HOST (default "::", every address of the netns, IPv4 too).
const path = require('path');
const net = require('net');
const grpc = require(path.join(__dirname, '../grpc/node_modules/@grpc/grpc-js'));

const host = process.env.FL_BIND_HOST || '::';
const bracketed = host.includes(':') ? `[${host}]` : host;

const bindAsync = grpc.Server.prototype.bindAsync;
grpc.Server.prototype.bindAsync = function (port, ...rest) {
  return bindAsync.call(this, port.replace(/^127\.0\.0\.1:/, `${bracketed}:`), ...rest);
};
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[1] === '127.0.0.1') args[1] = host;
  return listen.apply(this, args);
};
