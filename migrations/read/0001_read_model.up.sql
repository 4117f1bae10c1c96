-- The read model of orders.v1: projections of the events topic, the
-- projector's Kafka positions, parked (out-of-order) events and dead letters.
--
-- Names are unqualified on purpose: the query server applies this set with
-- search_path set to the projection's schema (`read_model` today), so that a
-- rebuild can create the same tables in a schema of its own (a generation)
-- beside the live one.

-- One row per order, as of its latest applied event.
CREATE TABLE order_view (
    order_id        uuid        PRIMARY KEY,
    customer_id     text,
    status          text        NOT NULL
        CHECK (status IN ('new', 'placed', 'confirmed', 'shipped', 'cancelled')),
    currency_code   text,
    total_minor     bigint      NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    -- occurred_at of the order's first event; the keyset of ListOrders.
    placed_at       timestamptz NOT NULL,
    -- occurred_at of the order's latest applied event.
    updated_at      timestamptz NOT NULL,
    tracking_number text,
    cancel_reason   text
);

-- Keyset pagination, newest first: unfiltered, per customer, per status, both.
CREATE INDEX order_view_recent ON order_view (placed_at DESC, order_id DESC);
CREATE INDEX order_view_by_customer ON order_view (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX order_view_by_status ON order_view (status, placed_at DESC, order_id DESC);
CREATE INDEX order_view_by_customer_status
    ON order_view (customer_id, status, placed_at DESC, order_id DESC);

-- The lines of an order, in first-added order.
CREATE TABLE order_view_line (
    order_id         uuid    NOT NULL REFERENCES order_view (order_id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    product_id       text    NOT NULL,
    quantity         integer NOT NULL,
    unit_price_minor bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every applied event, once per (order, version), as it arrived (the encoded
-- OrderEvent envelope), for GetOrderHistory and audit.
CREATE TABLE order_history (
    order_id        uuid        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    payload         bytea       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);

-- Events that arrived ahead of a missing version: parked, not applied, until
-- the gap closes; then applied in version order and deleted.
CREATE TABLE pending_event (
    order_id        uuid        NOT NULL,
    version         bigint      NOT NULL,
    payload         bytea       NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);

-- The projector's positions: the next offset to apply per partition. Written
-- in the same transaction as the projection; the source of truth on assignment.
CREATE TABLE consumer_position (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

-- Messages that cannot be applied (undecodable, unknown event type, missing or
-- mismatched key), kept verbatim; the partition moves on.
CREATE TABLE dead_letter (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    message_key      bytea,
    message_value    bytea,
    headers          jsonb       NOT NULL DEFAULT '[]',
    error            text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);

-- One row: when the projection last applied an event (freshness), and how many.
CREATE TABLE projection_meta (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    last_applied_at timestamptz,
    events_applied  bigint      NOT NULL DEFAULT 0
);
INSERT INTO projection_meta DEFAULT VALUES;
