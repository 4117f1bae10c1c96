'use strict';
// The golden flow against the live servers (scripts/dev up).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const oc = require('../orders-client');

const { status } = oc.grpc;
let cmd;
let qry;
const customerId = `node-${oc.newId()}`; // unique per run: the database is shared

before(() => {
  cmd = oc.commandsClient();
  qry = oc.queriesClient();
});

after(() => {
  cmd.close();
  qry.close();
});

const line = (productId, quantity, unitPriceMinor) => ({ productId, quantity, unitPriceMinor });

test('golden flow: place, add a line, confirm, read back, list, history', async () => {
  const orderId = oc.newId();

  const placed = await oc.call(cmd, 'placeOrder', {
    requestId: oc.newId(),
    orderId,
    customerId,
    currencyCode: 'EUR',
    lines: [line('sku-1', 2, 1250), line('sku-2', 1, 999)],
  });
  assert.deepEqual(placed, { orderId, version: '1' });

  const added = await oc.call(cmd, 'addOrderLine', {
    requestId: oc.newId(),
    orderId,
    expectedVersion: 1,
    line: line('sku-3', 3, 500),
  });
  assert.deepEqual(added, { orderId, version: '2' });

  const confirmed = await oc.call(cmd, 'confirmOrder', { requestId: oc.newId(), orderId, expectedVersion: 2 });
  assert.deepEqual(confirmed, { orderId, version: '3' });

  const got = await oc.call(qry, 'getOrder', { orderId, minVersion: 3 });
  const o = got.order;
  assert.equal(o.orderId, orderId);
  assert.equal(o.customerId, customerId);
  assert.equal(o.status, 'ORDER_STATUS_CONFIRMED');
  assert.equal(o.currencyCode, 'EUR');
  assert.equal(o.version, '3');
  assert.deepEqual(
    o.lines.map((l) => [l.productId, l.quantity, l.unitPriceMinor]),
    [
      ['sku-1', 2, '1250'],
      ['sku-2', 1, '999'],
      ['sku-3', 3, '500'],
    ],
  );
  assert.equal(o.totalMinor, String(2 * 1250 + 999 + 3 * 500));
  assert.ok(BigInt(got.freshness.projectedVersion) >= 3n, `freshness ${JSON.stringify(got.freshness)}`);

  const listed = await oc.call(qry, 'listOrders', { customerId, pageSize: 10 });
  assert.ok(
    listed.orders.some((x) => x.orderId === orderId),
    `ListOrders misses ${orderId}: ${JSON.stringify(listed.orders.map((x) => x.orderId))}`,
  );
  assert.ok(listed.orders.every((x) => x.customerId === customerId));

  const history = await oc.call(qry, 'getOrderHistory', { orderId });
  assert.deepEqual(
    history.events.map((e) => e.event),
    ['orderPlaced', 'orderLineAdded', 'orderConfirmed'],
  );
  assert.deepEqual(
    history.events.map((e) => [e.orderId, e.version]),
    [
      [orderId, '1'],
      [orderId, '2'],
      [orderId, '3'],
    ],
  );
  assert.equal(history.events[1].orderLineAdded.line.productId, 'sku-3');
});

test('place and cancel a second order', async () => {
  // No orderId: the server generates one.
  const placed = await oc.call(cmd, 'placeOrder', {
    requestId: oc.newId(),
    customerId,
    currencyCode: 'EUR',
    lines: [line('sku-9', 1, 4200)],
  });
  assert.ok(placed.orderId);
  assert.equal(placed.version, '1');

  const reason = 'customer changed their mind';
  const cancelled = await oc.call(cmd, 'cancelOrder', { requestId: oc.newId(), orderId: placed.orderId, reason });
  assert.deepEqual(cancelled, { orderId: placed.orderId, version: '2' });

  const got = await oc.call(qry, 'getOrder', { orderId: placed.orderId, minVersion: 2 });
  assert.equal(got.order.status, 'ORDER_STATUS_CANCELLED');
  assert.equal(got.order.cancelReason, reason);
  assert.equal(got.order.version, '2');
});

test('a retry with the same request_id appends nothing', async () => {
  const req = {
    requestId: oc.newId(),
    orderId: oc.newId(),
    customerId,
    currencyCode: 'USD',
    lines: [line('sku-1', 1, 100)],
  };
  const first = await oc.call(cmd, 'placeOrder', req);
  const again = await oc.call(cmd, 'placeOrder', req);
  assert.deepEqual(first, { orderId: req.orderId, version: '1' });
  assert.deepEqual(again, first);
});

test('an invalid request is INVALID_ARGUMENT with google.rpc.BadRequest details', async () => {
  const err = await oc
    .call(cmd, 'placeOrder', {
      requestId: oc.newId(),
      customerId,
      currencyCode: 'eur',
      lines: [line('sku-1', 0, 100)],
    })
    .then(
      (res) => assert.fail(`expected INVALID_ARGUMENT, got ${JSON.stringify(res)}`),
      (e) => e,
    );
  assert.equal(err.code, status.INVALID_ARGUMENT, String(err));
  const br = oc.badRequest(err);
  assert.ok(br, `no google.rpc.BadRequest in the status details of ${err}`);
  const fields = Object.fromEntries(br.field_violations.map((v) => [v.field, v.description]));
  assert.ok(fields.currency_code, `no violation for currency_code in ${JSON.stringify(fields)}`);
  assert.ok(fields['lines[0].quantity'], `no violation for lines[0].quantity in ${JSON.stringify(fields)}`);
});
