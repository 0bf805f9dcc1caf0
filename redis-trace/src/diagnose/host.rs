//! This host, when Redis runs on it: vm.overcommit_memory, Redis's memory cgroup (its
//! limit, its path) and whether the Redis diagnosed is a process here.
use std::collections::HashMap;
use std::path::PathBuf;

use super::format::bytes;
use super::oom::read_kernel_log;
use super::redis_checks::u64_of;
use super::{Finding, MemoryBound, RedisStart, Severity, check_oom_kills, parse_oom_kills};
use crate::sources::procinfo::SERVER_NAMES;

/// `/proc/sys/vm/overcommit_memory` not 1: Warning (fork for BGSAVE, AOF rewrite or a
/// replica's full sync may fail, or the OOM killer may strike).
pub fn check_overcommit(value: &str) -> Option<Finding> {
    let v = value.trim();
    if v == "1" {
        return None;
    }
    let meaning = match v {
        "0" => " (heuristic overcommit)",
        "2" => " (no overcommit)",
        _ => "",
    };
    Some(Finding::new(
        Severity::Warning,
        format!(
            "vm.overcommit_memory is {v}, not 1: fork for BGSAVE, AOF rewrite or a replica's sync \
             may fail, or the OOM killer may strike"
        ),
        vec![format!("/proc/sys/vm/overcommit_memory: {v}{meaning}")],
        "sysctl -w vm.overcommit_memory=1 and persist it in /etc/sysctl.d/ (Redis logs the same \
         advice at start).",
    ))
}

/// Seconds since boot on the kernel log's clock (CLOCK_MONOTONIC).
pub(super) fn monotonic_s() -> f64 {
    crate::time::monotonic_ns() as f64 / 1e9
}

/// The cgroup of a process as the kernel names it in OOM reports: the v2 path, or the
/// v1 memory controller's.
pub(super) fn cgroup_path(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = |want_v1: bool| {
        text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let hit = if want_v1 {
                controllers.split(',').any(|c| c == "memory")
            } else {
                controllers.is_empty()
            };
            hit.then(|| path.to_string())
        })
    };
    line(false).or_else(|| line(true))
}

/// The memory cgroup limit of a process (v2 memory.max, v1 memory.limit_in_bytes; the
/// lowest along the path), as a [`MemoryBound`].
fn cgroup_limit(pid: u32) -> Option<MemoryBound> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (root, rel, file) = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            Some(("/sys/fs/cgroup".to_string(), path.to_string(), "memory.max"))
        } else if controllers.split(',').any(|c| c == "memory") {
            Some((
                "/sys/fs/cgroup/memory".to_string(),
                path.to_string(),
                "memory.limit_in_bytes",
            ))
        } else {
            None
        }
    })?;
    let mut best: Option<(u64, PathBuf)> = None;
    let mut dir = PathBuf::from(&root).join(rel.trim_start_matches('/'));
    while dir.starts_with(&root) {
        let f = dir.join(file);
        if let Some(v) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            // cgroup v1 writes "no limit" as a huge page-aligned number.
            if v < (1 << 60) && best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, f));
            }
        }
        if !dir.pop() {
            break;
        }
    }
    best.map(|(bytes_, f)| MemoryBound {
        bytes: bytes_,
        source: format!(
            "{}: {bytes_} ({}, Redis's memory cgroup limit)",
            f.display(),
            bytes(bytes_)
        ),
    })
}

/// The lower of the host's RAM (INFO total_system_memory) and the cgroup limit.
pub(super) fn memory_bound(
    info: &HashMap<String, String>,
    pid: Option<u32>,
) -> Option<MemoryBound> {
    let host = u64_of(info, "total_system_memory")
        .filter(|n| *n > 0)
        .map(|n| MemoryBound {
            bytes: n,
            source: format!("INFO memory: total_system_memory:{n} ({})", bytes(n)),
        });
    let cg = pid.and_then(cgroup_limit);
    match (host, cg) {
        (Some(h), Some(c)) => Some(if c.bytes < h.bytes { c } else { h }),
        (h, c) => h.or(c),
    }
}

/// The Redis process, if it is on this host: INFO process_id names a redis-server or
/// valkey-server here that listens on INFO tcp_port (or shows ":port" in its title).
pub(super) fn local_pid(info: &HashMap<String, String>) -> Option<u32> {
    let pid = u64_of(info, "process_id").and_then(|p| u32::try_from(p).ok())?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if !SERVER_NAMES.contains(&comm.trim()) {
        return None;
    }
    let port = u64_of(info, "tcp_port").unwrap_or(0);
    if port == 0 {
        return Some(pid);
    }
    if let Ok(ports) = crate::sources::procinfo::redis_ports(&SERVER_NAMES) {
        if ports
            .iter()
            .any(|(p, proc_)| u64::from(*p) == port && proc_.pid == pid)
        {
            return Some(pid);
        }
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(&format!(":{port}"))
        .then_some(pid)
}

pub(super) fn host_findings(redis: Option<&RedisStart>) -> Vec<Finding> {
    let mut out = Vec::new();
    match std::fs::read_to_string("/proc/sys/vm/overcommit_memory") {
        Ok(v) => out.extend(check_overcommit(&v)),
        Err(e) => out.push(Finding::new(
            Severity::Info,
            "vm.overcommit_memory not read",
            vec![format!("/proc/sys/vm/overcommit_memory: {e}")],
            "Check it by hand: sysctl vm.overcommit_memory (1 is what Redis wants).",
        )),
    }
    match read_kernel_log() {
        Ok((source, text)) => {
            out.extend(check_oom_kills(&parse_oom_kills(&text), &source, Some(monotonic_s()), redis));
        }
        Err(why) => out.push(Finding::new(
            Severity::Info,
            "Kernel log not read: OOM kills of redis-server were not checked",
            vec![format!("kernel log: {why}")],
            "Run as root (or with CAP_SYSLOG), or look yourself: journalctl -k | grep -i 'killed process'.",
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnose_overcommit() {
        assert!(check_overcommit("1\n").is_none());
        let f = check_overcommit("0\n").unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .starts_with("vm.overcommit_memory is 0, not 1: fork for BGSAVE")
        );
        assert_eq!(
            f.evidence,
            ["/proc/sys/vm/overcommit_memory: 0 (heuristic overcommit)"]
        );
        assert!(check_overcommit("2").unwrap().evidence[0].ends_with("(no overcommit)"));
    }
}
