//! The standard process metrics (the names every Prometheus client library exports, which
//! dashboards and kube-prometheus rules expect): CPU, memory, file descriptors, start time, read
//! from /proc/self on each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads /proc/self at each scrape.
#[derive(Debug)]
pub(super) struct Process;

/// One reading; `None` fields could not be read (and are left out of the scrape).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Reading {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p } else { 4096 }
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
/// index 0 is field 3 (state).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// From the texts of /proc/self/stat, /proc/self/statm, /proc/self/limits and /proc/stat.
pub(super) fn parse(
    stat: &str,
    statm: &str,
    limits: &str,
    sys_stat: &str,
    fds: Option<i64>,
) -> Reading {
    let f = stat_fields(stat).unwrap_or_default();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let tck = clk_tck();
    // stat(5): utime is field 14, stime 15, starttime 22 (1-based); here field n is n - 3.
    let cpu_seconds = match (num(11), num(12)) {
        (Some(u), Some(s)) => Some((u + s) / tck),
        _ => None,
    };
    let btime = sys_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let start_time_seconds = match (btime, num(19)) {
        (Some(b), Some(start)) => Some(b + start / tck),
        _ => None,
    };
    let mut m = statm.split_whitespace().map(|v| v.parse::<i64>().ok());
    let virtual_bytes = m.next().flatten().map(|p| p * page_size());
    let resident_bytes = m.next().flatten().map(|p| p * page_size());
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<i64>().ok());
    Reading {
        cpu_seconds,
        resident_bytes,
        virtual_bytes,
        open_fds: fds,
        max_fds,
        start_time_seconds,
    }
}

fn read() -> Reading {
    let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    parse(
        &text("/proc/self/stat"),
        &text("/proc/self/statm"),
        &text("/proc/self/limits"),
        &text("/proc/stat"),
        fds,
    )
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: Option<f64>,
) -> Result<(), std::fmt::Error> {
    if let Some(v) = v {
        let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)?;
    }
    Ok(())
}

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = read();
        if let Some(cpu) = r.cpu_seconds {
            // The encoder appends `_total` to counters.
            let m = enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(m)?;
        }
        let f = |v: Option<i64>| v.map(|v| v as f64);
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            f(r.resident_bytes),
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            f(r.virtual_bytes),
        )?;
        gauge(
            &mut enc,
            "process_open_fds",
            "Number of open file descriptors",
            f(r.open_fds),
        )?;
        gauge(
            &mut enc,
            "process_max_fds",
            "Maximum number of open file descriptors",
            f(r.max_fds),
        )?;
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            r.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts_with_a_command_name_holding_spaces() {
        // Fields after "(name)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
        let stat =
            "42 (ct reap) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 123456 789";
        let statm = "30000 2000 500 100 0 4000 0";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        let sys = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let r = parse(stat, statm, limits, sys, Some(12));
        let tck = clk_tck();
        assert_eq!(r.cpu_seconds, Some(300.0 / tck));
        assert_eq!(r.start_time_seconds, Some(1_700_000_000.0 + 1000.0 / tck));
        assert_eq!(r.resident_bytes, Some(2000 * page_size()));
        assert_eq!(r.virtual_bytes, Some(30000 * page_size()));
        assert_eq!(r.max_fds, Some(1_048_576));
        assert_eq!(r.open_fds, Some(12));
    }

    #[test]
    fn this_process_reads_plausibly() {
        let r = read();
        assert!(r.resident_bytes.is_some_and(|b| b > 1 << 20), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n >= 3), "{r:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            r.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 3600.0),
            "{r:?}"
        );
    }
}
