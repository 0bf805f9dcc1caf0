//! Cause classification: from what the kernel saw and what Redis, its log and /proc
//! said, the reason a connection ended, with the evidence.
//!
//! The rule of this module: a cause needs evidence. Each rule names the facts it relies
//! on in `evidence`, and when nothing settles it the answer is `redis_close_unknown` or
//! `unknown`. A wrong cause is worse than an honest "unknown".
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::schema::ConnectionClosed;
use crate::sources::redis::{BufferLimit, ClientEntry, RedisConfig};
use crate::sources::redis_log::{LogEvent, LogKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    RedisIdleTimeout,
    RedisOutputBufferLimit,
    RedisClientKill,
    RedisQueryBufferLimit,
    RedisClientEviction,
    RedisProtocolError,
    RedisShutdown,
    RedisOomKilled,
    RedisKilled,
    RedisCrashed,
    RedisCloseUnknown,
    ClientClose,
    ClientReset,
    MiddleboxReset,
    PeerReset,
    KernelReset,
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 17] = [
        Cause::RedisIdleTimeout,
        Cause::RedisOutputBufferLimit,
        Cause::RedisClientKill,
        Cause::RedisQueryBufferLimit,
        Cause::RedisClientEviction,
        Cause::RedisProtocolError,
        Cause::RedisShutdown,
        Cause::RedisOomKilled,
        Cause::RedisKilled,
        Cause::RedisCrashed,
        Cause::RedisCloseUnknown,
        Cause::ClientClose,
        Cause::ClientReset,
        Cause::MiddleboxReset,
        Cause::PeerReset,
        Cause::KernelReset,
        Cause::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::RedisIdleTimeout => "redis_idle_timeout",
            Cause::RedisOutputBufferLimit => "redis_output_buffer_limit",
            Cause::RedisClientKill => "redis_client_kill",
            Cause::RedisQueryBufferLimit => "redis_query_buffer_limit",
            Cause::RedisClientEviction => "redis_client_eviction",
            Cause::RedisProtocolError => "redis_protocol_error",
            Cause::RedisShutdown => "redis_shutdown",
            Cause::RedisOomKilled => "redis_oom_killed",
            Cause::RedisKilled => "redis_killed",
            Cause::RedisCrashed => "redis_crashed",
            Cause::RedisCloseUnknown => "redis_close_unknown",
            Cause::ClientClose => "client_close",
            Cause::ClientReset => "client_reset",
            Cause::MiddleboxReset => "middlebox_reset",
            Cause::PeerReset => "peer_reset",
            Cause::KernelReset => "kernel_reset",
            Cause::Unknown => "unknown",
        }
    }

    /// Who ended it, in the words of `closed_by`.
    pub fn closed_by(self) -> &'static str {
        match self {
            Cause::ClientClose | Cause::ClientReset => "client",
            Cause::MiddleboxReset => "middlebox",
            Cause::KernelReset => "kernel",
            Cause::PeerReset | Cause::Unknown => "unknown",
            _ => "redis",
        }
    }
}

/// What happened to the Redis process, from the kernel's process events.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcFact {
    OomKilled,
    /// A fatal signal; `origin` as in the record ("user", "kernel", "fault ...").
    Signal {
        sig: i32,
        name: String,
        origin: String,
        sender_pid: u32,
        sender_comm: String,
    },
    Exit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcEvent {
    pub time: SystemTime,
    pub pid: u32,
    pub fact: ProcFact,
}

/// Counter increases Redis reported between two polls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterWindow {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub evicted_clients: u64,
    pub output_buffer_disconnections: Option<u64>,
    pub query_buffer_disconnections: Option<u64>,
    pub client_kill_calls: u64,
}

/// Everything known besides the kernel's record of this connection.
#[derive(Debug)]
pub struct Evidence<'a> {
    /// Pids of the Redis servers this capture watches.
    pub redis_pids: &'a [u32],
    pub proc_events: &'a [ProcEvent],
    pub log: &'a [LogEvent],
    /// The last CLIENT LIST entry seen for this connection's client address, and when.
    pub client: Option<(&'a ClientEntry, SystemTime)>,
    pub config: Option<&'a RedisConfig>,
    /// Whether Redis's own view (INFO/CLIENT LIST) was available, and why not.
    pub redis_view: Result<(), &'a str>,
    /// When the first CLIENT LIST of this server was taken.
    pub first_client_list: Option<SystemTime>,
    /// Whether the log could be read, and why not.
    pub log_view: Result<(), &'a str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub cause: Cause,
    pub closed_by: &'static str,
    pub evidence: Vec<String>,
    pub client_class: Option<&'static str>,
    /// For CLIENT KILL: the connection that ran it, when known.
    pub killer: Option<String>,
}

impl Verdict {
    fn new(cause: Cause, evidence: Vec<String>) -> Self {
        Self {
            cause,
            closed_by: cause.closed_by(),
            evidence,
            client_class: None,
            killer: None,
        }
    }
}

/// The client class Redis applies buffer limits by (networking.c getClientType).
pub fn client_class(flags: &str) -> &'static str {
    if flags.contains('M') {
        "master"
    } else if flags.contains('S') {
        "replica"
    } else if flags.contains('P') {
        "pubsub"
    } else {
        "normal"
    }
}

fn parse_time(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(t).ok()
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn describe_entry(e: &ClientEntry) -> String {
    let name = if e.name.is_empty() {
        String::new()
    } else {
        format!(" name={}", e.name)
    };
    format!(
        "id={}{name} flags={} age={}s idle={}s omem={} qbuf={} cmd={}",
        e.id, e.flags, e.age, e.idle, e.omem, e.qbuf, e.cmd
    )
}

fn limit_for<'a>(cfg: &'a RedisConfig, class: &str) -> Option<&'a BufferLimit> {
    match class {
        "pubsub" => cfg.cobl_pubsub.as_ref(),
        "replica" => cfg.cobl_replica.as_ref(),
        _ => cfg.cobl_normal.as_ref(),
    }
}

/// Classifies one ended connection. Counter deltas (evictions, CLIENT KILL calls) are
/// applied afterwards across a poll window by [`apply_counters`], since one counter
/// increase can only explain one connection.
pub fn classify(c: &ConnectionClosed, ev: &Evidence<'_>) -> Verdict {
    let Some(close) = parse_time(&c.time) else {
        return Verdict::new(Cause::Unknown, vec!["record without a valid time".into()]);
    };
    let client: Option<SocketAddr> = c.client.parse().ok();
    let mut kernel = vec![kernel_sentence(c)];

    match (c.closed_by_side, c.packet, c.kernel_event) {
        (_, _, "timeout") => {
            kernel.push(format!(
                "kernel: the {} end's TCP stack gave up on the connection{}",
                c.observed_on,
                c.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
            Verdict::new(Cause::KernelReset, kernel)
        }
        (Some("client"), Some("FIN"), _) => Verdict::new(Cause::ClientClose, kernel),
        (Some("client"), Some("RST"), "aborted") => Verdict::new(Cause::ClientReset, kernel),
        (Some("client"), Some("RST"), "received_rst") => received_rst(c, kernel),
        (Some("server"), _, "received_rst") => received_rst(c, kernel),
        (Some("server"), _, _) => redis_close(c, close, client, ev, kernel),
        _ => Verdict::new(Cause::Unknown, kernel),
    }
}

fn kernel_sentence(c: &ConnectionClosed) -> String {
    let who = match (c.pid, c.comm.as_deref()) {
        (Some(p), Some(n)) => format!(" by {n} (pid {p})"),
        _ => String::new(),
    };
    let reason = c
        .rst_reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    match (c.closed_by_side, c.packet) {
        // A received RST only carries the other end's address: who really sent it is
        // what the classifier works out.
        (Some(side), Some("RST")) if c.kernel_event == "received_rst" => format!(
            "kernel: the {} end received a RST from the {side}'s address{reason}",
            c.observed_on
        ),
        (Some(side), Some(p)) => {
            format!("kernel: the {side} end sent the first {p}{reason}{who}")
        }
        _ => format!(
            "kernel: {} seen on the {} end",
            c.kernel_event, c.observed_on
        ),
    }
}

/// A RST that arrived: from the other end, or from something in the path.
fn received_rst(c: &ConnectionClosed, mut ev: Vec<String>) -> Verdict {
    let sender = c.closed_by_side.unwrap_or("unknown");
    let sent_by_sender = c
        .resets
        .iter()
        .any(|r| r.direction == "sent" && r.side == sender);
    if c.both_ends_local && !sent_by_sender {
        ev.push(format!(
            "kernel: both ends of this connection are on this host and the {sender} end's \
             TCP stack never sent a RST (tcp_send_reset did not fire for it): the RST came \
             from something in the path (firewall, NAT, conntrack, load balancer)"
        ));
        return Verdict::new(Cause::MiddleboxReset, ev);
    }
    if sent_by_sender {
        ev.push(format!(
            "kernel: the {sender} end's TCP stack sent that RST"
        ));
        let cause = if sender == "client" {
            Cause::ClientReset
        } else {
            Cause::RedisCloseUnknown
        };
        return Verdict::new(cause, ev);
    }
    ev.push(format!(
        "kernel: the RST came from the {sender}'s address, which is not on this host: \
         nothing here tells that end from a device in the path"
    ));
    Verdict::new(Cause::PeerReset, ev)
}

/// The server end closed it. Why did Redis close it?
fn redis_close(
    c: &ConnectionClosed,
    close: SystemTime,
    client: Option<SocketAddr>,
    ev: &Evidence<'_>,
    mut out: Vec<String>,
) -> Verdict {
    // Redis's own decision, seen by the uprobes: the strongest evidence there is.
    if let Some(v) = from_code_path(c, client, close, ev, &mut out) {
        return v;
    }
    // The Redis process itself ending explains every close around it.
    if let Some(v) = process_end(c, close, ev, &mut out) {
        return v;
    }
    // Redis's log names the client's address on the closes it logs.
    if let Some(v) = from_log(close, client, ev, &mut out) {
        return v;
    }
    // The last CLIENT LIST entry of the connection.
    if let Some((entry, seen)) = ev.client.filter(|(_, seen)| *seen <= close) {
        let class = client_class(&entry.flags);
        out.push(format!(
            "CLIENT LIST at {}: {}",
            crate::time::rfc3339_millis(seen),
            describe_entry(entry)
        ));
        if let Some(cfg) = ev.config {
            if let Some(limit) = limit_for(cfg, class)
                && limit.hard > 0
                && entry.omem >= limit.hard
            {
                out.push(format!(
                    "its output buffer ({} bytes) had reached the {class} hard limit ({} bytes)",
                    entry.omem, limit.hard
                ));
                let mut v = Verdict::new(Cause::RedisOutputBufferLimit, out);
                v.client_class = Some(class);
                return v;
            }
            if let Some(q) = cfg.query_buffer_limit
                && q > 0
                && entry.qbuf >= q
            {
                out.push(format!(
                    "its query buffer ({} bytes) had reached client-query-buffer-limit ({q})",
                    entry.qbuf
                ));
                return Verdict::new(Cause::RedisQueryBufferLimit, out);
            }
            if let Some(v) = idle_timeout(entry, seen, close, class, cfg, &mut out) {
                return v;
            }
        }
    } else if ev.redis_view.is_ok() {
        out.push(match ev.first_client_list {
            Some(first) if first <= close => {
                "CLIENT LIST: no entry was seen for this connection (it lived between two snapshots)".into()
            }
            _ => "CLIENT LIST: not yet taken when it closed".into(),
        });
    }
    if let Err(why) = ev.redis_view {
        out.push(format!("Redis's own view was not available: {why}"));
    }
    if let Err(why) = ev.log_view {
        out.push(format!("Redis's log was not available: {why}"));
    }
    Verdict::new(Cause::RedisCloseUnknown, out)
}

/// The Redis function that decided to free the client (uprobes on freeClient and
/// freeClientAsync, named from redis-server's symbols).
fn from_code_path(
    c: &ConnectionClosed,
    client: Option<SocketAddr>,
    close: SystemTime,
    ev: &Evidence<'_>,
    out: &mut Vec<String>,
) -> Option<Verdict> {
    use crate::kernel::uprobes::{after_reply, meaning};
    let p = c.redis_code_path.as_ref()?;
    let flags = p.client_flags.as_deref().unwrap_or_default();
    let how = if p.freed_from == p.decided_in {
        format!("freed it from {}", p.decided_in)
    } else {
        format!(
            "decided in {} and freed it later from {}",
            p.decided_in, p.freed_from
        )
    };
    let flag_note = p
        .client_flags
        .as_ref()
        .filter(|f| !f.is_empty())
        .map(|f| format!(" (client flags: {})", f.join(", ")))
        .unwrap_or_default();
    if let Some((what, cause)) = meaning(&p.decided_in) {
        out.push(format!("uprobe: Redis {how}: {what}{flag_note}"));
        let mut v = Verdict::new(cause, std::mem::take(out));
        if cause == Cause::RedisOutputBufferLimit {
            v.client_class = Some(if flags.contains(&"replica") {
                "replica"
            } else if flags.contains(&"pubsub") {
                "pubsub"
            } else if p.client_flags.is_some() {
                "normal"
            } else {
                // Flags not readable on this version: the log or CLIENT LIST may say.
                ev.client
                    .map(|(e, _)| client_class(&e.flags))
                    .unwrap_or("normal")
            });
        }
        // Supporting evidence, when there is some: the log line, the entry.
        let mut extra = Vec::new();
        if from_log(close, client, ev, &mut extra).is_some() {
            v.evidence
                .extend(extra.into_iter().filter(|e| e.starts_with("Redis log:")));
        }
        if let Some((entry, seen)) = ev.client.filter(|(_, seen)| *seen <= close) {
            v.evidence.push(format!(
                "CLIENT LIST at {}: {}",
                crate::time::rfc3339_millis(seen),
                describe_entry(entry)
            ));
        }
        if cause == Cause::RedisIdleTimeout
            && let Some(t) = ev.config.and_then(|c| c.timeout)
        {
            v.evidence.push(format!("config: timeout is {t}s"));
        }
        return Some(v);
    }
    if after_reply(&p.decided_in) {
        if flags.contains(&"protocol_error") {
            out.push(format!(
                "uprobe: Redis {how}, after its reply, with the client flagged for a protocol error{flag_note}"
            ));
            return Some(Verdict::new(Cause::RedisProtocolError, std::mem::take(out)));
        }
        out.push(format!(
            "uprobe: Redis {how}, after its last reply to the client (the client sent QUIT, \
             or a command that closes the connection){flag_note}"
        ));
        return None;
    }
    out.push(format!("uprobe: Redis {how}{flag_note}"));
    None
}

/// Redis's serverCron frees a client once `now - lastinteraction > timeout`, checking
/// every client about once a second (server.c clientsCronHandleTimeout). From the idle
/// time CLIENT LIST reported, the close is predicted to the second; a close at that time
/// is the timeout, any other time is not.
fn idle_timeout(
    e: &ClientEntry,
    seen: SystemTime,
    close: SystemTime,
    class: &str,
    cfg: &RedisConfig,
    out: &mut Vec<String>,
) -> Option<Verdict> {
    let timeout = cfg.timeout.filter(|t| *t > 0)?;
    // Exempt from the timeout: replicas, masters, blocked and pub/sub clients.
    if class != "normal" || e.flags.contains('b') {
        return None;
    }
    // Redis counts in whole seconds: idle = unixtime - lastinteraction, and the client
    // is freed once now - lastinteraction > timeout, so never before `seen - idle +
    // timeout` (activity after the snapshot only makes it later), and at most about
    // 2 s after it (the +1 of `>`, plus serverCron visiting each client once a second).
    let last_activity = seen.checked_sub(Duration::from_secs(e.idle))?;
    let predicted = last_activity.checked_add(Duration::from_secs(timeout))?;
    let off = secs_between(predicted, close);
    if (-0.05..=2.5).contains(&off) {
        out.push(format!(
            "config: timeout is {timeout}s; idle {}s at that snapshot puts the idle timeout at {}, \
             and the close came {off:+.1}s from it",
            e.idle,
            crate::time::rfc3339_millis(predicted)
        ));
        return Some(Verdict::new(Cause::RedisIdleTimeout, std::mem::take(out)));
    }
    out.push(format!(
        "config: timeout is {timeout}s, but the close came {off:+.1}s from when that timeout \
         would have fired: not the idle timeout (or the client was active after the last snapshot)"
    ));
    None
}

/// Matches Redis log lines for this client's address within a few seconds of the close.
fn from_log(
    close: SystemTime,
    client: Option<SocketAddr>,
    ev: &Evidence<'_>,
    out: &mut Vec<String>,
) -> Option<Verdict> {
    let client = client?;
    let near = |t: Option<SystemTime>| t.is_some_and(|t| secs_between(t, close).abs() <= 5.0);
    let line = ev
        .log
        .iter()
        .filter(|l| l.client_addr == Some(client) && near(l.time))
        .find(|l| {
            matches!(
                l.kind,
                LogKind::OutputBufferLimit
                    | LogKind::QueryBufferLimit
                    | LogKind::ClientEviction
                    | LogKind::ProtocolError
            )
        })?;
    out.push(format!("Redis log: {}", line.line));
    let mut v = match line.kind {
        LogKind::OutputBufferLimit => {
            let mut v = Verdict::new(Cause::RedisOutputBufferLimit, std::mem::take(out));
            v.client_class = Some(client_class(line.client_flags.as_deref().unwrap_or("")));
            v
        }
        LogKind::QueryBufferLimit => {
            Verdict::new(Cause::RedisQueryBufferLimit, std::mem::take(out))
        }
        LogKind::ClientEviction => Verdict::new(Cause::RedisClientEviction, std::mem::take(out)),
        _ => Verdict::new(Cause::RedisProtocolError, std::mem::take(out)),
    };
    if let (Some(cfg), Some(class)) = (ev.config, v.client_class)
        && let Some(l) = limit_for(cfg, class)
    {
        v.evidence.push(format!(
            "config: client-output-buffer-limit {class} {} {} {}",
            l.hard, l.soft, l.soft_seconds
        ));
    }
    Some(v)
}

/// redis-server died or exited around the close, and the close came from its own exit.
fn process_end(
    c: &ConnectionClosed,
    close: SystemTime,
    ev: &Evidence<'_>,
    out: &mut Vec<String>,
) -> Option<Verdict> {
    // Which Redis process: the closing task when the kernel names it, else any watched.
    let pids: Vec<u32> = match c.pid {
        Some(p) if ev.redis_pids.contains(&p) => vec![p],
        Some(_) => return None,
        None => ev.redis_pids.to_vec(),
    };
    // The exit must come before the close (the kernel closes a dying process's sockets
    // after sched_process_exit) or within a second after it.
    let exit = ev.proc_events.iter().find(|e| {
        pids.contains(&e.pid)
            && e.fact == ProcFact::Exit
            && (-1.0..=10.0).contains(&secs_between(e.time, close))
    })?;
    let pid = exit.pid;
    let before_exit =
        |e: &&ProcEvent| e.pid == pid && (0.0..=30.0).contains(&secs_between(e.time, exit.time));
    out.push(format!(
        "kernel: redis-server (pid {pid}) exited at {}",
        crate::time::rfc3339_millis(exit.time)
    ));
    if ev
        .proc_events
        .iter()
        .filter(before_exit)
        .any(|e| e.fact == ProcFact::OomKilled)
    {
        out.push(format!(
            "kernel: the OOM killer chose redis-server (pid {pid}) as its victim"
        ));
        return Some(Verdict::new(Cause::RedisOomKilled, std::mem::take(out)));
    }
    let signal = ev
        .proc_events
        .iter()
        .filter(before_exit)
        .find_map(|e| match &e.fact {
            ProcFact::Signal {
                sig,
                name,
                origin,
                sender_pid,
                sender_comm,
            } => Some((
                *sig,
                name.clone(),
                origin.clone(),
                *sender_pid,
                sender_comm.clone(),
            )),
            _ => None,
        });
    let crash_log = ev
        .log
        .iter()
        .find(|l| matches!(l.kind, LogKind::Crash { .. }) && l.pid.is_none_or(|p| p == pid));
    let shutdown_log = ev.log.iter().find(|l| {
        matches!(
            l.kind,
            LogKind::ShutdownRequested { .. } | LogKind::ReadyToExit
        ) && l.pid.is_none_or(|p| p == pid)
    });
    match signal {
        // SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT: a crash, whoever raised it.
        Some((sig @ (4 | 6 | 7 | 8 | 11), name, origin, spid, scomm)) => {
            out.push(format!(
                "kernel: {name} ({sig}) was sent to redis-server ({origin}, by {scomm} pid {spid})"
            ));
            if let Some(l) = crash_log {
                out.push(format!("Redis log: {}", l.line));
            }
            Some(Verdict::new(Cause::RedisCrashed, std::mem::take(out)))
        }
        Some((sig @ (2 | 15), name, _, spid, scomm)) => {
            out.push(format!(
                "kernel: {name} ({sig}) from {scomm} (pid {spid}): Redis shuts down gracefully on it"
            ));
            if let Some(l) = shutdown_log {
                out.push(format!("Redis log: {}", l.line));
            }
            Some(Verdict::new(Cause::RedisShutdown, std::mem::take(out)))
        }
        Some((sig, name, origin, spid, scomm)) if spid != pid => {
            out.push(format!(
                "kernel: {name} ({sig}) was sent to redis-server by {scomm} (pid {spid}, {origin})"
            ));
            let mut v = Verdict::new(Cause::RedisKilled, std::mem::take(out));
            v.killer = Some(format!("{scomm} (pid {spid})"));
            Some(v)
        }
        _ => {
            if let Some(l) = crash_log {
                out.push(format!("Redis log: {}", l.line));
                return Some(Verdict::new(Cause::RedisCrashed, std::mem::take(out)));
            }
            match shutdown_log {
                Some(l) => out.push(format!("Redis log: {}", l.line)),
                None => out.push(
                    "kernel: no fatal signal and no OOM kill preceded the exit: \
                     Redis exited on its own (SHUTDOWN)"
                        .into(),
                ),
            }
            Some(Verdict::new(Cause::RedisShutdown, std::mem::take(out)))
        }
    }
}

/// Applies counter increases of one poll window to the Redis closes in it that nothing
/// else explained. A counter attributes only when it alone rose, by exactly as many as
/// there are unexplained closes: otherwise which close it explains is a guess.
pub fn apply_counters(window: &CounterWindow, verdicts: &mut [&mut Verdict], killer: Option<&str>) {
    // Closes whose Redis code path the uprobes saw are settled: a counter says nothing
    // more about them (a QUIT in the same second as a CLIENT KILL stays a QUIT).
    let seen_by_uprobe = |v: &Verdict| v.evidence.iter().any(|e| e.starts_with("uprobe:"));
    let open: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.cause == Cause::RedisCloseUnknown && !seen_by_uprobe(v))
        .map(|(i, _)| i)
        .collect();
    // Increases already explained by closes of that cause in this window.
    let already = |c: Cause| verdicts.iter().filter(|v| v.cause == c).count() as u64;
    let rose: Vec<(Cause, u64, &str)> = [
        (
            Cause::RedisClientEviction,
            window.evicted_clients,
            "evicted_clients",
        ),
        (
            Cause::RedisOutputBufferLimit,
            window.output_buffer_disconnections.unwrap_or(0),
            "client_output_buffer_limit_disconnections",
        ),
        (
            Cause::RedisQueryBufferLimit,
            window.query_buffer_disconnections.unwrap_or(0),
            "client_query_buffer_limit_disconnections",
        ),
        (
            Cause::RedisClientKill,
            window.client_kill_calls,
            "cmdstat_client|kill calls",
        ),
    ]
    .into_iter()
    .map(|(c, d, n)| (c, d.saturating_sub(already(c)), n))
    .filter(|(_, d, _)| *d > 0)
    .collect();
    let span = match (window.from, window.to) {
        (Some(a), Some(b)) => format!(
            "between {} and {}",
            crate::time::rfc3339_millis(a),
            crate::time::rfc3339_millis(b)
        ),
        _ => "around the close".into(),
    };
    let explained_by_snapshot = |v: &Verdict| v.cause == Cause::RedisIdleTimeout;
    if open.is_empty() {
        // Every close has an explanation, yet a counter rose: say so where the
        // explanation is an inference, so that a reader can weigh it.
        for v in verdicts.iter_mut().filter(|v| explained_by_snapshot(v)) {
            for (_, d, n) in &rose {
                v.evidence.push(format!(
                    "INFO {span}: {n} also rose by {d}, with no unexplained close to match it"
                ));
            }
        }
        return;
    }
    let [(cause, delta, counter)] = rose.as_slice() else {
        if !rose.is_empty() {
            let list: Vec<String> = rose.iter().map(|(_, d, n)| format!("{n} +{d}")).collect();
            for &i in &open {
                verdicts[i].evidence.push(format!(
                    "INFO {span}: {} rose together: not enough to tell which explains this close",
                    list.join(", ")
                ));
            }
        }
        return;
    };
    if *delta as usize != open.len() {
        for &i in &open {
            verdicts[i].evidence.push(format!(
                "INFO {span}: {counter} rose by {delta} while {} Redis closes had no other \
                 explanation: not attributed",
                open.len()
            ));
        }
        return;
    }
    for &i in &open {
        let v = &mut *verdicts[i];
        v.cause = *cause;
        v.closed_by = cause.closed_by();
        v.evidence.push(format!(
            "INFO {span}: {counter} rose by {delta}, matching the {} Redis close(s) nothing else explains",
            open.len()
        ));
        if *cause == Cause::RedisClientKill
            && let Some(k) = killer
        {
            v.killer = Some(k.to_string());
            v.evidence.push(format!(
                "CLIENT LIST: the connection that ran CLIENT KILL: {k}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The classifier on recorded event sequences: what the kernel, Redis and its log
    //! said in real incidents, reduced to the facts each rule uses.
    use super::*;
    use crate::schema::ResetNote;
    use crate::sources::redis_log::parse_line;

    const T0: u64 = 1_800_000_000;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(T0 as f64 + secs)
    }

    fn closed(
        side: &str,
        packet: Option<&'static str>,
        event: &'static str,
        t: f64,
    ) -> ConnectionClosed {
        ConnectionClosed {
            kind: "connection_closed",
            time: humantime::format_rfc3339_micros(at(t)).to_string(),
            cause: Cause::Unknown,
            closed_by: "unknown",
            evidence: vec![],
            client_class: None,
            killer: None,
            redis_client: None,
            server: "127.0.0.1:6379".into(),
            client: "127.0.0.1:50000".into(),
            closed_by_side: Some(if side == "server" { "server" } else { "client" }),
            packet,
            pid: (side == "server").then_some(100),
            tid: (side == "server").then_some(100),
            comm: (side == "server").then(|| "redis-server".to_string()),
            rst_reason: None,
            duration_ms: Some(1000.0),
            kernel_event: event,
            observed_on: "server",
            error: None,
            server_process: None,
            client_process: None,
            start_seen: true,
            both_ends_local: false,
            resets: vec![],
            close_ns: 0,
            redis_code_path: None,
            redis_raw: (0, 0, 0),
        }
    }

    fn entry(idle: u64, flags: &str, omem: u64) -> ClientEntry {
        ClientEntry {
            id: 7,
            addr: "127.0.0.1:50000".parse().ok(),
            name: "worker".into(),
            flags: flags.into(),
            idle,
            omem,
            cmd: "get".into(),
            ..ClientEntry::default()
        }
    }

    fn config() -> RedisConfig {
        RedisConfig {
            timeout: Some(10),
            cobl_normal: Some(BufferLimit::default()),
            cobl_pubsub: Some(BufferLimit {
                hard: 32 << 20,
                soft: 8 << 20,
                soft_seconds: 60,
            }),
            query_buffer_limit: Some(1 << 30),
            ..RedisConfig::default()
        }
    }

    fn evidence<'a>(
        client: Option<(&'a ClientEntry, SystemTime)>,
        config: Option<&'a RedisConfig>,
        procs: &'a [ProcEvent],
        log: &'a [LogEvent],
    ) -> Evidence<'a> {
        Evidence {
            redis_pids: &[100],
            proc_events: procs,
            log,
            client,
            config,
            redis_view: Ok(()),
            first_client_list: Some(at(0.0)),
            log_view: Ok(()),
        }
    }

    #[test]
    fn idle_client_closed_when_its_timeout_falls_due() {
        let c = closed("server", Some("FIN"), "sent_fin", 20.3);
        let e = entry(3, "N", 0);
        let cfg = config();
        // Snapshot at 13 s said idle 3 s: last activity at 10 s, timeout due at 20 s.
        let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
        assert_eq!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
        assert_eq!(v.closed_by, "redis");
        assert!(v.evidence.iter().any(|s| s.starts_with("CLIENT LIST")));
        assert!(v.evidence.iter().any(|s| s.contains("timeout is 10s")));
    }

    #[test]
    fn a_huge_timeout_from_a_hostile_redis_does_not_panic() {
        let c = closed("server", Some("FIN"), "sent_fin", 20.3);
        let e = entry(3, "N", 0);
        let mut cfg = config();
        // Past what parse_config keeps, as if a Redis had said it: checked, not a panic.
        cfg.timeout = Some(u64::MAX);
        let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
        assert_ne!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    }

    #[test]
    fn a_close_long_before_the_timeout_is_not_called_a_timeout() {
        let c = closed("server", Some("FIN"), "sent_fin", 15.0);
        let e = entry(3, "N", 0);
        let cfg = config();
        let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
        assert!(
            v.evidence
                .iter()
                .any(|s| s.contains("not the idle timeout"))
        );
    }

    #[test]
    fn pubsub_clients_are_exempt_from_the_idle_timeout() {
        let c = closed("server", Some("FIN"), "sent_fin", 20.3);
        let e = entry(3, "P", 0);
        let cfg = config();
        let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    }

    #[test]
    fn output_buffer_log_line_names_the_class() {
        let c = closed("server", Some("FIN"), "sent_fin", 0.0);
        let line = "100:M 25 Nov 2026 17:02:05.076 # Client id=6 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name=sub age=0 idle=0 flags=P db=0 sub=1 psub=0 omem=319608 cmd=subscribe user=default redir=-1 resp=2 scheduled to be closed ASAP for overcoming of output buffer limits.";
        let mut ev = parse_line(line).expect("a log event");
        ev.time = Some(at(-0.01));
        let cfg = config();
        let log = [ev];
        let v = classify(&c, &evidence(None, Some(&cfg), &[], &log));
        assert_eq!(v.cause, Cause::RedisOutputBufferLimit, "{v:#?}");
        assert_eq!(v.client_class, Some("pubsub"));
        assert!(v.evidence.iter().any(|s| s.starts_with("Redis log:")));
        assert!(
            v.evidence
                .iter()
                .any(|s| s.contains("pubsub 33554432 8388608 60"))
        );
    }

    #[test]
    fn a_log_line_for_another_client_or_time_does_not_count() {
        let c = closed("server", Some("FIN"), "sent_fin", 60.0);
        let line = "100:M 25 Nov 2026 17:02:05.076 # Client id=6 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= age=0 idle=0 flags=P db=0 sub=1 psub=0 omem=319608 cmd=subscribe user=default scheduled to be closed ASAP for overcoming of output buffer limits.";
        let mut ev = parse_line(line).expect("a log event");
        ev.time = Some(at(0.0)); // a minute before the close
        let log = [ev];
        let v = classify(&c, &evidence(None, None, &[], &log));
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    }

    #[test]
    fn omem_over_the_hard_limit_is_an_output_buffer_close() {
        let c = closed("server", Some("FIN"), "sent_fin", 5.0);
        let e = entry(0, "P", 40 << 20);
        let cfg = config();
        let v = classify(&c, &evidence(Some((&e, at(4.5))), Some(&cfg), &[], &[]));
        assert_eq!(v.cause, Cause::RedisOutputBufferLimit, "{v:#?}");
        assert_eq!(v.client_class, Some("pubsub"));
    }

    fn exit(t: f64) -> ProcEvent {
        ProcEvent {
            time: at(t),
            pid: 100,
            fact: ProcFact::Exit,
        }
    }

    fn signal(t: f64, sig: i32, name: &str, origin: &str, sender: u32, comm: &str) -> ProcEvent {
        ProcEvent {
            time: at(t),
            pid: 100,
            fact: ProcFact::Signal {
                sig,
                name: name.into(),
                origin: origin.into(),
                sender_pid: sender,
                sender_comm: comm.into(),
            },
        }
    }

    #[test]
    fn oom_kill_then_exit_explains_the_server_side_resets() {
        let mut c = closed("server", Some("RST"), "aborted", 1.01);
        c.rst_reason = Some("TCP_ABORT_ON_CLOSE".into());
        let procs = [
            signal(1.0, 9, "SIGKILL", "kernel", 100, "redis-server"),
            ProcEvent {
                time: at(1.0),
                pid: 100,
                fact: ProcFact::OomKilled,
            },
            exit(1.005),
        ];
        let v = classify(&c, &evidence(None, None, &procs, &[]));
        assert_eq!(v.cause, Cause::RedisOomKilled, "{v:#?}");
    }

    #[test]
    fn sigkill_from_another_process_names_it() {
        let c = closed("server", Some("FIN"), "sent_fin", 1.01);
        let procs = [signal(1.0, 9, "SIGKILL", "user", 4242, "kill"), exit(1.005)];
        let v = classify(&c, &evidence(None, None, &procs, &[]));
        assert_eq!(v.cause, Cause::RedisKilled, "{v:#?}");
        assert_eq!(v.killer.as_deref(), Some("kill (pid 4242)"));
    }

    #[test]
    fn segfault_is_a_crash_and_sigterm_a_shutdown() {
        let c = closed("server", Some("FIN"), "sent_fin", 1.01);
        let procs = [
            signal(1.0, 11, "SIGSEGV", "fault (code 1)", 100, "redis-server"),
            exit(1.005),
        ];
        assert_eq!(
            classify(&c, &evidence(None, None, &procs, &[])).cause,
            Cause::RedisCrashed
        );
        let procs = [
            signal(1.0, 15, "SIGTERM", "user", 77, "systemd"),
            exit(1.005),
        ];
        assert_eq!(
            classify(&c, &evidence(None, None, &procs, &[])).cause,
            Cause::RedisShutdown
        );
    }

    #[test]
    fn a_close_by_another_process_is_not_blamed_on_redis_dying() {
        let mut c = closed("server", Some("FIN"), "sent_fin", 1.01);
        c.pid = Some(555); // not the Redis pid
        let procs = [exit(1.0)];
        let v = classify(&c, &evidence(None, None, &procs, &[]));
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    }

    #[test]
    fn client_side_endings() {
        let c = closed("client", Some("FIN"), "sent_fin", 1.0);
        assert_eq!(
            classify(&c, &evidence(None, None, &[], &[])).cause,
            Cause::ClientClose
        );
        let c = closed("client", Some("RST"), "aborted", 1.0);
        assert_eq!(
            classify(&c, &evidence(None, None, &[], &[])).cause,
            Cause::ClientReset
        );
        let c = closed("client", None, "timeout", 1.0);
        let v = classify(&c, &evidence(None, None, &[], &[]));
        assert_eq!((v.cause, v.closed_by), (Cause::KernelReset, "kernel"));
    }

    #[test]
    fn received_rst_local_ends_not_sent_by_either_is_a_middlebox() {
        let mut c = closed("client", Some("RST"), "received_rst", 1.0);
        c.observed_on = "server";
        c.both_ends_local = true;
        let v = classify(&c, &evidence(None, None, &[], &[]));
        assert_eq!((v.cause, v.closed_by), (Cause::MiddleboxReset, "middlebox"));
        // The same RST, when the client's stack is seen sending it: the client reset.
        c.resets = vec![ResetNote {
            time: c.time.clone(),
            direction: "sent",
            side: "client",
            rst_reason: Some("TCP_ABORT_ON_DATA".into()),
        }];
        assert_eq!(
            classify(&c, &evidence(None, None, &[], &[])).cause,
            Cause::ClientReset
        );
        // A remote client: nothing tells the endpoint from the path.
        c.resets.clear();
        c.both_ends_local = false;
        assert_eq!(
            classify(&c, &evidence(None, None, &[], &[])).cause,
            Cause::PeerReset
        );
    }

    #[test]
    fn no_redis_view_says_so_and_stays_unknown() {
        let c = closed("server", Some("FIN"), "sent_fin", 1.0);
        let mut ev = evidence(None, None, &[], &[]);
        ev.redis_view = Err("Redis requires a password");
        let v = classify(&c, &ev);
        assert_eq!(v.cause, Cause::RedisCloseUnknown);
        assert!(
            v.evidence.iter().any(|s| s.contains("requires a password")),
            "{v:#?}"
        );
    }

    fn unknown_verdict() -> Verdict {
        Verdict::new(Cause::RedisCloseUnknown, vec!["kernel: ...".into()])
    }

    #[test]
    fn one_counter_rise_matching_the_unexplained_closes_attributes_them() {
        let w = CounterWindow {
            from: Some(at(0.0)),
            to: Some(at(1.0)),
            client_kill_calls: 1,
            ..CounterWindow::default()
        };
        let mut a = unknown_verdict();
        let mut b = Verdict::new(Cause::RedisIdleTimeout, vec![]);
        apply_counters(
            &w,
            &mut [&mut a, &mut b],
            Some("id=9 addr=127.0.0.1:1 name=ops"),
        );
        assert_eq!(a.cause, Cause::RedisClientKill);
        assert_eq!(a.killer.as_deref(), Some("id=9 addr=127.0.0.1:1 name=ops"));
        assert_eq!(
            b.cause,
            Cause::RedisIdleTimeout,
            "explained closes are left alone"
        );
    }

    #[test]
    fn counters_that_do_not_match_attribute_nothing() {
        let w = CounterWindow {
            evicted_clients: 1,
            ..CounterWindow::default()
        };
        let (mut a, mut b) = (unknown_verdict(), unknown_verdict());
        apply_counters(&w, &mut [&mut a, &mut b], None);
        assert_eq!(
            (a.cause, b.cause),
            (Cause::RedisCloseUnknown, Cause::RedisCloseUnknown)
        );
        assert!(a.evidence.iter().any(|s| s.contains("not attributed")));
        let w = CounterWindow {
            evicted_clients: 1,
            client_kill_calls: 1,
            ..CounterWindow::default()
        };
        let (mut a, mut b) = (unknown_verdict(), unknown_verdict());
        apply_counters(&w, &mut [&mut a, &mut b], None);
        assert_eq!(
            (a.cause, b.cause),
            (Cause::RedisCloseUnknown, Cause::RedisCloseUnknown)
        );
    }

    #[test]
    fn every_cause_has_its_name_and_side() {
        for c in Cause::ALL {
            let json = serde_json::to_string(&c).expect("json");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert!(["redis", "client", "middlebox", "kernel", "unknown"].contains(&c.closed_by()));
        }
    }
}
