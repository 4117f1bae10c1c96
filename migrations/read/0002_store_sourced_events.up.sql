-- Events applied from the event store (`orderctl rebuild --from-store`) were
-- never consumed from Kafka: they carry their store position instead of a
-- topic, partition and offset. Exactly one of the two sources is recorded.

ALTER TABLE order_history
    ALTER COLUMN topic DROP NOT NULL,
    ALTER COLUMN kafka_partition DROP NOT NULL,
    ALTER COLUMN kafka_offset DROP NOT NULL,
    ADD COLUMN store_position bigint;
ALTER TABLE order_history ADD CONSTRAINT order_history_one_source CHECK (
    (topic IS NOT NULL AND kafka_partition IS NOT NULL AND kafka_offset IS NOT NULL
        AND store_position IS NULL)
    OR (topic IS NULL AND kafka_partition IS NULL AND kafka_offset IS NULL
        AND store_position IS NOT NULL));

ALTER TABLE pending_event
    ALTER COLUMN topic DROP NOT NULL,
    ALTER COLUMN kafka_partition DROP NOT NULL,
    ALTER COLUMN kafka_offset DROP NOT NULL,
    ADD COLUMN store_position bigint;
ALTER TABLE pending_event ADD CONSTRAINT pending_event_one_source CHECK (
    (topic IS NOT NULL AND kafka_partition IS NOT NULL AND kafka_offset IS NOT NULL
        AND store_position IS NULL)
    OR (topic IS NULL AND kafka_partition IS NULL AND kafka_offset IS NULL
        AND store_position IS NOT NULL));
