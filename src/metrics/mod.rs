//! Prometheus metrics: one registry per server (`Metrics`), the gRPC server
//! metrics every server shares (`grpc`), the process and build facts
//! (`process`), and the endpoint that serves `GET /metrics`.
//!
//! The metric types and the exposition come from the `prometheus-client`
//! crate. A scrape gets the Prometheus text format (0.0.4), or OpenMetrics
//! when its `Accept` header asks for it (Prometheus does).

pub mod grpc;
pub mod process;

use std::{
    fmt,
    net::SocketAddr,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, text},
    registry::{Metric, Registry},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

pub use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};

/// A gauge holding a float (ages, timestamps).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Upper bounds of latency buckets, in seconds (100 µs to 10 s).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds of size buckets (commands or events per batch).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// A histogram over `bounds`.
pub fn histogram(bounds: &'static [f64]) -> Histogram {
    Histogram::new(bounds.iter().copied())
}

/// A server's metrics registry; cheap to clone. Components register their
/// metrics while the server is built; each scrape encodes them all.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry holding the process metrics and `orders_build_info` of `service`.
    pub fn for_service(service: &'static str) -> Self {
        let metrics = Self::default();
        metrics.collect(process::ProcessCollector::new(service));
        metrics
    }

    /// Registers `metric` as `name` (counters without their `_total`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a collector, asked for its metrics on every scrape.
    pub fn collect(&self, collector: impl Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// Every registered metric, in OpenMetrics text or else the Prometheus
    /// text format.
    pub fn encode(&self, openmetrics: bool) -> String {
        let registry = self.lock();
        let mut out = String::with_capacity(16 * 1024);
        let encoded = if openmetrics {
            text::encode(&mut out, &registry)
        } else {
            prometheus_text::encode(&mut out, &registry)
        };
        if let Err(error) = encoded {
            tracing::error!(%error, "cannot encode the metrics");
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where a server serves `/metrics`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl FromStr for MetricsAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" | "none" => Ok(Self(None)),
            addr => addr.parse().map(|a| Self(Some(a))),
        }
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Binds `addr` for `serve`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Most bytes of a scrape's request head.
const MAX_REQUEST_HEAD: usize = 8192;

/// Serves `GET /metrics` (any other path: 404) on `listener` until `stop`.
/// One short-lived connection per scrape; each is bounded by a timeout.
pub async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                let mut request = Vec::with_capacity(512);
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n")
                    && request.len() < MAX_REQUEST_HEAD
                {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&request);
                let (status, content_type, body) =
                    if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                        let openmetrics = accepts_openmetrics(&head);
                        let content_type = if openmetrics {
                            "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        } else {
                            prometheus_text::CONTENT_TYPE
                        };
                        ("200 OK", content_type, metrics.encode(openmetrics))
                    } else {
                        ("404 Not Found", "text/plain", "not found\n".to_owned())
                    };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n\
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

/// Whether a request head's `Accept` header names OpenMetrics text.
fn accepts_openmetrics(head: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_formats_follow_the_accept_header() {
        let metrics = Metrics::default();
        let counter = Counter::<u64>::default();
        metrics.register("orders_things", "Things.", counter.clone());
        counter.inc_by(3);
        let text = metrics.encode(false);
        assert!(
            text.contains("# TYPE orders_things_total counter\n"),
            "{text}"
        );
        assert!(text.contains("orders_things_total 3\n"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode(true).ends_with("# EOF\n"));
        assert!(accepts_openmetrics(
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
        ));
        assert!(!accepts_openmetrics(
            "GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"
        ));
    }

    #[test]
    fn a_metrics_address_may_be_off() {
        assert_eq!("off".parse::<MetricsAddr>().unwrap(), MetricsAddr(None));
        assert_eq!(
            "127.0.0.1:9464".parse::<MetricsAddr>().unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert!("nine".parse::<MetricsAddr>().is_err());
    }
}
