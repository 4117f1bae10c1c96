-- The order fulfilment saga's tables (src/fulfilment/store.rs). The database
-- belongs to the service's role, which applies these at start-up; nobody
-- else may connect.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

-- One saga per confirmed order: what `fulfilment::saga::decide` decides,
-- changed only under a row lock (SELECT ... FOR UPDATE), in one transaction
-- with the intents it adds and the event or answer that caused the change.
CREATE TABLE saga (
    order_id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    -- [{"product_id": ..., "quantity": ...}, ...]
    lines jsonb NOT NULL,
    amount_minor bigint NOT NULL,
    currency_code text NOT NULL,
    phase text NOT NULL CHECK (phase IN ('forward', 'compensating', 'completed', 'cancelled', 'failed')),
    step text NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 0),
    -- Compensations after `step`, in order.
    pending text[] NOT NULL DEFAULT '{}',
    step_started timestamptz NOT NULL,
    -- The next attempt's time; the worker feeds `Wake` to due sagas.
    wake_at timestamptz,
    in_flight boolean NOT NULL,
    tracking_number text,
    cancel_reason text,
    order_cancelled boolean NOT NULL DEFAULT false,
    -- {"<step>": {"code": ..., "attempt": ..., "at": ...}, ...}
    last_status jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The last change: a saga not finished with no change for long is stuck.
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_due ON saga (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX saga_phase ON saga (phase, updated_at);

-- The calls decided and not yet answered: a call is made only from a row
-- here, and its answer deletes the row in the transaction that records it.
CREATE TABLE saga_intent (
    order_id uuid NOT NULL REFERENCES saga (order_id),
    step text NOT NULL,
    attempt integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, step, attempt)
);

-- Events already applied to a saga, by event id: a redelivered or
-- republished event is dropped.
CREATE TABLE saga_event (
    event_id uuid PRIMARY KEY,
    order_id uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Where the worker's consumer is, per partition of the events topic: moved
-- in the transaction of each event it applies.
CREATE TABLE saga_position (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
