//! Prometheus text exposition: lock-free counters and fixed-bucket
//! histograms, and a minimal HTTP/1.1 endpoint serving `GET /metrics`.
//!
//! Histograms keep one atomic counter per bucket, so recording is a few
//! relaxed atomic adds and never blocks the projector or a request.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

/// Upper bounds of latency buckets, in seconds (100 µs to 10 s).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds of size buckets (events per batch).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// A histogram with fixed bucket bounds; the sum is kept in micro-units.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        let value = value.max(0.0);
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    /// Records one duration, in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram in Prometheus text format; `labels` is either
    /// empty or `key="value"` pairs without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Appends a `# TYPE` line.
pub fn type_line(out: &mut String, name: &str, kind: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends one counter with its `# TYPE` line.
pub fn counter(out: &mut String, name: &str, value: &AtomicU64) {
    type_line(out, name, "counter");
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

/// What the endpoint serves: the whole exposition, rendered per scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` for `serve`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` (any other path: 404) on `listener` until `stop`.
/// One short-lived connection per scrape; each is bounded by a timeout.
pub async fn serve(listener: TcpListener, render: Render, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                let mut request = Vec::with_capacity(512);
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&request);
                let (status, body) = if line.starts_with("GET /metrics ") {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "not found\n".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
            if let Ok(Err(error)) = answered {
                tracing::debug!(%error, "metrics scrape failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(0.0005);
        h.observe(0.001);
        h.observe(0.005);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "phase=\"load\"");
        assert!(out.contains("x_seconds_bucket{phase=\"load\",le=\"0.001\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{phase=\"load\",le=\"0.01\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{phase=\"load\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_seconds_count{phase=\"load\"} 4\n"));
        assert!(out.contains("x_seconds_sum{phase=\"load\"} 3.0065\n"));
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn unlabelled_histograms_have_no_braces_on_sum() {
        let h = Histogram::new(SIZE_BUCKETS);
        h.observe(7.0);
        let mut out = String::new();
        h.render(&mut out, "b", "");
        assert!(out.contains("b_bucket{le=\"10\"} 1\n"));
        assert!(out.contains("b_sum 7\n"));
    }
}
