//! Observability on the real stack: both servers' `/metrics` parsed by a
//! Prometheus text parser during a workload (`metrics`), and one trace across
//! both server binaries, exported over OTLP to a collector in the test
//! (`traces`).

mod metrics;
mod traces;

use std::{collections::HashSet, time::Duration};

use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetches `GET /metrics` from `127.0.0.1:port` and parses it.
pub async fn scrape(port: u16) -> Scrape {
    let fetched = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    })
    .await
    .expect("the scrape answers within 10 s")
    .expect("the scrape succeeds");
    let (head, body) = fetched.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses as Prometheus text")
}

/// The metric names in `scrape`, histograms and summaries by their base name.
pub fn names(scrape: &Scrape) -> HashSet<String> {
    scrape.samples.iter().map(|s| s.metric.clone()).collect()
}

/// The sum of the samples of `name` whose labels include `labels`; a
/// histogram counts its observations.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}
