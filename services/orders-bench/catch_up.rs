//! `catch-up`: how fast a new order-query drains a topic that already holds
//! a backlog. It starts the server on a fresh read database with a fresh
//! consumer group and times it from its start until its stored positions
//! reach the end offsets the topic had before it started.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use orders::{config::KafkaSettings, kafka};
use rdkafka::consumer::BaseConsumer;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::process::{Child, Command};

use crate::{
    projector::{self, ProjectorStats},
    prometheus::{MetricsUrl, Scrape},
};

/// How often the stored positions are read.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Longest one broker or database request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct CatchUpArgs {
    /// The order-query binary to start.
    #[arg(long)]
    query_bin: PathBuf,
    /// An empty read database of its own.
    #[arg(long)]
    read_database_url: String,
    /// The broker, the topic holding the backlog (`--topic`) and the
    /// credentials, which the server inherits (those of the query principal).
    #[command(flatten)]
    kafka: KafkaSettings,
    /// A consumer group that has committed no offsets.
    #[arg(long)]
    group: String,
    /// The server's gRPC address.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's Prometheus metrics address, scraped once at the end.
    #[arg(long)]
    metrics_addr: SocketAddr,
    /// Give up after this many seconds (the summary then says `timed_out`).
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Stop once this many events are stored (a short figure for smoke runs);
    /// the whole backlog when absent.
    #[arg(long)]
    max_events: Option<u64>,
    /// Append the server's output to this file instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
}

/// The result of one catch-up, printed as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUpSummary {
    /// Events in the topic when the server started.
    pub backlog: u64,
    /// Events stored when the clock stopped.
    pub events: u64,
    /// From the server's start until `events` were stored.
    pub seconds: f64,
    pub events_per_s: f64,
    /// The positions did not reach the target within `--timeout-s`.
    pub timed_out: bool,
    /// The projector over its whole life; absent when its metrics could not
    /// be scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<ProjectorStats>,
}

pub async fn run(args: CatchUpArgs) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(REQUEST_TIMEOUT)
        .connect(&args.read_database_url)
        .await
        .context("connect to the catch-up read database")?;
    let (start, end) = offsets(&args.kafka).await?;
    let backlog = end - start;
    anyhow::ensure!(backlog > 0, "topic {} holds no event", args.kafka.topic);
    let target = start + args.max_events.map_or(backlog, |n| n.min(backlog));

    let mut server = spawn(&args)?;
    let started = Instant::now();
    let timeout = Duration::from_secs(args.timeout_s);
    let mut stored = 0;
    let mut last_error = None;
    for _ in 0..=timeout.as_millis() / POLL_EVERY.as_millis() {
        if let Some(status) = server.try_wait()? {
            anyhow::bail!("order-query exited during the catch-up ({status})");
        }
        // Errors are expected until the server has created its tables.
        match stored_positions(&pool, &args.kafka.topic).await {
            Ok(sum) => (stored, last_error) = (sum, None),
            Err(e) => last_error = Some(e),
        }
        if stored >= target || started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let timed_out = stored < target;
    if timed_out {
        eprintln!(
            "orders-bench: catch-up timed out after {seconds:.1} s: {} of {} events stored{}",
            stored.saturating_sub(start),
            target - start,
            last_error.map_or(String::new(), |e| format!(" (last error: {e:#})")),
        );
    }
    let metrics = projector::scrape_or_warn(&MetricsUrl::for_addr(args.metrics_addr)).await;
    stop(server).await;

    let events = stored.saturating_sub(start);
    let summary = CatchUpSummary {
        backlog,
        events,
        seconds,
        events_per_s: events as f64 / seconds,
        timed_out,
        projector: metrics.map(|after| ProjectorStats::between(&Scrape::default(), &after)),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The sums of the topic's low and high watermarks over its partitions.
async fn offsets(settings: &KafkaSettings) -> anyhow::Result<(u64, u64)> {
    let client: BaseConsumer = kafka::base_config(settings)?.create()?;
    let topic = settings.topic.clone();
    let watermarks = tokio::task::spawn_blocking(move || {
        kafka::watermarks(&client, &topic, REQUEST_TIMEOUT)
            .with_context(|| format!("watermarks of {topic}"))
    })
    .await??;
    anyhow::ensure!(!watermarks.is_empty(), "the broker knows no such topic");
    let (low, high) = watermarks
        .values()
        .fold((0, 0), |(l, h), &(low, high)| (l + low, h + high));
    Ok((u64::try_from(low)?, u64::try_from(high)?))
}

/// The sum of the next offsets the projection has stored for `topic`.
async fn stored_positions(pool: &PgPool, topic: &str) -> anyhow::Result<u64> {
    let sum: i64 = tokio::time::timeout(
        REQUEST_TIMEOUT,
        sqlx::query_scalar!(
            r#"SELECT coalesce(sum(next_offset), 0)::bigint AS "sum!"
               FROM read_model.consumer_position WHERE topic = $1"#,
            topic,
        )
        .fetch_one(pool),
    )
    .await
    .context("the read database did not answer")??;
    Ok(u64::try_from(sum)?)
}

/// Starts order-query with the environment scripts/bench gives it; it is
/// killed if this process ends first.
fn spawn(args: &CatchUpArgs) -> anyhow::Result<Child> {
    let (stdout, stderr) = match &args.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        // stdout carries this program's JSON: the server writes to stderr only.
        None => (Stdio::from(std::io::stderr()), Stdio::inherit()),
    };
    let kafka = &args.kafka;
    let mut command = Command::new(&args.query_bin);
    // The same Kafka user as this process (a password from the environment
    // is inherited; none is ever passed as an argument).
    command
        .env(
            "ORDERS_KAFKA_SECURITY_PROTOCOL",
            kafka.security_protocol.as_str(),
        )
        .env("ORDERS_KAFKA_SASL_MECHANISM", kafka.sasl_mechanism.as_str());
    if let Some(username) = &kafka.username {
        command.env("ORDERS_KAFKA_USERNAME", username);
    }
    if let Some(file) = &kafka.password_file {
        command.env("ORDERS_KAFKA_PASSWORD_FILE", file);
    }
    command
        .env("ORDERS_QUERY_ADDR", args.addr.to_string())
        .env("ORDERS_METRICS_ADDR", args.metrics_addr.to_string())
        .env("ORDERS_READ_DATABASE_URL", &args.read_database_url)
        .env("ORDERS_TOPIC", &args.kafka.topic)
        .env("ORDERS_CONSUMER_GROUP", &args.group)
        .env("KAFKA_BOOTSTRAP_SERVERS", &args.kafka.bootstrap_servers)
        .env("ORDERS_PROJECTOR", "true")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", args.query_bin.display()))
}

/// SIGTERM, then SIGKILL if the server has not stopped within [`STOP_TIMEOUT`].
async fn stop(mut server: Child) {
    if let Some(pid) = server.id() {
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .is_ok_and(|s| s.success());
        if signalled
            && tokio::time::timeout(STOP_TIMEOUT, server.wait())
                .await
                .is_ok()
        {
            return;
        }
        eprintln!("orders-bench: order-query {pid} did not stop on SIGTERM; killing it");
    }
    let _ = server.kill().await;
}
