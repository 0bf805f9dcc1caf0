//! The records redis-trace writes, one JSON object per line (see docs/json-lines.md), and
//! reads back in `report`: every line type is defined here once, Serialize and Deserialize.
//! Field names are the public format: change them only with `SCHEMA_VERSION`.
//!
//! Reading is tolerant, as a postmortem needs it to be: a missing field reads as its
//! default (an unknown time, an empty list, `unknown`), so a hand-cut or older capture is
//! still reported on. The capture always writes every field.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::sources::procinfo::Container;

pub use crate::cause::{Cause, ClosedBy};

pub const SCHEMA_VERSION: u32 = 1;

/// One line of a capture, by its `"type"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    CaptureStarted(CaptureStarted),
    ConnectionClosed(Box<ConnectionClosed>),
    Reset(ResetSeen),
    ProcessEvent(ProcessEvent),
    RedisStatus(RedisStatus),
    RedisUprobes(RedisUprobes),
    CaptureEnded(CaptureEnded),
    /// Written by `report`'s reader only, for what it tolerated (a line cut short).
    ReportWarning(ReportWarning),
}

impl Record {
    pub fn time(&self) -> Option<SystemTime> {
        match self {
            Record::CaptureStarted(r) => r.time,
            Record::ConnectionClosed(r) => r.time,
            Record::Reset(r) => r.time,
            Record::ProcessEvent(r) => r.time,
            Record::RedisStatus(r) => r.time,
            Record::RedisUprobes(r) => r.time,
            Record::CaptureEnded(r) => r.time,
            Record::ReportWarning(_) => None,
        }
    }
}

/// serde for `time` fields: RFC 3339 with microseconds; unknown (None) when missing.
mod time_opt {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => crate::time::micros::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<std::borrow::Cow<str>>::deserialize(d)?;
        text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// An address read from a record without one: 0.0.0.0:0.
fn no_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

/// A process, as named by the kernel (comm) or /proc.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: String,
}

/// Which end of a connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Server,
    Client,
    /// A side the kernel did not name (or a record without it).
    #[default]
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
            Side::Unknown => "unknown",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Server => Side::Client,
            Side::Client => Side::Server,
            Side::Unknown => Side::Unknown,
        }
    }
}

/// The packet that ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packet {
    #[serde(rename = "FIN")]
    Fin,
    #[serde(rename = "RST")]
    Rst,
}

impl Packet {
    pub fn as_str(self) -> &'static str {
        match self {
            Packet::Fin => "FIN",
            Packet::Rst => "RST",
        }
    }
}

/// What the kernel saw first at a connection's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelEvent {
    SentFin,
    ReceivedFin,
    Aborted,
    ReceivedRst,
    /// The TCP stack gave up (retransmission or keepalive timeout, or another error).
    Timeout,
    /// Read from a record without it; never written.
    #[default]
    #[serde(other)]
    Unknown,
}

impl KernelEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelEvent::SentFin => "sent_fin",
            KernelEvent::ReceivedFin => "received_fin",
            KernelEvent::Aborted => "aborted",
            KernelEvent::ReceivedRst => "received_rst",
            KernelEvent::Timeout => "timeout",
            KernelEvent::Unknown => "unknown",
        }
    }
}

/// The client class Redis applies output buffer limits by (networking.c
/// getClientType, with masters limited as normal clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientClass {
    Normal,
    Pubsub,
    Replica,
}

impl ClientClass {
    /// From CLIENT LIST or log `flags=`: `S` replica, `P` pub/sub, anything else
    /// (masters `M` and MONITOR clients `O` included) normal.
    pub fn of_flags(flags: &str) -> Self {
        if flags.contains('S') {
            ClientClass::Replica
        } else if flags.contains('P') {
            ClientClass::Pubsub
        } else {
            ClientClass::Normal
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientClass::Normal => "normal",
            ClientClass::Pubsub => "pubsub",
            ClientClass::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeStatus {
    pub probe: String,
    /// Why it is not attached (for unavailable probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What the capture loses without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// One traced server endpoint: a port, and the Redis listening on it in one network
/// namespace (several namespaces can each have a Redis on one port).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TracedPort {
    pub port: u16,
    /// The Redis process found listening on it, when the port was discovered from /proc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
    /// Its network namespace (the inode of /proc/PID/ns/net).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// The container it runs in, as its cgroup path names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

impl TracedPort {
    /// The server this endpoint is, as records name it.
    pub fn server_ref(&self) -> ServerRef {
        ServerRef {
            pid: self.process.as_ref().map(|p| p.pid),
            netns: self.netns,
            container: self.container.clone(),
        }
    }
}

/// The Redis server a record belongs to: its process, network namespace and container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerRef {
    pub pid: Option<u32>,
    pub netns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(c) = &self.container {
            parts.push(c.to_string());
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if let Some(ns) = self.netns {
            parts.push(format!("netns {ns}"));
        }
        if parts.is_empty() {
            parts.push("unknown server".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// How the traced ports were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PortSource {
    #[default]
    #[serde(rename = "command line")]
    CommandLine,
    #[serde(rename = "discovered")]
    Discovered,
}

/// The uprobes on one redis-server process: what is attached, or why not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisProbes {
    pub pid: u32,
    pub exe: String,
    /// The server's version, read from its ELF (never by running it).
    pub version: Option<String>,
    /// "redis" or "valkey", from the ELF.
    pub server: Option<String>,
    /// Functions probed.
    pub attached: Vec<String>,
    /// Why not, when nothing could be attached (no dynamic symbols, unknown fork, ...).
    pub unavailable: Option<String>,
    /// Whether `client->flags` is read (the version's layout is known).
    pub client_flags: bool,
    /// Where the flags' layout comes from (the binary's DWARF, or the table of a version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_layout: Option<String>,
    /// Why the flags are not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_layout_missing: Option<String>,
    /// Which symbol tables the binary has ("dynsym only", "dynsym and symtab").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol_table: Option<String>,
    /// What this server's version gives as evidence, and what it lacks and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence_sources: Vec<EvidenceSource>,
}

/// One source of evidence on one traced server: whether it works there, and if not why
/// (and what the causes then rest on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceSource {
    pub source: String,
    pub works: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureStarted {
    pub schema_version: u32,
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    pub tool_version: String,
    pub host: String,
    pub kernel: String,
    pub ports: Vec<TracedPort>,
    pub port_source: PortSource,
    pub probes_attached: Vec<String>,
    pub probes_unavailable: Vec<ProbeStatus>,
    /// Connections on traced ports already open at start (their start is unseen).
    pub open_connections_at_start: usize,
    /// Uprobes on each traced redis-server: what is attached, or why not.
    pub redis_uprobes: Vec<RedisProbes>,
}

/// Uprobes attached during the capture (a Redis that restarted), or paused and resumed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisUprobes {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<RedisProbes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Whether a RST was sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
    #[default]
    #[serde(other)]
    Unknown,
}

/// A RST seen around a connection's end, or later on it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetNote {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    /// Sent or received, by the socket of `side`.
    pub direction: Direction,
    pub side: Side,
    pub rst_reason: Option<String>,
}

/// The last CLIENT LIST entry seen for a connection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisClientView {
    pub id: u64,
    pub name: String,
    pub lib_name: Option<String>,
    pub flags: String,
    pub age: u64,
    pub idle: u64,
    pub omem: u64,
    pub tot_mem: Option<u64>,
    pub cmd: String,
    pub user: Option<String>,
    /// When that CLIENT LIST was taken (RFC 3339, milliseconds).
    pub seen_at: String,
}

/// A `client-output-buffer-limit` class's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBufferLimit {
    pub class: ClientClass,
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

/// The Redis settings a cause rests on, when it rests on one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `timeout`, in seconds, for an idle timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The limit of the client's class, for an output buffer limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_buffer_limit: Option<OutputBufferLimit>,
    /// The client's name as Redis's log line gave it (`name=`), when one was matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged_client_name: Option<String>,
}

impl RedisSettings {
    pub fn is_empty(&self) -> bool {
        *self == RedisSettings::default()
    }
}

/// The Redis functions behind a close, named from redis-server's own symbols.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisCodePath {
    /// The function that decided to free the client.
    pub decided_in: String,
    /// The pass-through the decider called, when the decider was read one frame up
    /// (Valkey 9: `freeClient`, which defers a protected client to `freeClientAsync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The function that called freeClient (the same, unless the free was deferred).
    pub freed_from: String,
    /// Client flags set then (pubsub, replica, protocol_error, close_after_reply), when
    /// this Redis version's layout is known.
    pub client_flags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionClosed {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    /// Why it ended (see docs/causes.md), `unknown` when the evidence does not say.
    pub cause: Cause,
    pub closed_by: ClosedBy,
    /// Short sentences, each naming its source (kernel, uprobe, Redis log, INFO, CLIENT
    /// LIST, config). The first is always the kernel's own account of the close; the
    /// rest follow in the order the classifier weighed them (see [`Self::key_evidence`]).
    pub evidence: Vec<String>,
    /// For output buffer limits: normal, pubsub or replica.
    pub client_class: Option<ClientClass>,
    /// For CLIENT KILL or a kill signal: who did it, when known.
    pub killer: Option<String>,
    pub redis_client: Option<RedisClientView>,
    pub server: SocketAddr,
    pub client: SocketAddr,
    /// Whose end sent the first FIN or RST; null when neither sent one (a timeout the
    /// kernel gave up on silently).
    pub closed_by_side: Option<Side>,
    /// FIN or RST; null when no packet was sent (see `kernel_event`).
    pub packet: Option<Packet>,
    /// The task that closed it, when the kernel did that in the task's own context
    /// (close(), exit); null in softirq or timer context, where `current` is unrelated.
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub rst_reason: Option<String>,
    pub duration_ms: Option<f64>,
    /// What the kernel saw first.
    pub kernel_event: KernelEvent,
    /// Which end's socket the kernel event happened on.
    pub observed_on: Side,
    /// The socket error the kernel reported (ECONNRESET, ETIMEDOUT, ...).
    pub error: Option<String>,
    /// Owners of the sockets, from /proc when the capture started (connections open then).
    pub server_process: Option<ProcessRef>,
    pub client_process: Option<ProcessRef>,
    /// Whether the capture saw the connection being established.
    pub start_seen: bool,
    /// Whether both ends' sockets are on this host (loopback or a local namespace).
    pub both_ends_local: bool,
    pub resets: Vec<ResetNote>,
    /// Which Redis code path freed the client, from uprobes on redis-server.
    pub redis_code_path: Option<RedisCodePath>,
    /// The Redis settings the cause rests on (absent when it rests on none).
    #[serde(skip_serializing_if = "RedisSettings::is_empty")]
    pub redis_settings: RedisSettings,
    /// The network namespace of the connection's sockets (null when the kernel gave none).
    pub netns: Option<u32>,
    /// The traced Redis this connection was to, by namespace and port.
    pub redis_server: Option<ServerRef>,
    /// When the client end is a local proxy (docker-proxy, haproxy, envoy, ...): the
    /// real client is behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_proxy: Option<ProcessRef>,
    /// What arrived at each end's socket, for connections that left this host's
    /// loopback (the packet programs): the fingerprint RSTs are checked against.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packets: Vec<PacketsView>,
    /// What the packets say about the path between the two ends: a device that had
    /// dropped the flow, or a peer that stopped answering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathFinding>,
}

/// The packets that arrived at one end of a connection: the peer's own, and the first
/// RST and FIN, whose numbers are checked against them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PacketsView {
    /// The end whose socket received them.
    pub at: Side,
    /// 4 or 6.
    pub ip_version: u8,
    /// The peer's packets counted (RSTs and FINs apart).
    pub packets: u32,
    /// Whether they start with the connection's SYN-ACK (client ends; a server end's
    /// count starts with the handshake's last ACK).
    pub start_seen: bool,
    /// IP TTL (IPv6 hop limit) of the first counted packet, and the range of all.
    pub ttl_first: Option<u8>,
    pub ttl_min: Option<u8>,
    pub ttl_max: Option<u8>,
    /// IPv4: the last counted packet's IP ID, and how many counted packets had an IP ID
    /// that followed the one before (a sender numbering its packets in sequence).
    pub ip_id_last: Option<u16>,
    pub ip_id_follows: u32,
    /// Milliseconds from the peer's last packet to the end of the connection.
    pub quiet_ms_before_end: Option<f64>,
    /// Packets this end sent since the peer's last one arrived.
    pub sent_since_last_arrival: u32,
    pub rst: Option<EndPacketView>,
    pub fin: Option<EndPacketView>,
}

/// The first RST or FIN that arrived at an end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndPacketView {
    pub ttl: u8,
    /// IPv4 only.
    pub ip_id: Option<u16>,
    pub window: u16,
    /// TCP flags, e.g. `RST|ACK`.
    pub flags: String,
    /// How many of its kind arrived.
    pub count: u32,
    /// Milliseconds after this end's last packet.
    pub after_own_last_ms: Option<f64>,
    /// The socket's smoothed round-trip time then, in milliseconds.
    pub srtt_ms: Option<f64>,
    /// Milliseconds from the end of the connection (negative: before it).
    pub from_end_ms: f64,
}

/// What the packets say about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A device between the ends had dropped (forgotten) the flow: it answered for the
    /// peer with a RST the peer did not send.
    DeviceDroppedFlow,
    /// The peer stopped answering: nothing arrived while this end kept sending.
    PeerStoppedAnswering,
    #[default]
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathFinding {
    pub kind: PathKind,
    /// Seconds the flow was quiet (no packet from the peer) before it: for a device,
    /// the most its idle timeout can be.
    pub idle_s: Option<f64>,
    /// The finding in words, with its numbers.
    pub finding: String,
}

impl Default for ConnectionClosed {
    fn default() -> Self {
        Self {
            time: None,
            cause: Cause::Unknown,
            closed_by: ClosedBy::Unknown,
            evidence: Vec::new(),
            client_class: None,
            killer: None,
            redis_client: None,
            server: no_addr(),
            client: no_addr(),
            closed_by_side: None,
            packet: None,
            pid: None,
            tid: None,
            comm: None,
            rst_reason: None,
            duration_ms: None,
            kernel_event: KernelEvent::Unknown,
            observed_on: Side::Unknown,
            error: None,
            server_process: None,
            client_process: None,
            start_seen: false,
            both_ends_local: false,
            resets: Vec::new(),
            redis_code_path: None,
            redis_settings: RedisSettings::default(),
            netns: None,
            redis_server: None,
            peer_proxy: None,
            packets: Vec::new(),
            path: None,
        }
    }
}

impl ConnectionClosed {
    /// The piece of evidence that says the most: the first beyond the kernel's own
    /// account of the close (which is always first), or that account when it is alone.
    pub fn key_evidence(&self) -> Option<&str> {
        self.evidence
            .get(self.key_evidence_index()?)
            .map(String::as_str)
    }

    pub fn key_evidence_index(&self) -> Option<usize> {
        match self.evidence.len() {
            0 => None,
            1 => Some(0),
            _ => Some(1),
        }
    }

    /// The Redis settings its cause rests on. Captures written before `redis_settings`
    /// existed (redis-trace 0.1.0 until December 2026) name them only in their evidence
    /// sentences, in the fixed forms the classifier wrote then: read from there.
    pub fn settings(&self) -> RedisSettings {
        if !self.redis_settings.is_empty() {
            return self.redis_settings.clone();
        }
        legacy::settings(self)
    }
}

/// Reading the settings out of an older capture's evidence sentences.
mod legacy {
    use super::{ClientClass, ConnectionClosed, OutputBufferLimit, RedisSettings};

    pub(super) fn settings(c: &ConnectionClosed) -> RedisSettings {
        let sentences = || c.evidence.iter().map(String::as_str);
        RedisSettings {
            // "config: timeout is 300s; ..."
            timeout: sentences().find_map(|e| {
                let rest = e.strip_prefix("config: timeout is ")?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            }),
            // "config: client-output-buffer-limit pubsub 33554432 8388608 60"
            output_buffer_limit: sentences().find_map(|e| {
                let mut w = e
                    .strip_prefix("config: client-output-buffer-limit ")?
                    .split_whitespace();
                let class = match w.next()? {
                    "pubsub" => ClientClass::Pubsub,
                    "replica" => ClientClass::Replica,
                    "normal" => ClientClass::Normal,
                    _ => return None,
                };
                Some(OutputBufferLimit {
                    class,
                    hard: w.next()?.parse().ok()?,
                    soft: w.next()?.parse().ok()?,
                    soft_seconds: w.next()?.parse().ok()?,
                })
            }),
            // "Redis log: ... addr=CLIENT laddr=... name=NAME ..."
            logged_client_name: {
                let at = format!("addr={} ", c.client);
                sentences()
                    .filter(|e| e.starts_with("Redis log: ") && e.contains(&at))
                    .find_map(|e| e.split(" name=").nth(1)?.split(' ').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
            },
        }
    }
}

/// RSTs on a traced port that are not part of a connection's end (sent to a port with no
/// socket, or on a connection already reported, such as a client writing to a socket
/// that Redis closed long ago).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetSeen {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    pub server: SocketAddr,
    pub client: SocketAddr,
    pub sent_by: Option<Side>,
    pub received_by: Option<Side>,
    pub rst_reason: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The socket's network namespace, when the kernel gave it.
    pub netns: Option<u32>,
}

impl Default for ResetSeen {
    fn default() -> Self {
        Self {
            time: None,
            server: no_addr(),
            client: no_addr(),
            sent_by: None,
            received_by: None,
            rst_reason: None,
            pid: None,
            comm: None,
            netns: None,
        }
    }
}

/// What happened to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    OomKill,
    Signal,
    #[default]
    #[serde(other)]
    Exit,
}

/// An OOM kill, fatal signal or exit of a watched (Redis) process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessEvent {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    pub event: ProcessEventKind,
    pub pid: u32,
    pub comm: String,
    /// Whether it is one of the watched Redis processes (OOM kills of others are kept
    /// too: a killed client explains resets as well).
    pub redis: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<OomInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SignalInfo {
    pub number: i32,
    pub name: String,
    /// "user" (kill(2) and friends), "kernel" (a fault, the OOM killer), ...
    pub origin: String,
    /// The task that sent it (the one running when it was generated).
    pub sender: ProcessRef,
    /// The signal tracepoint's result: "delivered", "ignored", ...
    pub result: String,
}

impl SignalInfo {
    /// A signal that ends a process unless handled, and was not ignored.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.name.as_str(),
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
        ) && self.result != "ignored"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OomInfo {
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub uid: u32,
    pub oom_score_adj: i32,
    /// The task that ran the OOM killer.
    pub invoked_by: ProcessRef,
}

/// Whether redis-trace can read a Redis server's own view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    Connected,
    #[default]
    #[serde(other)]
    Unavailable,
}

/// A change in what redis-trace can see of a Redis server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisStatus {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    pub port: u16,
    /// The server's network namespace, when it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    pub status: RedisState,
    pub pid: Option<u32>,
    /// "redis" or "valkey", from INFO (`server_name`, `valkey_version`).
    pub server: Option<String>,
    /// The server's own version: Valkey's `valkey_version`, not the `redis_version`
    /// (7.2.4) it reports for compatibility.
    pub version: Option<String>,
    pub uptime_s: Option<u64>,
    /// Set when the server's pid or run id changed since the last connection.
    pub restarted: bool,
    pub error: Option<String>,
    pub logfile: Option<String>,
    pub log_readable: bool,
    /// When INFO names another server or version than the binary's `.rodata` said: what
    /// each said, and what the uprobes now use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_check: Option<String>,
    /// Why the log is not read, when it is not.
    pub log_note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub connections_closed: u64,
    pub resets: u64,
    pub process_events: u64,
    /// connection_closed records by cause.
    pub by_cause: BTreeMap<String, u64>,
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// `--duration`.
    Duration,
    #[default]
    #[serde(other)]
    Unknown,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Interrupt => "interrupt",
            EndedBy::Terminate => "terminate",
            EndedBy::Duration => "duration",
            EndedBy::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureEnded {
    #[serde(with = "time_opt")]
    pub time: Option<SystemTime>,
    pub duration_s: f64,
    pub ended_by: EndedBy,
    #[serde(flatten)]
    pub counts: Counts,
    /// Records the kernel could not hand over (ring buffer full). Zero, or the capture is
    /// incomplete by that many records.
    pub lost_events: u64,
    /// Connections the kernel could not track (map full): still reported, but without
    /// their start time.
    pub untracked_connections: u64,
    /// Records that could not be decoded.
    pub bad_records: u64,
    /// Connections whose start the kernel's map no longer held when they ended (evicted
    /// from the full map), or that were open before the capture without a readable
    /// owner: reported without their start time.
    pub connections_without_start: u64,
    /// Ends of redis-trace's own connections to Redis, left out of the records.
    pub own_connections: u64,
    /// Own connections the kernel could not mark (its map was full): they appear in the
    /// records like any other.
    pub own_connections_unmarked: u64,
    pub probes_unavailable: Vec<String>,
    /// What the capture cost this host's CPU, by stage (its own time on CPU).
    pub tracer_cpu_ms: TracerCpu,
}

/// The tracer's own time on CPU, in milliseconds: the capture loop's thread by stage
/// (thread CPU clock around each stage), and every other thread by name (schedstat).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TracerCpu {
    /// Everything before `capture_started`: loading and attaching the programs, BTF,
    /// the /proc scans for servers and open connections, the first Redis poll.
    pub start: f64,
    /// Reading the ring buffer's batches: decoding and joining each connection's records.
    pub decode: f64,
    /// Ending each connection's grace period: the assembled records and resets.
    pub assemble: f64,
    /// Taking the Redis pollers' and the log's messages.
    pub redis: f64,
    /// Classifying the held connections and building their records.
    pub classify: f64,
    /// JSON and timeline formatting and writing (write(2) included).
    pub write: f64,
    /// The uprobes' governor, status lines and waiting for work.
    pub other: f64,
    /// The other threads (ring reader, Redis pollers, log follower, signals), by name.
    pub threads: std::collections::BTreeMap<String, f64>,
}

/// What `report` tolerated in a capture file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportWarning {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let c = ConnectionClosed {
            time: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567)),
            cause: Cause::RedisIdleTimeout,
            closed_by: ClosedBy::Redis,
            evidence: vec!["kernel: the server end sent the first FIN".into()],
            server: "127.0.0.1:6379".parse().expect("addr"),
            client: "[::1]:50000".parse().expect("addr"),
            closed_by_side: Some(Side::Server),
            packet: Some(Packet::Fin),
            kernel_event: KernelEvent::SentFin,
            observed_on: Side::Server,
            client_class: Some(ClientClass::Pubsub),
            ..ConnectionClosed::default()
        };
        let line =
            serde_json::to_string(&Record::ConnectionClosed(Box::new(c))).expect("serializes");
        assert!(line.starts_with(r#"{"type":"connection_closed","time":"1970-01-01T00:00:01.234567Z","cause":"redis_idle_timeout","closed_by":"redis""#), "{line}");
        assert!(line.contains(r#""client":"[::1]:50000""#));
        assert!(line.contains(r#""packet":"FIN""#));
        assert!(
            !line.contains("redis_settings"),
            "empty settings are not written"
        );
        let Record::ConnectionClosed(back) = serde_json::from_str(&line).expect("reads back")
        else {
            panic!("not a connection_closed: {line}");
        };
        assert_eq!(back.cause, Cause::RedisIdleTimeout);
        assert_eq!(back.client_class, Some(ClientClass::Pubsub));
        assert_eq!(
            back.key_evidence(),
            Some("kernel: the server end sent the first FIN")
        );
    }

    #[test]
    fn a_partial_or_newer_record_reads_with_defaults() {
        let r: Record = serde_json::from_str(
            r#"{"type":"connection_closed","cause":"a_cause_from_the_future","kernel_event":"x","server":"127.0.0.1:6379"}"#,
        )
        .expect("tolerant");
        let Record::ConnectionClosed(c) = r else {
            panic!("type")
        };
        assert_eq!(c.cause, Cause::Unknown);
        assert_eq!(c.kernel_event, KernelEvent::Unknown);
        assert_eq!(c.time, None);
        assert_eq!(c.client.port(), 0);
    }

    /// Each enum's `as_str` is the name serde writes: the timeline and the JSON agree.
    #[test]
    fn names_are_the_serialized_names() {
        fn same<T: Serialize>(v: T, name: &str) {
            assert_eq!(serde_json::to_value(v).expect("json"), name);
        }
        for s in [Side::Server, Side::Client, Side::Unknown] {
            same(s, s.as_str());
        }
        for p in [Packet::Fin, Packet::Rst] {
            same(p, p.as_str());
        }
        for e in [
            KernelEvent::SentFin,
            KernelEvent::ReceivedFin,
            KernelEvent::Aborted,
            KernelEvent::ReceivedRst,
            KernelEvent::Timeout,
            KernelEvent::Unknown,
        ] {
            same(e, e.as_str());
        }
        for c in [
            ClientClass::Normal,
            ClientClass::Pubsub,
            ClientClass::Replica,
        ] {
            same(c, c.as_str());
        }
        for e in [
            EndedBy::Interrupt,
            EndedBy::Terminate,
            EndedBy::Duration,
            EndedBy::Unknown,
        ] {
            same(e, e.as_str());
        }
        for c in Cause::ALL {
            same(c.closed_by(), c.closed_by().as_str());
        }
    }

    #[test]
    fn client_classes_follow_redis() {
        assert_eq!(ClientClass::of_flags("S"), ClientClass::Replica);
        assert_eq!(ClientClass::of_flags("P"), ClientClass::Pubsub);
        // Masters are limited as normal clients; MONITOR clients (O) too.
        assert_eq!(ClientClass::of_flags("M"), ClientClass::Normal);
        assert_eq!(ClientClass::of_flags("O"), ClientClass::Normal);
        assert_eq!(ClientClass::of_flags("N"), ClientClass::Normal);
    }
}
