//! Dead letters listed and replayed through the projector's path; events
//! republished through the outbox and skipped by the projection.

use std::time::Duration;

use orders::{
    admin::dead_letter::{self, Selection},
    kafka, proto,
    query::read_model::DEFAULT_SCHEMA,
};
use rdkafka::producer::FutureRecord;

use super::{CONVERGED, System, place_orders};
use crate::{
    query::{OrderStream, high_watermarks, placed},
    support,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_those_that_now_apply_are_replayed_and_removed() {
    let system = System::new("a_dead").await;
    let command = system.start_command().await;
    let mut query = system.start_query().await;
    place_orders(&command.client, 10, 2, "dead").await;
    let producer =
        kafka::idempotent_producer(&support::kafka_as(&system.kafka, support::KafkaUser::Relay))
            .unwrap();
    producer
        .send(
            FutureRecord::to(&system.kafka.topic)
                .key("not-an-order")
                .payload(&b"\xff\xfe not protobuf"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let settings = system.admin();
    support::wait_until(CONVERGED, "the poison message dead-lettered", || async {
        dead_letter::list(&settings).await.unwrap().len() == 1
    })
    .await;
    // A valid event parked by an older build (say it did not know the type yet).
    let mut order = OrderStream::new();
    let event = order.next(placed("ann"));
    sqlx::query(&format!(
        "INSERT INTO {DEFAULT_SCHEMA}.dead_letter \
             (topic, kafka_partition, kafka_offset, message_key, message_value, error) \
         VALUES ($1, 0, 1000000, $2, $3, 'unknown event type')"
    ))
    .bind(&system.kafka.topic)
    .bind(order.id().into_bytes())
    .bind(&event.bytes)
    .execute(&system.read)
    .await
    .unwrap();

    let listed = system.orderctl(&["dead-letter", "list", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["key"], "not-an-order");

    let replayed = dead_letter::replay(&settings, Selection::All)
        .await
        .unwrap();
    let outcomes: Vec<(&str, Option<&str>)> = replayed
        .iter()
        .map(|r| (r.outcome.as_str(), r.reason.as_deref()))
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].0, "still failing");
    assert!(
        outcomes[0].1.unwrap().starts_with("undecodable value"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], ("applied", None));
    let left = dead_letter::list(&settings).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.as_deref(), Some("not-an-order"));
    let found = query
        .client
        .get_order(proto::GetOrderRequest {
            order_id: order.id(),
            min_version: None,
            ..Default::default()
        })
        .await
        .expect("the replayed order is projected")
        .into_inner();
    assert_eq!(found.order.unwrap().customer_id, "ann");
    let again = system.orderctl(&["dead-letter", "replay", "--id", &left[0].id.to_string()]);
    assert_eq!(again.status.code(), Some(1), "still failing: {again:?}");
    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_events_reach_the_topic_again_and_change_nothing() {
    let system = System::new("a_republish").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    place_orders(&command.client, 20, 4, "republish").await;
    assert!(system.verify_quiescent().await.is_clean());
    let (orders, events) = system.store_counts().await;
    let end = |kafka| high_watermarks(kafka).values().sum::<i64>();
    let published = end(&system.kafka);
    let duplicates = query.metrics().duplicates_total.get();

    let queued = orders::admin::republish(&system.admin(), 1, None)
        .await
        .unwrap();
    assert_eq!(queued.events, events);
    support::wait_until(CONVERGED, "the events published again", || async {
        end(&system.kafka) == published + events as i64
    })
    .await;

    let verified = system.verify_quiescent().await;
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!((verified.orders, verified.events), (orders, events));
    assert!(
        query.metrics().duplicates_total.get() >= duplicates + events,
        "every republished event was skipped as a duplicate"
    );
    query.stop().await;
    command.stop().await;
}
