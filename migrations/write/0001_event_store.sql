-- Event store, outbox and idempotency keys of the command side.

-- Every event ever accepted. Append-only: updates and deletes are refused.
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       UUID        NOT NULL UNIQUE,
    order_id       UUID        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version > 0),
    event_type     TEXT        NOT NULL,
    -- The encoded orders.v1.OrderEvent envelope, exactly as published.
    payload        BYTEA       NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    request_id     TEXT,
    correlation_id TEXT        NOT NULL,
    causation_id   TEXT        NOT NULL,
    traceparent    TEXT,
    CONSTRAINT events_order_version_key UNIQUE (order_id, version)
);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Events waiting to be published. Written in the same transaction as the
-- events; deleted by the relay once Kafka acknowledged them.
CREATE TABLE outbox (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_position BIGINT      NOT NULL REFERENCES events (position),
    enqueued_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Idempotency keys: the first answer to each request id, stored with its events.
CREATE TABLE idempotency_keys (
    request_id TEXT        PRIMARY KEY,
    -- The RPC the key was first used with.
    rpc        TEXT        NOT NULL,
    -- The encoded request, to tell a retry from a different request.
    request    BYTEA       NOT NULL,
    order_id   UUID        NOT NULL,
    version    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
