//! `orders-bench`: a load generator for `orders`, using the generated tonic clients.
//!
//! Closed loop: N clients, each sending its next request when the last one is
//! answered. Open loop: requests start at a fixed rate whatever the answers,
//! and latency is measured from each request's intended start, so queueing is
//! never hidden (no coordinated omission). Each run is bounded by a count and
//! a duration. The summary is one JSON object on stdout.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use orders::proto::{
    self, order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// PlaceOrder with 1-5 lines.
    Place,
    /// PlaceOrder, AddOrderLine, ConfirmOrder, ShipOrder; latency per command.
    Lifecycle,
    /// PlaceOrder, then GetOrder(min_version) on the query server: ack → visible lag.
    ReadYourWrites,
}

/// Load generator for the orders gRPC servers.
#[derive(Debug, Parser)]
#[command(name = "orders-bench", version)]
struct Cli {
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Place)]
    scenario: Scenario,
    /// Command server address.
    #[arg(long, env = "ORDERS_COMMAND_ADDR", default_value = "127.0.0.1:50051")]
    command_addr: String,
    /// Query server address.
    #[arg(long, env = "ORDERS_QUERY_ADDR", default_value = "127.0.0.1:50052")]
    query_addr: String,
    /// Concurrent clients (closed loop) or most requests in flight (open loop).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop at this many scenario iterations per second; closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many iterations.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up iterations, not recorded.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// gRPC connections shared by the clients.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

struct Recorder {
    latency: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    done: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
            errors: Mutex::new(BTreeMap::new()),
            done: AtomicU64::new(0),
        }
    }

    async fn record(&self, started: Instant, result: Result<(), tonic::Status>) {
        match result {
            Ok(()) => {
                let micros = started.elapsed().as_micros().max(1) as u64;
                self.latency.lock().await.saturating_record(micros);
            }
            Err(status) => {
                *self
                    .errors
                    .lock()
                    .await
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Clients {
    commands: Vec<OrderCommandsClient<Channel>>,
    queries: Vec<OrderQueriesClient<Channel>>,
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connect to {addr}"))
}

fn place_request(i: u64) -> proto::PlaceOrderRequest {
    let lines = (0..(i % 5 + 1))
        .map(|n| proto::OrderLine {
            product_id: format!("sku-{}", (i * 7 + n) % 1000),
            quantity: (n as u32 % 3) + 1,
            unit_price_minor: 199 + (n as i64) * 100,
        })
        .collect();
    proto::PlaceOrderRequest {
        customer_id: format!("bench-{}", i % 500),
        currency_code: "EUR".into(),
        lines,
        ..Default::default()
    }
}

/// Runs one iteration of the scenario; returns when it is complete.
async fn iteration(scenario: Scenario, clients: &Clients, i: u64) -> Result<(), tonic::Status> {
    let mut commands = clients.commands[i as usize % clients.commands.len()].clone();
    let placed = commands.place_order(place_request(i)).await?.into_inner();
    match scenario {
        Scenario::Place => Ok(()),
        Scenario::Lifecycle => {
            let order_id = placed.order_id;
            commands
                .add_order_line(proto::AddOrderLineRequest {
                    order_id: order_id.clone(),
                    line: Some(proto::OrderLine {
                        product_id: "extra".into(),
                        quantity: 1,
                        unit_price_minor: 50,
                    }),
                    ..Default::default()
                })
                .await?;
            commands
                .confirm_order(proto::ConfirmOrderRequest {
                    order_id: order_id.clone(),
                    ..Default::default()
                })
                .await?;
            commands
                .ship_order(proto::ShipOrderRequest {
                    order_id,
                    tracking_number: format!("T{i}"),
                    ..Default::default()
                })
                .await?;
            Ok(())
        }
        Scenario::ReadYourWrites => {
            let mut queries = clients.queries[i as usize % clients.queries.len()].clone();
            let mut request = tonic::Request::new(proto::GetOrderRequest {
                order_id: placed.order_id,
                min_version: Some(placed.version),
            });
            request.set_timeout(Duration::from_secs(5));
            queries.get_order(request).await?;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut clients = Clients {
        commands: Vec::new(),
        queries: Vec::new(),
    };
    for _ in 0..cli.connections.max(1) {
        clients
            .commands
            .push(OrderCommandsClient::new(channel(&cli.command_addr).await?));
        if cli.scenario == Scenario::ReadYourWrites {
            clients
                .queries
                .push(OrderQueriesClient::new(channel(&cli.query_addr).await?));
        }
    }
    let base = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    for w in 0..cli.warmup {
        let _ = iteration(cli.scenario, &clients, base + w).await;
    }

    let recorder = Arc::new(Recorder::new());
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Duration::from_secs_f64(cli.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    match cli.rate {
        None => {
            for _ in 0..cli.concurrency.max(1) {
                let (clients, recorder, next) = (clients.clone(), recorder.clone(), next.clone());
                let (scenario, count) = (cli.scenario, cli.count);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count || started.elapsed() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        let result = iteration(scenario, &clients, base + cli_offset(n)).await;
                        recorder.record(t, result).await;
                    }
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let in_flight = Arc::new(tokio::sync::Semaphore::new(cli.concurrency.max(1) * 64));
            let mut n = 0u64;
            while n < cli.count {
                let intended = started + interval.mul_f64(n as f64);
                if intended.duration_since(started) >= deadline {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                let (clients, recorder, scenario) =
                    (clients.clone(), recorder.clone(), cli.scenario);
                tasks.push(tokio::spawn(async move {
                    let result = iteration(scenario, &clients, base + cli_offset(n)).await;
                    // Latency from the intended start: time spent queued behind a slow answer counts.
                    recorder.record(intended, result).await;
                    drop(permit);
                }));
                n += 1;
            }
        }
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latency = recorder.latency.lock().await;
    let errors = recorder.errors.lock().await;
    let done = recorder.done.load(Ordering::Relaxed);
    let ok = latency.len();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let summary = serde_json::json!({
        "scenario": format!("{:?}", cli.scenario).to_lowercase(),
        "mode": if cli.rate.is_some() { "open" } else { "closed" },
        "concurrency": cli.concurrency,
        "offered_rate": cli.rate,
        "iterations": done,
        "ok": ok,
        "elapsed_s": elapsed,
        "throughput_per_s": ok as f64 / elapsed,
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
            "max": latency.max() as f64 / 1000.0,
        },
        "errors": *errors,
    });
    println!("{summary}");
    Ok(())
}

/// Spreads iteration numbers so concurrent runs never share customer ids by accident.
fn cli_offset(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9)
}
