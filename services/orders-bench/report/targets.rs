//! The targets: each with what a run measured and how far it is met or
//! missed, for this run alone ("Targets") and next to a baseline run
//! ("Before and after").

use std::fmt::Write as _;

use serde_json::Value;

use super::figures::{
    at_half_peak, catch_up, consumer_rate, entries, f, num, peak_rss, place_reference, ratio, s,
};

pub const TARGET_LAG_P99_MS: f64 = 50.0;
/// Catch-up events/s over the peak PlaceOrder/s at 64 clients.
pub const TARGET_CATCH_UP_OF_PLACE: f64 = 1.0;
/// Catch-up events/s over ConsumerPerformance records/s.
pub const TARGET_CATCH_UP_OF_CONSUMER: f64 = 0.5;
/// GetOrder/s under ghz over echo/s under ghz, both at 16 clients.
pub const TARGET_GET_ORDER_OF_ECHO: f64 = 0.5;
pub const TARGET_GET_ORDER_P99_MS: f64 = 5.0;
pub const TARGET_REBUILD_EVENTS_PER_S: f64 = 100_000.0;
pub const TARGET_GROUP_COMMIT_RATIO: f64 = 2.0;
pub const TARGET_COMMAND_P99_MS: f64 = 10.0;
pub const TARGET_RSS_MIB: f64 = 64.0;

/// Rows of the current round; the rows after them are earlier rounds'.
const CURRENT_ROWS: usize = 4;

/// One target as one run met it.
struct Row {
    /// What it asks; the same words in every run.
    target: String,
    /// What the run measured, a dash when it did not.
    measured: String,
    verdict: String,
}

/// How one measured figure stands against its target.
enum Check {
    NotMeasured,
    Met,
    /// How far off, e.g. "33% of the target".
    Missed(String),
}

fn check(measured: f64, target: f64, higher_is_better: bool) -> Check {
    if measured.is_nan() {
        Check::NotMeasured
    } else if (higher_is_better && measured >= target) || (!higher_is_better && measured <= target)
    {
        Check::Met
    } else if higher_is_better {
        Check::Missed(format!("{:.0}% of the target", 100.0 * measured / target))
    } else {
        Check::Missed(format!("{:.1}× the target", measured / target))
    }
}

/// The verdict of a target made of one or more checks, each named when
/// there are several: met when all are; otherwise the misses, by how much.
fn verdict(checks: &[(&str, Check)]) -> String {
    let named = |name: &str, text: &str| {
        if checks.len() > 1 {
            format!("{name} {text}")
        } else {
            text.to_owned()
        }
    };
    let missed: Vec<String> = checks
        .iter()
        .filter_map(|(name, c)| match c {
            Check::Missed(by) => Some(named(name, by)),
            _ => None,
        })
        .collect();
    let unmeasured: Vec<&str> = checks
        .iter()
        .filter(|(_, c)| matches!(c, Check::NotMeasured))
        .map(|(name, _)| *name)
        .collect();
    if !missed.is_empty() {
        format!("**missed**: {}", missed.join("; "))
    } else if unmeasured.len() == checks.len() {
        "not measured".into()
    } else if !unmeasured.is_empty() {
        format!("not measured: {}", unmeasured.join(", "))
    } else {
        "**met**".into()
    }
}

/// "`a/b`× `what` (`b`/s)", or that `what` was not measured.
fn against(a: f64, b: f64, what: &str) -> String {
    if b.is_nan() {
        format!("no {what} figure")
    } else {
        format!("{}× {what} ({b:.0}/s)", ratio(a, b))
    }
}

/// A measured figure, or a dash when `v` was not measured.
fn measured(v: f64, text: impl FnOnce() -> String) -> String {
    if v.is_nan() { "–".into() } else { text() }
}

fn rows(run: &Value) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();

    let lag_half = at_half_peak(run, "ryw_open");
    let lag_p99 = lag_half.map_or(f64::NAN, |e| f(&e["orders"], "lag_ms.p99"));
    rows.push(Row {
        target: format!("read-your-writes lag p99 ≤ {TARGET_LAG_P99_MS} ms at half of peak"),
        measured: measured(lag_p99, || {
            format!(
                "{lag_p99:.2} ms at {:.0}/s (absolute)",
                lag_half.map_or(f64::NAN, |e| f(e, "rate"))
            )
        }),
        verdict: verdict(&[("", check(lag_p99, TARGET_LAG_P99_MS, false))]),
    });

    let catch_up = catch_up(run)?;
    let consumer_rate = consumer_rate(run);
    let catch_up_rate = catch_up
        .as_ref()
        .filter(|c| !c.timed_out)
        .map_or(f64::NAN, |c| c.events_per_s);
    let (clients, place_rate) = place_reference(run);
    let (of_place, of_consumer) = (catch_up_rate / place_rate, catch_up_rate / consumer_rate);
    rows.push(Row {
        target: format!(
            "projector catch-up ≥ {TARGET_CATCH_UP_OF_PLACE}× peak PlaceOrder/s at 64 clients \
             and ≥ {TARGET_CATCH_UP_OF_CONSUMER}× ConsumerPerformance records/s"
        ),
        measured: match &catch_up {
            Some(c) if c.timed_out => format!("timed out after {:.0} s", c.seconds),
            _ => measured(catch_up_rate, || {
                format!(
                    "{catch_up_rate:.0} events/s = {}, {}",
                    against(
                        catch_up_rate,
                        place_rate,
                        &format!("PlaceOrder at {clients} clients")
                    ),
                    against(catch_up_rate, consumer_rate, "ConsumerPerformance"),
                )
            }),
        },
        verdict: match &catch_up {
            Some(c) if c.timed_out => "**missed**: timed out".into(),
            _ => verdict(&[
                (
                    "PlaceOrder",
                    check(of_place, TARGET_CATCH_UP_OF_PLACE, true),
                ),
                (
                    "ConsumerPerformance",
                    check(of_consumer, TARGET_CATCH_UP_OF_CONSUMER, true),
                ),
            ]),
        },
    });

    let ghz_rate = |kind: &str| {
        entries(run, kind)
            .first()
            .map_or(f64::NAN, |e| f(e, "ghz.rps"))
    };
    let (get_order, echo) = (ghz_rate("get_order"), ghz_rate("echo"));
    let get_order_p99 = entries(run, "get_order")
        .first()
        .map_or(f64::NAN, |e| f(e, "ghz.p99_ms"));
    rows.push(Row {
        target: format!(
            "GetOrder under ghz, 16 clients: ≥ {TARGET_GET_ORDER_OF_ECHO}× ghz echo/s and \
             p99 ≤ {TARGET_GET_ORDER_P99_MS} ms"
        ),
        measured: measured(get_order, || {
            format!(
                "{get_order:.0}/s = {}, p99 {} ms",
                against(get_order, echo, "echo"),
                num(get_order_p99, 2)
            )
        }),
        verdict: verdict(&[
            (
                "rate",
                check(get_order / echo, TARGET_GET_ORDER_OF_ECHO, true),
            ),
            ("p99", check(get_order_p99, TARGET_GET_ORDER_P99_MS, false)),
        ]),
    });

    let rebuild_best = entries(run, "rebuild")
        .iter()
        .map(|e| f(&e["orders"], "events_per_s"))
        .fold(f64::NAN, f64::max);
    rows.push(Row {
        target: format!(
            "rebuild ≥ {:.0}k events/s (best source, wall clock incl. verify and switch)",
            TARGET_REBUILD_EVENTS_PER_S / 1000.0
        ),
        measured: measured(rebuild_best, || format!("{rebuild_best:.0} events/s")),
        verdict: verdict(&[("", check(rebuild_best, TARGET_REBUILD_EVENTS_PER_S, true))]),
    });
    debug_assert_eq!(rows.len(), CURRENT_ROWS);

    let best_ratio = entries(run, "place")
        .into_iter()
        .filter(|e| f(e, "max_batch") > 1.0 && f(e, "clients") > 1.0)
        .map(|e| f(&e["orders"], "throughput_per_s") / f(e, "pgbench.tps"))
        .fold(f64::NAN, f64::max);
    rows.push(Row {
        target: format!(
            "PlaceOrder ≥ {TARGET_GROUP_COMMIT_RATIO}× pgbench append tx/s at the same \
             concurrency (best of >1 clients)"
        ),
        measured: measured(best_ratio, || format!("{best_ratio:.2}×")),
        verdict: verdict(&[("", check(best_ratio, TARGET_GROUP_COMMIT_RATIO, true))]),
    });
    let command_half = at_half_peak(run, "place_open");
    let cmd_p99 = command_half.map_or(f64::NAN, |e| f(&e["orders"], "latency_ms.p99"));
    rows.push(Row {
        target: format!("PlaceOrder p99 ≤ {TARGET_COMMAND_P99_MS} ms at half of peak"),
        measured: measured(cmd_p99, || {
            format!(
                "{cmd_p99:.2} ms at {:.0}/s (absolute)",
                command_half.map_or(f64::NAN, |e| f(e, "rate"))
            )
        }),
        verdict: verdict(&[("", check(cmd_p99, TARGET_COMMAND_P99_MS, false))]),
    });
    let rss_worst = peak_rss(run).values().copied().fold(f64::NAN, f64::max);
    rows.push(Row {
        target: format!("RSS of each server ≤ {TARGET_RSS_MIB} MiB at steady load (worst peak)"),
        measured: measured(rss_worst, || format!("{rss_worst:.1} MiB")),
        verdict: verdict(&[("", check(rss_worst, TARGET_RSS_MIB, false))]),
    });
    Ok(rows)
}

/// "Targets": this run's figure and verdict for each target.
pub fn write(w: &mut String, run: &Value) -> anyhow::Result<()> {
    writeln!(w, "## Targets\n")?;
    writeln!(
        w,
        "The first {CURRENT_ROWS} rows are this round's targets; the rest are earlier rounds', \
         kept to show they still hold.\n"
    )?;
    writeln!(w, "| target | measured | verdict |\n|---|---|---|")?;
    for row in rows(run)? {
        writeln!(w, "| {} | {} | {} |", row.target, row.measured, row.verdict)?;
    }
    writeln!(w)?;
    Ok(())
}

/// "Before and after": each target's figure in `baseline` next to this run's.
pub fn write_before_after(
    w: &mut String,
    run: &Value,
    baseline: &Value,
    baseline_link: &str,
) -> anyhow::Result<()> {
    writeln!(w, "## Before and after\n")?;
    writeln!(
        w,
        "Each target in the baseline run `{}` ([`{baseline_link}`]({baseline_link})) and in \
         this run `{}`. A dash: that run did not measure it.\n",
        s(baseline, "run"),
        s(run, "run"),
    )?;
    writeln!(
        w,
        "| target | before | verdict | after | verdict |\n|---|---|---|---|---|"
    )?;
    for (after, before) in rows(run)?.into_iter().zip(rows(baseline)?) {
        writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            after.target, before.measured, before.verdict, after.measured, after.verdict
        )?;
    }
    writeln!(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_of_several_checks_names_each_miss_and_how_far() {
        assert_eq!(
            verdict(&[
                ("rate", check(0.6, 0.5, true)),
                ("p99", check(4.0, 5.0, false))
            ]),
            "**met**"
        );
        assert_eq!(
            verdict(&[
                ("rate", check(0.1, 0.5, true)),
                ("p99", check(8.0, 5.0, false))
            ]),
            "**missed**: rate 20% of the target; p99 1.6× the target"
        );
        assert_eq!(
            verdict(&[("", check(33_486.0, 100_000.0, true))]),
            "**missed**: 33% of the target"
        );
        assert_eq!(
            verdict(&[
                ("rate", check(0.6, 0.5, true)),
                ("p99", check(f64::NAN, 5.0, false))
            ]),
            "not measured: p99"
        );
        assert_eq!(
            verdict(&[("", check(f64::NAN, 5.0, false))]),
            "not measured"
        );
    }
}
