//! `redis-trace capture`: attach, collect, assemble, write, and end cleanly.
pub mod assemble;
pub mod enrich;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use self::assemble::{Assembled, Assembler, Clock, Owners, monotonic_ns};
use crate::kernel::decode::{Record, comm};
use crate::kernel::{load, uprobes};
use crate::output::{JsonTarget, Writers, closed_line_colored, process_line, reset_line};
use crate::pipeline::enrich::{Enricher, RedisSource, RedisStatus};
use crate::schema::{
    CaptureEnded, CaptureStarted, ConnectionClosed, Counts, OomInfo, PortSource, ProcessEvent,
    ProcessRef, SCHEMA_VERSION, SignalInfo, TracedPort, signal_name, signal_origin, signal_result,
};
use crate::signals::{self, Signals};
use crate::sources::procinfo::{self, SERVER_NAMES};
use crate::sources::redis::Target;
use crate::stderr;
use redis_trace_ebpf::{ProcEvent, proc_event};

/// How long records about one connection are held for their RST/error companions.
const GRACE: Duration = Duration::from_millis(250);
/// How often the ring buffer is drained when the kernel does not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct Options {
    /// Ports given on the command line; empty means discover.
    pub ports: Vec<u16>,
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

/// Redis servers running here: (port, process) for each listening port, and the pids of
/// every process with a Redis server's name (their OOM kills, signals and exits matter).
fn redis_processes() -> (Vec<(u16, procinfo::ProcessInfo)>, Vec<u32>) {
    let found = procinfo::redis_ports(&SERVER_NAMES).unwrap_or_default();
    let mut pids: Vec<u32> = found.iter().map(|(_, p)| p.pid).collect();
    if let Ok(all) = procinfo::processes_named(&SERVER_NAMES) {
        pids.extend(all.iter().map(|p| p.pid));
    }
    pids.sort_unstable();
    pids.dedup();
    (found, pids)
}

/// The ports to trace and how they were chosen. Discovery needs /proc before anything is
/// attached; ports given on the command line do not.
fn choose_ports(
    opts: &Options,
    found: Option<&[(u16, procinfo::ProcessInfo)]>,
) -> Result<(Vec<TracedPort>, PortSource)> {
    let process = |port: u16| {
        found
            .unwrap_or_default()
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, pr)| ProcessRef {
                pid: pr.pid,
                comm: pr.comm.clone(),
            })
    };
    if !opts.ports.is_empty() {
        let mut ports = opts.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let traced = ports
            .into_iter()
            .map(|port| TracedPort {
                port,
                process: process(port),
            })
            .collect();
        return Ok((traced, PortSource::CommandLine));
    }
    let found = found.unwrap_or_default();
    if found.is_empty() {
        bail!(
            "no running redis-server or valkey-server listens on a TCP port here; \
             start one, or name the ports to trace with --port"
        );
    }
    let traced = found
        .iter()
        .map(|(port, _)| TracedPort {
            port: *port,
            process: process(*port),
        })
        .collect();
    Ok((traced, PortSource::Discovered))
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

fn owners_at_start(ports: &[u16]) -> Owners {
    procinfo::connection_owners(ports)
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            (
                (o.local, o.remote),
                ProcessRef {
                    pid: o.process.pid,
                    comm: o.process.comm,
                },
            )
        })
        .collect()
}

/// Why the capture ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Interrupt,
    Terminate,
    Duration,
}

/// Runs a capture until a signal (see [`Signals`]: installed by the caller before
/// anything else), `--duration`, or an error.
/// What a capture wrote first and last.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: CaptureStarted,
    pub ended: CaptureEnded,
}

pub async fn run(opts: Options, mut signals: Signals) -> Result<Outcome> {
    let started = Instant::now();
    check_privileges()?;
    // With --port, attach first and look at /proc afterwards: the probes are live within
    // milliseconds of the start, however many processes the host runs.
    let mut discovered = None;
    if opts.ports.is_empty() {
        discovered = Some(redis_processes());
    }
    let (mut ports, port_source) =
        choose_ports(&opts, discovered.as_ref().map(|d| d.0.as_slice()))?;
    let port_numbers: Vec<u16> = ports.iter().map(|p| p.port).collect();

    let mut notes = Vec::new();
    let root = load::tracefs_root(&mut notes)?;
    for n in &notes {
        stderr::note(n);
    }
    let proc_names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut loaded = load::load(
        &root,
        &load::Settings {
            ports: &port_numbers,
            proc_names: &proc_names,
        },
    )?;
    let live_ms = started.elapsed().as_millis();
    let (found, watched) = match discovered {
        Some(d) => d,
        None => redis_processes(),
    };
    if port_source == PortSource::CommandLine {
        (ports, _) = choose_ports(&opts, Some(&found))?;
    }
    load::watch_pids(&mut loaded.ebpf, &watched)?;
    // Uprobes on each traced Redis: which of its code paths freed each client.
    let mut redis_probes = Vec::new();
    let mut symbols: HashMap<u32, uprobes::Symbols> = HashMap::new();
    let mut links: HashMap<u32, Vec<uprobes::Link>> = HashMap::new();
    if opts.uprobes {
        let mut pids: Vec<u32> = ports
            .iter()
            .filter_map(|p| p.process.as_ref().map(|p| p.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let (report, attached) = uprobes::attach(&mut loaded.ebpf, pid);
            if let Some(why) = &report.unavailable {
                stderr::warn(&format!("no uprobes on redis-server pid {pid}: {why}"));
            }
            if let Some((s, l)) = attached {
                symbols.insert(pid, s);
                links.insert(pid, l);
            }
            redis_probes.push(report);
        }
    }
    for p in &ports {
        match &p.process {
            Some(pr) => stderr::note(&format!(
                "tracing port {} ({} pid {})",
                p.port, pr.comm, pr.pid
            )),
            None => stderr::note(&format!(
                "tracing port {} (no Redis process listens on it now)",
                p.port
            )),
        }
    }
    for u in &loaded.unavailable {
        stderr::warn(&format!(
            "{} unavailable ({}): {}",
            u.probe,
            u.why.as_deref().unwrap_or("?"),
            u.cost.as_deref().unwrap_or("?")
        ));
    }
    let owners = owners_at_start(&port_numbers);
    let open_at_start = owners
        .keys()
        .filter(|(l, _)| port_numbers.contains(&l.port()))
        .count();

    let clock = Clock::new();
    // Redis's own view first (bounded): a close in the capture's first second deserves
    // its CLIENT LIST entry and log line too. The kernel's records wait in a backlog.
    let mut enricher = Enricher::new(redis_sources(&opts, &ports)?, watched.clone());
    let mut backlog: Vec<Vec<u8>> = Vec::new();
    let early_status = enricher.wait_ready(Duration::from_millis(1500), || {
        while let Some(item) = loaded.ring.next() {
            backlog.push(item.to_vec());
        }
    });
    let begin = CaptureStarted {
        kind: "capture_started",
        schema_version: SCHEMA_VERSION,
        time: clock.rfc3339(monotonic_ns()),
        tool_version: env!("CARGO_PKG_VERSION"),
        host: hostname(),
        kernel: kernel_release(),
        ports: ports.clone(),
        port_source,
        probes_attached: loaded.attached.clone(),
        probes_unavailable: loaded.unavailable.clone(),
        open_connections_at_start: open_at_start,
        redis_uprobes: redis_probes,
    };
    let redis_probes_pids: HashSet<u32> = begin.redis_uprobes.iter().map(|r| r.pid).collect();
    // Outputs are opened only now that every check passed: a capture that could not
    // start leaves an existing file as it was.
    let mut writers = Writers::open(opts.json.as_ref(), opts.quiet, opts.color)?;
    // Every probe is live now: scripts may wait for this line.
    writers.json(&begin)?;
    writers.flush()?;
    stderr::note(&format!(
        "capturing ({} probes attached, live {live_ms} ms after start); Ctrl-C to stop",
        loaded.attached.len(),
    ));

    let watched_set: HashSet<u32> = watched.iter().copied().collect();
    let mut assembler = Assembler::new(GRACE, loaded.reasons.clone(), clock, owners);
    write_status(early_status, &mut writers)?;
    let mut counts = Counts::default();
    let mut bad_records = 0u64;
    let mut closes_seen = 0u64;
    let mut out = Vec::new();
    // The record path's borrows of the loop's state, taken afresh where records flow.
    macro_rules! sinks {
        () => {
            Sinks {
                assembler: &mut assembler,
                enricher: &mut enricher,
                watched: &watched_set,
                clock: &clock,
                writers: &mut writers,
                counts: &mut counts,
                bad: &mut bad_records,
                closes: &mut closes_seen,
            }
        };
    }
    {
        let mut sinks = sinks!();
        for item in backlog.drain(..) {
            sinks.record(&item)?;
        }
    }

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
    // SAFETY: the ring buffer's fd is owned by the RingBuf moved into the AsyncFd, so it
    // stays open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(loaded.ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;

    let mut last_status = Instant::now();
    let mut governor = UprobeGovernor::new();
    let mut probed: HashSet<u32> = redis_probes_pids;
    let ending = loop {
        tokio::select! {
            kind = signals.stopped() => break match kind {
                signals::Kind::Interrupt => Ending::Interrupt,
                signals::Kind::Terminate => Ending::Terminate,
            },
            _ = &mut sleep_until => break Ending::Duration,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                guard.clear_ready();
            }
            _ = tick.tick() => {}
        }
        sinks!().drain(ring.get_mut())?;
        assembler.flush(monotonic_ns(), &mut out);
        write_assembled(&mut out, &symbols, &mut enricher, &mut writers, &mut counts)?;
        let statuses = enricher.poll_sources();
        if opts.uprobes {
            // A Redis that (re)started during the capture: probe its new process too
            // (later, if the probes are paused for churn).
            for pid in statuses.iter().filter_map(|s| s.pid) {
                if probed.insert(pid) {
                    if governor.paused {
                        governor.pending.push(pid);
                        continue;
                    }
                    let (report, attached) = uprobes::attach(&mut loaded.ebpf, pid);
                    if let Some((s, l)) = attached {
                        symbols.insert(pid, s);
                        links.insert(pid, l);
                    }
                    writers.json(&serde_json::json!({
                        "type": "redis_uprobes",
                        "time": clock.rfc3339(monotonic_ns()),
                        "probes": report,
                    }))?;
                }
            }
            if let Some(note) = governor.tick(closes_seen, &mut links, &mut loaded.ebpf) {
                writers.json(&serde_json::json!({
                    "type": "redis_uprobes",
                    "time": clock.rfc3339(monotonic_ns()),
                    "note": note,
                }))?;
                stderr::note(&note);
            }
        }
        write_status(statuses, &mut writers)?;
        write_closed(enricher.release(false), &mut writers, &mut counts)?;
        writers.flush()?;
        if writers.status_allowed() && last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            let lost = load::counters(&loaded.ebpf)
                .map(|k| k.ring_full)
                .unwrap_or(0);
            writers.status(&status_line(started.elapsed(), &counts, lost));
        }
    };

    // Stop: collect what the kernel still holds, then everything pending.
    sinks!().drain(ring.get_mut())?;
    assembler.flush(u64::MAX, &mut out);
    write_assembled(&mut out, &symbols, &mut enricher, &mut writers, &mut counts)?;
    // Redis-side closes wait for the poll after them: give it its moment, bounded.
    let until = Instant::now() + Duration::from_millis(1500);
    // A second Ctrl-C cuts this wait short: what is held is written at once.
    while enricher.held() > 0 && Instant::now() < until && signals.count() < 2 {
        write_status(enricher.poll_sources(), &mut writers)?;
        write_closed(enricher.release(false), &mut writers, &mut counts)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_status(enricher.poll_sources(), &mut writers)?;
    write_closed(enricher.release(true), &mut writers, &mut counts)?;
    let own_connections = assembler.own_skipped;
    enricher.stop();
    let kc = load::counters(&loaded.ebpf).unwrap_or_default();
    loaded.ring = ring.into_inner();
    let end = CaptureEnded {
        kind: "capture_ended",
        time: clock.rfc3339(monotonic_ns()),
        duration_s: started.elapsed().as_secs_f64(),
        ended_by: match ending {
            Ending::Interrupt => "interrupt",
            Ending::Terminate => "terminate",
            Ending::Duration => "duration",
        },
        counts,
        lost_events: kc.ring_full,
        untracked_connections: kc.conn_map_full,
        bad_records: bad_records + kc.read_failed,
        connections_without_start: assembler.without_start,
        own_connections,
        own_connections_unmarked: kc.own_socks_full,
        probes_unavailable: loaded.unavailable.iter().map(|u| u.probe.clone()).collect(),
    };
    writers.json(&end)?;
    writers.flush()?;
    // Dropping `loaded` detaches every program.
    drop(loaded);
    Ok(Outcome {
        started: begin,
        ended: end,
    })
}

/// Everything a record may touch on its way to the output.
struct Sinks<'a> {
    assembler: &'a mut Assembler,
    enricher: &'a mut Enricher,
    watched: &'a HashSet<u32>,
    clock: &'a Clock,
    writers: &'a mut Writers,
    counts: &'a mut Counts,
    bad: &'a mut u64,
    /// Connection ends handed over by the kernel (the uprobes' cost follows them).
    closes: &'a mut u64,
}

impl Sinks<'_> {
    fn record(&mut self, bytes: &[u8]) -> Result<()> {
        match Record::decode(bytes) {
            Ok(Record::Closed(c)) => {
                *self.closes += 1;
                self.assembler.push_closed(c);
            }
            Ok(Record::Sock(s)) => self.assembler.push_sock(s),
            Ok(Record::Proc(p)) => {
                let ev = process_event(&p, self.watched, self.clock);
                self.enricher.process_event(&ev);
                self.counts.process_events += 1;
                self.writers.json(&ev)?;
                self.writers.text(&process_line(&ev))?;
            }
            Err(_) => *self.bad += 1,
        }
        Ok(())
    }

    /// Takes every record the kernel has handed over.
    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Result<()> {
        while let Some(item) = ring.next() {
            self.record(&item)?;
        }
        Ok(())
    }
}

/// Connection records go to the enricher, to be written once classified; resets are
/// written at once.
fn write_assembled(
    out: &mut Vec<Assembled>,
    symbols: &HashMap<u32, uprobes::Symbols>,
    enricher: &mut Enricher,
    writers: &mut Writers,
    counts: &mut Counts,
) -> Result<()> {
    for a in out.drain(..) {
        match a {
            Assembled::Closed(mut c) => {
                c.redis_code_path = code_path(&c, symbols);
                let ns = c.close_ns;
                enricher.push(c, ns);
            }
            Assembled::Reset(r) => {
                counts.resets += 1;
                writers.json(&r)?;
                writers.text(&reset_line(&r))?;
            }
        }
    }
    Ok(())
}

fn write_closed(
    closed: Vec<ConnectionClosed>,
    writers: &mut Writers,
    counts: &mut Counts,
) -> Result<()> {
    for c in closed {
        counts.connections_closed += 1;
        *counts.by_cause.entry(c.cause.as_str()).or_default() += 1;
        writers.json(&c)?;
        let line = closed_line_colored(&c, writers.color);
        writers.text(&line)?;
    }
    Ok(())
}

/// Keeps the uprobes' cost to Redis bounded: each freed client costs Redis a uprobe
/// trap (~2 µs here), so above this many connection ends a second the uprobes are
/// paused (causes then rest on the other evidence), and resumed once it is calm.
const UPROBE_MAX_ENDS_PER_S: f64 = 1000.0;
const UPROBE_CALM_FOR: Duration = Duration::from_secs(10);

struct UprobeGovernor {
    paused: bool,
    /// Redis pids to probe again when resuming.
    pending: Vec<u32>,
    last: Instant,
    last_closes: u64,
    calm_since: Option<Instant>,
}

impl UprobeGovernor {
    fn new() -> Self {
        Self {
            paused: false,
            pending: Vec::new(),
            last: Instant::now(),
            last_closes: 0,
            calm_since: None,
        }
    }

    /// Once a second: pauses or resumes the uprobes; says what it did.
    fn tick(
        &mut self,
        closes: u64,
        links: &mut HashMap<u32, Vec<uprobes::Link>>,
        ebpf: &mut aya::Ebpf,
    ) -> Option<String> {
        let elapsed = self.last.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let rate = closes.saturating_sub(self.last_closes) as f64 / elapsed.as_secs_f64();
        self.last = Instant::now();
        self.last_closes = closes;
        if !self.paused {
            if rate <= UPROBE_MAX_ENDS_PER_S || links.is_empty() {
                return None;
            }
            self.paused = true;
            self.calm_since = None;
            for (pid, l) in links.drain() {
                uprobes::detach(ebpf, l);
                self.pending.push(pid);
            }
            let _ = uprobes::set_enabled(ebpf, false);
            return Some(format!(
                "uprobes paused: {rate:.0} connection ends/s (above {UPROBE_MAX_ENDS_PER_S:.0}/s, \
                 each costs Redis a uprobe trap); code paths resume when it calms down"
            ));
        }
        if rate > UPROBE_MAX_ENDS_PER_S / 5.0 {
            self.calm_since = None;
            return None;
        }
        if self.calm_since.get_or_insert_with(Instant::now).elapsed() < UPROBE_CALM_FOR {
            return None;
        }
        self.paused = false;
        let mut resumed = Vec::new();
        for pid in self.pending.drain(..) {
            if let (_, Some((_, l))) = uprobes::attach(ebpf, pid) {
                links.insert(pid, l);
                resumed.push(pid.to_string());
            }
        }
        Some(format!(
            "uprobes resumed on redis-server pid {} ({rate:.0} connection ends/s)",
            resumed.join(", ")
        ))
    }
}

/// Names the Redis functions behind a close from the closing process's own symbols.
fn code_path(
    c: &ConnectionClosed,
    symbols: &HashMap<u32, uprobes::Symbols>,
) -> Option<crate::schema::RedisCodePath> {
    let (freed_from, decided_in, flags) = c.redis_raw;
    if decided_in == 0 {
        return None;
    }
    let syms = symbols.get(&c.pid?)?;
    let name = |a: u64| {
        syms.name(a)
            .map_or_else(|| format!("{a:#x}"), str::to_string)
    };
    Some(crate::schema::RedisCodePath {
        decided_in: name(decided_in),
        freed_from: name(freed_from),
        client_flags: (flags != redis_trace_ebpf::NO_FLAGS).then(|| {
            uprobes::describe_flags(flags)
                .into_iter()
                .filter(|(_, set)| *set)
                .map(|(n, _)| n)
                .collect()
        }),
    })
}

/// The live status line: elapsed, connections ended, the top causes, lost events.
fn status_line(elapsed: Duration, counts: &Counts, lost: u64) -> String {
    let mut top: Vec<(&&str, &u64)> = counts.by_cause.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let causes: Vec<String> = top
        .iter()
        .take(4)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    format!(
        "[{}s] {} ended | {} | lost {lost}",
        elapsed.as_secs(),
        counts.connections_closed,
        if causes.is_empty() {
            "-".to_string()
        } else {
            causes.join(", ")
        }
    )
}

fn write_status(statuses: Vec<RedisStatus>, writers: &mut Writers) -> Result<()> {
    for st in statuses {
        writers.json(&st)?;
        let line = match st.status {
            "connected" => format!(
                "Redis on port {} {}: pid {}, version {}, up {} s; its log is {}{}",
                st.port,
                if st.restarted {
                    "restarted"
                } else {
                    "connected"
                },
                st.pid.map_or("?".into(), |p| p.to_string()),
                st.version.as_deref().unwrap_or("?"),
                st.uptime_s.map_or("?".into(), |u| u.to_string()),
                if st.log_readable {
                    "read too"
                } else {
                    "not readable"
                },
                st.log_note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "Redis on port {} unavailable ({}): causes fall back to kernel evidence",
                st.port,
                st.error.as_deref().unwrap_or("?")
            ),
        };
        // The version and the error text are Redis's words: stderr escapes them.
        stderr::note(&line);
    }
    Ok(())
}

fn redis_sources(opts: &Options, ports: &[TracedPort]) -> Result<Vec<RedisSource>> {
    let numbers: Vec<u16> = ports.iter().map(|p| p.port).collect();
    ports
        .iter()
        .map(|traced| {
            let port = traced.port;
            let ports = &numbers;
            let target = match &opts.redis {
                None => None,
                Some(access) => {
                    // A --redis-url names one server: use it for the port it names.
                    let url = access
                        .url
                        .as_deref()
                        .filter(|u| ports.len() == 1 || Target::url_port(u) == Some(port));
                    let target = Target::new(url, port, access.password_file.as_deref())?
                        .with_tls(&access.tls)?;
                    // The operator named this server (--port, --redis-url): trusted.
                    let named = !opts.ports.is_empty() || url.is_some();
                    Some(if named {
                        target
                    } else {
                        target.for_discovered(port, traced.process.as_ref().map(|p| p.pid))
                    })
                }
            };
            Ok(RedisSource {
                port,
                target,
                pid: traced.process.as_ref().map(|p| p.pid),
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
            "oom_kill",
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
            "signal",
            Some(SignalInfo {
                number: p.sig,
                name: signal_name(p.sig),
                origin: signal_origin(p.code),
                sender: actor,
                result: signal_result(p.result),
            }),
            None,
        ),
        _ => ("exit", None, None),
    };
    ProcessEvent {
        kind: "process_event",
        time: clock.rfc3339(p.ts_ns),
        event,
        pid: p.pid,
        comm: name,
        redis,
        signal,
        oom,
    }
}
