-- The command path's append transaction for one new order, as pgbench runs it:
-- read the order's stream, insert its event and outbox row, notify the relay, commit.
\set n random(1, 9000000000000000000)
BEGIN;
SELECT position, order_id, payload FROM events
 WHERE order_id = ANY(ARRAY[md5(:n::text)::uuid]) ORDER BY order_id, version;
WITH inserted AS (
  INSERT INTO events (event_id, order_id, version, event_type, payload, occurred_at,
                      request_id, correlation_id, causation_id, traceparent)
  SELECT gen_random_uuid(), md5(:n::text)::uuid, 1, 'OrderPlaced',
         decode(repeat('ab', 160), 'hex'), now(), NULL, 'c', 'c', NULL
  RETURNING position)
INSERT INTO outbox (event_position) SELECT position FROM inserted ORDER BY position;
SELECT pg_notify('orders_outbox', '');
COMMIT;
