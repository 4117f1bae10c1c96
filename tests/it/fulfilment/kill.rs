//! `order-fulfilment` killed at every step boundary, then restarted: the
//! order ends as it would without the kills, each effect applied once.

use std::time::Duration;

use orders::{
    fulfilment::saga::Phase,
    proto::{self, inventory::v1::ReservationState, payments::v1::PaymentState},
};

use super::SagaStack;

/// Where the process kills itself, in the order the saga passes them.
const POINTS: [&str; 10] = [
    "before-call:reserve",
    "after-call:reserve",
    "before-call:authorize",
    "after-call:authorize",
    "before-call:dispatch",
    "after-call:dispatch",
    "before-call:ship",
    "after-call:ship",
    "before-call:capture",
    "after-call:capture",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_boundary_each_effect_is_applied_once() {
    let stack = SagaStack::start("ful_kill").await;
    stack.inventory.set_stock("sku-k", 10).await;
    let order_id = stack
        .place_and_confirm("cust-kill", &[("sku-k", 3, 1_000)])
        .await;

    for point in POINTS {
        let mut process = stack.spawn(Some(point));
        let status = tokio::time::timeout(Duration::from_secs(60), process.wait())
            .await
            .unwrap_or_else(|_| panic!("order-fulfilment did not reach {point}"))
            .expect("wait for order-fulfilment");
        assert!(!status.success(), "killed at {point}: {status:?}");
    }
    let mut last = stack.spawn(None);
    let order = stack.final_order(&order_id).await;
    assert_eq!(order.status, proto::OrderStatus::Shipped as i32);
    let saga = stack.finished_saga(&order_id).await.saga;
    assert_eq!(saga.phase, Phase::Completed);

    // Each effect once: one dispatch, one capture, one ShipOrder.
    assert_eq!(stack.inventory.stock("sku-k").await, (7, 0));
    let reservation = stack.inventory.reservation(&order_id).await.unwrap();
    assert_eq!(reservation.state, ReservationState::Dispatched as i32);
    assert_eq!(reservation.tracking_number, order.tracking_number);
    let payment = stack.payments.payment(&order_id).await.unwrap();
    assert_eq!(payment.state, PaymentState::Captured as i32);
    assert_eq!(payment.captured_minor, 3_000);
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE order_id = $1")
        .bind(uuid::Uuid::parse_str(&order_id).unwrap())
        .fetch_one(&stack.system.write)
        .await
        .unwrap();
    assert_eq!(events, 3, "placed, confirmed, shipped once");
    last.kill().await.unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_leader_lock_connection_dies_stops() {
    let stack = SagaStack::start("ful_lock").await;
    let app = orders::fulfilment::app::Application::build(stack.settings())
        .await
        .expect("build order-fulfilment");
    let running = tokio::spawn(app.run_until_stopped(std::future::pending()));
    let pool = stack.store.pool().clone();
    let holder = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    crate::support::wait_until(super::FINISHED, "the leader lock taken", || async {
        holder().await.is_some()
    })
    .await;
    let pid = holder().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("order-fulfilment stops once its lock's connection is gone")
        .unwrap();
    let error = ended.expect_err("it stops with an error");
    assert!(error.to_string().contains("leader lock"), "{error}");
    stack.stop().await;
}
