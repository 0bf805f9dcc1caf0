//! OOM kills of Redis in the kernel log: reading the log (/dev/kmsg, dmesg, journalctl),
//! finding the kills in it, and the finding about them.
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::format::{clip, dur};
use super::{COMMAND_TIMEOUT, Finding, KERNEL_LOG_MAX, RECENT, SAMPLES, Severity};
use crate::sources::procinfo::SERVER_NAMES;

/// An OOM kill of a Redis-like process, from the kernel log.
#[derive(Debug, Clone, PartialEq)]
pub struct OomKill {
    pub pid: u32,
    pub comm: String,
    /// Seconds since boot (the kernel log's clock), when the line had it.
    pub at_s: Option<f64>,
    /// A memory cgroup's limit was hit (not the whole host's memory).
    pub memcg: bool,
    /// The victim's cgroup (`task_memcg=` of the "oom-kill:" line), when logged.
    pub task_memcg: Option<String>,
    /// The kernel's message, without its timestamp.
    pub message: String,
}

/// Kernel log text -> OOM kills of `redis-server`/`valkey-server`. Reads /dev/kmsg records
/// (`6,1234,3029395239,-;message`), `dmesg` and `journalctl -k -o short-monotonic` lines
/// (`[ 3029.395239] ...`) and bare messages; recognises "Out of memory: Killed process N
/// (name)", "Memory cgroup out of memory: Killed process N (name)", older kernels' "Kill
/// process N (name)" and "oom-kill:...,task=name,pid=N". The lines of one kill (same pid,
/// within 10 s) count once.
pub fn parse_oom_kills(text: &str) -> Vec<OomKill> {
    let mut kills: Vec<OomKill> = Vec::new();
    for line in text.lines() {
        let (at_s, msg) = split_kernel_stamp(line);
        let Some(v) = oom_victim(msg) else {
            continue;
        };
        if !SERVER_NAMES.contains(&v.comm.as_str()) {
            continue;
        }
        let pid = v.pid;
        let same = kills.iter_mut().rev().find(|k| {
            k.pid == pid
                && match (k.at_s, at_s) {
                    (Some(a), Some(b)) => (a - b).abs() < 10.0,
                    _ => true,
                }
        });
        match same {
            Some(k) => {
                k.memcg |= v.memcg;
                if v.killed_line {
                    k.message = msg.to_string();
                }
                k.at_s = k.at_s.or(at_s);
                k.task_memcg = k.task_memcg.take().or(v.task_memcg);
            }
            None => kills.push(OomKill {
                pid,
                comm: v.comm,
                at_s,
                memcg: v.memcg,
                task_memcg: v.task_memcg,
                message: msg.to_string(),
            }),
        }
    }
    kills
}

/// (seconds since boot, message) of a kernel log line.
fn split_kernel_stamp(line: &str) -> (Option<f64>, &str) {
    let line = line.trim_end();
    // /dev/kmsg: "prio,seq,usec,flags[,...];message"
    if let Some((head, msg)) = line.split_once(';') {
        let fields: Vec<&str> = head.split(',').collect();
        if fields.len() >= 4
            && fields[..3]
                .iter()
                .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        {
            return (fields[2].parse::<f64>().ok().map(|us| us / 1e6), msg);
        }
    }
    // dmesg, journalctl -o short-monotonic: "[ 3029.395239] message"
    if let Some(rest) = line.trim_start().strip_prefix('[') {
        if let Some((stamp, msg)) = rest.split_once(']') {
            if let Ok(s) = stamp.trim().parse::<f64>() {
                return (Some(s), msg.trim_start());
            }
        }
    }
    (None, line)
}

/// The victim named by one OOM-kill message.
struct Victim {
    pid: u32,
    comm: String,
    memcg: bool,
    /// The "Killed process" line (the one to show).
    killed_line: bool,
    task_memcg: Option<String>,
}

fn oom_victim(msg: &str) -> Option<Victim> {
    let memcg = msg.contains("Memory cgroup out of memory") || msg.contains("CONSTRAINT_MEMCG");
    for marker in ["Killed process ", "Kill process "] {
        if let Some(i) = msg.find(marker) {
            let rest = &msg[i + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let rest = rest[digits.len()..].strip_prefix(" (")?;
            let (comm, _) = rest.split_once(')')?;
            return Some(Victim {
                pid: digits.parse().ok()?,
                comm: comm.to_string(),
                memcg,
                killed_line: marker == "Killed process ",
                task_memcg: None,
            });
        }
    }
    if let Some(rest) = msg.trim_start().strip_prefix("oom-kill:") {
        let mut task = None;
        let mut pid = None;
        let mut task_memcg = None;
        for field in rest.split(',') {
            match field.split_once('=') {
                Some(("task", v)) => task = Some(v.to_string()),
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("task_memcg", v)) => task_memcg = Some(v.to_string()),
                _ => {}
            }
        }
        return Some(Victim {
            pid: pid?,
            comm: task?,
            memcg,
            killed_line: false,
            task_memcg,
        });
    }
    None
}

/// When the Redis diagnosed started, on the kernel log's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStart {
    pub pid: u32,
    /// Seconds since boot.
    pub at_s: f64,
    /// Its cgroup (/proc/<pid>/cgroup), to tell whether a killed process was the same
    /// service.
    pub cgroup: Option<String>,
}

/// OOM kills of redis-server in the kernel log: Critical within the last 24 h (or at an
/// unknown time), Warning when older. `now_s`: seconds since boot now. A kill just before
/// the diagnosed Redis started is named as the reason for that start when both were in the
/// same cgroup (the service's), as a possibility when a cgroup is unknown, and not at all
/// when the cgroups differ (another Redis on this host).
pub fn check_oom_kills(
    kills: &[OomKill],
    source: &str,
    now_s: Option<f64>,
    redis: Option<&RedisStart>,
) -> Option<Finding> {
    let last = kills.iter().max_by(|a, b| {
        a.at_s
            .unwrap_or(f64::MAX)
            .total_cmp(&b.at_s.unwrap_or(f64::MAX))
    })?;
    let age = |k: &OomKill| match (now_s, k.at_s) {
        (Some(now), Some(at)) => Some((now - at).max(0.0)),
        _ => None,
    };
    let recent = age(last).is_none_or(|a| a < RECENT.as_secs_f64());
    let severity = if recent {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let when = |k: &OomKill| match age(k) {
        Some(a) => format!("{} ago", dur(a as u64)),
        None => "at an unknown time".to_string(),
    };
    let times = if kills.len() > 1 {
        format!(" {} times", kills.len())
    } else {
        String::new()
    };
    let title = format!(
        "{} was killed by the kernel's OOM killer{times}: last {} (pid {})",
        last.comm,
        when(last),
        last.pid
    );
    let mut evidence = Vec::new();
    for k in kills.iter().rev().take(SAMPLES) {
        evidence.push(format!(
            "kernel log ({source}), {}: {}",
            when(k),
            clip(&k.message, 300)
        ));
    }
    if let (Some(r), Some(at)) = (redis, last.at_s) {
        if at <= r.at_s && r.at_s - at < 300.0 {
            let after = format!(
                "INFO server: this Redis (pid {}) started {} after that kill",
                r.pid,
                dur((r.at_s - at) as u64)
            );
            match (&r.cgroup, &last.task_memcg) {
                (Some(ours), Some(theirs)) if ours == theirs => evidence.push(format!(
                    "{after}, in the same cgroup {ours}: it is the restart that followed"
                )),
                (Some(_), Some(_)) => {}
                _ => evidence.push(format!(
                    "{after}: possibly the restart that followed (nothing here ties the killed \
                     process to this Redis)"
                )),
            }
        }
    }
    let where_ = if kills.iter().any(|k| k.memcg) {
        "its memory cgroup's limit (memory.max)"
    } else {
        "the host"
    };
    Some(Finding::new(
        severity,
        title,
        evidence,
        format!(
            "Every connection died with the process. Keep Redis under {where_}: set maxmemory \
             (with an eviction policy if it is a cache) well below it, leaving room for fork \
             copy-on-write, client buffers and fragmentation; raise the limit if it is too low; \
             the kernel's OOM report lists what else used the memory."
        ),
    ))
}

/// The kernel log: /dev/kmsg (non-blocking), else `dmesg`, else `journalctl -k`.
/// Ok((source, text)); Err says why none could be read.
pub(super) fn read_kernel_log() -> Result<(String, String), String> {
    let mut why = Vec::new();
    match read_kmsg() {
        Ok(text) => return Ok(("/dev/kmsg".into(), text)),
        Err(e) => why.push(format!("/dev/kmsg: {e}")),
    }
    for (name, args) in [
        ("dmesg", &[][..]),
        (
            "journalctl -k",
            &["-k", "-b", "-o", "short-monotonic", "--no-pager", "-q"][..],
        ),
    ] {
        let program = name.split(' ').next().unwrap_or(name);
        match run_with_timeout(Command::new(program).args(args), COMMAND_TIMEOUT) {
            Ok(text) if !text.trim().is_empty() => return Ok((name.into(), text)),
            Ok(_) => why.push(format!("{name}: no output")),
            Err(e) => why.push(format!("{name}: {e}")),
        }
    }
    Err(why.join("; "))
}

fn read_kmsg() -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut text = String::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // One record per read: "prio,seq,usec,flags;message\n" then " KEY=value"
                // continuation lines, which are dropped.
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some(first) = rec.lines().next() {
                    text.push_str(first);
                    text.push('\n');
                }
                if text.len() > KERNEL_LOG_MAX {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // Records overwritten while we read: go on with the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(text)
}

/// Runs a command with stdout captured, killing it past `limit`.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(KERNEL_LOG_MAX as u64)
            .read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("no answer within {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    let status = status?;
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernel log lines as /dev/kmsg, dmesg and journalctl -k -o short-monotonic give them
    /// (the memcg kill as this host's kernel 6.18 logged it).
    const KERNEL_LOG: &str = "\
6,1200,3029395100,-;redis-server invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
6,1201,3029395167,-;[  32688]     0 32688    38502    18599    16256     2343         0   286720        0             0 redis-server
6,1202,3029395170,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/t,task_memcg=/t,task=redis-server,pid=32688,uid=0
3,1203,3029395239,-;Memory cgroup out of memory: Killed process 32688 (redis-server) total-vm:154008kB, anon-rss:65024kB, file-rss:9372kB, shmem-rss:0kB, UID:0 pgtables:280kB oom_score_adj:0
[  100.000000] Out of memory: Kill process 555 (redis-server) score 900 or sacrifice child
[  100.000100] Killed process 555 (redis-server) total-vm:2000000kB, anon-rss:1900000kB, file-rss:0kB
[ 5000.100000] Out of memory: Killed process 4242 (valkey-server) total-vm:1kB, anon-rss:1kB
[ 5000.200000] oom_reaper: reaped process 4242 (valkey-server), now anon-rss:0kB, file-rss:0kB
[ 6000.000001] db1 kernel: Out of memory: Killed process 77 (postgres) total-vm:1kB
[ 6100.000001] db1 kernel: Out of memory: Killed process 78 (redis-server) total-vm:1kB
";

    #[test]
    fn diagnose_parse_oom_kills() {
        let kills = parse_oom_kills(KERNEL_LOG);
        let got: Vec<(u32, &str, bool)> = kills
            .iter()
            .map(|k| (k.pid, k.comm.as_str(), k.memcg))
            .collect();
        assert_eq!(
            got,
            [
                (32688, "redis-server", true),
                (555, "redis-server", false),
                (4242, "valkey-server", false),
                (78, "redis-server", false),
            ]
        );
        assert!(
            (kills[0].at_s.unwrap() - 3029.39517).abs() < 1e-6,
            "{kills:?}"
        );
        assert!(
            kills[0]
                .message
                .starts_with("Memory cgroup out of memory: Killed process 32688"),
            "the Killed process line is kept: {:?}",
            kills[0].message
        );
        assert!(kills[1].message.starts_with("Killed process 555"));
        assert_eq!(kills[3].at_s, Some(6100.000001));
        // A bare message has no time; a pid seen again much later is another kill.
        let k = parse_oom_kills(
            "Out of memory: Killed process 9 (redis-server)\n[ 10.0] Killed process 9 (redis-server)\n[ 99.0] Killed process 9 (redis-server)",
        );
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(k[0].at_s, Some(10.0));
        assert!(
            parse_oom_kills("oom-kill:task=redis-server\nKilled process x (redis-server)")
                .is_empty()
        );
    }

    #[test]
    fn diagnose_oom_kill_finding() {
        let kills = parse_oom_kills(KERNEL_LOG);
        let f = check_oom_kills(&kills, "/dev/kmsg", Some(6160.0), None).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(
            f.title,
            "redis-server was killed by the kernel's OOM killer 4 times: last 59s ago (pid 78)"
        );
        assert_eq!(f.evidence.len(), 3);
        assert!(f.evidence[0].starts_with(
            "kernel log (/dev/kmsg), 59s ago: db1 kernel: Out of memory: Killed process 78"
        ));
        assert!(f.fix.contains("memory.max"), "one of them was a memcg kill");

        // The restart that followed a kill.
        let memcg = &kills[..1];
        assert_eq!(memcg[0].task_memcg.as_deref(), Some("/t"));
        let mut start = RedisStart {
            pid: 40000,
            at_s: 3031.0,
            cgroup: Some("/t".into()),
        };
        let f = check_oom_kills(memcg, "dmesg", Some(3100.0), Some(&start)).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(
            f.evidence.last().unwrap(),
            "INFO server: this Redis (pid 40000) started 1s after that kill, in the same cgroup \
             /t: it is the restart that followed"
        );
        // Another cgroup: another Redis; no cgroup known: a possibility only.
        start.cgroup = Some("/system.slice/redis-server.service".into());
        let f = check_oom_kills(memcg, "dmesg", Some(3100.0), Some(&start)).unwrap();
        assert!(
            f.evidence.iter().all(|e| !e.starts_with("INFO server")),
            "{f:?}"
        );
        start.cgroup = None;
        let f = check_oom_kills(memcg, "dmesg", Some(3100.0), Some(&start)).unwrap();
        assert!(
            f.evidence
                .last()
                .unwrap()
                .contains("possibly the restart that followed")
        );
        // Too long before the start: unrelated.
        start.at_s = 4000.0;
        let f = check_oom_kills(memcg, "dmesg", Some(4100.0), Some(&start)).unwrap();
        assert!(f.evidence.iter().all(|e| !e.starts_with("INFO server")));
        // Two days later: still worth knowing, no longer critical.
        let f = check_oom_kills(memcg, "dmesg", Some(3029.4 + 2.0 * 86400.0), None).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title.ends_with("last 2days ago (pid 32688)"),
            "{}",
            f.title
        );
        // No time: critical, "at an unknown time".
        let bare = parse_oom_kills("Out of memory: Killed process 9 (redis-server)");
        let f = check_oom_kills(&bare, "journalctl -k", Some(10.0), None).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.title.contains("last at an unknown time"));
        assert!(check_oom_kills(&[], "dmesg", None, None).is_none());
    }
}
