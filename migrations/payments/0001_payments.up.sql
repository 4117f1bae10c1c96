-- The Payments stand-in's table (src/payments/store.rs). The database
-- belongs to the service's role, which applies these at start-up; nobody
-- else may connect.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

-- One row per idempotency key. A tombstone (voided before it was
-- authorized) has no customer, amount or currency.
CREATE TABLE payment (
    payment_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('authorized', 'captured', 'voided', 'declined')),
    tombstone boolean NOT NULL DEFAULT false,
    customer_id text,
    amount_minor bigint NOT NULL DEFAULT 0 CHECK (amount_minor >= 0),
    currency_code text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone = (customer_id IS NULL)),
    CHECK (tombstone = (currency_code IS NULL)),
    CHECK (NOT tombstone OR state = 'voided')
);
