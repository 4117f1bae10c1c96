//! The projector's counters and histograms (`orders_projector_*`): what it applied,
//! how long each phase of a batch took, and how far behind the events were,
//! split into the relay's share (event accepted → Kafka record timestamp) and
//! the projector's (record timestamp → projection commit).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;

use crate::metrics::{
    Counter, Family, FloatGauge, Histogram, Metrics, SECONDS_BUCKETS, SIZE_BUCKETS, histogram,
};

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
    /// Batches committed (`orders_projector_batches_total`).
    pub batches_total: Counter,
    /// Events applied to the projection (`orders_projector_applied_total`).
    pub events_applied_total: Counter,
    /// Redelivered messages and events skipped (`orders_projector_duplicates_total`).
    pub duplicates_total: Counter,
    /// Events parked behind a missing version (`orders_projector_gaps_total`).
    pub gaps_total: Counter,
    /// Messages parked in `dead_letter` (`orders_projector_dead_letters_total`).
    pub dead_letters_total: Counter,
    /// Batches rolled back because another owner had moved a position (`orders_projector_fenced_total`).
    pub fenced_total: Counter,
    /// When the last batch with events committed, seconds since the epoch
    /// (`orders_projector_last_applied_timestamp_seconds`).
    pub last_applied: FloatGauge,
    phase_seconds: Family<PhaseLabels, Histogram>,
    phases: [Histogram; 6],
    batch_events: Histogram,
    relay_lag: Histogram,
    commit_lag: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

impl Default for ProjectorMetrics {
    fn default() -> Self {
        let phase_seconds =
            Family::<PhaseLabels, Histogram>::new_with_constructor(|| histogram(SECONDS_BUCKETS));
        let phases = Phase::ALL.map(|phase| {
            phase_seconds.get_or_create_owned(&PhaseLabels {
                phase: phase.name(),
            })
        });
        Self {
            batches_total: Counter::default(),
            events_applied_total: Counter::default(),
            duplicates_total: Counter::default(),
            gaps_total: Counter::default(),
            dead_letters_total: Counter::default(),
            fenced_total: Counter::default(),
            last_applied: FloatGauge::default(),
            phase_seconds,
            phases,
            batch_events: histogram(SIZE_BUCKETS),
            relay_lag: histogram(SECONDS_BUCKETS),
            commit_lag: histogram(SECONDS_BUCKETS),
        }
    }
}

impl ProjectorMetrics {
    /// Registers these metrics in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        for (name, help, counter) in [
            (
                "orders_projector_batches",
                "Batches the projector committed.",
                &self.batches_total,
            ),
            (
                "orders_projector_applied",
                "Events applied to the projection.",
                &self.events_applied_total,
            ),
            (
                "orders_projector_duplicates",
                "Redelivered messages and events at or below an order's version, skipped.",
                &self.duplicates_total,
            ),
            (
                "orders_projector_gaps",
                "Events parked because a version before them had not arrived.",
                &self.gaps_total,
            ),
            (
                "orders_projector_dead_letters",
                "Messages that could not be applied, kept in dead_letter.",
                &self.dead_letters_total,
            ),
            (
                "orders_projector_fenced",
                "Batches rolled back because another owner had moved a partition's position.",
                &self.fenced_total,
            ),
        ] {
            metrics.register(name, help, counter.clone());
        }
        metrics.register(
            "orders_projector_last_applied_timestamp_seconds",
            "When the projector last committed a batch with events (Unix time).",
            self.last_applied.clone(),
        );
        metrics.register(
            "orders_projector_batch_seconds",
            "Time of each phase of a projector batch.",
            self.phase_seconds.clone(),
        );
        for (name, help, histogram) in [
            (
                "orders_projector_batch_events",
                "Events per committed projector batch.",
                &self.batch_events,
            ),
            (
                "orders_projector_relay_lag_seconds",
                "Per event: from its command's commit to its Kafka record's timestamp.",
                &self.relay_lag,
            ),
            (
                "orders_projector_commit_lag_seconds",
                "Per event: from its Kafka record's timestamp to the projection's commit.",
                &self.commit_lag,
            ),
        ] {
            metrics.register(name, help, histogram.clone());
        }
    }

    pub(super) fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// Records the duration of one phase of a batch.
    pub(super) fn phase(&self, phase: Phase, took: Duration) {
        self.phases[phase as usize].observe(took.as_secs_f64());
    }

    /// Records a committed batch's size and, per event, its lags: accepted
    /// (`occurred_ms`) → Kafka record (`record_ms`) → committed (`now_ms`).
    pub(super) fn committed(&self, events: usize, lags: &[(i64, Option<i64>)], now_ms: i64) {
        self.batch_events.observe(events as f64);
        if events > 0 {
            self.last_applied.set(now_ms as f64 / 1_000.0);
        }
        for &(occurred_ms, record_ms) in lags {
            if let Some(record_ms) = record_ms {
                self.relay_lag
                    .observe((record_ms - occurred_ms) as f64 / 1_000.0);
                self.commit_lag
                    .observe((now_ms - record_ms) as f64 / 1_000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_lags_are_rendered() {
        let metrics = ProjectorMetrics::default();
        let registry = Metrics::default();
        metrics.register(&registry);
        metrics.phase(Phase::Commit, Duration::from_millis(2));
        metrics.committed(3, &[(1_000, Some(1_004)), (1_000, None)], 1_010);
        let text = registry.encode(false);
        assert!(
            text.contains("orders_projector_batch_seconds_count{phase=\"commit\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("orders_projector_batch_seconds_count{phase=\"fetch\"} 0\n"));
        assert!(text.contains("orders_projector_relay_lag_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("orders_projector_commit_lag_seconds_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("orders_projector_commit_lag_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("orders_projector_batch_events_sum 3"));
        assert!(text.contains("orders_projector_batches_total 0\n"));
        assert!(text.contains("orders_projector_last_applied_timestamp_seconds 1.01\n"));
    }
}
