-- Rows from the event store cannot be expressed without the columns: dropped.
DELETE FROM pending_event WHERE store_position IS NOT NULL;
ALTER TABLE pending_event DROP CONSTRAINT pending_event_one_source;
ALTER TABLE pending_event
    DROP COLUMN store_position,
    ALTER COLUMN topic SET NOT NULL,
    ALTER COLUMN kafka_partition SET NOT NULL,
    ALTER COLUMN kafka_offset SET NOT NULL;

DELETE FROM order_history WHERE store_position IS NOT NULL;
ALTER TABLE order_history DROP CONSTRAINT order_history_one_source;
ALTER TABLE order_history
    DROP COLUMN store_position,
    ALTER COLUMN topic SET NOT NULL,
    ALTER COLUMN kafka_partition SET NOT NULL,
    ALTER COLUMN kafka_offset SET NOT NULL;
