-- The Inventory service's tables (src/inventory/store.rs). The database
-- belongs to the service's role, which applies these at start-up; nobody
-- else may connect.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

-- A product's stock: on_hand units, reserved of them held by reservations.
CREATE TABLE stock_item (
    product_id text PRIMARY KEY,
    on_hand bigint NOT NULL CHECK (on_hand >= 0),
    reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per idempotency key. `tombstone`: released before it was made.
-- `refused_product`: the product that was short when state is 'refused'.
CREATE TABLE reservation (
    reservation_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('reserved', 'released', 'dispatched', 'refused')),
    tombstone boolean NOT NULL DEFAULT false,
    refused_product text,
    tracking_number text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'refused') = (refused_product IS NOT NULL)),
    CHECK ((state = 'dispatched') = (tracking_number IS NOT NULL))
);

-- What a reservation asked for, one row per product (also for refused ones:
-- a retry is compared with it).
CREATE TABLE reservation_line (
    reservation_id text NOT NULL REFERENCES reservation (reservation_id),
    product_id text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
