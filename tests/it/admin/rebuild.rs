//! Rebuilds: from the topic under load with readers switching mid-stream,
//! from the event store after the topic was lost, one at a time, resumed.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use orders::{
    admin::{AdminError, RebuildOptions, rebuild::REBUILD_LOCK},
    config::KafkaSettings,
    kafka, proto,
    query::{
        Generations, Projector, ReadModel,
        generation::{GenerationSource, try_session_lock},
        read_model::DEFAULT_SCHEMA,
    },
};
use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};
use sqlx::PgPool;

use super::{CONVERGED, StopFlag, System, lifecycle, place_orders};
use crate::support;

async fn positions(pool: &PgPool, schema: &str) -> HashMap<i32, i64> {
    sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT kafka_partition, next_offset FROM {schema}.consumer_position"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_switches_every_reader_with_no_failed_read() {
    let system = System::new("a_rebuild").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let started = Instant::now();
    let acked = place_orders(&command.client, 2_000, 16, "rebuild").await;
    let placing = started.elapsed();
    let before = system.verify_quiescent().await;
    assert!(before.is_clean(), "{:?}", before.differences);
    let mut known: Vec<String> = acked.iter().map(|(order, _)| order.clone()).collect();
    known.dedup();

    // Load while rebuilding: one task keeps placing orders, another keeps reading.
    let stop = StopFlag::default();
    let placed_during = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (mut client, stop, placed) =
            (command.client.clone(), stop.clone(), placed_during.clone());
        async move {
            let mut acked = vec![];
            for i in 0..20_000 {
                if stop.stopped() {
                    break;
                }
                lifecycle(&mut client, "during", i, &mut acked)
                    .await
                    .expect("commands are accepted during the rebuild");
                placed.fetch_add(1, Ordering::SeqCst);
            }
            acked
        }
    });
    let reads = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let (mut client, stop, known, reads) = (
            query.client.clone(),
            stop.clone(),
            known.clone(),
            reads.clone(),
        );
        async move {
            let mut failures = vec![];
            for i in 0..200_000 {
                if stop.stopped() {
                    break;
                }
                let order_id = known[(i * 7919) % known.len()].clone();
                match client
                    .get_order(proto::GetOrderRequest {
                        order_id: order_id.clone(),
                        min_version: None,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(found) => assert_eq!(found.into_inner().order.unwrap().order_id, order_id),
                    Err(status) => failures.push(format!("GetOrder {order_id}: {status:?}")),
                }
                match client
                    .list_orders(proto::ListOrdersRequest {
                        page_size: 20,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(page) => assert_eq!(page.into_inner().orders.len(), 20),
                    Err(status) => failures.push(format!("ListOrders: {status:?}")),
                }
                reads.fetch_add(2, Ordering::SeqCst);
                // Paces the reads so the two cores are not all theirs.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }
    });

    let rebuilding = Instant::now();
    let reads_at_start = reads.load(Ordering::SeqCst);
    let report = orders::admin::rebuild(&system.admin(), RebuildOptions::default())
        .await
        .expect("rebuild");
    let rebuild_took = rebuilding.elapsed();
    let reads_at_switch = reads.load(Ordering::SeqCst);
    let retired_positions = positions(&system.read, DEFAULT_SCHEMA).await;
    // Keep the load going on the new generation for a while.
    let switched_at = placed_during.load(Ordering::SeqCst);
    support::wait_until(CONVERGED, "orders placed after the switch", || async {
        placed_during.load(Ordering::SeqCst) >= switched_at + 50
    })
    .await;
    stop.stop();
    let during = writer.await.unwrap();
    let failures = reader.await.unwrap();
    let reads = reads.load(Ordering::SeqCst);

    assert!(
        failures.is_empty(),
        "{} failed reads: {failures:?}",
        failures.len()
    );
    assert!(
        reads_at_switch > reads_at_start && reads > reads_at_switch,
        "reads during ({reads_at_start}..{reads_at_switch}) and after the rebuild ({reads})"
    );
    assert_eq!((report.generation, report.previous_generation), (2, 1));
    assert!(!during.is_empty());
    let verified = system.verify_quiescent().await;
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!(verified.generation, 2);
    assert_eq!(
        (verified.orders, verified.events),
        system.store_counts().await
    );
    assert!(verified.lagging.is_empty());
    // Nothing was written to the retired generation after the switch.
    assert_eq!(
        positions(&system.read, DEFAULT_SCHEMA).await,
        retired_positions
    );
    let states: Vec<(i32, String)> =
        sqlx::query_as("SELECT generation, state FROM projection_generation ORDER BY generation")
            .fetch_all(&system.read)
            .await
            .unwrap();
    assert_eq!(states, vec![(1, "retired".into()), (2, "live".into())]);
    eprintln!(
        "rebuild under load: placed 2000 orders ({} commands) in {placing:?}; rebuild of {} events \
         took {rebuild_took:?} ({:.0} events/s while building); {} commands acknowledged and {} reads \
         during it, {reads} reads in all, none failed",
        acked.len(),
        report.events(),
        report.events_per_second(),
        during.len(),
        reads_at_switch - reads_at_start,
    );
    query.stop().await;
    command.stop().await;
}

/// Deletes the topic and creates it again, empty. No service deletes topics:
/// the broker's super user does it here.
async fn recreate_topic(settings: &KafkaSettings) {
    let admin: AdminClient<DefaultClientContext> =
        support::client_config(support::KafkaUser::Superuser)
            .create()
            .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .delete_topics(&[&settings.topic], &options)
        .await
        .unwrap()
    {
        result.expect("topic deleted");
    }
    let probe: Arc<BaseConsumer> = Arc::new(
        support::client_config(support::KafkaUser::Admin)
            .create()
            .unwrap(),
    );
    let partitions = |probe: Arc<BaseConsumer>, topic: String| async move {
        tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                })
                .unwrap_or(0)
        })
        .await
        .unwrap()
    };
    support::wait_until(CONVERGED, "the topic to be gone", || {
        let (probe, topic) = (probe.clone(), settings.topic.clone());
        async move { partitions(probe, topic).await == 0 }
    })
    .await;
    support::wait_until(CONVERGED, "the topic to exist again", || {
        let (probe, settings) = (probe.clone(), settings.clone());
        async move {
            kafka::ensure_topic(&settings).await.is_ok()
                && partitions(probe, settings.topic.clone()).await
                    == settings.topic_partitions as usize
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_store_after_the_topic_was_recreated_verifies_clean() {
    let system = System::new("a_store").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    place_orders(&command.client, 200, 8, "store").await;
    assert!(system.verify_quiescent().await.is_clean());

    // The topic is lost; the live generation's positions point past its new end.
    command.stop().await;
    recreate_topic(&system.kafka).await;
    let command = system.start_command().await;
    place_orders(&command.client, 20, 2, "after-loss").await;

    let rebuilt = system.orderctl(&["rebuild", "--from-store", "--drop-old"]);
    let text = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    assert!(
        text.contains("generation 2 (read_model_g2) is live"),
        "{text}"
    );
    assert!(text.contains("events/s"), "{text}");
    assert!(text.contains("dropped read_model"), "{text}");

    // Orders after the switch are consumed from the offsets captured before the store was read.
    place_orders(&command.client, 20, 2, "after-switch").await;
    let verified = system.orderctl(&["verify", "--wait-caught-up", "60"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{verified:?}");
    let (orders, events) = system.store_counts().await;
    assert!(
        text.contains(&format!(
            "checked {orders} orders and {events} events against generation 2"
        )),
        "{text}"
    );
    let old_schema: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(DEFAULT_SCHEMA)
    .fetch_one(&system.read)
    .await
    .unwrap();
    assert_eq!(old_schema, 0, "the retired generation was dropped");
    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rebuild_is_refused_and_an_interrupted_one_resumes() {
    let system = System::new("a_resume").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    place_orders(&command.client, 40, 4, "resume").await;
    assert!(system.verify_quiescent().await.is_clean());

    // Another rebuild holds the lock.
    let held = try_session_lock(&system.read_url, REBUILD_LOCK)
        .await
        .unwrap()
        .expect("lock is free");
    let refused = orders::admin::rebuild(&system.admin(), RebuildOptions::default()).await;
    assert!(
        matches!(refused, Err(AdminError::RebuildRunning)),
        "{refused:?}"
    );
    drop(held);

    // A rebuild that died after projecting part of the topic into generation 2.
    let generations = Generations::new(system.read.clone());
    let building = generations
        .create_building(GenerationSource::Topic, &system.group)
        .await
        .unwrap();
    let read_model = ReadModel::new(system.read.clone(), &building.schema).unwrap();
    read_model.migrate().await.unwrap();
    let mut projector = Projector::building(
        &support::query_settings(
            &system.read_url,
            system.kafka.clone(),
            building.consumer_group.clone().unwrap(),
        ),
        read_model.clone(),
        building.generation,
    )
    .unwrap();
    let deadline = Instant::now() + CONVERGED;
    while read_model
        .all_positions(&system.kafka.topic)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "part of the topic in generation 2"
        );
        projector.step().await.unwrap();
    }
    projector.close().await;

    let report = orders::admin::rebuild(&system.admin(), RebuildOptions::default())
        .await
        .expect("rebuild resumes");
    assert!(report.resumed);
    assert_eq!(report.generation, building.generation);
    let verified = system.verify_quiescent().await;
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!(verified.generation, 2);
    query.stop().await;
    command.stop().await;
}
