//! One iteration of each scenario, on the generated tonic clients.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::ValueEnum;
use orders::{
    auth::{AuthedChannel, BearerToken},
    proto::{
        self, order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
    },
};
use tonic::transport::Channel;

use crate::{echo, load::Outcome};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
    /// PlaceOrder with 1-5 lines.
    Place,
    /// PlaceOrder, AddOrderLine, ConfirmOrder, ShipOrder; latency per iteration.
    Lifecycle,
    /// PlaceOrder, then GetOrder(min_version) on the query server; `lag_ms` is ack → visible.
    ReadYourWrites,
    /// GetOrder (3 in 4) and ListOrders by customer (1 in 4) over seeded orders.
    Reads,
    /// GetOrder only over seeded orders (the figure ghz checks).
    GetOrder,
    /// The echo reference server: one empty-work unary call.
    Echo,
}

impl Scenario {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    fn needs_commands(self) -> bool {
        !matches!(self, Scenario::Echo)
    }

    fn needs_queries(self) -> bool {
        matches!(
            self,
            Scenario::ReadYourWrites | Scenario::Reads | Scenario::GetOrder
        )
    }

    pub fn needs_seed(self) -> bool {
        matches!(self, Scenario::Reads | Scenario::GetOrder)
    }
}

/// Connections shared by the clients, and the orders seeded for reads.
pub struct Clients {
    commands: Vec<OrderCommandsClient<AuthedChannel>>,
    queries: Vec<OrderQueriesClient<AuthedChannel>>,
    echo: Vec<echo::proto::echo_client::EchoClient<Channel>>,
    seeded: Vec<(String, String)>,
}

/// A connected plaintext channel to `addr` (`host:port`).
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connect to {addr}"))
}

impl Clients {
    pub async fn connect(
        scenario: Scenario,
        command_addr: &str,
        query_addr: &str,
        echo_addr: &str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let mut clients = Clients {
            commands: Vec::new(),
            queries: Vec::new(),
            echo: Vec::new(),
            seeded: Vec::new(),
        };
        // The token `scripts/dev env` exports in ORDERS_TOKEN.
        let token = BearerToken::from_env();
        for _ in 0..connections.max(1) {
            if scenario.needs_commands() {
                let channel = channel(command_addr).await?;
                clients.commands.push(OrderCommandsClient::with_interceptor(
                    channel,
                    token.clone(),
                ));
            }
            if scenario.needs_queries() {
                let channel = channel(query_addr).await?;
                clients
                    .queries
                    .push(OrderQueriesClient::with_interceptor(channel, token.clone()));
            }
            if scenario == Scenario::Echo {
                let channel = channel(echo_addr).await?;
                clients
                    .echo
                    .push(echo::proto::echo_client::EchoClient::new(channel));
            }
        }
        Ok(clients)
    }

    pub fn seeded_order_ids(&self) -> impl Iterator<Item = &str> {
        self.seeded.iter().map(|(order_id, _)| order_id.as_str())
    }

    /// Places `count` orders (16 at a time) and waits until the query server
    /// shows the last of them; bounded by `timeout`.
    pub async fn seed(&mut self, count: u64, base: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut placed = Vec::with_capacity(count as usize);
        let mut next = 0u64;
        while next < count {
            anyhow::ensure!(
                Instant::now() < deadline,
                "seeding {count} orders timed out"
            );
            let chunk: Vec<u64> = (next..count.min(next + 16)).collect();
            next += chunk.len() as u64;
            let answers = futures::future::join_all(chunk.iter().map(|&i| {
                let mut commands = self.commands[i as usize % self.commands.len()].clone();
                let request = place_request(base + i);
                let customer = request.customer_id.clone();
                async move {
                    let reply = commands.place_order(request).await?.into_inner();
                    Ok::<_, tonic::Status>((reply.order_id, customer, reply.version))
                }
            }))
            .await;
            for answer in answers {
                placed.push(answer.context("seed PlaceOrder")?);
            }
        }
        // Every seeded order must be readable before the reads start: the
        // partitions project independently, so the last order's visibility
        // says nothing of the others'. The server caps one read-your-writes
        // wait (ORDERS_MAX_WAIT_MS); ask again until the seed's own deadline.
        let mut queries = self.queries[0].clone();
        for (order_id, _, version) in &placed {
            loop {
                let mut request = tonic::Request::new(proto::GetOrderRequest {
                    order_id: order_id.clone(),
                    min_version: Some(*version),
                    ..Default::default()
                });
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                match queries.get_order(request).await {
                    Ok(_) => break,
                    Err(status)
                        if status.code() == tonic::Code::Unavailable
                            && Instant::now() < deadline => {}
                    Err(status) => {
                        return Err(status).context("seeded orders never became visible");
                    }
                }
            }
        }
        self.seeded = placed.into_iter().map(|(o, c, _)| (o, c)).collect();
        Ok(())
    }
}

pub fn place_request(i: u64) -> proto::PlaceOrderRequest {
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

/// Runs one iteration of `scenario`; returns when it is complete.
pub async fn iteration(scenario: Scenario, clients: Arc<Clients>, i: u64) -> Outcome {
    let pick = i as usize;
    match scenario {
        Scenario::Echo => {
            let mut echo = clients.echo[pick % clients.echo.len()].clone();
            echo.echo(echo::proto::EchoRequest {
                payload: vec![0xab; 64],
            })
            .await?;
            return Ok(None);
        }
        Scenario::Reads | Scenario::GetOrder => {
            let mut queries = clients.queries[pick % clients.queries.len()].clone();
            let (order_id, customer_id) =
                &clients.seeded[pick.wrapping_mul(7919) % clients.seeded.len()];
            if scenario == Scenario::Reads && i % 4 == 3 {
                queries
                    .list_orders(proto::ListOrdersRequest {
                        customer_id: Some(customer_id.clone()),
                        page_size: 20,
                        ..Default::default()
                    })
                    .await?;
            } else {
                queries
                    .get_order(proto::GetOrderRequest {
                        order_id: order_id.clone(),
                        min_version: None,
                        ..Default::default()
                    })
                    .await?;
            }
            return Ok(None);
        }
        Scenario::Place | Scenario::Lifecycle | Scenario::ReadYourWrites => {}
    }
    let mut commands = clients.commands[pick % clients.commands.len()].clone();
    let placed = commands.place_order(place_request(i)).await?.into_inner();
    match scenario {
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
            Ok(None)
        }
        Scenario::ReadYourWrites => {
            let acked = Instant::now();
            let mut queries = clients.queries[pick % clients.queries.len()].clone();
            let mut request = tonic::Request::new(proto::GetOrderRequest {
                order_id: placed.order_id,
                min_version: Some(placed.version),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(5));
            queries.get_order(request).await?;
            Ok(Some(acked.elapsed()))
        }
        _ => Ok(None),
    }
}
