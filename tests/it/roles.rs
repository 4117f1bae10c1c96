//! Least privilege in PostgreSQL (ARCHITECTURE.md, "Database roles"), with
//! the roles `scripts/dev up` creates (cluster-wide; they must exist). Each
//! test sets its databases up the way `scripts/dev` does: the write database
//! owned and migrated by the migrator, the read database owned by the query
//! role; then the processes connect as their roles.

use std::{process::Stdio, time::Duration};

use orders::{
    admin::{RebuildOptions, VerifyOptions},
    command::{app::Application as CommandApp, migrations::MigrationError},
    config::{AdminSettings, CommandSettings, QuerySettings},
    proto,
    query::{Application as QueryApp, QueryError},
    roles::RoleError,
};
use sqlx::{Connection, PgConnection};

use crate::{
    command::{self, TestCommand, line, place},
    query::TestQuery,
    support,
};

const MIGRATOR: &str = "orders_migrator";
const COMMAND: &str = "orders_command";
const QUERY: &str = "orders_query";
const ADMIN: &str = "orders_admin";

/// `url`'s database as `role`, without a password (the dev server trusts
/// loopback connections).
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

/// Runs `sql` in the bootstrap superuser's session on `url`'s database.
async fn as_superuser(url: &str, sql: &str) {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect as superuser");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
}

/// Makes `role` the owner of `url`'s database (which must be a test's).
async fn give_database(url: &str, role: &str) {
    let name = url.rsplit_once('/').expect("url has a database").1;
    let roles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE rolname IN \
         ('orders_migrator', 'orders_command', 'orders_query', 'orders_admin')",
    )
    .fetch_one(&support::pool(&support::env("ORDERS_PG_ADMIN_URL")).await)
    .await
    .unwrap();
    assert_eq!(
        roles, 4,
        "the roles are missing: run `scripts/dev up`, which creates them"
    );
    as_superuser(url, &format!("ALTER DATABASE \"{name}\" OWNER TO {role}")).await;
}

/// A fresh write database owned by the migrator and migrated by it (what
/// `orderctl migrate` does); returns its URL as the bootstrap superuser.
async fn migrated_write_database(prefix: &str) -> String {
    let url = support::fresh_database(prefix).await;
    give_database(&url, MIGRATOR).await;
    let migrated = orders::admin::migrate(&as_role(&url, MIGRATOR))
        .await
        .expect("migrate as orders_migrator");
    assert_eq!(migrated.applied, [1, 2]);
    url
}

/// A fresh read database owned by the query role.
async fn read_database(prefix: &str) -> String {
    let url = support::fresh_database(prefix).await;
    give_database(&url, QUERY).await;
    url
}

/// The SQLSTATE `sql` fails with as `role` in `url`'s database.
async fn refusal(url: &str, role: &str, sql: &str) -> String {
    let mut conn = PgConnection::connect(&as_role(url, role))
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
    match sqlx::query(sql).execute(&mut conn).await {
        Ok(_) => panic!("{role} may run {sql:?}"),
        Err(sqlx::Error::Database(db)) => db.code().unwrap_or_default().into_owned(),
        Err(other) => panic!("{sql:?} as {role}: {other}"),
    }
}

/// SQLSTATE insufficient_privilege.
const DENIED: &str = "42501";

/// What no role but the event store's owner may do.
const REWRITES: [&str; 6] = [
    "UPDATE events SET event_type = 'rewritten'",
    "DELETE FROM events",
    "TRUNCATE events",
    "DROP TRIGGER events_no_update_or_delete ON events",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "CREATE TABLE shadow_events (position bigint)",
];

#[tokio::test]
async fn the_command_role_appends_and_relays_but_cannot_rewrite_the_event_store() {
    let write = migrated_write_database("roles_cmd").await;
    let kafka = support::fresh_kafka("roles_cmd");
    let mut command = TestCommand::start_with(as_role(&write, COMMAND), kafka.clone(), true).await;

    let placed = command
        .client
        .place_order(proto::PlaceOrderRequest {
            request_id: "roles-1".into(),
            ..place("roles")
        })
        .await
        .expect("PlaceOrder as orders_command")
        .into_inner();
    let retried = command
        .client
        .place_order(proto::PlaceOrderRequest {
            request_id: "roles-1".into(),
            ..place("roles")
        })
        .await
        .expect("a retry as orders_command")
        .into_inner();
    let reader = support::topic_reader(&kafka.topic);
    support::read_messages(&reader, 1, Duration::from_secs(30)).await;
    let admin = support::pool(&write).await;
    support::wait_until(
        Duration::from_secs(30),
        "the relay to empty the outbox",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&admin)
                .await
                .unwrap()
                == 0
        },
    )
    .await;

    assert_eq!((retried.order_id, retried.version), (placed.order_id, 1));
    assert_eq!(command.event_count().await, 1);
    for sql in REWRITES.into_iter().chain([
        "UPDATE outbox SET enqueued_at = now()",
        "DELETE FROM idempotency_keys",
    ]) {
        assert_eq!(refusal(&write, COMMAND, sql).await, DENIED, "{sql}");
    }
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'events'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(owner, MIGRATOR);
    command.stop().await;
}

#[tokio::test]
async fn a_command_server_whose_role_may_not_migrate_names_orderctl_migrate() {
    let write = support::fresh_database("roles_unmigrated").await;
    give_database(&write, MIGRATOR).await;

    let mut settings = CommandSettings::new(
        as_role(&write, COMMAND),
        support::fresh_kafka("roles_unmigrated"),
    );
    settings.server.auth = support::auth_settings();
    let built = CommandApp::build(settings).await;

    match built {
        Err(orders::command::app::StartupError::Migrations(
            error @ MigrationError::NotApplied { .. },
        )) => {
            let message = error.to_string();
            assert!(message.contains("lacks migrations (1, 2)"), "{message}");
            assert!(message.contains("role orders_command"), "{message}");
            assert!(message.contains("orderctl migrate"), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("order-command started on an unmigrated database"),
    }
}

#[tokio::test]
async fn the_query_role_cannot_reach_the_event_store() {
    let write = migrated_write_database("roles_query_w").await;
    let admin = support::pool(&write).await;

    let connected = PgConnection::connect(&as_role(&write, QUERY)).await;

    match connected {
        Err(sqlx::Error::Database(db)) => {
            assert_eq!(db.code().as_deref(), Some(DENIED), "{db}")
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("orders_query connected to the write database"),
    }
    let (may_write, may_read, may_become_a_writer): (bool, bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege('orders_query', 'events', 'INSERT, UPDATE, DELETE, TRUNCATE'),
                has_table_privilege('orders_query', 'events', 'SELECT'),
                pg_has_role('orders_query', 'orders_command', 'MEMBER')
                  OR pg_has_role('orders_query', 'orders_migrator', 'MEMBER')
                  OR pg_has_role('orders_query', 'orders_admin', 'MEMBER')",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(!may_write && !may_read && !may_become_a_writer);
}

#[tokio::test]
async fn no_role_is_a_superuser_and_the_admin_role_cannot_drop_the_trigger() {
    let write = migrated_write_database("roles_admin").await;
    let admin = support::pool(&write).await;

    let powers: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles
         WHERE rolname IN ('orders_migrator', 'orders_command', 'orders_query', 'orders_admin')
         ORDER BY rolname",
    )
    .fetch_all(&admin)
    .await
    .unwrap();

    assert_eq!(powers.len(), 4);
    for (role, superuser, create_role, create_db) in powers {
        assert!(!superuser && !create_role && !create_db, "{role}");
    }
    for sql in REWRITES.into_iter().chain(["DELETE FROM outbox"]) {
        assert_eq!(refusal(&write, ADMIN, sql).await, DENIED, "{sql}");
    }
}

#[tokio::test]
async fn a_server_refuses_a_superuser_unless_allowed() {
    let kafka = support::fresh_kafka("roles_super");
    let read = support::fresh_database("roles_super_r").await;
    let write = support::fresh_database("roles_super_w").await;

    let mut refused = QuerySettings::new(&read, kafka.clone(), "roles");
    refused.server.auth = support::auth_settings();
    let refused = QueryApp::build(refused).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-command"))
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Relay))
        .env("ORDERS_WRITE_DATABASE_URL", &write)
        .env("ORDERS_COMMAND_ADDR", "127.0.0.1:0")
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("ORDERS_TOPIC", &kafka.topic)
        .env_remove("ORDERS_ALLOW_SUPERUSER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("order-command exits")
        .expect("run order-command");
    let port = support::free_port();
    let mut allowed = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-command"))
        .arg("--allow-superuser")
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Relay))
        .env_remove("ORDERS_ALLOW_SUPERUSER")
        .env("ORDERS_WRITE_DATABASE_URL", &write)
        .env("ORDERS_COMMAND_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("ORDERS_TOPIC", &kafka.topic)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn order-command --allow-superuser");
    let placed = command::connect(port)
        .await
        .place_order(place("superuser"))
        .await;

    match refused {
        Err(QueryError::Role(RoleError::Superuser { role })) => assert_eq!(role, "postgres"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("order-query started as a superuser"),
    }
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("is a PostgreSQL superuser") && log.contains("--allow-superuser"),
        "{log}"
    );
    assert_eq!(placed.expect("PlaceOrder").into_inner().version, 1);
    allowed.kill().await.expect("stop order-command");
    let mut settings = QuerySettings::new(&read, kafka, "roles");
    settings.server.auth = support::auth_settings();
    settings.server.allow_superuser = true;
    settings.projector = false;
    assert!(QueryApp::build(settings).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_as_the_admin_role_makes_a_generation_the_query_role_projects_into() {
    let write = migrated_write_database("roles_rebuild_w").await;
    let read = read_database("roles_rebuild_r").await;
    let kafka = support::fresh_kafka("roles_rebuild");
    let group = support::unique("roles_rebuild");
    let mut command = TestCommand::start_with(as_role(&write, COMMAND), kafka.clone(), true).await;
    let mut query = TestQuery::start({
        let mut settings = support::query_settings(as_role(&read, QUERY), kafka.clone(), &group);
        settings.server.allow_superuser = false;
        settings
    })
    .await;
    let admin = AdminSettings::new(
        as_role(&write, ADMIN),
        as_role(&read, ADMIN),
        kafka.clone(),
        &group,
    );
    let placed = command
        .client
        .place_order(place("roles-rebuild"))
        .await
        .unwrap()
        .into_inner();
    let get = |min_version| proto::GetOrderRequest {
        order_id: placed.order_id.clone(),
        min_version: Some(min_version),
        ..Default::default()
    };
    query.client.get_order(get(1)).await.expect("projected");

    let rebuilt = orders::admin::rebuild(&admin, RebuildOptions::default())
        .await
        .expect("rebuild as orders_admin");
    let added = command
        .client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: placed.order_id.clone(),
            line: Some(line("sku-3", 1, 100)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let projected = query.client.get_order(get(2)).await;
    let verified = orders::admin::verify(
        &admin,
        VerifyOptions {
            wait_caught_up: Some(Duration::from_secs(60)),
        },
    )
    .await
    .expect("verify as orders_admin");
    let republished = orders::admin::republish(&admin, 1, None)
        .await
        .expect("republish as orders_admin");

    assert_eq!(rebuilt.generation, 2);
    assert_eq!(added.version, 2);
    let order = projected
        .expect("projected into generation 2")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.version, 2);
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!(verified.generation, 2);
    assert_eq!(republished.events, 2);
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT owner::text FROM (
             SELECT nspowner::regrole AS owner FROM pg_namespace WHERE nspname LIKE 'read_model%'
             UNION ALL
             SELECT relowner::regrole FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname LIKE 'read_model%' OR c.relname = 'projection_generation') o",
    )
    .fetch_all(&support::pool(&read).await)
    .await
    .unwrap();
    assert_eq!(
        owners,
        [QUERY],
        "every generation belongs to the query role"
    );
    match PgConnection::connect(&as_role(&read, COMMAND)).await {
        Err(sqlx::Error::Database(db)) => assert_eq!(db.code().as_deref(), Some(DENIED)),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("orders_command connected to the read database"),
    }
    query.stop().await;
    command.stop().await;
}
