//! Reading figures out of a results file (`scripts/bench`'s JSON, old runs
//! included: a figure a run lacks reads as NaN and prints as a dash) and
//! formatting them.

use std::collections::BTreeMap;

use serde_json::Value;

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
