//! Processes as /proc shows them: their names, executable, command line and start time,
//! and which of them are called one of a list of names.
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use procfs::process::Process;

/// A process as seen in /proc at the time of the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The kernel's task name (/proc/<pid>/stat), at most 15 bytes.
    pub comm: String,
    /// The executable, when we may read /proc/<pid>/exe (not for kernel threads, nor for
    /// other users' processes when unprivileged).
    pub exe: Option<PathBuf>,
    /// The argument vector; empty for zombies and kernel threads. Servers that rewrite their
    /// process title (redis-server does) show the rewritten text here.
    pub cmdline: Vec<String>,
    /// Start time in clock ticks since boot; together with `pid` it identifies a process
    /// even if the pid is reused later.
    pub start_time_ticks: u64,
}

/// Processes by name (same matching as [`redis_ports`]), for the pids to watch. Sorted by pid.
pub fn processes_named(names: &[&str]) -> anyhow::Result<Vec<ProcessInfo>> {
    Ok(all_pids()?
        .into_iter()
        .filter_map(read_process_info)
        .filter(|p| name_matches(p, names))
        .collect())
}

/// Pids of all processes (thread-group leaders; threads share their leader's fd table).
pub fn all_pids() -> anyhow::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .context("listing /proc")?
        // An entry that fails to read is a process that just exited.
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Reads what we report about a process; `None` if it is gone or unreadable.
fn read_process_info(pid: u32) -> Option<ProcessInfo> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    // Read by hand rather than with procfs: its reader rejects non-UTF-8 arguments, and
    // one odd byte should not hide a process's command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| split_cmdline(&raw))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        comm: stat.comm,
        exe: process.exe().ok(),
        cmdline,
        start_time_ticks: stat.starttime,
    })
}

/// Splits the raw bytes of /proc/<pid>/cmdline (NUL-terminated arguments) into arguments.
///
/// Trailing NULs are dropped: a process that rewrote its title (redis-server) pads the old
/// argument area with them. This also drops genuinely empty trailing arguments, which cannot
/// be told apart; empty arguments elsewhere (`--save ''`) are kept.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Vec::new();
    }
    raw[..end]
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Process info looked up at most once per pid within one call.
#[derive(Default)]
pub(super) struct InfoCache(HashMap<u32, Option<ProcessInfo>>);

impl InfoCache {
    pub(super) fn get(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.0
            .entry(pid)
            .or_insert_with(|| read_process_info(pid))
            .clone()
    }
}

/// The kernel keeps at most this many bytes of a task name (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// Whether the process is called one of `names`, by comm or by argv[0].
fn name_matches(p: &ProcessInfo, names: &[&str]) -> bool {
    let argv0 = p.cmdline.first().map(String::as_str).unwrap_or("");
    names
        .iter()
        .any(|name| comm_matches(&p.comm, name) || argv0_matches(argv0, name))
}

/// comm is truncated to 15 bytes, so a longer name matches its first 15 bytes.
fn comm_matches(comm: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    comm == name
        || (name.len() > COMM_MAX && Some(comm.as_bytes()) == name.as_bytes().get(..COMM_MAX))
}

/// argv[0] may be a path, and servers that set their title put more after a space
/// ("redis-server *:6379", "/usr/bin/redis-server 127.0.0.1:6379"). Split at the first space
/// before taking the basename, since the text after it can contain slashes (a unix socket
/// path); the whole argv[0] is tried too, for a path that itself contains a space.
fn argv0_matches(argv0: &str, name: &str) -> bool {
    if name.is_empty() || argv0.is_empty() {
        return false;
    }
    let program = argv0.split(' ').next().unwrap_or(argv0);
    basename(program) == name || basename(argv0) == name
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(comm: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: comm.to_string(),
            exe: None,
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            start_time_ticks: 0,
        }
    }

    const REDIS: &[&str] = &["redis-server", "valkey-server"];

    #[test]
    fn split_cmdline_handles_padding_and_empty_args() {
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"\0\0"), Vec::<String>::new());
        assert_eq!(
            split_cmdline(b"redis-server\0--save\0\0--port\x006380\0"),
            ["redis-server", "--save", "", "--port", "6380"]
        );
        assert_eq!(
            split_cmdline(b"redis-server *:6379\0\0\0\0\0"),
            ["redis-server *:6379"]
        );
        assert_eq!(split_cmdline(b"a\xffb\0"), ["a\u{fffd}b"]);
    }

    #[test]
    fn names_match_comm_and_argv0() {
        assert!(name_matches(&info("redis-server", &[]), REDIS));
        assert!(name_matches(
            &info("valkey-server", &["valkey-server *:6379"]),
            REDIS
        ));
        // Renamed main thread, but a recognisable argv[0].
        assert!(name_matches(
            &info("x", &["/usr/bin/redis-server 127.0.0.1:6379"]),
            REDIS
        ));
        assert!(name_matches(
            &info("x", &["redis-server unixsocket:/run/redis/r.sock"]),
            REDIS
        ));
        assert!(name_matches(
            &info("x", &["/opt/my redis/redis-server", "/etc/redis.conf"]),
            REDIS
        ));
        assert!(!name_matches(
            &info("redis-cli", &["redis-cli", "ping"]),
            REDIS
        ));
        assert!(!name_matches(&info("vim", &["vim", "redis-server"]), REDIS));
        assert!(!name_matches(&info("redis-server-x", &[]), REDIS));
        assert!(!name_matches(&info("", &[]), &[""]));
        // comm keeps 15 bytes of a longer name.
        assert!(name_matches(
            &info("keydb-server-ex", &[]),
            &["keydb-server-extra"]
        ));
    }
}

/// The pids of process `pid` in each nested pid namespace, outermost (ours, for a
/// host-wide tool) first: /proc/PID/status's `NSpid:` line.
pub fn ns_pids(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_ns_pids(&status)
}

/// The `NSpid:` line of a /proc/PID/status text.
pub fn parse_ns_pids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

/// The pid on this host of the Redis whose own INFO says `process_id:ns_pid`: in a
/// container with its own pid namespace that number is the container's (often 1).
/// `hint` is the pid the server had when it was found; `netns` its network namespace.
/// `None` when no process matches: a pid from INFO is never used unchecked.
pub fn host_pid(ns_pid: u32, netns: Option<u32>, hint: Option<u32>) -> Option<u32> {
    let innermost = |pid: u32| ns_pids(pid).and_then(|p| p.last().copied());
    let same_net = |pid: u32| netns.is_none() || super::netns::netns_of_pid(pid) == netns;
    if let Some(h) = hint
        && innermost(h) == Some(ns_pid)
        && same_net(h)
    {
        return Some(h);
    }
    // In our own pid namespace the numbers agree.
    if ns_pids(ns_pid).is_some_and(|p| p.len() == 1) && same_net(ns_pid) {
        return Some(ns_pid);
    }
    processes_named(&super::SERVER_NAMES)
        .ok()?
        .into_iter()
        .map(|p| p.pid)
        .find(|&pid| innermost(pid) == Some(ns_pid) && same_net(pid))
}

#[cfg(test)]
mod ns_pid_tests {
    use super::*;

    #[test]
    fn reads_nspid_lines() {
        // A process in a container's pid namespace, as the host sees it, and one on the host.
        let container = "Name:\tredis-server\nTgid:\t48211\nNgid:\t0\nPid:\t48211\nPPid:\t48190\nNSpid:\t48211\t1\nNSpgid:\t48211\t1\n";
        assert_eq!(parse_ns_pids(container), Some(vec![48211, 1]));
        assert_eq!(parse_ns_pids("Name:\tx\nNSpid:\t900\n"), Some(vec![900]));
        assert_eq!(parse_ns_pids("Name:\tx\n"), None);
        assert_eq!(parse_ns_pids("NSpid:\t9x\n"), None);
        assert_eq!(parse_ns_pids("NSpid:\n"), None);
    }

    #[test]
    fn our_own_pid_translates_to_itself() {
        let me = std::process::id();
        assert_eq!(
            host_pid(me, super::super::netns::own_netns(), None),
            Some(me)
        );
        assert_eq!(host_pid(me, None, Some(me)), Some(me));
    }
}
