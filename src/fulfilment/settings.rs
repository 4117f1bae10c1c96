//! `order-fulfilment` settings: its database and admin server, the events
//! topic, the services it calls and the token it calls them with, and the
//! saga's timings.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{
    saga::Timings,
    worker::{CrashPoint, StartAt},
};
use crate::{
    config::{KafkaSettings, ServerSettings},
    metrics::MetricsAddr,
    secret::DatabaseUrl,
};

/// Where the admin service listens unless told otherwise.
pub const DEFAULT_FULFILMENT_ADDR: &str = "127.0.0.1:50055";
/// Where `order-fulfilment` serves `/metrics` unless told otherwise.
pub const DEFAULT_FULFILMENT_METRICS_ADDR: &str = "127.0.0.1:9468";

/// `order-fulfilment` settings.
#[derive(Debug, Clone, Args)]
pub struct FulfilmentSettings {
    /// Address the admin gRPC server binds (port 0 picks a free port).
    #[arg(
        long = "listen-addr",
        env = "ORDERS_FULFILMENT_ADDR",
        default_value = DEFAULT_FULFILMENT_ADDR
    )]
    pub listen_addr: SocketAddr,
    /// The saga database (its role owns it and applies its migrations).
    #[arg(
        long = "database-url",
        env = "ORDERS_FULFILMENT_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,
    /// Server settings.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP), or `off`.
    #[arg(
        long = "metrics-addr",
        env = "ORDERS_METRICS_ADDR",
        default_value = DEFAULT_FULFILMENT_METRICS_ADDR
    )]
    pub metrics_addr: MetricsAddr,
    /// The events topic, read from.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Where a partition with no stored position is read from: `latest`
    /// fulfils only orders confirmed from the first start on.
    #[arg(
        long = "start-at",
        env = "ORDERS_FULFILMENT_START_AT",
        value_enum,
        default_value_t = StartAt::Latest
    )]
    pub start_at: StartAt,
    /// `inventory.v1.Inventory`.
    #[arg(
        long = "inventory-addr",
        env = "ORDERS_INVENTORY_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub inventory_addr: String,
    /// `payments.v1.Payments`.
    #[arg(
        long = "payments-addr",
        env = "ORDERS_PAYMENTS_ADDR",
        default_value = "127.0.0.1:50054"
    )]
    pub payments_addr: String,
    /// `orders.v1.OrderCommands`.
    #[arg(
        long = "command-addr",
        env = "ORDERS_COMMAND_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub command_addr: String,
    /// `orders.v1.OrderQueries` (the facts of a confirmed order).
    #[arg(
        long = "query-addr",
        env = "ORDERS_QUERY_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub query_addr: String,
    /// A file holding the bearer token the saga calls the services with
    /// (scopes orders:read, orders:write, inventory:write, payments:write);
    /// none: calls carry no token.
    #[arg(long = "token-file", env = "ORDERS_FULFILMENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of the CA the called servers' certificates chain to: the
    /// calls then use TLS (the servers' names are the addresses' hosts).
    /// Unset: plaintext.
    #[arg(long = "tls-ca-file", env = "ORDERS_FULFILMENT_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate to present to servers that ask for one
    /// (mutual TLS), with `--tls-client-key-file`.
    #[arg(
        long = "tls-client-cert-file",
        env = "ORDERS_FULFILMENT_TLS_CLIENT_CERT_FILE",
        requires = "tls_client_key_file"
    )]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The PEM private key of `--tls-client-cert-file`.
    #[arg(
        long = "tls-client-key-file",
        env = "ORDERS_FULFILMENT_TLS_CLIENT_KEY_FILE"
    )]
    pub tls_client_key_file: Option<PathBuf>,
    /// How long a reserve or an authorize is retried before the saga compensates.
    #[arg(
        long = "step-deadline-ms",
        env = "ORDERS_FULFILMENT_STEP_DEADLINE_MS",
        default_value_t = 30_000
    )]
    pub step_deadline_ms: u64,
    /// The deadline of one call.
    #[arg(
        long = "call-timeout-ms",
        env = "ORDERS_FULFILMENT_CALL_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub call_timeout_ms: u64,
    /// Calls in flight at most.
    #[arg(
        long = "max-calls",
        env = "ORDERS_FULFILMENT_MAX_CALLS",
        default_value_t = 64
    )]
    pub max_calls: usize,
    /// Test hook: kill the process at `before-call:<step>` or `after-call:<step>`.
    #[arg(long = "crash-at", env = "ORDERS_FULFILMENT_CRASH_AT", hide = true)]
    pub crash_at: Option<CrashPoint>,
}

impl FulfilmentSettings {
    /// The saga's timings.
    pub fn timings(&self) -> Timings {
        Timings {
            step_deadline: Duration::from_millis(self.step_deadline_ms),
            ..Timings::default()
        }
    }
}
