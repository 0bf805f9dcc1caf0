//! Types shared by the kernel programs (`src/main.rs`, built for `bpfel-unknown-none`) and
//! the userspace loader (crate `redis-trace`). Defined once, here.
//!
//! Every type is `#[repr(C)]`, `Copy`, made of explicit-width integers, with its padding
//! spelled out, so both sides agree on the bytes without a serializer.
#![no_std]

/// Field offset meaning "this kernel's tracepoint has no such field".
pub const ABSENT: u16 = u16::MAX;
/// Reset reason meaning "unknown" (the kernel's tracepoint has no `reason` field, or the
/// record is not about a reset).
pub const NO_REASON: u32 = u32::MAX;

/// Maximum number of traced ports (the `PORTS` map).
pub const MAX_PORTS: u32 = 64;
/// Words of the `PORT_BITS` bitmap: one bit per port.
pub const PORT_BIT_WORDS: u32 = 65_536 / 32;
/// Connections whose packets are fingerprinted at once (`FLOWS`, per end; LRU).
/// Loopback connections are left out, so this counts connections that leave the host.
pub const MAX_FLOWS: u32 = 32_768;
/// Maximum number of process names to watch (the `PROC_NAMES` array).
pub const MAX_PROC_NAMES: u32 = 4;
/// Connections tracked at once in the kernel (LRU: the oldest idle entry makes room).
pub const MAX_CONNS: u32 = 65_536;
/// Ring buffer size in bytes (a power of two, a multiple of the page size). 1 MiB holds
/// ~9,000 records: at 30,000 connections/s and a 10 ms drain, 30 times what one drain
/// takes; its pages count in the tracer's RSS (twice: the ring is mapped twice).
pub const RING_BYTES: u32 = 1 << 20;

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// A record did not fit in the ring buffer: a lost event.
    pub const RING_FULL: u32 = 0;
    /// A connection could not be entered in the `CONNS` map.
    pub const CONN_MAP_FULL: u32 = 1;
    /// A tracepoint field could not be read.
    pub const READ_FAILED: u32 = 2;
    /// Tracepoint hits that passed the port filter (events seen, for cost figures).
    pub const HITS: u32 = 3;
    /// One of redis-trace's own sockets could not be remembered (`OWN_SOCKS` full): its
    /// connection is then reported like any other.
    pub const OWN_SOCKS_FULL: u32 = 4;
    /// A flow's packet fingerprint could not be entered in `FLOWS`.
    pub const FLOWS_FULL: u32 = 5;
    pub const LEN: u32 = 6;
}

/// Processes the kernel side watches by pid (`WATCHED_PIDS`).
pub const MAX_WATCHED_PIDS: u32 = 4096;
/// redis-trace's own sockets remembered at once (`OWN_SOCKS`): its Redis pollers, one or
/// two connections per traced server.
pub const MAX_OWN_SOCKS: u32 = 4096;

#[cfg(test)]
mod counter_tests {
    #[test]
    fn counters_are_distinct_and_within_len() {
        use super::counter::*;
        let all = [
            RING_FULL,
            CONN_MAP_FULL,
            READ_FAILED,
            HITS,
            OWN_SOCKS_FULL,
            FLOWS_FULL,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(*a < LEN);
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
    }
}

/// The `kind` word every ring-buffer record starts with.
pub mod kind {
    pub const CONN_CLOSED: u32 = 1;
    pub const SOCK: u32 = 2;
    pub const PROC: u32 = 3;
    pub const PACKETS: u32 = 4;
}

/// Which end of a connection a socket is.
pub mod side {
    pub const UNKNOWN: u32 = 0;
    /// The socket whose local port is a traced (Redis) port.
    pub const SERVER: u32 = 1;
    pub const CLIENT: u32 = 2;
}

/// What the socket that observed the end of a connection saw first.
pub mod how {
    /// This socket sent a FIN (close() or shutdown(); runs in the closing task).
    pub const SENT_FIN: u32 = 1;
    /// This socket received a FIN from its peer (softirq).
    pub const RECEIVED_FIN: u32 = 2;
    /// This socket was aborted by its owner: ESTABLISHED -> CLOSE in the closing task
    /// (close() with unread data, SO_LINGER 0, tcp_disconnect). The kernel sends a RST
    /// right after, reported by a separate [`SockEvent`] that carries the reason. When an
    /// [`sock_event::ERROR`] follows instead, a kernel timer closed it (retransmission
    /// timeout), not a task: userspace then drops the task.
    pub const ABORTED: u32 = 3;
    /// This socket sent a RST before any state change (keepalive timeout, ...).
    pub const SENT_RST: u32 = 4;
    /// This socket received a RST (softirq).
    pub const RECEIVED_RST: u32 = 5;
    /// The kernel reported an error on the socket before closing it (retransmission or
    /// keepalive timeout without RST, ...): `error` holds the errno.
    pub const ERROR: u32 = 6;
}

/// Process-event types in [`ProcEvent::what`].
pub mod proc_event {
    pub const OOM_VICTIM: u32 = 1;
    pub const SIGNAL: u32 = 2;
    pub const EXIT: u32 = 3;
}

/// A connection, canonicalised so that both of its sockets map to the same key:
/// addresses as 16 bytes (IPv4 as `::ffff:a.b.c.d`), ports in host order, and the
/// network namespace of the socket: two containers' `127.0.0.1:6379` are two servers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub server_addr: [u8; 16],
    pub client_addr: [u8; 16],
    pub server_port: u16,
    pub client_port: u16,
    /// The socket's network namespace (`net->ns.inum`, the inode of /proc/PID/ns/net),
    /// or [`NO_NETNS`] when this kernel's event has no socket to read it from.
    pub netns: u32,
}

/// [`ConnKey::netns`] is unknown: the event carries no socket (`inet_sk_error_report`,
/// a RST sent where no socket exists) or this kernel's BTF did not give the offsets.
pub const NO_NETNS: u32 = 0;

/// Kernel-side state of one connection (value of the `CONNS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// `bpf_ktime_get_ns` when the connection was seen to become ESTABLISHED; 0 if unseen.
    pub start_ns: u64,
    /// 0 until one socket of the connection has reported its end, so that the two ends
    /// of a loopback connection yield one record.
    pub reported: u64,
    /// Bits of [`conn_flags`].
    pub flags: u32,
    pub _pad: u32,
}

pub mod conn_flags {
    pub const SERVER_SEEN: u32 = 1 << 0;
    pub const CLIENT_SEEN: u32 = 1 << 1;
    pub const SERVER_CLOSED: u32 = 1 << 2;
    pub const CLIENT_CLOSED: u32 = 1 << 3;
    /// A RST arrived on that end's socket; its state change to CLOSE follows.
    pub const SERVER_RST_RECEIVED: u32 = 1 << 4;
    pub const CLIENT_RST_RECEIVED: u32 = 1 << 5;
    /// redis-trace's own connection (its Redis poller): left out of the output.
    pub const OWN: u32 = 1 << 6;
    /// In a record only: the other end's socket was seen too, in another network
    /// namespace of this host (a veth pair, a bridge, a port mapping without NAT).
    pub const PEER_ELSEWHERE: u32 = 1 << 7;
}

/// Record: a connection on a traced port ended (first FIN or RST, from either end).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnClosed {
    pub kind: u32,
    /// One of [`how`].
    pub how: u32,
    /// Which end's socket observed this ([`side`]).
    pub observer: u32,
    /// Reset reason number (`enum sk_rst_reason`), or [`NO_REASON`].
    pub rst_reason: u32,
    /// errno from `inet_sk_error_report`, or 0.
    pub error: i32,
    /// 1 when the observing event ran in the context of the task that closed the socket,
    /// so `tgid`/`tid`/`comm` name it; 0 in softirq or timer context (they are zero).
    pub in_task: u32,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub start_ns: u64,
    pub close_ns: u64,
    pub key: ConnKey,
    /// The socket's address family (2 = AF_INET, 10 = AF_INET6).
    pub family: u16,
    pub old_state: u16,
    pub new_state: u16,
    /// [`conn_flags::SERVER_SEEN`] / [`conn_flags::CLIENT_SEEN`]: which ends' sockets
    /// this kernel has seen, so both set means both ends live on this host; and
    /// [`conn_flags::OWN`] for redis-trace's own connections, and
    /// [`conn_flags::PEER_ELSEWHERE`] when the other end lives in another namespace here.
    pub sockets_seen: u16,
    /// When Redis freed the client in this very close (uprobes on redis-server): the
    /// return address of `freeClient` (who freed it) and of the function that decided to
    /// (`freeClientAsync`'s caller when the free was deferred), both 0 when unknown.
    pub redis_freed_from: u64,
    pub redis_decided_in: u64,
    /// One frame further up from each of the two (the word above the caller's saved
    /// frame pointer): the real decider when the caller is a pass-through such as
    /// Valkey 9's `freeClient` calling `freeClientAsync`. Meaningful only when the
    /// caller keeps a frame pointer, which the loader checks in its code; 0 when unread.
    pub redis_freed_from_caller: u64,
    pub redis_decided_in_caller: u64,
    /// The client's flags (`client->flags`) when that was decided, or [`NO_FLAGS`].
    pub redis_client_flags: u64,
}

/// `client->flags` could not be read (unknown Redis version).
pub const NO_FLAGS: u64 = u64::MAX;

/// Indexes into the `REDIS_PROBES` array, set by the loader once it has attached the
/// uprobes to redis-server (after the tracepoints, so an array rather than the config).
pub mod redis_probes {
    /// 1 when the uprobes are attached somewhere.
    pub const ENABLED: u32 = 0;
    pub const LEN: u32 = 1;
}

/// Record: something happened to a socket on a traced port that does not by itself
/// start a connection's record: a RST sent right after an abort (it carries the reason),
/// a RST on a connection already reported or on a port with no socket, or an error the
/// kernel reported on the socket. Userspace joins these to the connection's record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    pub kind: u32,
    /// One of [`sock_event`].
    pub what: u32,
    /// The end whose socket sent the RST, received it, or had the error ([`side`]).
    pub side: u32,
    pub rst_reason: u32,
    /// errno for [`sock_event::ERROR`].
    pub error: i32,
    /// 1 when the event ran in a task's context (see [`ConnClosed::in_task`]).
    pub in_task: u32,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub ts_ns: u64,
    pub key: ConnKey,
    pub family: u16,
    /// TCP state of the socket, or 0 when there was no socket.
    pub state: u16,
    /// [`conn_flags::OWN`] when the socket is redis-trace's own.
    pub flags: u32,
}

pub mod sock_event {
    pub const RST_SENT: u32 = 1;
    pub const RST_RECEIVED: u32 = 2;
    pub const ERROR: u32 = 3;
}

/// Which end of a connection a [`PeerPackets`] belongs to: the packets that arrived at
/// `to_side`'s socket, from the other end (or from whatever claims to be it). Keyed by
/// addresses only: a packet program does not know the socket's namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub server_addr: [u8; 16],
    pub client_addr: [u8; 16],
    pub server_port: u16,
    pub client_port: u16,
    /// [`side::SERVER`] or [`side::CLIENT`].
    pub to_side: u32,
}

impl FlowKey {
    #[inline(always)]
    pub fn of(key: &ConnKey, to_side: u32) -> Self {
        Self {
            server_addr: key.server_addr,
            client_addr: key.client_addr,
            server_port: key.server_port,
            client_port: key.client_port,
            to_side,
        }
    }
}

/// One RST or FIN that arrived (the first of its kind on the flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndPacket {
    /// `bpf_ktime_get_ns` when it arrived; 0: none arrived.
    pub ts_ns: u64,
    /// When this end last sent a packet before it (0: never seen sending).
    pub last_tx_ns: u64,
    /// The socket's smoothed round-trip time then, in µs (0: unknown).
    pub srtt_us: u32,
    /// How many of its kind arrived in all.
    pub count: u32,
    pub window: u16,
    /// IPv4 identification (0 for IPv6, which has none).
    pub ip_id: u16,
    /// IP TTL or IPv6 hop limit, as it arrived.
    pub ttl: u8,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
}

/// A small fingerprint of the packets that arrived at one end of a traced connection
/// (value of the `FLOWS` map, filled by the `cgroup_skb` programs): what the peer's own
/// packets look like, so that a RST can be checked against them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerPackets {
    /// When the first packet arrived (the SYN-ACK at a client end whose start was seen).
    pub first_ns: u64,
    /// When the last packet other than a RST arrived.
    pub last_rx_ns: u64,
    /// When this end last sent a packet (the egress program).
    pub last_tx_ns: u64,
    /// Packets that arrived, RSTs and FINs left out.
    pub packets: u32,
    /// Packets this end sent since the peer's last one arrived.
    pub sent_since_rx: u32,
    /// TTL (hop limit) of the first packet, and the range over all counted ones.
    pub first_ttl: u8,
    pub min_ttl: u8,
    pub max_ttl: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// The last counted packet's IPv4 identification.
    pub last_ip_id: u16,
    /// Counted packets whose IP ID followed the one before by 1 to [`IP_ID_STEP`], and
    /// those whose IP ID was 0.
    pub ip_id_follows: u16,
    pub ip_id_zero: u16,
    /// Bits of [`flow_flags`].
    pub flags: u16,
    pub _pad: u32,
    pub rst: EndPacket,
    pub fin: EndPacket,
}

/// How far an IP ID may move on between two packets of one sender and still "follow":
/// Linux numbers each socket's packets in sequence, and GRO can merge a few.
pub const IP_ID_STEP: u16 = 64;

pub mod flow_flags {
    /// The first packet was the connection's SYN-ACK (client ends only: a server end's
    /// SYN arrives at its listening socket, which has no flow yet).
    pub const START_SEEN: u16 = 1 << 0;
}

/// Record: the packets that arrived at one end of a connection, sent with its
/// [`ConnClosed`] and again with each RST that arrives after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketsSeen {
    pub kind: u32,
    /// The end whose socket received them ([`side`]).
    pub side: u32,
    pub ts_ns: u64,
    pub key: ConnKey,
    pub flow: PeerPackets,
}

/// Record: an event of a watched (Redis) process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub kind: u32,
    /// One of [`proc_event`].
    pub what: u32,
    /// The process the event is about (OOM victim, signal target, exiting task).
    pub pid: u32,
    /// The thread group of the task that ran the event (the signal's sender).
    pub actor_tgid: u32,
    pub actor_tid: u32,
    /// Signal number (SIGNAL), or 1 when the whole thread group died (EXIT).
    pub sig: i32,
    /// si_code of the signal (SI_USER = 0, SI_KERNEL = 0x80, ...).
    pub code: i32,
    /// The signal tracepoint's result (0 delivered, 1 ignored, ...).
    pub result: i32,
    pub comm: [u8; 16],
    pub actor_comm: [u8; 16],
    pub ts_ns: u64,
    /// OOM victim figures, in kB as the tracepoint gives them.
    pub total_vm: u64,
    pub anon_rss: u64,
    pub file_rss: u64,
    pub shmem_rss: u64,
    pub pgtables: u64,
    pub uid: u32,
    pub oom_score_adj: i32,
}

/// Where a tracepoint keeps a connection's addresses. Kernels have used two shapes:
/// separate `sport`/`dport`/`family`/`saddr`/`daddr`/`saddr_v6`/`daddr_v6` fields (ports
/// in host order), or (`tcp_send_reset` since 6.10) two 28-byte `struct sockaddr_in6`-sized
/// buffers with the port in network order. Offsets are [`ABSENT`] when missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrLayout {
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// Offsets of `struct sockaddr` buffers (source, destination).
    pub sockaddr_src: u16,
    pub sockaddr_dst: u16,
    pub _pad: u16,
}

impl AddrLayout {
    pub const ABSENT: Self = Self {
        sport: ABSENT,
        dport: ABSENT,
        family: ABSENT,
        saddr: ABSENT,
        daddr: ABSENT,
        saddr_v6: ABSENT,
        daddr_v6: ABSENT,
        sockaddr_src: ABSENT,
        sockaddr_dst: ABSENT,
        _pad: 0,
    };
}

/// `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetStateLayout {
    pub oldstate: u16,
    pub newstate: u16,
    pub protocol: u16,
    /// 1 or 2: `protocol` was a `__u8` before 5.6 and a `__u16` since.
    pub protocol_size: u16,
    /// The socket's address: identifies redis-trace's own connects (see `OWN_SOCKS`).
    pub skaddr: u16,
    pub _pad: u16,
    pub addr: AddrLayout,
}

/// `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetLayout {
    pub state: u16,
    pub reason: u16,
    pub skaddr: u16,
    pub _pad: u16,
    pub addr: AddrLayout,
}

/// `sock:inet_sk_error_report`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorReportLayout {
    pub error: u16,
    pub protocol: u16,
    pub addr: AddrLayout,
}

/// `oom:mark_victim`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomLayout {
    pub pid: u16,
    /// Offset of the `__data_loc` word for `comm`.
    pub comm_loc: u16,
    pub total_vm: u16,
    pub anon_rss: u16,
    pub file_rss: u16,
    pub shmem_rss: u16,
    pub uid: u16,
    pub pgtables: u16,
    pub oom_score_adj: u16,
    pub _pad: u16,
}

/// `signal:signal_generate`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalLayout {
    pub sig: u16,
    pub code: u16,
    pub comm: u16,
    pub pid: u16,
    pub result: u16,
    pub _pad: u16,
}

/// `sched:sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitLayout {
    pub comm: u16,
    pub pid: u16,
    pub group_dead: u16,
    pub _pad: u16,
}

/// Everything the programs need to know at load time (a `Global` in the object,
/// overridden by the loader from the format files of the running kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub set_state: SetStateLayout,
    pub send_reset: ResetLayout,
    pub receive_reset: ResetLayout,
    pub error_report: ErrorReportLayout,
    pub oom: OomLayout,
    pub signal: SignalLayout,
    pub exit: ExitLayout,
    /// redis-trace's own process: its connections to Redis are not the user's traffic.
    pub own_tgid: u32,
    pub _pad: u32,
    /// Bit n set: reset reason number n is only ever sent from the closing task's
    /// context (TCP_ABORT_ON_CLOSE, TCP_ABORT_ON_LINGER, TCP_STATE, ...).
    pub task_reasons: u64,
    /// Bit n set: signal n is reported (fatal signals).
    pub signal_mask: u64,
    /// Wake userspace when this many bytes wait in the ring buffer; below it records
    /// are written without a wakeup and userspace collects them on its own timer.
    pub wakeup_bytes: u64,
    pub netns: NetnsLayout,
}

/// Where a socket's network namespace number is, from this kernel's BTF: `struct sock`
/// starts with `struct sock_common`, whose `skc_net` points to a `struct net`, whose
/// `ns.inum` is the namespace's inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsLayout {
    /// Offset of `skc_net` in `struct sock`, or [`ABSENT_OFFSET`].
    pub skc_net: u32,
    /// Offset of `ns.inum` in `struct net`.
    pub ns_inum: u32,
    /// 1: only sockets whose namespace is in the `NETNS_SCOPE` map are traced.
    pub scoped: u32,
    pub _pad: u32,
}

/// A [`NetnsLayout`] offset this kernel did not give.
pub const ABSENT_OFFSET: u32 = u32::MAX;

/// Network namespaces a scoped capture traces at most (`NETNS_SCOPE`).
pub const MAX_SCOPED_NETNS: u32 = 256;

impl Config {
    /// A configuration with every field absent: the programs do nothing with it.
    pub const EMPTY: Self = Self {
        set_state: SetStateLayout {
            oldstate: ABSENT,
            newstate: ABSENT,
            protocol: ABSENT,
            protocol_size: 2,
            skaddr: ABSENT,
            _pad: 0,
            addr: AddrLayout::ABSENT,
        },
        send_reset: ResetLayout {
            state: ABSENT,
            reason: ABSENT,
            skaddr: ABSENT,
            _pad: 0,
            addr: AddrLayout::ABSENT,
        },
        receive_reset: ResetLayout {
            state: ABSENT,
            reason: ABSENT,
            skaddr: ABSENT,
            _pad: 0,
            addr: AddrLayout::ABSENT,
        },
        error_report: ErrorReportLayout {
            error: ABSENT,
            protocol: ABSENT,
            addr: AddrLayout::ABSENT,
        },
        oom: OomLayout {
            pid: ABSENT,
            comm_loc: ABSENT,
            total_vm: ABSENT,
            anon_rss: ABSENT,
            file_rss: ABSENT,
            shmem_rss: ABSENT,
            uid: ABSENT,
            pgtables: ABSENT,
            oom_score_adj: ABSENT,
            _pad: 0,
        },
        signal: SignalLayout {
            sig: ABSENT,
            code: ABSENT,
            comm: ABSENT,
            pid: ABSENT,
            result: ABSENT,
            _pad: 0,
        },
        exit: ExitLayout {
            comm: ABSENT,
            pid: ABSENT,
            group_dead: ABSENT,
            _pad: 0,
        },
        own_tgid: 0,
        _pad: 0,
        task_reasons: 0,
        signal_mask: 0,
        wakeup_bytes: 0,
        netns: NetnsLayout {
            skc_net: ABSENT_OFFSET,
            ns_inum: ABSENT_OFFSET,
            scoped: 0,
            _pad: 0,
        },
    };
}

/// TCP states (include/net/tcp_states.h): stable kernel ABI.
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with
    // explicit padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerPackets {}
}

// Layout checks: the kernel and userspace builds must agree on these sizes.
const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);
const _: () = assert!(core::mem::size_of::<ConnClosed>() == 152);
const _: () = assert!(core::mem::size_of::<SockEvent>() == 104);
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 120);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<EndPacket>() == 32);
const _: () = assert!(core::mem::size_of::<PeerPackets>() == 112);
const _: () = assert!(core::mem::size_of::<PacketsSeen>() == 168);
const _: () = assert!(core::mem::offset_of!(Config, own_tgid) == 152);
const _: () = assert!(core::mem::offset_of!(Config, task_reasons) == 160);
const _: () = assert!(core::mem::size_of::<Config>() == 200);
