//! The projector seen from inside: its phases during each read-your-writes
//! run next to the lag the client saw, and the catch-up of a new order-query
//! on the whole topic.

use std::fmt::Write as _;

use serde_json::Value;

use super::figures::{
    catch_up, consumer_rate, entries, f, num, place_reference, projector_of, ratio,
};
use crate::projector::ProjectorStats;

/// `Some` figure with `decimals`, or a dash.
fn opt(v: Option<f64>, decimals: usize) -> String {
    num(v.unwrap_or(f64::NAN), decimals)
}

/// A percentile read from buckets: at the highest finite bound or above,
/// all that is known is that it is at least that.
fn percentile(v: Option<f64>, top: Option<f64>, decimals: usize) -> String {
    match (v, top) {
        (Some(v), Some(top)) if v >= top => format!("≥ {}", num(top, decimals)),
        _ => opt(v, decimals),
    }
}

/// The phase table, the lag shares (beside the client's end-to-end lag when
/// given) and the counters of one window.
fn write_stats(
    w: &mut String,
    stats: &ProjectorStats,
    end_to_end: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    writeln!(
        w,
        "| phase | batches | mean ms | p50 ms | p99 ms |\n|---|---|---|---|---|"
    )?;
    for p in &stats.phases {
        writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            p.phase,
            p.count,
            opt(p.mean_ms, 3),
            percentile(p.p50_ms, p.top_ms, 3),
            percentile(p.p99_ms, p.top_ms, 3)
        )?;
    }
    writeln!(w)?;
    writeln!(w, "| lag | mean ms | p50 ms | p99 ms |\n|---|---|---|---|")?;
    for (what, spread) in [
        ("relay: event → Kafka record", &stats.relay_lag_ms),
        ("projector: Kafka record → commit", &stats.commit_lag_ms),
    ] {
        writeln!(
            w,
            "| {what} | {} | {} | {} |",
            opt(spread.mean, 2),
            percentile(spread.p50, spread.top, 2),
            percentile(spread.p99, spread.top, 2)
        )?;
    }
    if let Some((p50, p99)) = end_to_end {
        writeln!(
            w,
            "| end to end: PlaceOrder answered → GetOrder(min_version) answered | – | {} | {} |",
            num(p50, 2),
            num(p99, 2)
        )?;
    }
    let (c, b) = (&stats.counters, &stats.batch_events);
    writeln!(
        w,
        "\n{} batches, {} events applied; events per batch mean {}, p50 {}, p99 {}; \
         {} duplicates, {} gaps, {} dead letters, {} fenced.\n",
        c.batches,
        c.events_applied,
        opt(b.mean, 1),
        percentile(b.p50, b.top, 1),
        percentile(b.p99, b.top, 1),
        c.duplicates,
        c.gaps,
        c.dead_letters,
        c.fenced,
    )?;
    Ok(())
}

/// Where the cores went during one run (its `cpu` object), per process and
/// per order answered, when the run measured it.
fn write_cpu(w: &mut String, orders: &Value) -> anyhow::Result<()> {
    let cpu = &orders["cpu"];
    let (Some(cores), Some(seconds)) = (cpu["cores"].as_object(), cpu["seconds"].as_f64()) else {
        return Ok(());
    };
    let answered = orders["ok"].as_f64().unwrap_or(f64::NAN);
    let mut rows: Vec<(&String, f64)> = cores
        .iter()
        .filter_map(|(label, c)| Some((label, c.as_f64()?)))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    writeln!(
        w,
        "| process (CPU over the run) | cores | CPU ms per order |\n|---|---|---|"
    )?;
    for (label, c) in &rows {
        let per_order = c * seconds * 1000.0 / answered;
        writeln!(w, "| {label} | {} | {} |", num(*c, 2), num(per_order, 3))?;
    }
    let watched: f64 = rows.iter().map(|(_, c)| c).sum();
    writeln!(
        w,
        "| all of the above | {} | {} |",
        num(watched, 2),
        num(watched * seconds * 1000.0 / answered, 3)
    )?;
    if let (Some(busy), Some(n)) = (
        cpu["machine"]["busy_cores"].as_f64(),
        cpu["machine"]["cores"].as_f64(),
    ) {
        writeln!(
            w,
            "| the whole machine | {} of {} | {} |",
            num(busy, 2),
            num(n, 0),
            num(busy * seconds * 1000.0 / answered, 3)
        )?;
    }
    writeln!(w)?;
    Ok(())
}

/// A statement's text on one line, at most `max` characters, safe in a table cell.
fn statement_cell(query: &str, max: usize) -> String {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cell: String = flat.chars().take(max).collect();
    if flat.chars().count() > max {
        cell.push('…');
    }
    cell.replace('|', "\\|")
}

/// The read database's busiest statements over one run (`pg_stat_statements`,
/// nested ones inside `apply_batch` included), when the run recorded them.
fn write_statements(w: &mut String, statements: &Value, answered: f64) -> anyhow::Result<()> {
    let Some(rows) = statements.as_array().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    writeln!(
        w,
        "| read database statement (`*` inside `apply_batch`) | calls | mean ms | ms per 1000 orders |\n|---|---|---|---|"
    )?;
    for row in rows {
        let calls = row["calls"].as_f64().unwrap_or(f64::NAN);
        let total = row["total_ms"].as_f64().unwrap_or(f64::NAN);
        let nested = if row["toplevel"].as_bool() == Some(false) {
            "* "
        } else {
            ""
        };
        writeln!(
            w,
            "| {nested}`{}` | {} | {} | {} |",
            statement_cell(row["query"].as_str().unwrap_or(""), 60),
            num(calls, 0),
            num(total / calls, 3),
            num(total * 1000.0 / answered, 1)
        )?;
    }
    writeln!(w)?;
    Ok(())
}

/// "Projector phases": one table per offered rate of the read-your-writes sweep.
pub fn write_phases(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let mut sweep = entries(run, "ryw_open");
    if sweep.is_empty() {
        return Ok(());
    }
    sweep.sort_by(|a, b| f(a, "rate").total_cmp(&f(b, "rate")));
    writeln!(w, "## Projector phases\n")?;
    writeln!(
        w,
        "From order-query's `/metrics`, scraped before and after each open-loop \
         read-your-writes run: the time one batch spends in each phase of the projector, \
         and the two shares of the lag, the relay's (the event's `occurred_at` to its Kafka \
         record's timestamp) and the projector's (that timestamp to the commit that makes the \
         event readable), beside the end-to-end lag the client saw in the same run. Phase and \
         share percentiles are interpolated inside histogram buckets, so they are as coarse \
         as the buckets (absolute). Then the CPU each process used over the run, from \
         `/proc` (PostgreSQL's backends by database; `background` holds its own processes \
         and the backends that ended), as cores and as CPU time per order answered, \
         against the whole machine's; and the read database's busiest statements over the \
         run from `pg_stat_statements`, those that `apply_batch` runs included.\n"
    )?;
    let stats = sweep
        .iter()
        .map(|e| projector_of(&e["orders"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if stats.iter().all(Option::is_none) {
        writeln!(
            w,
            "Not measured in this run: its order-query served no `/metrics`.\n"
        )?;
        return Ok(());
    }
    for (e, stats) in sweep.iter().zip(&stats) {
        writeln!(
            w,
            "### {:.0}/s offered ({:.2} of peak)\n",
            f(e, "rate"),
            f(e, "fraction")
        )?;
        match stats {
            Some(stats) => {
                let lag = (f(&e["orders"], "lag_ms.p50"), f(&e["orders"], "lag_ms.p99"));
                write_stats(w, stats, Some(lag))?;
            }
            None => writeln!(w, "Not measured: `/metrics` could not be scraped.\n")?,
        }
        write_cpu(w, &e["orders"])?;
        write_statements(w, &e["pg_read"], f(&e["orders"], "ok"))?;
    }
    Ok(())
}

/// "Catch-up": a new order-query draining the run's topic.
pub fn write_catch_up(w: &mut String, run: &Value) -> anyhow::Result<()> {
    let consumer_rate = consumer_rate(run);
    let Some(c) = catch_up(run)? else {
        return Ok(());
    };
    let (clients, place_rate) = place_reference(run);
    writeln!(w, "## Catch-up\n")?;
    writeln!(
        w,
        "A new order-query on a fresh read database with a fresh consumer group, started on \
         this run's topic, which by then holds every event of the run. The clock runs from its \
         start (process start, migrations and joining the group included) until its stored \
         positions reach the end offsets the topic had before it started. The references: the \
         peak PlaceOrder rate at {clients} clients (the projector has to keep up with the \
         command side) and ConsumerPerformance (Kafka's own read rate here).\n"
    )?;
    writeln!(
        w,
        "| events | seconds | events/s | PlaceOrder /s ({clients} clients) | ratio | ConsumerPerformance /s | ratio |\n|---|---|---|---|---|---|---|"
    )?;
    writeln!(
        w,
        "| {} | {:.2} | {:.0} | {} | {} | {} | {} |\n",
        c.events,
        c.seconds,
        c.events_per_s,
        num(place_rate, 0),
        ratio(c.events_per_s, place_rate),
        num(consumer_rate, 0),
        ratio(c.events_per_s, consumer_rate),
    )?;
    if c.timed_out {
        writeln!(
            w,
            "**Timed out**: {} of the {} events were stored when the clock stopped.\n",
            c.events, c.backlog
        )?;
    } else if c.events < c.backlog {
        writeln!(
            w,
            "Measured over the first {} of the {} events (a short run).\n",
            c.events, c.backlog
        )?;
    }
    if let Some(stats) = &c.projector {
        writeln!(w, "The projector over the whole catch-up:\n")?;
        write_stats(w, stats, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_at_the_highest_bucket_bound_reads_as_at_least_that() {
        assert_eq!(percentile(Some(10_000.0), Some(10_000.0), 2), "≥ 10000.00");
        assert_eq!(percentile(Some(12.5), Some(10_000.0), 2), "12.50");
        assert_eq!(percentile(Some(12.5), None, 2), "12.50");
        assert_eq!(percentile(None, Some(10_000.0), 2), "–");
    }
}
