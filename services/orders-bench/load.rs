//! The load loop: closed loop (N clients, each sending its next request when
//! the last is answered) or open loop (requests start at a fixed rate whatever
//! the answers, latency measured from each request's intended start, so
//! queueing behind a slow answer is never hidden). Every run is bounded by a
//! count and a duration; a progress bar on stderr shows the rate and errors.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// What one iteration reports: an extra interval to record beside its latency
/// (read-your-writes records ack → visible here).
pub type Outcome = Result<Option<Duration>, tonic::Status>;

/// How a run is bounded and paced.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub count: u64,
    pub duration: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

struct Recorder {
    latency: Mutex<Histogram<u64>>,
    extra: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            latency: Mutex::new(histogram()),
            extra: Mutex::new(histogram()),
            errors: Mutex::new(BTreeMap::new()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    async fn record(&self, started: Instant, outcome: Outcome) {
        match outcome {
            Ok(extra) => {
                let micros = started.elapsed().as_micros().max(1) as u64;
                self.latency.lock().await.saturating_record(micros);
                if let Some(extra) = extra {
                    let micros = extra.as_micros().max(1) as u64;
                    self.extra.lock().await.saturating_record(micros);
                }
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "request failed");
                *self
                    .errors
                    .lock()
                    .await
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
        "max": h.max() as f64 / 1000.0, "count": h.len(),
    })
}

fn progress(plan: &Plan, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(plan.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:30}] {elapsed:>4} {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `iteration(n)` under `plan` and returns the summary: throughput,
/// latency percentiles, the extra interval's percentiles when any were
/// reported, and errors by gRPC code.
pub async fn run<F, Fut>(plan: Plan, label: &str, iteration: F) -> Value
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let recorder = Arc::new(Recorder::new());
    let started = Instant::now();
    let bar = progress(&plan, label);
    let ticker = {
        let (recorder, bar) = (recorder.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let elapsed = started.elapsed();
                let ok = recorder.ok.load(Ordering::Relaxed);
                let failed = recorder.failed.load(Ordering::Relaxed);
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!(
                    "{:>8.0}/s  ok {ok}  errors {failed}",
                    ok as f64 / elapsed.as_secs_f64().max(0.001)
                ));
            }
        })
    };

    let mut tasks = Vec::new();
    match plan.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..plan.concurrency.max(1) {
                let (recorder, next, iteration) =
                    (recorder.clone(), next.clone(), iteration.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= plan.count || started.elapsed() >= plan.duration {
                            break;
                        }
                        let t = Instant::now();
                        let outcome = iteration(n).await;
                        recorder.record(t, outcome).await;
                    }
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            // Bounds the requests in flight when the server falls behind; their
            // latency still counts from the intended start.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1) * 64));
            let mut n = 0u64;
            while n < plan.count {
                let intended = started + interval.mul_f64(n as f64);
                if intended.duration_since(started) >= plan.duration {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                let (recorder, iteration) = (recorder.clone(), iteration.clone());
                tasks.push(tokio::spawn(async move {
                    let outcome = iteration(n).await;
                    recorder.record(intended, outcome).await;
                    drop(permit);
                }));
                n += 1;
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let latency = recorder.latency.lock().await;
    let extra = recorder.extra.lock().await;
    let errors = recorder.errors.lock().await;
    let ok = latency.len();
    let mut summary = json!({
        "mode": if plan.rate.is_some() { "open" } else { "closed" },
        "concurrency": plan.concurrency,
        "offered_rate": plan.rate,
        "ok": ok,
        "failed": recorder.failed.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "throughput_per_s": ok as f64 / elapsed,
        "latency_ms": percentiles(&latency),
        "errors": *errors,
    });
    if !extra.is_empty() {
        summary["lag_ms"] = percentiles(&extra);
    }
    summary
}

/// Samples the resident set size of processes while a run goes on.
pub struct RssSampler {
    samples: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
    task: tokio::task::JoinHandle<()>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

impl RssSampler {
    /// Starts sampling every 250 ms; `watched` is (name, pid).
    pub fn start(watched: Vec<(String, u32)>) -> Self {
        let samples = Arc::new(Mutex::new(BTreeMap::<String, Vec<u64>>::new()));
        let task = {
            let samples = samples.clone();
            tokio::spawn(async move {
                loop {
                    for (name, pid) in &watched {
                        if let Some(kib) = rss_kib(*pid) {
                            samples
                                .lock()
                                .await
                                .entry(name.clone())
                                .or_default()
                                .push(kib);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        Self { samples, task }
    }

    /// Stops sampling; per process: the peak and the median RSS in MiB.
    pub async fn finish(self) -> Value {
        self.task.abort();
        let samples = self.samples.lock().await;
        let mut out = serde_json::Map::new();
        for (name, values) in samples.iter() {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let mib = |kib: u64| kib as f64 / 1024.0;
            out.insert(
                name.clone(),
                json!({
                    "max_mib": mib(*sorted.last().unwrap_or(&0)),
                    "median_mib": mib(sorted.get(sorted.len() / 2).copied().unwrap_or(0)),
                    "samples": sorted.len(),
                }),
            );
        }
        Value::Object(out)
    }
}
