//! Messages that cannot be applied are dead-lettered in the batch's
//! transaction, and the partition keeps moving.

use orders::{domain::OrderId, query::read_model::DEFAULT_SCHEMA};
use prost::Message as _;

use super::{OrderStream, Stack, get_at_least, placed};

/// offset, key, value, error, headers.
type DeadLetterRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_later_orders_still_project() {
    let stack = Stack::new("q_poison", 1).await;
    let mut query = stack.start().await;
    let random_key = OrderId::generate().to_string();
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
    let mut unknown = OrderStream::new();
    let mut unknown_type = unknown.next(placed("ann")).envelope;
    unknown_type.event = None;
    let mut keyless = OrderStream::new();
    let keyless = keyless.next(placed("ann"));
    let mut mismatched = OrderStream::new();
    let mismatched = mismatched.next(placed("ann"));
    let mut good = OrderStream::new();

    stack
        .produce_raw(Some(random_key.as_bytes()), &garbage, None)
        .await;
    stack
        .produce_raw(
            Some(unknown.id().as_bytes()),
            &unknown_type.encode_to_vec(),
            None,
        )
        .await;
    stack.produce_raw(None, &keyless.bytes, None).await;
    stack
        .produce_raw(Some(random_key.as_bytes()), &mismatched.bytes, None)
        .await;
    stack.produce(&[good.next(placed("bob"))]).await;

    let projected = get_at_least(&mut query.client, &good.id(), 1)
        .await
        .expect("the order after the poison is projected")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(projected.customer_id, "bob");

    let letters: Vec<DeadLetterRow> = sqlx::query_as(&format!(
        "SELECT kafka_offset, message_key, message_value, error, headers::text \
             FROM {DEFAULT_SCHEMA}.dead_letter ORDER BY kafka_offset"
    ))
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    let offsets: Vec<i64> = letters.iter().map(|l| l.0).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert!(
        letters[0].3.starts_with("undecodable value"),
        "{}",
        letters[0].3
    );
    assert_eq!(
        letters[0].2.as_deref(),
        Some(garbage.as_slice()),
        "kept verbatim"
    );
    assert_eq!(letters[0].1.as_deref(), Some(random_key.as_bytes()));
    assert_eq!(letters[1].3, "unknown event type");
    assert_eq!(letters[2].3, "message has no key");
    assert_eq!(letters[2].1, None);
    assert!(letters[3].3.contains("does not match"), "{}", letters[3].3);
    assert_eq!(query.metrics().dead_letters_total.get(), 4);
    // None of the poison reached the projection.
    assert_eq!(
        stack
            .count(&format!("SELECT count(*) FROM {DEFAULT_SCHEMA}.order_view"))
            .await,
        1
    );
    stack.wait_caught_up().await;

    query.stop().await;
}
