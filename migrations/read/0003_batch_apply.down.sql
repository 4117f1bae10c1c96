DROP FUNCTION apply_batch;
ALTER TABLE order_view RESET (fillfactor);
CREATE INDEX order_view_by_customer_status
    ON order_view (customer_id, status, placed_at DESC, order_id DESC);
CREATE TABLE order_view_line (
    order_id         uuid    NOT NULL REFERENCES order_view (order_id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    product_id       text    NOT NULL,
    quantity         integer NOT NULL,
    unit_price_minor bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
INSERT INTO order_view_line (order_id, line_no, product_id, quantity, unit_price_minor)
SELECT v.order_id, l.ordinality - 1, l.line ->> 'product_id', (l.line ->> 'quantity')::integer,
       (l.line ->> 'unit_price_minor')::bigint
FROM order_view v, jsonb_array_elements(v.lines) WITH ORDINALITY AS l(line, ordinality);
ALTER TABLE order_view DROP COLUMN lines;
