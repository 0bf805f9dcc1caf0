//! The captures' records as the report needs them: built from the typed records of
//! [`crate::schema`] (a missing field read as unknown, not an error), one timeline across
//! captures, and the two ends of a connection seen by two captures merged into one
//! connection end. Texts that redaction rewrites (addresses, names, evidence) are held as
//! strings here: this is the report's view, after the records.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::read::Capture;
use crate::cause::{Cause, ClosedBy};
use crate::schema::{
    self, CaptureEnded, CaptureStarted, ConnectionClosed, Direction, EndedBy, KernelEvent, Packet,
    ProcessEventKind, ProcessRef, RedisState, Side,
};
pub(super) use crate::time::secs_between;

/// Two records of the same (server, client) pair this close in time are the two ends of
/// one connection: the closing end holds the 4-tuple in TIME_WAIT for 60 s, so the same
/// pair cannot be a new connection sooner.
const SAME_CONNECTION: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(super) struct ProcRef {
    pub pid: Option<u64>,
    pub comm: String,
}

fn proc_ref(p: &Option<ProcessRef>) -> Option<ProcRef> {
    p.as_ref().map(ProcRef::from)
}

impl From<&ProcessRef> for ProcRef {
    fn from(p: &ProcessRef) -> Self {
        Self {
            pid: Some(u64::from(p.pid)),
            comm: p.comm.clone(),
        }
    }
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
    pub ended_by: EndedBy,
    pub lost: u64,
    pub connections_closed: u64,
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
    pub port: u64,
    pub status: RedisState,
    pub pid: Option<u64>,
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    pub restarted: bool,
    pub error: Option<String>,
    pub log_readable: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Signal {
    pub name: String,
    pub origin: String,
    pub sender: Option<ProcRef>,
    pub result: String,
    fatal: bool,
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
    pub event: ProcessEventKind,
    pub pid: Option<u64>,
    pub comm: String,
    pub redis: bool,
    pub signal: Option<Signal>,
    pub oom: Option<Oom>,
}

impl ProcEvt {
    /// A signal that ends a process unless handled (for the chart's markers).
    pub fn is_fatal_signal(&self) -> bool {
        self.signal.as_ref().is_some_and(|s| s.fatal)
    }

    fn of(cap: usize, p: &schema::ProcessEvent) -> Self {
        Self {
            cap,
            time: p.time,
            event: p.event,
            pid: Some(u64::from(p.pid)),
            comm: p.comm.clone(),
            redis: p.redis,
            signal: p.signal.as_ref().map(|s| Signal {
                name: if s.name.is_empty() {
                    format!("signal {}", s.number)
                } else {
                    s.name.clone()
                },
                origin: s.origin.clone(),
                sender: Some(ProcRef::from(&s.sender)),
                result: s.result.clone(),
                fatal: s.is_fatal(),
            }),
            oom: p.oom.as_ref().map(|o| Oom {
                anon_rss_kb: Some(o.anon_rss_kb),
                invoked_by: Some(ProcRef::from(&o.invoked_by)),
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Reset {
    pub cap: usize,
    pub time: Option<SystemTime>,
    pub server: String,
    pub client: String,
    pub sent_by: Option<Side>,
    pub received_by: Option<Side>,
    pub rst_reason: Option<String>,
    pub pid: Option<u64>,
    pub comm: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct ResetNote {
    pub direction: Direction,
    pub side: Side,
}

/// One `connection_closed` record.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub cap: usize,
    pub time: Option<SystemTime>,
    pub cause: Cause,
    pub evidence: Vec<String>,
    /// Index in `evidence` of the key piece (see `ConnectionClosed::key_evidence`).
    pub key: Option<usize>,
    pub client_class: Option<String>,
    pub killer: Option<String>,
    pub client_name: Option<String>,
    pub server: String,
    pub client: String,
    pub closed_by_side: Option<Side>,
    pub packet: Option<Packet>,
    pub pid: Option<u64>,
    pub comm: Option<String>,
    pub rst_reason: Option<String>,
    pub duration_ms: Option<f64>,
    pub kernel_event: KernelEvent,
    pub observed_on: Side,
    pub server_process: Option<ProcRef>,
    pub client_process: Option<ProcRef>,
    pub both_ends_local: bool,
    pub resets: Vec<ResetNote>,
    /// The settings its cause rests on.
    pub settings: schema::RedisSettings,
    /// The traced Redis it belongs to (container, pid, network namespace), as text.
    pub redis_server: Option<String>,
    /// What the packets said about the path.
    pub path: Option<schema::PathFinding>,
}

impl Rec {
    fn of(cap: usize, c: &ConnectionClosed) -> Self {
        let settings = c.settings();
        let client_name = c
            .redis_client
            .as_ref()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| settings.logged_client_name.clone());
        Self {
            cap,
            time: c.time,
            cause: c.cause,
            evidence: c.evidence.clone(),
            key: c.key_evidence_index(),
            client_class: c.client_class.map(|k| k.as_str().to_string()),
            killer: c.killer.clone(),
            client_name,
            server: c.server.to_string(),
            client: c.client.to_string(),
            closed_by_side: c.closed_by_side,
            packet: c.packet,
            pid: c.pid.map(u64::from),
            comm: c.comm.clone(),
            rst_reason: c.rst_reason.clone(),
            duration_ms: c.duration_ms,
            kernel_event: c.kernel_event,
            observed_on: c.observed_on,
            server_process: proc_ref(&c.server_process),
            client_process: proc_ref(&c.client_process),
            both_ends_local: c.both_ends_local,
            redis_server: c.redis_server.as_ref().map(|s| s.to_string()),
            path: c.path.clone(),
            resets: c
                .resets
                .iter()
                .map(|r| ResetNote {
                    direction: r.direction,
                    side: r.side,
                })
                .collect(),
            settings,
        }
    }

    /// The closing task is a client's (its process name is the client's to redact).
    pub fn closer_is_client(&self) -> bool {
        self.closed_by_side == Some(Side::Client)
    }
}

/// One connection end of the timeline: one record, or the records of its two ends.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    /// The record whose cause the connection takes.
    pub rec: Rec,
    /// The other end's records, from other captures.
    pub others: Vec<Rec>,
    pub cause: Cause,
    pub closed_by: ClosedBy,
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
    /// key evidence of the first record that has more than the kernel's own account.
    pub fn key_evidence(&self) -> Option<String> {
        if self.middlebox_proven {
            return self
                .proof_line
                .clone()
                .or_else(|| self.notes.first().cloned());
        }
        let all = || std::iter::once(&self.rec).chain(&self.others);
        all()
            .find(|r| r.key.is_some_and(|k| k > 0))
            .or(Some(&self.rec))
            .and_then(|r| r.evidence.get(r.key?))
            .cloned()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Connection ends in the timeline (a connection seen from both ends counts once).
    pub connections: u64,
    pub by_cause: std::collections::BTreeMap<String, u64>,
    /// The most frequent cause.
    pub dominant_cause: Option<String>,
    /// Summed over the captures: records the kernel could not hand over.
    pub lost_events: u64,
    /// Connections whose RST, received at one end, two captures prove neither end sent.
    pub middlebox_proven: u64,
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
    let default_start = CaptureStarted::default();
    let st = c
        .records
        .iter()
        .find_map(|r| match r {
            schema::Record::CaptureStarted(s) => Some(s),
            _ => None,
        })
        .unwrap_or(&default_start);
    let ports: Vec<Port> = st
        .ports
        .iter()
        .map(|p| Port {
            port: u64::from(p.port),
            process: proc_ref(&p.process),
        })
        .collect();
    let probes_unavailable: Vec<Probe> = st
        .probes_unavailable
        .iter()
        .map(|p| Probe {
            probe: p.probe.clone(),
            why: p.why.clone(),
            cost: p.cost.clone(),
        })
        .collect();
    let ended_rec: Option<&CaptureEnded> = c.records.iter().rev().find_map(|r| match r {
        schema::Record::CaptureEnded(e) => Some(e),
        _ => None,
    });
    let ended = ended_rec.map(|e| Ended {
        ended_by: e.ended_by,
        lost: e.lost_events,
        connections_closed: e.counts.connections_closed,
        untracked: e.untracked_connections,
        bad_records: e.bad_records,
    });
    let last_time = c.records.iter().filter_map(schema::Record::time).max();
    let closed_records = c
        .records
        .iter()
        .filter(|r| matches!(r, schema::Record::ConnectionClosed(_)))
        .count() as u64;
    let mut warnings: Vec<String> = c
        .records
        .iter()
        .filter_map(|r| match r {
            schema::Record::ReportWarning(w) => Some(w.message.clone()),
            _ => None,
        })
        .collect();
    match &ended {
        None => warnings.push(
            "no capture_ended record: the capture did not end cleanly (killed, or still \
             running when copied); its lost-event count is unknown"
                .into(),
        ),
        Some(e) => {
            if e.connections_closed != closed_records {
                warnings.push(format!(
                    "capture_ended counts {} connection ends, the file holds {closed_records}",
                    e.connections_closed
                ));
            }
        }
    }
    let file = c
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| c.path.display().to_string());
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "?".to_string()
        } else {
            s.to_string()
        }
    };
    CapInfo {
        file,
        host: or_unknown(&st.host),
        kernel: or_unknown(&st.kernel),
        tool_version: or_unknown(&st.tool_version),
        start: st.time,
        end: ended_rec.and_then(|e| e.time).or(last_time),
        local_redis: ports.iter().any(|p| p.process.is_some()),
        ports,
        sees_sent_resets: st.probes_attached.iter().any(|p| p == "tcp:tcp_send_reset")
            && !probes_unavailable
                .iter()
                .any(|p| p.probe == "tcp:tcp_send_reset"),
        probes_unavailable,
        open_at_start: st.open_connections_at_start as u64,
        ended,
        warnings,
    }
}

fn other_side(side: Side) -> Option<Side> {
    match side {
        Side::Unknown => None,
        s => Some(s.other()),
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
            for r in &c.records {
                match r {
                    schema::Record::ConnectionClosed(c) => recs.push(Rec::of(i, c)),
                    schema::Record::Reset(r) => resets.push(Reset {
                        cap: i,
                        time: r.time,
                        server: r.server.to_string(),
                        client: r.client.to_string(),
                        sent_by: r.sent_by,
                        received_by: r.received_by,
                        rst_reason: r.rst_reason.clone(),
                        pid: r.pid.map(u64::from),
                        comm: r.comm.clone(),
                    }),
                    schema::Record::ProcessEvent(p) => procs.push(ProcEvt::of(i, p)),
                    schema::Record::RedisStatus(st) => statuses.push(Status {
                        time: st.time,
                        host: i,
                        port: u64::from(st.port),
                        status: st.status,
                        pid: st.pid.map(u64::from),
                        version: st.version.clone(),
                        uptime_s: st.uptime_s,
                        restarted: st.restarted,
                        error: st.error.clone(),
                        log_readable: st.log_readable,
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
            *by_cause.entry(c.cause.as_str().to_string()).or_default() += 1;
        }
        Summary {
            connections: self.conns.len() as u64,
            dominant_cause: ranked_causes(&by_cause)
                .first()
                .map(|(c, _)| c.as_str().to_string()),
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
        .filter(|p| p.event != ProcessEventKind::Signal || p.is_fatal_signal())
        .find(|p| {
            p.time
                .is_some_and(|pt| (0.0..=1.0).contains(&secs_between(pt, t)))
        })?;
    let what = match (p.event, &p.signal) {
        (ProcessEventKind::OomKill, _) => "the OOM killer chose".to_string(),
        (ProcessEventKind::Signal, Some(s)) => format!("{} was sent to", s.name),
        _ => "exit of".to_string(),
    };
    let ms = p.time.map(|pt| secs_between(pt, t) * 1000.0).unwrap_or(0.0);
    Some(format!(
        "kernel: {what} {} (pid {pid}) {ms:.1} ms before this close",
        p.comm
    ))
}

/// Causes by count, most first; ties in the order of `Cause::ALL` (Redis's own first).
/// Counts are by cause name (as `capture_ended` has them); a name this version does not
/// know counts as `unknown`.
pub(super) fn ranked_causes(by_cause: &BTreeMap<String, u64>) -> Vec<(Cause, u64)> {
    let mut counts: BTreeMap<Cause, u64> = BTreeMap::new();
    for (name, n) in by_cause {
        let c = Cause::named(name).unwrap_or_default();
        *counts.entry(c).or_default() += *n;
    }
    let mut v: Vec<(Cause, u64)> = counts.into_iter().collect();
    // BTreeMap order is Cause::ALL order; the sort is stable.
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    v
}

/// One connection end from the records of its ends. The best-settled cause wins; a RST
/// received at one end that the other end's capture proves it never sent is a middlebox.
fn merge(g: Group, caps: &[CapInfo]) -> Conn {
    let mut recs = g.recs;
    let best = (0..recs.len())
        .min_by_key(|&i| {
            let r = &recs[i];
            let saw_closer = r.closed_by_side == Some(r.observed_on);
            (r.cause.rank(), !saw_closer, i)
        })
        .unwrap_or(0);
    let rec = recs.remove(best);
    let others = recs;
    let mut conn = Conn {
        cause: rec.cause,
        closed_by: rec.cause.closed_by(),
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
        if conn.cause.rank() >= 3 {
            conn.cause = Cause::MiddleboxReset;
            conn.closed_by = ClosedBy::Middlebox;
        }
    }
    conn
}

/// A RST received at one end (E) whose sender would be the other end (S): proven to come
/// from the path when S's own capture saw the connection, could see a RST being sent
/// (tcp_send_reset attached), lost nothing and covered the time, and neither capture
/// shows S sending one.
fn middlebox_proof(recs: &[&Rec], resets: &[Reset], caps: &[CapInfo]) -> (bool, Vec<String>) {
    let mut received: Vec<(Side, Option<SystemTime>, usize)> = recs
        .iter()
        .filter(|r| r.kernel_event == KernelEvent::ReceivedRst && !r.both_ends_local)
        .map(|r| (r.observed_on, r.time, r.cap))
        .collect();
    received.extend(
        resets
            .iter()
            .filter_map(|r| Some((r.received_by?, r.time, r.cap))),
    );
    let mut notes = Vec::new();
    let mut proven_at: BTreeSet<Side> = BTreeSet::new();
    for (end, t, cap_e) in received {
        let Some(sender) = other_side(end) else {
            continue;
        };
        if proven_at.contains(&end) {
            continue;
        }
        let sent = recs.iter().any(|r| {
            r.resets
                .iter()
                .any(|n| n.direction == Direction::Sent && n.side == sender)
                || (r.closed_by_side == Some(sender)
                    && r.packet == Some(Packet::Rst)
                    && r.kernel_event == KernelEvent::Aborted)
        }) || resets.iter().any(|r| r.sent_by == Some(sender));
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
                            && (r.received_by == Some(sender) || r.sent_by == Some(sender))
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
