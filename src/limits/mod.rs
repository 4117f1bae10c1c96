//! What one request may cost, bounded before the work starts: the largest
//! request body each service decodes, the RPCs in flight (more are refused at
//! once, not queued), HTTP/2 streams, keepalive and header sizes per
//! connection, the correlation metadata a request carries (`correlation`),
//! and how long a server's SQL statement may run or wait for a lock. The
//! tower layer in front of every RPC is `edge`; field violations per answer
//! are capped in `codec`.

pub mod correlation;
pub mod edge;

use std::time::Duration;

use clap::Args;
use sqlx::{Executor, PgConnection, postgres::PgConnectOptions};

/// Largest request body `OrderCommands` decodes. Its largest valid request, a
/// PlaceOrder of `MAX_LINES` lines with every text at its longest in 4-byte
/// characters, encodes to about 28 KiB (a test pins it under half of this);
/// anything larger is refused before it is decoded.
pub const MAX_COMMAND_REQUEST_BYTES: usize = 64 * 1024;

/// Largest request body `OrderQueries` decodes. Its largest valid request, a
/// ListOrders with the longest customer id and the page token issued for it,
/// encodes to about 1 KiB.
pub const MAX_QUERY_REQUEST_BYTES: usize = 16 * 1024;

/// Most bytes of error metadata (`grpc-message` and `grpc-status-details-bin`)
/// an answer may carry: a default grpcio client reads no more than 8 KiB of
/// metadata and reports RESOURCE_EXHAUSTED instead of the error.
pub const MAX_ERROR_METADATA_BYTES: usize = 8 * 1024;

/// Default longest run of one SQL statement of a server.
pub const DEFAULT_DB_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Default longest wait of a server's statement for a lock.
pub const DEFAULT_DB_LOCK_TIMEOUT_MS: u64 = 5_000;
/// Default longest wait for a free connection of a server's pool.
pub const DEFAULT_DB_ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// Default most concurrent HTTP/2 streams per client connection.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default interval of the server's HTTP/2 keepalive pings.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
/// Default time a keepalive ping may go unanswered before the connection is closed.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// Default largest header list of a request (hyper's own default, made explicit).
pub const DEFAULT_HTTP2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Per-request and per-connection limits of both servers.
#[derive(Debug, Clone, Args)]
pub struct LimitSettings {
    /// Longest one SQL statement on a server's connections may run
    /// (PostgreSQL `statement_timeout`; migrations at start-up are exempt).
    #[arg(
        long = "db-statement-timeout-ms",
        env = "ORDERS_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = DEFAULT_DB_STATEMENT_TIMEOUT_MS
    )]
    pub db_statement_timeout_ms: u64,
    /// Longest a statement on a server's connections waits for a lock
    /// (PostgreSQL `lock_timeout`; `SET LOCAL` overrides it per transaction).
    #[arg(
        long = "db-lock-timeout-ms",
        env = "ORDERS_DB_LOCK_TIMEOUT_MS",
        default_value_t = DEFAULT_DB_LOCK_TIMEOUT_MS
    )]
    pub db_lock_timeout_ms: u64,
    /// Longest an RPC waits for a free database connection; then it fails
    /// with UNAVAILABLE, which clients may retry.
    #[arg(
        long = "db-acquire-timeout-ms",
        env = "ORDERS_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = DEFAULT_DB_ACQUIRE_TIMEOUT_MS
    )]
    pub db_acquire_timeout_ms: u64,
    /// Most concurrent HTTP/2 streams (RPCs) per client connection.
    #[arg(
        long = "http2-max-concurrent-streams",
        env = "ORDERS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS
    )]
    pub http2_max_concurrent_streams: u32,
    /// Interval of the server's HTTP/2 keepalive pings on each connection.
    #[arg(
        long = "http2-keepalive-interval-ms",
        env = "ORDERS_HTTP2_KEEPALIVE_INTERVAL_MS",
        default_value_t = DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS
    )]
    pub http2_keepalive_interval_ms: u64,
    /// A connection whose client does not answer a keepalive ping within this
    /// long is closed.
    #[arg(
        long = "http2-keepalive-timeout-ms",
        env = "ORDERS_HTTP2_KEEPALIVE_TIMEOUT_MS",
        default_value_t = DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS
    )]
    pub http2_keepalive_timeout_ms: u64,
    /// Largest header list (all metadata of one request) a server accepts.
    #[arg(
        long = "http2-max-header-list-bytes",
        env = "ORDERS_HTTP2_MAX_HEADER_LIST_BYTES",
        default_value_t = DEFAULT_HTTP2_MAX_HEADER_LIST_BYTES
    )]
    pub http2_max_header_list_bytes: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            db_statement_timeout_ms: DEFAULT_DB_STATEMENT_TIMEOUT_MS,
            db_lock_timeout_ms: DEFAULT_DB_LOCK_TIMEOUT_MS,
            db_acquire_timeout_ms: DEFAULT_DB_ACQUIRE_TIMEOUT_MS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keepalive_interval_ms: DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS,
            http2_keepalive_timeout_ms: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS,
            http2_max_header_list_bytes: DEFAULT_HTTP2_MAX_HEADER_LIST_BYTES,
        }
    }
}

impl LimitSettings {
    /// How long an RPC waits for a pooled connection.
    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }

    /// `options` whose sessions carry the statement and lock timeouts.
    pub fn session_options(&self, options: PgConnectOptions) -> PgConnectOptions {
        options.options([
            ("statement_timeout", self.db_statement_timeout_ms),
            ("lock_timeout", self.db_lock_timeout_ms),
        ])
    }

    /// `server` with the HTTP/2 limits per connection.
    pub fn http2(&self, server: tonic::transport::Server) -> tonic::transport::Server {
        server
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_millis(
                self.http2_keepalive_interval_ms,
            )))
            .http2_keepalive_timeout(Some(Duration::from_millis(self.http2_keepalive_timeout_ms)))
            .http2_max_header_list_size(self.http2_max_header_list_bytes)
    }
}

/// Lifts the statement and lock timeouts for the rest of `conn`'s session: a
/// migration may wait for another process's and may rewrite large tables. Only
/// for a connection of its own, closed afterwards.
pub async fn lift_session_timeouts(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Session settings, not statements with parameters.
    conn.execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost::Message;

    use super::*;
    use crate::{codec::ParsedCommand, domain::MAX_LINES, proto, query::page_token};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitSettings,
    }

    /// The longest text a 1-`chars` field takes: every char 4 bytes in UTF-8.
    fn longest(chars: usize) -> String {
        "\u{1F4E6}".repeat(chars)
    }

    #[test]
    fn the_limit_flags_default_to_the_values_embedding_uses() {
        let parsed = Cli::try_parse_from(["server"]).expect("parses").limits;
        let embedded = LimitSettings::default();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{embedded:?}"),
            "every default written once"
        );
    }

    #[test]
    fn the_session_options_carry_both_timeouts() {
        let limits = LimitSettings {
            db_statement_timeout_ms: 1_234,
            db_lock_timeout_ms: 56,
            ..LimitSettings::default()
        };
        let options = limits.session_options(
            "postgres://u@localhost/db"
                .parse::<PgConnectOptions>()
                .unwrap()
                .options([("search_path", "x")]),
        );
        let text = format!("{options:?}");
        assert!(text.contains("-c statement_timeout=1234"), "{text}");
        assert!(text.contains("-c lock_timeout=56"), "{text}");
        assert!(text.contains("-c search_path=x"), "{text}");
    }

    #[test]
    fn a_maximal_valid_place_order_fits_in_half_the_command_limit() {
        let line = proto::OrderLine {
            product_id: longest(64),
            quantity: 10_000,
            unit_price_minor: 1_000_000_000_000,
        };
        let request = proto::PlaceOrderRequest {
            request_id: longest(128),
            order_id: "urn:uuid:0192f6e4-7b1c-7a00-8000-000000000001".into(),
            customer_id: longest(64),
            currency_code: "EUR".into(),
            lines: vec![line; MAX_LINES],
        };
        ParsedCommand::try_from(&request).expect("the request is valid");
        let size = request.encoded_len();
        assert!(
            size * 2 <= MAX_COMMAND_REQUEST_BYTES,
            "{size} bytes, limit {MAX_COMMAND_REQUEST_BYTES}"
        );
        let cancel = proto::CancelOrderRequest {
            request_id: longest(128),
            order_id: "urn:uuid:0192f6e4-7b1c-7a00-8000-000000000001".into(),
            expected_version: Some(u64::MAX),
            reason: longest(500),
        };
        ParsedCommand::try_from(&cancel).expect("the request is valid");
        assert!(cancel.encoded_len() * 2 <= MAX_COMMAND_REQUEST_BYTES);
    }

    #[test]
    fn a_maximal_valid_list_orders_fits_in_half_the_query_limit() {
        let customer = longest(64);
        let filter = page_token::ListFilter {
            customer_id: Some(customer.clone()),
            status: Some("cancelled".into()),
        };
        let token = page_token::encode_orders(
            &filter,
            page_token::OrdersCursor {
                placed_at_micros: i64::MIN,
                order_id: uuid::Uuid::max(),
            },
        );
        let request = proto::ListOrdersRequest {
            customer_id: Some(customer),
            status: proto::OrderStatus::Cancelled as i32,
            page_size: u32::MAX,
            page_token: token,
        };
        let size = request.encoded_len();
        assert!(
            size * 2 <= MAX_QUERY_REQUEST_BYTES,
            "{size} bytes, limit {MAX_QUERY_REQUEST_BYTES}"
        );
    }
}
