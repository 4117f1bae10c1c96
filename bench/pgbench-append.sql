-- The command path's append transaction for one new order, as pgbench runs it.
-- PlaceOrder is decided without loading (a new id has no stream; the unique
-- keys catch a reused one), so the transaction is one statement: insert the
-- event, its outbox row and the notification for the relay, then commit.
\set n random(1, 9000000000000000000)
BEGIN;
WITH inserted AS (
  INSERT INTO events (event_id, order_id, version, event_type, payload, occurred_at,
                      request_id, correlation_id, causation_id, traceparent)
  SELECT gen_random_uuid(), md5(:n::text)::uuid, 1, 'OrderPlaced',
         decode(repeat('ab', 160), 'hex'), now(), NULL, 'c', 'c', NULL
  RETURNING position),
queued AS (
  INSERT INTO outbox (event_position) SELECT position FROM inserted ORDER BY position)
SELECT pg_notify('orders_outbox', '');
COMMIT;
