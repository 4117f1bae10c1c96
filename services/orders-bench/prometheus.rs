//! Prometheus text exposition: one scrape of `/metrics` over plain HTTP/1.1,
//! the samples read out of it, and histograms with their difference between
//! two scrapes and their percentiles.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Longest one scrape may take, connection included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read; a metrics page is a few kilobytes.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Where a server serves its metrics: `http://host:port/path` (the path
/// defaults to `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    authority: String,
    path: String,
}

impl MetricsUrl {
    /// `http://<addr>/metrics`.
    pub fn for_addr(addr: std::net::SocketAddr) -> Self {
        Self {
            authority: addr.to_string(),
            path: "/metrics".into(),
        }
    }
}

impl FromStr for MetricsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or("expected http://host:port/path")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err("expected host:port after http://".into()),
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: if path.is_empty() { "/metrics" } else { path }.to_owned(),
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// One sample line: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// Every sample of one scrape, in the order served. The default is the
/// scrape of a process that has counted nothing yet.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

/// GETs `url` and parses the body; bounded by [`SCRAPE_TIMEOUT`].
pub async fn scrape(url: &MetricsUrl) -> anyhow::Result<Scrape> {
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, get(url))
        .await
        .with_context(|| format!("no answer within {SCRAPE_TIMEOUT:?}"))??;
    Scrape::parse(&body)
}

async fn get(url: &MetricsUrl) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(&url.authority)
        .await
        .with_context(|| format!("connect to {}", url.authority))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    body_of(&response)
}

/// The body of a `200` response, de-chunked when it came chunked.
fn body_of(response: &[u8]) -> anyhow::Result<String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "answered {status:?}"
    );
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).context("the body is not UTF-8")
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size = std::str::from_utf8(&body[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).context("truncated chunk")?);
        body = body[size..]
            .strip_prefix(b"\r\n")
            .context("chunk not followed by CRLF")?;
    }
}

impl Scrape {
    /// Parses the text format; comments and blank lines are skipped, a line
    /// that is not a sample is an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let samples = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .map(|(n, line)| {
                parse_sample(line.trim()).with_context(|| format!("line {}: {line:?}", n + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { samples })
    }

    /// The value of the first sample named `name` that carries `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
    }

    /// The values `label` takes on samples named `name`, in served order.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for value in self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label))
        {
            if !values.contains(value) {
                values.push(value.clone());
            }
        }
        values
    }

    /// Histogram `name` (its `_bucket`, `_sum` and `_count` samples) among
    /// the series that carry `labels`; `None` when it has no bucket.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let bucket_name = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == bucket_name && s.has(labels))
            .filter_map(|s| Some((s.labels.get("le")?.parse::<f64>().ok()?, s.value)))
            .collect();
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = self
            .value(&format!("{name}_count"), labels)
            .unwrap_or(buckets[buckets.len() - 1].1);
        Some(Histogram {
            buckets,
            sum: self.value(&format!("{name}_sum"), labels).unwrap_or(0.0),
            count,
        })
    }
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = &line[..name_end];
    anyhow::ensure!(!name.is_empty(), "no metric name");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().context("no value")?;
    let value = value
        .parse()
        .with_context(|| format!("bad value {value:?}"))?;
    // An optional timestamp may follow; nothing else may.
    anyhow::ensure!(
        fields.next().is_none_or(|t| t.parse::<i64>().is_ok()) && fields.next().is_none(),
        "unexpected text after the value"
    );
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `name="value",…}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> anyhow::Result<&'a str> {
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let (name, after) = rest.split_once('=').context("label without '='")?;
        let mut chars = after
            .strip_prefix('"')
            .context("label value not quoted")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().context("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().context("unterminated escape")?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        rest = &after[1 + end + 1..];
    }
}

/// A cumulative histogram: `(upper bound, observations ≤ it)` by ascending
/// bound, the last one `+Inf`, with the sum and count of the observations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// What was observed between `before` and `self`. A count that went down
    /// means the process restarted in between: then all of `self` is new.
    pub fn since(&self, before: &Histogram) -> Histogram {
        if before.count > self.count {
            return self.clone();
        }
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |&(_, n)| n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, (n - earlier(le)).max(0.0)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The mean observation; `None` when there is none.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The highest finite bucket bound: [`Histogram::quantile`] answers no
    /// more than this.
    pub fn top_bound(&self) -> Option<f64> {
        self.buckets
            .iter()
            .rev()
            .map(|&(le, _)| le)
            .find(|le| le.is_finite())
    }

    /// The `q`-quantile (0 < q ≤ 1), interpolated linearly inside the bucket
    /// it falls in, as PromQL's `histogram_quantile` does: the first bucket
    /// starts at 0, and a quantile in the `+Inf` bucket is the highest finite
    /// bound. `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (cumulative - below));
            }
            (lower, below) = (le, cumulative);
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP projector_batches_total Batches committed.
# TYPE projector_batches_total counter
projector_batches_total 12
projector_events_applied_total 3400
projector_duplicates_total 0
# TYPE projector_phase_seconds histogram
projector_phase_seconds_bucket{phase="fetch",le="0.0001"} 3
projector_phase_seconds_bucket{phase="fetch",le="0.001"} 8
projector_phase_seconds_bucket{phase="fetch",le="0.01"} 11
projector_phase_seconds_bucket{phase="fetch",le="+Inf"} 12
projector_phase_seconds_sum{phase="fetch"} 0.123
projector_phase_seconds_count{phase="fetch"} 12
projector_phase_seconds_bucket{phase="write",le="0.0001"} 0
projector_phase_seconds_bucket{phase="write",le="0.001"} 2
projector_phase_seconds_bucket{phase="write",le="0.01"} 12
projector_phase_seconds_bucket{phase="write",le="+Inf"} 12
projector_phase_seconds_sum{phase="write"} 0.06
projector_phase_seconds_count{phase="write"} 12
odd_label{path="a \"quoted\" \\ back\nslash",code="200"} 1.5e3 1700000000000
"#;

    #[test]
    fn samples_are_read_with_their_labels_and_values() {
        let scrape = Scrape::parse(SAMPLE).expect("parses");
        assert_eq!(scrape.value("projector_batches_total", &[]), Some(12.0));
        assert_eq!(
            scrape.value("projector_phase_seconds_count", &[("phase", "write")]),
            Some(12.0)
        );
        assert_eq!(scrape.value("read_cache_hits_total", &[]), None);
        assert_eq!(scrape.value("odd_label", &[("code", "200")]), Some(1500.0));
        assert_eq!(
            scrape.label_values("odd_label", "path"),
            ["a \"quoted\" \\ back\nslash"]
        );
        assert_eq!(
            scrape.label_values("projector_phase_seconds_count", "phase"),
            ["fetch", "write"]
        );
    }

    #[test]
    fn a_histogram_is_picked_out_by_its_labels() {
        let scrape = Scrape::parse(SAMPLE).expect("parses");
        let fetch = scrape
            .histogram("projector_phase_seconds", &[("phase", "fetch")])
            .expect("fetch histogram");
        assert_eq!(
            fetch.buckets,
            [
                (0.0001, 3.0),
                (0.001, 8.0),
                (0.01, 11.0),
                (f64::INFINITY, 12.0)
            ]
        );
        assert_eq!((fetch.sum, fetch.count), (0.123, 12.0));
        assert!(
            scrape
                .histogram("projector_phase_seconds", &[("phase", "notify")])
                .is_none()
        );
    }

    #[test]
    fn lines_that_are_not_samples_are_rejected() {
        assert!(Scrape::parse("projector_batches_total").is_err());
        assert!(Scrape::parse("projector_batches_total twelve").is_err());
        assert!(Scrape::parse("m{phase=\"fetch} 1").is_err());
        assert!(Scrape::parse("m{phase=fetch} 1").is_err());
        assert!(Scrape::parse("m 1 2 3").is_err());
        assert!(Scrape::parse("\n# only a comment\n").is_ok());
    }

    fn histogram(buckets: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: buckets.to_vec(),
            sum: 0.0,
            count: buckets.last().map_or(0.0, |b| b.1),
        }
    }

    #[test]
    fn quantiles_interpolate_linearly_inside_their_bucket() {
        // 10 observations ≤ 1, 30 in (1, 2], none in (2, 5], 10 above 5.
        let h = histogram(&[(1.0, 10.0), (2.0, 40.0), (5.0, 40.0), (f64::INFINITY, 50.0)]);
        // rank 5 of 10 in the first bucket, which starts at 0.
        assert_eq!(h.quantile(0.1), Some(0.5));
        // rank 25: 15 of the 30 in (1, 2].
        assert_eq!(h.quantile(0.5), Some(1.5));
        // rank 40 is the last of (1, 2]; the empty (2, 5] is not chosen.
        assert_eq!(h.quantile(0.8), Some(2.0));
        // rank 49.5 falls in +Inf: the highest finite bound.
        assert_eq!(h.quantile(0.99), Some(5.0));
        assert_eq!(h.top_bound(), Some(5.0));
        assert_eq!(
            histogram(&[(1.0, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5),
            None
        );
    }

    #[test]
    fn the_difference_of_two_scrapes_holds_only_the_window() {
        let before = Histogram {
            buckets: vec![(1.0, 4.0), (2.0, 6.0), (f64::INFINITY, 6.0)],
            sum: 7.0,
            count: 6.0,
        };
        let after = Histogram {
            buckets: vec![(1.0, 4.0), (2.0, 16.0), (f64::INFINITY, 16.0)],
            sum: 22.0,
            count: 16.0,
        };
        let window = after.since(&before);
        assert_eq!(
            window.buckets,
            [(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(window.mean(), Some(1.5));
        assert_eq!(window.quantile(0.5), Some(1.5));
        // A restart in between: the counts went down, all of `after` is new.
        assert_eq!(before.since(&after), before);
        // Nothing before (a new process): the whole histogram.
        assert_eq!(after.since(&Histogram::default()), after);
    }

    #[test]
    fn a_response_body_is_found_plain_or_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nm 1\n";
        assert_eq!(body_of(plain).expect("plain"), "m 1\n");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nm 1\n\r\n5;x=y\r\nn 22\n\r\n0\r\n\r\n";
        assert_eq!(body_of(chunked).expect("chunked"), "m 1\nn 22\n");
        assert!(body_of(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(body_of(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[tokio::test]
    async fn a_scrape_reads_the_page_a_server_sends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let url: MetricsUrl = format!("http://{addr}/metrics").parse().expect("url");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0; 1024];
            let n = socket.read(&mut request).await.expect("read");
            let body = "projector_batches_total 7\n";
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let scrape = scrape(&url).await.expect("scrapes");
        assert_eq!(scrape.value("projector_batches_total", &[]), Some(7.0));
        let request = server.await.expect("server");
        assert!(
            request.starts_with("GET /metrics HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Connection: close\r\n"), "{request}");
    }

    #[test]
    fn metrics_urls_need_a_host_and_port() {
        let url: MetricsUrl = "http://127.0.0.1:30161/metrics".parse().expect("parses");
        assert_eq!(url.to_string(), "http://127.0.0.1:30161/metrics");
        let bare: MetricsUrl = "http://localhost:9465".parse().expect("parses");
        assert_eq!(bare.to_string(), "http://localhost:9465/metrics");
        assert!("https://127.0.0.1:1/metrics".parse::<MetricsUrl>().is_err());
        assert!("http://127.0.0.1/metrics".parse::<MetricsUrl>().is_err());
        assert!("http://:80/metrics".parse::<MetricsUrl>().is_err());
    }
}
