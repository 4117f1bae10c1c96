//! Background tasks of a server, watched. A task that panics, or ends while
//! the server is still meant to run, is logged and stops the server with an
//! error, so that the process exits non-zero and whatever supervises it
//! restarts it, instead of serving on with a dead writer, relay or projector.

use std::{collections::HashMap, future::Future};

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// A background task that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("background task {task} {reason}")]
pub struct TaskFailed {
    /// The task's name.
    pub task: &'static str,
    /// What became of it.
    pub reason: String,
}

/// Watches a server's background tasks.
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// Cancelled once the tasks are expected to end (the server is stopping).
    ending: CancellationToken,
    /// Cancelled by the supervisor when a task fails: the server stops.
    failed: CancellationToken,
    /// Test hook: the task with this name panics when it starts.
    fault_panic: Option<String>,
}

impl Supervisor {
    /// Tasks may end once `ending` is cancelled; before that, an end is a failure.
    pub fn new(ending: CancellationToken, fault_panic: Option<String>) -> Self {
        if let Some(task) = &fault_panic {
            tracing::warn!(
                task,
                "FAULT INJECTION ARMED: this background task panics when it starts \
                 (ORDERS_FAULT_PANIC_TASK; for tests only)"
            );
        }
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            ending,
            failed: CancellationToken::new(),
            fault_panic,
        }
    }

    /// Cancelled when a task has failed; the server should stop serving.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    /// Runs `task` under supervision.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let panics = self.fault_panic.as_deref() == Some(name);
        let handle = self.tasks.spawn(async move {
            assert!(!panics, "fault injection: task {name} panics");
            task.await;
        });
        self.names.insert(handle.id(), name);
    }

    /// Waits for every task to end. The first that panicked or ended before
    /// `ending` fails the server: it is logged, `failed()` is cancelled so the
    /// server stops, and it is returned once the others have ended too.
    pub async fn watch(mut self) -> Result<(), TaskFailed> {
        let mut first = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let (id, reason) = match joined {
                Ok((id, ())) if self.ending.is_cancelled() => (id, None),
                Ok((id, ())) => (id, Some("ended while the server was running".to_owned())),
                Err(error) if error.is_panic() => {
                    let id = error.id();
                    (id, Some(format!("panicked: {}", panic_message(error))))
                }
                Err(error) => (error.id(), Some("was cancelled".to_owned())),
            };
            let task = self.names.get(&id).copied().unwrap_or("?");
            let Some(reason) = reason else { continue };
            tracing::error!(task, %reason, "background task failed; stopping the server");
            first.get_or_insert(TaskFailed { task, reason });
            self.failed.cancel();
        }
        first.map_or(Ok(()), Err)
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_after_the_server_stops_is_no_failure() {
        let ending = CancellationToken::new();
        let mut supervisor = Supervisor::new(ending.clone(), None);
        let stop = ending.clone();
        supervisor.spawn("worker", async move { stop.cancelled().await });
        ending.cancel();
        assert!(supervisor.watch().await.is_ok());
    }

    #[tokio::test]
    async fn a_task_that_ends_early_fails_the_server() {
        let ending = CancellationToken::new();
        let mut supervisor = Supervisor::new(ending.clone(), None);
        let failed = supervisor.failed();
        supervisor.spawn("worker", async {});
        let error = supervisor.watch().await.expect_err("an early end fails");
        assert_eq!(error.task, "worker");
        assert!(failed.is_cancelled());
    }

    #[tokio::test]
    async fn a_panicking_task_fails_the_server_with_its_message() {
        let ending = CancellationToken::new();
        let mut supervisor = Supervisor::new(ending.clone(), Some("relay".into()));
        let stop = ending.clone();
        supervisor.spawn("writer", async move { stop.cancelled().await });
        supervisor.spawn("relay", async {});
        let failed = supervisor.failed();
        let watching = tokio::spawn(supervisor.watch());
        failed.cancelled().await;
        ending.cancel();
        let error = watching.await.unwrap().expect_err("a panic fails");
        assert_eq!(error.task, "relay");
        assert!(error.reason.contains("fault injection"), "{}", error.reason);
    }
}
