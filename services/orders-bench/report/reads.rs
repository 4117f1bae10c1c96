//! Reads next to the gRPC references: the echo server and ghz.

use std::fmt::Write as _;

use serde_json::Value;

use super::figures::{entries, errors, f, num, ratio};

/// A share as a whole percentage, or a dash.
fn percent(share: f64) -> String {
    if share.is_nan() {
        "–".into()
    } else {
        format!("{:.0}%", 100.0 * share)
    }
}

pub fn write(w: &mut String, run: &Value) -> anyhow::Result<()> {
    writeln!(w, "## Reads and the gRPC ceiling\n")?;
    writeln!(
        w,
        "`echo` is a trivial tonic server in the same build profile (one unary call, no work): \
         the cost of a gRPC round trip on this machine. `ghz` measures the same calls with \
         another client at the same concurrency, which checks orders-bench's own figures. \
         Cache hits: the share of reads order-query answered from its read cache, where its \
         `/metrics` count them.\n"
    )?;
    writeln!(
        w,
        "| scenario | clients | orders-bench /s | p50 ms | p99 ms | errors | ghz /s | ghz p99 ms | orders-bench/ghz | of echo | cache hits |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let echo_rate = entries(run, "echo")
        .first()
        .map_or(f64::NAN, |e| f(&e["orders"], "throughput_per_s"));
    for kind in ["echo", "get_order", "reads"] {
        for e in entries(run, kind) {
            let o = &e["orders"];
            let rate = f(o, "throughput_per_s");
            writeln!(
                w,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                kind.replace('_', ""),
                e["clients"],
                rate,
                f(o, "latency_ms.p50"),
                f(o, "latency_ms.p99"),
                errors(o),
                num(f(e, "ghz.rps"), 0),
                num(f(e, "ghz.p99_ms"), 2),
                ratio(rate, f(e, "ghz.rps")),
                ratio(rate, echo_rate),
                percent(f(o, "projector.cache_hit_ratio")),
            )?;
        }
    }
    writeln!(w)?;
    Ok(())
}
