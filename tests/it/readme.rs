//! The grpcurl guide in README.md is executed here, block by block, against
//! both servers, so the documentation cannot rot.

use std::{path::Path, process::Command, time::Duration};

use rdkafka::{Message, message::Headers};

use orders::{
    auth,
    fulfilment::{app::Application as FulfilmentApp, settings::FulfilmentSettings},
    query::app::Application as QueryApp,
};

use crate::{
    command::TestCommand,
    fulfilment::{Peers, settings_over},
    inventory::TestInventory,
    payments::TestPayments,
    support,
};

/// The fulfilment saga's servers, started when the README reaches them: the
/// order examples before that confirm an order by hand and ship it.
struct Saga {
    inventory: TestInventory,
    payments: TestPayments,
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Saga {
    async fn start(cmd: &TestCommand, query_port: u16) -> Self {
        let inventory = TestInventory::start().await;
        let payments = TestPayments::start().await;
        let peers = Peers {
            inventory: inventory.port,
            payments: payments.port,
            command: cmd.port,
            query: query_port,
        };
        let database_url = support::fresh_database("readme_f").await;
        let settings = FulfilmentSettings {
            call_timeout_ms: 5_000,
            max_calls: 16,
            ..settings_over(
                &database_url,
                &cmd.kafka,
                &peers,
                &EVERY_SCOPE,
                Duration::from_secs(30),
            )
        };
        let app = FulfilmentApp::build(settings)
            .await
            .expect("build order-fulfilment");
        let port = app.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("order-fulfilment ran");
        });
        Self {
            inventory,
            payments,
            port,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.inventory.stop().await;
        self.payments.stop().await;
    }
}

/// What `scripts/dev env`'s token carries: every scope of every server.
const EVERY_SCOPE: [&str; 8] = [
    auth::SCOPE_READ,
    auth::SCOPE_WRITE,
    auth::SCOPE_INVENTORY_READ,
    auth::SCOPE_INVENTORY_WRITE,
    auth::SCOPE_PAYMENTS_READ,
    auth::SCOPE_PAYMENTS_WRITE,
    auth::SCOPE_FULFILMENT_READ,
    auth::SCOPE_FULFILMENT_ADMIN,
];

/// One ```sh block of the README: a grpcurl command and what its output must hold.
#[derive(Debug)]
struct Example {
    command: String,
    expect: Vec<String>,
    expect_code: Option<String>,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(Vec::new()),
            (Some(lines), "```") => {
                let command = lines
                    .iter()
                    .filter(|l| !l.starts_with('#'))
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                let directive = |prefix: &str| {
                    lines
                        .iter()
                        .filter_map(|l| l.strip_prefix(prefix))
                        .map(|s| s.trim().to_owned())
                        .collect::<Vec<_>>()
                };
                assert!(
                    command.starts_with("grpcurl "),
                    "README sh blocks are grpcurl calls: {command}"
                );
                out.push(Example {
                    command,
                    expect: directive("# expect:"),
                    expect_code: directive("# expect-code:").pop(),
                });
                block = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    out
}

/// gRPC status names as grpcurl prints them, by code number.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

#[tokio::test]
async fn every_grpcurl_example_in_the_readme_works() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(examples.len() >= 14, "found {} examples", examples.len());
    let cmd = TestCommand::start().await;
    let query_db = support::fresh_database("readme_q").await;
    let query = QueryApp::build(support::query_settings(
        query_db,
        cmd.kafka.clone(),
        support::unique("readme"),
    ))
    .await
    .expect("build order-query");
    let query_port = query.port();
    let (stop_query, query_stopped) = tokio::sync::oneshot::channel::<()>();
    let query_task = tokio::spawn(query.run_until_stopped(async {
        let _ = query_stopped.await;
    }));

    let mut saga: Option<Saga> = None;
    for example in &examples {
        let saga_ports = ["127.0.0.1:50053", "127.0.0.1:50054", "127.0.0.1:50055"];
        if saga.is_none() && saga_ports.iter().any(|p| example.command.contains(p)) {
            saga = Some(Saga::start(&cmd, query_port).await);
        }
        let mut command = example
            .command
            .replace("127.0.0.1:50051", &format!("127.0.0.1:{}", cmd.port))
            .replace("127.0.0.1:50052", &format!("127.0.0.1:{query_port}"));
        if let Some(saga) = &saga {
            command = command
                .replace(
                    "127.0.0.1:50053",
                    &format!("127.0.0.1:{}", saga.inventory.port),
                )
                .replace(
                    "127.0.0.1:50054",
                    &format!("127.0.0.1:{}", saga.payments.port),
                )
                .replace("127.0.0.1:50055", &format!("127.0.0.1:{}", saga.port));
        }
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                // What `scripts/dev env` exports: a token with every scope.
                .env("ORDERS_TOKEN", support::token(&EVERY_SCOPE, None))
                .output(),
        )
        .await
        .expect("grpcurl finished in time")
        .expect("run grpcurl (is it on PATH? scripts/dev env puts it there)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let code = output.status.code().unwrap_or(-1);
        match &example.expect_code {
            None => assert_eq!(code, 0, "{}\n{text}", example.command),
            Some(name) => {
                let number = CODES
                    .iter()
                    .position(|c| c == name)
                    .expect("a gRPC code name");
                assert_eq!(
                    code,
                    64 + number as i32,
                    "expected {name}: {}\n{text}",
                    example.command
                );
            }
        }
        for needle in &example.expect {
            assert!(
                text.contains(needle.as_str()),
                "output lacks {needle}: {}\n{text}",
                example.command
            );
        }
    }
    // The grpcurl session's first order reached the topic in version order, as CloudEvents.
    let first_order = "0b6f7c1e-5d2a-4c3b-9f10-2a4e6d8c0b11";
    let reader = support::topic_reader(&cmd.kafka.topic);
    let events: Vec<(u64, String)> = support::read_messages(&reader, 7, Duration::from_secs(30))
        .await
        .iter()
        .filter(|m| support::key_of(m) == first_order)
        .map(|m| {
            let (meta, _) =
                orders::codec::decode_event(m.payload().expect("payload")).expect("an OrderEvent");
            let ce_type = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "ce_type"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            (meta.version, ce_type)
        })
        .collect();
    assert_eq!(
        events,
        [
            (1, "orders.v1.OrderPlaced".to_owned()),
            (2, "orders.v1.OrderLineAdded".to_owned()),
            (3, "orders.v1.OrderLineRemoved".to_owned()),
            (4, "orders.v1.OrderConfirmed".to_owned()),
            (5, "orders.v1.OrderShipped".to_owned()),
        ]
    );
    saga.expect("the README walks through the fulfilment saga")
        .stop()
        .await;
    let _ = stop_query.send(());
    query_task.await.unwrap().expect("order-query ran");
    cmd.stop().await;
}

#[test]
fn grpcurl_is_installed() {
    let status = Command::new("grpcurl").arg("-version").output();
    assert!(status.is_ok_and(|o| o.status.success()), "grpcurl on PATH");
}
