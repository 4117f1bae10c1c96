//! Configuration of the servers and the CLI, from flags and environment
//! variables (12-factor). Every setting has a flag and an env var, except
//! the Kafka password: a file, or the environment only.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::{
    limits::LimitSettings, metrics::MetricsAddr, secret::DatabaseUrl, telemetry::LogFormat,
};

/// Topic carrying every `OrderEvent`.
pub const DEFAULT_TOPIC: &str = "orders.events.v1";
/// Default Kafka bootstrap servers.
pub const DEFAULT_KAFKA_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Default partition count of the topic when it is created.
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 3;
/// Default security protocol: no authentication (a broker without SASL).
pub const DEFAULT_KAFKA_SECURITY_PROTOCOL: KafkaSecurityProtocol = KafkaSecurityProtocol::Plaintext;
/// Default SASL mechanism.
pub const DEFAULT_KAFKA_SASL_MECHANISM: KafkaSaslMechanism = KafkaSaslMechanism::ScramSha512;
/// The variable that may hold the SASL password itself. Environment only:
/// there is no password flag, so a password never shows in a process list.
pub const KAFKA_PASSWORD_ENV: &str = "ORDERS_KAFKA_PASSWORD";

/// Kafka client settings shared by the relay, the projector and the CLI.
#[derive(Debug, Clone, Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    )]
    pub bootstrap_servers: String,
    /// Topic of order events.
    #[arg(long = "topic", env = "ORDERS_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(
        long = "topic-partitions",
        env = "ORDERS_TOPIC_PARTITIONS",
        default_value_t = DEFAULT_TOPIC_PARTITIONS
    )]
    pub topic_partitions: i32,
    /// `plaintext` (no authentication), or `sasl_plaintext` / `sasl_ssl`:
    /// authenticate with a username and password (SASL/SCRAM).
    #[arg(
        long = "kafka-security-protocol",
        env = "ORDERS_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t = DEFAULT_KAFKA_SECURITY_PROTOCOL
    )]
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "ORDERS_KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true,
        default_value_t = DEFAULT_KAFKA_SASL_MECHANISM
    )]
    pub sasl_mechanism: KafkaSaslMechanism,
    /// SASL username: the principal `User:<name>` the broker's ACLs name.
    #[arg(long = "kafka-username", env = "ORDERS_KAFKA_USERNAME")]
    pub username: Option<String>,
    /// File holding the SASL password (its first line). Alternatively the
    /// password itself in ORDERS_KAFKA_PASSWORD (environment only: no flag
    /// takes a password).
    #[arg(
        long = "kafka-password-file",
        env = "ORDERS_KAFKA_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub password_file: Option<PathBuf>,
    /// The SASL password itself, from ORDERS_KAFKA_PASSWORD only.
    #[arg(skip = Secret::from_env(KAFKA_PASSWORD_ENV))]
    pub password: Option<Secret>,
    /// PEM file of the CA certificates the brokers' certificates chain to
    /// (`sasl_ssl` only); the system's trust store when unset.
    #[arg(
        long = "kafka-ssl-ca-file",
        env = "ORDERS_KAFKA_SSL_CA_FILE",
        value_name = "PATH"
    )]
    pub ssl_ca_file: Option<PathBuf>,
}

/// How the Kafka clients talk to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSecurityProtocol {
    /// No authentication and no encryption.
    #[value(name = "plaintext")]
    Plaintext,
    /// SASL authentication, no encryption (loopback or a private network).
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether clients authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        !matches!(self, Self::Plaintext)
    }
}

/// SASL mechanisms the Kafka clients offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSaslMechanism {
    /// SCRAM with SHA-512 (RFC 7677): the password never crosses the wire.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
}

impl KafkaSaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// A password: `Debug` shows `[redacted]`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value of environment variable `name`, if it is set and not empty.
    pub fn from_env(name: &str) -> Option<Self> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .map(Self)
    }

    /// The secret itself, for the one place that hands it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Settings common to both gRPC servers.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Deadline for one RPC when the client sets none (server cap).
    #[arg(
        long = "request-timeout-ms",
        env = "ORDERS_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,
    /// Process-wide limit of RPCs in flight (health checks aside); more are
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(
        long = "concurrency-limit",
        env = "ORDERS_CONCURRENCY_LIMIT",
        default_value_t = 1024
    )]
    pub concurrency_limit: usize,
    /// PostgreSQL pool size.
    #[arg(
        long = "db-max-connections",
        env = "ORDERS_DB_MAX_CONNECTIONS",
        default_value_t = 8
    )]
    pub db_max_connections: u32,
    /// Log format.
    #[arg(long = "log-format", env = "ORDERS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Start even when the database role is a PostgreSQL superuser (which
    /// could rewrite the event store); for tests and throwaway databases.
    #[arg(
        long = "allow-superuser",
        env = "ORDERS_ALLOW_SUPERUSER",
        default_value_t = DEFAULT_ALLOW_SUPERUSER,
        action = clap::ArgAction::SetTrue
    )]
    pub allow_superuser: bool,
    /// Serve gRPC reflection (grpcurl's `list` and `describe`); open to every caller.
    #[arg(long = "reflection", env = "ORDERS_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,
    /// Who may call.
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Transport security.
    #[command(flatten)]
    pub tls: TlsSettings,
    /// Request and connection limits.
    #[command(flatten)]
    pub limits: LimitSettings,
}

/// TLS, mutual TLS, and where plaintext is allowed.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsSettings {
    /// PEM certificate (chain) the server presents; with the key, turns TLS on.
    #[arg(long = "tls-cert-file", env = "ORDERS_TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long = "tls-key-file", env = "ORDERS_TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate one of them
    /// signed (mutual TLS, for service-to-service callers).
    #[arg(long = "tls-client-ca-file", env = "ORDERS_TLS_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (say, behind a proxy that
    /// terminates TLS); without it such a bind refuses to start.
    #[arg(long = "allow-plaintext", env = "ORDERS_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
}

/// Default `iss` a token must carry.
pub const DEFAULT_AUTH_ISSUER: &str = "orders";
/// Default `aud` a token must carry.
pub const DEFAULT_AUTH_AUDIENCE: &str = "orders";
/// Default tolerance for clocks that disagree, on `exp` and `nbf`.
pub const DEFAULT_AUTH_CLOCK_SKEW_S: u64 = 30;

/// Whether RPCs need a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every RPC but health and reflection needs a valid token with its scope.
    Enabled,
    /// Anyone who reaches the port may call anything (logged as a warning).
    Disabled,
}

/// Authentication of callers: bearer JWTs checked against a JWKS file.
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// `enabled`, or `disabled` to serve every caller without a token.
    #[arg(long = "auth", env = "ORDERS_AUTH", value_enum, default_value_t = AuthMode::Enabled)]
    pub mode: AuthMode,
    /// JWKS file with the public keys that sign tokens (ES256, EdDSA or RS256).
    #[arg(long = "auth-jwks-file", env = "ORDERS_AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The issuer (`iss`) a token must name.
    #[arg(long = "auth-issuer", env = "ORDERS_AUTH_ISSUER", default_value = DEFAULT_AUTH_ISSUER)]
    pub issuer: String,
    /// The audience (`aud`) a token must name.
    #[arg(long = "auth-audience", env = "ORDERS_AUTH_AUDIENCE", default_value = DEFAULT_AUTH_AUDIENCE)]
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[arg(long = "auth-clock-skew-s", env = "ORDERS_AUTH_CLOCK_SKEW_S", default_value_t = DEFAULT_AUTH_CLOCK_SKEW_S)]
    pub clock_skew_s: u64,
}

impl AuthSettings {
    /// Auth on, with the keys of `jwks_file` and the default issuer and audience.
    pub fn with_jwks(jwks_file: impl Into<PathBuf>) -> Self {
        Self {
            jwks_file: Some(jwks_file.into()),
            ..Self::default()
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Enabled,
            jwks_file: None,
            issuer: DEFAULT_AUTH_ISSUER.into(),
            audience: DEFAULT_AUTH_AUDIENCE.into(),
            clock_skew_s: DEFAULT_AUTH_CLOCK_SKEW_S,
        }
    }
}

/// Whether a server may connect as a PostgreSQL superuser unless told otherwise.
pub const DEFAULT_ALLOW_SUPERUSER: bool = false;

impl ServerSettings {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            db_max_connections: 8,
            log_format: LogFormat::Text,
            reflection: true,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            limits: LimitSettings::default(),
            allow_superuser: DEFAULT_ALLOW_SUPERUSER,
        }
    }
}

impl KafkaSettings {
    /// Settings for a broker and topic with the default partition count, no
    /// authentication.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            topic_partitions: DEFAULT_TOPIC_PARTITIONS,
            security_protocol: DEFAULT_KAFKA_SECURITY_PROTOCOL,
            sasl_mechanism: DEFAULT_KAFKA_SASL_MECHANISM,
            username: None,
            password_file: None,
            password: None,
            ssl_ca_file: None,
        }
    }
}

/// `order-command` settings.
#[derive(Debug, Clone, Args)]
pub struct CommandSettings {
    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(
        long = "listen-addr",
        env = "ORDERS_COMMAND_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen_addr: SocketAddr,
    /// Write database (event store and outbox).
    #[arg(
        long = "database-url",
        env = "ORDERS_WRITE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Server settings.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Run the outbox relay in this process (one instance leads at a time).
    #[arg(long = "relay", env = "ORDERS_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay: bool,
    /// Most commands committed in one transaction.
    #[arg(long = "max-batch", env = "ORDERS_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Batching writer tasks; commands are sharded to them by order id.
    #[arg(long = "writers", env = "ORDERS_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP), or `off`.
    #[arg(
        long = "metrics-addr",
        env = "ORDERS_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: MetricsAddr,
    /// Fault injection for crash tests only, off unless set: the process aborts
    /// once a batch of at least this many commands has inserted its events,
    /// before its COMMIT.
    #[arg(
        long = "fault-abort-mid-batch",
        env = "ORDERS_FAULT_ABORT_MID_BATCH",
        hide = true
    )]
    pub fault_abort_mid_batch: Option<usize>,
    /// Fault injection for tests only, off unless set: the named background
    /// task (`writer`, `relay`) panics when it starts.
    #[arg(
        long = "fault-panic-task",
        env = "ORDERS_FAULT_PANIC_TASK",
        hide = true
    )]
    pub fault_panic_task: Option<String>,
}

impl CommandSettings {
    /// Settings for tests and embedding: the given database and broker, any free port.
    pub fn new(database_url: impl Into<String>, kafka: KafkaSettings) -> Self {
        Self {
            listen_addr: "127.0.0.1:0".parse().expect("valid address"),
            database_url: DatabaseUrl::new(database_url),
            kafka,
            server: ServerSettings::default(),
            relay: true,
            max_batch: 256,
            writers: 2,
            metrics_addr: MetricsAddr(None),
            fault_abort_mid_batch: None,
            fault_panic_task: None,
        }
    }
}

/// Where `inventory` listens unless told otherwise.
pub const DEFAULT_INVENTORY_ADDR: &str = "127.0.0.1:50053";
/// Where `inventory` serves `/metrics` unless told otherwise.
pub const DEFAULT_INVENTORY_METRICS_ADDR: &str = "127.0.0.1:9466";
/// Where `payments` listens unless told otherwise.
pub const DEFAULT_PAYMENTS_ADDR: &str = "127.0.0.1:50054";
/// Where `payments` serves `/metrics` unless told otherwise.
pub const DEFAULT_PAYMENTS_METRICS_ADDR: &str = "127.0.0.1:9467";
/// The largest amount, in minor units, the payments stand-in authorizes by default.
pub const DEFAULT_DECLINE_ABOVE_MINOR: i64 = 1_000_000;

/// `inventory` settings.
#[derive(Debug, Clone, Args)]
pub struct InventorySettings {
    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(
        long = "listen-addr",
        env = "ORDERS_INVENTORY_ADDR",
        default_value = DEFAULT_INVENTORY_ADDR
    )]
    pub listen_addr: SocketAddr,
    /// The inventory database (its role owns it and applies its migrations).
    #[arg(
        long = "database-url",
        env = "ORDERS_INVENTORY_DATABASE_URL",
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
        default_value = DEFAULT_INVENTORY_METRICS_ADDR
    )]
    pub metrics_addr: MetricsAddr,
}

impl InventorySettings {
    /// Settings for tests and embedding: the given database, any free port, no metrics endpoint.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: "127.0.0.1:0".parse().expect("valid address"),
            database_url: DatabaseUrl::new(database_url),
            server: ServerSettings::default(),
            metrics_addr: MetricsAddr(None),
        }
    }
}

/// How the payments stand-in fails on purpose (tests of its callers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PaymentsFault {
    /// It answers.
    #[default]
    Off,
    /// Every RPC is UNAVAILABLE, and nothing changes.
    Unavailable,
    /// Every RPC hangs until the caller's deadline, and nothing changes.
    Hang,
    /// Every RPC does its work, commits, then hangs until the caller's
    /// deadline: an outcome the caller does not learn.
    HangAfterCommit,
}

/// `payments` settings.
#[derive(Debug, Clone, Args)]
pub struct PaymentsSettings {
    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(
        long = "listen-addr",
        env = "ORDERS_PAYMENTS_ADDR",
        default_value = DEFAULT_PAYMENTS_ADDR
    )]
    pub listen_addr: SocketAddr,
    /// The payments database (its role owns it and applies its migrations).
    #[arg(
        long = "database-url",
        env = "ORDERS_PAYMENTS_DATABASE_URL",
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
        default_value = DEFAULT_PAYMENTS_METRICS_ADDR
    )]
    pub metrics_addr: MetricsAddr,
    /// Authorizations of more than this many minor units are declined.
    #[arg(
        long = "decline-above-minor",
        env = "ORDERS_PAYMENTS_DECLINE_ABOVE_MINOR",
        default_value_t = DEFAULT_DECLINE_ABOVE_MINOR
    )]
    pub decline_above_minor: i64,
    /// Fault injection for tests of its callers, off unless set.
    #[arg(
        long = "fault",
        env = "ORDERS_PAYMENTS_FAULT",
        value_enum,
        default_value_t = PaymentsFault::Off
    )]
    pub fault: PaymentsFault,
}

impl PaymentsSettings {
    /// Settings for tests and embedding: the given database, any free port, no metrics endpoint.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: "127.0.0.1:0".parse().expect("valid address"),
            database_url: DatabaseUrl::new(database_url),
            server: ServerSettings::default(),
            metrics_addr: MetricsAddr(None),
            decline_above_minor: DEFAULT_DECLINE_ABOVE_MINOR,
            fault: PaymentsFault::Off,
        }
    }
}

/// `order-query` settings.
#[derive(Debug, Clone, Args)]
pub struct QuerySettings {
    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(
        long = "listen-addr",
        env = "ORDERS_QUERY_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub listen_addr: SocketAddr,
    /// Read database (projections).
    #[arg(
        long = "database-url",
        env = "ORDERS_READ_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Server settings.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Consumer group shared by all `order-query` instances.
    #[arg(
        long = "consumer-group",
        env = "ORDERS_CONSUMER_GROUP",
        default_value = "order-query"
    )]
    pub consumer_group: String,
    /// Run the projector in this process.
    #[arg(long = "projector", env = "ORDERS_PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector: bool,
    /// Longest a `GetOrder` with `min_version` waits, whatever the client deadline.
    #[arg(
        long = "max-wait-ms",
        env = "ORDERS_MAX_WAIT_MS",
        default_value_t = 5_000
    )]
    pub max_wait_ms: u64,
    /// Whether the projector's transactions wait for their WAL flush
    /// (`synchronous_commit`). Off by default: a crash of PostgreSQL may lose
    /// the last fraction of a second of projector commits, positions included,
    /// and Kafka redelivers them (see ARCHITECTURE.md).
    #[arg(
        long = "projector-synchronous-commit",
        env = "ORDERS_PROJECTOR_SYNCHRONOUS_COMMIT",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub projector_synchronous_commit: bool,
    /// The projector's Kafka consumer.
    #[command(flatten)]
    pub consumer: ConsumerSettings,
    /// The projection is stalled when messages wait on the topic and no
    /// stored position has moved for this long: the server logs an error and
    /// reports NOT_SERVING until the projection moves again.
    #[arg(
        long = "stall-after-ms",
        env = "ORDERS_STALL_AFTER_MS",
        default_value_t = DEFAULT_STALL_AFTER_MS
    )]
    pub stall_after_ms: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP), or `off`.
    #[arg(
        long = "metrics-addr",
        env = "ORDERS_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub metrics_addr: MetricsAddr,
    /// Fault injection for tests only, off unless set: the projector waits
    /// this long between a commit and filling the read cache (widens the
    /// window a reader could see a stale cache in).
    #[arg(
        long = "fault-cache-fill-delay-ms",
        env = "ORDERS_FAULT_CACHE_FILL_DELAY_MS",
        hide = true
    )]
    pub fault_cache_fill_delay_ms: Option<u64>,
    /// Fault injection for tests only, off unless set: the named background
    /// task (`projector`, `notify-listener`) panics when it starts.
    #[arg(
        long = "fault-panic-task",
        env = "ORDERS_FAULT_PANIC_TASK",
        hide = true
    )]
    pub fault_panic_task: Option<String>,
}

/// Default group session timeout (Kafka's own default).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 45_000;
/// Default heartbeat interval (Kafka's own default).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 3_000;
/// Default longest time between two polls of the projector (librdkafka
/// wants it at least the session timeout).
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u32 = 60_000;
/// Default size of the projector's prefetch queue, in kilobytes.
pub const DEFAULT_QUEUED_MAX_KBYTES: u32 = 4_096;
/// Default time the projection may stand still with messages waiting before
/// the query server reports NOT_SERVING.
pub const DEFAULT_STALL_AFTER_MS: u64 = 30_000;

/// The projector's Kafka consumer: group membership timeouts and the memory
/// its prefetch queue may hold.
#[derive(Debug, Clone, Args)]
pub struct ConsumerSettings {
    /// Group session timeout: a killed instance's partitions move to the
    /// others after this long; a process that cannot heartbeat for this long
    /// (paused, starved of CPU) loses its partitions and rejoins
    /// (librdkafka `session.timeout.ms`). Tests set a few seconds.
    #[arg(
        long = "consumer-session-timeout-ms",
        env = "ORDERS_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = DEFAULT_SESSION_TIMEOUT_MS
    )]
    pub session_timeout_ms: u32,
    /// Heartbeat interval, well below the session timeout
    /// (librdkafka `heartbeat.interval.ms`).
    #[arg(
        long = "consumer-heartbeat-interval-ms",
        env = "ORDERS_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = DEFAULT_HEARTBEAT_INTERVAL_MS
    )]
    pub heartbeat_interval_ms: u32,
    /// Longest the projector may go without polling before it leaves the
    /// group; it is also the rebalance timeout, the longest a rejoin waits for
    /// members that have not rejoined, such as this process's own previous
    /// membership after a broker restart (librdkafka `max.poll.interval.ms`).
    #[arg(
        long = "consumer-max-poll-interval-ms",
        env = "ORDERS_CONSUMER_MAX_POLL_INTERVAL_MS",
        default_value_t = DEFAULT_MAX_POLL_INTERVAL_MS
    )]
    pub max_poll_interval_ms: u32,
    /// Most kilobytes of prefetched messages held per consumer
    /// (librdkafka `queued.max.messages.kbytes`, default there 65536).
    #[arg(
        long = "consumer-queued-max-kbytes",
        env = "ORDERS_CONSUMER_QUEUED_MAX_KBYTES",
        default_value_t = DEFAULT_QUEUED_MAX_KBYTES
    )]
    pub queued_max_kbytes: u32,
    /// librdkafka debug contexts for the consumer (`debug`), e.g. `cgrp` or
    /// `cgrp,fetch`; empty for none.
    #[arg(
        long = "consumer-debug",
        env = "ORDERS_CONSUMER_DEBUG",
        default_value = ""
    )]
    pub debug: String,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms: DEFAULT_MAX_POLL_INTERVAL_MS,
            queued_max_kbytes: DEFAULT_QUEUED_MAX_KBYTES,
            debug: String::new(),
        }
    }
}

impl QuerySettings {
    /// Settings for tests and embedding: the given database and broker, any free port.
    pub fn new(
        database_url: impl Into<String>,
        kafka: KafkaSettings,
        consumer_group: impl Into<String>,
    ) -> Self {
        Self {
            listen_addr: "127.0.0.1:0".parse().expect("valid address"),
            database_url: DatabaseUrl::new(database_url),
            kafka,
            server: ServerSettings::default(),
            consumer_group: consumer_group.into(),
            projector: true,
            max_wait_ms: 5_000,
            projector_synchronous_commit: false,
            consumer: ConsumerSettings::default(),
            stall_after_ms: DEFAULT_STALL_AFTER_MS,
            metrics_addr: MetricsAddr(None),
            fault_cache_fill_delay_ms: None,
            fault_panic_task: None,
        }
    }
}

/// `orderctl` settings: both databases (as the admin role, not the servers'),
/// the broker, and the query servers' consumer group. A subcommand fails with
/// a clear message when a database it needs is not configured.
#[derive(Debug, Clone, Args)]
pub struct AdminSettings {
    /// Write database (event store and outbox).
    #[arg(
        long = "write-database-url",
        env = "ORDERS_ADMIN_WRITE_DATABASE_URL",
        hide_env_values = true
    )]
    pub write_database_url: Option<DatabaseUrl>,
    /// Read database (projection generations).
    #[arg(
        long = "read-database-url",
        env = "ORDERS_ADMIN_READ_DATABASE_URL",
        hide_env_values = true
    )]
    pub read_database_url: Option<DatabaseUrl>,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// Consumer group of the `order-query` instances; rebuilds use
    /// `<group>-rebuild-g<N>`.
    #[arg(
        long = "consumer-group",
        env = "ORDERS_CONSUMER_GROUP",
        default_value = "order-query"
    )]
    pub consumer_group: String,
}

impl AdminSettings {
    /// Settings for tests and embedding.
    pub fn new(
        write_database_url: impl Into<String>,
        read_database_url: impl Into<String>,
        kafka: KafkaSettings,
        consumer_group: impl Into<String>,
    ) -> Self {
        Self {
            write_database_url: Some(DatabaseUrl::new(write_database_url)),
            read_database_url: Some(DatabaseUrl::new(read_database_url)),
            kafka,
            consumer_group: consumer_group.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: QuerySettings,
    }

    #[test]
    fn the_consumer_settings_default_to_the_values_embedding_uses() {
        let cli = Cli::try_parse_from(["order-query", "--database-url", "postgres://db/read"])
            .expect("parses");
        let (parsed, embedded) = (cli.settings.consumer, ConsumerSettings::default());
        assert_eq!(
            (
                parsed.session_timeout_ms,
                parsed.heartbeat_interval_ms,
                parsed.max_poll_interval_ms,
                parsed.queued_max_kbytes,
                parsed.debug.as_str(),
            ),
            (
                embedded.session_timeout_ms,
                embedded.heartbeat_interval_ms,
                embedded.max_poll_interval_ms,
                embedded.queued_max_kbytes,
                embedded.debug.as_str(),
            )
        );
        assert_eq!(parsed.max_poll_interval_ms, 60_000);
        assert_eq!(parsed.session_timeout_ms, 45_000);
        assert_eq!(cli.settings.stall_after_ms, 30_000);
        assert!(!cli.settings.projector_synchronous_commit);
    }

    #[test]
    fn the_kafka_settings_default_to_the_values_embedding_uses() {
        // From the flags' declared defaults, not a parse: `scripts/dev env`
        // exports these variables into the shell that runs the tests.
        use clap::CommandFactory;
        let command = Cli::command();
        let default = |id: &str| {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            let values = arg.get_default_values();
            values.first().map(|v| v.to_string_lossy().into_owned())
        };
        let embedded = KafkaSettings::new(DEFAULT_KAFKA_BOOTSTRAP_SERVERS, DEFAULT_TOPIC);
        assert_eq!(
            [
                default("bootstrap_servers"),
                default("topic"),
                default("topic_partitions"),
                default("security_protocol"),
                default("sasl_mechanism"),
                default("username"),
                default("password_file"),
            ],
            [
                Some(embedded.bootstrap_servers),
                Some(embedded.topic),
                Some(embedded.topic_partitions.to_string()),
                Some(embedded.security_protocol.as_str().to_owned()),
                Some(embedded.sasl_mechanism.as_str().to_owned()),
                embedded.username,
                embedded.password_file.map(|p| p.display().to_string()),
            ]
        );
        assert_eq!(embedded.security_protocol, KafkaSecurityProtocol::Plaintext);
        assert!(embedded.password.is_none());
    }

    #[test]
    fn the_kafka_credentials_take_flags_but_the_password_only_a_file_or_the_environment() {
        let cli = Cli::try_parse_from([
            "order-query",
            "--database-url",
            "postgres://db/read",
            "--kafka-security-protocol",
            "SASL_PLAINTEXT",
            "--kafka-sasl-mechanism",
            "scram-sha-256",
            "--kafka-username",
            "orders-query",
            "--kafka-password-file",
            "/run/secrets/kafka",
        ])
        .expect("parses");
        let kafka = cli.settings.kafka;
        assert_eq!(
            kafka.security_protocol,
            KafkaSecurityProtocol::SaslPlaintext
        );
        assert_eq!(kafka.sasl_mechanism, KafkaSaslMechanism::ScramSha256);
        assert_eq!(kafka.username.as_deref(), Some("orders-query"));
        assert_eq!(
            kafka.password_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/kafka"))
        );

        for flag in ["--kafka-password", "--password"] {
            let error = Cli::try_parse_from([
                "order-query",
                "--database-url",
                "postgres://db/read",
                flag,
                "hunter2",
            ])
            .expect_err("no flag takes a password");
            assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
        }
        let error = Cli::try_parse_from([
            "order-query",
            "--database-url",
            "postgres://db/read",
            "hunter2",
        ])
        .expect_err("nor a positional argument");
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let mut kafka = KafkaSettings::new("127.0.0.1:9092", DEFAULT_TOPIC);
        kafka.security_protocol = KafkaSecurityProtocol::SaslPlaintext;
        kafka.username = Some("orders-relay".into());
        kafka.password = Some(Secret::new("hunter2-very-secret"));
        let shown = format!("{kafka:?} {kafka:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("orders-relay"), "{shown}");
    }

    #[test]
    fn the_consumer_settings_take_flags() {
        let cli = Cli::try_parse_from([
            "order-query",
            "--database-url",
            "postgres://db/read",
            "--consumer-max-poll-interval-ms",
            "60000",
            "--consumer-queued-max-kbytes",
            "1024",
            "--projector-synchronous-commit",
            "true",
        ])
        .expect("parses");
        assert_eq!(cli.settings.consumer.max_poll_interval_ms, 60_000);
        assert_eq!(cli.settings.consumer.queued_max_kbytes, 1_024);
        assert!(cli.settings.projector_synchronous_commit);
    }
    #[test]
    fn payments_settings_default_to_the_issue_limit_and_take_a_fault() {
        #[derive(Debug, Parser)]
        struct PaymentsCli {
            #[command(flatten)]
            settings: PaymentsSettings,
        }
        let url = ["payments", "--database-url", "postgres://db/payments"];
        let parsed = PaymentsCli::try_parse_from(url).expect("parses").settings;
        let embedded = PaymentsSettings::new("postgres://db/payments");
        assert_eq!(parsed.decline_above_minor, 1_000_000);
        assert_eq!(parsed.decline_above_minor, embedded.decline_above_minor);
        assert_eq!(parsed.fault, PaymentsFault::Off);
        assert_eq!(parsed.listen_addr.port(), 50054);

        let args = url.into_iter().chain(["--fault", "hang-after-commit"]);
        let parsed = PaymentsCli::try_parse_from(args).expect("parses").settings;
        assert_eq!(parsed.fault, PaymentsFault::HangAfterCommit);
    }

    #[test]
    fn inventory_settings_listen_on_the_second_wave_port() {
        #[derive(Debug, Parser)]
        struct InventoryCli {
            #[command(flatten)]
            settings: InventorySettings,
        }
        let parsed = InventoryCli::try_parse_from([
            "inventory",
            "--database-url",
            "postgres://db/inventory",
        ])
        .expect("parses")
        .settings;
        assert_eq!(parsed.listen_addr.port(), 50053);
    }
}
