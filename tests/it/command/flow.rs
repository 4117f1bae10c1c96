//! The happy path and idempotency.

use std::time::Duration;

use orders::{codec, proto};
use rdkafka::{Message, message::Headers};

use super::{TestCommand, line, place};
use crate::support;

#[tokio::test]
async fn places_adds_confirms_and_ships_then_publishes_four_events_in_order() {
    let mut cmd = TestCommand::start().await;

    let placed = cmd
        .client
        .place_order(place("alice"))
        .await
        .unwrap()
        .into_inner();
    let order_id = placed.order_id.clone();
    let added = cmd
        .client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: order_id.clone(),
            expected_version: Some(1),
            line: Some(line("sku-3", 4, 100)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let confirmed = cmd
        .client
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: order_id.clone(),
            expected_version: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shipped = cmd
        .client
        .ship_order(proto::ShipOrderRequest {
            order_id: order_id.clone(),
            tracking_number: "TRACK-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        [
            placed.version,
            added.version,
            confirmed.version,
            shipped.version
        ],
        [1, 2, 3, 4]
    );
    assert_eq!(shipped.order_id, order_id);
    let reader = support::topic_reader(&cmd.kafka.topic);
    let messages = support::read_messages(&reader, 4, Duration::from_secs(30)).await;
    let mut types = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(support::key_of(message), order_id);
        let (meta, _) =
            codec::decode_event(message.payload().unwrap()).expect("decodes as OrderEvent");
        assert_eq!(meta.version, i as u64 + 1);
        assert_eq!(meta.order_id.to_string(), order_id);
        let headers = message.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(header("ce_specversion"), "1.0");
        assert_eq!(header("ce_id"), meta.event_id.to_string());
        assert_eq!(header("ce_source"), "/orders/order-command");
        assert_eq!(header("content-type"), "application/protobuf");
        assert!(header("ce_time").ends_with('Z'));
        types.push(header("ce_type"));
    }
    assert_eq!(
        types,
        [
            "orders.v1.OrderPlaced",
            "orders.v1.OrderLineAdded",
            "orders.v1.OrderConfirmed",
            "orders.v1.OrderShipped"
        ]
    );
    cmd.stop().await;
}

#[tokio::test]
async fn request_metadata_is_carried_into_events_and_headers() {
    let mut cmd = TestCommand::start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(proto::PlaceOrderRequest {
        request_id: "req-meta-1".into(),
        ..place("carol")
    });
    request
        .metadata_mut()
        .insert("x-request-id", "corr-42".parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());

    cmd.client.place_order(request).await.unwrap();

    let reader = support::topic_reader(&cmd.kafka.topic);
    let messages = support::read_messages(&reader, 1, Duration::from_secs(30)).await;
    let (meta, _) = codec::decode_event(messages[0].payload().unwrap()).unwrap();
    assert_eq!(meta.correlation_id, "corr-42");
    assert_eq!(meta.causation_id, "req-meta-1");
    let tp = messages[0]
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "traceparent")
        .and_then(|h| h.value)
        .map(|v| v.to_vec());
    assert_eq!(tp.as_deref(), Some(traceparent.as_bytes()));
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT request_id, traceparent FROM events")
            .fetch_one(&cmd.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (Some("req-meta-1".into()), Some(traceparent.into()))
    );
    cmd.stop().await;
}

#[tokio::test]
async fn a_retried_request_id_returns_the_first_answer_even_after_a_restart() {
    let mut cmd = TestCommand::start().await;
    let request = proto::PlaceOrderRequest {
        request_id: "req-idem-1".into(),
        ..place("bob")
    };
    let first = cmd
        .client
        .place_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    let confirm = proto::ConfirmOrderRequest {
        request_id: "req-idem-2".into(),
        order_id: first.order_id.clone(),
        expected_version: Some(1),
    };
    let confirmed = cmd
        .client
        .confirm_order(confirm.clone())
        .await
        .unwrap()
        .into_inner();
    let (database_url, kafka) = (cmd.database_url.clone(), cmd.kafka.clone());
    cmd.stop().await;

    let mut cmd = TestCommand::start_with(database_url, kafka, true).await;
    let events_before = cmd.event_count().await;
    let again = cmd
        .client
        .place_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    let confirmed_again = cmd
        .client
        .confirm_order(confirm)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(again, first, "a generated order id is remembered too");
    assert_eq!(confirmed_again, confirmed);
    assert_eq!(
        cmd.event_count().await,
        events_before,
        "a retry appends nothing"
    );

    let reused = cmd
        .client
        .place_order(proto::PlaceOrderRequest {
            customer_id: "someone-else".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);
    assert_eq!(cmd.event_count().await, events_before);
    cmd.stop().await;
}

#[tokio::test]
async fn the_event_store_refuses_updates_and_deletes() {
    let mut cmd = TestCommand::start().await;
    cmd.client.place_order(place("dave")).await.unwrap();

    let update = sqlx::query("UPDATE events SET version = 9")
        .execute(&cmd.pool)
        .await;
    let delete = sqlx::query("DELETE FROM events").execute(&cmd.pool).await;

    assert!(update.unwrap_err().to_string().contains("append-only"));
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(cmd.event_count().await, 1);
    cmd.stop().await;
}

#[tokio::test]
async fn a_command_whose_deadline_expired_is_applied_once_or_not_at_all_and_a_retry_settles_it() {
    let mut cmd = TestCommand::start().await;
    let place = proto::PlaceOrderRequest {
        request_id: "deadline-1".into(),
        order_id: uuid::Uuid::new_v4().to_string(),
        lines: (0..100)
            .map(|i| line(&format!("sku-{i}"), 1, 100))
            .collect(),
        ..place("hana")
    };
    let mut hurried = tonic::Request::new(place.clone());
    hurried.set_timeout(std::time::Duration::from_millis(2));

    let first = cmd.client.place_order(hurried).await;
    let before_retry = cmd.event_count().await;
    let retried = cmd
        .client
        .place_order(place.clone())
        .await
        .unwrap()
        .into_inner();

    assert!(
        first.is_ok()
            || matches!(&first, Err(s) if matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)),
        "{first:?}"
    );
    assert!(before_retry <= 1, "never more than the one event");
    assert_eq!(retried.version, 1);
    assert_eq!(retried.order_id, place.order_id);
    assert_eq!(cmd.event_count().await, 1, "applied exactly once");
    cmd.stop().await;
}
