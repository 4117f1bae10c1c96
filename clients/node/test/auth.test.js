'use strict';
// The bearer token: sent when ORDERS_TOKEN is set, and required by the servers
// when ORDERS_AUTH_ENFORCED=1.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const oc = require('../orders-client');

const { grpc } = oc;

// ORDERS_AUTH_ENFORCED: "1" when the servers require a token (scripts/clients
// sets it by default), "0" or unset when they do not.
function authEnforced() {
  const v = process.env.ORDERS_AUTH_ENFORCED ?? '0';
  if (v !== '0' && v !== '1') throw new Error(`ORDERS_AUTH_ENFORCED must be 0 or 1, not ${JSON.stringify(v)}`);
  return v === '1';
}

test(
  'a call without the token is UNAUTHENTICATED',
  { skip: !authEnforced() && 'ORDERS_AUTH_ENFORCED is not 1 (servers not expected to enforce auth)' },
  async () => {
    const qry = oc.queriesClient(oc.queryAddr(), '');
    try {
      // A call that succeeds on a server without auth: it must be refused here.
      const err = await oc.call(qry, 'listOrders', { customerId: `node-${oc.newId()}`, pageSize: 1 }).then(
        (res) => assert.fail(`ListOrders without a token succeeded (${res.orders.length} orders): auth not enforced`),
        (e) => e,
      );
      assert.equal(err.code, grpc.status.UNAUTHENTICATED, String(err));
    } finally {
      qry.close();
    }
  },
);

// Checked on a fake server: today's servers accept calls either way.
for (const [env, want] of [
  ['token-for-the-test', 'Bearer token-for-the-test'],
  [undefined, undefined],
  ['', undefined],
]) {
  test(`the clients send ORDERS_TOKEN as a bearer token (ORDERS_TOKEN=${JSON.stringify(env)})`, async () => {
    const seen = [];
    const server = new grpc.Server();
    server.addService(oc.ordersV1.OrderQueries.service, {
      getOrder(callObj, callback) {
        seen.push(callObj.metadata.get('authorization')[0]);
        callback(null, { order: { orderId: callObj.request.orderId } });
      },
    });
    const port = await new Promise((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const saved = process.env.ORDERS_TOKEN;
    if (env === undefined) delete process.env.ORDERS_TOKEN;
    else process.env.ORDERS_TOKEN = env;
    let client;
    try {
      client = oc.queriesClient(`127.0.0.1:${port}`);
    } finally {
      if (saved === undefined) delete process.env.ORDERS_TOKEN;
      else process.env.ORDERS_TOKEN = saved;
    }
    try {
      await oc.call(client, 'getOrder', { orderId: 'o-1' });
      await oc.call(client, 'getOrder', { orderId: 'o-2' });
      assert.deepEqual(seen, [want, want]);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
}
