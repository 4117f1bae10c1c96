//! The command side: PlaceOrder against pgbench, group commit on and off,
//! the lifecycle, the open-loop sweeps of PlaceOrder latency and
//! read-your-writes lag with their plots, and the fulfilment saga next to
//! PlaceOrder.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    Plots,
    figures::{entries, errors, f, ratio},
    targets::{TARGET_COMMAND_P99_MS, TARGET_LAG_P99_MS},
};
use crate::plot::{self, Point};

/// PlaceOrder against pgbench, group commit before and after, the lifecycle.
pub fn write(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let place = entries(run, "place");
    let batched: Vec<&Value> = place
        .iter()
        .copied()
        .filter(|e| f(e, "max_batch") > 1.0)
        .collect();
    writeln!(w, "## PlaceOrder against pgbench\n")?;
    writeln!(
        w,
        "Closed loop, N clients each waiting for its answer. The reference is `pgbench` running \
         the command path's append transaction (`bench/pgbench-append.sql`: one statement \
         inserting the event and its outbox row and notifying, then commit) with the same N, on a fresh \
         database of the same server. `synchronous_commit` is on for both. The relay and the \
         query side run during the orders figures, as they do in production.\n"
    )?;
    writeln!(
        w,
        "| clients | group commit | PlaceOrder/s | p50 ms | p99 ms | errors | pgbench tx/s | ratio |\n|---|---|---|---|---|---|---|---|"
    )?;
    for e in &place {
        let o = &e["orders"];
        writeln!(
            w,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {} |",
            e["clients"],
            if f(e, "max_batch") > 1.0 {
                format!("on (≤{})", e["max_batch"])
            } else {
                "off (1 per tx)".into()
            },
            f(o, "throughput_per_s"),
            f(o, "latency_ms.p50"),
            f(o, "latency_ms.p99"),
            errors(o),
            f(e, "pgbench.tps"),
            ratio(f(o, "throughput_per_s"), f(e, "pgbench.tps")),
        )?;
    }
    writeln!(w)?;
    writeln!(w, "### Group commit, before and after\n")?;
    writeln!(
        w,
        "The same server with `--max-batch 1` (each command its own transaction) and with the \
         default batch bound, at the same concurrency in the same run.\n"
    )?;
    writeln!(
        w,
        "| clients | one per tx /s | batched /s | gain |\n|---|---|---|---|"
    )?;
    for e in place.iter().filter(|e| f(e, "max_batch") <= 1.0) {
        let clients = f(e, "clients");
        if let Some(after) = batched.iter().find(|b| f(b, "clients") == clients) {
            let (before, after) = (
                f(&e["orders"], "throughput_per_s"),
                f(&after["orders"], "throughput_per_s"),
            );
            writeln!(
                w,
                "| {clients} | {before:.0} | {after:.0} | {} |",
                ratio(after, before)
            )?;
        }
    }
    writeln!(w)?;
    for e in entries(run, "lifecycle") {
        let o = &e["orders"];
        writeln!(
            w,
            "Lifecycle (place → add → confirm → ship, 4 commands per iteration), {} clients: \
             {:.0} iterations/s = {:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms per iteration, \
             {} errors (absolute).\n",
            e["clients"],
            f(o, "throughput_per_s"),
            4.0 * f(o, "throughput_per_s"),
            f(o, "latency_ms.p50"),
            f(o, "latency_ms.p99"),
            errors(o)
        )?;
    }
    Ok(())
}

/// The fulfilment saga next to PlaceOrder and the lifecycle at the same
/// number of clients, in the same run.
pub fn write_fulfilment(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let runs = entries(run, "fulfilment");
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(w, "## Fulfilment\n")?;
    writeln!(
        w,
        "Closed loop, N clients each with one order in flight: place an order of one unit of a \
         stocked product, watch it, confirm it, and wait until the query server shows it \
         SHIPPED. In between, order-fulfilment reads the confirmation from the topic, reads the \
         order from OrderQueries and calls ReserveStock, AuthorizePayment, DispatchReservation \
         and ShipOrder (then CapturePayment), each answer stored before the next call; the \
         shipment then goes through the outbox, Kafka and the projector. Latency is from \
         ConfirmOrder's ack to SHIPPED read. The references are PlaceOrder and the lifecycle \
         (place, add a line, confirm, ship, all by the client) at the same N in the same run.\n"
    )?;
    writeln!(
        w,
        "| clients | shipped/s | p50 ms | p99 ms | errors | PlaceOrder/s | ratio | lifecycle/s | ratio |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for e in runs {
        let o = &e["orders"];
        let clients = f(e, "clients");
        let at = |kind: &str| {
            entries(run, kind)
                .into_iter()
                .find(|p| {
                    f(p, "clients") == clients && (kind != "place" || f(p, "max_batch") > 1.0)
                })
                .map_or(f64::NAN, |p| f(&p["orders"], "throughput_per_s"))
        };
        let (rate, place, lifecycle) = (f(o, "throughput_per_s"), at("place"), at("lifecycle"));
        writeln!(
            w,
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} | {:.0} | {} |",
            e["clients"],
            rate,
            f(o, "latency_ms.p50"),
            f(o, "latency_ms.p99"),
            errors(o),
            place,
            ratio(rate, place),
            lifecycle,
            ratio(rate, lifecycle),
        )?;
    }
    writeln!(w)?;
    Ok(())
}

fn sweep_points(run: &Value, kind: &str, key: &str) -> Vec<Point> {
    let mut points: Vec<Point> = entries(run, kind)
        .into_iter()
        .map(|e| Point {
            rate: f(e, "rate"),
            p50: f(&e["orders"], &format!("{key}.p50")),
            p90: f(&e["orders"], &format!("{key}.p90")),
            p99: f(&e["orders"], &format!("{key}.p99")),
        })
        .filter(|p| !p.p99.is_nan())
        .collect();
    points.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    points
}

/// The open-loop sweeps, each with its plot and table.
pub fn write_sweeps(w: &mut String, run: &Value, plots: &Plots) -> anyhow::Result<()> {
    let peak = f(run, "peak_place_per_s");
    for (kind, key, title, file, target, what) in [
        (
            "place_open",
            "latency_ms",
            "PlaceOrder latency against offered rate",
            "place-latency.svg",
            TARGET_COMMAND_P99_MS,
            "PlaceOrder latency from the intended send time",
        ),
        (
            "ryw_open",
            "lag_ms",
            "Read-your-writes lag against offered rate",
            "read-your-writes-lag.svg",
            TARGET_LAG_P99_MS,
            "lag from PlaceOrder's answer to GetOrder(min_version) answering on the query server",
        ),
    ] {
        let points = sweep_points(run, kind, key);
        if points.is_empty() {
            continue;
        }
        plot::percentiles_vs_rate(
            &plots.path(file),
            title,
            "milliseconds",
            &points,
            Some(target),
        )?;
        writeln!(w, "## {title}\n")?;
        writeln!(
            w,
            "Open loop: requests start on a fixed schedule whatever the answers, and {what} is \
             measured, so queueing is not hidden. Rates are fractions of the peak closed-loop \
             PlaceOrder rate of this run ({peak:.0}/s); the ratio column is offered/peak.\n"
        )?;
        writeln!(w, "![{title}]({})\n", plots.link(file))?;
        writeln!(
            w,
            "| offered /s | of peak | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |\n|---|---|---|---|---|---|---|---|---|"
        )?;
        let mut rows = entries(run, kind);
        rows.sort_by(|a, b| f(a, "rate").total_cmp(&f(b, "rate")));
        for e in rows {
            let o = &e["orders"];
            writeln!(
                w,
                "| {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                f(e, "rate"),
                f(e, "fraction"),
                f(o, "throughput_per_s"),
                f(o, &format!("{key}.p50")),
                f(o, &format!("{key}.p90")),
                f(o, &format!("{key}.p99")),
                f(o, &format!("{key}.p999")),
                f(o, &format!("{key}.max")),
                errors(o)
            )?;
        }
        writeln!(w)?;
    }
    Ok(())
}
