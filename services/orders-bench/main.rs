//! `orders-bench`: the load generator and report writer of `scripts/bench`.
//!
//! - `run`: one scenario against the servers, closed or open loop, bounded by
//!   a count and a duration; the summary (HDR percentiles, throughput, errors
//!   by gRPC code, optional RSS of watched pids, optional projector figures
//!   from order-query's `/metrics`) is one JSON object on stdout.
//! - `rebuild`: times `orderctl rebuild` and reports its events/s.
//! - `catch-up`: times a new order-query draining the topic's backlog.
//! - `echo-server`: the trivial tonic server used as the gRPC reference.
//! - `report`: turns a results file into BENCHMARKS.md and its SVG plots.

mod catch_up;
mod cpu;
mod echo;
mod fanout;
mod fulfilment;
mod load;
mod plot;
mod projector;
mod prometheus;
mod report;
mod scenario;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use projector::ProjectorStats;
use prometheus::MetricsUrl;
use scenario::{Clients, Scenario};

/// Load generator and report writer for the orders gRPC servers.
#[derive(Debug, Parser)]
#[command(name = "orders-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario and print its summary as JSON.
    Run(RunArgs),
    /// Time `orderctl rebuild` and print events/s as JSON.
    Rebuild(RebuildArgs),
    /// Start a new order-query on a backlog and print how fast it catches up, as JSON.
    CatchUp(catch_up::CatchUpArgs),
    /// Time a command's update reaching many WatchOrder streams of one order, as JSON.
    Fanout(fanout::FanoutArgs),
    /// Confirmed orders taken to SHIPPED by order-fulfilment: rate and latency, as JSON.
    Fulfilment(fulfilment::FulfilmentArgs),
    /// Serve the echo reference service until SIGTERM.
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:30159")]
        addr: SocketAddr,
    },
    /// Write BENCHMARKS.md and its SVG plots from a results file.
    Report(report::ReportArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Place)]
    scenario: Scenario,
    /// Command server address.
    #[arg(long, env = "ORDERS_COMMAND_ADDR", default_value = "127.0.0.1:50051")]
    command_addr: String,
    /// Query server address.
    #[arg(long, env = "ORDERS_QUERY_ADDR", default_value = "127.0.0.1:50052")]
    query_addr: String,
    /// Echo reference server address (scenario `echo`).
    #[arg(long, default_value = "127.0.0.1:30159")]
    echo_addr: String,
    /// Concurrent clients (closed loop); in open loop, 64× this bounds the requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop at this many iterations per second; closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many iterations.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up iterations before the measured run, not recorded.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// gRPC connections shared by the clients.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Orders placed before a read scenario (reads, get-order).
    #[arg(long, default_value_t = 2_000)]
    seed_orders: u64,
    /// Write the seeded orders' GetOrder requests here as a JSON array (ghz --data-file).
    #[arg(long)]
    seed_requests_out: Option<PathBuf>,
    /// Sample the RSS of this process during the run: NAME=PID (repeatable).
    #[arg(long = "watch-pid", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Measure the CPU time of this process and its children over the run:
    /// NAME=PID (repeatable; PostgreSQL's backends split by database).
    #[arg(long = "cpu-pid", value_parser = parse_watch)]
    cpu: Vec<(String, u32)>,
    /// order-query's Prometheus metrics (http://host:port/metrics), scraped
    /// before and after the run for the projector's figures.
    #[arg(long)]
    metrics_url: Option<MetricsUrl>,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    /// The orderctl binary; its environment (databases, topic) is inherited.
    #[arg(long, default_value = "orderctl")]
    orderctl: PathBuf,
    /// Rebuild from the event store instead of the topic.
    #[arg(long)]
    from_store: bool,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    Ok((
        name.to_owned(),
        pid.parse().map_err(|_| "PID is not a number")?,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Rebuild(args) => rebuild(args).await,
        Command::CatchUp(args) => catch_up::run(args).await,
        Command::Fanout(args) => fanout::run(args).await,
        Command::Fulfilment(args) => fulfilment::run(args).await,
        Command::EchoServer { addr } => echo::serve(addr).await,
        Command::Report(args) => report::write(&args),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let scenario = args.scenario;
    let mut clients = Clients::connect(
        scenario,
        &args.command_addr,
        &args.query_addr,
        &args.echo_addr,
        args.connections,
    )
    .await?;
    // Distinct customers and products per run, so runs never share state by accident.
    let base = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    if scenario.needs_seed() {
        clients
            .seed(args.seed_orders, base, Duration::from_secs(120))
            .await?;
        if let Some(path) = &args.seed_requests_out {
            let requests: Vec<_> = clients
                .seeded_order_ids()
                .map(|id| serde_json::json!({ "order_id": id }))
                .collect();
            std::fs::write(path, serde_json::to_vec(&requests)?)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    let clients = Arc::new(clients);
    for w in 0..args.warmup {
        let _ = scenario::iteration(scenario, clients.clone(), base.wrapping_add(spread(w))).await;
    }
    let plan = load::Plan {
        concurrency: args.concurrency,
        rate: args.rate,
        count: args.count,
        duration: Duration::from_secs_f64(args.duration),
    };
    let before = match &args.metrics_url {
        Some(url) => projector::scrape_or_warn(url).await,
        None => None,
    };
    let rss = load::RssSampler::start(args.watch);
    let cpu = (!args.cpu.is_empty()).then(|| {
        let mut watched = args.cpu;
        watched.push(("orders-bench".into(), std::process::id()));
        cpu::CpuSampler::start(watched)
    });
    let offset = base.wrapping_add(spread(args.warmup));
    let mut summary = load::run(plan, &scenario.name(), move |n| {
        scenario::iteration(scenario, clients.clone(), offset.wrapping_add(spread(n)))
    })
    .await;
    summary["scenario"] = scenario.name().into();
    summary["rss"] = rss.finish().await;
    if let Some(cpu) = cpu {
        summary["cpu"] = cpu.finish();
    }
    if let (Some(url), Some(before)) = (&args.metrics_url, before)
        && let Some(after) = projector::scrape_or_warn(url).await
    {
        summary["projector"] = serde_json::to_value(ProjectorStats::between(&before, &after))?;
    }
    println!("{summary}");
    Ok(())
}

/// Spreads iteration numbers so that neighbours differ in customer and lines.
fn spread(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9)
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(&args.orderctl);
    command.arg("rebuild").arg("--drop-old");
    if args.from_store {
        command.arg("--from-store");
    }
    let started = Instant::now();
    let output = command
        .output()
        .await
        .with_context(|| format!("run {}", args.orderctl.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "orderctl rebuild failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let events = reported(&stdout, "events")
        .with_context(|| format!("no event count in orderctl's output:\n{stdout}"))?;
    // Wall clock includes process start, verification and the switch; orderctl's
    // own rate covers building the generation only.
    let summary = serde_json::json!({
        "scenario": "rebuild",
        "source": if args.from_store { "store" } else { "topic" },
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "build_events_per_s": reported(&stdout, "events/s").or_else(|| reported(&stdout, "events_per_s")),
        "phases_s": {
            "load": reported(&stdout, "load_s"),
            "index": reported(&stdout, "index_s"),
            "verify": reported(&stdout, "verify_s"),
            "switch": reported(&stdout, "switch_s"),
        },
        "output": stdout.trim(),
    });
    println!("{summary}");
    Ok(())
}

/// A number in `orderctl rebuild`'s output: `<key>=<n>`, or `<n> <key>` (the
/// summary line: "… 25793 events (…) in 1.2 s, 21000 events/s …").
fn reported(stdout: &str, key: &str) -> Option<f64> {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let number = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
            .replace(',', "")
            .parse()
            .ok()
    };
    words.iter().enumerate().find_map(|(i, word)| {
        if let Some(n) = word.strip_prefix(key).and_then(|w| w.strip_prefix('=')) {
            return number(n);
        }
        let next = words.get(i + 1)?.trim_end_matches([',', ';', ':', ')']);
        if next == key { number(word) } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_either_output_form() {
        let line = "generation 3 (read_model_g3) is live, replacing 2: 25793 events (0 from the \
                    store, 25793 from the topic) in 1.4 s, 18423 events/s; verified 6524 orders";
        assert_eq!(reported(line, "events"), Some(25_793.0));
        assert_eq!(reported(line, "events/s"), Some(18_423.0));
        let machine = "rebuild: events=25793 orders=6524 events_per_s=120000.5";
        assert_eq!(reported(machine, "events"), Some(25_793.0));
        assert_eq!(reported(machine, "events_per_s"), Some(120_000.5));
        assert_eq!(reported("applied 1,200 events", "events"), Some(1_200.0));
        assert_eq!(reported("nothing here", "events"), None);
    }

    #[test]
    fn watch_pids_parse_and_reject_garbage() {
        assert_eq!(parse_watch("command=42"), Ok(("command".into(), 42)));
        assert!(parse_watch("command").is_err());
        assert!(parse_watch("command=x").is_err());
    }
}
