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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::sources::procinfo::{SERVER_NAMES, escape_name};
use crate::sources::redis::{BufferLimit, ClientEntry, RedisConfig, Session, Target};
use crate::sources::redis_log::{self, LogEvent, LogKind};

/// One thing found, with the evidence behind it and what to do about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub title: String,
    pub evidence: Vec<String>,
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Finding {
    fn new(
        severity: Severity,
        title: impl Into<String>,
        evidence: Vec<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            title: title.into(),
            evidence,
            fix: fix.into(),
        }
    }
}

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

// ---- small helpers --------------------------------------------------------------------

fn u64_of(info: &HashMap<String, String>, key: &str) -> Option<u64> {
    info.get(key).and_then(|v| v.trim().parse().ok())
}

fn f64_of(info: &HashMap<String, String>, key: &str) -> Option<f64> {
    info.get(key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Bytes for people: "512 B", "1 MiB", "1.5 GiB".
fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} B")
}

/// Seconds for people: "42s", "1h 2m 3s".
fn dur(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// "24 h", "90 min", "45 s".
fn window_text(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Cuts a long line (log lines can be 1 KiB) for evidence.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str(" ...");
    out
}

/// One client, for evidence: "id=32 addr=127.0.0.1:49894 name=x flags=P cmd=subscribe".
fn describe(c: &ClientEntry) -> String {
    let mut s = format!("id={}", c.id);
    if let Some(a) = c.addr {
        let _ = write!(s, " addr={a}");
    }
    if !c.name.is_empty() {
        let _ = write!(s, " name={}", c.name);
    }
    if let Some(lib) = &c.lib_name {
        let _ = write!(s, " lib-name={lib}");
    }
    if let Some(user) = &c.user {
        let _ = write!(s, " user={user}");
    }
    let _ = write!(s, " flags={} cmd={}", c.flags, c.cmd);
    s
}

/// CLIENT LIST flags -> the client-output-buffer-limit class Redis applies.
/// `S` replica; `P` pub/sub; everything else (masters and MONITOR clients included) normal.
fn client_class(flags: &str) -> &'static str {
    if flags.contains('S') {
        "replica"
    } else if flags.contains('P') {
        "pubsub"
    } else {
        "normal"
    }
}

fn class_limit<'a>(cfg: &'a RedisConfig, class: &str) -> Option<&'a BufferLimit> {
    match class {
        "replica" => cfg.cobl_replica.as_ref(),
        "pubsub" => cfg.cobl_pubsub.as_ref(),
        _ => cfg.cobl_normal.as_ref(),
    }
}

/// serverCron's idle-timeout exemptions: replicas and MONITOR (S, O), masters (M), blocked
/// (b) and pub/sub (P) clients are never closed for idling. Our own CLIENT LIST is left out
/// too.
fn timeout_applies(c: &ClientEntry) -> bool {
    !c.flags.contains(['S', 'O', 'M', 'b', 'P']) && c.cmd != "client|list"
}

// ---- checks on Redis's own view -------------------------------------------------------

/// Every check on what Redis said: configuration, INFO, CLIENT LIST (None when it was
/// refused), the memory Redis can get at most, and its log's recent lines.
pub fn check_redis(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    clients: Option<&[ClientEntry]>,
    bound: Option<&MemoryBound>,
    log: Option<&LogSummary>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(check_restart(info, log));
    out.extend(check_timeout(cfg));
    out.extend(check_tcp_keepalive(cfg, clients));
    out.extend(check_output_buffer_limits(cfg, info));
    out.extend(check_maxmemory(cfg, info, bound));
    out.extend(check_memory_usage(cfg, info));
    out.extend(check_maxmemory_clients(cfg));
    out.extend(check_maxclients(info));
    if let Some(clients) = clients {
        out.extend(check_idle_clients(cfg, clients));
        out.extend(check_client_output_buffers(cfg, clients));
    }
    out.extend(check_closes(cfg, info, log));
    out
}

/// Started less than an hour ago: a restart closes every connection (Warning). The last
/// shutdown or crash line of its log before the start, when there is one, is evidence.
pub fn check_restart(info: &HashMap<String, String>, log: Option<&LogSummary>) -> Option<Finding> {
    let up = u64_of(info, "uptime_in_seconds")?;
    if up >= RESTART_WINDOW_S {
        return None;
    }
    let pid = info.get("process_id").map_or("?", String::as_str);
    let mut evidence = vec![format!(
        "INFO server: uptime_in_seconds:{up} (started {} ago), process_id:{pid}, run_id:{}",
        dur(up),
        info.get("run_id").map_or("?", String::as_str)
    )];
    if let Some(log) = log {
        if let Some(stop) = &log.last_stop {
            evidence.push(format!(
                "Redis log {}: the last stop before now: {}",
                log.path,
                clip(&stop.line, 300)
            ));
        }
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "Redis started {} ago (pid {pid}): its start closed every connection open before",
            dur(up)
        ),
        evidence,
        "If this start was not planned, find why Redis stopped: its log just before the start \
         (shutdown or crash report), the kernel log (OOM kill), the service manager \
         (systemctl status redis-server, journalctl -u redis-server). Clients must reconnect \
         and retry after a restart.",
    ))
}

/// `timeout` in (0, 300]: Warning (pools idle longer than that); above 300: Info.
pub fn check_timeout(cfg: &RedisConfig) -> Option<Finding> {
    let t = cfg.timeout.filter(|t| *t > 0)?;
    let severity = if t <= SHORT_TIMEOUT_S {
        Severity::Warning
    } else {
        Severity::Info
    };
    Some(Finding::new(
        severity,
        format!("timeout {t}: Redis closes clients idle longer than {t} s"),
        vec![format!(
            "CONFIG GET timeout: {t} (clients idle longer than {t}s are closed by Redis; pools \
             must validate or evict idle connections before that; pub/sub, blocked and replica \
             clients are exempt)"
        )],
        format!(
            "Make every connection pool evict idle connections before {t} s (an idle timeout \
             below {t} s) or validate them before use (PING on borrow); or, if nothing relies on \
             Redis dropping idle clients, set `timeout 0` (CONFIG SET timeout 0, and in redis.conf)."
        ),
    ))
}

/// `tcp-keepalive 0`: Warning. Clients idle for over 10 min are named as a likely symptom.
pub fn check_tcp_keepalive(cfg: &RedisConfig, clients: Option<&[ClientEntry]>) -> Option<Finding> {
    if cfg.tcp_keepalive != Some(0) {
        return None;
    }
    let mut evidence = vec![
        "CONFIG GET tcp-keepalive: 0 (Redis sends no TCP keepalive probes on client connections)"
            .to_string(),
    ];
    if let Some(clients) = clients {
        let long: Vec<&ClientEntry> = clients.iter().filter(|c| c.idle >= 600).collect();
        if let Some(max) = long.iter().map(|c| c.idle).max() {
            evidence.push(format!(
                "CLIENT LIST: {} of {} clients idle for more than 10 min (up to {}): with no \
                 keepalive, a peer that vanished keeps its connection open in Redis",
                long.len(),
                clients.len(),
                dur(max)
            ));
        }
    }
    Some(Finding::new(
        Severity::Warning,
        "tcp-keepalive 0: dead peers and middlebox idle timeouts go unnoticed",
        evidence,
        "Set `tcp-keepalive 300` (the default; CONFIG SET tcp-keepalive 300, and in redis.conf), \
         or lower than the idle timeout of any NAT, firewall or load balancer between the \
         clients and Redis, so that idle connections stay alive in them and dead peers are \
         detected.",
    ))
}

/// A pubsub or normal hard output buffer limit under 8 MiB: Warning.
pub fn check_output_buffer_limits(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (class, limit, who, default) in [
        (
            "pubsub",
            cfg.cobl_pubsub.as_ref(),
            "subscribers that fall behind by more than that are disconnected",
            "pubsub 32mb 8mb 60",
        ),
        (
            "normal",
            cfg.cobl_normal.as_ref(),
            "clients whose pending replies exceed that are disconnected",
            "normal 0 0 0",
        ),
    ] {
        let Some(l) = limit else { continue };
        if l.hard == 0 || l.hard >= SMALL_OUTPUT_LIMIT {
            continue;
        }
        let mut evidence = vec![format!(
            "CONFIG GET client-output-buffer-limit: {class} {} {} {} (hard limit {}, soft limit {} \
             for {} s)",
            l.hard,
            l.soft,
            l.soft_seconds,
            bytes(l.hard),
            bytes(l.soft),
            l.soft_seconds
        )];
        if let Some(max) = u64_of(info, "client_recent_max_output_buffer") {
            evidence.push(format!(
                "INFO clients: client_recent_max_output_buffer:{max} ({}, the largest output \
                 buffer of any client in the last seconds)",
                bytes(max)
            ));
        }
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "Small {class} output buffer limit (hard {}): {who}",
                bytes(l.hard)
            ),
            evidence,
            format!(
                "Raise the {class} limit (Redis's default is `{default}`): CONFIG SET \
                 client-output-buffer-limit \"{default}\", and in redis.conf; and make the \
                 clients read their replies promptly."
            ),
        ));
    }
    out
}

/// The most memory Redis can get: the host's RAM or its cgroup's limit, whichever is
/// lower, with where that number comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemoryBound {
    pub bytes: u64,
    /// An evidence sentence naming the source.
    pub source: String,
}

/// maxmemory 0: Info, or Warning when RSS already is over half the memory Redis can get
/// (OOM kill risk); maxmemory above that memory: Warning; noeviction with a maxmemory:
/// Info (writes fail at the limit; connections stay open).
pub fn check_maxmemory(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    bound: Option<&MemoryBound>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(maxmemory) = cfg.maxmemory else {
        return out;
    };
    let policy = cfg.maxmemory_policy.as_deref().unwrap_or("?");
    if maxmemory == 0 {
        let rss = u64_of(info, "used_memory_rss");
        let mut evidence = vec![format!(
            "CONFIG GET maxmemory: 0 (no limit; maxmemory-policy {policy} never applies)"
        )];
        if let Some(rss) = rss {
            evidence.push(format!(
                "INFO memory: used_memory_rss:{rss} ({})",
                bytes(rss)
            ));
        }
        let share = match (rss, bound) {
            (Some(rss), Some(b)) if b.bytes > 0 => {
                evidence.push(b.source.clone());
                Some(rss as f64 / b.bytes as f64)
            }
            _ => None,
        };
        let fix = "Set maxmemory below what the host (or Redis's cgroup) can give it, leaving \
                   room for fork copy-on-write, client buffers and fragmentation (e.g. 60-70% of \
                   it), with an eviction policy if Redis is a cache (maxmemory-policy \
                   allkeys-lru): CONFIG SET maxmemory <bytes>, and in redis.conf.";
        match share {
            Some(s) if s > NO_MAXMEMORY_RSS_SHARE => out.push(Finding::new(
                Severity::Warning,
                format!(
                    "No maxmemory, and Redis already uses {:.0}% of the memory it can get: OOM \
                     kill risk",
                    s * 100.0
                ),
                evidence,
                fix,
            )),
            _ => out.push(Finding::new(
                Severity::Info,
                "No maxmemory: Redis grows until the kernel's OOM killer stops it",
                evidence,
                fix,
            )),
        }
        return out;
    }
    if let Some(b) = bound {
        if maxmemory > b.bytes {
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "maxmemory {} is more than the {} Redis can get: the OOM killer strikes \
                     before eviction does",
                    bytes(maxmemory),
                    bytes(b.bytes)
                ),
                vec![
                    format!("CONFIG GET maxmemory: {maxmemory} ({})", bytes(maxmemory)),
                    b.source.clone(),
                ],
                "Lower maxmemory well below the memory Redis can get (leave room for fork \
                 copy-on-write, client buffers and fragmentation), or give Redis more memory.",
            ));
        }
    }
    if policy == "noeviction" {
        out.push(Finding::new(
            Severity::Info,
            format!(
                "maxmemory-policy noeviction: at maxmemory ({}) writes fail with OOM errors \
                 (connections stay open)",
                bytes(maxmemory)
            ),
            vec![format!(
                "CONFIG GET maxmemory: {maxmemory}, maxmemory-policy: noeviction"
            )],
            "Fine for a data store that must not lose keys: watch used_memory. For a cache, set \
             an eviction policy (CONFIG SET maxmemory-policy allkeys-lru).",
        ));
    }
    out
}

/// used_memory above 90% of maxmemory; fragmentation above 1.5 with more than 100 MiB used.
pub fn check_memory_usage(cfg: &RedisConfig, info: &HashMap<String, String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let used = u64_of(info, "used_memory");
    let maxmemory = cfg
        .maxmemory
        .or_else(|| u64_of(info, "maxmemory"))
        .unwrap_or(0);
    if let Some(used) = used {
        if maxmemory > 0 && used as f64 > MEMORY_HIGH * maxmemory as f64 {
            let policy = cfg
                .maxmemory_policy
                .clone()
                .or_else(|| info.get("maxmemory_policy").cloned())
                .unwrap_or_else(|| "?".into());
            let effect = if policy == "noeviction" {
                "writes fail with OOM errors at the limit"
            } else {
                "Redis evicts keys to stay under it"
            };
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "used_memory at {:.0}% of maxmemory: {effect}",
                    pct(used, maxmemory)
                ),
                vec![format!(
                    "INFO memory: used_memory:{used} ({}) of maxmemory:{maxmemory} ({}), \
                     maxmemory_policy:{policy}",
                    bytes(used),
                    bytes(maxmemory)
                )],
                "Find what grew (INFO keyspace, redis-cli --bigkeys / --memkeys; client buffers: \
                 INFO memory mem_clients_normal); raise maxmemory if the host has room, or let \
                 keys expire.",
            ));
        }
    }
    if let (Some(used), Some(ratio)) = (used, f64_of(info, "mem_fragmentation_ratio")) {
        if ratio > FRAG_RATIO && used > FRAG_MIN_USED {
            let rss = u64_of(info, "used_memory_rss").unwrap_or(0);
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "Memory fragmentation {ratio:.2}: Redis holds {} of RAM for {} of data",
                    bytes(rss),
                    bytes(used)
                ),
                vec![format!(
                    "INFO memory: mem_fragmentation_ratio:{ratio}, used_memory:{used}, \
                     used_memory_rss:{rss}"
                )],
                "Enable active defragmentation (CONFIG SET activedefrag yes; jemalloc builds), \
                 or restart or fail over in a quiet moment; the RSS counts toward OOM kills.",
            ));
        }
    }
    out
}

/// maxmemory-clients set: Info (Redis evicts, that is closes, clients past it).
pub fn check_maxmemory_clients(cfg: &RedisConfig) -> Option<Finding> {
    let v = cfg.maxmemory_clients.as_deref()?.trim();
    if v.is_empty() || v == "0" || v == "0%" {
        return None;
    }
    Some(Finding::new(
        Severity::Info,
        format!(
            "maxmemory-clients {v}: Redis closes the clients using the most memory when all \
             clients together use more"
        ),
        vec![format!("CONFIG GET maxmemory-clients: {v}")],
        "Expected if set on purpose; evictions show in INFO stats evicted_clients and in the \
         log (\"Evicting client\", notice level).",
    ))
}

/// connected_clients at 90% of maxclients: Warning (new connections will be refused).
pub fn check_maxclients(info: &HashMap<String, String>) -> Option<Finding> {
    let connected = u64_of(info, "connected_clients")?;
    let max = u64_of(info, "maxclients").filter(|m| *m > 0)?;
    if (connected as f64) < MAXCLIENTS_SHARE * max as f64 {
        return None;
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{connected} of maxclients {max} connections in use: Redis refuses new connections at the limit"
        ),
        vec![format!(
            "INFO clients: connected_clients:{connected}, maxclients:{max}"
        )],
        "Cap the pools (connections per instance x instances), close leaked connections, or \
         raise maxclients (and the open-files limit).",
    ))
}

/// `timeout` > 0 and at least 20% of the clients it applies to idle for more than
/// timeout/2: Warning (Redis is about to close them).
pub fn check_idle_clients(cfg: &RedisConfig, clients: &[ClientEntry]) -> Option<Finding> {
    let t = cfg.timeout.filter(|t| *t > 0)?;
    let subject: Vec<&ClientEntry> = clients.iter().filter(|c| timeout_applies(c)).collect();
    let mut near: Vec<&ClientEntry> = subject
        .iter()
        .copied()
        .filter(|c| c.idle.saturating_mul(2) > t)
        .collect();
    if near.is_empty() || (near.len() as f64) < IDLE_SHARE * subject.len() as f64 {
        return None;
    }
    near.sort_by_key(|c| std::cmp::Reverse(c.idle));
    let mut evidence = vec![format!(
        "CLIENT LIST: {} of {} clients subject to timeout {t} have been idle for more than {} s \
         (up to {} s); pub/sub, blocked and replica clients are exempt",
        near.len(),
        subject.len(),
        t / 2,
        near[0].idle
    )];
    for c in near.iter().take(SAMPLES) {
        evidence.push(format!("CLIENT LIST: {} idle={}", describe(c), c.idle));
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{} of {} clients are idle for over half of timeout {t}: Redis closes them at {t} s",
            near.len(),
            subject.len()
        ),
        evidence,
        format!(
            "These connections sit idle in pools: make the pools evict idle connections before \
             {t} s or validate them before use; or set `timeout 0`."
        ),
    ))
}

/// A client whose omem is above half its class's hard limit: Warning.
pub fn check_client_output_buffers(cfg: &RedisConfig, clients: &[ClientEntry]) -> Option<Finding> {
    let mut risky: Vec<(&ClientEntry, &'static str, &BufferLimit)> = clients
        .iter()
        .filter_map(|c| {
            let class = client_class(&c.flags);
            let l = class_limit(cfg, class)?;
            (l.hard > 0 && c.omem as f64 > OMEM_SHARE * l.hard as f64).then_some((c, class, l))
        })
        .collect();
    if risky.is_empty() {
        return None;
    }
    risky.sort_by_key(|(c, _, l)| std::cmp::Reverse(c.omem as u128 * 1000 / l.hard as u128));
    let mut evidence = Vec::new();
    for (c, class, l) in risky.iter().take(5) {
        let mut s = format!(
            "CLIENT LIST: {} omem={} ({}) is {:.0}% of the {class} hard limit {}",
            describe(c),
            c.omem,
            bytes(c.omem),
            pct(c.omem, l.hard),
            bytes(l.hard)
        );
        if l.soft > 0 && c.omem > l.soft {
            let _ = write!(
                s,
                "; above the soft limit {}, which closes it after {} s",
                bytes(l.soft),
                l.soft_seconds
            );
        }
        evidence.push(s);
    }
    if risky.len() > 5 {
        evidence.push(format!(
            "CLIENT LIST: {} more such clients",
            risky.len() - 5
        ));
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{} client(s) with an output buffer past half their class's hard limit: Redis \
             disconnects them at the limit",
            risky.len()
        ),
        evidence,
        "These clients read their replies too slowly or asked for very large ones: make \
         subscribers keep up (a consumer thread that only reads), fetch big values in pages \
         (SCAN, ranges) instead of at once; or raise client-output-buffer-limit for the class.",
    ))
}

/// Closes Redis counted (INFO stats, since start) or logged (its log, last 24 h): output and
/// query buffer limits, client evictions, refused connections: Warning; crashes: Critical.
pub fn check_closes(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    log: Option<&LogSummary>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let window = window_text(log.map_or(RECENT, |l| l.window));
    let log_evidence = |what: &str, count: &LogCount, path: &str| -> Vec<String> {
        if count.count == 0 {
            return Vec::new();
        }
        let mut ev = vec![format!(
            "Redis log {path}: {} {what} in the last {window}{}",
            count.count,
            if count.by_class.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = count
                    .by_class
                    .iter()
                    .map(|(class, n)| format!("{n} {class}"))
                    .collect();
                format!(" ({})", parts.join(", "))
            }
        )];
        for e in count.last.iter().rev() {
            ev.push(format!("Redis log {path}: {}", clip(&e.line, 400)));
        }
        ev
    };
    let empty = LogCount::default();
    let path = log.map_or("", |l| l.path.as_str());

    let kinds: [(&str, &str, Option<&LogCount>, &str, String); 3] = [
        (
            "client_output_buffer_limit_disconnections",
            "client(s) closed for overcoming their output buffer limit",
            log.map(|l| &l.output_buffer),
            "for exceeding their output buffer limit",
            "Find the clients in the log lines (name, addr, flags, cmd): subscribers that fall \
             behind must read faster or get more room (client-output-buffer-limit), normal \
             clients must not fetch huge replies at once (SCAN or ranges instead of KEYS or \
             whole big keys)."
                .to_string(),
        ),
        (
            "client_query_buffer_limit_disconnections",
            "client(s) closed for reaching the max query buffer length",
            log.map(|l| &l.query_buffer),
            "for reaching the query buffer limit",
            format!(
                "A client sent a command or pipeline bigger than client-query-buffer-limit ({}), \
                 or a stream that is not RESP: find it in the log lines; raise the limit only if \
                 such commands are intended.",
                cfg.query_buffer_limit.map_or("?".to_string(), bytes)
            ),
        ),
        (
            "evicted_clients",
            "client(s) evicted (maxmemory-clients)",
            log.map(|l| &l.evictions),
            "to keep client memory under maxmemory-clients",
            format!(
                "All clients' buffers together exceeded maxmemory-clients ({}): find the clients \
                 with big buffers (CLIENT LIST tot-mem, qbuf, omem), or raise maxmemory-clients.",
                cfg.maxmemory_clients.as_deref().unwrap_or("?")
            ),
        ),
    ];
    for (counter, logged_what, logged, why, fix) in kinds {
        let counted = u64_of(info, counter).unwrap_or(0);
        let logged = logged.unwrap_or(&empty);
        if counted == 0 && logged.count == 0 {
            continue;
        }
        let title = if logged.count > 0 {
            format!(
                "Redis closed {} client(s) {why} in the last {window}",
                logged.count
            )
        } else {
            format!("Redis closed {counted} client(s) {why} since it started")
        };
        let mut evidence = Vec::new();
        if counted > 0 {
            evidence.push(format!("INFO stats: {counter}:{counted} (since the start)"));
        }
        evidence.extend(log_evidence(logged_what, logged, path));
        out.push(Finding::new(Severity::Warning, title, evidence, fix));
    }

    if let Some(rejected) = u64_of(info, "rejected_connections").filter(|n| *n > 0) {
        let max = info.get("maxclients").map_or("?", String::as_str);
        out.push(Finding::new(
            Severity::Warning,
            format!("Redis refused {rejected} connection(s) since it started: maxclients ({max}) reached"),
            vec![format!("INFO stats: rejected_connections:{rejected}, INFO clients: maxclients:{max}")],
            "Clients opened more connections than maxclients allows: cap the pools \
             (connections per instance x instances), close leaked connections, or raise \
             maxclients (and the open-files limit).",
        ));
    }

    if let Some(log) = log {
        if log.crashes.count > 0 {
            out.push(Finding::new(
                Severity::Critical,
                format!(
                    "Redis crashed {} time(s) in the last {window}",
                    log.crashes.count
                ),
                log_evidence("crash reports", &log.crashes, &log.path),
                "Read the bug report in the log after that line (the signal or failed assertion, \
                 the stack trace, the last command); upgrade if it is a known bug. Every crash \
                 closes every connection.",
            ));
        }
    }
    out
}

// ---- Redis's log ----------------------------------------------------------------------

/// Recent lines of one kind: how many, by client class, and the last few.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogCount {
    pub count: usize,
    /// "pubsub", "normal", "replica" (from the logged client's flags) -> count.
    pub by_class: BTreeMap<String, usize>,
    /// The last [`SAMPLES`] events, oldest first.
    pub last: Vec<LogEvent>,
}

impl LogCount {
    fn add(&mut self, ev: &LogEvent) {
        self.count += 1;
        if let Some(flags) = &ev.client_flags {
            *self
                .by_class
                .entry(client_class(flags).to_string())
                .or_default() += 1;
        }
        if self.last.len() == SAMPLES {
            self.last.remove(0);
        }
        self.last.push(ev.clone());
    }
}

/// What Redis's log says about the last `window`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSummary {
    /// The file read, for evidence.
    pub path: String,
    pub window: Duration,
    pub output_buffer: LogCount,
    pub query_buffer: LogCount,
    pub evictions: LogCount,
    pub crashes: LogCount,
    /// The last shutdown, exit or crash line in the window.
    pub last_stop: Option<LogEvent>,
}

/// Counts the recent closes in parsed log events (in file order). A line without a time
/// (a crash report banner) takes the time of the event before it; the banner right after
/// a "crashed by signal" line is the same crash.
pub fn summarize_log(
    path: &str,
    events: &[LogEvent],
    now: SystemTime,
    window: Duration,
) -> LogSummary {
    let mut s = LogSummary {
        path: path.to_string(),
        window,
        ..LogSummary::default()
    };
    let mut prev_time = None;
    let mut prev_kind: Option<&LogKind> = None;
    for ev in events {
        let time = ev.time.or(prev_time);
        prev_time = time;
        let same_crash = matches!(ev.kind, LogKind::Crash { signal: None })
            && matches!(prev_kind, Some(LogKind::Crash { signal: Some(_) }));
        prev_kind = Some(&ev.kind);
        // A time in the future (a clock or time zone mismatch) counts as recent.
        let recent = time.is_none_or(|t| now.duration_since(t).map_or(true, |age| age <= window));
        if !recent {
            continue;
        }
        match &ev.kind {
            LogKind::OutputBufferLimit => s.output_buffer.add(ev),
            LogKind::QueryBufferLimit => s.query_buffer.add(ev),
            LogKind::ClientEviction => s.evictions.add(ev),
            LogKind::Crash { .. } if !same_crash => {
                s.crashes.add(ev);
                s.last_stop = Some(ev.clone());
            }
            LogKind::ShutdownRequested { .. } | LogKind::ReadyToExit => {
                s.last_stop = Some(ev.clone());
            }
            _ => {}
        }
    }
    s
}

/// The log file to read: `logfile` as Redis has it, relative to the server's working
/// directory (read through /proc/<pid>/cwd, which also works across mount namespaces), and
/// its name for messages. Err says why there is none.
fn redis_log_path(logfile: Option<&str>, pid: Option<u32>) -> Result<(PathBuf, String), String> {
    let name = logfile.unwrap_or("");
    if name.is_empty() {
        return Err("logfile is empty: Redis logs to standard output".into());
    }
    let path = PathBuf::from(name);
    if path.is_absolute() {
        return Ok((path, name.to_string()));
    }
    match pid {
        Some(pid) => {
            let cwd = PathBuf::from(format!("/proc/{pid}/cwd"));
            let shown = std::fs::read_link(&cwd).map_or_else(
                |_| format!("{name} (in Redis's working directory)"),
                |dir| dir.join(name).display().to_string(),
            );
            Ok((cwd.join(path), shown))
        }
        None => Err(format!(
            "logfile {name:?} is relative to Redis's working directory, and its process is not \
             visible here"
        )),
    }
}

/// The last [`LOG_TAIL_BYTES`] of the file, from a line start.
fn read_tail(path: &Path) -> anyhow::Result<String> {
    let (mut f, meta) = crate::sources::redis_log::open_regular_file(path)?;
    let len = meta.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(LOG_TAIL_BYTES).read_to_end(&mut buf)?;
    let from = if start > 0 {
        buf.iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1)
    } else {
        0
    };
    Ok(String::from_utf8_lossy(&buf[from..]).into_owned())
}

// ---- this host ------------------------------------------------------------------------

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
fn read_kernel_log() -> Result<(String, String), String> {
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

/// Seconds since boot on the kernel log's clock (CLOCK_MONOTONIC).
fn monotonic_s() -> f64 {
    crate::time::monotonic_ns() as f64 / 1e9
}

/// The cgroup of a process as the kernel names it in OOM reports: the v2 path, or the
/// v1 memory controller's.
fn cgroup_path(pid: u32) -> Option<String> {
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
fn memory_bound(info: &HashMap<String, String>, pid: Option<u32>) -> Option<MemoryBound> {
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
fn local_pid(info: &HashMap<String, String>) -> Option<u32> {
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

fn host_findings(redis: Option<&RedisStart>) -> Vec<Finding> {
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
        version: info
            .get("redis_version")
            .or_else(|| info.get("valkey_version"))
            .cloned(),
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

// ---- text -----------------------------------------------------------------------------

fn label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

fn paint(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\x1b[1;31m",
        Severity::Warning => "\x1b[1;33m",
        Severity::Info => "\x1b[36m",
    }
}

/// The diagnosis for a terminal: a line about Redis, then the findings, most severe first,
/// each with its evidence and fix. Every text is escaped (client names, log lines and
/// anything else Redis or the kernel wrote cannot reach the terminal as control sequences);
/// `color` adds ANSI colors to the severity labels only.
pub fn render_text(d: &Diagnosis, color: bool) -> String {
    let e = |s: &str| escape_name(s);
    let mut out = String::new();
    if let Some(r) = &d.redis {
        let _ = write!(
            out,
            "Redis {} at {}",
            e(r.version.as_deref().unwrap_or("?")),
            e(&r.addr)
        );
        if let Some(pid) = r.pid {
            let _ = write!(out, ", pid {pid}");
        }
        if let Some(up) = r.uptime_s {
            let _ = write!(out, ", up {}", dur(up));
            if let Some(since) = &r.started_at {
                let _ = write!(out, " (since {})", e(since));
            }
        }
        if let Some(role) = &r.role {
            let _ = write!(out, ", {}", e(role));
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "  clients: {} connected, {} blocked, max recent output buffer {}; memory: {} used{}",
            r.connected_clients.map_or("?".into(), |n| n.to_string()),
            r.blocked_clients.map_or("?".into(), |n| n.to_string()),
            r.client_recent_max_output_buffer.map_or("?".into(), bytes),
            r.used_memory.map_or("?".into(), bytes),
            match r.maxmemory {
                Some(0) => ", no maxmemory".to_string(),
                Some(m) => format!(" of maxmemory {}", bytes(m)),
                None => String::new(),
            }
        );
    }
    let mut sorted: Vec<&Finding> = d.findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let count = |s: Severity| sorted.iter().filter(|f| f.severity == s).count();
    if sorted.is_empty() {
        out.push_str("No findings.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} critical, {} warning(s), {} info\n",
        count(Severity::Critical),
        count(Severity::Warning),
        count(Severity::Info)
    );
    for f in sorted {
        let tag = format!("{:<8}", label(f.severity));
        if color {
            let _ = writeln!(out, "{}{tag}\x1b[0m  {}", paint(f.severity), e(&f.title));
        } else {
            let _ = writeln!(out, "{tag}  {}", e(&f.title));
        }
        for ev in &f.evidence {
            let _ = writeln!(out, "          - {}", e(ev));
        }
        let _ = writeln!(out, "          fix: {}\n", e(&f.fix));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::redis::{parse_client_list, parse_config, parse_info};
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpStream;
    use std::process::Child;
    use std::time::UNIX_EPOCH;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis/");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}{name}"))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    /// `redis-cli CONFIG GET` output (name and value on alternate lines) -> pairs.
    fn config_pairs() -> Vec<(String, String)> {
        let text = fixture("config-get-7.0.15.txt");
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks_exact(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    /// The fixture's configuration with some parameters replaced.
    fn config_with(changes: &[(&str, &str)]) -> RedisConfig {
        let mut pairs = config_pairs();
        for (k, v) in changes {
            match pairs.iter_mut().find(|(name, _)| name == k) {
                Some(p) => p.1 = v.to_string(),
                None => pairs.push((k.to_string(), v.to_string())),
            }
        }
        parse_config(&pairs)
    }

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

    fn info_with(changes: &[(&str, &str)]) -> HashMap<String, String> {
        let mut info = parse_info(&fixture("info-7.0.15.txt"));
        for (k, v) in changes {
            info.insert(k.to_string(), v.to_string());
        }
        info
    }

    fn clients() -> Vec<ClientEntry> {
        parse_client_list(&fixture("client-list-7.0.15.txt"))
    }

    fn client_mut(clients: &mut [ClientEntry], id: u64) -> &mut ClientEntry {
        clients.iter_mut().find(|c| c.id == id).expect("client id")
    }

    fn titles(findings: &[Finding]) -> Vec<(Severity, &str)> {
        findings
            .iter()
            .map(|f| (f.severity, f.title.as_str()))
            .collect()
    }

    fn find<'a>(findings: &'a [Finding], needle: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.title.contains(needle))
            .unwrap_or_else(|| panic!("no finding with {needle:?} in {:#?}", titles(findings)))
    }

    // ---- Redis's view, on the redis_client fixtures (redis-server 7.0.15) ---------------

    #[test]
    fn diagnose_fixture_baseline() {
        // timeout 0, tcp-keepalive 300, pubsub 32mb 8mb 60, maxmemory 1gb allkeys-lru,
        // maxmemory-clients 10%, up 36 s, 1.3 MB used (fragmentation 9.64 on so little is
        // no finding), nobody idle, no buffers.
        let cfg = parse_config(&config_pairs());
        let info = parse_info(&fixture("info-7.0.15.txt"));
        let clients = clients();
        let f = check_redis(&cfg, &info, Some(&clients), None, None);
        assert_eq!(f.len(), 2, "{:#?}", titles(&f));
        let restart = find(&f, "Redis started 36s ago (pid 17840)");
        assert_eq!(restart.severity, Severity::Warning);
        assert!(restart.evidence[0].starts_with("INFO server: uptime_in_seconds:36"));
        assert_eq!(find(&f, "maxmemory-clients 10%").severity, Severity::Info);

        let up = info_with(&[("uptime_in_seconds", "3600")]);
        assert!(check_restart(&up, None).is_none());
    }

    #[test]
    fn diagnose_risky_config() {
        let cfg = config_with(&[
            ("timeout", "60"),
            ("tcp-keepalive", "0"),
            (
                "client-output-buffer-limit",
                "normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 524288 60",
            ),
        ]);
        let info = info_with(&[("uptime_in_seconds", "864000")]);
        let f = check_redis(&cfg, &info, Some(&clients()), None, None);
        assert_eq!(f.len(), 4, "{:#?}", titles(&f));

        let t = find(&f, "timeout 60");
        assert_eq!(t.severity, Severity::Warning);
        assert!(
            t.evidence[0].contains(
                "clients idle longer than 60s are closed by Redis; pools must validate or \
                 evict idle connections before that"
            ),
            "{t:?}"
        );
        assert!(t.fix.contains("timeout 0"));
        let k = find(&f, "tcp-keepalive 0");
        assert_eq!(k.severity, Severity::Warning);
        assert!(
            k.title
                .contains("dead peers and middlebox idle timeouts go unnoticed")
        );
        let p = find(&f, "Small pubsub output buffer limit (hard 1 MiB)");
        assert_eq!(p.severity, Severity::Warning);
        assert!(p.evidence[0].starts_with("CONFIG GET client-output-buffer-limit: pubsub 1048576"));
        assert!(p.fix.contains("pubsub 32mb 8mb 60"));

        // Boundaries: 300 is short, 301 is Info; the default pubsub limit and a normal
        // limit of 8 MiB are not small; a normal limit of 4 MiB is.
        let t300 = check_timeout(&config_with(&[("timeout", "300")])).unwrap();
        assert_eq!(t300.severity, Severity::Warning);
        let t301 = check_timeout(&config_with(&[("timeout", "301")])).unwrap();
        assert_eq!(t301.severity, Severity::Info);
        assert!(check_timeout(&config_with(&[("timeout", "0")])).is_none());
        let cobl = |v: &str| {
            check_output_buffer_limits(
                &config_with(&[("client-output-buffer-limit", v)]),
                &HashMap::new(),
            )
        };
        assert!(cobl("normal 8mb 0 0 pubsub 32mb 8mb 60").is_empty());
        let n = cobl("normal 4mb 2mb 10 pubsub 8mb 8mb 60");
        assert_eq!(n.len(), 1);
        assert!(
            n[0].title
                .starts_with("Small normal output buffer limit (hard 4 MiB)")
        );
        assert!(check_tcp_keepalive(&config_with(&[("tcp-keepalive", "60")]), None).is_none());
    }

    #[test]
    fn diagnose_keepalive_names_long_idle_clients() {
        let cfg = config_with(&[("tcp-keepalive", "0")]);
        let mut list = clients();
        client_mut(&mut list, 33).idle = 7200;
        let f = check_tcp_keepalive(&cfg, Some(&list)).unwrap();
        assert_eq!(f.evidence.len(), 2);
        assert!(
            f.evidence[1]
                .starts_with("CLIENT LIST: 1 of 6 clients idle for more than 10 min (up to 2h)"),
            "{f:?}"
        );
    }

    #[test]
    fn diagnose_clients_idle_near_timeout() {
        let cfg = config_with(&[("timeout", "60")]);
        let mut list = clients();
        // Subject to the timeout: 31, 33, 34 (30 is a replica, 32 pub/sub, 35 is us).
        assert!(check_idle_clients(&cfg, &list).is_none());
        client_mut(&mut list, 30).idle = 59;
        client_mut(&mut list, 32).idle = 59;
        assert!(check_idle_clients(&cfg, &list).is_none(), "exempt clients");
        let mut blocked = list.clone();
        client_mut(&mut blocked, 31).flags = "b".into();
        client_mut(&mut blocked, 31).idle = 59;
        assert!(
            check_idle_clients(&cfg, &blocked).is_none(),
            "blocked clients"
        );

        client_mut(&mut list, 31).idle = 45;
        let f = check_idle_clients(&cfg, &list).expect("1 of 3 is >= 20%");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .starts_with("1 of 3 clients are idle for over half of timeout 60"),
            "{f:?}"
        );
        assert!(f.evidence[0].contains("idle for more than 30 s (up to 45 s)"));
        assert!(
            f.evidence[1].contains("name=billing-worker-1") && f.evidence[1].ends_with("idle=45")
        );
        // Exactly timeout/2 is not over half.
        client_mut(&mut list, 31).idle = 30;
        assert!(check_idle_clients(&cfg, &list).is_none());
        // No timeout, no finding.
        client_mut(&mut list, 31).idle = 50_000;
        assert!(check_idle_clients(&config_with(&[("timeout", "0")]), &list).is_none());
    }

    #[test]
    fn diagnose_client_output_buffers() {
        let cfg = parse_config(&config_pairs());
        let mut list = clients();
        assert!(check_client_output_buffers(&cfg, &list).is_none());
        // Normal clients have no hard limit here (normal 0 0 0): never near it.
        client_mut(&mut list, 31).omem = 1 << 30;
        assert!(check_client_output_buffers(&cfg, &list).is_none());
        // The subscriber at 20 MiB of pubsub 32mb 8mb 60; the replica at 100 MiB of 256 MiB.
        client_mut(&mut list, 32).omem = 20 << 20;
        client_mut(&mut list, 32).name = "feed\x1b[2J".into();
        client_mut(&mut list, 30).omem = 100 << 20;
        let f = check_client_output_buffers(&cfg, &list).expect("subscriber near its limit");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .starts_with("1 client(s) with an output buffer past half"),
            "{f:?}"
        );
        assert!(
            f.evidence[0].contains("id=32")
                && f.evidence[0].contains("is 62% of the pubsub hard limit 32 MiB")
                && f.evidence[0].contains("above the soft limit 8 MiB, which closes it after 60 s"),
            "{f:?}"
        );
        client_mut(&mut list, 30).omem = 200 << 20;
        let f = check_client_output_buffers(&cfg, &list).unwrap();
        assert!(f.title.starts_with("2 client(s)"));
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("78% of the replica hard limit 256 MiB"))
        );
    }

    #[test]
    fn diagnose_memory() {
        let cfg = parse_config(&config_pairs()); // maxmemory 1gb allkeys-lru
        let gib: u64 = 1 << 30;
        let info = info_with(&[
            ("used_memory", &(gib * 95 / 100).to_string()),
            ("mem_fragmentation_ratio", "1.10"),
        ]);
        let f = check_memory_usage(&cfg, &info);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].title
                .starts_with("used_memory at 95% of maxmemory: Redis evicts keys")
        );
        let noev = config_with(&[("maxmemory-policy", "noeviction")]);
        let f = check_memory_usage(&noev, &info);
        assert!(f[0].title.contains("writes fail with OOM errors"));
        let f = check_maxmemory(&noev, &info, None);
        assert_eq!(titles(&f).len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].title.starts_with("maxmemory-policy noeviction"));

        // Fragmentation: only with more than 100 MiB used.
        let frag = info_with(&[
            ("used_memory", "209715200"),
            ("used_memory_rss", "335544320"),
            ("mem_fragmentation_ratio", "1.60"),
        ]);
        let f = check_memory_usage(&cfg, &frag);
        assert_eq!(f.len(), 1, "{:#?}", titles(&f));
        assert!(
            f[0].title
                .starts_with("Memory fragmentation 1.60: Redis holds 320 MiB of RAM for 200 MiB")
        );
        assert!(check_memory_usage(&cfg, &info_with(&[])).is_empty());

        // No maxmemory: Info, or Warning when RSS is over half of what Redis can get.
        let none = config_with(&[("maxmemory", "0")]);
        let host = MemoryBound {
            bytes: 4 * gib,
            source: "INFO memory: total_system_memory:4294967296 (4 GiB)".into(),
        };
        let f = check_maxmemory(&none, &info_with(&[]), Some(&host));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].title.contains("OOM killer"));
        let big = info_with(&[("used_memory_rss", &(3 * gib).to_string())]);
        let f = check_maxmemory(&none, &big, Some(&host));
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title
                .starts_with("No maxmemory, and Redis already uses 75% of the memory it can get"),
            "{f:?}"
        );
        assert!(f[0].evidence.contains(&host.source));
        // maxmemory above the cgroup's limit.
        let cg = MemoryBound {
            bytes: 512 << 20,
            source: "/sys/fs/cgroup/redis/memory.max: 536870912".into(),
        };
        let f = check_maxmemory(&cfg, &info_with(&[]), Some(&cg));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title
                .starts_with("maxmemory 1 GiB is more than the 512 MiB Redis can get")
        );
    }

    #[test]
    fn diagnose_maxclients_and_counters() {
        let cfg = parse_config(&config_pairs());
        let info = info_with(&[("connected_clients", "9500"), ("maxclients", "10000")]);
        let f = check_maxclients(&info).expect("95% of maxclients");
        assert_eq!(f.severity, Severity::Warning);
        assert!(check_maxclients(&info_with(&[])).is_none());

        let info = info_with(&[
            ("client_output_buffer_limit_disconnections", "3"),
            ("rejected_connections", "2"),
        ]);
        let f = check_closes(&cfg, &info, None);
        assert_eq!(f.len(), 2, "{:#?}", titles(&f));
        let obl = find(
            &f,
            "Redis closed 3 client(s) for exceeding their output buffer limit since it started",
        );
        assert_eq!(
            obl.evidence,
            ["INFO stats: client_output_buffer_limit_disconnections:3 (since the start)"]
        );
        find(
            &f,
            "Redis refused 2 connection(s) since it started: maxclients (10000) reached",
        );
        let f = check_closes(&cfg, &info_with(&[("evicted_clients", "1")]), None);
        assert!(f[0].title.contains("maxmemory-clients"));
        assert!(f[0].fix.contains("maxmemory-clients (10%)"));
    }

    // ---- Redis's log --------------------------------------------------------------------

    /// A log in Valkey's `log-timestamp-format milliseconds` form: the times are exact in
    /// any time zone.
    fn log_text(now_ms: u64) -> String {
        let h = 3_600_000;
        let at = |ms: u64| now_ms - ms;
        [
            format!("7:M {} # Client id=4 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=old age=3 idle=0 flags=P omem=9000 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.", at(48 * h)),
            format!("7:M {} * Ready to accept connections", at(30 * h)),
            format!("7:M {} # Client id=5 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=8 name=feed age=3 idle=0 flags=P omem=82016 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.", at(3 * h)),
            format!("7:M {} # Client id=6 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=9 name=dump age=3 idle=0 flags=N omem=9000000 cmd=hgetall closed for overcoming of output buffer limits.", at(2 * h)),
            format!("7:M {} # Closing client that reached max query buffer length: id=7 addr=127.0.0.1:5003 laddr=127.0.0.1:6379 fd=7 name= age=0 idle=0 flags=N db=0 qbuf=1310720 omem=0 cmd=NULL user=default redir=-1 resp=2 (qbuf initial bytes: \"x\")", at(h)),
            format!("7:M {} - Evicting client: id=8 addr=127.0.0.1:5004 laddr=127.0.0.1:6379 fd=7 name=hog flags=N qbuf=10", at(h)),
            format!("7:M {} # Redis 7.0.15 crashed by signal: 11, si_code: 1", at(h / 2)),
            "=== REDIS BUG REPORT START: Cut & paste starting from here ===".to_string(),
            format!("9:M {} # Server initialized", at(h / 4)),
        ]
        .join("\n")
    }

    #[test]
    fn diagnose_log_summary_and_findings() {
        let now_ms = 1_795_621_623_836u64;
        let now = UNIX_EPOCH + Duration::from_millis(now_ms);
        let events = redis_log::parse_lines(&log_text(now_ms));
        let s = summarize_log("redis.log", &events, now, RECENT);
        assert_eq!(
            s.output_buffer.count, 2,
            "the 48 h old one is out of the window"
        );
        assert_eq!(
            s.output_buffer.by_class,
            BTreeMap::from([("normal".to_string(), 1), ("pubsub".to_string(), 1)])
        );
        assert_eq!(s.query_buffer.count, 1);
        assert_eq!(s.evictions.count, 1);
        assert_eq!(
            s.crashes.count, 1,
            "the banner after the signal line is the same crash"
        );
        assert!(
            s.last_stop
                .as_ref()
                .unwrap()
                .line
                .contains("crashed by signal: 11")
        );

        let cfg = parse_config(&config_pairs());
        let f = check_closes(&cfg, &info_with(&[]), Some(&s));
        assert_eq!(f.len(), 4, "{:#?}", titles(&f));
        let obl = find(
            &f,
            "Redis closed 2 client(s) for exceeding their output buffer limit in the last 24 h",
        );
        assert_eq!(obl.severity, Severity::Warning);
        assert_eq!(
            obl.evidence[0],
            "Redis log redis.log: 2 client(s) closed for overcoming their output buffer limit in \
             the last 24 h (1 normal, 1 pubsub)"
        );
        assert!(
            obl.evidence[1].contains("name=dump"),
            "latest first: {obl:?}"
        );
        assert!(obl.evidence[2].contains("name=feed"));
        find(
            &f,
            "Redis closed 1 client(s) for reaching the query buffer limit",
        );
        find(
            &f,
            "Redis closed 1 client(s) to keep client memory under maxmemory-clients",
        );
        let crash = find(&f, "Redis crashed 1 time(s) in the last 24 h");
        assert_eq!(crash.severity, Severity::Critical);

        // The restart that followed names the last stop.
        let r = check_restart(&info_with(&[]), Some(&s)).unwrap();
        assert!(r.evidence[1].starts_with("Redis log redis.log: the last stop before now:"));

        // A crash banner alone (an assertion) counts.
        let only_banner = redis_log::parse_lines(&format!(
            "7:M {} # Server initialized\n=== REDIS BUG REPORT START: Cut & paste starting from here ===",
            now_ms - 1000
        ));
        assert_eq!(
            summarize_log("x", &only_banner, now, RECENT).crashes.count,
            1
        );
    }

    #[test]
    fn diagnose_log_path_and_tail() {
        assert!(
            redis_log_path(Some(""), Some(1))
                .unwrap_err()
                .contains("standard output")
        );
        assert!(redis_log_path(None, None).is_err());
        assert_eq!(
            redis_log_path(Some("/var/log/redis/redis.log"), None).unwrap(),
            (
                PathBuf::from("/var/log/redis/redis.log"),
                "/var/log/redis/redis.log".to_string()
            )
        );
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            redis_log_path(Some("redis.log"), Some(me)).unwrap(),
            (
                PathBuf::from(format!("/proc/{me}/cwd/redis.log")),
                cwd.join("redis.log").display().to_string()
            )
        );
        assert!(redis_log_path(Some("redis.log"), None).is_err());

        let dir =
            std::env::temp_dir().join(format!("redis-trace-diagnose-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.log");
        let line = "1:M 25 Nov 2026 16:38:04.676 * noise noise noise noise noise noise\n";
        let mut text = line.repeat((LOG_TAIL_BYTES as usize / line.len()) + 10);
        text.push_str("LAST LINE\n");
        std::fs::write(&file, &text).unwrap();
        let tail = read_tail(&file).unwrap();
        assert!(tail.len() as u64 <= LOG_TAIL_BYTES);
        assert!(
            tail.starts_with("1:M 25 Nov"),
            "starts at a line: {:?}",
            &tail[..40]
        );
        assert!(tail.ends_with("LAST LINE\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ---- this host ----------------------------------------------------------------------

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

    // ---- the result -------------------------------------------------------------------

    fn finding(severity: Severity, title: &str) -> Finding {
        Finding::new(severity, title, vec![format!("source: {title}")], "do it")
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

    #[test]
    fn diagnose_render_text_sorts_and_escapes() {
        let cfg = parse_config(&config_pairs());
        let mut list = clients();
        client_mut(&mut list, 32).omem = 30 << 20;
        client_mut(&mut list, 32).name = "evil\x1b]0;pwned\x07\u{202e}txt".into();
        let mut findings = vec![finding(Severity::Info, "an info")];
        findings.extend(check_client_output_buffers(&cfg, &list));
        findings.push(finding(Severity::Critical, "a critical"));
        let d = Diagnosis {
            redis: Some(RedisFacts {
                addr: "127.0.0.1:6379".into(),
                pid: Some(7),
                version: Some("7.0.15\x1b[2J".into()),
                uptime_s: Some(90),
                connected_clients: Some(6),
                blocked_clients: Some(0),
                used_memory: Some(1 << 20),
                maxmemory: Some(0),
                ..RedisFacts::default()
            }),
            findings,
        };
        for color in [false, true] {
            let text = render_text(&d, color);
            assert!(!text.contains("\x1b]") && !text.contains("\x1b[2J") && !text.contains('\x07'));
            assert!(!text.contains('\u{202e}'));
            assert!(
                text.contains("name=evil\\x1b]0;pwned\\x07\\u{202e}txt"),
                "{text}"
            );
            assert!(text.starts_with("Redis 7.0.15\\x1b[2J at 127.0.0.1:6379, pid 7, up 1m 30s"));
            assert!(text.contains("1 critical, 1 warning(s), 1 info"));
            let c = text.find("a critical").unwrap();
            let w = text.find("client(s) with an output buffer").unwrap();
            let i = text.find("an info").unwrap();
            assert!(c < w && w < i, "{text}");
            assert_eq!(text.contains("\x1b[1;31mCRITICAL"), color);
            if !color {
                assert!(!text.contains('\x1b'));
                assert!(text.contains(
                    "CRITICAL  a critical\n          - source: a critical\n          fix: do it\n"
                ));
            }
        }
        let empty = Diagnosis {
            redis: None,
            findings: vec![],
        };
        assert_eq!(render_text(&empty, false), "No findings.\n");
    }

    // ---- against a real redis-server on 127.0.0.1 --------------------------------------

    /// A throwaway redis-server child on 127.0.0.1 (in its own directory), killed on drop.
    struct TestRedis {
        child: Child,
        port: u16,
        dir: PathBuf,
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.local_addr().expect("local addr").port()
    }

    impl TestRedis {
        fn start(extra: &[&str]) -> TestRedis {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("redis-trace-diagnose-{port}"));
            std::fs::create_dir_all(&dir).expect("test dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (cargo xtask setup installs it)");
            let mut r = TestRedis { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = r.child.try_wait() {
                    panic!("redis-server {extra:?} exited: {status}");
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            r
        }

        fn options(&self) -> Options {
            Options {
                port: self.port,
                ..Options::default()
            }
        }

        fn connect(&self) -> TcpStream {
            let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Sends one command and reads the first line of its reply.
    fn command(s: &mut TcpStream, args: &[&str]) -> String {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(cmd, "${}\r\n{a}\r\n", a.len());
        }
        s.write_all(cmd.as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(&*s).read_line(&mut line).expect("read");
        line.trim_end().to_string()
    }

    /// Titles of findings about this host, not about the Redis diagnosed: they depend on
    /// the machine the tests run on (its sysctl, earlier OOM kills in its kernel log).
    fn host_level(f: &Finding) -> bool {
        f.title.starts_with("vm.overcommit_memory is ")
            || f.title
                .starts_with("redis-server was killed by the kernel's OOM killer")
            || f.title
                .starts_with("valkey-server was killed by the kernel's OOM killer")
    }

    #[test]
    fn diagnose_real_risky_server() {
        let redis = TestRedis::start(&[
            "--timeout",
            "60",
            "--tcp-keepalive",
            "0",
            "--client-output-buffer-limit",
            "pubsub 1mb 512kb 60",
            // Relative: found through /proc/<pid>/cwd (--dir).
            "--logfile",
            "redis.log",
        ]);
        // A subscriber that does not read, and one 2 MiB message: over the 1 MiB hard limit.
        let mut sub = redis.connect();
        sub.set_nodelay(true).unwrap();
        assert!(command(&mut sub, &["CLIENT", "SETNAME", "slow-sub"]).starts_with("+OK"));
        assert_eq!(command(&mut sub, &["SUBSCRIBE", "news"]), "*3");
        let mut publisher = redis.connect();
        let payload = "x".repeat(2 << 20);
        assert_eq!(
            command(&mut publisher, &["PUBLISH", "news", &payload]),
            ":1"
        );
        let log = redis.dir.join("redis.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("overcoming of output buffer limits")
        {
            assert!(
                Instant::now() < deadline,
                "no output buffer line in {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let d = run(&redis.options()).expect("diagnose");
        println!("{}", render_text(&d, false));
        let facts = d.redis.as_ref().expect("facts");
        assert_eq!(facts.pid, Some(redis.child.id()));
        assert!(facts.process_on_this_host);
        assert_eq!(facts.version.as_deref().map(|v| v.is_empty()), Some(false));
        assert!(facts.uptime_s.is_some_and(|u| u < 60));
        assert_eq!(facts.timeout, Some(60));

        let t = find(
            &d.findings,
            "timeout 60: Redis closes clients idle longer than 60 s",
        );
        assert_eq!(t.severity, Severity::Warning);
        let k = find(&d.findings, "tcp-keepalive 0");
        assert_eq!(k.severity, Severity::Warning);
        let p = find(&d.findings, "Small pubsub output buffer limit (hard 1 MiB)");
        assert_eq!(p.severity, Severity::Warning);
        let r = find(&d.findings, "Redis started ");
        assert_eq!(r.severity, Severity::Warning);
        let obl = find(
            &d.findings,
            "Redis closed 1 client(s) for exceeding their output buffer limit in the last 24 h",
        );
        assert_eq!(obl.severity, Severity::Warning);
        assert!(obl.evidence[0].ends_with("(1 pubsub)"), "{obl:?}");
        assert!(obl.evidence[1].contains("name=slow-sub"), "{obl:?}");
        assert!(d.exit_code() >= 2);
        let worst: Vec<Severity> = d.findings.iter().map(|f| f.severity).collect();
        assert!(worst.windows(2).all(|w| w[0] >= w[1]), "sorted: {worst:?}");
    }

    #[test]
    fn diagnose_real_sane_server() {
        let redis = TestRedis::start(&[
            "--timeout",
            "0",
            "--tcp-keepalive",
            "300",
            "--maxmemory",
            "100mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ]);
        let d = run(&redis.options()).expect("diagnose");
        println!("{}", render_text(&d, false));
        // Started a moment ago: a test server always has the restart finding.
        let r = find(&d.findings, "Redis started ");
        assert_eq!(r.severity, Severity::Warning);
        let serious: Vec<&Finding> = d
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info && !host_level(f) && !std::ptr::eq(*f, r))
            .collect();
        assert!(serious.is_empty(), "{serious:#?}");
        // Logs to stdout: said so, as Info.
        let log = find(&d.findings, "Redis log not read");
        assert_eq!(log.severity, Severity::Info);
        assert!(log.evidence[0].contains("standard output"));
        let facts = d.redis.as_ref().unwrap();
        assert_eq!(facts.maxmemory, Some(100 << 20));
        assert!(facts.process_on_this_host);

        // Read-only: what the diagnosis (and this look) ran, per Redis's command statistics.
        let target = Target::new(None, redis.port, None).unwrap();
        let snap = Session::connect(&target).unwrap().snapshot(false).unwrap();
        let ran: Vec<&String> = snap
            .info
            .keys()
            .filter(|k| k.starts_with("cmdstat_"))
            .collect();
        assert!(!ran.is_empty());
        for k in &ran {
            assert!(
                matches!(
                    k.as_str(),
                    "cmdstat_info" | "cmdstat_config|get" | "cmdstat_client|list"
                ),
                "unexpected command {k} in {ran:?}"
            );
        }
    }

    #[test]
    fn diagnose_real_unreachable_and_refused() {
        let port = free_port();
        let d = run(&Options {
            port,
            ..Options::default()
        })
        .expect("unreachable is a finding, not an error");
        assert!(d.redis.is_none());
        let f = find(
            &d.findings,
            &format!("Redis at 127.0.0.1:{port} is not answering: refused the connection"),
        );
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.evidence.iter().any(|e| e.starts_with("/proc: ")), "{f:?}");
        assert_eq!(d.exit_code(), 3);

        let redis = TestRedis::start(&["--requirepass", "secret"]);
        let err = format!(
            "{:#}",
            run(&redis.options()).expect_err("no password: a tool error")
        );
        assert!(err.contains("Redis requires a password"), "{err}");
    }
}
