//! Reading figures out of a results file (`scripts/bench`'s JSON, old runs
//! included: a figure a run lacks reads as NaN and prints as a dash) and
//! formatting them.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{catch_up::CatchUpSummary, projector::ProjectorStats};

/// The number at `path` (dot-separated keys), NaN when absent.
pub fn f(v: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The string at `key`, `?` when absent.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// The run's entries of one kind, in run order.
pub fn entries<'a>(run: &'a Value, kind: &str) -> Vec<&'a Value> {
    run["entries"]
        .as_array()
        .map(|all| all.iter().filter(|e| e["kind"] == kind).collect())
        .unwrap_or_default()
}

/// Failed requests of an orders-bench summary, all codes together.
pub fn errors(summary: &Value) -> u64 {
    summary["errors"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// The sweep entry nearest half of peak.
pub fn at_half_peak<'a>(run: &'a Value, kind: &str) -> Option<&'a Value> {
    entries(run, kind).into_iter().min_by(|a, b| {
        (f(a, "fraction") - 0.5)
            .abs()
            .total_cmp(&(f(b, "fraction") - 0.5).abs())
    })
}

/// A figure with `decimals`, or a dash when it was not measured.
pub fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// `a / b` with two decimals, or a dash.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "–".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// The peak RSS of each watched process over the run, in MiB.
pub fn peak_rss(run: &Value) -> BTreeMap<String, f64> {
    let mut rss = BTreeMap::new();
    for e in run["entries"].as_array().into_iter().flatten() {
        if let Some(procs) = e["orders"]["rss"].as_object() {
            for (name, v) in procs {
                let max = f(v, "max_mib");
                let slot = rss.entry(name.clone()).or_insert(0.0_f64);
                *slot = slot.max(max);
            }
        }
    }
    rss
}

/// ConsumerPerformance's records/s in this run, NaN when not measured.
pub fn consumer_rate(run: &Value) -> f64 {
    entries(run, "kafka")
        .first()
        .map_or(f64::NAN, |k| f(k, "consumer.records_per_s"))
}

/// A typed part of the results; `None` when the run did not record it.
fn typed<T: DeserializeOwned>(v: &Value, what: &str) -> anyhow::Result<Option<T>> {
    if v.is_null() {
        return Ok(None);
    }
    serde_json::from_value(v.clone())
        .map(Some)
        .with_context(|| format!("read the {what} figures"))
}

/// The projector figures of one orders-bench summary.
pub fn projector_of(summary: &Value) -> anyhow::Result<Option<ProjectorStats>> {
    typed(&summary["projector"], "projector")
}

/// The run's catch-up, if it had one.
pub fn catch_up(run: &Value) -> anyhow::Result<Option<CatchUpSummary>> {
    match entries(run, "catch_up").first() {
        Some(e) => typed(&e["orders"], "catch-up"),
        None => Ok(None),
    }
}

/// The PlaceOrder rate the projector has to keep up with: the group-commit
/// run at 64 clients, or at the most clients the run had (a short run has
/// fewer); (clients, PlaceOrder/s).
pub fn place_reference(run: &Value) -> (f64, f64) {
    entries(run, "place")
        .into_iter()
        .filter(|e| f(e, "max_batch") > 1.0)
        .map(|e| (f(e, "clients"), f(&e["orders"], "throughput_per_s")))
        .min_by(|a, b| {
            let miss = |c: f64| if c == 64.0 { f64::NEG_INFINITY } else { -c };
            miss(a.0).total_cmp(&miss(b.0))
        })
        .unwrap_or((64.0, f64::NAN))
}
