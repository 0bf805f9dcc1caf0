//! Cause classification: from what the kernel saw and what Redis, its log and /proc
//! said, the reason a connection ended, with the evidence.
//!
//! The rule of this module: a cause needs evidence. Each rule names the facts it relies
//! on in `evidence`, and when nothing settles it the answer is `redis_close_unknown` or
//! `unknown`. A wrong cause is worse than an honest "unknown".
//!
//! - this file: the entry point and the kernel's own rules (who sent the FIN or RST);
//! - [`redis`]: why Redis closed it (its log, CLIENT LIST, config, its process ending);
//! - [`code_paths`]: what the uprobes on redis-server say decided the close;
//! - [`counters`]: INFO counter increases across a poll window.
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::cause::{Cause, ClosedBy};
use crate::kernel::assemble::KernelClose;
use crate::schema::{
    ClientClass, Direction, KernelEvent, Packet, PathFinding, ProbeStatus, ProcessEvent,
    RedisCodePath, RedisSettings, Side,
};
use crate::sources::redis::{ClientEntry, RedisConfig};
use crate::sources::redis_log::LogEvent;

pub mod code_paths;
pub mod counters;
pub mod path;
mod redis;
#[cfg(test)]
mod tests;

pub use counters::{CounterWindow, apply_counters};

/// Everything known besides the kernel's record of this connection.
#[derive(Debug)]
pub struct Facts<'a> {
    /// Pids of the Redis servers this capture watches.
    pub redis_pids: &'a [u32],
    pub proc_events: &'a [ProcessEvent],
    pub log: &'a [LogEvent],
    /// The last CLIENT LIST entry seen for this connection's client address, and when.
    pub client: Option<(&'a ClientEntry, SystemTime)>,
    pub config: Option<&'a RedisConfig>,
    /// When the `timeout` in `config` was set at run time (between two polls), if it
    /// changed during the capture.
    pub timeout_changed: Option<(SystemTime, SystemTime)>,
    /// Whether Redis's own view (INFO/CLIENT LIST) was available, and why not.
    pub redis_view: Result<(), &'a str>,
    /// When the first CLIENT LIST of this server was taken.
    pub first_client_list: Option<SystemTime>,
    /// Whether the log could be read, and why not.
    pub log_view: Result<(), &'a str>,
    /// The Redis functions the uprobes saw free this client.
    pub code_path: Option<&'a RedisCodePath>,
    /// The kernel probes this capture runs without, with why: a cause that rests on
    /// one of them falls back to unknown, never to the next plausible cause.
    pub missing_probes: &'a [ProbeStatus],
}

/// The probes the running capture lacks, set once by the loader
/// ([`crate::kernel::load::load`]); empty until then.
static MISSING_PROBES: OnceLock<Vec<ProbeStatus>> = OnceLock::new();

/// Records, once per process, which probes this kernel could not run.
pub fn set_missing_probes(missing: Vec<ProbeStatus>) {
    let _ = MISSING_PROBES.set(missing);
}

/// What [`set_missing_probes`] recorded, for [`Facts::missing_probes`].
pub fn missing_probes() -> &'static [ProbeStatus] {
    MISSING_PROBES.get().map_or(&[], Vec::as_slice)
}

impl Facts<'_> {
    /// Why `probe` (`oom:mark_victim`, ...) is not running, when it is not.
    pub fn missing(&self, probe: &str) -> Option<&ProbeStatus> {
        self.missing_probes.iter().find(|p| p.probe == probe)
    }
}

/// Where a piece of evidence comes from. Rules read this, never the sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kernel's own account of the close (always the first piece).
    KernelClose,
    /// Other kernel facts: the TCP stack's RSTs, process events.
    Kernel,
    /// The uprobes on redis-server.
    Uprobe,
    RedisLog,
    ClientList,
    /// INFO counters.
    Info,
    /// CONFIG GET, and what follows from it.
    Config,
    /// Why a source was not available.
    Unavailable,
}

/// One sentence of evidence, naming its source in its words.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub source: Source,
    pub text: String,
}

impl Evidence {
    pub fn new(source: Source, text: impl Into<String>) -> Self {
        Self {
            source,
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub cause: Cause,
    pub evidence: Vec<Evidence>,
    pub client_class: Option<ClientClass>,
    /// For CLIENT KILL or a kill signal: who did it, when known.
    pub killer: Option<String>,
    /// The Redis settings the cause rests on.
    pub settings: RedisSettings,
    /// What the packets say about the path (a device that dropped the flow, ...).
    pub path: Option<PathFinding>,
}

impl Verdict {
    fn new(cause: Cause, evidence: Vec<Evidence>) -> Self {
        Self {
            cause,
            evidence,
            client_class: None,
            killer: None,
            settings: RedisSettings::default(),
            path: None,
        }
    }

    pub fn closed_by(&self) -> ClosedBy {
        self.cause.closed_by()
    }

    /// Whether the uprobes saw the Redis code path that freed the client.
    pub fn seen_by_uprobe(&self) -> bool {
        self.evidence.iter().any(|e| e.source == Source::Uprobe)
    }

    /// The sentences, for the record.
    pub fn sentences(&self) -> Vec<String> {
        self.evidence.iter().map(|e| e.text.clone()).collect()
    }
}

/// Classifies one ended connection. Counter deltas (evictions, CLIENT KILL calls) are
/// applied afterwards across a poll window by [`apply_counters`], since one counter
/// increase can only explain one connection.
pub fn classify(c: &KernelClose, facts: &Facts<'_>) -> Verdict {
    let mut v = classify_close(c, facts);
    if v.path.is_none()
        && let Some((finding, ev)) = path::path_finding(c)
    {
        v.evidence.push(ev);
        v.path = Some(finding);
    }
    v
}

fn classify_close(c: &KernelClose, facts: &Facts<'_>) -> Verdict {
    let mut kernel = vec![Evidence::new(Source::KernelClose, kernel_sentence(c))];
    if c.kernel_event == KernelEvent::Timeout {
        kernel.push(Evidence::new(
            Source::Kernel,
            format!(
                "kernel: the {} end's TCP stack gave up on the connection{}",
                c.observed_on.as_str(),
                c.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ));
        return Verdict::new(Cause::KernelReset, kernel);
    }
    // An abort with no RST and no socket error is what a timer's abort (retransmission
    // or keepalive timeout) looks like where the error tracepoint does not exist (5.10):
    // say so rather than guess.
    if c.kernel_event == KernelEvent::Aborted
        && c.packet.is_none()
        && let Some(m) = facts.missing("sock:inet_sk_error_report")
    {
        kernel.push(Evidence::new(
            Source::Unavailable,
            format!(
                "kernel: the {} end's socket was aborted without a RST; {} is not running ({}), \
                 so a retransmission or keepalive timeout cannot be told from another abort",
                c.observed_on.as_str(),
                m.probe,
                m.why.as_deref().unwrap_or("unavailable on this kernel")
            ),
        ));
        return Verdict::new(Cause::Unknown, kernel);
    }
    match (c.closed_by_side, c.packet, c.kernel_event) {
        (Some(Side::Client), Some(Packet::Fin), _) => Verdict::new(Cause::ClientClose, kernel),
        (Some(Side::Client), Some(Packet::Rst), KernelEvent::Aborted) => {
            Verdict::new(Cause::ClientReset, kernel)
        }
        (Some(Side::Client), Some(Packet::Rst), KernelEvent::ReceivedRst)
        | (Some(Side::Server), _, KernelEvent::ReceivedRst) => received_rst(c, facts, kernel),
        (Some(Side::Server), _, _) => {
            // Redis's own decision, seen by the uprobes: the strongest evidence there is.
            match code_paths::from_code_path(c, facts, &mut kernel) {
                Some(v) => v,
                None => redis::redis_close(c, facts, kernel),
            }
        }
        _ => Verdict::new(Cause::Unknown, kernel),
    }
}

/// The kernel's own account of the close: who sent what, from which task.
fn kernel_sentence(c: &KernelClose) -> String {
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
        (Some(side), Some(Packet::Rst)) if c.kernel_event == KernelEvent::ReceivedRst => {
            format!(
                "kernel: the {} end received a RST from the {}'s address{reason}",
                c.observed_on.as_str(),
                side.as_str()
            )
        }
        (Some(side), Some(p)) => format!(
            "kernel: the {} end sent the first {}{reason}{who}",
            side.as_str(),
            p.as_str()
        ),
        _ => format!(
            "kernel: {} seen on the {} end",
            c.kernel_event.as_str(),
            c.observed_on.as_str()
        ),
    }
}

/// A RST that arrived: from the other end, or from something in the path.
fn received_rst(c: &KernelClose, facts: &Facts<'_>, mut ev: Vec<Evidence>) -> Verdict {
    let sender = c.closed_by_side.unwrap_or(Side::Unknown);
    let sent_by_sender = c
        .resets
        .iter()
        .any(|r| r.direction == Direction::Sent && r.side == sender);
    let name = sender.as_str();
    if c.both_ends_local && !sent_by_sender {
        ev.push(Evidence::new(
            Source::Kernel,
            format!(
                "kernel: both ends of this connection are on this host and the {name} end's \
                 TCP stack never sent a RST (tcp_send_reset did not fire for it): the RST came \
                 from something in the path (firewall, NAT, conntrack, load balancer)"
            ),
        ));
        return Verdict::new(Cause::MiddleboxReset, ev);
    }
    if sent_by_sender {
        ev.push(Evidence::new(
            Source::Kernel,
            format!("kernel: the {name} end's TCP stack sent that RST"),
        ));
        let cause = if sender == Side::Client {
            Cause::ClientReset
        } else {
            Cause::RedisCloseUnknown
        };
        return Verdict::new(cause, ev);
    }
    // The other end is not on this host: its packets tell whether it sent the RST.
    let peer = path::end_name(sender);
    let addr = if sender == Side::Server {
        c.server
    } else {
        c.client
    };
    let arrivals = c.arrivals.iter().find(|a| a.at == c.observed_on);
    match arrivals.map(|a| (a, path::rst_origin(a, peer, addr))) {
        Some((a, path::RstOrigin::Device(found))) => {
            ev.push(Evidence::new(
                Source::Kernel,
                format!(
                    "kernel: the RST came from the {name}'s address, which is not on this host; \
                     its packets say a device in the path sent it{}",
                    if sender == Side::Server {
                        " (a RST claimed from Redis)"
                    } else {
                        ""
                    }
                ),
            ));
            ev.extend(found);
            let mut v = Verdict::new(Cause::MiddleboxReset, ev);
            if let Some(q) = path::quiet_before_rst(a) {
                let finding = format!(
                    "a device in the path reset this flow after {:.1} s with no packet from the \
                     {peer}: its idle timeout is at most that",
                    q as f64 / 1e9
                );
                v.evidence
                    .push(Evidence::new(Source::Kernel, format!("path: {finding}")));
                v.path = Some(PathFinding {
                    kind: crate::schema::PathKind::DeviceDroppedFlow,
                    idle_s: Some(q as f64 / 1e9),
                    finding,
                });
            }
            v
        }
        Some((_, path::RstOrigin::Peer(found))) => {
            ev.extend(found);
            let cause = if sender == Side::Client {
                Cause::ClientReset
            } else {
                Cause::RedisCloseUnknown
            };
            Verdict::new(cause, ev)
        }
        other => {
            ev.push(Evidence::new(
                Source::Kernel,
                format!(
                    "kernel: the RST came from the {name}'s address, which is not on this host: \
                     nothing here tells that end from a device in the path"
                ),
            ));
            match other {
                Some((_, path::RstOrigin::Unsure(found))) => ev.extend(found),
                _ => {
                    if let Some(m) = facts.missing(crate::kernel::packets::PACKETS_PROBE) {
                        ev.push(Evidence::new(
                            Source::Unavailable,
                            format!(
                                "packets: {} is not running ({}): the RST cannot be checked \
                                 against {peer}'s packets",
                                m.probe,
                                m.why.as_deref().unwrap_or("unavailable")
                            ),
                        ));
                    }
                }
            }
            Verdict::new(Cause::PeerReset, ev)
        }
    }
}
