//! The `orderctl` binary: help on every subcommand, `status --json`, and
//! `verify` catching a projection row corrupted by hand.

use std::process::Command;

use orders::query::read_model::DEFAULT_SCHEMA;

use super::{System, place_orders};

#[test]
fn help_exits_0_for_the_cli_and_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["status", "--help"],
        vec!["verify", "--help"],
        vec!["rebuild", "--help"],
        vec!["republish", "--help"],
        vec!["dead-letter", "--help"],
        vec!["dead-letter", "list", "--help"],
        vec!["dead-letter", "replay", "--help"],
        vec!["migrate", "--help"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_orderctl"))
            .args(&args)
            .output()
            .expect("run orderctl");
        assert!(output.status.success(), "orderctl {args:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: orderctl"), "{args:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_order_and_field_of_a_row_corrupted_by_hand() {
    let system = System::new("a_corrupt").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let acked = place_orders(&command.client, 40, 4, "corrupt").await;

    let clean = system.orderctl(&["verify", "--wait-caught-up", "60"]);
    let clean_text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{clean:?}");
    assert!(
        clean_text.contains(&format!("checked 40 orders and {} events", acked.len())),
        "{clean_text}"
    );

    let status = system.orderctl(&["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["live_generation"]["generation"], 1);
    assert_eq!(status["live_generation"]["schema"], DEFAULT_SCHEMA);
    assert_eq!(status["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(status["lag"], 0);
    assert_eq!(status["outbox_backlog"], 0);
    assert_eq!(status["dead_letters"], 0);
    let leader = status["relay_leader"]["application_name"].as_str().unwrap();
    assert!(
        leader.contains(&format!("pid={}", std::process::id())),
        "the in-process relay leads: {leader}"
    );

    let (victim, _) = &acked[0];
    sqlx::query(&format!(
        "UPDATE {DEFAULT_SCHEMA}.order_view SET total_minor = total_minor + 1 WHERE order_id = $1::uuid"
    ))
    .bind(victim)
    .execute(&system.read)
    .await
    .unwrap();

    let corrupt = system.orderctl(&["verify"]);
    let text = String::from_utf8_lossy(&corrupt.stdout);
    assert_eq!(corrupt.status.code(), Some(1), "{corrupt:?}");
    assert!(
        text.contains(&format!("order {victim}: total_minor")),
        "names the order and the field: {text}"
    );
    assert!(text.contains("1 differences"), "{text}");
    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_a_reading_per_interval_with_the_rates_between_them() {
    let system = System::new("a_watch").await;
    let command = system.start_command().await;
    let client = command.client.clone();
    let placing = tokio::spawn(async move { place_orders(&client, 40, 4, "watch").await });
    let watched = tokio::task::spawn_blocking({
        let system_env = system.env();
        move || {
            let mut orderctl = std::process::Command::new(env!("CARGO_BIN_EXE_orderctl"));
            orderctl.args([
                "status",
                "--watch",
                "--json",
                "--count",
                "3",
                "--interval",
                "1s",
            ]);
            orderctl.envs(system_env).env("RUST_LOG", "warn");
            orderctl.output().expect("run orderctl")
        }
    })
    .await
    .unwrap();
    placing.await.unwrap();
    assert!(watched.status.success(), "{watched:?}");
    let readings: Vec<serde_json::Value> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(readings.len(), 3, "{readings:?}");
    assert!(
        readings[0]["rates"].is_null(),
        "no rates before a second reading"
    );
    let published = |reading: &serde_json::Value| -> i64 {
        reading["status"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["end_offset"].as_i64().unwrap())
            .sum()
    };
    for pair in readings.windows(2) {
        let rates = &pair[1]["rates"];
        let seconds = rates["interval_seconds"].as_f64().unwrap();
        assert!(seconds > 0.5, "about a second apart: {rates}");
        let per_second = rates["published_per_second"].as_f64().unwrap();
        let appended = (published(&pair[1]) - published(&pair[0])) as f64;
        assert!(
            (per_second * seconds - appended).abs() < 1e-6,
            "{per_second}/s over {seconds} s is {appended} events"
        );
    }
    command.stop().await;
}
