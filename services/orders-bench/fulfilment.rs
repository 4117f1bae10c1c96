//! Fulfilment: how many confirmed orders the saga takes to SHIPPED per second,
//! and how long from ConfirmOrder's ack until SHIPPED is readable on the
//! query server. `concurrency` clients each loop for `duration`: place an
//! order of one unit of a well-stocked product, open a WatchOrder stream on
//! it, confirm it, and read the stream until the order is SHIPPED (or
//! CANCELLED, counted as an error). The saga's own calls (reserve, authorize,
//! dispatch, ship, capture) run in order-fulfilment.
//!
//! A probe order first waits until the saga ships one order (order-fulfilment
//! may start at the topic's end after the probe was confirmed: then another
//! probe is placed), so the measurement starts with the saga running.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use orders::{
    auth::{AuthedChannel, BearerToken},
    proto::{
        self, inventory::v1 as inventory, order_commands_client::OrderCommandsClient,
        order_queries_client::OrderQueriesClient,
    },
};
use serde_json::json;

use crate::{load::percentiles, scenario::channel};

#[derive(Debug, Args)]
pub struct FulfilmentArgs {
    /// Command server address.
    #[arg(long, env = "ORDERS_COMMAND_ADDR", default_value = "127.0.0.1:50051")]
    command_addr: String,
    /// Query server address.
    #[arg(long, env = "ORDERS_QUERY_ADDR", default_value = "127.0.0.1:50052")]
    query_addr: String,
    /// Inventory server address (the product's stock is set there).
    #[arg(long, env = "ORDERS_INVENTORY_ADDR", default_value = "127.0.0.1:50053")]
    inventory_addr: String,
    /// Concurrent clients, each with one order in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest wait for one order to ship.
    #[arg(long, default_value_t = 60.0)]
    order_timeout: f64,
}

const PRODUCT: &str = "sku-bench-fulfilment";

type Commands = OrderCommandsClient<AuthedChannel>;
type Queries = OrderQueriesClient<AuthedChannel>;

/// How one order ended, and how long after its confirmation.
enum Ended {
    Shipped(Duration),
    Other(String),
}

/// Places, watches and confirms one order; waits for its end.
async fn one(commands: &mut Commands, queries: &mut Queries, timeout: Duration, i: u64) -> Ended {
    let placed = match commands
        .place_order(proto::PlaceOrderRequest {
            customer_id: format!("bench-ful-{}", i % 500),
            currency_code: "EUR".into(),
            lines: vec![proto::OrderLine {
                product_id: PRODUCT.into(),
                quantity: 1,
                unit_price_minor: 990,
            }],
            ..Default::default()
        })
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return Ended::Other(format!("PlaceOrder {:?}", status.code())),
    };
    let mut stream = match queries
        .watch_order(proto::WatchOrderRequest {
            order_id: placed.order_id.clone(),
            from_version: placed.version + 1,
        })
        .await
    {
        Ok(stream) => stream.into_inner(),
        Err(status) => return Ended::Other(format!("WatchOrder {:?}", status.code())),
    };
    if let Err(status) = commands
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: placed.order_id,
            ..Default::default()
        })
        .await
    {
        return Ended::Other(format!("ConfirmOrder {:?}", status.code()));
    }
    let confirmed = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Ended::Other("not shipped in time".into()),
            Ok(Err(status)) => return Ended::Other(format!("WatchOrder {:?}", status.code())),
            Ok(Ok(None)) => return Ended::Other("the watch ended unshipped".into()),
            Ok(Ok(Some(message))) => {
                let status = message.order.map_or(0, |o| o.status);
                if status == proto::OrderStatus::Shipped as i32 {
                    return Ended::Shipped(confirmed.elapsed());
                }
                if status == proto::OrderStatus::Cancelled as i32 {
                    return Ended::Other("cancelled".into());
                }
            }
        }
    }
}

pub async fn run(args: FulfilmentArgs) -> anyhow::Result<()> {
    let token = BearerToken::from_env();
    let mut stock = inventory::inventory_client::InventoryClient::with_interceptor(
        channel(&args.inventory_addr).await?,
        token.clone(),
    );
    stock
        .set_stock(inventory::SetStockRequest {
            product_id: PRODUCT.into(),
            on_hand: 1_000_000_000,
        })
        .await
        .context("SetStock")?;
    let mut commands =
        OrderCommandsClient::with_interceptor(channel(&args.command_addr).await?, token.clone());
    let mut queries =
        OrderQueriesClient::with_interceptor(channel(&args.query_addr).await?, token.clone());

    // The probe: the saga ships one order before anything is measured.
    let mut probed = false;
    for attempt in 0..5 {
        match one(
            &mut commands,
            &mut queries,
            Duration::from_secs(15),
            attempt,
        )
        .await
        {
            Ended::Shipped(_) => {
                probed = true;
                break;
            }
            Ended::Other(why) => eprintln!("fulfilment probe {attempt}: {why}"),
        }
    }
    anyhow::ensure!(probed, "order-fulfilment shipped no probe order");

    let timeout = Duration::from_secs_f64(args.order_timeout);
    let until = Instant::now() + Duration::from_secs_f64(args.duration);
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let started = Instant::now();
    let mut clients = vec![];
    for c in 0..args.concurrency.max(1) {
        let (mut commands, mut queries) = (commands.clone(), queries.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        clients.push(tokio::spawn(async move {
            let mut i = (c as u64) << 32;
            while Instant::now() < until {
                i += 1;
                match one(&mut commands, &mut queries, timeout, i).await {
                    Ended::Shipped(took) => {
                        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                        let _ = latencies.lock().expect("latencies").record(micros);
                    }
                    Ended::Other(why) => {
                        *errors.lock().expect("errors").entry(why).or_default() += 1;
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = latencies.lock().expect("latencies");
    let out = json!({
        "clients": args.concurrency,
        "shipped": latencies.len(),
        "seconds": elapsed,
        "throughput_per_s": latencies.len() as f64 / elapsed,
        "latency_ms": percentiles(&latencies),
        "errors": *errors.lock().expect("errors"),
    });
    println!("{out}");
    Ok(())
}
