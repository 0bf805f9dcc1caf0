//! The captures' records as the report needs them: read tolerantly from JSON values
//! (a missing field is an unknown, not an error), one timeline across captures, and the
//! two ends of a connection seen by two captures merged into one connection end.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Capture, Summary, WARNING_TYPE};

/// Two records of the same (server, client) pair this close in time are the two ends of
/// one connection: the closing end holds the 4-tuple in TIME_WAIT for 60 s, so the same
/// pair cannot be a new connection sooner.
const SAME_CONNECTION: Duration = Duration::from_secs(60);

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

pub(super) fn time_of(v: &Value) -> Option<SystemTime> {
    v.get("time")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub(super) fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[derive(Debug, Clone)]
pub(super) struct ProcRef {
    pub pid: Option<u64>,
    pub comm: String,
}

fn proc_ref(v: Option<&Value>) -> Option<ProcRef> {
    let v = v.filter(|v| v.is_object())?;
    Some(ProcRef {
        pid: u(v, "pid"),
        comm: s(v, "comm").unwrap_or_default(),
    })
}

#[derive(Debug, Clone)]
pub(super) struct Port {
    pub port: u64,
    pub process: Option<ProcRef>,
}

#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub probe: String,
    pub why: Option<String>,
    pub cost: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Ended {
    pub ended_by: Option<String>,
    pub lost: u64,
    pub connections_closed: Option<u64>,
    pub untracked: u64,
    pub bad_records: u64,
}

#[derive(Debug, Clone)]
pub(super) struct CapInfo {
    pub file: String,
    pub host: String,
    pub kernel: String,
    pub tool_version: String,
    pub start: Option<SystemTime>,
    /// capture_ended's time, or the last record's when the capture did not end cleanly.
    pub end: Option<SystemTime>,
    pub ended: Option<Ended>,
    pub ports: Vec<Port>,
    pub probes_unavailable: Vec<Probe>,
    /// Whether `tcp:tcp_send_reset` was attached: without it, a RST this host sent is unseen.
    pub sees_sent_resets: bool,
    pub open_at_start: u64,
    /// What `load` tolerated, and inconsistencies found here.
    pub warnings: Vec<String>,
    /// A Redis server runs on this capture's host (it named a Redis process on a port).
    pub local_redis: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Status {
    pub time: Option<SystemTime>,
    pub host: usize,
    pub port: Option<u64>,
    pub status: String,
    pub pid: Option<u64>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub restarted: bool,
    pub error: Option<String>,
    pub log_readable: Option<bool>,
}

#[derive(Debug, Clone)]
pub(super) struct Signal {
    pub name: String,
    pub origin: String,
    pub sender: Option<ProcRef>,
    pub result: String,
}

#[derive(Debug, Clone)]
pub(super) struct Oom {
    pub anon_rss_kb: Option<u64>,
    pub invoked_by: Option<ProcRef>,
}

#[derive(Debug, Clone)]
pub(super) struct ProcEvt {
    pub cap: usize,
    pub time: Option<SystemTime>,
    pub event: String,
    pub pid: Option<u64>,
    pub comm: String,
    pub redis: bool,
    pub signal: Option<Signal>,
    pub oom: Option<Oom>,
}

impl ProcEvt {
    /// A signal that ends a process unless handled (for the chart's markers).
    pub fn is_fatal_signal(&self) -> bool {
        self.signal.as_ref().is_some_and(|s| {
            matches!(
                s.name.as_str(),
                "SIGKILL"
                    | "SIGTERM"
                    | "SIGINT"
                    | "SIGQUIT"
                    | "SIGHUP"
                    | "SIGSEGV"
                    | "SIGBUS"
                    | "SIGABRT"
                    | "SIGILL"
                    | "SIGFPE"
                    | "SIGSYS"
                    | "SIGXCPU"
                    | "SIGXFSZ"
            ) && s.result != "ignored"
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct Reset {
    pub cap: usize,
    pub time: Option<SystemTime>,
    pub server: String,
    pub client: String,
    pub sent_by: Option<String>,
    pub received_by: Option<String>,
    pub rst_reason: Option<String>,
    pub pid: Option<u64>,
    pub comm: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct ResetNote {
    pub direction: String,
    pub side: String,
}

/// One `connection_closed` record.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub cap: usize,
    pub time: Option<SystemTime>,
    pub cause: String,
    pub evidence: Vec<String>,
    pub client_class: Option<String>,
    pub killer: Option<String>,
    pub client_name: Option<String>,
    pub server: String,
    pub client: String,
    pub closed_by_side: Option<String>,
    pub packet: Option<String>,
    pub pid: Option<u64>,
    pub comm: Option<String>,
    pub rst_reason: Option<String>,
    pub duration_ms: Option<f64>,
    pub kernel_event: String,
    pub observed_on: String,
    pub server_process: Option<ProcRef>,
    pub client_process: Option<ProcRef>,
    pub both_ends_local: bool,
    pub resets: Vec<ResetNote>,
}

impl Rec {
    fn parse(cap: usize, v: &Value) -> Self {
        let ev: Vec<String> = v
            .get("evidence")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| match e.as_str() {
                        Some(s) => s.to_owned(),
                        None => e.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let resets = v
            .get("resets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| ResetNote {
                        direction: s(r, "direction").unwrap_or_default(),
                        side: s(r, "side").unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rc = v.get("redis_client").filter(|r| r.is_object());
        let client = s(v, "client").unwrap_or_default();
        // Without a CLIENT LIST entry, the name Redis's log gave this very client.
        let logged_name = || {
            let at = format!("addr={client} ");
            ev.iter()
                .filter(|e| e.contains(&at))
                .find_map(|e| e.split(" name=").nth(1)?.split(' ').next())
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        };
        let client_name = rc
            .and_then(|r| s(r, "name"))
            .filter(|n| !n.is_empty())
            .or_else(logged_name);
        Self {
            cap,
            time: time_of(v),
            cause: s(v, "cause").unwrap_or_else(|| "unknown".into()),
            evidence: ev,
            client_class: s(v, "client_class"),
            killer: s(v, "killer"),
            client_name,
            server: s(v, "server").unwrap_or_default(),
            client,
            closed_by_side: s(v, "closed_by_side"),
            packet: s(v, "packet"),
            pid: u(v, "pid"),
            comm: s(v, "comm"),
            rst_reason: s(v, "rst_reason"),
            duration_ms: v.get("duration_ms").and_then(Value::as_f64),
            kernel_event: s(v, "kernel_event").unwrap_or_default(),
            observed_on: s(v, "observed_on").unwrap_or_default(),
            server_process: proc_ref(v.get("server_process")),
            client_process: proc_ref(v.get("client_process")),
            both_ends_local: v
                .get("both_ends_local")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            resets,
        }
    }

    /// The closing task is a client's (its process name is the client's to redact).
    pub fn closer_is_client(&self) -> bool {
        self.closed_by_side.as_deref() == Some("client")
    }
}

/// One connection end of the timeline: one record, or the records of its two ends.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    /// The record whose cause the connection takes.
    pub rec: Rec,
    /// The other end's records, from other captures.
    pub others: Vec<Rec>,
    pub cause: String,
    pub closed_by: String,
    /// What merging the ends found (the middlebox proof, or why there is none).
    pub notes: Vec<String>,
    pub middlebox_proven: bool,
    /// The middlebox proof in one line, for the timeline.
    pub proof_line: Option<String>,
}

impl Conn {
    pub fn client_name(&self) -> Option<&str> {
        self.rec
            .client_name
            .as_deref()
            .or_else(|| self.others.iter().find_map(|r| r.client_name.as_deref()))
    }

    /// All evidence; when the connection is seen by several captures, each line names
    /// the host whose capture saw it.
    pub fn evidence(&self, caps: &[CapInfo]) -> Vec<String> {
        if self.others.is_empty() {
            let mut out = self.rec.evidence.clone();
            out.extend(self.notes.iter().cloned());
            return out;
        }
        let mut out = Vec::new();
        for r in std::iter::once(&self.rec).chain(&self.others) {
            let host = caps.get(r.cap).map(|c| c.host.as_str()).unwrap_or("?");
            out.extend(r.evidence.iter().map(|e| format!("[{host}] {e}")));
        }
        out.extend(self.notes.iter().cloned());
        out
    }

    /// The one piece of evidence that says the most: the proof of a middlebox, else the
    /// first sentence beyond the kernel's "the X end sent the first FIN/RST".
    pub fn key_evidence(&self) -> Option<String> {
        if self.middlebox_proven {
            return self
                .proof_line
                .clone()
                .or_else(|| self.notes.first().cloned());
        }
        let all = || std::iter::once(&self.rec).chain(&self.others);
        all()
            .flat_map(|r| r.evidence.iter())
            .find(|e| !e.starts_with("kernel: the "))
            .or_else(|| self.rec.evidence.first())
            .cloned()
    }
}

pub(super) struct Model {
    pub caps: Vec<CapInfo>,
    pub conns: Vec<Conn>,
    /// RSTs that are not part of a connection's first close.
    pub resets: Vec<Reset>,
    pub procs: Vec<ProcEvt>,
    pub statuses: Vec<Status>,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
}

fn cap_info(c: &Capture) -> CapInfo {
    let started = c
        .records
        .iter()
        .find(|r| r.get("type").and_then(Value::as_str) == Some("capture_started"));
    let empty = Value::Null;
    let st = started.unwrap_or(&empty);
    let ports: Vec<Port> = st
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(Port {
                        port: u(p, "port")?,
                        process: proc_ref(p.get("process")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let probes_unavailable: Vec<Probe> = st
        .get("probes_unavailable")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| match p.as_str() {
                    Some(name) => Probe {
                        probe: name.into(),
                        why: None,
                        cost: None,
                    },
                    None => Probe {
                        probe: s(p, "probe").unwrap_or_default(),
                        why: s(p, "why"),
                        cost: s(p, "cost"),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let attached: Vec<String> = st
        .get("probes_attached")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ended_rec = c
        .records
        .iter()
        .rev()
        .find(|r| r.get("type").and_then(Value::as_str) == Some("capture_ended"));
    let ended = ended_rec.map(|e| Ended {
        ended_by: s(e, "ended_by"),
        lost: u(e, "lost_events").unwrap_or(0),
        connections_closed: u(e, "connections_closed"),
        untracked: u(e, "untracked_connections").unwrap_or(0),
        bad_records: u(e, "bad_records").unwrap_or(0),
    });
    let last_time = c.records.iter().filter_map(time_of).max();
    let closed_records = c
        .records
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("connection_closed"))
        .count() as u64;
    let mut warnings: Vec<String> = c
        .records
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some(WARNING_TYPE))
        .filter_map(|r| s(r, "message"))
        .collect();
    match &ended {
        None => warnings.push(
            "no capture_ended record: the capture did not end cleanly (killed, or still \
             running when copied); its lost-event count is unknown"
                .into(),
        ),
        Some(e) => {
            if let Some(n) = e.connections_closed
                && n != closed_records
            {
                warnings.push(format!(
                    "capture_ended counts {n} connection ends, the file holds {closed_records}"
                ));
            }
        }
    }
    let file = c
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| c.path.display().to_string());
    CapInfo {
        file,
        host: s(st, "host").unwrap_or_else(|| "?".into()),
        kernel: s(st, "kernel").unwrap_or_else(|| "?".into()),
        tool_version: s(st, "tool_version").unwrap_or_else(|| "?".into()),
        start: time_of(st),
        end: ended_rec.and_then(time_of).or(last_time),
        local_redis: ports.iter().any(|p| p.process.is_some()),
        ports,
        sees_sent_resets: attached.iter().any(|p| p == "tcp:tcp_send_reset")
            && !probes_unavailable
                .iter()
                .any(|p| p.probe == "tcp:tcp_send_reset"),
        probes_unavailable,
        open_at_start: u(st, "open_connections_at_start").unwrap_or(0),
        ended,
        warnings,
    }
}

fn parse_signal(v: &Value) -> Option<Signal> {
    let v = v.get("signal").filter(|v| v.is_object())?;
    Some(Signal {
        name: s(v, "name").unwrap_or_else(|| {
            u(v, "number")
                .map(|n| format!("signal {n}"))
                .unwrap_or_else(|| "a signal".into())
        }),
        origin: s(v, "origin").unwrap_or_default(),
        sender: proc_ref(v.get("sender")),
        result: s(v, "result").unwrap_or_default(),
    })
}

fn parse_oom(v: &Value) -> Option<Oom> {
    let v = v.get("oom").filter(|v| v.is_object())?;
    Some(Oom {
        anon_rss_kb: u(v, "anon_rss_kb"),
        invoked_by: proc_ref(v.get("invoked_by")),
    })
}

/// How much a record's cause settles: 0 a definite cause, 2 "Redis closed it, reason
/// unseen", 3 "a RST from the peer's address", 4 nothing.
fn rank(cause: &str) -> u8 {
    match cause {
        "redis_close_unknown" => 2,
        "peer_reset" => 3,
        "unknown" => 4,
        _ => 0,
    }
}

fn other_side(side: &str) -> Option<&'static str> {
    match side {
        "server" => Some("client"),
        "client" => Some("server"),
        _ => None,
    }
}

fn fmt_time(t: Option<SystemTime>) -> String {
    t.map(crate::time::rfc3339_micros)
        .unwrap_or_else(|| "an unknown time".into())
}

struct Group {
    recs: Vec<Rec>,
    resets: Vec<Reset>,
}

fn near(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => secs_between(a, b).abs() <= SAME_CONNECTION.as_secs_f64(),
        _ => false,
    }
}

impl Model {
    pub fn build(captures: &[Capture]) -> Self {
        let caps: Vec<CapInfo> = captures.iter().map(cap_info).collect();
        let mut recs = Vec::new();
        let mut resets = Vec::new();
        let mut procs = Vec::new();
        let mut statuses = Vec::new();
        for (i, c) in captures.iter().enumerate() {
            for v in &c.records {
                match v.get("type").and_then(Value::as_str) {
                    Some("connection_closed") => recs.push(Rec::parse(i, v)),
                    Some("reset") => resets.push(Reset {
                        cap: i,
                        time: time_of(v),
                        server: s(v, "server").unwrap_or_default(),
                        client: s(v, "client").unwrap_or_default(),
                        sent_by: s(v, "sent_by"),
                        received_by: s(v, "received_by"),
                        rst_reason: s(v, "rst_reason"),
                        pid: u(v, "pid"),
                        comm: s(v, "comm"),
                    }),
                    Some("process_event") => procs.push(ProcEvt {
                        cap: i,
                        time: time_of(v),
                        event: s(v, "event").unwrap_or_default(),
                        pid: u(v, "pid"),
                        comm: s(v, "comm").unwrap_or_default(),
                        redis: v.get("redis").and_then(Value::as_bool).unwrap_or(false),
                        signal: parse_signal(v),
                        oom: parse_oom(v),
                    }),
                    Some("redis_status") => statuses.push(Status {
                        time: time_of(v),
                        host: i,
                        port: u(v, "port"),
                        status: s(v, "status").unwrap_or_default(),
                        pid: u(v, "pid"),
                        version: s(v, "version"),
                        uptime_s: u(v, "uptime_s"),
                        restarted: v.get("restarted").and_then(Value::as_bool).unwrap_or(false),
                        error: s(v, "error"),
                        log_readable: v.get("log_readable").and_then(Value::as_bool),
                    }),
                    _ => {}
                }
            }
        }
        // Records without a time sort last; the sort is stable, so file order otherwise.
        let by_time = |t: Option<SystemTime>| (t.is_none(), t);
        recs.sort_by_key(|r| by_time(r.time));
        resets.sort_by_key(|r| by_time(r.time));
        procs.sort_by_key(|p| by_time(p.time));
        statuses.sort_by_key(|p| by_time(p.time));

        // Group the records of one connection's two ends (from different captures).
        let mut groups: Vec<Group> = Vec::new();
        let mut by_key: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for r in recs {
            let key = (r.server.clone(), r.client.clone());
            let slot = by_key.get(&key).and_then(|gs| {
                gs.iter().rev().copied().find(|&g| {
                    let grp = &groups[g];
                    grp.recs.iter().all(|o| o.cap != r.cap) && near(grp.recs[0].time, r.time)
                })
            });
            match slot {
                Some(g) => groups[g].recs.push(r),
                None => {
                    by_key.entry(key).or_default().push(groups.len());
                    groups.push(Group {
                        recs: vec![r],
                        resets: Vec::new(),
                    });
                }
            }
        }
        // A reset joins its connection's group (as evidence for the merge) and stays
        // listed with the other resets.
        for r in &resets {
            let key = (r.server.clone(), r.client.clone());
            let g = by_key.get(&key).and_then(|gs| {
                gs.iter()
                    .copied()
                    .find(|&g| near(groups[g].recs[0].time, r.time))
            });
            if let Some(g) = g {
                groups[g].resets.push(r.clone());
            }
        }
        let mut conns: Vec<Conn> = groups.into_iter().map(|g| merge(g, &caps)).collect();
        conns.sort_by_key(|c| by_time(c.rec.time));
        for c in &mut conns {
            if let Some(n) = process_note(c, &procs) {
                c.notes.push(n);
            }
        }

        let start = caps.iter().filter_map(|c| c.start).min();
        let end = caps.iter().filter_map(|c| c.end).max();
        Self {
            caps,
            conns,
            resets,
            procs,
            statuses,
            start,
            end,
        }
    }

    pub fn summary(&self) -> Summary {
        let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
        for c in &self.conns {
            *by_cause.entry(c.cause.clone()).or_default() += 1;
        }
        Summary {
            connections: self.conns.len() as u64,
            dominant_cause: ranked_causes(&by_cause).first().map(|(c, _)| c.clone()),
            by_cause,
            lost_events: self
                .caps
                .iter()
                .filter_map(|c| c.ended.as_ref())
                // Saturating: the counts come from the files, and may be anything.
                .fold(0u64, |all, e| all.saturating_add(e.lost)),
            middlebox_proven: self.conns.iter().filter(|c| c.middlebox_proven).count() as u64,
        }
    }
}

/// A client-side close right after its process was OOM-killed, killed or exited: the
/// kernel event that explains the client's RST or FIN. (Redis's own end is in the cause.)
fn process_note(c: &Conn, procs: &[ProcEvt]) -> Option<String> {
    let r = &c.rec;
    if !r.closer_is_client() {
        return None;
    }
    let (pid, t) = (r.pid?, r.time?);
    let p = procs
        .iter()
        .filter(|p| p.cap == r.cap && p.pid == Some(pid))
        .filter(|p| p.event == "oom_kill" || p.event == "exit" || p.is_fatal_signal())
        .find(|p| {
            p.time
                .is_some_and(|pt| (0.0..=1.0).contains(&secs_between(pt, t)))
        })?;
    let what = match (p.event.as_str(), &p.signal) {
        ("oom_kill", _) => "the OOM killer chose".to_string(),
        ("signal", Some(s)) => format!("{} was sent to", s.name),
        _ => "exit of".to_string(),
    };
    let ms = p.time.map(|pt| secs_between(pt, t) * 1000.0).unwrap_or(0.0);
    Some(format!(
        "kernel: {what} {} (pid {pid}) {ms:.1} ms before this close",
        p.comm
    ))
}

/// Causes by count, most first; ties in the order of `Cause::ALL` (Redis's own first).
pub(super) fn ranked_causes(by_cause: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let order = |c: &str| {
        crate::classify::Cause::ALL
            .iter()
            .position(|k| k.as_str() == c)
            .unwrap_or(usize::MAX)
    };
    let mut v: Vec<(String, u64)> = by_cause.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(order(&a.0).cmp(&order(&b.0))));
    v
}

/// One connection end from the records of its ends. The best-settled cause wins; a RST
/// received at one end that the other end's capture proves it never sent is a middlebox.
fn merge(g: Group, caps: &[CapInfo]) -> Conn {
    let mut recs = g.recs;
    let best = (0..recs.len())
        .min_by_key(|&i| {
            let r = &recs[i];
            let saw_closer = r.closed_by_side.as_deref() == Some(r.observed_on.as_str());
            (rank(&r.cause), !saw_closer, i)
        })
        .unwrap_or(0);
    let rec = recs.remove(best);
    let others = recs;
    let mut conn = Conn {
        cause: rec.cause.clone(),
        closed_by: crate::classify::Cause::ALL
            .iter()
            .find(|c| c.as_str() == rec.cause)
            .map(|c| c.closed_by().to_string())
            .unwrap_or_else(|| "unknown".into()),
        rec,
        others,
        notes: Vec::new(),
        middlebox_proven: false,
        proof_line: None,
    };
    if conn.others.is_empty() {
        return conn;
    }
    let all: Vec<&Rec> = std::iter::once(&conn.rec).chain(&conn.others).collect();
    let (proven, notes) = middlebox_proof(&all, &g.resets, caps);
    conn.notes = notes;
    if proven {
        let hosts: Vec<&str> = std::iter::once(&conn.rec)
            .chain(&conn.others)
            .filter_map(|r| caps.get(r.cap).map(|c| c.host.as_str()))
            .collect();
        conn.proof_line = Some(format!(
            "proven from both ends (captures on {}): a RST arrived that neither end's TCP \
             stack sent",
            hosts.join(" and ")
        ));
        conn.middlebox_proven = true;
        if rank(&conn.cause) >= 3 {
            conn.cause = "middlebox_reset".into();
            conn.closed_by = "middlebox".into();
        }
    }
    conn
}

/// A RST received at one end (E) whose sender would be the other end (S): proven to come
/// from the path when S's own capture saw the connection, could see a RST being sent
/// (tcp_send_reset attached), lost nothing and covered the time, and neither capture
/// shows S sending one.
fn middlebox_proof(recs: &[&Rec], resets: &[Reset], caps: &[CapInfo]) -> (bool, Vec<String>) {
    let mut received: Vec<(&str, Option<SystemTime>, usize)> = recs
        .iter()
        .filter(|r| r.kernel_event == "received_rst" && !r.both_ends_local)
        .map(|r| (r.observed_on.as_str(), r.time, r.cap))
        .collect();
    received.extend(
        resets
            .iter()
            .filter_map(|r| Some((r.received_by.as_deref()?, r.time, r.cap))),
    );
    let mut notes = Vec::new();
    let mut proven_at: BTreeSet<&str> = BTreeSet::new();
    for (end, t, cap_e) in received {
        let Some(sender) = other_side(end) else {
            continue;
        };
        if proven_at.contains(end) {
            continue;
        }
        let sent = recs.iter().any(|r| {
            r.resets
                .iter()
                .any(|n| n.direction == "sent" && n.side == sender)
                || (r.closed_by_side.as_deref() == Some(sender)
                    && r.packet.as_deref() == Some("RST")
                    && r.kernel_event == "aborted")
        }) || resets.iter().any(|r| r.sent_by.as_deref() == Some(sender));
        if sent {
            continue;
        }
        // Captures other than the receiver's that saw the sender's own socket.
        let mut witnesses: Vec<usize> = recs
            .iter()
            .filter(|r| {
                r.cap != cap_e
                    && !r.both_ends_local
                    && (r.observed_on == sender || r.resets.iter().any(|n| n.side == sender))
            })
            .map(|r| r.cap)
            .chain(
                resets
                    .iter()
                    .filter(|r| {
                        r.cap != cap_e
                            && (r.received_by.as_deref() == Some(sender)
                                || r.sent_by.as_deref() == Some(sender))
                    })
                    .map(|r| r.cap),
            )
            .collect();
        witnesses.sort_unstable();
        witnesses.dedup();
        let host_e = caps.get(cap_e).map(|c| c.host.as_str()).unwrap_or("?");
        for w in witnesses {
            let Some(c) = caps.get(w) else { continue };
            let mut why_not = Vec::new();
            if !c.sees_sent_resets {
                why_not.push(
                    "tcp:tcp_send_reset was not attached there, so a RST it sent would be unseen"
                        .to_string(),
                );
            }
            match &c.ended {
                None => why_not.push(
                    "that capture did not end cleanly: its lost events are unknown".to_string(),
                ),
                Some(e) if e.lost > 0 => why_not.push(format!(
                    "that capture lost {} events, one of which could be the RST",
                    e.lost
                )),
                Some(_) => {}
            }
            let covered = match (t, c.start, c.end) {
                (Some(t), Some(a), Some(b)) => {
                    secs_between(a, t) >= 0.0 && secs_between(t, b) >= 0.0
                }
                _ => false,
            };
            if !covered {
                why_not.push("that capture's window does not cover the RST's time".to_string());
            }
            if why_not.is_empty() {
                notes.push(format!(
                    "both ends' captures: the {end} end (capture on {host_e}) received a RST at \
                     {} from the {sender}'s address, and the {sender} end's own capture (on {}: \
                     tcp:tcp_send_reset attached, no lost events) shows its TCP stack sent no \
                     RST: a device in the path (firewall, NAT, conntrack, load balancer) reset \
                     the connection",
                    fmt_time(t),
                    c.host
                ));
                proven_at.insert(end);
                break;
            }
            notes.push(format!(
                "the {end} end (capture on {host_e}) received a RST at {} that the {sender} end's \
                 capture (on {}) does not show being sent, but it cannot prove it was not: {}",
                fmt_time(t),
                c.host,
                why_not.join("; ")
            ));
        }
    }
    (!proven_at.is_empty(), notes)
}
