//! The query side on the real stack: `order-query` over gRPC, the projector
//! consuming a fresh topic into a fresh read database. Events are produced
//! straight to Kafka here, as the command side's relay would.

mod as_of;
mod cache;
mod errors;
mod gaps;
mod health;
mod history;
mod kill;
mod listing;
mod live;
mod live_list;
mod live_resume;
mod poison;
mod read_your_writes;
mod redelivery;
mod sharing;
mod stepping;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use orders::{
    auth::AuthedChannel,
    codec::{self, EventMeta},
    config::{KafkaSettings, QuerySettings},
    domain::{
        CancelReason, CurrencyCode, CustomerId, Event, Order, OrderId, OrderLine, ProductId,
        Quantity, TrackingNumber, UnitPrice,
    },
    kafka,
    metrics::Counter,
    proto::{self, order_queries_client::OrderQueriesClient},
    query::{
        Application, ProjectorMetrics, QueryError, cache::ReadCache, projector::FreezeSwitch,
        read_model::DEFAULT_SCHEMA, watch::ProjectionWatch,
    },
};
use prost::Message as _;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support;

/// Generous bound for anything the projector does in tests.
pub const PROJECTED: Duration = Duration::from_secs(30);

/// A fresh topic and read database, and a producer writing to the topic.
pub struct Stack {
    pub kafka: KafkaSettings,
    pub database_url: String,
    pub pool: PgPool,
    pub group: String,
    producer: FutureProducer,
}

impl Stack {
    /// A fresh topic with `partitions` partitions (created) and a fresh database.
    pub async fn new(prefix: &str, partitions: i32) -> Self {
        let mut kafka = support::fresh_kafka(prefix);
        kafka.topic_partitions = partitions;
        kafka::ensure_topic(&kafka).await.expect("create topic");
        let database_url = support::fresh_database(prefix).await;
        // As the relay would publish them: as the relay user.
        let producer =
            kafka::idempotent_producer(&support::kafka_as(&kafka, support::KafkaUser::Relay))
                .expect("create producer");
        Self {
            pool: support::pool(&database_url).await,
            group: support::unique(prefix),
            kafka,
            database_url,
            producer,
        }
    }

    /// Query settings for this stack: any free port, the stack's group.
    pub fn settings(&self) -> QuerySettings {
        support::query_settings(&self.database_url, self.kafka.clone(), &self.group)
    }

    /// Starts `order-query` in process with the default settings.
    pub async fn start(&self) -> TestQuery {
        TestQuery::start(self.settings()).await
    }

    /// Produces events and waits for every delivery; returns their (partition, offset).
    pub async fn produce(&self, events: &[Produced]) -> Vec<(i32, i64)> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let headers = cloud_event_headers(event);
            let record = FutureRecord::to(&self.kafka.topic)
                .key(event.order_id.as_bytes())
                .payload(&event.bytes)
                .headers(headers);
            deliveries.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let delivered = delivery.await.expect("delivery report").expect("delivered");
            positions.push((delivered.partition, delivered.offset));
        }
        positions
    }

    /// Produces a raw message, optionally to a given partition; returns its offset.
    pub async fn produce_raw(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<i32>,
    ) -> (i32, i64) {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.kafka.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivered = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        (delivered.partition, delivered.offset)
    }

    /// Waits until the stored positions reach the end of every partition.
    pub async fn wait_caught_up(&self) {
        let ends = high_watermarks(&self.kafka);
        let pool = self.pool.clone();
        let topic = self.kafka.topic.clone();
        support::wait_until(PROJECTED, "positions at the end of the topic", || {
            let (pool, topic, ends) = (pool.clone(), topic.clone(), ends.clone());
            async move {
                let stored = positions(&pool, &topic).await;
                ends.iter()
                    .all(|(p, &end)| end == 0 || stored.get(p).copied() == Some(end))
            }
        })
        .await;
    }

    /// A full, ordered dump of the projection tables (views with their lines, history).
    pub async fn dump(&self) -> Vec<String> {
        let mut rows = vec![];
        for (table, order) in [
            ("order_view", "order_id"),
            ("order_history", "order_id, version"),
        ] {
            let sql = format!(
                "SELECT '{table} ' || row_to_json(t)::text FROM {DEFAULT_SCHEMA}.{table} t ORDER BY {order}"
            );
            rows.extend(
                sqlx::query_scalar::<_, String>(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .expect("dump"),
            );
        }
        rows
    }

    /// A number from one SQL statement on the read database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

/// The stored next offset of every partition of `topic`.
pub async fn positions(pool: &PgPool, topic: &str) -> HashMap<i32, i64> {
    sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT kafka_partition, next_offset FROM {DEFAULT_SCHEMA}.consumer_position WHERE topic = $1"
    ))
    .bind(topic)
    .fetch_all(pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .collect()
}

/// The end offset of every partition of the stack's topic.
pub fn high_watermarks(kafka: &KafkaSettings) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = support::client_config(support::KafkaUser::Admin)
        .create()
        .expect("metadata consumer");
    (0..kafka.topic_partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(&kafka.topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

fn cloud_event_headers(event: &Produced) -> OwnedHeaders {
    let ce_type = format!("orders.v1.{}", event.event.type_name());
    let ce_time = event.meta.occurred_at.to_rfc3339();
    let ce_id = event.meta.event_id.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(&ce_id),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(&ce_type),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("/it/query"),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(&ce_time),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/protobuf"),
        })
}

/// A running in-process `order-query` and a client of it.
pub struct TestQuery {
    pub client: OrderQueriesClient<AuthedChannel>,
    pub port: u16,
    pub metrics: Option<Arc<ProjectorMetrics>>,
    pub watch: ProjectionWatch,
    pub freeze: Option<FreezeSwitch>,
    pub stalls_total: Counter,
    /// The port of `/metrics`, when the settings ask for it.
    pub metrics_port: Option<u16>,
    pub cache: ReadCache,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), QueryError>>>,
}

impl TestQuery {
    /// Builds and runs the application with `settings`, once its topic
    /// exists (created as the admin user if need be).
    pub async fn start(settings: QuerySettings) -> Self {
        support::create_topic(&settings.kafka).await;
        let app = Application::build(settings)
            .await
            .expect("build order-query");
        let port = app.port();
        let metrics = app.projector_metrics();
        let watch = app.projection_watch();
        let freeze = app.projector_freeze();
        let stalls_total = app.watchdog_metrics().stalls;
        let metrics_port = app.metrics_port();
        let cache = app.read_cache();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            client: connect(port).await,
            port,
            metrics,
            watch,
            freeze,
            stalls_total,
            metrics_port,
            cache,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The projector's counters.
    pub fn metrics(&self) -> &ProjectorMetrics {
        self.metrics.as_deref().expect("projector runs")
    }

    /// Stops the server gracefully (drain, last batch, leave the group) and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("order-query stopped in time")
                .expect("order-query task")
                .expect("order-query ran");
        }
    }
}

/// A client of the query server on `port`, once it accepts connections.
pub async fn connect(port: u16) -> OrderQueriesClient<AuthedChannel> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..100 {
        match Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => {
                return OrderQueriesClient::with_interceptor(channel, support::bearer());
            }
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {endpoint}: {last_error:?}");
}

/// One encoded event of a test order, as the relay would publish it.
#[derive(Debug, Clone)]
pub struct Produced {
    pub order_id: String,
    pub meta: EventMeta,
    pub event: Event,
    pub envelope: proto::OrderEvent,
    pub bytes: Vec<u8>,
}

/// Builds an order's events with contiguous versions, stamped with the current time.
#[derive(Debug, Clone)]
pub struct OrderStream {
    pub id: OrderId,
    pub events: Vec<Event>,
}

impl OrderStream {
    /// A new order (no events yet).
    pub fn new() -> Self {
        Self {
            id: OrderId::generate(),
            events: vec![],
        }
    }

    /// The order id as a string.
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// The next event of the order, with the next version.
    pub fn next(&mut self, event: Event) -> Produced {
        self.events.push(event.clone());
        envelope(self.id, self.events.len() as u64, Utc::now(), event)
    }

    /// The order every event so far folds to.
    pub fn folded(&self) -> Order {
        Order::fold(&self.events)
    }
}

/// The encoded envelope of `event` at `version` of `order_id`.
pub fn envelope(order_id: OrderId, version: u64, at: DateTime<Utc>, event: Event) -> Produced {
    let meta = EventMeta {
        event_id: Uuid::new_v4(),
        order_id,
        version,
        occurred_at: at,
        correlation_id: format!("corr-{order_id}"),
        causation_id: Uuid::new_v4().to_string(),
        actor: None,
    };
    let envelope = codec::event_to_proto(&meta, &event);
    Produced {
        order_id: order_id.to_string(),
        bytes: envelope.encode_to_vec(),
        meta,
        event,
        envelope,
    }
}

pub fn line(product: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        product_id: ProductId::parse(product).unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
        unit_price: UnitPrice::parse(unit_price).unwrap(),
    }
}

pub fn placed(customer: &str) -> Event {
    Event::OrderPlaced {
        customer_id: CustomerId::parse(customer).unwrap(),
        currency: CurrencyCode::parse("EUR").unwrap(),
        lines: vec![line("sku-1", 2, 1_250)],
    }
}

pub fn line_added(product: &str, quantity: u32, unit_price: i64) -> Event {
    Event::OrderLineAdded {
        line: line(product, quantity, unit_price),
    }
}

pub fn shipped(tracking: &str) -> Event {
    Event::OrderShipped {
        tracking_number: TrackingNumber::parse(tracking).unwrap(),
    }
}

pub fn cancelled(reason: &str) -> Event {
    Event::OrderCancelled {
        reason: CancelReason::parse(reason).unwrap(),
    }
}

/// The proto order a fold of `stream`'s events should project to (times aside).
pub fn expected_order(stream: &OrderStream) -> proto::Order {
    let view = orders::query::read_model::OrderView {
        order_id: uuid::Uuid::parse_str(&stream.id()).expect("stream id is a uuid"),
        order: stream.folded(),
        placed_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
    };
    without_times(orders::query::reply::order_to_proto(&view))
}

/// `order` with its timestamps cleared, for comparison with `expected_order`.
pub fn without_times(mut order: proto::Order) -> proto::Order {
    order.placed_at = None;
    order.updated_at = None;
    order
}

/// `GetOrder` with `min_version`, as a read-your-writes client would call it.
pub async fn get_at_least(
    client: &mut OrderQueriesClient<AuthedChannel>,
    order_id: &str,
    min_version: u64,
) -> Result<tonic::Response<proto::GetOrderResponse>, tonic::Status> {
    client
        .get_order(proto::GetOrderRequest {
            order_id: order_id.to_owned(),
            min_version: Some(min_version),
            ..Default::default()
        })
        .await
}
