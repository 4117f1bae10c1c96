//! Every rejection path returns its gRPC code and leaves the store unchanged.

use orders::proto;
use tonic::Code;
use tonic_types::StatusExt;

use super::{TestCommand, line, place};

/// Places an order with one line and confirms nothing; returns its id.
async fn placed_order(cmd: &mut TestCommand) -> String {
    cmd.client
        .place_order(proto::PlaceOrderRequest {
            lines: vec![line("only", 1, 500)],
            ..place("erin")
        })
        .await
        .unwrap()
        .into_inner()
        .order_id
}

#[tokio::test]
async fn invalid_input_names_every_bad_field_and_touches_nothing() {
    let mut cmd = TestCommand::start().await;
    let status = cmd
        .client
        .place_order(proto::PlaceOrderRequest {
            order_id: "not-a-uuid".into(),
            customer_id: String::new(),
            currency_code: "eur".into(),
            lines: vec![line("ok", 0, -1)],
            request_id: "r".repeat(129),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let mut fields: Vec<_> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "currency_code",
            "customer_id",
            "lines[0].quantity",
            "lines[0].unit_price_minor",
            "order_id",
            "request_id"
        ]
    );
    assert_eq!(cmd.event_count().await, 0);
    cmd.stop().await;
}

#[tokio::test]
async fn each_refusal_has_its_code_and_leaves_the_store_unchanged() {
    let mut cmd = TestCommand::start().await;
    let order_id = placed_order(&mut cmd).await;
    let before = cmd.stored_versions().await;

    let unknown = cmd
        .client
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let ship_unconfirmed = cmd
        .client
        .ship_order(proto::ShipOrderRequest {
            order_id: order_id.clone(),
            tracking_number: "T".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let last_line = cmd
        .client
        .remove_order_line(proto::RemoveOrderLineRequest {
            order_id: order_id.clone(),
            product_id: "only".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let stale = cmd
        .client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: order_id.clone(),
            expected_version: Some(7),
            line: Some(line("more", 1, 1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let twice = cmd
        .client
        .place_order(proto::PlaceOrderRequest {
            order_id: order_id.clone(),
            ..place("erin")
        })
        .await
        .unwrap_err();
    let other_price = cmd
        .client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: order_id.clone(),
            line: Some(line("only", 1, 501)),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(ship_unconfirmed.code(), Code::FailedPrecondition);
    assert!(
        ship_unconfirmed.message().contains("placed"),
        "{}",
        ship_unconfirmed.message()
    );
    assert_eq!(last_line.code(), Code::FailedPrecondition);
    assert!(
        last_line.message().contains("last line"),
        "{}",
        last_line.message()
    );
    assert_eq!(stale.code(), Code::Aborted);
    assert!(stale.message().contains("version 1"), "{}", stale.message());
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert_eq!(other_price.code(), Code::FailedPrecondition);
    assert_eq!(cmd.stored_versions().await, before);
    cmd.stop().await;
}

#[tokio::test]
async fn a_cancelled_order_cannot_be_shipped_and_a_shipped_one_cannot_be_cancelled() {
    let mut cmd = TestCommand::start().await;
    let cancelled = placed_order(&mut cmd).await;
    cmd.client
        .cancel_order(proto::CancelOrderRequest {
            order_id: cancelled.clone(),
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let shipped = placed_order(&mut cmd).await;
    for request in [proto::ConfirmOrderRequest {
        order_id: shipped.clone(),
        ..Default::default()
    }] {
        cmd.client.confirm_order(request).await.unwrap();
    }
    cmd.client
        .ship_order(proto::ShipOrderRequest {
            order_id: shipped.clone(),
            tracking_number: "T-9".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = cmd.stored_versions().await;

    let ship_cancelled = cmd
        .client
        .ship_order(proto::ShipOrderRequest {
            order_id: cancelled,
            tracking_number: "T-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let cancel_shipped = cmd
        .client
        .cancel_order(proto::CancelOrderRequest {
            order_id: shipped,
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(ship_cancelled.code(), Code::FailedPrecondition);
    assert_eq!(cancel_shipped.code(), Code::FailedPrecondition);
    assert!(
        cancel_shipped.message().contains("shipped"),
        "{}",
        cancel_shipped.message()
    );
    assert_eq!(cmd.stored_versions().await, before);
    cmd.stop().await;
}
