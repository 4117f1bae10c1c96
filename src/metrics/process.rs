//! The process's own metrics, read from `/proc` on each scrape under the
//! names Prometheus client libraries use (`process_resident_memory_bytes`,
//! `process_open_fds`, ...), and `orders_build_info{service,version,git_sha}`.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_SHA: &str = env!("ORDERS_GIT_SHA");

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Encodes the process metrics and the build info of one service.
#[derive(Debug)]
pub struct ProcessCollector {
    service: &'static str,
}

impl ProcessCollector {
    /// The collector of the server `service` (its binary's name).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

/// What `/proc` says of this process now; a field is `None` where it cannot be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFacts {
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessFacts {
    /// Reads this process's facts.
    pub fn read() -> Self {
        let mut facts = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            facts.parse_stat(&stat, boot_time());
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            facts.resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(kilobytes);
        }
        facts.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        facts.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find_map(|l| l.strip_prefix("Max open files"))
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            });
        facts
    }

    /// Takes the CPU times, start time and virtual size from `/proc/self/stat`.
    fn parse_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        // `rest` starts at field 3 (state); utime is field 14.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) as f64 / TICKS_PER_SECOND);
        }
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + start as f64 / TICKS_PER_SECOND);
        }
        self.virtual_bytes = field(23);
    }
}

/// Seconds since the epoch at boot (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `"  1234 kB"` → bytes.
fn kilobytes(value: &str) -> Option<u64> {
    let kb: u64 = value.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = ProcessFacts::read();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                facts.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                facts.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                facts.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                facts.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value as i64);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(start) = facts.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(cpu) = facts.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let info = ConstGauge::new(1i64);
        let mut build = encoder.encode_descriptor(
            "orders_build_info",
            "The server's version and the git commit it was built from; always 1.",
            None,
            info.metric_type(),
        )?;
        let labels = [
            ("service", self.service),
            ("version", env!("CARGO_PKG_VERSION")),
            ("git_sha", GIT_SHA),
        ];
        info.encode(build.encode_family(&labels)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (order (query)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 987654321 4000 18446744073709551615";
        let mut facts = ProcessFacts::default();
        facts.parse_stat(stat, Some(1_000.0));
        assert_eq!(facts.cpu_seconds, Some(3.0));
        assert_eq!(facts.start_time_seconds, Some(1_123.45));
        assert_eq!(facts.virtual_bytes, Some(987_654_321));
    }

    #[test]
    fn this_process_can_be_read() {
        let facts = ProcessFacts::read();
        assert!(facts.resident_bytes.is_some_and(|b| b > 0));
        assert!(facts.open_fds.is_some_and(|n| n >= 3));
        assert!(facts.max_fds.is_some());
        assert!(facts.cpu_seconds.is_some());
    }
}
