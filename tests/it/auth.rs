//! Who may call what, on the real servers: bearer tokens, scopes per service,
//! customer confinement, and who did it in the events.

use std::time::{Duration, SystemTime};

use orders::{
    auth::{self, AuthedChannel, BearerToken, SCOPE_READ, SCOPE_WRITE, TokenRequest},
    codec,
    config::{AuthMode, CommandSettings},
    proto::{
        self, order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
    },
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    command::{TestCommand, place},
    query::TestQuery,
    support,
};

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

fn interceptor(token: Option<&str>) -> BearerToken {
    token.map_or_else(BearerToken::none, |t| {
        BearerToken::new(t).expect("ascii token")
    })
}

async fn commands(port: u16, token: Option<&str>) -> OrderCommandsClient<AuthedChannel> {
    OrderCommandsClient::with_interceptor(channel(port).await, interceptor(token))
}

async fn queries(port: u16, token: Option<&str>) -> OrderQueriesClient<AuthedChannel> {
    OrderQueriesClient::with_interceptor(channel(port).await, interceptor(token))
}

/// A token for `scopes` signed by the tests' key, with claims changed by `edit`.
fn token_with(scopes: &[&str], edit: impl FnOnce(&mut TokenRequest)) -> String {
    let mut request = support::token_request(scopes, None);
    edit(&mut request);
    support::sign(&request, SystemTime::now())
}

/// The code of a call that must fail.
fn refusal<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("refused").code()
}

/// Both servers on one topic, with auth on.
async fn system() -> (TestCommand, TestQuery) {
    let command = TestCommand::start().await;
    let query = TestQuery::start(support::query_settings(
        support::fresh_database("auth_q").await,
        command.kafka.clone(),
        support::unique("auth"),
    ))
    .await;
    (command, query)
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_and_write_nothing() {
    let command = TestCommand::start().await;
    let forged = {
        let dir = std::env::temp_dir().join(support::unique("forger"));
        let keys = auth::generate_keys(&dir).unwrap();
        let mut request = support::token_request(&[SCOPE_WRITE], None);
        request.subject = "mallory".into();
        let token = auth::mint(
            &std::fs::read(&keys.signing_key).unwrap(),
            &request,
            SystemTime::now(),
        )
        .unwrap()
        .token;
        let _ = std::fs::remove_dir_all(dir);
        token
    };
    let expired = {
        let mut request = support::token_request(&[SCOPE_WRITE], None);
        request.ttl = Duration::from_secs(60);
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7_200);
        support::sign(&request, two_hours_ago)
    };
    let cases = [
        ("no token", None, "missing bearer token"),
        ("not a JWT", Some("not-a-jwt".to_owned()), "malformed"),
        ("forged signature", Some(forged), "unknown key"),
        ("expired", Some(expired), "expired"),
        (
            "wrong audience",
            Some(token_with(&[SCOPE_WRITE], |r| {
                r.audience = "billing".into()
            })),
            "wrong audience",
        ),
        (
            "wrong issuer",
            Some(token_with(&[SCOPE_WRITE], |r| {
                r.issuer = "elsewhere".into()
            })),
            "wrong issuer",
        ),
    ];
    for (case, token, message) in cases {
        let mut client = commands(command.port, token.as_deref()).await;
        let status = client.place_order(place("cust-1")).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(
            status.message().contains(message),
            "{case}: {}",
            status.message()
        );
    }
    assert_eq!(command.event_count().await, 0, "nothing was written");
    command.stop().await;
}

#[tokio::test]
async fn each_service_needs_its_scope_and_health_needs_none() {
    let (command, query) = system().await;
    let read_only = token_with(&[SCOPE_READ], |_| {});
    let write_only = token_with(&[SCOPE_WRITE], |_| {});

    let status = commands(command.port, Some(&read_only))
        .await
        .place_order(place("cust-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("orders:write"));
    assert_eq!(command.event_count().await, 0, "nothing was written");

    let mut reader = queries(query.port, Some(&write_only)).await;
    let status = reader
        .list_orders(proto::ListOrdersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = reader
        .get_order(proto::GetOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The right scope passes.
    let placed = commands(command.port, Some(&write_only))
        .await
        .place_order(place("cust-1"))
        .await
        .expect("a write token writes")
        .into_inner();
    queries(query.port, Some(&read_only))
        .await
        .get_order(proto::GetOrderRequest {
            order_id: placed.order_id,
            min_version: Some(1),
            ..Default::default()
        })
        .await
        .expect("a read token reads");

    // Health answers without a token (SERVING or not yet: no UNAUTHENTICATED).
    for port in [command.port, query.port] {
        HealthClient::new(channel(port).await)
            .check(HealthCheckRequest::default())
            .await
            .expect("health needs no token");
    }
    query.stop().await;
    command.stop().await;
}

#[tokio::test]
async fn a_customer_confined_token_finds_other_customers_orders_absent() {
    let (command, query) = system().await;
    let mut admin = command.client.clone();
    let theirs = admin
        .place_order(place("cust-b"))
        .await
        .unwrap()
        .into_inner();
    let alice = token_with(&[SCOPE_READ, SCOPE_WRITE], |r| {
        r.subject = "alice".into();
        r.customer_id = Some("cust-a".into());
    });
    let mut writer = commands(command.port, Some(&alice)).await;
    let mut reader = queries(query.port, Some(&alice)).await;

    // Placing for someone else is refused; for oneself it works.
    let status = writer.place_order(place("cust-b")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mine = writer
        .place_order(place("cust-a"))
        .await
        .expect("place for its own customer")
        .into_inner();

    // Commands on the other customer's order: NOT_FOUND, whatever the command.
    let status = writer
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: theirs.order_id.clone(),
            expected_version: Some(7),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = writer
        .cancel_order(proto::CancelOrderRequest {
            order_id: theirs.order_id.clone(),
            reason: "not mine".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Both orders are projected before the reads.
    let mut full = query.client.clone();
    for (order_id, version) in [(&theirs.order_id, 1), (&mine.order_id, 1)] {
        full.get_order(proto::GetOrderRequest {
            order_id: order_id.clone(),
            min_version: Some(version),
            ..Default::default()
        })
        .await
        .expect("projected");
    }
    // Reads of the other customer's order: NOT_FOUND, with or without a wait.
    let codes = [
        refusal(
            reader
                .get_order(proto::GetOrderRequest {
                    order_id: theirs.order_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
        refusal(
            reader
                .get_order(proto::GetOrderRequest {
                    order_id: theirs.order_id.clone(),
                    min_version: Some(1),
                    ..Default::default()
                })
                .await,
        ),
        refusal(
            reader
                .get_order_history(proto::GetOrderHistoryRequest {
                    order_id: theirs.order_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
    ];
    assert_eq!(codes, [Code::NotFound; 3]);
    let listed = reader
        .list_orders(proto::ListOrdersRequest {
            customer_id: Some("cust-b".into()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(
        ids,
        [mine.order_id.as_str()],
        "only its own customer's orders"
    );
    // A watch of the other customer's orders watches its own.
    let mut watched = reader
        .watch_orders(proto::WatchOrdersRequest {
            customer_id: "cust-b".into(),
            ..Default::default()
        })
        .await
        .expect("WatchOrders")
        .into_inner();
    let mut sent = vec![];
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), watched.message())
            .await
            .expect("the snapshot within 30 s")
            .expect("no error")
            .expect("the stream goes on");
        if message.snapshot_complete {
            break;
        }
        sent.push(message.order.unwrap().order_id);
    }
    assert_eq!(
        sent,
        std::slice::from_ref(&mine.order_id),
        "only its own orders"
    );
    drop(watched);
    reader
        .get_order_history(proto::GetOrderHistoryRequest {
            order_id: mine.order_id.clone(),
            ..Default::default()
        })
        .await
        .expect("its own history");

    // Nothing was written to the other order; the events name who placed.
    let stored: Vec<(uuid::Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT order_id, payload FROM events ORDER BY position")
            .fetch_all(&command.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 2, "two PlaceOrders, nothing else");
    let actors: Vec<_> = stored
        .iter()
        .map(|(_, payload)| codec::decode_event(payload).unwrap().0.actor)
        .collect();
    assert_eq!(
        actors,
        [
            Some(codec::Actor {
                subject: "it".into(),
                customer_id: None
            }),
            Some(codec::Actor {
                subject: "alice".into(),
                customer_id: Some("cust-a".into())
            }),
        ]
    );
    query.stop().await;
    command.stop().await;
}

#[tokio::test]
async fn auth_is_on_unless_explicitly_disabled() {
    let database_url = support::fresh_database("auth_off").await;
    let kafka = support::fresh_kafka("auth_off");
    let missing_jwks = CommandSettings::new(database_url.clone(), kafka.clone());
    let error = orders::command::app::Application::build(missing_jwks)
        .await
        .err()
        .expect("auth on without a JWKS refuses to start");
    assert!(
        error.to_string().contains("ORDERS_AUTH_JWKS_FILE"),
        "{error}"
    );

    let mut settings = support::command_settings(database_url.clone(), kafka);
    settings.server.auth.mode = AuthMode::Disabled;
    settings.relay = false;
    let server = TestCommand::start_with_settings(settings).await;
    commands(server.port, None)
        .await
        .place_order(place("cust-1"))
        .await
        .expect("no token needed with --auth=disabled");
    let (payload,): (Vec<u8>,) = sqlx::query_as("SELECT payload FROM events")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(codec::decode_event(&payload).unwrap().0.actor, None);
    server.stop().await;
}

#[tokio::test]
async fn reflection_can_be_switched_off() {
    let database_url = support::fresh_database("no_refl").await;
    let mut settings = support::command_settings(database_url, support::fresh_kafka("no_refl"));
    settings.server.reflection = false;
    settings.relay = false;
    let server = TestCommand::start_with_settings(settings).await;
    let output = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", &format!("127.0.0.1:{}", server.port), "list"])
        .output()
        .await
        .expect("run grpcurl");
    assert!(!output.status.success(), "reflection answered");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("reflection"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}
