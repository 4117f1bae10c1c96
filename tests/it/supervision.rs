//! A background task that dies stops its server: the real binaries exit with
//! a non-zero status instead of serving on without their writer, relay or
//! projector (fault injection: `ORDERS_FAULT_PANIC_TASK`).

use std::{process::Stdio, time::Duration};

use crate::support;

/// Runs `binary` with `env` until it exits (at most a minute); returns whether
/// it succeeded and what it logged.
async fn run_to_exit(binary: &str, env: &[(&str, String)]) -> (bool, String) {
    let child = tokio::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(support::server_env())
        .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server binary");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the server exits within a minute of its task's panic")
        .expect("wait for the server");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn command_env(name: &str, task: &str) -> Vec<(&'static str, String)> {
    let kafka = support::fresh_kafka(name);
    support::create_topic(&kafka).await;
    let mut env = vec![
        (
            "ORDERS_WRITE_DATABASE_URL",
            support::fresh_database(name).await,
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers),
        ("ORDERS_TOPIC", kafka.topic),
        ("ORDERS_COMMAND_ADDR", "127.0.0.1:0".into()),
        ("ORDERS_FAULT_PANIC_TASK", task.into()),
    ];
    env.extend(support::kafka_env(support::KafkaUser::Relay));
    env
}

#[tokio::test]
async fn order_command_exits_non_zero_when_a_writer_panics() {
    let env = command_env("sup_writer", "writer").await;
    let (success, log) = run_to_exit(env!("CARGO_BIN_EXE_order-command"), &env).await;
    assert!(!success, "exit status is non-zero; log:\n{log}");
    assert!(log.contains("background task failed"), "{log}");
    assert!(
        log.contains("task=\"writer\"") || log.contains("task=writer"),
        "{log}"
    );
}

#[tokio::test]
async fn order_command_exits_non_zero_when_the_relay_panics() {
    let env = command_env("sup_relay", "relay").await;
    let (success, log) = run_to_exit(env!("CARGO_BIN_EXE_order-command"), &env).await;
    assert!(!success, "exit status is non-zero; log:\n{log}");
    assert!(log.contains("background task relay panicked"), "{log}");
}

#[tokio::test]
async fn order_query_exits_non_zero_when_the_projector_panics() {
    let kafka = support::fresh_kafka("sup_projector");
    support::create_topic(&kafka).await;
    let mut env = vec![
        (
            "ORDERS_READ_DATABASE_URL",
            support::fresh_database("sup_projector").await,
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers),
        ("ORDERS_TOPIC", kafka.topic),
        ("ORDERS_CONSUMER_GROUP", support::unique("sup_projector")),
        ("ORDERS_QUERY_ADDR", "127.0.0.1:0".into()),
        ("ORDERS_FAULT_PANIC_TASK", "projector".into()),
    ];
    env.extend(support::query_session_env());
    env.extend(support::kafka_env(support::KafkaUser::Query));
    let (success, log) = run_to_exit(env!("CARGO_BIN_EXE_order-query"), &env).await;
    assert!(!success, "exit status is non-zero; log:\n{log}");
    assert!(log.contains("background task projector panicked"), "{log}");
}
