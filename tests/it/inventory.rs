//! The Inventory service on the real PostgreSQL: an in-process server on a
//! free port over a fresh database, called over gRPC.

use std::{collections::HashSet, time::Duration};

use orders::{
    auth::{self, AuthedChannel, BearerToken},
    config::InventorySettings,
    inventory::app::Application,
    proto::inventory::v1::{self as pb, inventory_client::InventoryClient},
};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

use crate::support;

/// A running `inventory` on a free port over a fresh database.
pub struct TestInventory {
    pub client: InventoryClient<AuthedChannel>,
    pub port: u16,
    pub database_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestInventory {
    /// A server with its own fresh database, as the bootstrap superuser.
    pub async fn start() -> Self {
        let database_url = support::fresh_database("inv").await;
        let mut settings = InventorySettings::new(database_url);
        settings.server.allow_superuser = true;
        settings.server.auth = support::auth_settings();
        Self::start_with(settings).await
    }

    /// A server with `settings`.
    pub async fn start_with(settings: InventorySettings) -> Self {
        let database_url = settings.database_url.expose().to_owned();
        let app = Application::build(settings).await.expect("build inventory");
        let port = app.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("inventory ran");
        });
        let client = connect(
            port,
            &[auth::SCOPE_INVENTORY_READ, auth::SCOPE_INVENTORY_WRITE],
        )
        .await;
        Self {
            client,
            port,
            database_url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("inventory stopped in time")
                .expect("inventory task");
        }
    }

    /// Sets `product`'s on-hand count.
    pub async fn set_stock(&self, product: &str, on_hand: i64) {
        self.client
            .clone()
            .set_stock(pb::SetStockRequest {
                product_id: product.into(),
                on_hand,
            })
            .await
            .unwrap_or_else(|e| panic!("set stock of {product}: {e}"));
    }

    /// `product`'s (on_hand, reserved).
    pub async fn stock(&self, product: &str) -> (i64, i64) {
        let stock = self
            .client
            .clone()
            .get_stock(pb::GetStockRequest {
                product_id: product.into(),
            })
            .await
            .expect("get stock")
            .into_inner()
            .stock
            .expect("a stock level");
        assert_eq!(stock.available, stock.on_hand - stock.reserved);
        (stock.on_hand, stock.reserved)
    }

    /// Reserves `lines` under `key`.
    pub async fn reserve(
        &self,
        key: &str,
        lines: &[(&str, u32)],
    ) -> Result<pb::ReserveStockResponse, Status> {
        self.client
            .clone()
            .reserve_stock(reserve_request(key, lines))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Releases `key`.
    pub async fn release(&self, key: &str) -> Result<pb::ReleaseReservationResponse, Status> {
        self.client
            .clone()
            .release_reservation(pb::ReleaseReservationRequest {
                reservation_id: key.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Dispatches `key`.
    pub async fn dispatch(&self, key: &str) -> Result<pb::DispatchReservationResponse, Status> {
        self.client
            .clone()
            .dispatch_reservation(pb::DispatchReservationRequest {
                reservation_id: key.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The reservation `key`.
    pub async fn reservation(&self, key: &str) -> Result<pb::Reservation, Status> {
        self.client
            .clone()
            .get_reservation(pb::GetReservationRequest {
                reservation_id: key.into(),
            })
            .await
            .map(|r| r.into_inner().reservation.expect("a reservation"))
    }
}

/// A fresh database owned by `role` (which `scripts/dev up` creates, as
/// `scripts/postgres/provision.sql` says); returns its URL as `role`, and as
/// any other role.
pub async fn database_owned_by(prefix: &str, role: &str) -> (String, impl Fn(&str) -> String) {
    let url = support::fresh_database(prefix).await;
    let name = url
        .rsplit_once('/')
        .expect("url has a database")
        .1
        .to_owned();
    let admin = support::pool(&support::env("ORDERS_PG_ADMIN_URL")).await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(
        exists,
        "role {role} is missing: run `scripts/dev up`, which creates it"
    );
    sqlx::query(&format!("ALTER DATABASE \"{name}\" OWNER TO {role}"))
        .execute(&admin)
        .await
        .unwrap();
    // The dev server trusts loopback connections: no password.
    let as_role = move |role: &str| {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{role}@{host}")
    };
    (as_role(role), as_role)
}

/// A client of `port` sending a token with `scopes`.
async fn connect(port: u16, scopes: &[&str]) -> InventoryClient<AuthedChannel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to inventory");
    let token = BearerToken::new(&support::token(scopes, None)).expect("ascii token");
    InventoryClient::with_interceptor(channel, token)
}

fn reserve_request(key: &str, lines: &[(&str, u32)]) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        reservation_id: key.into(),
        lines: lines
            .iter()
            .map(|(product, quantity)| pb::ReservationLine {
                product_id: (*product).into(),
                quantity: *quantity,
            })
            .collect(),
    }
}

fn lines_of(response: &[pb::ReservationLine]) -> Vec<(String, u32)> {
    response
        .iter()
        .map(|l| (l.product_id.clone(), l.quantity))
        .collect()
}

/// The product a stock refusal names in its `PreconditionFailure`.
fn short_product(status: &Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let failure = status
        .get_details_precondition_failure()
        .expect("a PreconditionFailure");
    assert_eq!(failure.violations.len(), 1);
    assert_eq!(failure.violations[0].r#type, "STOCK");
    failure.violations[0].subject.clone()
}

#[tokio::test]
async fn reserves_dispatches_and_releases() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;
    inventory.set_stock("pear", 5).await;

    let reserved = inventory
        .reserve("order-1", &[("pear", 2), ("apple", 3), ("apple", 1)])
        .await
        .expect("reserved");
    assert_eq!(
        lines_of(&reserved.lines),
        [("apple".to_owned(), 4), ("pear".to_owned(), 2)],
        "one line per product, sorted"
    );
    assert_eq!(inventory.stock("apple").await, (10, 4));
    assert_eq!(inventory.stock("pear").await, (5, 2));

    let dispatched = inventory.dispatch("order-1").await.expect("dispatched");
    assert!(
        dispatched.tracking_number.starts_with("TRK-"),
        "{}",
        dispatched.tracking_number
    );
    assert_eq!(inventory.stock("apple").await, (6, 0));
    assert_eq!(inventory.stock("pear").await, (3, 0));
    let shown = inventory.reservation("order-1").await.unwrap();
    assert_eq!(shown.state(), pb::ReservationState::Dispatched);
    assert_eq!(shown.tracking_number, dispatched.tracking_number);

    inventory
        .reserve("order-2", &[("apple", 6)])
        .await
        .expect("the rest reserved");
    assert_eq!(inventory.stock("apple").await, (6, 6));
    inventory.release("order-2").await.expect("released");
    assert_eq!(inventory.stock("apple").await, (6, 0));
    assert_eq!(
        inventory.reservation("order-2").await.unwrap().state(),
        pb::ReservationState::Released
    );
    // A product never stocked has none.
    assert_eq!(inventory.stock("plum").await, (0, 0));
    inventory.stop().await;
}

#[tokio::test]
async fn refuses_a_short_reservation_naming_the_product_and_holds_nothing() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;
    inventory.set_stock("pear", 1).await;

    let refused = inventory
        .reserve("order-1", &[("apple", 3), ("pear", 2), ("plum", 1)])
        .await
        .expect_err("pear is short");
    assert_eq!(short_product(&refused), "pear");
    assert!(refused.message().contains("pear"), "{}", refused.message());
    assert_eq!(inventory.stock("apple").await, (10, 0), "nothing reserved");
    assert_eq!(inventory.stock("pear").await, (1, 0));
    assert_eq!(
        inventory.reservation("order-1").await.unwrap().state(),
        pb::ReservationState::Refused
    );

    // The key's answer is settled: a retry is refused the same way, even
    // once there is stock.
    inventory.set_stock("pear", 10).await;
    let again = inventory
        .reserve("order-1", &[("apple", 3), ("pear", 2), ("plum", 1)])
        .await
        .expect_err("the first answer again");
    assert_eq!(short_product(&again), "pear");
    assert_eq!(inventory.stock("apple").await, (10, 0));
    assert_eq!(
        inventory
            .dispatch("order-1")
            .await
            .expect_err("nothing to dispatch")
            .code(),
        Code::FailedPrecondition
    );

    // A product never stocked is short too.
    let never = inventory
        .reserve("order-2", &[("plum", 1)])
        .await
        .expect_err("plum was never stocked");
    assert_eq!(short_product(&never), "plum");
    inventory.stop().await;
}

#[tokio::test]
async fn answers_a_retry_with_the_first_answer_and_applies_it_once() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;

    let first = inventory.reserve("order-1", &[("apple", 3)]).await.unwrap();
    let second = inventory.reserve("order-1", &[("apple", 3)]).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(inventory.stock("apple").await, (10, 3), "held once");

    let shipped = inventory.dispatch("order-1").await.unwrap();
    let again = inventory.dispatch("order-1").await.unwrap();
    assert_eq!(shipped, again, "the same tracking number");
    assert_eq!(inventory.stock("apple").await, (7, 0), "shipped once");
    // Reserving again after the dispatch still answers the first answer and holds nothing.
    assert_eq!(
        inventory.reserve("order-1", &[("apple", 3)]).await.unwrap(),
        first
    );
    assert_eq!(inventory.stock("apple").await, (7, 0));

    inventory.reserve("order-2", &[("apple", 2)]).await.unwrap();
    let released = inventory.release("order-2").await.unwrap();
    assert_eq!(inventory.release("order-2").await.unwrap(), released);
    assert_eq!(inventory.stock("apple").await, (7, 0), "given back once");
    inventory.stop().await;
}

#[tokio::test]
async fn refuses_a_key_reused_for_other_lines_with_already_exists() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;
    inventory.set_stock("pear", 10).await;
    inventory.reserve("order-1", &[("apple", 3)]).await.unwrap();

    for other in [
        &[("apple", 4)][..],
        &[("pear", 3)][..],
        &[("apple", 3), ("pear", 1)][..],
    ] {
        let status = inventory.reserve("order-1", other).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{other:?}: {status:?}");
    }
    assert_eq!(inventory.stock("apple").await, (10, 3));
    assert_eq!(inventory.stock("pear").await, (10, 0));
    inventory.stop().await;
}

#[tokio::test]
async fn records_a_release_of_an_unknown_key_so_it_is_never_reserved() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;

    inventory
        .release("order-1")
        .await
        .expect("a release of an unknown key is fine");
    let late = inventory
        .reserve("order-1", &[("apple", 1)])
        .await
        .expect_err("the late reservation is refused");
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("released"), "{}", late.message());
    assert_eq!(inventory.stock("apple").await, (10, 0));
    let tombstone = inventory.reservation("order-1").await.unwrap();
    assert_eq!(tombstone.state(), pb::ReservationState::Released);
    assert!(tombstone.lines.is_empty());
    inventory.release("order-1").await.expect("released again");
    inventory.stop().await;
}

#[tokio::test]
async fn keeps_dispatch_and_release_apart() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 10).await;

    inventory
        .reserve("released", &[("apple", 1)])
        .await
        .unwrap();
    inventory.release("released").await.unwrap();
    let status = inventory.dispatch("released").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    inventory.reserve("shipped", &[("apple", 1)]).await.unwrap();
    inventory.dispatch("shipped").await.unwrap();
    let status = inventory.release("shipped").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(inventory.stock("apple").await, (9, 0));

    let status = inventory.dispatch("never").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = inventory.reservation("never").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    inventory.stop().await;
}

#[tokio::test]
async fn never_oversells_under_concurrent_reservations() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 20).await;

    let attempts = (0..50).map(|i| {
        let client = inventory.client.clone();
        tokio::spawn(async move {
            client
                .clone()
                .reserve_stock(reserve_request(&format!("order-{i}"), &[("apple", 1)]))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let mut reserved = 0;
    for result in results {
        match result.expect("task") {
            Ok(_) => reserved += 1,
            Err(status) => assert_eq!(short_product(&status), "apple"),
        }
    }
    assert_eq!(reserved, 20, "exactly the stock is reserved");
    assert_eq!(inventory.stock("apple").await, (20, 20));
    inventory.stop().await;
}

#[tokio::test]
async fn reservations_of_overlapping_products_in_any_order_never_deadlock() {
    let inventory = TestInventory::start().await;
    let products = ["a", "b", "c", "d"];
    for product in products {
        inventory.set_stock(product, 1_000).await;
    }

    // Each asks for every product, listed in its own order; a deadlock would
    // surface as an internal error (or a lock timeout).
    let attempts = (0..40).map(|i| {
        let client = inventory.client.clone();
        let mut lines: Vec<(&str, u32)> = products.iter().map(|p| (*p, 1)).collect();
        lines.rotate_left(i % products.len());
        if i % 2 == 1 {
            lines.reverse();
        }
        let request = reserve_request(&format!("order-{i}"), &lines);
        tokio::spawn(async move { client.clone().reserve_stock(request).await })
    });
    for result in futures::future::join_all(attempts).await {
        result.expect("task").expect("reserved");
    }
    // Releases and dispatches of overlapping reservations, concurrently too.
    let settle = (0..40).map(|i| {
        let client = inventory.client.clone();
        tokio::spawn(async move {
            let reservation_id = format!("order-{i}");
            if i % 2 == 0 {
                client
                    .clone()
                    .release_reservation(pb::ReleaseReservationRequest { reservation_id })
                    .await
                    .map(drop)
            } else {
                client
                    .clone()
                    .dispatch_reservation(pb::DispatchReservationRequest { reservation_id })
                    .await
                    .map(drop)
            }
        })
    });
    for result in futures::future::join_all(settle).await {
        result.expect("task").expect("settled");
    }
    for product in products {
        assert_eq!(inventory.stock(product).await, (980, 0), "{product}");
    }
    inventory.stop().await;
}

#[tokio::test]
async fn refuses_invalid_requests_with_field_violations() {
    let inventory = TestInventory::start().await;
    let status = inventory
        .reserve("", &[("apple", 0), ("", 1)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<_> = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["reservation_id", "lines[0].quantity", "lines[1].product_id"]
    );

    let status = inventory
        .client
        .clone()
        .set_stock(pb::SetStockRequest {
            product_id: "apple".into(),
            on_hand: -5,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "on_hand"
    );

    // Below what is reserved: a broken rule, not bad input.
    inventory.set_stock("apple", 5).await;
    inventory.reserve("order-1", &[("apple", 4)]).await.unwrap();
    let status = inventory
        .client
        .clone()
        .set_stock(pb::SetStockRequest {
            product_id: "apple".into(),
            on_hand: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(inventory.stock("apple").await, (5, 4));
    inventory.stop().await;
}

#[tokio::test]
async fn reads_need_the_read_scope_and_changes_the_write_scope() {
    let inventory = TestInventory::start().await;
    let mut reader = connect(inventory.port, &[auth::SCOPE_INVENTORY_READ]).await;
    reader
        .get_stock(pb::GetStockRequest {
            product_id: "apple".into(),
        })
        .await
        .expect("a reader reads");
    let status = reader
        .reserve_stock(reserve_request("order-1", &[("apple", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("inventory:write"), "{status:?}");

    let mut writer = connect(inventory.port, &[auth::SCOPE_INVENTORY_WRITE]).await;
    let status = writer
        .get_stock(pb::GetStockRequest {
            product_id: "apple".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let mut orders_only = connect(inventory.port, &[auth::SCOPE_READ, auth::SCOPE_WRITE]).await;
    let status = orders_only
        .set_stock(pb::SetStockRequest {
            product_id: "apple".into(),
            on_hand: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let anonymous = Channel::from_shared(format!("http://127.0.0.1:{}", inventory.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = InventoryClient::new(anonymous)
        .get_stock(pb::GetStockRequest {
            product_id: "apple".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(inventory.stock("apple").await, (0, 0), "nothing changed");
    inventory.stop().await;
}

#[tokio::test]
async fn serves_health_and_reflects_only_its_own_service() {
    let inventory = TestInventory::start().await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", inventory.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    support::wait_until(Duration::from_secs(10), "SERVING", || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "inventory.v1.Inventory".into(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
        }
    })
    .await;
    let overall = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    let output = tokio::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            &format!("127.0.0.1:{}", inventory.port),
            "list",
        ])
        .output()
        .await
        .expect("run grpcurl");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let services: HashSet<&str> = listed.lines().collect();
    assert!(services.contains("inventory.v1.Inventory"), "{listed}");
    assert!(services.contains("grpc.health.v1.Health"), "{listed}");
    assert!(!listed.contains("orders.v1"), "{listed}");
    assert!(!listed.contains("payments.v1"), "{listed}");

    // A reflection client decodes the short product in the error details.
    let token = support::token(&[auth::SCOPE_INVENTORY_WRITE], None);
    let output = tokio::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {token}"),
            "-d",
            r#"{"reservation_id": "r-1", "lines": [{"product_id": "apple", "quantity": 1}]}"#,
            &format!("127.0.0.1:{}", inventory.port),
            "inventory.v1.Inventory/ReserveStock",
        ])
        .output()
        .await
        .expect("run grpcurl");
    let answer = String::from_utf8_lossy(&output.stderr);
    assert!(answer.contains("FailedPrecondition"), "{answer}");
    assert!(answer.contains(r#""subject": "apple""#), "{answer}");
    inventory.stop().await;
}

#[tokio::test]
async fn a_lost_database_is_not_serving_and_leaks_nothing_to_clients() {
    let inventory = TestInventory::start().await;
    inventory.set_stock("apple", 5).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", inventory.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    let serving = |want: ServingStatus| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status() == want)
        }
    };

    support::cut_off_database(&inventory.database_url, true).await;
    let status = inventory
        .reserve("order-1", &[("apple", 1)])
        .await
        .unwrap_err();
    support::wait_until(Duration::from_secs(15), "NOT_SERVING", || {
        serving(ServingStatus::NotServing)
    })
    .await;
    support::cut_off_database(&inventory.database_url, false).await;
    assert!(
        matches!(status.code(), Code::Internal | Code::Unavailable),
        "{status:?}"
    );
    assert!(
        [
            "internal error",
            "the server is busy: no database connection was free in time; retry"
        ]
        .contains(&status.message()),
        "no database text reaches the client: {status:?}"
    );

    support::wait_until(Duration::from_secs(15), "SERVING again", || {
        serving(ServingStatus::Serving)
    })
    .await;
    inventory
        .reserve("order-1", &[("apple", 1)])
        .await
        .expect("reserved once the database is back");
    assert_eq!(inventory.stock("apple").await, (5, 1));
    inventory.stop().await;
}

#[tokio::test]
async fn runs_as_its_own_role_which_owns_and_migrates_its_database() {
    let (url, as_role) = database_owned_by("inv_role", "orders_inventory").await;
    let mut settings = InventorySettings::new(url);
    settings.server.auth = support::auth_settings();
    let inventory = TestInventory::start_with(settings).await;
    inventory.set_stock("apple", 2).await;
    inventory.reserve("order-1", &[("apple", 2)]).await.unwrap();
    assert_eq!(inventory.stock("apple").await, (2, 2));
    inventory.stop().await;

    let refused = sqlx::PgConnection::connect(&as_role("orders_query"))
        .await
        .expect_err("another role may not connect");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
}
