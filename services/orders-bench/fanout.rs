//! Watch fan-out: how long after a command's ack its update reaches the
//! `WatchOrder` streams of one order. `watchers` streams (over `connections`
//! connections) watch one order; each round appends one version with
//! AddOrderLine and waits until every stream has it, then the next round
//! starts. Per round: the latency of every stream (ack → the message read),
//! and of the last stream to get it. The same rounds with one stream first
//! are the reference in the same run: what the projection path costs before
//! any fan-out.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use orders::{
    auth::{AuthedChannel, BearerToken},
    proto::{
        self, order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    load::{RssSampler, percentiles},
    scenario::channel,
};

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Command server address.
    #[arg(long, env = "ORDERS_COMMAND_ADDR", default_value = "127.0.0.1:50051")]
    command_addr: String,
    /// Query server address.
    #[arg(long, env = "ORDERS_QUERY_ADDR", default_value = "127.0.0.1:50052")]
    query_addr: String,
    /// Streams watching the one order.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Connections the streams share (HTTP/2 allows 256 streams on each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Versions appended, one per round (an order holds at most 100 lines).
    #[arg(long, default_value_t = 40)]
    rounds: u64,
    /// Longest wait for every stream to get one round's version.
    #[arg(long, default_value_t = 30.0)]
    round_timeout: f64,
    /// Sample the RSS of this process during the run: NAME=PID (repeatable).
    #[arg(long = "watch-pid", value_parser = crate::parse_watch)]
    watch: Vec<(String, u32)>,
}

/// What the rounds measured, in microseconds.
struct Rounds {
    /// Every stream's latency, every round.
    each: Histogram<u64>,
    /// The last stream's latency, per round.
    last: Histogram<u64>,
    coalesced: u64,
}

/// One order watched by `watchers` streams through `rounds` versions.
async fn measure(
    args: &FanoutArgs,
    token: &BearerToken,
    watchers: usize,
    rounds: u64,
) -> anyhow::Result<Rounds> {
    let mut commands =
        OrderCommandsClient::with_interceptor(channel(&args.command_addr).await?, token.clone());
    let placed = commands
        .place_order(crate::scenario::place_request(0))
        .await
        .context("PlaceOrder")?
        .into_inner();
    let order_id = placed.order_id;

    let mut readers: Vec<OrderQueriesClient<AuthedChannel>> = vec![];
    for _ in 0..args.connections.max(1) {
        readers.push(OrderQueriesClient::with_interceptor(
            channel(&args.query_addr).await?,
            token.clone(),
        ));
    }
    // Each stream reports (version, when read, coalesced) for every message.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant, bool)>();
    let mut tasks = vec![];
    for i in 0..watchers {
        let mut reader = readers[i % readers.len()].clone();
        let mut stream = reader
            .watch_order(proto::WatchOrderRequest {
                order_id: order_id.clone(),
                from_version: placed.version,
            })
            .await
            .context("WatchOrder")?
            .into_inner();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let version = message.order.map_or(0, |o| o.version);
                if tx
                    .send((version, Instant::now(), message.coalesced))
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let timeout = Duration::from_secs_f64(args.round_timeout);
    // Every stream first sends the version it starts from.
    wait_for(&mut rx, placed.version, watchers, timeout, None).await?;

    let mut each = Histogram::<u64>::new(3)?;
    let mut last = Histogram::<u64>::new(3)?;
    let mut coalesced = 0;
    for round in 0..rounds {
        let reply = commands
            .add_order_line(proto::AddOrderLineRequest {
                order_id: order_id.clone(),
                line: Some(proto::OrderLine {
                    product_id: format!("sku-fanout-{round}"),
                    quantity: 1,
                    unit_price_minor: 100,
                }),
                ..Default::default()
            })
            .await
            .context("AddOrderLine")?
            .into_inner();
        let acked = Instant::now();
        let seen = wait_for(&mut rx, reply.version, watchers, timeout, Some(acked)).await?;
        for &(latency, was_coalesced) in &seen {
            each.record(latency.max(1))?;
            coalesced += u64::from(was_coalesced);
        }
        last.record(seen.iter().map(|(l, _)| *l).max().unwrap_or(1).max(1))?;
    }
    for task in tasks {
        task.abort();
    }
    Ok(Rounds {
        each,
        last,
        coalesced,
    })
}

/// Waits until `count` messages of `version` arrived; their latencies from
/// `since` in microseconds (0 without `since`) and whether each was coalesced.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant, bool)>,
    version: u64,
    count: usize,
    timeout: Duration,
    since: Option<Instant>,
) -> anyhow::Result<Vec<(u64, bool)>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let (got, at, coalesced) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| {
                format!(
                    "only {} of {count} streams got version {version} in time",
                    seen.len()
                )
            })?
            .context("the streams ended")?;
        anyhow::ensure!(
            got == version,
            "a stream sent version {got} while {version} was expected"
        );
        let latency = since.map_or(0, |since| at.saturating_duration_since(since).as_micros());
        seen.push((u64::try_from(latency).unwrap_or(u64::MAX), coalesced));
    }
    Ok(seen)
}

fn summary(rounds: &Rounds) -> Value {
    json!({
        "each_ms": percentiles(&rounds.each),
        "last_ms": percentiles(&rounds.last),
        "coalesced": rounds.coalesced,
    })
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let token = BearerToken::from_env();
    let reference = measure(&args, &token, 1, args.rounds).await?;
    let rss = RssSampler::start(args.watch.clone());
    let fanout = measure(&args, &token, args.watchers, args.rounds).await?;
    let out = json!({
        "watchers": args.watchers,
        "connections": args.connections,
        "rounds": args.rounds,
        "one": summary(&reference),
        "fanout": summary(&fanout),
        "rss": rss.finish().await,
    });
    println!("{out}");
    Ok(())
}
