//! The history digest both sides compute in SQL, so that `verify` compares an
//! order's events in the store with its `order_history` in a projection
//! without reading either: the md5 (hex) of `event_id:version` for every
//! event, in version order, joined by `,`. Both tables name the columns alike.

/// The aggregate expression over an order's rows (`GROUP BY order_id`).
pub const HISTORY_DIGEST: &str =
    "md5(string_agg(event_id::text || ':' || version::text, ',' ORDER BY version))";
