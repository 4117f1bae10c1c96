//! `fulfilment.v1.FulfilmentAdmin` on the real `order-fulfilment` server: a
//! saga stuck on an unavailable Payments is listed with its step, attempts
//! and last status; retried once Payments is back, it completes.

use std::time::Duration;

use orders::{
    auth::{self, AuthedChannel, BearerToken},
    config::PaymentsFault,
    fulfilment::{app::Application, saga::Timings},
    proto::{
        self,
        fulfilment::v1::{self as pb, fulfilment_admin_client::FulfilmentAdminClient},
    },
};
use tonic::{Code, transport::Channel};

use super::{FINISHED, SagaStack};
use crate::support;

async fn admin(port: u16) -> FulfilmentAdminClient<AuthedChannel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = BearerToken::new(&support::token(
        &[auth::SCOPE_FULFILMENT_READ, auth::SCOPE_FULFILMENT_ADMIN],
        None,
    ))
    .unwrap();
    FulfilmentAdminClient::with_interceptor(channel, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_stuck_on_payments_is_listed_and_a_retry_completes_it() {
    // A deadline far away: the saga keeps retrying, stuck.
    let timings = Timings {
        step_deadline: Duration::from_secs(600),
        ..Timings::default()
    };
    let stack = SagaStack::start_with("ful_admin", timings, |_| {}).await;
    stack.inventory.set_stock("sku-a", 10).await;
    stack.payments.fault.set(PaymentsFault::Unavailable);
    let app = Application::build(stack.settings())
        .await
        .expect("build order-fulfilment");
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let mut admin = admin(port).await;

    let order_id = stack
        .place_and_confirm("cust-stuck", &[("sku-a", 1, 500)])
        .await;
    let stuck_on_payments = || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_sagas(pb::ListSagasRequest {
                    phase: pb::SagaPhase::Forward as i32,
                    min_attempts: 3,
                    ..Default::default()
                })
                .await
                .expect("ListSagas")
                .into_inner()
                .sagas
        }
    };
    support::wait_until(FINISHED, "the saga listed with 3 attempts", || async {
        !stuck_on_payments().await.is_empty()
    })
    .await;
    let listed = stuck_on_payments().await;
    let stuck = &listed[0];
    assert_eq!(stuck.order_id, order_id);
    assert_eq!(stuck.current_step, "authorize");
    assert_eq!(stuck.remaining_steps, ["dispatch", "ship", "capture"]);
    assert!(stuck.attempts >= 3);
    assert!(stuck.gives_up_at.is_some());
    let authorize = stuck.calls.iter().find(|c| c.step == "authorize").unwrap();
    assert_eq!(authorize.code, "UNAVAILABLE");
    let reserve = stuck.calls.iter().find(|c| c.step == "reserve").unwrap();
    assert_eq!(reserve.code, "OK");
    // Not finished, no change for an hour: nothing that stuck yet.
    let hour = admin
        .list_sagas(pb::ListSagasRequest {
            stuck_for: Some(prost_types::Duration {
                seconds: 3_600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hour.sagas.is_empty());

    // The same through orderctl.
    let orderctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderctl"));
        command
            .args(args)
            .envs(stack.system.env())
            .env("ORDERS_FULFILMENT_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "ORDERS_TOKEN",
                support::token(
                    &[auth::SCOPE_FULFILMENT_READ, auth::SCOPE_FULFILMENT_ADMIN],
                    None,
                ),
            );
        async move {
            let output = command.output().await.expect("run orderctl");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let shown: serde_json::Value =
        serde_json::from_str(&orderctl(&["saga", "show", &order_id, "--json"]).await).unwrap();
    assert_eq!(shown["current_step"], "authorize");
    assert_eq!(shown["phase"], "forward");
    let listed = orderctl(&["saga", "list", "--min-attempts", "3"]).await;
    assert!(listed.contains(&order_id), "{listed}");

    stack.payments.fault.set(PaymentsFault::Off);
    let retried = admin
        .retry_saga(pb::RetrySagaRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect("RetrySaga")
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(retried.current_step, "authorize");
    assert!(retried.in_flight);
    assert_eq!(
        stack.final_order(&order_id).await.status,
        proto::OrderStatus::Shipped as i32
    );
    stack.finished_saga(&order_id).await;
    let done = admin
        .get_saga(pb::GetSagaRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(done.phase, pb::SagaPhase::Completed as i32);
    assert!(!done.tracking_number.is_empty());

    // A shipped order's saga cannot be cancelled, nor a finished one retried.
    for refused in [
        admin
            .cancel_saga(pb::CancelSagaRequest {
                order_id: order_id.clone(),
            })
            .await
            .unwrap_err(),
        admin
            .retry_saga(pb::RetrySagaRequest {
                order_id: order_id.clone(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let unknown = admin
        .get_saga(pb::GetSagaRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let _ = stop.send(());
    server.await.unwrap().expect("order-fulfilment ran");
    stack.stop().await;
}
