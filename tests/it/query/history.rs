//! `GetOrderHistory` returns the events as produced, oldest first, paged.

use orders::{domain::Event, proto};

use super::{OrderStream, Stack, get_at_least, line_added, placed, shipped};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_returns_the_produced_events_in_order_across_pages() {
    let stack = Stack::new("q_history", 3).await;
    let mut query = stack.start().await;
    let mut order = OrderStream::new();
    let mut produced = vec![order.next(placed("ann"))];
    for i in 0..5 {
        produced.push(order.next(line_added(&format!("sku-extra-{i}"), i + 1, 99)));
    }
    produced.push(order.next(Event::OrderConfirmed));
    produced.push(order.next(shipped("1Z999")));
    stack.produce(&produced).await;
    get_at_least(&mut query.client, &order.id(), 8)
        .await
        .unwrap();
    let expected: Vec<proto::OrderEvent> = produced.iter().map(|p| p.envelope.clone()).collect();

    // One page with the default size.
    let whole = query
        .client
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: order.id(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(whole.metadata().get("x-projected-version").unwrap(), "8");
    let whole = whole.into_inner();
    assert_eq!(whole.events, expected);
    assert!(whole.next_page_token.is_empty());
    assert_eq!(whole.freshness.unwrap().projected_version, 8);

    // Pages of 3: 3 + 3 + 2.
    let mut paged = vec![];
    let mut sizes = vec![];
    let mut page_token = String::new();
    for _ in 0..10 {
        let page = query
            .client
            .get_order_history(proto::GetOrderHistoryRequest {
                order_id: order.id(),
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.events.len());
        paged.extend(page.events);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, vec![3, 3, 2]);
    assert_eq!(paged, expected);

    query.stop().await;
}
