//! The rebuild's progress bar: drawn on stdout only when asked for
//! (`RebuildOptions::progress`, which the CLI sets on a terminal), hidden
//! otherwise.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::admin::topic;

/// The progress bar (hidden unless asked for).
pub(super) struct Progress {
    pub(super) bar: ProgressBar,
}

impl Progress {
    pub(super) fn new(enabled: bool, generation: i32) -> Self {
        let bar = if enabled {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} {elapsed_precise} [{wide_bar}] {pos}/{len} {rate} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("g{generation}"));
        if enabled {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self { bar }
    }

    pub(super) fn phase(&self, phase: &str) {
        self.bar.set_message(phase.to_owned());
    }

    pub(super) fn store_on(bar: &ProgressBar, total: i64) {
        bar.set_message("store");
        bar.set_length(u64::try_from(total).unwrap_or(0));
        bar.set_position(0);
        bar.reset_eta();
    }

    pub(super) fn stored(&self, read: u64) {
        self.bar.set_position(read);
    }

    pub(super) fn offsets(&self, positions: &HashMap<i32, i64>, target: &BTreeMap<i32, i64>) {
        let end: i64 = target.values().sum();
        let at: i64 = target
            .iter()
            .map(|(p, &end)| positions.get(p).copied().unwrap_or(0).min(end))
            .sum();
        let lag = topic::lag(positions, target);
        if self.bar.length() != Some(u64::try_from(end).unwrap_or(0)) {
            self.bar.set_length(u64::try_from(end).unwrap_or(0));
        }
        self.bar.set_position(u64::try_from(at).unwrap_or(0));
        self.bar.set_message(format!("lag {lag}"));
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
