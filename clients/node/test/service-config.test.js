'use strict';
// The service config from proto/ is loaded: UNAVAILABLE is retried.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const oc = require('../orders-client');

const { grpc } = oc;

test('the service config retries UNAVAILABLE', async () => {
  let calls = 0;
  const server = new grpc.Server();
  server.addService(oc.ordersV1.OrderQueries.service, {
    getOrder(callObj, callback) {
      calls += 1;
      if (calls <= 2) {
        callback({ code: grpc.status.UNAVAILABLE, details: 'not yet' });
        return;
      }
      callback(null, { order: { orderId: callObj.request.orderId } });
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const client = oc.queriesClient(`127.0.0.1:${port}`);
  try {
    const got = await oc.call(client, 'getOrder', { orderId: 'o-1' });
    assert.equal(got.order.orderId, 'o-1');
    assert.equal(calls, 3, 'attempts seen by the server (2 retried UNAVAILABLE)');
  } finally {
    client.close();
    server.forceShutdown();
  }
});
