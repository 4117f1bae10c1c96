//! Reads next to the gRPC references (the echo server and ghz), and the
//! watch fan-out next to one stream.

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

/// The watch fan-out: a command's update reaching 1,000 streams of one order,
/// next to the same rounds with one stream.
pub fn write_fanout(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let fanouts = entries(run, "fanout");
    if fanouts.is_empty() {
        return Ok(());
    }
    writeln!(w, "## Watch fan-out\n")?;
    writeln!(
        w,
        "`WatchOrder` streams of one order, over 8 connections to one order-query; each round \
         appends a version (AddOrderLine) and waits until every stream has read it. Latency is \
         from the command's ack to a stream reading the update; *last stream* is the slowest \
         stream of each round. The reference is the same rounds with one stream, in the same \
         run: the path from the ack through the outbox, Kafka and the projector before any \
         fan-out.\n"
    )?;
    writeln!(
        w,
        "| streams | rounds | p50 ms | p99 ms | last stream p50 ms | last stream p99 ms | coalesced | p99 ÷ one stream's p99 |\n|---|---|---|---|---|---|---|---|"
    )?;
    for e in fanouts {
        let o = &e["orders"];
        let one_p99 = f(o, "one.each_ms.p99");
        writeln!(
            w,
            "| 1 | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | 1.00 |",
            o["rounds"],
            f(o, "one.each_ms.p50"),
            one_p99,
            f(o, "one.last_ms.p50"),
            f(o, "one.last_ms.p99"),
            o["one"]["coalesced"],
        )?;
        let p99 = f(o, "fanout.each_ms.p99");
        writeln!(
            w,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            o["watchers"],
            o["rounds"],
            f(o, "fanout.each_ms.p50"),
            p99,
            f(o, "fanout.last_ms.p50"),
            f(o, "fanout.last_ms.p99"),
            o["fanout"]["coalesced"],
            ratio(p99, one_p99),
        )?;
    }
    writeln!(w)?;
    Ok(())
}
