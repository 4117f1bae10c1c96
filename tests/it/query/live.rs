//! `WatchOrder` on the real stack: every version of a lifecycle once, in
//! order, ending on SHIPPED, for an order watched before it exists;
//! resuming with `from_version`; a watch on an instance that projects
//! nothing itself; a slow reader gets coalesced versions; the error codes.

use std::time::Duration;

use orders::{
    auth::AuthedChannel,
    proto::{
        self, order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
    },
};
use tonic::{Code, Streaming, transport::Channel};

use crate::{
    admin::System,
    command::{line, place},
    query::TestQuery,
    support,
};

pub(super) const WITHIN: Duration = Duration::from_secs(60);

pub(super) type Commands = OrderCommandsClient<AuthedChannel>;

pub(super) async fn watch(
    reader: &mut OrderQueriesClient<AuthedChannel>,
    order_id: &str,
    from_version: u64,
) -> Streaming<proto::WatchOrderResponse> {
    reader
        .watch_order(proto::WatchOrderRequest {
            order_id: order_id.to_owned(),
            from_version,
        })
        .await
        .expect("WatchOrder")
        .into_inner()
}

/// The next message, or `None` once the stream ended without error.
pub(super) async fn next(
    stream: &mut Streaming<proto::WatchOrderResponse>,
) -> Option<proto::WatchOrderResponse> {
    tokio::time::timeout(WITHIN, stream.message())
        .await
        .expect("a message or the end within a minute")
        .expect("no error")
}

/// Every message until the stream ends.
pub(super) async fn drain(
    stream: &mut Streaming<proto::WatchOrderResponse>,
) -> Vec<proto::WatchOrderResponse> {
    let mut all = vec![];
    while let Some(message) = next(stream).await {
        all.push(message);
    }
    all
}

pub(super) fn versions(messages: &[proto::WatchOrderResponse]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m.order.as_ref().unwrap().version)
        .collect()
}

pub(super) async fn add_line(commands: &mut Commands, order_id: &str, product: &str) -> u64 {
    commands
        .add_order_line(proto::AddOrderLineRequest {
            order_id: order_id.to_owned(),
            line: Some(line(product, 1, 100)),
            ..Default::default()
        })
        .await
        .expect("AddOrderLine")
        .into_inner()
        .version
}

pub(super) async fn confirm(commands: &mut Commands, order_id: &str) -> u64 {
    commands
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: order_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("ConfirmOrder")
        .into_inner()
        .version
}

pub(super) async fn ship(commands: &mut Commands, order_id: &str, tracking: &str) -> u64 {
    commands
        .ship_order(proto::ShipOrderRequest {
            order_id: order_id.to_owned(),
            tracking_number: tracking.into(),
            ..Default::default()
        })
        .await
        .expect("ShipOrder")
        .into_inner()
        .version
}

/// A query instance of `system` that serves reads and projects nothing.
pub(super) async fn start_reader_only(system: &System) -> TestQuery {
    let mut settings =
        support::query_settings(&system.read_url, system.kafka.clone(), &system.group);
    settings.projector = false;
    TestQuery::start(settings).await
}

pub(super) async fn place_with_id(commands: &mut Commands, order_id: &str) {
    let mut request = place("live");
    request.order_id = order_id.to_owned();
    commands.place_order(request).await.expect("PlaceOrder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_order_exists_sees_every_version_once_and_ends_on_shipped() {
    let system = System::new("q_live").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();
    let mut reader = query.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();

    let mut stream = watch(&mut reader, &order_id, 1).await;
    place_with_id(&mut commands, &order_id).await;
    for product in ["sku-a", "sku-b", "sku-c"] {
        add_line(&mut commands, &order_id, product).await;
    }
    confirm(&mut commands, &order_id).await;
    ship(&mut commands, &order_id, "1Z1").await;

    let messages = drain(&mut stream).await;
    assert_eq!(versions(&messages), (1..=6).collect::<Vec<_>>());
    assert!(messages.iter().all(|m| !m.coalesced));
    let last = messages.last().unwrap().order.as_ref().unwrap();
    assert_eq!(last.status, proto::OrderStatus::Shipped as i32);
    assert_eq!(last.lines.len(), 5);

    // A watch of a shipped order from beyond its last version can never be served.
    let mut beyond = watch(&mut reader, &order_id, 7).await;
    let error = tokio::time::timeout(WITHIN, beyond.message())
        .await
        .unwrap()
        .expect_err("past the final version");
    assert_eq!(error.code(), Code::OutOfRange);
    let invalid = reader
        .watch_order(proto::WatchOrderRequest {
            order_id: "not-a-uuid".into(),
            from_version: 0,
        })
        .await
        .expect_err("an invalid id");
    assert_eq!(invalid.code(), Code::InvalidArgument);

    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_from_version_after_a_cancel_misses_nothing() {
    let system = System::new("q_resume").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();
    let mut reader = query.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();
    place_with_id(&mut commands, &order_id).await;
    add_line(&mut commands, &order_id, "sku-a").await;

    let mut first = watch(&mut reader, &order_id, 1).await;
    let seen = [
        next(&mut first).await.unwrap(),
        next(&mut first).await.unwrap(),
    ];
    assert_eq!(versions(&seen), [1, 2]);
    drop(first);

    add_line(&mut commands, &order_id, "sku-b").await;
    add_line(&mut commands, &order_id, "sku-c").await;
    commands
        .cancel_order(proto::CancelOrderRequest {
            order_id: order_id.clone(),
            reason: "resumed".into(),
            ..Default::default()
        })
        .await
        .expect("CancelOrder");
    let mut resumed = watch(&mut reader, &order_id, 3).await;
    let rest = drain(&mut resumed).await;
    assert_eq!(versions(&rest), [3, 4, 5]);
    assert_eq!(
        rest.last().unwrap().order.as_ref().unwrap().status,
        proto::OrderStatus::Cancelled as i32
    );

    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_an_instance_that_projects_nothing_sees_what_another_projects() {
    let system = System::new("q_live_b").await;
    let command = system.start_command().await;
    let projecting = system.start_query().await;
    let watching = start_reader_only(&system).await;
    let mut commands = command.client.clone();
    let mut reader = watching.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();

    let mut stream = watch(&mut reader, &order_id, 1).await;
    place_with_id(&mut commands, &order_id).await;
    add_line(&mut commands, &order_id, "sku-a").await;
    commands
        .cancel_order(proto::CancelOrderRequest {
            order_id: order_id.clone(),
            reason: "seen elsewhere".into(),
            ..Default::default()
        })
        .await
        .expect("CancelOrder");
    assert_eq!(versions(&drain(&mut stream).await), [1, 2, 3]);

    watching.stop().await;
    projecting.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_keep_up_gets_the_latest_version_coalesced() {
    let system = System::new("q_live_slow").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();
    place_with_id(&mut commands, &order_id).await;

    // A small HTTP/2 window: the server can hand the connection little more
    // than one message before this reader reads.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", query.port))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut reader = OrderQueriesClient::with_interceptor(channel, support::bearer());
    let mut stream = watch(&mut reader, &order_id, 1).await;
    let mut last = 1;
    for i in 0..98 {
        last = add_line(&mut commands, &order_id, &format!("sku-{i:03}")).await;
    }
    let mut messages = vec![];
    while messages
        .last()
        .is_none_or(|m: &proto::WatchOrderResponse| m.order.as_ref().unwrap().version < last)
    {
        messages.push(next(&mut stream).await.expect("the stream goes on"));
    }
    let seen = versions(&messages);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert_eq!(*seen.last().unwrap(), last);
    assert!(
        seen.len() < last as usize && messages.iter().any(|m| m.coalesced),
        "versions were coalesced: {seen:?}"
    );
    // Each message either follows the previous version or says it does not.
    for (previous, message) in seen.iter().zip(&messages[1..]) {
        let version = message.order.as_ref().unwrap().version;
        assert!(version == previous + 1 || message.coalesced, "{seen:?}");
    }
    drop(stream);
    query.stop().await;
    command.stop().await;
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server under test, killed even when an assertion fails.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const WATCHES: usize = 2_000;
/// Under the servers' HTTP/2 limit of 256 concurrent streams per connection.
const CONNECTIONS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watches_on_one_server_each_see_their_update_in_bounded_memory() {
    let system = System::new("q_live_many").await;
    let command = system.start_command().await;
    let port = crate::admin::free_port();
    let log = std::env::temp_dir().join(format!("{}.log", support::unique("live_many")));
    let server = Server(system.spawn(env!("CARGO_BIN_EXE_order-query"), port, &log));

    // One order per watch, placed from 8 tasks.
    let ids: Vec<String> = (0..WATCHES)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let placing: Vec<_> = ids
        .chunks(WATCHES / 8)
        .map(|chunk| {
            let (mut commands, chunk) = (command.client.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for id in chunk {
                    place_with_id(&mut commands, &id).await;
                }
            })
        })
        .collect();
    for task in placing {
        task.await.unwrap();
    }

    // 2,000 streams over 10 connections; each first gets its order at version 1.
    let mut readers = vec![];
    for _ in 0..CONNECTIONS {
        readers.push(super::connect(port).await);
    }
    let mut streams = vec![];
    for (i, id) in ids.iter().enumerate() {
        streams.push(watch(&mut readers[i % CONNECTIONS], id, 1).await);
    }
    for stream in &mut streams {
        assert_eq!(next(stream).await.unwrap().order.unwrap().version, 1);
    }
    let (open_rss, _) = rss_mib(server.0.id());

    // One command per order: every stream sees version 2.
    let updating: Vec<_> = ids
        .chunks(WATCHES / 8)
        .map(|chunk| {
            let (mut commands, chunk) = (command.client.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for id in chunk {
                    add_line(&mut commands, &id, "sku-more").await;
                }
            })
        })
        .collect();
    for task in updating {
        task.await.unwrap();
    }
    let receiving: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let message = next(&mut stream).await.expect("an update");
                (message.order.unwrap().version, message.coalesced)
            })
        })
        .collect();
    for task in receiving {
        assert_eq!(task.await.unwrap(), (2, false));
    }
    let (rss, peak) = rss_mib(server.0.id());
    eprintln!(
        "{WATCHES} watches: order-query RSS {open_rss:.1} MiB with the streams open, \
         {rss:.1} MiB after the updates, peak {peak:.1} MiB"
    );
    // The servers' memory budget (DESIGN.md: 64 MiB at steady load), with
    // room for the debug build the tests run.
    assert!(peak < 128.0, "peak RSS {peak:.1} MiB");
    drop(server);
    command.stop().await;
}
