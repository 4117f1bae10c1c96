//! Shared test helpers: fresh databases and topics, bounded waits, Kafka reads.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, Instant, SystemTime},
};

use clap::ValueEnum;
use orders::{
    auth::{self, BearerToken, TokenRequest},
    config::{
        AuthSettings, CommandSettings, KafkaSaslMechanism, KafkaSecurityProtocol, KafkaSettings,
        QuerySettings,
    },
    kafka,
};
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    message::OwnedMessage,
};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

/// Reads a variable that `scripts/dev env` exports, with a clear failure.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests with `scripts/dev test` (or `eval \"$(scripts/dev env)\"` first)")
    })
}

/// Kafka bootstrap servers of the test broker.
pub fn bootstrap() -> String {
    env("KAFKA_BOOTSTRAP_SERVERS")
}

/// A unique name for a test resource.
pub fn unique(prefix: &str) -> String {
    format!("it_{prefix}_{}", Uuid::new_v4().simple())
}

/// Kafka settings for a fresh, not yet created topic (`it.<prefix>.<id>`), as
/// the admin user, who may create it ([`create_topic`]).
pub fn fresh_kafka(prefix: &str) -> KafkaSettings {
    kafka_as(
        &KafkaSettings::new(bootstrap(), unique(prefix).replace('_', ".")),
        KafkaUser::Admin,
    )
}

/// The dev stack's Kafka users: `scripts/dev` creates them and their ACLs
/// (ARCHITECTURE.md, "Kafka principals"), `scripts/dev env` exports each
/// one's name and password file. Test topics are `it.*`, test groups `it_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaUser {
    /// `orders-admin` (orderctl): creates topics, reads them, deletes groups.
    Admin,
    /// `orders-relay`: the only one that writes the topics.
    Relay,
    /// `orders-query`: reads the topics in its consumer groups.
    Query,
    /// The broker's own super user, for what no service does (deleting a topic).
    Superuser,
}

impl KafkaUser {
    fn variable(self, what: &str) -> String {
        let role = match self {
            Self::Admin => "ADMIN",
            Self::Relay => "RELAY",
            Self::Query => "QUERY",
            Self::Superuser => "SUPERUSER",
        };
        env(&format!("ORDERS_KAFKA_{role}_{what}"))
    }

    /// The user's name.
    pub fn username(self) -> String {
        self.variable("USERNAME")
    }

    /// The file holding the user's password.
    pub fn password_file(self) -> PathBuf {
        self.variable("PASSWORD_FILE").into()
    }
}

fn security_protocol() -> KafkaSecurityProtocol {
    let value = env("ORDERS_KAFKA_SECURITY_PROTOCOL");
    KafkaSecurityProtocol::from_str(&value, true)
        .unwrap_or_else(|e| panic!("ORDERS_KAFKA_SECURITY_PROTOCOL={value}: {e}"))
}

fn sasl_mechanism() -> KafkaSaslMechanism {
    let value = env("ORDERS_KAFKA_SASL_MECHANISM");
    KafkaSaslMechanism::from_str(&value, true)
        .unwrap_or_else(|e| panic!("ORDERS_KAFKA_SASL_MECHANISM={value}: {e}"))
}

/// `kafka` (broker, topic) as `user`.
pub fn kafka_as(kafka: &KafkaSettings, user: KafkaUser) -> KafkaSettings {
    let mut kafka = kafka.clone();
    kafka.security_protocol = security_protocol();
    kafka.sasl_mechanism = sasl_mechanism();
    kafka.username = Some(user.username());
    kafka.password_file = Some(user.password_file());
    kafka.password = None;
    kafka
}

/// The environment that makes a spawned server or `orderctl` connect as `user`.
pub fn kafka_env(user: KafkaUser) -> [(&'static str, String); 4] {
    [
        (
            "ORDERS_KAFKA_SECURITY_PROTOCOL",
            security_protocol().as_str().into(),
        ),
        (
            "ORDERS_KAFKA_SASL_MECHANISM",
            sasl_mechanism().as_str().into(),
        ),
        ("ORDERS_KAFKA_USERNAME", user.username()),
        (
            "ORDERS_KAFKA_PASSWORD_FILE",
            user.password_file().display().to_string(),
        ),
    ]
}

/// A client configuration for the test broker as `user`, for the rdkafka
/// clients tests build themselves.
pub fn client_config(user: KafkaUser) -> ClientConfig {
    kafka::base_config(&kafka_as(&KafkaSettings::new(bootstrap(), ""), user))
        .expect("a client configuration from the test environment")
}

/// Creates `kafka.topic` unless it exists, as the admin user (the servers'
/// users may not create topics).
pub async fn create_topic(kafka: &KafkaSettings) {
    kafka::ensure_topic(&kafka_as(kafka, KafkaUser::Admin))
        .await
        .unwrap_or_else(|e| panic!("create topic {} as the admin user: {e}", kafka.topic));
}

/// The tests' signing key and JWKS, generated once per test process.
pub struct TestAuth {
    pub jwks: PathBuf,
    signing_key: Vec<u8>,
}

/// The test process's keys (the servers the tests start trust their JWKS).
pub fn auth() -> &'static TestAuth {
    static AUTH: OnceLock<TestAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("orders-it-auth-{}", Uuid::new_v4().simple()));
        let keys = auth::generate_keys(&dir).expect("generate the tests' signing key");
        TestAuth {
            signing_key: std::fs::read(&keys.signing_key).expect("read the signing key"),
            jwks: keys.jwks,
        }
    })
}

/// Auth settings of the tests' servers: on, trusting `auth()`'s JWKS.
pub fn auth_settings() -> AuthSettings {
    AuthSettings::with_jwks(&auth().jwks)
}

/// The environment every server the tests spawn gets: it trusts `auth()`'s
/// JWKS and may run as the bootstrap superuser (the tests' databases are
/// the superuser's).
pub fn server_env() -> [(&'static str, String); 4] {
    [
        ("ORDERS_AUTH", "enabled".into()),
        // Any free port: never the dev stack's 9464/9465.
        ("ORDERS_METRICS_ADDR", "127.0.0.1:0".into()),
        ("ORDERS_AUTH_JWKS_FILE", auth().jwks.display().to_string()),
        (ALLOW_SUPERUSER.0, ALLOW_SUPERUSER.1.into()),
    ]
}

/// What the tests' tokens say by default: subject `it`, these scopes,
/// `customer` if given, an hour, the servers' default issuer and audience.
pub fn token_request(scopes: &[&str], customer: Option<&str>) -> TokenRequest {
    TokenRequest {
        subject: "it".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        customer_id: customer.map(str::to_owned),
        ttl: Duration::from_secs(3_600),
        issuer: orders::config::DEFAULT_AUTH_ISSUER.into(),
        audience: orders::config::DEFAULT_AUTH_AUDIENCE.into(),
    }
}

/// `request` signed by the tests' key as if minted at `at`.
pub fn sign(request: &TokenRequest, at: SystemTime) -> String {
    auth::mint(&auth().signing_key, request, at)
        .expect("mint a test token")
        .token
}

/// A token signed by the tests' key with these scopes, for `customer` if given.
pub fn token(scopes: &[&str], customer: Option<&str>) -> String {
    sign(&token_request(scopes, customer), SystemTime::now())
}

/// An interceptor sending a token with both scopes.
pub fn bearer() -> BearerToken {
    BearerToken::new(&token(&[auth::SCOPE_READ, auth::SCOPE_WRITE], None)).expect("ascii token")
}

/// Group session timeout of the tests' query servers: a killed or frozen
/// instance loses its partitions after seconds, not the production 45 s.
pub const TEST_SESSION_TIMEOUT_MS: u32 = 6_000;
/// Heartbeat interval that goes with `TEST_SESSION_TIMEOUT_MS`.
pub const TEST_HEARTBEAT_INTERVAL_MS: u32 = 1_500;

/// The environment that lets a spawned server connect as the bootstrap
/// superuser, whose are the databases `fresh_database` makes (the role tests
/// in `roles` use the real roles).
pub const ALLOW_SUPERUSER: (&str, &str) = ("ORDERS_ALLOW_SUPERUSER", "true");

/// Command settings for tests: any free port, as the bootstrap superuser.
pub fn command_settings(database_url: impl Into<String>, kafka: KafkaSettings) -> CommandSettings {
    let mut settings = CommandSettings::new(database_url, kafka);
    settings.server.allow_superuser = true;
    settings.server.auth = auth_settings();
    settings
}

/// Query settings for tests: any free port, a short group session, `kafka`'s
/// broker and topic as the query user, as the bootstrap superuser.
pub fn query_settings(
    database_url: impl Into<String>,
    kafka: KafkaSettings,
    group: impl Into<String>,
) -> QuerySettings {
    let mut settings = QuerySettings::new(database_url, kafka_as(&kafka, KafkaUser::Query), group);
    settings.server.auth = auth_settings();
    settings.consumer.session_timeout_ms = TEST_SESSION_TIMEOUT_MS;
    settings.consumer.heartbeat_interval_ms = TEST_HEARTBEAT_INTERVAL_MS;
    settings.server.allow_superuser = true;
    settings
}

/// The environment that gives a spawned `order-query` the tests' short group session.
pub fn query_session_env() -> [(&'static str, String); 2] {
    [
        (
            "ORDERS_CONSUMER_SESSION_TIMEOUT_MS",
            TEST_SESSION_TIMEOUT_MS.to_string(),
        ),
        (
            "ORDERS_CONSUMER_HEARTBEAT_INTERVAL_MS",
            TEST_HEARTBEAT_INTERVAL_MS.to_string(),
        ),
    ]
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let admin_url = env("ORDERS_PG_ADMIN_URL");
    let name = unique(prefix);
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("connect to ORDERS_PG_ADMIN_URL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("admin url has a database");
    format!("{base}/{name}")
}

/// A small pool on `url`.
pub async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connect to test database")
}

/// Waits until `condition` holds, checking every 50 ms, for at most `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A consumer of `topic` from the beginning, in a group of its own, as the
/// query user.
pub fn topic_reader(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(KafkaUser::Query)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads messages from `consumer` until `count` arrived or `timeout` passed.
pub async fn read_messages(
    consumer: &StreamConsumer,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?}: {} of {count} messages arrived",
            out.len()
        );
        if let Ok(Ok(message)) = tokio::time::timeout(left, consumer.recv()).await {
            out.push(message.detach());
        }
    }
    out
}

/// The key of a message as UTF-8.
pub fn key_of(message: &OwnedMessage) -> String {
    String::from_utf8(message.key().expect("message has a key").to_vec()).expect("utf-8 key")
}

/// Reads the whole topic until every stored (order, version) has been seen;
/// checks that each order's versions arrive in order (duplicates allowed).
pub async fn assert_topic_holds(kafka: &KafkaSettings, stored: &[(String, u64)]) {
    use rdkafka::Message;
    let mut expected: HashMap<String, u64> = HashMap::new();
    for (order, version) in stored {
        let max = expected.entry(order.clone()).or_default();
        *max = (*max).max(*version);
    }
    let reader = topic_reader(&kafka.topic);
    let mut latest: HashMap<String, u64> = HashMap::new();
    let mut seen = 0;
    while latest.values().sum::<u64>() < expected.values().sum::<u64>() {
        let message = read_messages(&reader, 1, Duration::from_secs(30))
            .await
            .remove(0);
        seen += 1;
        assert!(seen <= stored.len() * 3, "far more messages than events");
        let (meta, _) = orders::codec::decode_event(message.payload().unwrap()).unwrap();
        let last = latest.entry(meta.order_id.to_string()).or_default();
        assert!(
            meta.version <= *last + 1,
            "order {} jumped from v{last} to v{}",
            meta.order_id,
            meta.version
        );
        *last = (*last).max(meta.version);
    }
    assert_eq!(latest, expected, "the topic holds every stored event");
}

/// A free local port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes `database_url`'s database refuse (or accept again) every connection,
/// terminating the open ones: the way tests take a database away.
pub async fn cut_off_database(database_url: &str, cut: bool) {
    let database = database_url
        .rsplit_once('/')
        .expect("url has a database")
        .1
        .to_owned();
    let admin = pool(&env("ORDERS_PG_ADMIN_URL")).await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS {}",
        !cut
    ))
    .execute(&admin)
    .await
    .unwrap();
    if cut {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&database)
            .execute(&admin)
            .await
            .unwrap();
    }
}
