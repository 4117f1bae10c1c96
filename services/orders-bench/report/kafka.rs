//! Kafka's own ceiling (the perf tools) and the rebuild measured against it.

use std::fmt::Write as _;

use serde_json::Value;

use super::figures::{consumer_rate, entries, f, ratio, s};

/// The perf tools' figures.
pub fn write_ceiling(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let Some(k) = entries(run, "kafka").into_iter().next() else {
        return Ok(());
    };
    writeln!(w, "## Kafka's own ceiling\n")?;
    writeln!(
        w,
        "Kafka's `ProducerPerformance` and `ConsumerPerformance` from the kafka-tools jar of \
         the broker's version, against the same broker, with {} byte records (the mean size \
         of an `OrderEvent` written by this run's place scenario).\n",
        k["record_bytes"]
    )?;
    writeln!(
        w,
        "| tool | records/s | MB/s | note |\n|---|---|---|---|\n| ProducerPerformance (acks=all) | {:.0} | {:.2} | avg {:.1} ms, p99 {:.0} ms |\n| ConsumerPerformance | {:.0} | {:.2} | one consumer, whole topic |\n",
        f(k, "producer.records_per_s"),
        f(k, "producer.mb_per_s"),
        f(k, "producer.avg_ms"),
        f(k, "producer.p99_ms"),
        consumer_rate(run),
        f(k, "consumer.mb_per_s"),
    )?;
    Ok(())
}

/// The rebuilds from the topic and from the store.
pub fn write_rebuild(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let rebuilds = entries(run, "rebuild");
    if rebuilds.is_empty() {
        return Ok(());
    }
    let consumer_rate = consumer_rate(run);
    writeln!(w, "## Rebuild\n")?;
    writeln!(
        w,
        "`orderctl rebuild --drop-old` builds a new projection generation, verifies it \
         against the source and switches readers. Wall clock includes process start, \
         verification and the switch. The reference is ConsumerPerformance reading a topic \
         of the same record size in the same run.\n"
    )?;
    writeln!(
        w,
        "| source | events | seconds | events/s | build-only events/s | ConsumerPerformance /s | ratio |\n|---|---|---|---|---|---|---|"
    )?;
    for e in &rebuilds {
        let o = &e["orders"];
        writeln!(
            w,
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {} |",
            s(o, "source"),
            f(o, "events"),
            f(o, "seconds"),
            f(o, "events_per_s"),
            f(o, "build_events_per_s"),
            consumer_rate,
            ratio(f(o, "events_per_s"), consumer_rate),
        )?;
    }
    writeln!(w)?;
    let phases = ["load", "index", "verify", "switch"];
    if rebuilds
        .iter()
        .any(|e| e["orders"]["phases_s"]["load"].is_number())
    {
        writeln!(
            w,
            "Where the wall clock went, in seconds (share of the wall clock): loading the rows \
             with the secondary indexes deferred, creating those indexes, verifying against \
             the event store, catching up with the frozen live generation and switching; \
             the rest is process start, locks and the source's end offsets.\n"
        )?;
        writeln!(
            w,
            "| source | load | indexes | verify | switch | rest |\n|---|---|---|---|---|---|"
        )?;
        for e in &rebuilds {
            let o = &e["orders"];
            let wall = f(o, "seconds");
            let cell = |v: f64| format!("{v:.2} ({:.0}%)", 100.0 * v / wall);
            let spent: Vec<f64> = phases
                .iter()
                .map(|p| o["phases_s"][*p].as_f64().unwrap_or(f64::NAN))
                .collect();
            let rest = wall - spent.iter().sum::<f64>();
            let cells: Vec<String> = spent.iter().map(|v| cell(*v)).collect();
            writeln!(
                w,
                "| {} | {} | {} |",
                s(o, "source"),
                cells.join(" | "),
                cell(rest)
            )?;
        }
        writeln!(w)?;
    }
    Ok(())
}
