//! `redis-trace diagnose`: the usual checks behind `Connection reset by peer`, automated.
//!
//! No BPF and nothing that changes state: Redis is only asked INFO, CONFIG GET and
//! CLIENT LIST (through [`Session`], which also runs AUTH when a password is given); the
//! rest is read from this host: `/proc/sys/vm/overcommit_memory`, the kernel log (OOM
//! kills), Redis's own log (the file `CONFIG GET logfile` names, relative to the server's
//! working directory) and its memory cgroup.
//!
//! Every check is a pure function of what was read (`check_*`, [`parse_oom_kills`],
//! [`summarize_log`]), so that each can be tested without a server; [`run`] reads and
//! calls them. Each [`Finding`] has a severity, its evidence (sentences that start with
//! their source: `CONFIG GET ...:`, `INFO ...:`, `CLIENT LIST:`, `Redis log ...:`,
//! `kernel log ...:`, `/proc/...:`) and the fix.
//!
//! Host-level checks (overcommit, kernel log) run only when Redis is on this host: its
//! process is visible in /proc, or the URL names a loopback address or a Unix socket.
//!
//! - `finding`: what a check finds ([`Finding`], [`Severity`]), also used by the report;
//! - `redis_checks` and `memory`: the checks on what Redis said about itself;
//! - `log_summary`: the recent close lines of Redis's own log;
//! - `host`: this host (overcommit, the memory cgroup, whether Redis runs here);
//! - `oom`: OOM kills in the kernel log;
//! - `render`: the text for a terminal; `format`: numbers and text for people.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::sources::procinfo::SERVER_NAMES;
use crate::sources::redis::{ClientEntry, RedisConfig, Session, Target};
use crate::sources::redis_log;

pub mod finding;
mod format;
mod host;
mod log_summary;
mod memory;
mod oom;
pub mod path;
mod redis_checks;
mod render;
#[cfg(test)]
mod test_support;

pub use finding::{Finding, Severity};
pub use host::check_overcommit;
pub use log_summary::{LogCount, LogSummary, summarize_log};
pub use memory::{MemoryBound, check_maxmemory, check_maxmemory_clients, check_memory_usage};
pub use oom::{OomKill, RedisStart, check_oom_kills, parse_oom_kills};
pub use redis_checks::{
    check_client_output_buffers, check_closes, check_idle_clients, check_maxclients,
    check_output_buffer_limits, check_redis, check_restart, check_tcp_keepalive, check_timeout,
};
pub use render::render_text;

use host::{cgroup_path, host_findings, local_pid, memory_bound, monotonic_s};
use log_summary::{read_tail, redis_log_path};
use redis_checks::{f64_of, u64_of};

/// What to diagnose: like `capture`, a port on 127.0.0.1 or a redis:// URL; the password
/// from REDISCLI_AUTH or a file, never from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub port: u16,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The port was found by discovery (or is the default), not named by the operator:
    /// the password then goes only to a real server's process `pid` (see
    /// `procinfo::trusted_server`), and to nothing when no server process is known.
    pub discovered: Option<Option<u32>>,
    pub tls: crate::sources::redis::tls::TlsSettings,
    /// Captures whose path findings are checked against `tcp-keepalive` (`--capture`).
    pub captures: Vec<PathBuf>,
}

/// The outcome: what Redis said about itself (None when it could not be read) and the
/// findings, most severe first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    pub redis: Option<RedisFacts>,
    pub findings: Vec<Finding>,
}

/// The facts about the Redis diagnosed, as INFO, CONFIG GET and CLIENT LIST gave them.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct RedisFacts {
    /// host:port (or the socket path) from the URL.
    pub addr: String,
    /// INFO process_id (in Redis's own pid namespace).
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    /// RFC 3339, now minus uptime.
    pub started_at: Option<String>,
    pub role: Option<String>,
    pub connected_clients: Option<u64>,
    pub blocked_clients: Option<u64>,
    pub maxclients: Option<u64>,
    pub client_recent_max_output_buffer: Option<u64>,
    pub used_memory: Option<u64>,
    pub used_memory_rss: Option<u64>,
    pub maxmemory: Option<u64>,
    pub maxmemory_policy: Option<String>,
    pub mem_fragmentation_ratio: Option<f64>,
    pub timeout: Option<u64>,
    pub tcp_keepalive: Option<u64>,
    /// CONFIG GET logfile, as Redis has it ("" = standard output).
    pub logfile: Option<String>,
    /// The Redis process was found in this host's /proc (pid, name and port match).
    pub process_on_this_host: bool,
    /// CLIENT LIST: how many clients, the longest idle time and the largest output buffer.
    pub clients_listed: Option<usize>,
    pub max_idle_s: Option<u64>,
    pub max_omem: Option<u64>,
}

impl Diagnosis {
    /// The most severe finding's severity, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// 0: nothing above Info; 2: warnings; 3: something critical (1 is for tool errors).
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            None | Some(Severity::Info) => 0,
            Some(Severity::Warning) => 2,
            Some(Severity::Critical) => 3,
        }
    }
}

// ---- thresholds ---------------------------------------------------------------------

/// A start within this long is a finding: every connection was closed by the restart.
const RESTART_WINDOW_S: u64 = 3600;
/// A `timeout` up to this long is shorter than typical pool idle times.
const SHORT_TIMEOUT_S: u64 = 300;
/// A pubsub or normal hard output buffer limit below this is tiny (the pubsub default is
/// 32mb 8mb 60).
const SMALL_OUTPUT_LIMIT: u64 = 8 << 20;
/// used_memory above this share of maxmemory.
const MEMORY_HIGH: f64 = 0.9;
/// mem_fragmentation_ratio above this, with used_memory above [`FRAG_MIN_USED`].
const FRAG_RATIO: f64 = 1.5;
const FRAG_MIN_USED: u64 = 100 << 20;
/// With no maxmemory, RSS above this share of the memory Redis can get is a warning.
const NO_MAXMEMORY_RSS_SHARE: f64 = 0.5;
/// Clients idle for more than timeout/2 making up at least this share of those subject
/// to the timeout.
const IDLE_SHARE: f64 = 0.2;
/// A client whose omem is above this share of its class's hard limit.
const OMEM_SHARE: f64 = 0.5;
/// connected_clients at this share of maxclients.
const MAXCLIENTS_SHARE: f64 = 0.9;
/// What "recent" means for Redis-log lines and OOM kills.
const RECENT: Duration = Duration::from_secs(24 * 3600);
/// At most this much of the end of Redis's log is read.
const LOG_TAIL_BYTES: u64 = 16 << 20;
/// Kernel-log helpers (dmesg, journalctl) get this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this much kernel log is kept.
const KERNEL_LOG_MAX: usize = 64 << 20;
/// Client and log samples per finding.
const SAMPLES: usize = 3;
/// host:port (or the socket path) of a redis:// URL, and whether it is on this host by
/// its address (loopback, localhost, a Unix socket).
fn url_addr(url: &str) -> (String, bool) {
    match redis::parse_redis_url(url) {
        Some(u) if u.scheme().ends_with("unix") => (u.path().to_string(), true),
        Some(u) => {
            let host = u.host_str().unwrap_or("127.0.0.1").to_string();
            let port = u.port().unwrap_or(6379);
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let local = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            (format!("{host}:{port}"), local)
        }
        None => (url.to_string(), false),
    }
}

// ---- the run --------------------------------------------------------------------------

/// Errors that mean our own access is wrong (password, ACL), not that Redis is down.
fn is_access_error(msg: &str) -> bool {
    [
        "requires a password",
        "rejected the credentials",
        "lacks permission",
        "has no ACL users",
        "but no password was given",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

/// Reads Redis (read-only) and this host, and runs every check. Redis unreachable is a
/// Critical finding; Err only when the tool cannot do its job (a bad URL, an unreadable
/// password file, credentials or permissions refused).
pub fn run(opts: &Options) -> anyhow::Result<Diagnosis> {
    let mut target = Target::new(
        opts.url.as_deref(),
        opts.port,
        opts.password_file.as_deref(),
    )?
    .with_tls(&opts.tls)?;
    // A port the operator did not name (nor a --redis-url): only a real server.
    if let (Some(pid), None) = (opts.discovered, &opts.url) {
        target = target.for_discovered(opts.port, pid);
    }
    let (addr, url_local) = url_addr(&target.url);
    let read = Session::connect(&target).and_then(|mut s| {
        let cfg = s.config()?;
        let snap = s.snapshot(true)?;
        Ok((cfg, snap))
    });
    let mut findings = Vec::new();
    let mut facts = None;
    let mut redis_start = None;
    let mut on_host = url_local;
    match read {
        Err(e) => {
            let msg = format!("{e:#}");
            if is_access_error(&msg) {
                return Err(e.context(format!("cannot read Redis at {addr}")));
            }
            findings.push(unreachable_finding(&addr, &msg, url_local));
        }
        Ok((cfg, snap)) => {
            let info = snap.info;
            let clients = snap.clients;
            let pid = local_pid(&info);
            on_host |= pid.is_some();
            let log = match redis_log_path(cfg.logfile.as_deref(), pid) {
                Ok((path, shown)) => match read_tail(&path) {
                    Ok(text) => Ok(summarize_log(
                        &shown,
                        &redis_log::parse_lines(&text),
                        SystemTime::now(),
                        RECENT,
                    )),
                    Err(e) => Err(format!("{e:#}")),
                },
                Err(e) => Err(e),
            };
            let log = match log {
                Ok(l) => Some(l),
                Err(why) => {
                    findings.push(Finding::new(
                        Severity::Info,
                        "Redis log not read: its close lines (output buffer limits, evictions, \
                         crashes) were not checked",
                        vec![format!("CONFIG GET logfile: {why}")],
                        "Look for \"overcoming of output buffer limits\", \"max query buffer\", \
                         \"Evicting client\" and crash reports wherever Redis's output goes \
                         (journalctl -u redis-server, docker logs, ...).",
                    ));
                    None
                }
            };
            let bound = memory_bound(&info, pid);
            findings.extend(check_redis(
                &cfg,
                &info,
                clients.as_deref(),
                bound.as_ref(),
                log.as_ref(),
            ));
            if clients.is_none() {
                findings.push(Finding::new(
                    Severity::Info,
                    "CLIENT LIST refused: idle clients and output buffers were not checked",
                    vec!["CLIENT LIST: NOPERM for this Redis user".into()],
                    "Grant the user +client|list to include these checks.",
                ));
            }
            if let (Some(pid), Some(up)) = (pid, u64_of(&info, "uptime_in_seconds")) {
                redis_start = Some(RedisStart {
                    pid,
                    at_s: monotonic_s() - up as f64,
                    cgroup: cgroup_path(pid),
                });
            }
            facts = Some(facts_from(
                &addr,
                &cfg,
                &info,
                clients.as_deref(),
                pid.is_some(),
            ));
        }
    }
    if on_host {
        findings.extend(host_findings(redis_start.as_ref()));
    } else {
        findings.push(Finding::new(
            Severity::Info,
            format!("Redis at {addr} is not on this host: overcommit and OOM kills not checked"),
            vec![format!(
                "INFO server: process_id names no redis-server here listening on its port, and \
                 {addr} is not a loopback address"
            )],
            "Run `redis-trace diagnose` on the Redis host too.",
        ));
    }
    if !opts.captures.is_empty() {
        let caps = crate::report::read::load(&opts.captures)?;
        let bound = path::PathBound::from_records(caps.iter().flat_map(|c| &c.records));
        findings.extend(path::check_path(
            &bound,
            facts.as_ref().and_then(|f| f.tcp_keepalive),
        ));
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(Diagnosis {
        redis: facts,
        findings,
    })
}

fn unreachable_finding(addr: &str, msg: &str, url_local: bool) -> Finding {
    let reason = msg
        .strip_prefix(&format!("Redis at {addr} "))
        .unwrap_or(msg);
    let mut evidence = vec![format!("connect: {msg}")];
    if url_local {
        match crate::sources::procinfo::redis_ports(&SERVER_NAMES) {
            Ok(ports) if ports.is_empty() => evidence.push(
                "/proc: no redis-server or valkey-server process listens on a TCP port on this host"
                    .into(),
            ),
            Ok(ports) => {
                let list: Vec<String> = ports
                    .iter()
                    .map(|(port, p)| format!("{} [{}] on port {port}", p.comm, p.pid))
                    .collect();
                evidence.push(format!("/proc: listening here: {}", list.join(", ")));
            }
            Err(e) => evidence.push(format!("/proc: cannot list listeners: {e:#}")),
        }
    }
    Finding::new(
        Severity::Critical,
        format!("Redis at {addr} is not answering: {reason}"),
        evidence,
        "Start Redis, or find why it stopped (systemctl status redis-server, journalctl -u \
         redis-server, the kernel log for OOM kills); check the address (--port, --redis-url).",
    )
}

fn facts_from(
    addr: &str,
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    clients: Option<&[ClientEntry]>,
    on_host: bool,
) -> RedisFacts {
    let uptime = u64_of(info, "uptime_in_seconds");
    RedisFacts {
        addr: addr.to_string(),
        pid: u64_of(info, "process_id").and_then(|p| u32::try_from(p).ok()),
        // Valkey's redis_version is a compatibility constant (7.2.4): its own first.
        version: crate::sources::redis::ServerId::from_info(info).map(|id| id.version),
        uptime_s: uptime,
        started_at: uptime
            .and_then(|u| SystemTime::now().checked_sub(Duration::from_secs(u)))
            .filter(|t| *t >= SystemTime::UNIX_EPOCH)
            .map(crate::time::rfc3339_seconds),
        role: info.get("role").cloned(),
        connected_clients: u64_of(info, "connected_clients"),
        blocked_clients: u64_of(info, "blocked_clients"),
        maxclients: u64_of(info, "maxclients"),
        client_recent_max_output_buffer: u64_of(info, "client_recent_max_output_buffer"),
        used_memory: u64_of(info, "used_memory"),
        used_memory_rss: u64_of(info, "used_memory_rss"),
        maxmemory: cfg.maxmemory,
        maxmemory_policy: cfg.maxmemory_policy.clone(),
        mem_fragmentation_ratio: f64_of(info, "mem_fragmentation_ratio"),
        timeout: cfg.timeout,
        tcp_keepalive: cfg.tcp_keepalive,
        logfile: cfg.logfile.clone(),
        process_on_this_host: on_host,
        clients_listed: clients.map(<[ClientEntry]>::len),
        max_idle_s: clients.and_then(|c| c.iter().map(|c| c.idle).max()),
        max_omem: clients.and_then(|c| c.iter().map(|c| c.omem).max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::test_support::*;

    #[test]
    fn a_huge_uptime_does_not_make_a_time_before_1970() {
        let info = info_with(&[("uptime_in_seconds", "18446744073709551615")]);
        let f = facts_from("127.0.0.1:6379", &RedisConfig::default(), &info, None, true);
        assert_eq!(f.started_at, None);
        // And the text rendering of such facts does not panic either.
        let d = Diagnosis {
            redis: Some(f),
            findings: Vec::new(),
        };
        let _ = render_text(&d, false);
    }

    #[test]
    fn diagnose_url_and_errors() {
        assert_eq!(
            url_addr("redis://127.0.0.1:6380/"),
            ("127.0.0.1:6380".into(), true)
        );
        assert_eq!(
            url_addr("redis://localhost/"),
            ("localhost:6379".into(), true)
        );
        assert_eq!(url_addr("redis://[::1]:7000/"), ("[::1]:7000".into(), true));
        assert_eq!(
            url_addr("redis://app@10.1.2.3:6379/"),
            ("10.1.2.3:6379".into(), false)
        );
        assert_eq!(
            url_addr("unix:///run/redis.sock"),
            ("/run/redis.sock".into(), true)
        );
        assert!(is_access_error(
            "Redis rejected the credentials (WRONGPASS)"
        ));
        assert!(!is_access_error(
            "Redis at 127.0.0.1:1 refused the connection (is it running?)"
        ));
    }

    #[test]
    fn diagnose_exit_code() {
        let d = |f: Vec<Finding>| Diagnosis {
            redis: None,
            findings: f,
        };
        assert_eq!(d(vec![]).exit_code(), 0);
        assert_eq!(d(vec![finding(Severity::Info, "i")]).exit_code(), 0);
        assert_eq!(
            d(vec![
                finding(Severity::Info, "i"),
                finding(Severity::Warning, "w")
            ])
            .exit_code(),
            2
        );
        assert_eq!(
            d(vec![
                finding(Severity::Critical, "c"),
                finding(Severity::Warning, "w")
            ])
            .exit_code(),
            3
        );
        let json = serde_json::to_value(d(vec![finding(Severity::Warning, "w")])).unwrap();
        assert_eq!(json["findings"][0]["severity"], "warning");
        assert_eq!(json["redis"], serde_json::Value::Null);
    }
}
