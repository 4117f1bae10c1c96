//! Invalid requests and unknown orders: the right code, never INTERNAL.

use orders::proto;
use tonic::Code;
use tonic_types::StatusExt;

use super::{OrderStream, Stack, get_at_least, placed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_order_id_is_invalid_argument_with_a_field_violation() {
    let stack = Stack::new("q_bad_id", 1).await;
    let mut query = stack.start().await;

    let status = query
        .client
        .get_order(proto::GetOrderRequest {
            order_id: "order-1".into(),
            min_version: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad_request.field_violations.len(), 1);
    assert_eq!(bad_request.field_violations[0].field, "order_id");

    let status = query
        .client
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "order_id"
    );

    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_is_not_found() {
    let stack = Stack::new("q_not_found", 1).await;
    let mut query = stack.start().await;
    let unknown = OrderStream::new().id();

    let status = query
        .client
        .get_order(proto::GetOrderRequest {
            order_id: unknown.clone(),
            min_version: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = query
        .client
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: unknown,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_foreign_page_tokens_are_invalid_argument() {
    let stack = Stack::new("q_tokens", 1).await;
    let mut query = stack.start().await;
    let mut orders: Vec<OrderStream> = (0..3).map(|_| OrderStream::new()).collect();
    let events: Vec<_> = orders.iter_mut().map(|o| o.next(placed("ann"))).collect();
    stack.produce(&events).await;
    get_at_least(&mut query.client, &orders[2].id(), 1)
        .await
        .unwrap();
    let first = query
        .client
        .list_orders(proto::ListOrdersRequest {
            customer_id: Some("ann".into()),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let mut tampered = token.clone().into_bytes();
    tampered[5] = if tampered[5] == b'x' { b'y' } else { b'x' };
    let cases = [
        ("not base64", "%%%not-a-token%%%".to_owned(), Some("ann")),
        (
            "tampered",
            String::from_utf8(tampered).unwrap(),
            Some("ann"),
        ),
        ("other filters", token.clone(), Some("bob")),
        ("filters dropped", token.clone(), None),
    ];
    for (case, page_token, customer) in cases {
        let status = query
            .client
            .list_orders(proto::ListOrdersRequest {
                customer_id: customer.map(str::to_owned),
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "page_token",
            "{case}"
        );
    }

    // A ListOrders token is foreign to GetOrderHistory.
    let status = query
        .client
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: orders[0].id(),
            page_size: 1,
            page_token: token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // The untouched token still works.
    let page_token = first_token_again(&mut query).await;
    let second = query
        .client
        .list_orders(proto::ListOrdersRequest {
            customer_id: Some("ann".into()),
            page_size: 1,
            page_token,
            ..Default::default()
        })
        .await;
    assert!(second.is_ok());

    query.stop().await;
}

async fn first_token_again(query: &mut super::TestQuery) -> String {
    query
        .client
        .list_orders(proto::ListOrdersRequest {
            customer_id: Some("ann".into()),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token
}
