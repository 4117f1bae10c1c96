//! `ListOrders`: newest first, filtered, keyset-paginated; paging while new
//! orders arrive neither misses nor repeats an order.

use std::collections::{HashMap, HashSet};

use orders::{domain::Event, proto};

use super::{OrderStream, Stack, TestQuery, get_at_least, placed};

const CUSTOMERS: [&str; 3] = ["ann", "bob", "cho"];

/// Every page of a listing, following `next_page_token`; returns pages' orders.
async fn all_pages(
    query: &mut TestQuery,
    customer: Option<&str>,
    status: proto::OrderStatus,
    page_size: u32,
    mut between_pages: impl AsyncFnMut(usize),
) -> Vec<Vec<proto::Order>> {
    let mut pages = vec![];
    let mut page_token = String::new();
    for page_no in 0..100 {
        let response = query
            .client
            .list_orders(proto::ListOrdersRequest {
                customer_id: customer.map(str::to_owned),
                status: status as i32,
                page_size,
                page_token,
            })
            .await
            .expect("list page");
        assert_eq!(response.metadata().get("x-projected-version").unwrap(), "0");
        let page = response.into_inner();
        assert_eq!(page.freshness.unwrap().projected_version, 0);
        pages.push(page.orders);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return pages;
        }
        between_pages(page_no).await;
    }
    panic!("more than 100 pages");
}

fn ids(orders: &[proto::Order]) -> Vec<String> {
    orders.iter().map(|o| o.order_id.clone()).collect()
}

fn assert_newest_first(orders: &[proto::Order]) {
    for pair in orders.windows(2) {
        let key = |o: &proto::Order| {
            let at = o.placed_at.unwrap();
            (at.seconds, at.nanos, o.order_id.clone())
        };
        assert!(key(&pair[0]) > key(&pair[1]), "not newest first: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_filters_and_never_misses_or_repeats_while_orders_arrive() {
    let stack = Stack::new("q_list", 3).await;
    let mut query = stack.start().await;

    // 120 orders for 3 customers; every third one confirmed.
    let mut streams: Vec<OrderStream> = vec![];
    let mut events = vec![];
    for i in 0..120 {
        let mut order = OrderStream::new();
        events.push(order.next(placed(CUSTOMERS[i % 3])));
        if i % 3 == 0 {
            events.push(order.next(Event::OrderConfirmed));
        }
        streams.push(order);
    }
    stack.produce(&events).await;
    stack.wait_caught_up().await;
    let originals: HashSet<String> = streams.iter().map(OrderStream::id).collect();

    // Page through everything by 50 while 10 newer orders arrive between pages.
    let mut arrived: Vec<OrderStream> = vec![];
    let mut side_client = query.client.clone();
    let pages = all_pages(
        &mut query,
        None,
        proto::OrderStatus::Unspecified,
        50,
        async |_| {
            let mut batch: Vec<OrderStream> = (0..10).map(|_| OrderStream::new()).collect();
            let events: Vec<_> = batch
                .iter_mut()
                .enumerate()
                .map(|(i, o)| o.next(placed(CUSTOMERS[i % 3])))
                .collect();
            stack.produce(&events).await;
            get_at_least(&mut side_client, &batch[9].id(), 1)
                .await
                .unwrap();
            arrived.extend(batch);
        },
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![50, 50, 20]
    );
    let listed: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    let unique: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "an order was repeated");
    assert_eq!(unique, originals, "an order was missed");
    assert_newest_first(&pages.concat());
    assert_eq!(arrived.len(), 20, "orders arrived while paging");

    // Filtered by customer, by status, and by both, in pages of 15.
    stack.wait_caught_up().await;
    let all: Vec<&OrderStream> = streams.iter().chain(&arrived).collect();
    let customer_of: HashMap<String, String> = all
        .iter()
        .map(|o| (o.id(), o.folded().customer_id.unwrap().as_str().to_owned()))
        .collect();
    let status_of: HashMap<String, proto::OrderStatus> = all
        .iter()
        .map(|o| (o.id(), orders::codec::status_to_proto(o.folded().status)))
        .collect();
    for (customer, status) in [
        (Some("bob"), proto::OrderStatus::Unspecified),
        (None, proto::OrderStatus::Confirmed),
        (Some("ann"), proto::OrderStatus::Confirmed),
        (Some("cho"), proto::OrderStatus::Placed),
    ] {
        let pages = all_pages(&mut query, customer, status, 15, async |_| {}).await;
        let listed: Vec<proto::Order> = pages.concat();
        let expected: HashSet<String> = all
            .iter()
            .map(|o| o.id())
            .filter(|id| customer.is_none_or(|c| customer_of[id] == c))
            .filter(|id| status == proto::OrderStatus::Unspecified || status_of[id] == status)
            .collect();
        let got: Vec<String> = ids(&listed);
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            expected,
            "{customer:?} {status:?}"
        );
        assert_eq!(
            got.len(),
            expected.len(),
            "no repeats for {customer:?} {status:?}"
        );
        assert!(
            pages[..pages.len() - 1].iter().all(|p| p.len() == 15),
            "full pages but the last"
        );
        assert_newest_first(&listed);
        for order in &listed {
            if let Some(c) = customer {
                assert_eq!(order.customer_id, c);
            }
            if status != proto::OrderStatus::Unspecified {
                assert_eq!(order.status(), status);
            }
        }
    }

    // A page size above the maximum is clamped to 500.
    let clamped = query
        .client
        .list_orders(proto::ListOrdersRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.orders.len(), 140);
    assert!(clamped.next_page_token.is_empty());

    query.stop().await;
}
