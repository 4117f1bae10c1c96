'use strict';
// A small client for the orders service. The stubs are generated at run time
// by @grpc/proto-loader from ../../proto (nothing generated is committed).
//
// Addresses: ORDERS_COMMAND_ADDR (default 127.0.0.1:50051) and
// ORDERS_QUERY_ADDR (default 127.0.0.1:50052); plaintext HTTP/2. The channels
// load the shared service config (timeouts, retries on UNAVAILABLE), and
// every call made through call() or serverStream() carries an explicit deadline.
//
// When ORDERS_TOKEN is set, every call on the clients below carries the gRPC
// metadata `authorization: Bearer $ORDERS_TOKEN`; unset or empty, no
// authorization header is sent (for servers run with --auth=disabled).

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const VENDOR_ROOT = path.resolve(__dirname, 'vendor');
const SERVICE_CONFIG = fs.readFileSync(path.join(PROTO_ROOT, 'orders', 'v1', 'service_config.json'), 'utf8');

// Milliseconds; GetOrder with min_version waits server-side for at most 5 s.
const DEADLINE_MS = 10_000;

function loadOrders() {
  const dir = path.join(PROTO_ROOT, 'orders', 'v1');
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.proto'))
    .sort()
    .map((f) => `orders/v1/${f}`);
  const def = protoLoader.loadSync(files, {
    includeDirs: [PROTO_ROOT],
    longs: String, // uint64/int64 as decimal strings: no precision loss
    enums: String,
    defaults: true,
    oneofs: true, // OrderEvent.event names the set case, e.g. 'orderPlaced'
  });
  return grpc.loadPackageDefinition(def).orders.v1;
}

const ordersV1 = loadOrders();

// google.rpc.Status and BadRequest, for the grpc-status-details-bin trailer.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) =>
  target.startsWith('google/rpc/') ? path.join(VENDOR_ROOT, target) : target;
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcRoot.lookupType('google.rpc.Status');
const BadRequest = rpcRoot.lookupType('google.rpc.BadRequest');

const commandAddr = () => process.env.ORDERS_COMMAND_ADDR || '127.0.0.1:50051';
const queryAddr = () => process.env.ORDERS_QUERY_ADDR || '127.0.0.1:50052';

const token = () => process.env.ORDERS_TOKEN || '';

const channelOptions = {
  'grpc.service_config': SERVICE_CONFIG,
  'grpc.enable_retries': 1,
};

// A client interceptor adding `authorization: Bearer <token>` to every call's
// metadata. (Not call credentials: grpc-js refuses to compose them with
// insecure channel credentials, and the dev servers speak plaintext.)
function bearerToken(bearer) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${bearer}`);
        next(metadata, listener);
      },
    });
}

// Client options: the service config, and the token interceptor when there is a token.
function clientOptions(bearer) {
  return bearer ? { ...channelOptions, interceptors: [bearerToken(bearer)] } : channelOptions;
}

// bearer defaults to ORDERS_TOKEN; '' (or null) sends no authorization header.
function commandsClient(addr = commandAddr(), bearer = token()) {
  return new ordersV1.OrderCommands(addr, grpc.credentials.createInsecure(), clientOptions(bearer));
}

function queriesClient(addr = queryAddr(), bearer = token()) {
  return new ordersV1.OrderQueries(addr, grpc.credentials.createInsecure(), clientOptions(bearer));
}

// Promise-returning unary call with a deadline.
function call(client, method, request, deadlineMs = DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: new Date(Date.now() + deadlineMs) }, (err, res) =>
      err ? reject(err) : resolve(res),
    );
  });
}

// Server-streaming call with a deadline: the ClientReadableStream (a Readable
// in object mode: 'data' per message, 'status' once at the end, 'error' too
// unless the status is OK).
function serverStream(client, method, request, deadlineMs = DEADLINE_MS) {
  return client[method](request, { deadline: new Date(Date.now() + deadlineMs) });
}

// The google.rpc.BadRequest in a ServiceError's rich status, or null.
function badRequest(err) {
  const raw = err && err.metadata && err.metadata.get('grpc-status-details-bin');
  if (!raw || raw.length === 0) return null;
  const status = Status.decode(raw[0]);
  for (const any of status.details) {
    if (any.type_url === 'type.googleapis.com/google.rpc.BadRequest') {
      return BadRequest.toObject(BadRequest.decode(any.value), { defaults: true });
    }
  }
  return null;
}

const newId = () => crypto.randomUUID();

module.exports = {
  DEADLINE_MS,
  ordersV1,
  commandAddr,
  queryAddr,
  token,
  commandsClient,
  queriesClient,
  call,
  serverStream,
  badRequest,
  newId,
  grpc,
};
