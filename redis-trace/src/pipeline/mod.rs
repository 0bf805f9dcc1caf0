//! `redis-trace capture`'s pipeline: attach, collect, assemble, enrich, classify, write,
//! and end cleanly.
//!
//! - this file: the capture loop ([`run`]), a [`Capture`] struct that owns its state;
//! - [`enrich`]: Redis's view and the kernel's process events for each ended connection;
//! - [`record`]: the `connection_closed` record, built once from all of that;
//! - [`governor`]: the uprobes paused in a storm of connection ends;
//! - [`servers`]: which servers are traced, in which network namespaces.
pub mod enrich;
pub mod governor;
pub mod record;
pub mod servers;

pub use servers::Scope;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use self::enrich::{Enricher, RedisSource};
use self::governor::UprobeGovernor;
use crate::classify::code_paths;
use crate::kernel::assemble::{Assembled, Assembler, Owners, RedisRaw};
use crate::kernel::decode::{self, comm};
use crate::kernel::redis_elf::ClientLayout;
use crate::kernel::ring::{self, RingReader};
use crate::kernel::{load, uprobes};
use crate::output::{self, JsonTarget, Writers};
use crate::schema::{
    CaptureEnded, CaptureStarted, ConnectionClosed, Counts, EndedBy, OomInfo, PortSource,
    ProbeStatus, ProcessEvent, ProcessEventKind, ProcessRef, Record, RedisCodePath, RedisStatus,
    RedisUprobes, SCHEMA_VERSION, SignalInfo, TracedPort, TracerCpu,
};
use crate::signals::{self, Signals};
use crate::sources::procinfo::{self, SERVER_NAMES};
use crate::sources::redis::{ServerId, ServerKind, Target};
use crate::stderr;
use crate::time::{Clock, monotonic_ns};
use redis_trace_ebpf::{ProcEvent, how, proc_event, side};

/// How long records about one connection are held for their RST/error companions.
const GRACE: Duration = Duration::from_millis(250);
/// How often the ring buffer is drained when the kernel does not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct Options {
    /// Ports given on the command line; empty means discover.
    pub ports: Vec<u16>,
    /// `--pid`, `--netns` or `--container`: trace only there.
    pub scope: Option<Scope>,
    pub duration: Option<Duration>,
    pub json: Option<JsonTarget>,
    pub quiet: bool,
    /// Where to read Redis's own view; `None` turns Redis evidence off.
    pub redis: Option<RedisAccess>,
    /// Attach uprobes to redis-server (which code path freed each client).
    pub uprobes: bool,
    /// Write a postmortem report here at the end (from the JSON file).
    pub report: Option<std::path::PathBuf>,
    pub redact: bool,
    /// When to color the timeline.
    pub color: crate::output::ColorChoice,
}

/// How to reach the traced Redis servers (read-only).
#[derive(Debug, Clone, Default)]
pub struct RedisAccess {
    /// redis://[user@]host:port/ ; default: each traced port on 127.0.0.1.
    pub url: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub tls: crate::sources::redis::tls::TlsSettings,
}

/// Redis servers running here, in every namespace, and the pids whose OOM kills,
/// signals and exits matter: the traced servers', and (unscoped) every process with a
/// Redis server's name.
fn redis_processes(scoped: bool) -> (Vec<procinfo::RedisServer>, Vec<u32>) {
    let found = servers::discover();
    let mut pids: Vec<u32> = found.iter().map(|s| s.process.pid).collect();
    if !scoped && let Ok(all) = procinfo::processes_named(&SERVER_NAMES) {
        pids.extend(all.iter().map(|p| p.pid));
    }
    pids.sort_unstable();
    pids.dedup();
    (found, pids)
}

/// Refuses early, with what to do, when the process cannot load BPF programs.
fn check_privileges() -> Result<()> {
    // CAP_SYS_ADMIN = 21, CAP_PERFMON = 38, CAP_BPF = 39 (linux/capability.h).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    if has(21) || (has(38) && has(39)) {
        return Ok(());
    }
    bail!(
        "redis-trace needs root (or CAP_BPF and CAP_PERFMON) to load its kernel programs; \
         run it with sudo"
    )
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn owners_at_start(ports: &[u16], traced: &[TracedPort]) -> Owners {
    let namespaces: Vec<(u32, u32)> = traced
        .iter()
        .filter_map(|t| Some((t.netns?, t.process.as_ref()?.pid)))
        .collect();
    procinfo::connection_owners_in(&namespaces, ports)
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            (
                (
                    o.netns.unwrap_or(redis_trace_ebpf::NO_NETNS),
                    o.local,
                    o.remote,
                ),
                ProcessRef {
                    pid: o.process.pid,
                    comm: o.process.comm,
                },
            )
        })
        .collect()
}

/// What a capture wrote first and last.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: CaptureStarted,
    pub ended: CaptureEnded,
}

/// Runs a capture until a signal (see [`Signals`]: installed by the caller before
/// anything else), `--duration`, or an error.
pub async fn run(opts: Options, mut signals: Signals) -> Result<Outcome> {
    let (mut capture, backlog) = Capture::start(&opts)?;
    for item in backlog {
        capture.flow.record(&item)?;
    }
    let ending = capture.follow(&opts, &mut signals).await?;
    capture.finish(ending, &signals).await
}

/// A running capture: the kernel programs, the records on their way, the outputs.
struct Capture {
    started: Instant,
    ebpf: aya::Ebpf,
    /// The ring buffer's records, copied out by a thread of their own.
    ring: RingReader,
    unavailable: Vec<ProbeStatus>,
    begin: CaptureStarted,
    /// Uprobes: each probed Redis's links, and every pid probed so far.
    links: HashMap<u32, Vec<uprobes::Link>>,
    probed: HashSet<u32>,
    governor: UprobeGovernor,
    /// The capture loop's CPU by stage.
    cpu: StageClock,
    flow: Flow,
}

/// The capture thread's CPU time, charged to one stage after another.
#[derive(Default)]
struct StageClock {
    last_ns: u64,
    cpu: TracerCpu,
}

/// This thread's time on CPU, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

impl StageClock {
    /// Charges the CPU since the last charge to `stage`.
    fn charge(&mut self, stage: fn(&mut TracerCpu) -> &mut f64) {
        let now = thread_cpu_ns();
        *stage(&mut self.cpu) += now.saturating_sub(self.last_ns) as f64 / 1e6;
        self.last_ns = now;
    }

    /// The other threads' time on CPU, by name (their schedstat).
    fn other_threads(&mut self) {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() }.to_string();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for t in tasks.flatten() {
            if t.file_name().to_string_lossy() == me {
                continue;
            }
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let ns: u64 = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            *self
                .cpu
                .threads
                .entry(name.trim().to_string())
                .or_insert(0.0) += ns as f64 / 1e6;
        }
    }
}

/// Where the kernel's records go: assembled, enriched, classified, written.
struct Flow {
    clock: Clock,
    /// Pids of the Redis processes whose process events are reported as Redis's.
    watched: HashSet<u32>,
    assembler: Assembler,
    enricher: Enricher,
    writers: Writers,
    counts: Counts,
    bad_records: u64,
    /// Connection ends handed over by the kernel (the uprobes' cost follows them).
    closes_seen: u64,
    /// The same ends, by whether Redis began them (the uprobes' governor).
    ends: governor::Ends,
    /// Each probed Redis's symbols, to name its code paths.
    symbols: HashMap<u32, uprobes::Symbols>,
    assembled: Vec<Assembled>,
    /// More than one Redis is traced: the timeline names each line's.
    several_servers: bool,
}

impl Capture {
    /// Attaches everything and writes `capture_started`; returns the kernel records that
    /// arrived meanwhile, to be taken first.
    fn start(opts: &Options) -> Result<(Self, Vec<Vec<u8>>)> {
        let started = Instant::now();
        check_privileges()?;
        // With --port alone, attach first and look at /proc afterwards: the probes are
        // live within milliseconds of the start, however many processes the host runs.
        // A scope is resolved first: the kernel filters by it.
        let scoped = opts.scope.is_some();
        let mut discovered = (opts.ports.is_empty() || scoped).then(|| redis_processes(scoped));
        let resolved = match &opts.scope {
            Some(scope) => Some(servers::resolve(
                scope,
                discovered
                    .as_ref()
                    .map(|d| d.0.as_slice())
                    .unwrap_or_default(),
            )?),
            None => None,
        };
        if let Some(r) = &resolved
            && let Some(d) = &mut discovered
        {
            // Only the scope's servers' process events matter.
            let keep: Vec<u32> =
                d.0.iter()
                    .filter(|s| s.netns.is_some_and(|n| r.netns.contains(&n)))
                    .filter(|s| r.pid.is_none_or(|p| p == s.process.pid))
                    .map(|s| s.process.pid)
                    .collect();
            d.1.retain(|p| keep.contains(p));
        }
        let (mut ports, port_source) = servers::choose(
            &opts.ports,
            resolved.as_ref(),
            discovered
                .as_ref()
                .map(|d| d.0.as_slice())
                .unwrap_or_default(),
        )?;
        let port_numbers = servers::port_numbers(&ports);

        let mut notes = Vec::new();
        let root = load::tracefs_root(&mut notes)?;
        for n in &notes {
            stderr::note(n);
        }
        let proc_names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let load::Loaded {
            mut ebpf,
            mut ring,
            attached,
            unavailable,
            reasons,
        } = load::load(
            &root,
            &load::Settings {
                ports: &port_numbers,
                // A scoped capture watches its servers by pid, not every Redis by name.
                proc_names: if scoped { &[] } else { &proc_names },
                netns_scope: resolved.as_ref().map(|r| r.netns.as_slice()),
            },
        )?;
        let live_ms = started.elapsed().as_millis();
        let (found, watched) = match discovered {
            Some(d) => d,
            None => redis_processes(scoped),
        };
        if port_source == PortSource::CommandLine {
            (ports, _) = servers::choose(&opts.ports, resolved.as_ref(), &found)?;
        }
        load::watch_pids(&mut ebpf, &watched)?;
        // Uprobes on each traced Redis: which of its code paths freed each client.
        let mut redis_probes = Vec::new();
        let mut symbols = HashMap::new();
        let mut links = HashMap::new();
        if opts.uprobes {
            let mut pids: Vec<u32> = ports
                .iter()
                .filter_map(|p| p.process.as_ref().map(|p| p.pid))
                .collect();
            pids.sort_unstable();
            pids.dedup();
            for pid in pids {
                let (report, probes) = uprobes::attach(&mut ebpf, pid);
                if let Some(why) = &report.unavailable {
                    stderr::warn(&format!("no uprobes on redis-server pid {pid}: {why}"));
                }
                if let Some((s, l)) = probes {
                    symbols.insert(pid, s);
                    links.insert(pid, l);
                }
                redis_probes.push(report);
            }
        }
        let own_netns = procinfo::own_netns();
        for p in &ports {
            let mut whose = Vec::new();
            if let Some(ns) = p.netns {
                whose.push(if Some(ns) == own_netns {
                    format!("netns {ns}, the host's")
                } else {
                    format!("netns {ns}")
                });
            }
            if let Some(c) = &p.container {
                whose.push(c.to_string());
            }
            let whose = if whose.is_empty() {
                String::new()
            } else {
                format!(", {}", whose.join(", "))
            };
            match &p.process {
                Some(pr) => stderr::note(&format!(
                    "tracing port {} ({} pid {}{whose})",
                    p.port, pr.comm, pr.pid
                )),
                None => stderr::note(&format!(
                    "tracing port {} (no Redis process listens on it now{whose})",
                    p.port
                )),
            }
        }
        for u in &unavailable {
            stderr::warn(&format!(
                "{} unavailable ({}): {}",
                u.probe,
                u.why.as_deref().unwrap_or("?"),
                u.cost.as_deref().unwrap_or("?")
            ));
        }
        let owners = owners_at_start(&port_numbers, &ports);
        let open_at_start = owners
            .keys()
            .filter(|(_, l, _)| port_numbers.contains(&l.port()))
            .count();

        let clock = Clock::new();
        // Redis's own view first (bounded): a close in the capture's first second
        // deserves its CLIENT LIST entry and log line too. The kernel's records wait in a
        // backlog.
        let mut enricher = Enricher::new(redis_sources(opts, &ports, &found)?, watched.clone());
        let mut backlog: Vec<Vec<u8>> = Vec::new();
        let early_status = enricher.wait_ready(Duration::from_millis(1500), || {
            while let Some(item) = ring.next() {
                backlog.push(item.to_vec());
            }
        });
        let begin = CaptureStarted {
            schema_version: SCHEMA_VERSION,
            time: Some(clock.wall(monotonic_ns())),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: hostname(),
            kernel: kernel_release(),
            ports,
            port_source,
            probes_attached: attached,
            probes_unavailable: unavailable.clone(),
            open_connections_at_start: open_at_start,
            redis_uprobes: redis_probes,
        };
        let probed: HashSet<u32> = begin.redis_uprobes.iter().map(|r| r.pid).collect();
        let several_servers = {
            let mut s: Vec<_> = begin.ports.iter().map(TracedPort::server_ref).collect();
            s.sort_by_key(|r| (r.netns, r.pid));
            s.dedup();
            s.len() > 1
        };
        // Outputs are opened only now that every check passed: a capture that could not
        // start leaves an existing file as it was.
        let mut writers = Writers::open(opts.json.as_ref(), opts.quiet, opts.color)?;
        // Every probe is live now: scripts may wait for this line.
        writers.json(&Record::CaptureStarted(begin.clone()))?;
        writers.flush()?;
        stderr::note(&format!(
            "capturing ({} probes attached, live {live_ms} ms after start); Ctrl-C to stop",
            begin.probes_attached.len(),
        ));
        let ring = RingReader::start(ring).context("starting the ring buffer's reader thread")?;
        let mut capture = Self {
            started,
            ebpf,
            ring,
            unavailable,
            begin,
            links,
            probed,
            governor: UprobeGovernor::new(),
            cpu: StageClock::default(),
            flow: Flow {
                clock,
                watched: watched.iter().copied().collect(),
                assembler: Assembler::new(GRACE, reasons, clock, owners),
                enricher,
                writers,
                counts: Counts::default(),
                bad_records: 0,
                closes_seen: 0,
                ends: governor::Ends::default(),
                symbols,
                assembled: Vec::new(),
                several_servers,
            },
        };
        let mut early_status = early_status;
        capture.check_versions(&mut early_status);
        capture.flow.write_status(early_status)?;
        capture.cpu.charge(|c| &mut c.start);
        Ok((capture, backlog))
    }

    /// Follows the kernel's records until a signal or the `--duration`.
    async fn follow(&mut self, opts: &Options, signals: &mut Signals) -> Result<EndedBy> {
        let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
        let sleep_until = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_until);
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = Instant::now();
        loop {
            tokio::select! {
                kind = signals.stopped() => return Ok(match kind {
                    signals::Kind::Interrupt => EndedBy::Interrupt,
                    signals::Kind::Terminate => EndedBy::Terminate,
                }),
                _ = &mut sleep_until => return Ok(EndedBy::Duration),
                batch = self.ring.next() => {
                    self.cpu.charge(|c| &mut c.other);
                    if let Some(b) = batch {
                        self.flow.records(&b)?;
                    }
                }
                _ = tick.tick() => self.cpu.charge(|c| &mut c.other),
            }
            self.drain()?;
            self.cpu.charge(|c| &mut c.decode);
            self.flow.assemble(monotonic_ns())?;
            self.cpu.charge(|c| &mut c.assemble);
            let statuses = self.flow.enricher.poll_sources();
            let mut statuses = statuses;
            self.watch_restarted(&statuses);
            self.cpu.charge(|c| &mut c.redis);
            if opts.uprobes {
                self.follow_uprobes(&statuses)?;
                self.check_versions(&mut statuses);
            }
            self.flow.write_status(statuses)?;
            self.cpu.charge(|c| &mut c.other);
            let closed = self.flow.enricher.release(false);
            self.cpu.charge(|c| &mut c.classify);
            self.flow.write_closed(closed)?;
            self.flow.writers.flush()?;
            self.cpu.charge(|c| &mut c.write);
            if self.flow.writers.status_allowed() && last_status.elapsed() >= Duration::from_secs(1)
            {
                last_status = Instant::now();
                let lost = load::counters(&self.ebpf).map_or(0, |k| k.ring_full);
                let line = output::status_line(self.started.elapsed(), &self.flow.counts, lost);
                self.flow.writers.status(&line);
            }
        }
    }

    /// A traced Redis that restarted has a new pid: its OOM kill, signals and exit are
    /// watched too (a scoped capture watches by pid only).
    fn watch_restarted(&mut self, statuses: &[RedisStatus]) {
        for pid in statuses.iter().filter_map(|s| s.pid) {
            if self.flow.watched.insert(pid)
                && let Err(e) = load::watch_pids(&mut self.ebpf, &[pid])
            {
                stderr::warn(&format!("not watching restarted Redis pid {pid}: {e:#}"));
            }
        }
    }

    /// Probes a Redis that (re)started during the capture (later, if the probes are
    /// paused for churn), and pauses or resumes the uprobes.
    fn follow_uprobes(&mut self, statuses: &[RedisStatus]) -> Result<()> {
        for pid in statuses.iter().filter_map(|s| s.pid) {
            if !self.probed.insert(pid) {
                continue;
            }
            if self.governor.paused {
                self.governor.pending.push(pid);
                continue;
            }
            let (report, attached) = uprobes::attach(&mut self.ebpf, pid);
            if let Some((s, l)) = attached {
                self.flow.symbols.insert(pid, s);
                self.links.insert(pid, l);
            }
            self.flow.writers.json(&Record::RedisUprobes(RedisUprobes {
                time: Some(self.flow.clock.wall(monotonic_ns())),
                probes: Some(report),
                note: None,
            }))?;
        }
        if let Some(note) = self
            .governor
            .tick(self.flow.ends, &mut self.links, &mut self.ebpf)
        {
            self.flow.writers.json(&Record::RedisUprobes(RedisUprobes {
                time: Some(self.flow.clock.wall(monotonic_ns())),
                probes: None,
                note: Some(note.clone()),
            }))?;
            stderr::note(&note);
        }
        Ok(())
    }

    /// Compares the version INFO reports with the one the binary's `.rodata` gave the
    /// uprobes. When they differ, INFO is the server's own word: the client layout is
    /// taken for INFO's version (or flags are no longer read), and the status says so.
    fn check_versions(&mut self, statuses: &mut [RedisStatus]) {
        for st in statuses.iter_mut() {
            let (Some(pid), Some(server), Some(version)) = (
                st.pid,
                st.server.as_deref().and_then(ServerKind::from_name),
                st.version.clone(),
            ) else {
                continue;
            };
            let Some(syms) = self.flow.symbols.get_mut(&pid) else {
                continue;
            };
            let info = ServerId { server, version };
            if syms.version.as_ref() == Some(&info) || syms.version_checked {
                continue;
            }
            syms.version_checked = true;
            let said = syms.version.as_ref().map_or_else(
                || "no version".to_string(),
                |v| format!("{} {}", v.server, v.version),
            );
            let from_dwarf = syms.layout.as_ref().is_some_and(|l| l.from_dwarf);
            let what = if from_dwarf {
                "the client layout stays the binary's DWARF's".to_string()
            } else {
                syms.layout = ClientLayout::of_version(&info).ok();
                match uprobes::set_layout(&mut self.ebpf, pid, syms.layout.as_ref()) {
                    Ok(()) => match &syms.layout {
                        Some(l) => format!("client flags are now read by {}", l.source),
                        None => "client flags are no longer read".to_string(),
                    },
                    Err(e) => format!("updating the client layout failed: {e:#}"),
                }
            };
            st.version_check = Some(format!(
                "INFO says {} {}; the binary's .rodata said {said}: {what}",
                info.server, info.version
            ));
        }
    }

    /// Collects what the kernel still holds, then everything pending, and writes
    /// `capture_ended`.
    async fn finish(mut self, ending: EndedBy, signals: &Signals) -> Result<Outcome> {
        // The other threads' CPU while they still run (the ring's reader is stopped next).
        self.cpu.other_threads();
        self.ring.stop();
        self.drain()?;
        self.flow.assemble(u64::MAX)?;
        // Redis-side closes wait for the poll after them: give it its moment, bounded.
        let until = Instant::now() + Duration::from_millis(1500);
        // A second Ctrl-C cuts this wait short: what is held is written at once.
        while self.flow.enricher.held() > 0 && Instant::now() < until && signals.count() < 2 {
            let statuses = self.flow.enricher.poll_sources();
            self.flow.write_status(statuses)?;
            let closed = self.flow.enricher.release(false);
            self.flow.write_closed(closed)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let statuses = self.flow.enricher.poll_sources();
        self.flow.write_status(statuses)?;
        let closed = self.flow.enricher.release(true);
        self.flow.write_closed(closed)?;
        self.flow.enricher.stop();
        self.cpu.charge(|c| &mut c.classify);
        let kc = load::counters(&self.ebpf).unwrap_or_default();
        let end = CaptureEnded {
            time: Some(self.flow.clock.wall(monotonic_ns())),
            duration_s: self.started.elapsed().as_secs_f64(),
            ended_by: ending,
            counts: self.flow.counts,
            lost_events: kc.ring_full,
            untracked_connections: kc.conn_map_full,
            bad_records: self.flow.bad_records + kc.read_failed,
            connections_without_start: self.flow.assembler.without_start,
            own_connections: self.flow.assembler.own_skipped,
            own_connections_unmarked: kc.own_socks_full,
            probes_unavailable: self.unavailable.iter().map(|u| u.probe.clone()).collect(),
            tracer_cpu_ms: std::mem::take(&mut self.cpu.cpu),
        };
        self.flow.writers.json(&Record::CaptureEnded(end.clone()))?;
        self.flow.writers.flush()?;
        // Dropping the capture detaches every program.
        Ok(Outcome {
            started: self.begin,
            ended: end,
        })
    }

    /// Takes every record the ring's reader has copied out so far.
    fn drain(&mut self) -> Result<()> {
        while let Some(b) = self.ring.try_next() {
            self.flow.records(&b)?;
        }
        Ok(())
    }
}

impl Flow {
    fn records(&mut self, batch: &ring::Batch) -> Result<()> {
        for r in batch.records() {
            self.record(r)?;
        }
        Ok(())
    }

    /// One record from the ring buffer.
    fn record(&mut self, bytes: &[u8]) -> Result<()> {
        match decode::Record::decode(bytes) {
            Ok(decode::Record::Closed(c)) => {
                self.closes_seen += 1;
                if c.observer == side::SERVER
                    && c.in_task != 0
                    && matches!(c.how, how::SENT_FIN | how::ABORTED)
                {
                    self.ends.by_redis += 1;
                } else {
                    self.ends.other += 1;
                }
                self.assembler.push_closed(c);
            }
            Ok(decode::Record::Sock(s)) => self.assembler.push_sock(s),
            Ok(decode::Record::Packets(p)) => self.assembler.push_packets(p),
            Ok(decode::Record::Proc(p)) => {
                let ev = process_event(&p, &self.watched, &self.clock);
                self.enricher.process_event(&ev);
                self.counts.process_events += 1;
                self.writers.text(&output::process_line(&ev))?;
                self.writers.json(&Record::ProcessEvent(ev))?;
            }
            Err(_) => self.bad_records += 1,
        }
        Ok(())
    }

    /// Connections whose grace period is over go to the enricher, named by their Redis
    /// code path; resets are written at once.
    fn assemble(&mut self, now_ns: u64) -> Result<()> {
        self.assembler.flush(now_ns, &mut self.assembled);
        for a in std::mem::take(&mut self.assembled) {
            match a {
                Assembled::Closed(c) => {
                    let path = c
                        .pid
                        .and_then(|pid| code_path(c.redis, self.symbols.get(&pid)?));
                    self.enricher.push(c, path);
                }
                Assembled::Reset(r) => {
                    self.counts.resets += 1;
                    if self.writers.wants_text() {
                        self.writers.text(&output::reset_line(&r))?;
                    }
                    self.writers.json(&Record::Reset(r))?;
                }
            }
        }
        Ok(())
    }

    fn write_closed(&mut self, closed: Vec<ConnectionClosed>) -> Result<()> {
        for c in closed {
            self.counts.connections_closed += 1;
            // Keyed by name as `capture_ended` writes it; a name is allocated once.
            match self.counts.by_cause.get_mut(c.cause.as_str()) {
                Some(n) => *n += 1,
                None => {
                    self.counts.by_cause.insert(c.cause.as_str().to_string(), 1);
                }
            }
            // The timeline line is built only when it is written (not with --quiet or
            // --json -): formatting it was a quarter of the tracer's CPU in a storm.
            if self.writers.wants_text() {
                let mut line = output::closed_line(&c, self.writers.color);
                // With several servers traced, each line says whose connection it was.
                if self.several_servers
                    && let Some(server) = &c.redis_server
                {
                    line.push_str(&format!(
                        "\n              server: {}",
                        output::escape_name(&server.to_string())
                    ));
                }
                self.writers.text(&line)?;
            }
            self.writers.json(&Record::ConnectionClosed(Box::new(c)))?;
        }
        Ok(())
    }

    fn write_status(&mut self, statuses: Vec<RedisStatus>) -> Result<()> {
        for st in statuses {
            // The version and the error text are Redis's words: stderr escapes them.
            stderr::note(&output::redis_status_line(&st));
            self.writers.json(&Record::RedisStatus(st))?;
        }
        Ok(())
    }
}

/// Names the Redis functions behind a close from the closing process's own symbols.
fn code_path(raw: RedisRaw, syms: &uprobes::Symbols) -> Option<RedisCodePath> {
    if raw.decided_in == 0 {
        return None;
    }
    let name = |a: u64| {
        syms.name(a)
            .map_or_else(|| format!("{a:#x}"), str::to_string)
    };
    // A pass-through names nothing itself: the function one frame up decided, when the
    // pass-through keeps a frame pointer (so that word is its return address).
    let named = |addr: u64, caller: u64| {
        let here = name(addr);
        let up =
            (code_paths::passes_through(&here) && caller != 0 && syms.keeps_frame_pointer(addr))
                .then(|| syms.name(caller).map(str::to_string))
                .flatten();
        (here, up)
    };
    let (decided_in, decided_via) = named(raw.decided_in, raw.decided_in_caller);
    let (freed_from, freed_via) = named(raw.freed_from, raw.freed_from_caller);
    let (decided_in, via) = match (decided_via, freed_via) {
        (Some(up), _) => (up, Some(decided_in)),
        (None, Some(up)) if raw.decided_in == raw.freed_from => (up, Some(decided_in)),
        _ => (decided_in, None),
    };
    Some(RedisCodePath {
        decided_in,
        via,
        freed_from,
        client_flags: match (&syms.layout, raw.client_flags) {
            (Some(l), f) if f != redis_trace_ebpf::NO_FLAGS => {
                Some(l.flag_names(f).into_iter().map(str::to_string).collect())
            }
            _ => None,
        },
    })
}

fn redis_sources(
    opts: &Options,
    ports: &[TracedPort],
    found: &[procinfo::RedisServer],
) -> Result<Vec<RedisSource>> {
    let numbers = servers::port_numbers(ports);
    let own_netns = procinfo::own_netns();
    ports
        .iter()
        .map(|traced| {
            let port = traced.port;
            let ports = &numbers;
            let pid = traced.process.as_ref().map(|p| p.pid);
            let server = found
                .iter()
                .find(|s| Some(s.process.pid) == pid && s.netns == traced.netns);
            // A server in another namespace is reached from inside it.
            let elsewhere = traced.netns.filter(|ns| Some(*ns) != own_netns);
            let target = match &opts.redis {
                None => None,
                Some(access) => {
                    // A --redis-url names one server: use it for the port it names, as
                    // given (from redis-trace's own namespace).
                    let url = access
                        .url
                        .as_deref()
                        .filter(|u| ports.len() == 1 || Target::url_port(u) == Some(port));
                    let local = server.map(|s| servers::local_address(&s.listeners, port));
                    let default_url = local.map(|a| format!("redis://{a}/"));
                    let target = Target::new(
                        url.or(default_url.as_deref()),
                        port,
                        access.password_file.as_deref(),
                    )?
                    .with_tls(&access.tls)?;
                    let target = match (url, elsewhere, pid) {
                        (None, Some(ns), Some(pid)) => match procinfo::NetnsHandle::open(pid, ns) {
                            Ok(h) => target.in_netns(Some(h)),
                            Err(e) => {
                                stderr::warn(&format!(
                                    "Redis on port {port} (pid {pid}) is in network namespace \
                                     {ns}, which cannot be entered ({e:#}): its own view is \
                                     not read, kernel evidence only"
                                ));
                                return Ok(RedisSource {
                                    port,
                                    netns: traced.netns,
                                    label: traced.server_ref(),
                                    target: None,
                                    pid: Some(pid),
                                    off_reason: Some(format!(
                                        "its network namespace {ns} cannot be entered: {e:#}"
                                    )),
                                });
                            }
                        },
                        _ => target,
                    };
                    // The operator named this server (--port, --pid, --redis-url): trusted.
                    let named = !opts.ports.is_empty()
                        || url.is_some()
                        || matches!(opts.scope, Some(servers::Scope::Pid(_)));
                    Some(if named {
                        target
                    } else {
                        target.for_discovered(port, pid)
                    })
                }
            };
            Ok(RedisSource {
                port,
                netns: traced.netns,
                label: traced.server_ref(),
                target,
                pid,
                off_reason: None,
            })
        })
        .collect()
}

fn process_event(p: &ProcEvent, watched: &HashSet<u32>, clock: &Clock) -> ProcessEvent {
    let name = comm(&p.comm);
    let redis = watched.contains(&p.pid) || SERVER_NAMES.contains(&name.as_str());
    let actor = ProcessRef {
        pid: p.actor_tgid,
        comm: comm(&p.actor_comm),
    };
    let (event, signal, oom) = match p.what {
        proc_event::OOM_VICTIM => (
            ProcessEventKind::OomKill,
            None,
            Some(OomInfo {
                total_vm_kb: p.total_vm,
                anon_rss_kb: p.anon_rss,
                file_rss_kb: p.file_rss,
                shmem_rss_kb: p.shmem_rss,
                pgtables_kb: p.pgtables,
                uid: p.uid,
                oom_score_adj: p.oom_score_adj,
                invoked_by: actor,
            }),
        ),
        proc_event::SIGNAL => (
            ProcessEventKind::Signal,
            Some(SignalInfo {
                number: p.sig,
                name: decode::signal_name(p.sig),
                origin: decode::signal_origin(p.code),
                sender: actor,
                result: decode::signal_result(p.result),
            }),
            None,
        ),
        _ => (ProcessEventKind::Exit, None, None),
    };
    ProcessEvent {
        time: Some(clock.wall(p.ts_ns)),
        event,
        pid: p.pid,
        comm: name,
        redis,
        signal,
        oom,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols() -> uprobes::Symbols {
        // (start, end, symbol, keeps a frame pointer)
        uprobes::Symbols::from_list_fp(vec![
            (0x1000, 0x1400, "freeClient", true),
            (0x2000, 0x2400, "clientsCronHandleTimeout", false),
            (0x3000, 0x3400, "freeClientsInAsyncFreeQueue", false),
            (0x4000, 0x4100, "freeClientAsync", false),
        ])
    }

    #[test]
    fn a_pass_through_with_a_frame_pointer_names_its_caller() {
        // Valkey 9: clientsCronHandleTimeout -> freeClient -> freeClientAsync (protected),
        // freed later from the async queue.
        let raw = RedisRaw {
            decided_in: 0x1010,
            decided_in_caller: 0x2010,
            freed_from: 0x3010,
            freed_from_caller: 0,
            client_flags: redis_trace_ebpf::NO_FLAGS,
        };
        let p = code_path(raw, &symbols()).expect("a code path");
        assert_eq!(p.decided_in, "clientsCronHandleTimeout");
        assert_eq!(p.via.as_deref(), Some("freeClient"));
        assert_eq!(p.freed_from, "freeClientsInAsyncFreeQueue");
        assert_eq!(p.client_flags, None);
    }

    #[test]
    fn the_word_one_frame_up_is_not_trusted_without_a_frame_pointer() {
        let syms = uprobes::Symbols::from_list_fp(vec![
            (0x1000, 0x1400, "freeClient", false),
            (0x2000, 0x2400, "clientsCronHandleTimeout", false),
        ]);
        let raw = RedisRaw {
            decided_in: 0x1010,
            decided_in_caller: 0x2010,
            freed_from: 0x1010,
            freed_from_caller: 0x2010,
            client_flags: redis_trace_ebpf::NO_FLAGS,
        };
        let p = code_path(raw, &syms).expect("a code path");
        assert_eq!(p.decided_in, "freeClient");
        assert_eq!(p.via, None);
    }

    #[test]
    fn a_direct_decider_is_kept_and_unnamed_addresses_are_shown() {
        let raw = RedisRaw {
            decided_in: 0x2010,
            decided_in_caller: 0x9999,
            freed_from: 0x2010,
            freed_from_caller: 0x9999,
            client_flags: redis_trace_ebpf::NO_FLAGS,
        };
        let p = code_path(raw, &symbols()).expect("a code path");
        assert_eq!(
            (p.decided_in.as_str(), p.via),
            ("clientsCronHandleTimeout", None)
        );
        let raw = RedisRaw {
            decided_in: 0x8000,
            freed_from: 0x8000,
            ..raw
        };
        assert_eq!(
            code_path(raw, &symbols()).expect("a path").decided_in,
            "0x8000"
        );
    }
}
