//! The projector's counters and histograms (`projector_*`): what it applied,
//! how long each phase of a batch took, and how far behind the events were,
//! split into the relay's share (event accepted → Kafka record timestamp) and
//! the projector's (record timestamp → projection commit).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::metrics::{self, Histogram, SECONDS_BUCKETS, SIZE_BUCKETS};

/// The phases of one batch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the start of the poll until the batch is in hand (includes
    /// waiting for the first message).
    Fetch,
    /// Decoding messages into events and dead letters.
    Decode,
    /// Loading the states of orders the projector does not keep.
    Load,
    /// Folding the batch and preparing the statement.
    Write,
    /// The write's round trip to PostgreSQL, commit included.
    Commit,
    /// After the commit: the read cache and the in-process waiters.
    Notify,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Fetch,
        Phase::Decode,
        Phase::Load,
        Phase::Write,
        Phase::Commit,
        Phase::Notify,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Fetch => "fetch",
            Phase::Decode => "decode",
            Phase::Load => "load",
            Phase::Write => "write",
            Phase::Commit => "commit",
            Phase::Notify => "notify",
        }
    }
}

/// Counters and histograms of the projector's work since start.
#[derive(Debug)]
pub struct ProjectorMetrics {
    /// Batches committed (`projector_batches_total`).
    pub batches_total: AtomicU64,
    /// Events applied to the projection (`projector_events_applied_total`).
    pub events_applied_total: AtomicU64,
    /// Redelivered messages and events skipped (`projector_duplicates_total`).
    pub duplicates_total: AtomicU64,
    /// Events parked behind a missing version (`projector_gaps_total`).
    pub gaps_total: AtomicU64,
    /// Messages parked in `dead_letter` (`projector_dead_letters_total`).
    pub dead_letters_total: AtomicU64,
    /// Batches rolled back because another owner had moved a position (`projector_fenced_total`).
    pub fenced_total: AtomicU64,
    phases: [Histogram; 6],
    batch_events: Histogram,
    relay_lag: Histogram,
    commit_lag: Histogram,
}

impl Default for ProjectorMetrics {
    fn default() -> Self {
        Self {
            batches_total: AtomicU64::default(),
            events_applied_total: AtomicU64::default(),
            duplicates_total: AtomicU64::default(),
            gaps_total: AtomicU64::default(),
            dead_letters_total: AtomicU64::default(),
            fenced_total: AtomicU64::default(),
            phases: std::array::from_fn(|_| Histogram::new(SECONDS_BUCKETS)),
            batch_events: Histogram::new(SIZE_BUCKETS),
            relay_lag: Histogram::new(SECONDS_BUCKETS),
            commit_lag: Histogram::new(SECONDS_BUCKETS),
        }
    }
}

impl ProjectorMetrics {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the duration of one phase of a batch.
    pub(super) fn phase(&self, phase: Phase, took: Duration) {
        self.phases[phase as usize].observe_duration(took);
    }

    /// Records a committed batch's size and, per event, its lags: accepted
    /// (`occurred_ms`) → Kafka record (`record_ms`) → committed (`now_ms`).
    pub(super) fn committed(&self, events: usize, lags: &[(i64, Option<i64>)], now_ms: i64) {
        self.batch_events.observe(events as f64);
        for &(occurred_ms, record_ms) in lags {
            if let Some(record_ms) = record_ms {
                self.relay_lag
                    .observe((record_ms - occurred_ms) as f64 / 1_000.0);
                self.commit_lag
                    .observe((now_ms - record_ms) as f64 / 1_000.0);
            }
        }
    }

    /// The counters and histograms in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in [
            ("projector_batches_total", &self.batches_total),
            ("projector_events_applied_total", &self.events_applied_total),
            ("projector_duplicates_total", &self.duplicates_total),
            ("projector_gaps_total", &self.gaps_total),
            ("projector_dead_letters_total", &self.dead_letters_total),
            ("projector_fenced_total", &self.fenced_total),
        ] {
            metrics::counter(&mut out, name, value);
        }
        metrics::type_line(&mut out, "projector_phase_seconds", "histogram");
        for (phase, histogram) in Phase::ALL.iter().zip(&self.phases) {
            let labels = format!("phase=\"{}\"", phase.name());
            histogram.render(&mut out, "projector_phase_seconds", &labels);
        }
        for (name, histogram) in [
            ("projector_batch_events", &self.batch_events),
            ("projector_relay_lag_seconds", &self.relay_lag),
            ("projector_commit_lag_seconds", &self.commit_lag),
        ] {
            metrics::type_line(&mut out, name, "histogram");
            histogram.render(&mut out, name, "");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_lags_are_rendered() {
        let metrics = ProjectorMetrics::default();
        metrics.phase(Phase::Commit, Duration::from_millis(2));
        metrics.committed(3, &[(1_000, Some(1_004)), (1_000, None)], 1_010);
        let text = metrics.render();
        assert!(text.contains("projector_phase_seconds_count{phase=\"commit\"} 1\n"));
        assert!(text.contains("projector_phase_seconds_count{phase=\"fetch\"} 0\n"));
        assert!(text.contains("projector_relay_lag_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("projector_commit_lag_seconds_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("projector_commit_lag_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("projector_batch_events_sum 3\n"));
        assert!(text.contains("projector_batches_total 0\n"));
    }
}
