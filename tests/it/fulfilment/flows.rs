//! The saga's outcomes on the real stack: shipped, out of stock, declined,
//! Payments unavailable for less and for longer than the step's deadline,
//! a customer's cancel in flight, a republished confirmation, and 1,000
//! orders competing for the stock of 600.

use std::time::Duration;

use orders::{
    config::PaymentsFault,
    fulfilment::saga::{Phase, Step, Timings},
    proto::{self, payments::v1::PaymentState},
};
use tonic::Code;

use super::{FINISHED, SagaStack};
use crate::support;

const PRICE: i64 = 1_250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_order_ships_with_stock_taken_and_payment_captured() {
    let mut stack = SagaStack::start("ful_ship").await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.inventory.set_stock("sku-b", 5).await;
    stack.start_worker().await;

    let order_id = stack
        .place_and_confirm("cust-ship", &[("sku-a", 2, PRICE), ("sku-b", 1, 999)])
        .await;
    let order = stack.final_order(&order_id).await;
    assert_eq!(order.status, proto::OrderStatus::Shipped as i32);
    assert!(!order.tracking_number.is_empty(), "a tracking number");

    let saga = stack.finished_saga(&order_id).await.saga;
    assert_eq!(saga.phase, Phase::Completed);
    assert_eq!(
        saga.tracking_number.as_deref(),
        Some(order.tracking_number.as_str())
    );
    assert_eq!(stack.inventory.stock("sku-a").await, (8, 0));
    assert_eq!(stack.inventory.stock("sku-b").await, (4, 0));
    let payment = stack.payments.payment(&order_id).await.expect("a payment");
    assert_eq!(payment.state, PaymentState::Captured as i32);
    assert_eq!(payment.captured_minor, 2 * PRICE + 999);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_short_cancels_with_the_product_and_holds_and_charges_nothing() {
    let mut stack = SagaStack::start("ful_short").await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.inventory.set_stock("sku-b", 1).await;
    stack.start_worker().await;

    let order_id = stack
        .place_and_confirm("cust-short", &[("sku-a", 2, PRICE), ("sku-b", 3, PRICE)])
        .await;
    let order = stack.final_order(&order_id).await;
    assert_eq!(order.status, proto::OrderStatus::Cancelled as i32);
    assert_eq!(order.cancel_reason, "out of stock: sku-b");
    assert_eq!(stack.inventory.stock("sku-a").await, (10, 0));
    assert_eq!(stack.inventory.stock("sku-b").await, (1, 0));
    let payment = stack.payments.payment(&order_id).await;
    assert_eq!(payment.unwrap_err().code(), Code::NotFound, "no payment");
    assert_eq!(
        stack.finished_saga(&order_id).await.saga.phase,
        Phase::Cancelled
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_releases_the_stock_and_cancels() {
    let mut stack = SagaStack::start_with("ful_declined", Timings::default(), |p| {
        p.decline_above_minor = 1_000;
    })
    .await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.start_worker().await;

    let order_id = stack
        .place_and_confirm("cust-declined", &[("sku-a", 2, PRICE)])
        .await;
    let order = stack.final_order(&order_id).await;
    assert_eq!(order.status, proto::OrderStatus::Cancelled as i32);
    assert_eq!(order.cancel_reason, "payment declined");
    assert_eq!(stack.inventory.stock("sku-a").await, (10, 0), "released");
    let payment = stack
        .payments
        .payment(&order_id)
        .await
        .expect("the declined payment");
    assert_eq!(payment.state, PaymentState::Declined as i32);
    assert_eq!(payment.captured_minor, 0);
    stack.stop().await;
}

fn quick() -> Timings {
    Timings {
        step_deadline: Duration::from_secs(3),
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_unavailable_for_less_than_the_deadline_completes_and_for_longer_compensates() {
    let mut stack = SagaStack::start_with("ful_unavail", quick(), |_| {}).await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.start_worker().await;

    // Briefly: the authorization is retried until Payments answers.
    stack.payments.fault.set(PaymentsFault::Unavailable);
    let brief = stack
        .place_and_confirm("cust-brief", &[("sku-a", 1, PRICE)])
        .await;
    let id = brief.parse().unwrap();
    support::wait_until(FINISHED, "an authorization attempt refused", || async {
        stack.store.get(id).await.unwrap().is_some_and(|s| {
            s.saga
                .last_status
                .get(&Step::Authorize)
                .is_some_and(|c| c.code == "UNAVAILABLE")
        })
    })
    .await;
    stack.payments.fault.set(PaymentsFault::Off);
    assert_eq!(
        stack.final_order(&brief).await.status,
        proto::OrderStatus::Shipped as i32
    );
    let saga = stack.finished_saga(&brief).await.saga;
    assert!(
        saga.last_status[&Step::Authorize].attempt > 1,
        "retried: {saga:?}"
    );

    // Past the deadline: the saga compensates in reverse. The void cannot
    // reach Payments either, so it is retried until Payments is back; then
    // the reservation is released and the order cancelled.
    stack.payments.fault.set(PaymentsFault::Unavailable);
    let long = stack
        .place_and_confirm("cust-long", &[("sku-a", 2, PRICE)])
        .await;
    let id = long.parse().unwrap();
    support::wait_until(FINISHED, "the saga gives up and voids", || async {
        stack.store.get(id).await.unwrap().is_some_and(|s| {
            s.saga.phase == Phase::Compensating
                && s.saga.step == Step::Void
                && s.saga.last_status.contains_key(&Step::Void)
        })
    })
    .await;
    stack.payments.fault.set(PaymentsFault::Off);
    let order = stack.final_order(&long).await;
    assert_eq!(order.status, proto::OrderStatus::Cancelled as i32);
    assert_eq!(
        order.cancel_reason,
        "payments unavailable: authorize UNAVAILABLE for 3 s"
    );
    let saga = stack.finished_saga(&long).await.saga;
    assert_eq!(saga.phase, Phase::Cancelled);
    assert_eq!(stack.inventory.stock("sku-a").await, (9, 0));
    let voided = stack.payments.payment(&long).await;
    assert!(
        voided.as_ref().is_err_and(|s| s.code() == Code::NotFound)
            || voided
                .as_ref()
                .is_ok_and(|p| p.state == PaymentState::Voided as i32),
        "nothing charged: {voided:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cancel_in_flight_voids_and_releases() {
    let mut stack = SagaStack::start("ful_cancel").await;
    stack.inventory.set_stock("sku-a", 10).await;
    // Authorizations take effect, then hang: the saga waits on one.
    stack.payments.fault.set(PaymentsFault::HangAfterCommit);
    stack.start_worker().await;

    let order_id = stack
        .place_and_confirm("cust-cancel", &[("sku-a", 3, PRICE)])
        .await;
    let id = order_id.parse().unwrap();
    support::wait_until(FINISHED, "the saga waits on the authorization", || async {
        stack
            .store
            .get(id)
            .await
            .unwrap()
            .is_some_and(|s| s.saga.step == Step::Authorize)
    })
    .await;
    stack
        .commands()
        .cancel_order(proto::CancelOrderRequest {
            order_id: order_id.clone(),
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .expect("the customer cancels");
    stack.payments.fault.set(PaymentsFault::Off);

    let saga = stack.finished_saga(&order_id).await.saga;
    assert_eq!(saga.phase, Phase::Cancelled);
    assert_eq!(
        saga.cancel_reason.as_deref(),
        Some("cancelled by the customer")
    );
    assert_eq!(stack.inventory.stock("sku-a").await, (10, 0), "released");
    let payment = stack.payments.payment(&order_id).await;
    assert!(
        payment.as_ref().is_err_and(|s| s.code() == Code::NotFound)
            || payment
                .as_ref()
                .is_ok_and(|p| p.state == PaymentState::Voided as i32 && p.captured_minor == 0),
        "voided: {payment:?}"
    );
    let order = stack.final_order(&order_id).await;
    assert_eq!(
        order.cancel_reason, "changed my mind",
        "cancelled once, by the customer"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orders_for_the_stock_of_six_hundred_ship_six_hundred() {
    let mut stack = SagaStack::start("ful_many").await;
    stack.inventory.set_stock("sku-rare", 600).await;
    stack.start_worker().await;

    let mut ids = vec![];
    let placing: Vec<_> = (0..8)
        .map(|task| {
            let commands = stack.commands();
            tokio::spawn(async move {
                let mut commands = commands;
                let mut ids = vec![];
                for i in 0..125 {
                    let placed = commands
                        .place_order(proto::PlaceOrderRequest {
                            customer_id: format!("cust-{task}-{i}"),
                            currency_code: "EUR".into(),
                            lines: vec![crate::command::line("sku-rare", 1, PRICE)],
                            ..Default::default()
                        })
                        .await
                        .expect("PlaceOrder")
                        .into_inner();
                    ids.push(placed.order_id);
                }
                for id in &ids {
                    commands
                        .confirm_order(proto::ConfirmOrderRequest {
                            order_id: id.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("ConfirmOrder");
                }
                ids
            })
        })
        .collect();
    for task in placing {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1_000);

    support::wait_until(Duration::from_secs(240), "every saga finishes", || async {
        let phases = stack.phases().await;
        phases
            .iter()
            .filter(|(p, _)| p.is_finished())
            .map(|(_, n)| n)
            .sum::<i64>()
            == 1_000
    })
    .await;
    assert_eq!(
        stack.phases().await,
        [(Phase::Cancelled, 400), (Phase::Completed, 600)]
    );
    assert_eq!(stack.inventory.stock("sku-rare").await, (0, 0));
    let mut captured = 0;
    for id in &ids {
        if let Ok(p) = stack.payments.payment(id).await
            && p.state == PaymentState::Captured as i32
        {
            captured += 1;
        }
    }
    assert_eq!(captured, 600);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_confirmation_starts_no_second_saga_and_no_second_effect() {
    let mut stack = SagaStack::start("ful_dup").await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.start_worker().await;
    let order_id = stack
        .place_and_confirm("cust-dup", &[("sku-a", 2, PRICE)])
        .await;
    assert_eq!(
        stack.final_order(&order_id).await.status,
        proto::OrderStatus::Shipped as i32
    );
    stack.finished_saga(&order_id).await;
    let events = |pool| async move {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
        n
    };
    let stored = events(&stack.system.write).await;

    // Every event again, the confirmation among them.
    let end = |kafka| crate::query::high_watermarks(kafka).values().sum::<i64>();
    let published = end(&stack.system.kafka);
    orders::admin::republish(&stack.system.admin(), 1, None)
        .await
        .expect("republish");
    support::wait_until(FINISHED, "the events published again", || async {
        end(&stack.system.kafka) == published + stored
    })
    .await;
    // The worker has read past them all.
    let topic = stack.system.kafka.topic.clone();
    support::wait_until(
        FINISHED,
        "the worker reads the republished events",
        || async {
            stack
                .store
                .positions(&topic)
                .await
                .unwrap()
                .values()
                .sum::<i64>()
                == published + stored
        },
    )
    .await;

    assert_eq!(stack.phases().await, [(Phase::Completed, 1)]);
    assert_eq!(
        events(&stack.system.write).await,
        stored,
        "no second ShipOrder"
    );
    assert_eq!(stack.inventory.stock("sku-a").await, (8, 0), "one dispatch");
    let payment = stack.payments.payment(&order_id).await.unwrap();
    assert_eq!(payment.captured_minor, 2 * PRICE, "one capture");
    stack.stop().await;
}
