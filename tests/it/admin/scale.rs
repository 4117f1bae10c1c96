//! Scale-out with real server processes: three `order-query` instances share
//! the partitions and survive a `kill -9`; two `order-command` instances hand
//! the relay over when the leader is killed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use orders::{admin::status::relay_leader, proto};

use super::{Acked, CONVERGED, StopFlag, System, assert_topic_holds, free_port, lifecycle};
use crate::{command, support};

fn log_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.log", support::unique(name)))
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The partitions on the "partitions assigned" lines of a query server's log
/// (`partitions=[(1, Stored(..)), (0, ..)]`).
fn assigned_in(log: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|line| line.contains("partitions assigned"))
        .flat_map(|line| {
            line.split('(').skip(1).filter_map(|entry| {
                let (number, rest) = entry.split_once(", ")?;
                let start = rest.starts_with("Stored") || rest.starts_with("Unknown");
                start.then(|| number.parse().ok())?
            })
        })
        .collect()
}

/// The partitions on the "partitions revoked" lines of a query server's log
/// (`partitions=[2, 0]`).
fn revoked_in(log: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|line| line.contains("partitions revoked"))
        .filter_map(|line| line.split_once("partitions=[")?.1.split_once(']'))
        .flat_map(|(list, _)| list.split(", ").filter_map(|n| n.parse().ok()))
        .collect()
}

fn kill_all(children: &mut [Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Places an order, adds a line and confirms it: three commands.
async fn three_commands(
    client: &mut orders::proto::order_commands_client::OrderCommandsClient<
        orders::auth::AuthedChannel,
    >,
    i: usize,
    acked: &mut Acked,
) -> Result<(), tonic::Status> {
    let placed = client
        .place_order(command::place(&format!("three-{}", i % 50)))
        .await?
        .into_inner();
    acked.push((placed.order_id.clone(), placed.version));
    let added = client
        .add_order_line(proto::AddOrderLineRequest {
            order_id: placed.order_id.clone(),
            line: Some(command::line("sku-9", 1, 10)),
            ..Default::default()
        })
        .await?
        .into_inner();
    acked.push((added.order_id, added.version));
    let confirmed = client
        .confirm_order(proto::ConfirmOrderRequest {
            order_id: placed.order_id,
            ..Default::default()
        })
        .await?
        .into_inner();
    acked.push((confirmed.order_id, confirmed.version));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_query_instances_share_3000_commands_and_survive_a_kill_9_with_rebalances() {
    let system = System::new("a_three").await;
    let command = system.start_command().await;
    let binary = env!("CARGO_BIN_EXE_order-query");
    let logs: Vec<PathBuf> = (0..4).map(|i| log_file(&format!("query_{i}"))).collect();
    let mut children: Vec<Child> = (0..3)
        .map(|i| system.spawn(binary, free_port(), &logs[i]))
        .collect();
    support::wait_until(CONVERGED, "three instances in the group", || async {
        logs[..3]
            .iter()
            .all(|log| log_text(log).contains("partitions assigned"))
    })
    .await;

    // 1,000 orders × 3 commands from 8 tasks; kill -9 an instance halfway.
    let sent = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (mut client, sent) = (command.client.clone(), sent.clone());
            tokio::spawn(async move {
                let mut acked = vec![];
                for i in (task..1_000).step_by(8) {
                    three_commands(&mut client, i, &mut acked)
                        .await
                        .expect("commands are accepted");
                    sent.fetch_add(3, Ordering::SeqCst);
                }
                acked
            })
        })
        .collect();
    support::wait_until(CONVERGED, "half of the commands", || async {
        sent.load(Ordering::SeqCst) >= 1_500
    })
    .await;
    children[0].kill().expect("kill -9");
    children[0].wait().unwrap();
    let survivors_before: Vec<usize> = logs[1..3].iter().map(|l| log_text(l).len()).collect();
    children.push(system.spawn(binary, free_port(), &logs[3]));
    let mut acked = vec![];
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 3_000);

    let verified = system.verify_quiescent().await;
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!((verified.orders, verified.events), (1_000, 3_000));
    assert_eq!(system.store_counts().await, (1_000, 3_000));
    // The killed instance's partitions were assigned again after the kill,
    // to a survivor or the newcomer (rebalances are incremental: the
    // survivors keep consuming what they hold); the newcomer got some.
    let killed_log = log_text(&logs[0]);
    let killed: BTreeSet<i32> = assigned_in(&killed_log)
        .difference(&revoked_in(&killed_log))
        .copied()
        .collect();
    assert!(!killed.is_empty(), "the killed instance held partitions");
    let mut taken = assigned_in(&log_text(&logs[3]));
    assert!(!taken.is_empty(), "the newcomer was assigned partitions");
    for (log, before) in logs[1..3].iter().zip(survivors_before) {
        taken.extend(assigned_in(&log_text(log)[before..]));
    }
    assert!(
        killed.is_subset(&taken),
        "the killed instance's partitions {killed:?} were taken over after the kill (assigned: {taken:?})"
    );
    kill_all(&mut children);
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    command.stop().await;
}

/// The pid in the leader's `application_name` (`orders-relay host=… pid=<pid>`).
async fn leader_pid(system: &System) -> Option<u32> {
    let leader = relay_leader(&system.write).await.ok()??;
    leader
        .application_name
        .rsplit_once("pid=")
        .and_then(|(_, pid)| pid.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_relay_leader_mid_stream_hands_over_within_seconds_and_loses_nothing() {
    let system = System::new("a_relay").await;
    let query = system.start_query().await;
    let binary = env!("CARGO_BIN_EXE_order-command");
    let logs = [log_file("command_0"), log_file("command_1")];
    let ports = [free_port(), free_port()];
    let mut children: Vec<Child> = (0..2)
        .map(|i| system.spawn(binary, ports[i], &logs[i]))
        .collect();
    let clients = [
        command::connect(ports[0]).await,
        command::connect(ports[1]).await,
    ];
    support::wait_until(CONVERGED, "a relay leader", || async {
        leader_pid(&system).await.is_some()
    })
    .await;
    let pid = leader_pid(&system).await.unwrap();
    let leader = children
        .iter()
        .position(|c| c.id() == pid)
        .expect("one of the two processes leads");
    let survivor = 1 - leader;

    // Commands to both instances from 8 tasks; kill -9 the leader halfway.
    let (stop, sent) = (StopFlag::default(), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (clients, stop, sent) = (clients.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let (mut acked, mut failed) = (vec![], 0);
                for i in (task..600).step_by(8) {
                    // After the kill, only the survivor is addressed.
                    let target = if stop.stopped() { survivor } else { i % 2 };
                    let mut client = clients[target].clone();
                    if lifecycle(&mut client, "relay", i, &mut acked)
                        .await
                        .is_err()
                    {
                        failed += 1;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                (acked, failed)
            })
        })
        .collect();
    support::wait_until(CONVERGED, "half of the orders", || async {
        sent.load(Ordering::SeqCst) >= 300
    })
    .await;
    let backlog_at_kill: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&system.write)
        .await
        .unwrap();
    children[leader].kill().expect("kill -9");
    children[leader].wait().unwrap();
    stop.stop();
    let killed = Instant::now();
    let survivor_pid = children[survivor].id();
    support::wait_until(Duration::from_secs(10), "the standby to lead", || async {
        leader_pid(&system).await == Some(survivor_pid)
    })
    .await;
    let takeover = killed.elapsed();
    let (mut acked, mut failed) = (vec![], 0);
    for task in tasks {
        let (a, f) = task.await.unwrap();
        acked.extend(a);
        failed += f;
    }

    support::wait_until(CONVERGED, "the outbox to drain", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&system.write)
            .await
            .unwrap()
            == 0
    })
    .await;
    let stored: Vec<(String, u64)> =
        sqlx::query_as::<_, (uuid::Uuid, i64)>("SELECT order_id, version FROM events")
            .fetch_all(&system.write)
            .await
            .unwrap()
            .into_iter()
            .map(|(o, v)| (o.to_string(), v as u64))
            .collect();
    for ack in &acked {
        assert!(stored.contains(ack), "acknowledged {ack:?} is stored");
    }
    assert_topic_holds(&system.kafka, &stored).await;
    let verified = system.verify_quiescent().await;
    assert!(verified.is_clean(), "{:?}", verified.differences);
    assert_eq!(
        (verified.orders, verified.events),
        system.store_counts().await
    );
    assert!(
        takeover < Duration::from_secs(5),
        "the standby took over in {takeover:?}"
    );
    eprintln!(
        "relay failover: leader killed with {backlog_at_kill} events in the outbox; the standby \
         led {takeover:?} later; {} commands acknowledged, {failed} orders cut short by the kill",
        acked.len()
    );
    kill_all(&mut children);
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    query.stop().await;
}

#[test]
fn the_rebalance_log_lines_are_read_back() {
    let log = "INFO orders::query::projector: partitions assigned partitions=[(1, Stored(Some(4))), (0, Stored(None))]\n\
               INFO orders::query::projector: partitions revoked partitions=[1] lost=false\n\
               INFO orders::query::projector: partitions assigned partitions=[(2, Unknown)]\n";
    assert_eq!(assigned_in(log), BTreeSet::from([0, 1, 2]));
    assert_eq!(revoked_in(log), BTreeSet::from([1]));
}
