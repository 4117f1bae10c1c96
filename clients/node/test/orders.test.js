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

  // Read-your-writes: wait for the projection to reach version 3.
  await oc.call(qry, 'getOrder', { orderId, minVersion: 3 });
  // Assert on the order as of version 3: the fulfilment saga may already have moved it on (cancelled).
  const got = await oc.call(qry, 'getOrder', { orderId, asOfVersion: 3 });
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

  // The first three events only: the fulfilment saga may already have appended an orderCancelled.
  const history = await oc.call(qry, 'getOrderHistory', { orderId, pageSize: 3 });
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

// [version, status, coalesced] per WatchOrder message.
const watched = (messages) => messages.map((m) => [m.order.version, m.order.status, m.coalesced]);

// A WatchOrder stream (with the deadline), read through its async iterator;
// `ended` resolves with the final status, OK or not.
function watchOrder(request) {
  const stream = oc.serverStream(qry, 'watchOrder', request);
  const ended = new Promise((resolve) => stream.on('status', resolve));
  return { stream, messages: stream[Symbol.asyncIterator](), ended };
}

// Appends the rest of a watch to `received`; fails unless it ends with OK.
async function readToEnd({ messages, ended }, received) {
  try {
    for (let r = await messages.next(); !r.done; r = await messages.next()) received.push(r.value);
  } catch (err) {
    assert.fail(`WatchOrder ended with ${err.code} (${err.details}) after ${JSON.stringify(watched(received))}`);
  }
  const end = await ended;
  assert.equal(end.code, status.OK, `WatchOrder ended with ${end.code} (${end.details})`);
  return received;
}

test('WatchOrder streams each version until cancelled, and resumes from a version', async () => {
  const orderId = oc.newId();
  const placed = await oc.call(cmd, 'placeOrder', {
    requestId: oc.newId(),
    orderId,
    customerId,
    currencyCode: 'EUR',
    lines: [line('sku-1', 2, 1250), line('sku-2', 1, 999)],
  });
  assert.deepEqual(placed, { orderId, version: '1' });

  // Watch from version 1 before the further commands; reading the first
  // message shows the stream is being served, so versions 2-3 arrive live.
  // The order is cancelled, never confirmed: the fulfilment saga acts on
  // every confirmed order and could cancel it under the test.
  const watch = watchOrder({ orderId, fromVersion: 1 });
  const reason = 'changed my mind';
  const received = [];
  try {
    const first = await watch.messages.next().catch((err) =>
      assert.fail(`WatchOrder ended with ${err.code} (${err.details}) before its first message`),
    );
    assert.ok(!first.done, 'WatchOrder ended before its first message');
    received.push(first.value);
    assert.deepEqual(watched(received), [['1', 'ORDER_STATUS_PLACED', false]]);

    const added = await oc.call(cmd, 'addOrderLine', {
      requestId: oc.newId(),
      orderId,
      expectedVersion: 1,
      line: line('sku-3', 3, 500),
    });
    assert.deepEqual(added, { orderId, version: '2' });
    const cancelled = await oc.call(cmd, 'cancelOrder', {
      requestId: oc.newId(),
      orderId,
      expectedVersion: 2,
      reason,
    });
    assert.deepEqual(cancelled, { orderId, version: '3' });

    // The stream ends by itself (OK) once the order is CANCELLED.
    await readToEnd(watch, received);
  } finally {
    watch.stream.cancel(); // a no-op once the stream has ended; frees it if an assertion failed
  }
  assert.deepEqual(watched(received), [
    ['1', 'ORDER_STATUS_PLACED', false],
    ['2', 'ORDER_STATUS_PLACED', false], // a line added leaves the order PLACED
    ['3', 'ORDER_STATUS_CANCELLED', false],
  ]);
  assert.ok(received.every((m) => m.order.orderId === orderId));
  assert.deepEqual(received.map((m) => m.order.lines.length), [2, 3, 3]);
  assert.equal(received[2].order.cancelReason, reason);
  assert.equal(received[2].order.totalMinor, String(2 * 1250 + 999 + 3 * 500));
  for (const m of received) {
    assert.ok(
      BigInt(m.freshness.projectedVersion) >= BigInt(m.order.version),
      `version ${m.order.version} with freshness ${JSON.stringify(m.freshness)}`,
    );
  }

  // Resume: from version 2 on the cancelled order, versions 2 and 3, then the end.
  const resumed = await readToEnd(watchOrder({ orderId, fromVersion: 2 }), []);
  assert.deepEqual(watched(resumed), [
    ['2', 'ORDER_STATUS_PLACED', false],
    ['3', 'ORDER_STATUS_CANCELLED', false],
  ]);
  assert.equal(resumed[1].order.cancelReason, reason);
});
