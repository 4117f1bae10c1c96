//! Both `/metrics` endpoints during a small workload: every metric the
//! dashboards and alerts use is there, the counters move by what the
//! workload did, lag returns to zero, and a projector frozen by its test hook
//! is counted as a stall.

use std::{net::SocketAddr, time::Duration};

use orders::{
    metrics::MetricsAddr,
    proto::{self, order_commands_client::OrderCommandsClient},
};

use super::{names, scrape, value};
use crate::{
    admin::System,
    command::{TestCommand, place},
    query::TestQuery,
    support,
};

/// What order-command exposes (counters by their sample name).
const COMMAND_METRICS: &[&str] = &[
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
    "orders_writer_batch_size",
    "orders_writer_batch_seconds",
    "orders_writer_conflicts_total",
    "orders_outbox_backlog_events",
    "orders_outbox_oldest_age_seconds",
    "orders_relay_leader",
    "orders_relay_published_total",
    "orders_relay_publish_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
    "orders_build_info",
];

/// What order-query exposes.
const QUERY_METRICS: &[&str] = &[
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
    "orders_projector_lag_events",
    "orders_projector_applied_total",
    "orders_projector_batch_seconds",
    "orders_projector_last_applied_timestamp_seconds",
    "orders_projector_parked_events",
    "orders_projector_dead_letters_total",
    "orders_projector_stalls_total",
    "orders_read_your_writes_wait_seconds",
    "orders_read_cache_hits_total",
    "orders_read_cache_misses_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "orders_build_info",
];

const PLACED: usize = 5;
const SETTLED: Duration = Duration::from_secs(60);

fn any_port() -> MetricsAddr {
    MetricsAddr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
}

fn rpc<'a>(method: &'a str, code: &'a str) -> [(&'static str, &'a str); 2] {
    [("grpc_method", method), ("grpc_code", code)]
}

async fn place_one(client: &mut OrderCommandsClient<orders::auth::AuthedChannel>) -> (String, u64) {
    let placed = client
        .place_order(place("metrics"))
        .await
        .expect("PlaceOrder")
        .into_inner();
    (placed.order_id, placed.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_endpoints_expose_every_metric_and_the_counters_follow_the_workload() {
    let system = System::new("obs_metrics").await;
    support::create_topic(&system.kafka).await;
    let mut settings = support::command_settings(
        system.write_url.clone(),
        support::kafka_as(&system.kafka, support::KafkaUser::Relay),
    );
    settings.metrics_addr = any_port();
    let command = TestCommand::start_with_settings(settings).await;
    let mut settings =
        support::query_settings(&system.read_url, system.kafka.clone(), &system.group);
    settings.metrics_addr = any_port();
    settings.stall_after_ms = 2_000;
    let query = TestQuery::start(settings).await;
    let command_port = command.metrics_port.expect("order-command serves /metrics");
    let query_port = query.metrics_port.expect("order-query serves /metrics");

    // The lag gauge appears once the watchdog has looked (about a second).
    support::wait_until(SETTLED, "lag per partition on /metrics", || async {
        value(
            &scrape(query_port).await,
            "orders_projector_lag_events",
            &[("partition", "0")],
        ) == 0.0
            && names(&scrape(query_port).await).contains("orders_projector_lag_events")
    })
    .await;
    let (command_before, query_before) = (scrape(command_port).await, scrape(query_port).await);
    for (scraped, expected, server) in [
        (&command_before, COMMAND_METRICS, "order-command"),
        (&query_before, QUERY_METRICS, "order-query"),
    ] {
        let present = names(scraped);
        let missing: Vec<_> = expected.iter().filter(|n| !present.contains(**n)).collect();
        assert!(missing.is_empty(), "{server} lacks {missing:?}");
    }
    assert_eq!(value(&command_before, "orders_relay_leader", &[]), 1.0);
    let build = command_before
        .samples
        .iter()
        .find(|s| s.metric == "orders_build_info")
        .unwrap();
    assert_eq!(build.labels.get("service"), Some("order-command"));
    assert!(
        build
            .labels
            .get("git_sha")
            .is_some_and(|sha| !sha.is_empty())
    );
    assert!(value(&command_before, "process_resident_memory_bytes", &[]) > 0.0);

    // N PlaceOrders: N handled OK, N started, the relay publishes them.
    let mut client = command.client.clone();
    let mut placed = vec![];
    for _ in 0..PLACED {
        placed.push(place_one(&mut client).await);
    }
    let stale = client
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: placed[0].0.clone(),
            expected_version: Some(placed[0].1 + 7),
            ..Default::default()
        })
        .await
        .expect_err("a stale expected_version is refused");
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let command_after = scrape(command_port).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&command_after, name, labels) - value(&command_before, name, labels)
    };
    assert_eq!(
        delta("grpc_server_handled_total", &rpc("PlaceOrder", "OK")),
        PLACED as f64
    );
    assert_eq!(
        delta(
            "grpc_server_started_total",
            &[("grpc_method", "PlaceOrder")]
        ),
        PLACED as f64
    );
    assert_eq!(
        delta("grpc_server_handled_total", &rpc("ConfirmOrder", "Aborted")),
        1.0
    );
    assert_eq!(delta("orders_writer_conflicts_total", &[]), 1.0);
    assert_eq!(
        delta(
            "grpc_server_handling_seconds",
            &[("grpc_method", "PlaceOrder")]
        ),
        PLACED as f64
    );
    assert!(delta("orders_writer_batch_size", &[]) >= 1.0);
    support::wait_until(SETTLED, "the relay published every event", || async {
        let now = scrape(command_port).await;
        value(&now, "orders_relay_published_total", &[])
            - value(&command_before, "orders_relay_published_total", &[])
            >= PLACED as f64
            && value(&now, "orders_outbox_backlog_events", &[]) == 0.0
    })
    .await;

    // The projection applies them and the lag returns to zero.
    support::wait_until(SETTLED, "projected, no lag", || async {
        let now = scrape(query_port).await;
        value(&now, "orders_projector_applied_total", &[])
            - value(&query_before, "orders_projector_applied_total", &[])
            >= PLACED as f64
            && value(&now, "orders_projector_lag_events", &[]) == 0.0
    })
    .await;
    let mut reader = query.client.clone();
    let (order_id, version) = placed.last().cloned().unwrap();
    reader
        .get_order(proto::GetOrderRequest {
            order_id,
            min_version: Some(version),
            ..Default::default()
        })
        .await
        .expect("GetOrder at the placed version");
    let absent = reader
        .get_order(proto::GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
            min_version: None,
            ..Default::default()
        })
        .await
        .expect_err("an unknown order");
    assert_eq!(absent.code(), tonic::Code::NotFound);
    let query_after = scrape(query_port).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&query_after, name, labels) - value(&query_before, name, labels)
    };
    assert_eq!(
        delta("grpc_server_handled_total", &rpc("GetOrder", "OK")),
        1.0
    );
    assert_eq!(
        delta("grpc_server_handled_total", &rpc("GetOrder", "NotFound")),
        1.0
    );
    assert_eq!(delta("orders_read_your_writes_wait_seconds", &[]), 1.0);
    assert!(
        delta("orders_read_cache_hits_total", &[]) + delta("orders_read_cache_misses_total", &[])
            >= 2.0
    );
    assert!(
        value(
            &query_after,
            "orders_projector_last_applied_timestamp_seconds",
            &[]
        ) > 0.0
    );
    assert_eq!(value(&query_after, "orders_projector_stalled", &[]), 0.0);

    // Frozen with an event waiting: a stall is counted and shown, and ends.
    let stalls = value(&query_after, "orders_projector_stalls_total", &[]);
    let freeze = query.freeze.clone().expect("the projector runs");
    freeze.set(true);
    support::wait_until(SETTLED, "the projector frozen", || async {
        freeze.is_frozen()
    })
    .await;
    place_one(&mut client).await;
    support::wait_until(SETTLED, "a stall counted on /metrics", || async {
        let now = scrape(query_port).await;
        value(&now, "orders_projector_stalls_total", &[]) == stalls + 1.0
            && value(&now, "orders_projector_stalled", &[]) == 1.0
            && value(&now, "orders_projector_lag_events", &[]) >= 1.0
    })
    .await;
    freeze.set(false);
    support::wait_until(SETTLED, "the stall over", || async {
        let now = scrape(query_port).await;
        value(&now, "orders_projector_stalled", &[]) == 0.0
            && value(&now, "orders_projector_lag_events", &[]) == 0.0
    })
    .await;

    query.stop().await;
    command.stop().await;
}
