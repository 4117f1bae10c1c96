//! The Targets table: each target of the current round with what was
//! measured and how far it is met or missed.

use std::fmt::Write as _;

use serde_json::Value;

use super::figures::{at_half_peak, entries, f, peak_rss};

pub const TARGET_GROUP_COMMIT_RATIO: f64 = 2.0;
pub const TARGET_COMMAND_P99_MS: f64 = 10.0;
pub const TARGET_LAG_P99_MS: f64 = 50.0;
pub const TARGET_REBUILD_EVENTS_PER_S: f64 = 100_000.0;
pub const TARGET_RSS_MIB: f64 = 64.0;

/// "met" or how far off a target is, as a factor.
fn verdict(measured: f64, target: f64, higher_is_better: bool) -> String {
    if measured.is_nan() {
        return "not measured".into();
    }
    let met = if higher_is_better {
        measured >= target
    } else {
        measured <= target
    };
    if met {
        "**met**".into()
    } else if higher_is_better {
        format!(
            "**missed**: {:.0}% of the target",
            100.0 * measured / target
        )
    } else {
        format!("**missed**: {:.1}× the target", measured / target)
    }
}

pub fn write(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let batched: Vec<&Value> = entries(run, "place")
        .into_iter()
        .filter(|e| f(e, "max_batch") > 1.0)
        .collect();
    let best_ratio = batched
        .iter()
        .filter(|e| f(e, "clients") > 1.0)
        .map(|e| f(&e["orders"], "throughput_per_s") / f(e, "pgbench.tps"))
        .fold(f64::NAN, f64::max);
    let command_half = at_half_peak(run, "place_open");
    let lag_half = at_half_peak(run, "ryw_open");
    let rebuild_best = entries(run, "rebuild")
        .iter()
        .map(|e| f(&e["orders"], "events_per_s"))
        .fold(f64::NAN, f64::max);
    let rss_worst = peak_rss(run).values().copied().fold(f64::NAN, f64::max);
    writeln!(w, "## Targets\n")?;
    writeln!(w, "| target | measured | verdict |\n|---|---|---|")?;
    writeln!(
        w,
        "| PlaceOrder ≥ {TARGET_GROUP_COMMIT_RATIO}× pgbench append tx/s at the same concurrency (best of >1 clients) | {:.2}× | {} |",
        best_ratio,
        verdict(best_ratio, TARGET_GROUP_COMMIT_RATIO, true)
    )?;
    let cmd_p99 = command_half.map_or(f64::NAN, |e| f(&e["orders"], "latency_ms.p99"));
    writeln!(
        w,
        "| PlaceOrder p99 ≤ {TARGET_COMMAND_P99_MS} ms at half of peak ({:.0}/s) | {:.2} ms (absolute) | {} |",
        command_half.map_or(f64::NAN, |e| f(e, "rate")),
        cmd_p99,
        verdict(cmd_p99, TARGET_COMMAND_P99_MS, false)
    )?;
    let lag_p99 = lag_half.map_or(f64::NAN, |e| f(&e["orders"], "lag_ms.p99"));
    writeln!(
        w,
        "| read-your-writes lag p99 ≤ {TARGET_LAG_P99_MS} ms at half of peak ({:.0}/s) | {:.2} ms (absolute) | {} |",
        lag_half.map_or(f64::NAN, |e| f(e, "rate")),
        lag_p99,
        verdict(lag_p99, TARGET_LAG_P99_MS, false)
    )?;
    writeln!(
        w,
        "| rebuild ≥ {:.0}k events/s (best source, wall clock incl. verify and switch) | {:.0} events/s | {} |",
        TARGET_REBUILD_EVENTS_PER_S / 1000.0,
        rebuild_best,
        verdict(rebuild_best, TARGET_REBUILD_EVENTS_PER_S, true)
    )?;
    writeln!(
        w,
        "| RSS of each server ≤ {TARGET_RSS_MIB} MiB at steady load (worst peak) | {:.1} MiB | {} |",
        rss_worst,
        verdict(rss_worst, TARGET_RSS_MIB, false)
    )?;
    writeln!(w)?;
    Ok(())
}
