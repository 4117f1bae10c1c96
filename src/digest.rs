//! The history digest both sides compute in SQL, so that `verify` compares an
//! order's events in the store with its `order_history` in a projection
//! without reading either: the md5 (hex) of `event_id:version` for every
//! event, in version order, joined by `,`. Both tables name the columns alike.
//!
//! The SQL macros take only string literals, so each statement writes the
//! expression out; the test below keeps every copy equal to `HISTORY_DIGEST`.

/// The aggregate expression over an order's rows (`GROUP BY order_id`).
pub const HISTORY_DIGEST: &str =
    "md5(string_agg(event_id::text || ':' || version::text, ',' ORDER BY version))";

#[cfg(test)]
mod tests {
    use super::HISTORY_DIGEST;

    /// How many times `source` uses `string_agg(`, asserting that each use
    /// is part of `HISTORY_DIGEST` exactly.
    fn digest_copies(name: &str, source: &str) -> usize {
        let at_agg = HISTORY_DIGEST
            .find("string_agg(")
            .expect("string_agg in the digest");
        let (head, tail) = HISTORY_DIGEST.split_at(at_agg);
        source
            .match_indices("string_agg(")
            .inspect(|&(at, _)| {
                let line = source[..at].lines().count();
                assert!(
                    source[..at].ends_with(head) && source[at..].starts_with(tail),
                    "{name}:{line}: string_agg( is not HISTORY_DIGEST ({HISTORY_DIGEST})"
                );
            })
            .count()
    }

    #[test]
    fn the_store_writes_the_digest_out_twice() {
        let store = include_str!("command/store.rs");
        // order_digests and digests_through.
        assert_eq!(digest_copies("src/command/store.rs", store), 2);
    }

    #[test]
    fn the_projection_writes_the_digest_out_once() {
        let audit = include_str!("query/read_model/digest.rs");
        // SnapshotReader::history_digests.
        assert_eq!(digest_copies("src/query/read_model/digest.rs", audit), 1);
    }
}
