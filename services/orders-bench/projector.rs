//! What order-query's `/metrics` say about the projector over one window of
//! a run: time per batch in each phase, events per batch, the two shares of
//! read-your-writes lag (the relay's: event → Kafka record; the projector's:
//! Kafka record → commit) and its counters, from the difference of two
//! scrapes. `run` and `catch-up` write it, the report reads it back.

use serde::{Deserialize, Serialize};

use crate::prometheus::{self, Histogram, MetricsUrl, Scrape};

/// The projector's phases in the order a batch goes through them.
pub const PHASES: [&str; 6] = ["fetch", "decode", "load", "write", "commit", "notify"];

const PHASE_SECONDS: &str = "orders_projector_batch_seconds";
const BATCH_EVENTS: &str = "orders_projector_batch_events";
const RELAY_LAG_SECONDS: &str = "orders_projector_relay_lag_seconds";
const COMMIT_LAG_SECONDS: &str = "orders_projector_commit_lag_seconds";

/// The projector over one window of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorStats {
    /// Time per batch in each phase, in pipeline order.
    pub phases: Vec<PhaseStats>,
    /// Events per batch.
    pub batch_events: Spread,
    /// Event `occurred_at` → Kafka record timestamp (the relay's share), ms.
    pub relay_lag_ms: Spread,
    /// Kafka record timestamp → projector commit (the projector's share), ms.
    pub commit_lag_ms: Spread,
    /// What the counters went up by.
    pub counters: Counters,
    /// Read cache hits over hits and misses, when any read was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<f64>,
}

/// One phase: per-batch time in milliseconds and how many batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub phase: String,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub count: u64,
    /// The highest finite bucket bound: a percentile this high lies at or
    /// beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_ms: Option<f64>,
}

/// Mean, median and 99th percentile of a histogram; `None` when empty.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Spread {
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// The highest finite bucket bound: a percentile this high lies at or
    /// beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<f64>,
}

/// Increments of the projector's counters (and the read cache's, 0 when the
/// server does not count them).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub batches: u64,
    pub events_applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub dead_letters: u64,
    pub fenced: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Spread {
    fn of(h: &Histogram, scale: f64) -> Self {
        Self {
            mean: h.mean().map(|v| v * scale),
            p50: h.quantile(0.5).map(|v| v * scale),
            p99: h.quantile(0.99).map(|v| v * scale),
            top: h.top_bound().map(|v| v * scale),
        }
    }
}

impl ProjectorStats {
    /// The projector between two scrapes of the same server; `before` is
    /// [`Scrape::default`] for a process scraped once, at the end.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
        let window = |name: &str, labels: &[(&str, &str)]| {
            let after = after.histogram(name, labels).unwrap_or_default();
            after.since(&before.histogram(name, labels).unwrap_or_default())
        };
        let increase = |name: &str| {
            let (a, b) = (
                after.value(name, &[]).unwrap_or(0.0),
                before.value(name, &[]).unwrap_or(0.0),
            );
            // A counter that went down was reset by a restart: all of it is new.
            (if a < b { a } else { a - b }).round() as u64
        };
        let mut phases = after.label_values(&format!("{PHASE_SECONDS}_count"), "phase");
        phases.sort_by_key(|p| {
            PHASES
                .iter()
                .position(|known| known == p)
                .unwrap_or(PHASES.len())
        });
        let phases = phases
            .into_iter()
            .map(|phase| {
                let h = window(PHASE_SECONDS, &[("phase", phase.as_str())]);
                let Spread {
                    mean,
                    p50,
                    p99,
                    top,
                } = Spread::of(&h, 1000.0);
                PhaseStats {
                    phase,
                    mean_ms: mean,
                    p50_ms: p50,
                    p99_ms: p99,
                    top_ms: top,
                    count: h.count.round() as u64,
                }
            })
            .collect();
        let counters = Counters {
            batches: increase("orders_projector_batches_total"),
            events_applied: increase("orders_projector_applied_total"),
            duplicates: increase("orders_projector_duplicates_total"),
            gaps: increase("orders_projector_gaps_total"),
            dead_letters: increase("orders_projector_dead_letters_total"),
            fenced: increase("orders_projector_fenced_total"),
            cache_hits: increase("orders_read_cache_hits_total"),
            cache_misses: increase("orders_read_cache_misses_total"),
        };
        let reads = counters.cache_hits + counters.cache_misses;
        Self {
            phases,
            batch_events: Spread::of(&window(BATCH_EVENTS, &[]), 1.0),
            relay_lag_ms: Spread::of(&window(RELAY_LAG_SECONDS, &[]), 1000.0),
            commit_lag_ms: Spread::of(&window(COMMIT_LAG_SECONDS, &[]), 1000.0),
            counters,
            cache_hit_ratio: (reads > 0).then(|| counters.cache_hits as f64 / reads as f64),
        }
    }
}

/// Scrapes `url`; on failure warns on stderr and returns `None`, so that a
/// server without metrics costs the run its projector figures, not the run.
pub async fn scrape_or_warn(url: &MetricsUrl) -> Option<Scrape> {
    match prometheus::scrape(url).await {
        Ok(scrape) => Some(scrape),
        Err(e) => {
            eprintln!("orders-bench: warning: no projector figures, scraping {url} failed: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(batches: u64, fetch_fast: u64, fetch_slow: u64, hits: Option<u64>) -> Scrape {
        let mut text = format!(
            "# TYPE orders_projector_batches_total counter\n\
             orders_projector_batches_total {batches}\n\
             orders_projector_applied_total {events}\n\
             orders_projector_batch_seconds_bucket{{phase=\"write\",le=\"0.001\"}} {batches}\n\
             orders_projector_batch_seconds_bucket{{phase=\"write\",le=\"+Inf\"}} {batches}\n\
             orders_projector_batch_seconds_sum{{phase=\"write\"}} {write_sum}\n\
             orders_projector_batch_seconds_count{{phase=\"write\"}} {batches}\n\
             orders_projector_batch_seconds_bucket{{phase=\"fetch\",le=\"0.001\"}} {fetch_fast}\n\
             orders_projector_batch_seconds_bucket{{phase=\"fetch\",le=\"0.01\"}} {batches}\n\
             orders_projector_batch_seconds_bucket{{phase=\"fetch\",le=\"+Inf\"}} {batches}\n\
             orders_projector_batch_seconds_sum{{phase=\"fetch\"}} {fetch_sum}\n\
             orders_projector_batch_seconds_count{{phase=\"fetch\"}} {batches}\n\
             orders_projector_batch_events_bucket{{le=\"10\"}} {batches}\n\
             orders_projector_batch_events_bucket{{le=\"+Inf\"}} {batches}\n\
             orders_projector_batch_events_sum {events}\n\
             orders_projector_batch_events_count {batches}\n",
            events = batches * 5,
            write_sum = batches as f64 * 0.0005,
            fetch_sum = fetch_fast as f64 * 0.0005 + fetch_slow as f64 * 0.005,
        );
        if let Some(hits) = hits {
            text += &format!(
                "orders_read_cache_hits_total {hits}\norders_read_cache_misses_total 10\n"
            );
        }
        Scrape::parse(&text).expect("parses")
    }

    #[test]
    fn the_window_between_two_scrapes_is_summarised_in_pipeline_order() {
        let before = scrape(10, 10, 0, None);
        let after = scrape(30, 20, 10, None);
        let stats = ProjectorStats::between(&before, &after);
        let names: Vec<&str> = stats.phases.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(names, ["fetch", "write"]);
        let fetch = &stats.phases[0];
        // 20 batches in the window: 10 ≤ 1 ms, 10 in (1, 10] ms.
        assert_eq!(fetch.count, 20);
        assert!((fetch.mean_ms.expect("mean") - 2.75).abs() < 1e-9);
        assert!((fetch.p50_ms.expect("p50") - 1.0).abs() < 1e-9);
        assert!((fetch.p99_ms.expect("p99") - 9.82).abs() < 1e-9);
        assert_eq!(stats.counters.batches, 20);
        assert_eq!(stats.counters.events_applied, 100);
        assert_eq!(stats.batch_events.mean, Some(5.0));
        // Histograms the server does not serve are empty, not an error.
        assert_eq!(stats.relay_lag_ms, Spread::default());
        assert_eq!(stats.cache_hit_ratio, None);
    }

    #[test]
    fn the_cache_hit_ratio_is_given_when_reads_were_counted() {
        let stats = ProjectorStats::between(&Scrape::default(), &scrape(1, 1, 0, Some(30)));
        assert_eq!(stats.counters.cache_hits, 30);
        assert_eq!(stats.cache_hit_ratio, Some(0.75));
    }

    #[test]
    fn the_summary_reads_back_from_its_json() {
        let stats = ProjectorStats::between(&Scrape::default(), &scrape(4, 2, 2, Some(3)));
        let json = serde_json::to_value(&stats).expect("serialises");
        assert_eq!(json["phases"][0]["phase"], "fetch");
        assert!(json["relay_lag_ms"]["p99"].is_null());
        let back: ProjectorStats = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, stats);
    }
}
