//! The projection watchdog. The projection is stalled when the topic holds
//! messages past the stored positions (lag above zero) and no stored position
//! has moved for `stall_after`. Positions are read from the live generation,
//! so the verdict is the same on every query instance whichever owns the
//! partitions: reads from any of them are stale. A stall is logged as an
//! error with the partitions' state, counted, and reported as NOT_SERVING
//! until the positions move again. Every observation also sets the lag
//! gauges (`orders_projector_lag_events{partition}`, `orders_projector_stalled`).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use prometheus_client::encoding::EncodeLabelSet;

use crate::metrics::{Counter, Family, Gauge, Metrics};

/// One partition as the watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The stored next offset (the low watermark when nothing is stored).
    pub next: i64,
    /// The topic's high watermark.
    pub high: i64,
}

/// Per partition: the stored next offset and the topic's high watermark.
pub type Lag = BTreeMap<i32, PartitionLag>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: i32,
}

/// The watchdog's gauges and counter.
#[derive(Debug, Clone, Default)]
pub struct WatchdogMetrics {
    /// Stalls seen since start (`orders_projector_stalls_total`).
    pub stalls: Counter,
    /// 1 while stalled (`orders_projector_stalled`).
    pub stalled: Gauge,
    lag: Family<PartitionLabels, Gauge>,
}

impl WatchdogMetrics {
    /// Registers these metrics in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "orders_projector_lag_events",
            "Messages on the topic past the live projection's stored position, per partition.",
            self.lag.clone(),
        );
        metrics.register(
            "orders_projector_stalls",
            "Times the projection stalled: messages waited and no stored position moved for the stall limit.",
            self.stalls.clone(),
        );
        metrics.register(
            "orders_projector_stalled",
            "1 while the projection is stalled, else 0.",
            self.stalled.clone(),
        );
    }

    fn set_lag(&self, lag: &Lag) {
        for (&partition, l) in lag {
            self.lag
                .get_or_create(&PartitionLabels { partition })
                .set((l.high - l.next).max(0));
        }
    }
}

/// Watches the projection's progress, one observation at a time.
#[derive(Debug)]
pub struct Watchdog {
    stall_after: Duration,
    /// The positions last seen, and since when they stand still with lag.
    last: Option<BTreeMap<i32, i64>>,
    still_since: Option<Instant>,
    stalled: bool,
    metrics: WatchdogMetrics,
}

impl Watchdog {
    /// A watchdog that calls a projection stalled after `stall_after` without progress.
    pub fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            last: None,
            still_since: None,
            stalled: false,
            metrics: WatchdogMetrics::default(),
        }
    }

    /// The watchdog's metrics (stalls, lag).
    pub fn metrics(&self) -> WatchdogMetrics {
        self.metrics.clone()
    }

    /// Whether the projection is stalled now.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Takes one observation made at `now`; returns whether the projection
    /// is moving (not stalled).
    pub fn observe(&mut self, now: Instant, lag: &Lag) -> bool {
        let positions: BTreeMap<i32, i64> = lag.iter().map(|(&p, l)| (p, l.next)).collect();
        let behind: i64 = lag.values().map(|l| (l.high - l.next).max(0)).sum();
        let moved = self.last.as_ref() != Some(&positions);
        self.last = Some(positions);
        self.metrics.set_lag(lag);
        if behind == 0 || moved {
            self.still_since = None;
            if self.stalled {
                self.stalled = false;
                self.metrics.stalled.set(0);
                tracing::info!(behind, "projection moves again");
            }
            return true;
        }
        let since = *self.still_since.get_or_insert(now);
        if !self.stalled && now.duration_since(since) >= self.stall_after {
            self.stalled = true;
            self.metrics.stalled.set(1);
            self.metrics.stalls.inc();
            tracing::error!(
                behind,
                still_for = ?now.duration_since(since),
                partitions = ?lag,
                "projection stalled: messages wait on the topic and no stored position moved"
            );
        }
        !self.stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(parts: &[(i32, i64, i64)]) -> Lag {
        parts
            .iter()
            .map(|&(p, next, high)| (p, PartitionLag { next, high }))
            .collect()
    }

    #[test]
    fn a_projection_without_lag_is_never_stalled() {
        let mut watchdog = Watchdog::new(Duration::from_secs(1));
        let start = Instant::now();
        for s in 0..10 {
            assert!(watchdog.observe(start + Duration::from_secs(s), &lag(&[(0, 5, 5)])));
        }
        assert_eq!(watchdog.metrics().stalls.get(), 0);
    }

    #[test]
    fn lag_with_positions_standing_still_is_a_stall_after_the_limit_and_ends_when_they_move() {
        let mut watchdog = Watchdog::new(Duration::from_secs(3));
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        assert!(watchdog.observe(at(0), &lag(&[(0, 5, 9), (1, 2, 2)])));
        assert!(watchdog.observe(at(2), &lag(&[(0, 5, 9), (1, 2, 2)])));
        assert!(!watchdog.observe(at(5), &lag(&[(0, 5, 9), (1, 2, 2)])));
        assert!(watchdog.is_stalled());
        assert!(!watchdog.observe(at(9), &lag(&[(0, 5, 10), (1, 2, 2)])));
        assert_eq!(watchdog.metrics().stalls.get(), 1);
        assert!(watchdog.observe(at(10), &lag(&[(0, 6, 10), (1, 2, 2)])));
        assert!(!watchdog.is_stalled());
    }

    #[test]
    fn moving_positions_are_progress_even_with_lag() {
        let mut watchdog = Watchdog::new(Duration::from_secs(1));
        let start = Instant::now();
        for s in 0..10 {
            let next = s as i64;
            assert!(watchdog.observe(start + Duration::from_secs(s), &lag(&[(0, next, 100)])));
        }
    }
}
