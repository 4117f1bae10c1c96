//! The outbox relay: late commits, crashes, and what reaches the topic.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chrono::Utc;
use orders::{
    codec::{self, EventMeta},
    command::{
        relay::{Relay, StepOutcome},
        store::{self, NewEvent},
    },
    domain::{CurrencyCode, CustomerId, Event, OrderId, OrderLine, ProductId, Quantity, UnitPrice},
    proto,
};
use prost::Message as _;
use uuid::Uuid;

use super::{TestCommand, connect, line, place};
use crate::support;

fn placed_event(order_id: OrderId) -> NewEvent {
    let event = Event::OrderPlaced {
        customer_id: CustomerId::parse("gap").unwrap(),
        currency: CurrencyCode::parse("EUR").unwrap(),
        lines: vec![OrderLine {
            product_id: ProductId::parse("p").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price: UnitPrice::parse(1).unwrap(),
        }],
    };
    let meta = EventMeta {
        event_id: Uuid::now_v7(),
        order_id,
        version: 1,
        occurred_at: Utc::now(),
        correlation_id: "c".into(),
        causation_id: "c".into(),
        actor: None,
    };
    NewEvent {
        event_id: meta.event_id,
        order_id,
        version: 1,
        event_type: event.type_name(),
        payload: codec::event_to_proto(&meta, &event).encode_to_vec(),
        occurred_at: meta.occurred_at,
        request_id: None,
        correlation_id: "c".into(),
        causation_id: "c".into(),
        traceparent: None,
    }
}

#[tokio::test]
async fn an_event_committed_after_a_later_one_was_published_is_still_published() {
    let cmd = TestCommand::start_with(
        support::fresh_database("gap").await,
        support::fresh_kafka("gap"),
        false,
    )
    .await;
    let mut relay = Relay::new(cmd.database_url.clone(), cmd.kafka.clone(), 100).unwrap();
    let (early, late) = (OrderId::generate(), OrderId::generate());

    // The early transaction takes the lower position but commits last.
    let mut slow = cmd.pool.begin().await.unwrap();
    store::append(&mut slow, &[placed_event(early)], &[])
        .await
        .unwrap();
    let mut fast = cmd.pool.begin().await.unwrap();
    store::append(&mut fast, &[placed_event(late)], &[])
        .await
        .unwrap();
    fast.commit().await.unwrap();
    let first = relay.step().await.unwrap();
    slow.commit().await.unwrap();
    let second = relay.step().await.unwrap();
    let third = relay.step().await.unwrap();

    assert_eq!(
        first,
        StepOutcome::Published {
            delivered: 1,
            failed: 0
        }
    );
    assert_eq!(
        second,
        StepOutcome::Published {
            delivered: 1,
            failed: 0
        }
    );
    assert_eq!(third, StepOutcome::Idle);
    let positions: Vec<i64> = sqlx::query_scalar("SELECT position FROM events WHERE order_id = $1")
        .bind(early.as_uuid())
        .fetch_all(&cmd.pool)
        .await
        .unwrap();
    let late_positions: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE order_id = $1")
            .bind(late.as_uuid())
            .fetch_all(&cmd.pool)
            .await
            .unwrap();
    assert!(
        positions[0] < late_positions[0],
        "the early order really has the lower position"
    );
    let reader = support::topic_reader(&cmd.kafka.topic);
    let mut keys: Vec<String> = support::read_messages(&reader, 2, Duration::from_secs(30))
        .await
        .iter()
        .map(support::key_of)
        .collect();
    keys.sort();
    let mut expected = [late.to_string(), early.to_string()];
    expected.sort();
    assert_eq!(keys, expected);
    relay.resign().await;
    cmd.stop().await;
}

#[tokio::test]
async fn only_one_relay_leads_and_a_standby_takes_over_when_it_resigns() {
    let cmd = TestCommand::start_with(
        support::fresh_database("lead").await,
        support::fresh_kafka("lead"),
        false,
    )
    .await;
    let mut a = Relay::new(cmd.database_url.clone(), cmd.kafka.clone(), 100).unwrap();
    let mut b = Relay::new(cmd.database_url.clone(), cmd.kafka.clone(), 100).unwrap();

    assert_eq!(a.step().await.unwrap(), StepOutcome::Idle);
    assert_eq!(b.step().await.unwrap(), StepOutcome::Standby);
    a.resign().await;
    assert_eq!(b.step().await.unwrap(), StepOutcome::Idle);
    assert_eq!(a.step().await.unwrap(), StepOutcome::Standby);
    b.resign().await;
    cmd.stop().await;
}

/// A real `order-command` process.
fn spawn_binary(database_url: &str, topic: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_order-command"))
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Relay))
        .env("ORDERS_COMMAND_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDERS_WRITE_DATABASE_URL", database_url)
        .env("KAFKA_BOOTSTRAP_SERVERS", support::bootstrap())
        .env("ORDERS_TOPIC", topic)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn order-command")
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_event_and_keeps_per_order_order() {
    let database_url = support::fresh_database("kill").await;
    let kafka = support::fresh_kafka("kill");
    support::create_topic(&kafka).await;
    let pool = support::pool(&database_url).await;
    let port = support::free_port();
    let mut child = spawn_binary(&database_url, &kafka.topic, port);
    let mut client = connect(port).await;

    // 150 orders, each placed then confirmed; the process dies after 100 acknowledgements.
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut order_ids = Vec::new();
    for i in 0..150 {
        if acked.len() == 100 {
            child.kill().expect("kill -9");
            child.wait().unwrap();
            child = spawn_binary(&database_url, &kafka.topic, port);
            client = connect(port).await;
        }
        let placed = client.place_order(place(&format!("k{i}"))).await;
        let Ok(placed) = placed else { continue };
        let placed = placed.into_inner();
        acked.push((placed.order_id.clone(), placed.version));
        order_ids.push(placed.order_id.clone());
        if let Ok(confirmed) = client
            .confirm_order(proto::ConfirmOrderRequest {
                order_id: placed.order_id,
                ..Default::default()
            })
            .await
        {
            let c = confirmed.into_inner();
            acked.push((c.order_id, c.version));
        }
    }
    let _ = client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: order_ids[0].clone(),
            line: Some(line("x", 1, 1)),
            ..Default::default()
        })
        .await;
    support::wait_until(Duration::from_secs(60), "the outbox to drain", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let stored: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT order_id, version FROM events ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (order, version) in &acked {
        assert!(
            stored.contains(&(Uuid::parse_str(order).unwrap(), *version as i64)),
            "acknowledged {order} v{version} is stored"
        );
    }
    let stored: Vec<(String, u64)> = stored
        .iter()
        .map(|(o, v)| (o.to_string(), *v as u64))
        .collect();
    support::assert_topic_holds(&kafka, &stored).await;
}
