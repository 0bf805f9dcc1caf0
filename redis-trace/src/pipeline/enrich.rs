//! Gathers the evidence the cause classifier needs, per traced Redis server: its
//! configuration, the last CLIENT LIST entry of every client, counter increases between
//! polls, its log, and the kernel's process events. Holds each Redis-side close until a
//! poll taken after it has arrived, so that the counters and snapshots cover it.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::record;
use crate::cause::Cause;
use crate::classify::{self, CounterWindow, Facts, Verdict};
use crate::kernel::assemble::{FastMap, KernelClose};
use crate::schema::{
    ConnectionClosed, ProcessEvent, RedisClientView, RedisCodePath, RedisState, RedisStatus,
    ServerRef, Side,
};
use crate::sources::redis::{
    ClientEntry, InfoCounters, Poller, PollerMsg, RedisConfig, ServerId, Snapshot, Target,
};
use crate::sources::redis_log::{LogEvent, LogFollower, LogLocation, LogTail};
use crate::time::monotonic_ns;

/// How often Redis is polled (INFO; CLIENT LIST within the poller's own bounds).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest a Redis-side close waits for the poll after it.
const MAX_HOLD: Duration = Duration::from_secs(3);
/// How long the process events and log lines are kept for matching.
const KEEP: Duration = Duration::from_secs(120);
/// CLIENT LIST entries kept after their client disappeared.
const MAX_CLIENTS: usize = 200_000;

struct Window {
    to_mono: u64,
    w: CounterWindow,
    killer: Option<String>,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    evicted: u64,
    obl: Option<u64>,
    qbl: Option<u64>,
    kills: u64,
}

/// What we know of one Redis server.
struct Server {
    port: u16,
    /// Its network namespace: a connection is this server's when it is on this port in
    /// this namespace.
    netns: Option<u32>,
    /// How records name it.
    label: ServerRef,
    poller: Option<Poller>,
    wanted: Arc<AtomicBool>,
    config: Option<RedisConfig>,
    /// When `timeout` last changed at run time: after the first poll and before the
    /// second of this pair (wall clock).
    timeout_changed: Option<(SystemTime, SystemTime)>,
    /// When the last poll was answered.
    last_poll_wall: Option<SystemTime>,
    connected: bool,
    down_reason: Option<String>,
    pid: Option<u32>,
    run_id: Option<String>,
    clients: FastMap<SocketAddr, (ClientEntry, SystemTime)>,
    last_poll_mono: u64,
    last_clients_mono: u64,
    /// When the first CLIENT LIST arrived.
    first_clients_wall: Option<SystemTime>,
    /// Every pid this port's Redis had during the capture (a restart adds one).
    pids: Vec<u32>,
    /// Whether the poller said anything yet (connected or down).
    heard: bool,
    last_counters: Option<(u64, SystemTime, Counters)>,
    windows: VecDeque<Window>,
    /// The log, read off the capture loop.
    log: Option<LogFollower>,
    log_why_not: String,
    log_lines: Vec<LogEvent>,
}

/// Where the Redis evidence comes from.
pub struct RedisSource {
    pub port: u16,
    pub netns: Option<u32>,
    pub label: ServerRef,
    pub target: Option<Target>,
    /// The process found listening on the port at start, if any.
    pub pid: Option<u32>,
    /// Why there is no target although Redis evidence is on.
    pub off_reason: Option<String>,
}

pub struct Enricher {
    servers: Vec<Server>,
    redis_pids: Vec<u32>,
    proc_events: Vec<ProcessEvent>,
    /// Connection ends waiting for their evidence, with the Redis code path the uprobes
    /// named.
    held: VecDeque<(Box<KernelClose>, Option<RedisCodePath>)>,
    last_close_mono: u64,
    started_mono: u64,
}

fn counters(info: &HashMap<String, String>) -> Counters {
    let c = InfoCounters::from_info(info);
    let calls = info
        .get("cmdstat_client|kill")
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Counters {
        evicted: c.evicted_clients.unwrap_or(0),
        obl: c.client_output_buffer_limit_disconnections,
        qbl: c.client_query_buffer_limit_disconnections,
        kills: calls,
    }
}

fn view(e: &ClientEntry, seen: SystemTime) -> RedisClientView {
    RedisClientView {
        id: e.id,
        name: e.name.clone(),
        lib_name: e.lib_name.clone(),
        flags: e.flags.clone(),
        age: e.age,
        idle: e.idle,
        omem: e.omem,
        tot_mem: e.tot_mem,
        cmd: e.cmd.clone(),
        user: e.user.clone(),
        seen_at: crate::time::rfc3339_millis(seen),
    }
}

impl Server {
    /// Opens the log named by CONFIG GET logfile, under the server's root, or its
    /// working directory when not absolute.
    fn open_log(&mut self) {
        let Some(cfg) = &self.config else { return };
        let name = cfg.logfile.clone().unwrap_or_default();
        if name.is_empty() {
            self.log_why_not = "Redis logs to stdout (logfile is empty)".into();
            return;
        }
        let path = PathBuf::from(&name);
        // Through the process's own root and working directory: a Redis in a
        // container or chroot names a path inside it, not the host's, and every link
        // on the way resolves inside that root too.
        let at = match self.pid {
            Some(pid) if path.is_absolute() => LogLocation::in_root_of(pid, &path),
            Some(pid) => LogLocation::in_cwd_of(pid, &path),
            // Without its process, only a server of our own namespace's path is ours.
            None if self.netns.is_none() || self.netns == crate::sources::procinfo::own_netns() => {
                Ok(LogLocation::plain(&path))
            }
            None => {
                self.log_why_not = format!(
                    "the log {name} is inside the server's container, and its process is \
                     not known here"
                );
                return;
            }
        };
        // Opening cannot block (O_NONBLOCK, regular files only); reading is the
        // follower thread's.
        match at.and_then(LogTail::open_at).and_then(LogFollower::start) {
            Ok(t) => {
                self.log = Some(t);
                self.log_why_not.clear();
            }
            Err(e) => self.log_why_not = format!("{e:#}"),
        }
    }

    fn on_snapshot(&mut self, s: Snapshot) {
        let age = s.taken_at.elapsed();
        let mono = monotonic_ns().saturating_sub(age.as_nanos() as u64);
        let wall = SystemTime::now() - age;
        // A `timeout` set at run time: it changed after the previous poll, and before
        // this poll's CONFIG GET was answered (now, at the latest).
        if let (Some(t), Some(cfg)) = (s.timeout, self.config.as_mut())
            && cfg.timeout != Some(t)
        {
            self.timeout_changed = Some((self.last_poll_wall.unwrap_or(wall), SystemTime::now()));
            cfg.timeout = Some(t);
        }
        self.last_poll_wall = Some(wall);
        if let Some(clients) = s.clients {
            self.last_clients_mono = mono;
            self.first_clients_wall.get_or_insert(wall);
            for c in clients {
                if let Some(a) = c.addr {
                    self.clients.insert(a, (c, wall));
                }
            }
            if self.clients.len() > MAX_CLIENTS {
                // Forget the stalest entries first.
                let mut by_age: Vec<(SystemTime, SocketAddr)> =
                    self.clients.iter().map(|(a, (_, t))| (*t, *a)).collect();
                by_age.sort();
                for (_, a) in by_age.iter().take(self.clients.len() - MAX_CLIENTS) {
                    self.clients.remove(a);
                }
            }
        }
        let now = counters(&s.info);
        if let Some((prev_mono, prev_wall, prev)) = self.last_counters {
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let killer = if now.kills > prev.kills {
                let found: Vec<&ClientEntry> = self
                    .clients
                    .values()
                    .filter(|(e, t)| *t == wall && e.cmd == "client|kill")
                    .map(|(e, _)| e)
                    .collect();
                match found.as_slice() {
                    [k] => Some(format!(
                        "id={} addr={} name={}",
                        k.id,
                        k.addr.map(|a| a.to_string()).unwrap_or_default(),
                        k.name
                    )),
                    _ => None,
                }
            } else {
                None
            };
            let _ = prev_mono;
            self.windows.push_back(Window {
                to_mono: mono,
                w: CounterWindow {
                    from: Some(prev_wall),
                    to: Some(wall),
                    evicted_clients: d(now.evicted, prev.evicted),
                    output_buffer_disconnections: now.obl.zip(prev.obl).map(|(a, b)| d(a, b)),
                    query_buffer_disconnections: now.qbl.zip(prev.qbl).map(|(a, b)| d(a, b)),
                    client_kill_calls: d(now.kills, prev.kills),
                },
                killer,
            });
            while self.windows.len() > 300 {
                self.windows.pop_front();
            }
        }
        self.last_counters = Some((mono, wall, now));
        self.last_poll_mono = mono;
    }

    /// The counter window holding kernel time `mono`, if a poll after it has arrived.
    fn window_index(&self, mono: u64) -> Option<usize> {
        let mut from = None;
        for (i, w) in self.windows.iter().enumerate() {
            if mono <= w.to_mono && from.is_none_or(|f| mono > f) {
                return Some(i);
            }
            from = Some(w.to_mono);
        }
        None
    }
}

impl Enricher {
    pub fn new(sources: Vec<RedisSource>, redis_pids: Vec<u32>) -> Self {
        let servers = sources
            .into_iter()
            .map(|s| {
                let wanted = Arc::new(AtomicBool::new(true));
                let poller = s
                    .target
                    .map(|t| Poller::start(t, POLL_EVERY, Arc::clone(&wanted)));
                Server {
                    port: s.port,
                    netns: s.netns,
                    label: s.label,
                    down_reason: match (&poller, s.off_reason) {
                        (Some(_), _) => Some("not connected yet".into()),
                        (None, Some(why)) => Some(why),
                        (None, None) => Some("Redis evidence turned off (--no-redis)".into()),
                    },
                    poller,
                    wanted,
                    config: None,
                    timeout_changed: None,
                    last_poll_wall: None,
                    connected: false,
                    pid: None,
                    run_id: None,
                    clients: FastMap::default(),
                    last_poll_mono: 0,
                    last_clients_mono: 0,
                    first_clients_wall: None,
                    pids: s.pid.into_iter().collect(),
                    heard: false,
                    last_counters: None,
                    windows: VecDeque::new(),
                    log: None,
                    log_why_not: "Redis's configuration is not known".into(),
                    log_lines: Vec::new(),
                }
            })
            .collect();
        Self {
            servers,
            redis_pids,
            proc_events: Vec::new(),
            held: VecDeque::new(),
            last_close_mono: 0,
            started_mono: monotonic_ns(),
        }
    }

    /// Takes what the pollers and logs have produced; returns status changes to report.
    pub fn poll_sources(&mut self) -> Vec<RedisStatus> {
        let mut out = Vec::new();
        let now_mono = monotonic_ns();
        // CLIENT LIST is only worth its cost while connections are ending, in the first
        // half minute (an incident is often under way when the capture starts), or to
        // keep last-known entries no older than 5 s. The poller bounds it further.
        let recent = |t: u64| now_mono.saturating_sub(t) < 30_000_000_000;
        let busy = recent(self.last_close_mono) || recent(self.started_mono);
        for s in &mut self.servers {
            let stale = now_mono.saturating_sub(s.last_clients_mono) > 5_000_000_000;
            s.wanted.store(busy || stale, Ordering::Relaxed);
            let mut msgs = Vec::new();
            if let Some(p) = &s.poller {
                while let Some(m) = p.try_recv() {
                    msgs.push(m);
                }
            }
            for m in msgs {
                match m {
                    PollerMsg::Connected { config, info } => {
                        // INFO's pid is the server's own namespace's: the host's is
                        // what /proc, the kernel and the operator use.
                        let pid = info
                            .get("process_id")
                            .and_then(|v| v.parse().ok())
                            .and_then(|p| {
                                crate::sources::procinfo::host_pid(
                                    p,
                                    s.netns,
                                    s.pid.or(s.pids.first().copied()),
                                )
                            });
                        let run_id = info.get("run_id").cloned();
                        let restarted = (s.pid.is_some() && s.pid != pid)
                            || (s.run_id.is_some() && s.run_id != run_id);
                        s.pid = pid;
                        s.run_id = run_id;
                        s.connected = true;
                        s.heard = true;
                        s.down_reason = None;
                        s.config = Some(config);
                        if let Some(p) = pid
                            && !s.pids.contains(&p)
                        {
                            s.pids.push(p);
                        }
                        // The counters' baseline: this INFO (a restart resets them).
                        s.last_counters =
                            Some((monotonic_ns(), SystemTime::now(), counters(&info)));
                        if s.log.is_none() || restarted {
                            s.open_log();
                        }
                        let id = ServerId::from_info(&info);
                        out.push(RedisStatus {
                            time: Some(SystemTime::now()),
                            port: s.port,
                            netns: s.netns,
                            status: RedisState::Connected,
                            pid,
                            server: id.as_ref().map(|i| i.server.as_str().to_string()),
                            version: id.map(|i| i.version),
                            uptime_s: info.get("uptime_in_seconds").and_then(|v| v.parse().ok()),
                            restarted,
                            error: None,
                            logfile: s.config.as_ref().and_then(|c| c.logfile.clone()),
                            log_readable: s.log.is_some(),
                            log_note: (s.log.is_none() && !s.log_why_not.is_empty())
                                .then(|| s.log_why_not.clone()),
                            version_check: None,
                        });
                    }
                    PollerMsg::Snapshot(snap) => s.on_snapshot(snap),
                    PollerMsg::Down { error } => {
                        s.heard = true;
                        let was = s.connected;
                        s.connected = false;
                        s.down_reason = Some(error.clone());
                        if was || s.last_poll_mono == 0 {
                            out.push(RedisStatus {
                                time: Some(SystemTime::now()),
                                port: s.port,
                                netns: s.netns,
                                status: RedisState::Unavailable,
                                pid: s.pid,
                                server: None,
                                version: None,
                                uptime_s: None,
                                restarted: false,
                                error: Some(error),
                                logfile: None,
                                log_readable: s.log.is_some(),
                                log_note: None,
                                version_check: None,
                            });
                            // Report a down server once, until it is back.
                            s.last_poll_mono = now_mono;
                        }
                    }
                }
            }
            if let Some(t) = s.log.as_mut() {
                s.log_lines.extend(t.poll());
            }
            let cutoff = SystemTime::now() - KEEP;
            s.log_lines.retain(|l| l.time.is_none_or(|t| t >= cutoff));
            if s.log_lines.len() > 10_000 {
                let extra = s.log_lines.len() - 10_000;
                s.log_lines.drain(..extra);
            }
        }
        out
    }

    /// Waits, at most `limit`, until every Redis has answered (its first snapshot taken)
    /// or is known to be unavailable, so that a capture's first closes have their
    /// evidence. `tick` runs every few milliseconds meanwhile (the caller drains the
    /// kernel's ring buffer there).
    pub fn wait_ready(&mut self, limit: Duration, mut tick: impl FnMut()) -> Vec<RedisStatus> {
        let end = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            out.extend(self.poll_sources());
            let ready = self.servers.iter().all(|s| {
                s.poller.is_none()
                    || (s.connected && s.last_clients_mono > 0)
                    || (!s.connected && s.heard)
            });
            if ready || std::time::Instant::now() >= end {
                return out;
            }
            tick();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn process_event(&mut self, p: &ProcessEvent) {
        self.proc_events.push(p.clone());
        let cutoff = SystemTime::now() - KEEP;
        self.proc_events
            .retain(|e| e.time.is_none_or(|t| t >= cutoff));
    }

    /// Takes a connection's kernel record, to be classified when its evidence is in.
    pub fn push(&mut self, c: Box<KernelClose>, code_path: Option<RedisCodePath>) {
        self.last_close_mono = self.last_close_mono.max(c.close_ns);
        self.held.push_back((c, code_path));
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The traced server a connection is to: same port, same namespace. Where either
    /// namespace is unknown, the port alone, if it names one server.
    fn server_index(&self, c: &KernelClose) -> Option<usize> {
        let port = c.server.port();
        let exact = self
            .servers
            .iter()
            .position(|s| s.port == port && s.netns.is_some() && s.netns == c.netns);
        exact.or_else(|| {
            let loose: Vec<usize> = self
                .servers
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.port == port && (s.netns.is_none() || c.netns.is_none() || s.netns == c.netns)
                })
                .map(|(i, _)| i)
                .collect();
            match loose.as_slice() {
                [one] => Some(*one),
                _ => None,
            }
        })
    }

    /// Classifies and returns every held record whose evidence is complete (all of them
    /// when `all`, at the end of the capture).
    pub fn release(&mut self, all: bool) -> Vec<ConnectionClosed> {
        let now = monotonic_ns();
        let mut ready = Vec::new();
        while let Some((c, _)) = self.held.front() {
            let mono = &c.close_ns;
            let server_side = c.closed_by_side == Some(Side::Server);
            let idx = self.server_index(c);
            let waiting_for_poll = server_side
                && idx.is_some_and(|i| {
                    let s = &self.servers[i];
                    s.connected && s.last_poll_mono < *mono
                });
            let too_long = now.saturating_sub(*mono) > MAX_HOLD.as_nanos() as u64;
            // Give process events and log lines a moment even when Redis is down.
            let settle = now.saturating_sub(*mono) > 300_000_000;
            if !all && ((waiting_for_poll && !too_long) || (server_side && !settle)) {
                break;
            }
            if let Some((c, path)) = self.held.pop_front() {
                ready.push((c, path, idx));
            }
        }
        if ready.is_empty() {
            return Vec::new();
        }
        let mut verdicts: Vec<Verdict> = ready
            .iter()
            .map(|(c, path, idx)| self.classify_one(c, path.as_ref(), *idx))
            .collect();
        // Counter windows: Redis closes nothing else explained, per server and window.
        let mut groups: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        for (i, (c, _, idx)) in ready.iter().enumerate() {
            if c.closed_by_side != Some(Side::Server) {
                continue;
            }
            if let Some(si) = idx
                && let Some(wi) = self.servers[*si].window_index(c.close_ns)
            {
                groups.entry((*si, wi)).or_default().push(i);
            }
        }
        let mut slots: Vec<Option<&mut Verdict>> = verdicts.iter_mut().map(Some).collect();
        for ((si, wi), members) in groups {
            let w = &self.servers[si].windows[wi];
            let mut refs: Vec<&mut Verdict> =
                members.iter().filter_map(|&i| slots[i].take()).collect();
            classify::apply_counters(&w.w, &mut refs, w.killer.as_deref());
        }
        ready
            .into_iter()
            .zip(verdicts)
            .map(|((c, path, idx), v)| {
                let client = idx
                    .and_then(|si| self.servers[si].clients.get(&c.client))
                    .map(|(e, t)| view(e, *t));
                let server = idx.map(|si| self.servers[si].label.clone());
                record::connection_closed(*c, path, v, client, server)
            })
            .collect()
    }

    fn classify_one(
        &self,
        c: &KernelClose,
        code_path: Option<&RedisCodePath>,
        idx: Option<usize>,
    ) -> Verdict {
        let empty = Vec::new();
        let (log, client, config, redis_view, log_view) = match idx.map(|i| &self.servers[i]) {
            Some(s) => (
                &s.log_lines,
                s.clients.get(&c.client).map(|(e, t)| (e, *t)),
                s.config.as_ref(),
                match &s.down_reason {
                    None => Ok(()),
                    Some(r) => Err(r.as_str()),
                },
                if s.log.is_some() {
                    Ok(())
                } else {
                    Err(s.log_why_not.as_str())
                },
            ),
            None => (
                &empty,
                None,
                None,
                Err("not a traced server"),
                Err("not a traced server"),
            ),
        };
        // The pids of this port's Redis: another Redis on the host exiting explains
        // nothing here.
        let pids = match idx.map(|i| &self.servers[i]) {
            Some(s) if !s.pids.is_empty() => s.pids.as_slice(),
            _ => self.redis_pids.as_slice(),
        };
        let first_client_list = idx.and_then(|i| self.servers[i].first_clients_wall);
        let timeout_changed = idx.and_then(|i| self.servers[i].timeout_changed);
        let v = classify::classify(
            c,
            &Facts {
                code_path,
                redis_pids: pids,
                first_client_list,
                proc_events: &self.proc_events,
                log,
                client,
                config,
                timeout_changed,
                redis_view,
                log_view,
                missing_probes: classify::missing_probes(),
            },
        );
        debug_assert!(v.cause != Cause::Unknown || !v.evidence.is_empty());
        v
    }

    pub fn stop(self) {
        for s in self.servers {
            if let Some(p) = s.poller {
                p.stop();
            }
        }
    }
}
