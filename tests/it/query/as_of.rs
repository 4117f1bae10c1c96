//! `GetOrder` as of a version or an instant: for every version k of a
//! randomly built order, the answer equals the fold of its first k events
//! (the events read back with GetOrderHistory and folded here with the
//! domain's `evolve`), and the instant of event k gives the same order. The
//! error codes: NOT_FOUND before the order, OUT_OF_RANGE past its version,
//! INVALID_ARGUMENT for two read modes at once.

use std::time::{SystemTime, UNIX_EPOCH};

use orders::{
    codec,
    domain::{Order, evolve},
    proto,
};
use tonic::Code;

use crate::{
    admin::System,
    command::{line, place},
};

/// A small deterministic generator, seeded from the clock (printed on failure).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn as_of(
    order_id: &str,
    version: Option<u64>,
    time: Option<prost_types::Timestamp>,
) -> proto::GetOrderRequest {
    proto::GetOrderRequest {
        order_id: order_id.to_owned(),
        as_of_version: version,
        as_of_time: time,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_and_instant_of_a_random_order_reads_as_the_fold_of_its_first_events() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut random = Lcg(seed);
    let system = System::new("q_as_of").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();

    // Placed with two lines, then 3-8 random line changes, then confirmed and
    // shipped or cancelled.
    let placed = commands
        .place_order(place("as-of"))
        .await
        .expect("PlaceOrder")
        .into_inner();
    let order_id = placed.order_id.clone();
    let mut versions = vec![placed.version];
    let mut products = vec!["sku-1".to_owned(), "sku-2".to_owned()];
    for i in 0..3 + random.below(6) {
        let next = if random.below(3) == 0 && products.len() > 1 {
            let product = products.remove(random.below(products.len() as u64) as usize);
            commands
                .remove_order_line(proto::RemoveOrderLineRequest {
                    order_id: order_id.clone(),
                    product_id: product,
                    ..Default::default()
                })
                .await
                .expect("RemoveOrderLine")
                .into_inner()
                .version
        } else {
            let product = format!("sku-r{i}");
            products.push(product.clone());
            commands
                .add_order_line(proto::AddOrderLineRequest {
                    order_id: order_id.clone(),
                    line: Some(line(
                        &product,
                        1 + random.below(5) as u32,
                        100 + random.below(900) as i64,
                    )),
                    ..Default::default()
                })
                .await
                .expect("AddOrderLine")
                .into_inner()
                .version
        };
        versions.push(next);
    }
    let confirmed = commands
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: order_id.clone(),
            ..Default::default()
        })
        .await
        .expect("ConfirmOrder")
        .into_inner()
        .version;
    versions.push(confirmed);
    let last = if random.below(2) == 0 {
        commands
            .ship_order(proto::ShipOrderRequest {
                order_id: order_id.clone(),
                tracking_number: "1Z999".into(),
                ..Default::default()
            })
            .await
            .expect("ShipOrder")
            .into_inner()
            .version
    } else {
        commands
            .cancel_order(proto::CancelOrderRequest {
                order_id: order_id.clone(),
                reason: "changed my mind".into(),
                ..Default::default()
            })
            .await
            .expect("CancelOrder")
            .into_inner()
            .version
    };
    versions.push(last);
    let version = last;
    assert_eq!(
        versions,
        (1..=version).collect::<Vec<_>>(),
        "one version per command"
    );

    let mut reader = query.client.clone();
    reader
        .get_order(proto::GetOrderRequest {
            order_id: order_id.clone(),
            min_version: Some(version),
            ..Default::default()
        })
        .await
        .expect("the last version is projected");
    let history = reader
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: order_id.clone(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("GetOrderHistory")
        .into_inner();
    assert_eq!(history.events.len() as u64, version, "seed {seed}");

    let mut folded = Order::default();
    let mut placed_at = None;
    for (k, envelope) in history.events.iter().enumerate() {
        let (meta, event) = codec::event_from_proto(envelope).expect("a valid event");
        folded = evolve(folded, &event);
        let placed_at = *placed_at.get_or_insert(meta.occurred_at);
        let k = k as u64 + 1;
        let occurred = prost_types::Timestamp {
            seconds: meta.occurred_at.timestamp(),
            nanos: meta.occurred_at.timestamp_subsec_nanos() as i32,
        };
        for request in [
            as_of(&order_id, Some(k), None),
            as_of(&order_id, None, Some(occurred)),
        ] {
            let answer = reader
                .get_order(request)
                .await
                .expect("GetOrder as of")
                .into_inner();
            let order = answer.order.expect("an order");
            let context = format!("seed {seed}, version {k}");
            assert_eq!(order.version, k, "{context}");
            assert_eq!(
                order.status,
                codec::status_to_proto(folded.status) as i32,
                "{context}"
            );
            assert_eq!(order.total_minor, folded.total_minor(), "{context}");
            let lines: Vec<(String, u32, i64)> = order
                .lines
                .iter()
                .map(|l| (l.product_id.clone(), l.quantity, l.unit_price_minor))
                .collect();
            let expected: Vec<(String, u32, i64)> = folded
                .lines
                .iter()
                .map(|l| {
                    (
                        l.product_id.as_str().to_owned(),
                        l.quantity.get(),
                        l.unit_price.get(),
                    )
                })
                .collect();
            assert_eq!(lines, expected, "{context}");
            assert_eq!(order.updated_at, Some(occurred), "{context}");
            let placed = order.placed_at.unwrap();
            assert_eq!(placed.seconds, placed_at.timestamp(), "{context}");
            assert_eq!(
                answer.freshness.unwrap().projected_version,
                version,
                "the freshness is the projection's now ({context})"
            );
        }
    }

    // The error codes.
    let code = |request| {
        let mut reader = reader.clone();
        async move { reader.get_order(request).await.expect_err("refused").code() }
    };
    assert_eq!(
        code(as_of(&order_id, Some(version + 1), None)).await,
        Code::OutOfRange
    );
    assert_eq!(code(as_of(&order_id, Some(0), None)).await, Code::NotFound);
    let before = prost_types::Timestamp {
        seconds: placed_at.unwrap().timestamp() - 1,
        nanos: 0,
    };
    assert_eq!(
        code(as_of(&order_id, None, Some(before))).await,
        Code::NotFound
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(code(as_of(&unknown, Some(1), None)).await, Code::NotFound);
    let both = as_of(&order_id, Some(1), Some(before));
    assert_eq!(code(both).await, Code::InvalidArgument);
    let mut with_min = as_of(&order_id, Some(1), None);
    with_min.min_version = Some(1);
    assert_eq!(code(with_min).await, Code::InvalidArgument);

    query.stop().await;
    command.stop().await;
}
