//! The records redis-trace writes, one JSON object per line (see docs/json-lines.md).
//! Field names are the public format: change them only with `SCHEMA_VERSION`.
use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// A process, as named by the kernel (comm) or /proc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub probe: String,
    /// Why it is not attached (for unavailable probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What the capture loses without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracedPort {
    pub port: u16,
    /// The Redis process found listening on it, when the port was discovered from /proc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
}

/// How the traced ports were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortSource {
    #[serde(rename = "command line")]
    CommandLine,
    #[serde(rename = "discovered")]
    Discovered,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureStarted {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema_version: u32,
    pub time: String,
    pub tool_version: &'static str,
    pub host: String,
    pub kernel: String,
    pub ports: Vec<TracedPort>,
    pub port_source: PortSource,
    pub probes_attached: Vec<String>,
    pub probes_unavailable: Vec<ProbeStatus>,
    /// Connections on traced ports already open at start (their start is unseen).
    pub open_connections_at_start: usize,
    /// Uprobes on each traced redis-server: what is attached, or why not.
    pub redis_uprobes: Vec<crate::kernel::uprobes::RedisProbes>,
}

/// A RST seen around a connection's end, or later on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResetNote {
    pub time: String,
    /// "sent" or "received", by the socket of `side`.
    pub direction: &'static str,
    pub side: &'static str,
    pub rst_reason: Option<String>,
}

/// The last CLIENT LIST entry seen for a connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// When that CLIENT LIST was taken.
    pub seen_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionClosed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// Why it ended (see docs/json-lines.md for the list), `unknown` when the evidence
    /// does not say.
    pub cause: crate::classify::Cause,
    /// redis, client, middlebox, kernel or unknown.
    pub closed_by: &'static str,
    /// Short sentences, each naming its source (kernel, Redis log, INFO, CLIENT LIST, config).
    pub evidence: Vec<String>,
    /// For output buffer limits: normal, pubsub or replica.
    pub client_class: Option<&'static str>,
    /// For CLIENT KILL or a kill signal: who did it, when known.
    pub killer: Option<String>,
    pub redis_client: Option<RedisClientView>,
    pub server: String,
    pub client: String,
    /// Whose end sent the first FIN or RST: "server" or "client"; null when neither sent
    /// one (a timeout the kernel gave up on silently).
    pub closed_by_side: Option<&'static str>,
    /// "FIN" or "RST"; null when no packet was sent (see `kernel_event`).
    pub packet: Option<&'static str>,
    /// The task that closed it, when the kernel did that in the task's own context
    /// (close(), exit); null in softirq or timer context, where `current` is unrelated.
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub rst_reason: Option<String>,
    pub duration_ms: Option<f64>,
    /// What the kernel saw first: sent_fin, received_fin, aborted, received_rst, timeout.
    pub kernel_event: &'static str,
    /// Which end's socket the kernel event happened on.
    pub observed_on: &'static str,
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
    /// Kernel time of the close (CLOSE_MONOTONIC ns), for joining evidence; not written.
    #[serde(skip)]
    pub close_ns: u64,
    /// Which Redis code path freed the client, from uprobes on redis-server.
    pub redis_code_path: Option<RedisCodePath>,
    /// The raw addresses behind `redis_code_path` (0 when none), and the flags.
    #[serde(skip)]
    pub redis_raw: (u64, u64, u64),
}

/// The Redis functions behind a close, named from redis-server's own symbols.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisCodePath {
    /// The function that decided to free the client.
    pub decided_in: String,
    /// The function that called freeClient (the same, unless the free was deferred).
    pub freed_from: String,
    /// Client flags set then (pubsub, replica, protocol_error, close_after_reply), when
    /// this Redis version's layout is known.
    pub client_flags: Option<Vec<&'static str>>,
}

/// RSTs on a traced port that are not part of a connection's end (sent to a port with no
/// socket, or on a connection already reported, such as a client writing to a socket
/// that Redis closed long ago).
#[derive(Debug, Clone, Serialize)]
pub struct ResetSeen {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub server: String,
    pub client: String,
    pub sent_by: Option<&'static str>,
    pub received_by: Option<&'static str>,
    pub rst_reason: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// An OOM kill, fatal signal or exit of a watched (Redis) process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// "oom_kill", "signal" or "exit".
    pub event: &'static str,
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

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub connections_closed: u64,
    pub resets: u64,
    pub process_events: u64,
    /// connection_closed records by cause.
    pub by_cause: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureEnded {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub duration_s: f64,
    /// "interrupt" (Ctrl-C), "terminate" (SIGTERM), "duration".
    pub ended_by: &'static str,
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
}

/// Name of an errno the socket error tracepoint reports.
pub fn errno_name(e: i32) -> String {
    match e {
        32 => "EPIPE".into(),
        100 => "ENETDOWN".into(),
        101 => "ENETUNREACH".into(),
        103 => "ECONNABORTED".into(),
        104 => "ECONNRESET".into(),
        110 => "ETIMEDOUT".into(),
        111 => "ECONNREFUSED".into(),
        112 => "EHOSTDOWN".into(),
        113 => "EHOSTUNREACH".into(),
        other => format!("errno {other}"),
    }
}

pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.into()
}

/// si_code of a generated signal (include/uapi/asm-generic/siginfo.h).
pub fn signal_origin(code: i32) -> String {
    match code {
        0 => "user".into(),
        0x80 => "kernel".into(),
        -1 => "queue".into(),
        -6 => "tkill".into(),
        c if c > 0 => format!("fault (code {c})"),
        c => format!("code {c}"),
    }
}

pub fn signal_result(r: i32) -> String {
    // enum trace_signal_result (include/trace/events/signal.h).
    match r {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already_pending".into(),
        3 => "overflow_fail".into(),
        4 => "lose_info".into(),
        r => format!("result {r}"),
    }
}
