//! Where the machine's cores went during a run: the CPU time of watched
//! process trees and of the whole machine, from `/proc`, read when the run
//! starts and when it ends.
//!
//! A tree is the watched process and its children. PostgreSQL's children
//! (one backend per connection) are split by the database named in their
//! process title (`postgres: USER DATABASE HOST ...`), so the write and the
//! read database's shares show apart; its background processes, and the
//! backends that ended during the run, count as `NAME/background`.

use std::{collections::BTreeMap, time::Instant};

use serde_json::{Value, json};

/// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU ticks by label (`NAME` or `NAME/DATABASE`), at one instant.
type Ticks = BTreeMap<String, u64>;

/// The CPU times at the start of a run.
pub struct CpuSampler {
    watched: Vec<(String, u32)>,
    started: Instant,
    machine: Option<(u64, u64)>,
    trees: Ticks,
}

/// One process's `stat` line: its parent and its own plus its reaped children's ticks.
struct Stat {
    ppid: u32,
    own: u64,
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(1)?).ok()?,
        own: field(11)? + field(12)?,
        reaped: field(13)? + field(14)?,
    })
}

/// The database a PostgreSQL backend serves, from its process title.
fn backend_database(pid: u32) -> Option<String> {
    let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<&str> = title.trim_end_matches('\0').split_whitespace().collect();
    let host = words.get(3)?;
    (words.first() == Some(&"postgres:") && (host.contains('(') || host.starts_with('[')))
        .then(|| words[2].to_owned())
}

/// Busy and total ticks of the machine.
fn machine() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// Every process's parent, read once.
fn children_of(parents: &[u32]) -> BTreeMap<u32, Vec<u32>> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(s) = stat(pid)
            && parents.contains(&s.ppid)
        {
            children.entry(s.ppid).or_default().push(pid);
        }
    }
    children
}

fn tree_ticks(watched: &[(String, u32)]) -> Ticks {
    let pids: Vec<u32> = watched.iter().map(|(_, pid)| *pid).collect();
    let children = children_of(&pids);
    let mut ticks = Ticks::new();
    for (name, pid) in watched {
        let Some(root) = stat(*pid) else { continue };
        *ticks.entry(name.clone()).or_default() += root.own;
        for child in children.get(pid).into_iter().flatten() {
            let Some(s) = stat(*child) else { continue };
            let label = match backend_database(*child) {
                Some(database) => format!("{name}/{database}"),
                None => format!("{name}/background"),
            };
            *ticks.entry(label).or_default() += s.own + s.reaped;
        }
        // Children that ended: the watched process reaped them.
        *ticks.entry(format!("{name}/background")).or_default() += root.reaped;
    }
    ticks.retain(|_, t| *t > 0);
    ticks
}

impl CpuSampler {
    /// Reads the CPU times of `watched` (name, pid) trees and of the machine now.
    pub fn start(watched: Vec<(String, u32)>) -> Self {
        let trees = tree_ticks(&watched);
        Self {
            watched,
            started: Instant::now(),
            machine: machine(),
            trees,
        }
    }

    /// The cores each label used on average since `start` (labels seen only
    /// at the end count from zero), and the machine's busy cores.
    pub fn finish(self) -> Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let end = tree_ticks(&self.watched);
        let mut cores = serde_json::Map::new();
        for (label, ticks) in &end {
            let before = self.trees.get(label).copied().unwrap_or(0);
            let used = ticks.saturating_sub(before) as f64 / TICKS_PER_S;
            cores.insert(label.clone(), json!(used / seconds));
        }
        let machine = match (self.machine, machine()) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                json!({
                    "cores": n,
                    "busy_cores": n * (busy1 - busy0) as f64 / (total1 - total0) as f64,
                })
            }
            _ => Value::Null,
        };
        json!({ "seconds": seconds, "cores": cores, "machine": machine })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_stat_line_and_the_machine_is_counted() {
        let me = stat(std::process::id()).expect("own stat");
        assert!(me.ppid > 0);
        let (busy, total) = machine().expect("/proc/stat");
        assert!(busy <= total && total > 0);
    }

    #[test]
    fn a_busy_loop_shows_up_as_cpu_time_of_its_process() {
        let me = std::process::id();
        let sampler = CpuSampler::start(vec![("me".into(), me)]);
        let own = || stat(me).expect("own stat").own;
        let (start, spin) = (own(), Instant::now());
        let mut x = 0_u64;
        // Until the kernel has charged 5 ticks to this process (bounded).
        while own() < start + 5 && spin.elapsed().as_secs() < 20 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let out = sampler.finish();
        assert!(own() >= start + 5, "no CPU time charged in 20 s");
        assert!(
            out["cores"]["me"].as_f64().expect("own cores") > 0.0,
            "{out}"
        );
        assert!(out["seconds"].as_f64().expect("seconds") > 0.0, "{out}");
    }
}
