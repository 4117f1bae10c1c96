//! Bounded cost per request and no secrets in output, on the real stack: an
//! oversized body is refused before it is decoded (the real `order-command`,
//! its memory read from /proc), refusals stay small, correlation metadata is
//! checked, a full server sheds load, pool timeouts are retryable, and no
//! database password reaches `--help` or a start-up error.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::{Buf, BufMut, Bytes};
use orders::{
    auth::AuthedChannel,
    config::KafkaSettings,
    limits::MAX_ERROR_METADATA_BYTES,
    proto::{self, order_commands_client::OrderCommandsClient},
};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    command::{self, TestCommand},
    query::{Stack, TestQuery},
    support,
};

/// A password no output may contain.
const PASSWORD: &str = "s3cr3t-pw";

/// The environment a spawned `order-command` gets here: the one place to add
/// what every server needs.
fn command_env(
    database_url: &str,
    kafka: &KafkaSettings,
    port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("ORDERS_WRITE_DATABASE_URL", database_url.to_owned()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers.clone()),
        ("ORDERS_TOPIC", kafka.topic.clone()),
        ("ORDERS_COMMAND_ADDR", format!("127.0.0.1:{port}")),
        ("ORDERS_DB_ACQUIRE_TIMEOUT_MS", "1000".into()),
        ("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn".into()),
        ("NO_COLOR", "1".into()),
    ]
    .into_iter()
    .chain(support::server_env())
    .chain(support::kafka_env(support::KafkaUser::Relay))
    .collect()
}

/// Starts `binary` with `env`, its log in a file of its own.
fn spawn(binary: &str, env: &[(&'static str, String)], log: &PathBuf) -> Child {
    std::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create log file"))
        .spawn()
        .expect("spawn server binary")
}

/// A client of a spawned `order-command` on `port`, once it serves (start-up
/// migrates a fresh database first).
async fn connect_spawned(port: u16) -> OrderCommandsClient<AuthedChannel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        match endpoint.connect().await {
            Ok(channel) => {
                return OrderCommandsClient::with_interceptor(channel, support::bearer());
            }
            Err(error) if Instant::now() > deadline => {
                panic!("order-command never served: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Peak and current resident memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sends and receives message bodies as they are, encoded by the caller.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A PlaceOrder whose body is `body`, as sent.
async fn place_raw(port: u16, body: Bytes) -> Result<Bytes, Status> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(tonic::codegen::InterceptedService::new(
        channel,
        support::bearer(),
    ));
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static("/orders.v1.OrderCommands/PlaceOrder"),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Bytes of the error metadata `status` arrived with (`grpc-message` and
/// `grpc-status-details-bin`, which is base64 on the wire).
fn error_metadata_bytes(status: &Status) -> (usize, usize) {
    let details = STANDARD.encode(status.details()).len();
    (details, details + status.message().len())
}

fn empty_lines(count: usize) -> proto::PlaceOrderRequest {
    proto::PlaceOrderRequest {
        lines: vec![proto::OrderLine::default(); count],
        ..command::place("ann")
    }
}

#[tokio::test]
async fn two_million_empty_lines_are_refused_before_decoding_in_under_a_second() {
    let database_url = support::fresh_database("lim_huge").await;
    let kafka = support::fresh_kafka("lim_huge");
    let port = support::free_port();
    let log = std::env::temp_dir().join(format!("{}.log", support::unique("lim_huge")));
    let mut server = spawn(
        env!("CARGO_BIN_EXE_order-command"),
        &command_env(&database_url, &kafka, port),
        &log,
    );
    let mut client = connect_spawned(port).await;
    client
        .place_order(command::place("warm-up"))
        .await
        .expect("a valid order is placed");
    let (peak_before, _) = memory_kib(server.id());

    // Field 5 (lines), length 0: the raw encoding of one empty line, 4 MB of them.
    let body = Bytes::from([0x2a_u8, 0x00].repeat(2_000_000));
    let started = Instant::now();
    let refused = place_raw(port, body).await.expect_err("refused");
    let took = started.elapsed();
    let (peak_after, rss_after) = memory_kib(server.id());

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&support::pool(&database_url).await)
        .await
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&log);
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    assert!(
        peak_after.saturating_sub(peak_before) < 64 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB (now {rss_after} KiB)"
    );
    assert_eq!(events, 1, "only the warm-up order was written");
}

#[tokio::test]
async fn bad_lines_are_refused_with_few_violations_and_small_error_metadata() {
    let mut cmd = TestCommand::start().await;

    let too_many = cmd
        .client
        .place_order(empty_lines(101))
        .await
        .expect_err("refused");
    let violations = too_many
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        violations.len(),
        1,
        "the count is checked first: {violations:?}"
    );
    assert_eq!(violations[0].field, "lines");

    let all_bad = cmd
        .client
        .place_order(empty_lines(100))
        .await
        .expect_err("refused");
    let violations = all_bad
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(all_bad.code(), Code::InvalidArgument);
    assert_eq!(violations.len(), 21, "{violations:?}");
    assert_eq!(
        violations.last().unwrap().description,
        "180 more violations not listed"
    );
    for status in [&too_many, &all_bad] {
        let (details, total) = error_metadata_bytes(status);
        assert!(
            details < MAX_ERROR_METADATA_BYTES,
            "{details} bytes of details"
        );
        assert!(
            total < MAX_ERROR_METADATA_BYTES,
            "{total} bytes of error metadata"
        );
    }
    assert_eq!(cmd.event_count().await, 0);
    cmd.stop().await;
}

#[tokio::test]
async fn malformed_correlation_metadata_is_invalid_argument_and_nothing_is_stored() {
    let mut cmd = TestCommand::start().await;
    let mut bad_trace = Request::new(command::place("ann"));
    bad_trace
        .metadata_mut()
        .insert("traceparent", "00-not-a-trace-01".parse().unwrap());
    let mut long_id = Request::new(command::place("ann"));
    long_id
        .metadata_mut()
        .insert("x-request-id", "r".repeat(129).parse().unwrap());

    for (request, header) in [(bad_trace, "traceparent"), (long_id, "x-request-id")] {
        let refused = cmd.client.place_order(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let violations = refused
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert_eq!(violations[0].field, header);
    }
    assert_eq!(cmd.event_count().await, 0);

    let mut good = Request::new(command::place("ann"));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    good.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    good.metadata_mut()
        .insert("x-request-id", "req-1".parse().unwrap());
    cmd.client.place_order(good).await.expect("placed");
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT correlation_id, traceparent FROM events")
            .fetch_one(&cmd.pool)
            .await
            .unwrap();
    assert_eq!(stored, ("req-1".into(), Some(traceparent.into())));
    cmd.stop().await;
}

#[tokio::test]
async fn a_full_query_server_sheds_at_once_and_still_answers_health_checks() {
    let stack = Stack::new("lim_shed", 1).await;
    let mut settings = stack.settings();
    settings.projector = false;
    settings.server.concurrency_limit = 2;
    settings.max_wait_ms = 3_000;
    let query = TestQuery::start(settings).await;

    // Two reads waiting for versions that never come hold both slots.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let mut client = query.client.clone();
            tokio::spawn(async move {
                client
                    .get_order(proto::GetOrderRequest {
                        order_id: Uuid::now_v7().to_string(),
                        min_version: Some(1),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let watch = query.watch.clone();
    support::wait_until(Duration::from_secs(5), "two reads waiting", || {
        let watch = watch.clone();
        async move { watch.waiting() == 2 }
    })
    .await;

    let started = Instant::now();
    let shed = query
        .client
        .clone()
        .get_order(proto::GetOrderRequest {
            order_id: Uuid::now_v7().to_string(),
            min_version: None,
            ..Default::default()
        })
        .await
        .expect_err("shed");
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", query.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("a health check answers while the server is full");

    for read in waiting {
        let missed = read.await.unwrap().expect_err("the version never came");
        assert_eq!(missed.code(), Code::Unavailable);
    }
    let after = query
        .client
        .clone()
        .get_order(proto::GetOrderRequest {
            order_id: Uuid::now_v7().to_string(),
            min_version: None,
            ..Default::default()
        })
        .await
        .expect_err("no such order");
    assert_eq!(after.code(), Code::NotFound, "slots are free again");
    query.stop().await;
}

#[tokio::test]
async fn an_exhausted_command_pool_is_unavailable_not_internal() {
    let database_url = support::fresh_database("lim_cpool").await;
    let mut settings = support::command_settings(database_url, support::fresh_kafka("lim_cpool"));
    settings.relay = false;
    settings.writers = 2;
    settings.server.db_max_connections = 1;
    settings.server.limits.db_acquire_timeout_ms = 300;
    let mut cmd = TestCommand::start_with_settings(settings).await;
    // Orders are sharded to the two writers by id; each writer keeps its connection.
    let id_of_shard = |shard: u128| {
        std::iter::repeat_with(Uuid::now_v7)
            .find(|id| id.as_u128() % 2 == shard)
            .unwrap()
            .to_string()
    };
    let place = |order_id: String| proto::PlaceOrderRequest {
        order_id,
        ..command::place("ann")
    };

    cmd.client
        .place_order(place(id_of_shard(0)))
        .await
        .expect("the first writer takes the only connection");
    let refused = cmd
        .client
        .place_order(place(id_of_shard(1)))
        .await
        .expect_err("the second writer finds no free connection");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(cmd.event_count().await, 1);
    cmd.stop().await;
}

#[tokio::test]
async fn an_exhausted_query_pool_is_unavailable_and_a_lock_wait_ends_at_the_lock_timeout() {
    let stack = Stack::new("lim_qpool", 1).await;
    let mut settings = stack.settings();
    settings.projector = false;
    settings.server.db_max_connections = 1;
    settings.server.limits.db_acquire_timeout_ms = 300;
    settings.server.limits.db_lock_timeout_ms = 2_000;
    let query = TestQuery::start(settings).await;
    let get = || {
        let mut client = query.client.clone();
        async move {
            client
                .get_order(proto::GetOrderRequest {
                    order_id: Uuid::now_v7().to_string(),
                    min_version: None,
                    ..Default::default()
                })
                .await
        }
    };

    // A read blocked behind a lock holds the server's only connection.
    let mut locker = stack.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE read_model.order_view IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let started = Instant::now();
    let blocked = tokio::spawn(get());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = get().await.expect_err("no connection is free");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    let blocked = blocked
        .await
        .unwrap()
        .expect_err("the lock is never granted");
    let waited = started.elapsed();
    locker.rollback().await.unwrap();
    assert_ne!(blocked.code(), Code::Ok);
    assert!(
        waited < Duration::from_secs(5),
        "the lock wait ended at the 2 s lock timeout, not the request timeout: {waited:?}"
    );
    query.stop().await;
}

#[tokio::test]
async fn help_never_prints_a_database_password_from_the_environment() {
    let url = format!("postgres://u:{PASSWORD}@127.0.0.1:1/x");
    for (binary, variable) in [
        (
            env!("CARGO_BIN_EXE_order-command"),
            "ORDERS_WRITE_DATABASE_URL",
        ),
        (
            env!("CARGO_BIN_EXE_order-query"),
            "ORDERS_READ_DATABASE_URL",
        ),
        (
            env!("CARGO_BIN_EXE_orderctl"),
            "ORDERS_ADMIN_WRITE_DATABASE_URL",
        ),
        (
            env!("CARGO_BIN_EXE_orderctl"),
            "ORDERS_ADMIN_READ_DATABASE_URL",
        ),
    ] {
        let output = std::process::Command::new(binary)
            .arg("--help")
            .env("ORDERS_WRITE_DATABASE_URL", &url)
            .env("ORDERS_READ_DATABASE_URL", &url)
            .env("ORDERS_ADMIN_WRITE_DATABASE_URL", &url)
            .env("ORDERS_ADMIN_READ_DATABASE_URL", &url)
            .output()
            .expect("run --help");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{binary} --help: {text}");
        assert!(
            text.contains(variable),
            "{binary} documents {variable}: {text}"
        );
        assert!(
            !text.contains(PASSWORD),
            "{binary} --help printed the password:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_server_that_cannot_reach_its_database_never_logs_the_password() {
    let kafka = support::fresh_kafka("lim_secret");
    let url = format!(
        "postgres://u:{PASSWORD}@127.0.0.1:{}/x",
        support::free_port()
    );
    let query_env: Vec<(&'static str, String)> = vec![
        ("ORDERS_READ_DATABASE_URL", url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers.clone()),
        ("ORDERS_TOPIC", kafka.topic.clone()),
        ("ORDERS_QUERY_ADDR", "127.0.0.1:0".into()),
        ("ORDERS_DB_ACQUIRE_TIMEOUT_MS", "1000".into()),
        ("NO_COLOR", "1".into()),
    ]
    .into_iter()
    .chain(support::server_env())
    .chain(support::kafka_env(support::KafkaUser::Query))
    .collect();
    for (binary, env) in [
        (
            env!("CARGO_BIN_EXE_order-command"),
            command_env(&url, &kafka, support::free_port()),
        ),
        (env!("CARGO_BIN_EXE_order-query"), query_env),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(binary)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .output(),
        )
        .await
        .expect("the server gives up on its database in time")
        .expect("run the server");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{binary} cannot start: {text}");
        assert!(
            text.contains("u:***@127.0.0.1"),
            "{binary} names its database, redacted: {text}"
        );
        assert!(
            !text.contains(PASSWORD),
            "{binary} logged the password:\n{text}"
        );
    }
}
