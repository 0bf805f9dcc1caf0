//! The tracepoint programs.
//!
//! Cost is what matters here: every TCP state change on the host runs
//! `inet_sock_set_state`. So the port filter comes first, a connection's state lives in
//! the `CONNS` map, and a connection produces one ring-buffer record when it ends (plus
//! RST and error events), written without waking userspace, which drains on a timer.
//!
//! Context matters too: close() and exit run in the closing task, so `current` names
//! who closed; anything driven by an incoming packet or a timer runs in softirq, where
//! `current` is whoever happened to be on the CPU. Records say which (`in_task`).

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, bpf_probe_read_user,
    },
    macros::{map, tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, TracePointContext},
};
use redis_trace_ebpf::{
    ABSENT, AF_INET, AF_INET6, AddrLayout, Config, ConnClosed, ConnKey, ConnState, IPPROTO_TCP,
    MAX_CONNS, MAX_OWN_SOCKS, MAX_PORTS, MAX_PROC_NAMES, MAX_WATCHED_PIDS, NO_FLAGS, NO_REASON,
    ProcEvent, RING_BYTES, SockEvent, conn_flags, counter, how, kind, proc_event, redis_probes,
    side, sock_event, tcp_state,
};

/// Layouts and settings, overridden by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config::EMPTY);

/// Reads one field of `CONFIG`, not the whole 168-byte struct (`Global::load` copies it
/// all, on every event). Volatile, so that the placeholder value is not folded in.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: `Global<T>` is repr(transparent) over an initialised `T`, and CONFIG
        // is a static that lives as long as the program.
        unsafe {
            core::ptr::read_volatile(&raw const (*(&raw const CONFIG).cast::<Config>()).$field)
        }
    };
}

/// Traced ports (host order) -> 1.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Process names (comm, NUL-padded) whose OOM kill, fatal signals and exit are reported.
#[map]
static PROC_NAMES: Array<[u8; 16]> = Array::with_max_entries(MAX_PROC_NAMES, 0);

/// Processes to watch -> their name: Redis servers found by their listening port at
/// start (whatever their name), and those whose main thread exits with a watched name.
#[map]
static WATCHED_PIDS: HashMap<u32, [u8; 16]> = HashMap::with_max_entries(MAX_WATCHED_PIDS, 0);

/// Sockets redis-trace's own process connected (its Redis poller), while they live:
/// their connections are left out of the output.
#[map]
static OWN_SOCKS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_OWN_SOCKS, 0);

/// Settings of the Redis uprobes, indexed by `redis_trace_ebpf::redis_probes`.
#[map]
static REDIS_PROBES: Array<u32> = Array::with_max_entries(redis_probes::LEN, 0);

#[inline(always)]
fn redis_probe_setting(index: u32) -> u32 {
    REDIS_PROBES.get(index).copied().unwrap_or(0)
}

/// Redis's deferred frees (`freeClientAsync`): [process, client pointer] -> who decided,
/// and the client's flags then. Consumed by the `freeClient` that follows, maybe much
/// later. Keyed by the process too: two Redis servers can hold a client at one address.
#[map]
static ASYNC_FREES: LruHashMap<[u64; 2], Decision> = LruHashMap::with_max_entries(8192, 0);

/// What each Redis thread is freeing right now (`freeClient`): consumed by the state
/// change of the socket it closes, microseconds later in the same thread.
#[map]
static FREEING: LruHashMap<u32, Freeing> = LruHashMap::with_max_entries(1024, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Decision {
    decided_in: u64,
    flags: u64,
    ts: u64,
}

/// A deferred free normally follows its decision within one event-loop turn; a decision
/// older than this is stale (the uprobes were paused in between, and the client's
/// memory may since hold another client): a new decision replaces it.
const DECISION_STALE_NS: u64 = 2_000_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
struct Freeing {
    ts: u64,
    freed_from: u64,
    decided_in: u64,
    flags: u64,
}

/// A free older than this is not the one behind a close (it was a client that had
/// already closed its end, or a free without a socket).
const FREEING_FRESH_NS: u64 = 1_000_000;

/// Open connections on traced ports.
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Per-CPU counters, indexed by `redis_trace_ebpf::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

const BPF_RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; no other program touches it concurrently on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Bytes of a tracepoint record copied at once: every field used lies within them (the
/// largest record used, `tcp_send_reset`, is 88 bytes).
const RECORD_BYTES: usize = 96;

/// Per-CPU scratch space for the copy of the current record.
#[map]
static SCRATCH: PerCpuArray<[u8; RECORD_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// A tracepoint record, copied with one helper call; its fields are then plain loads
/// (a helper call per field was most of the programs' cost).
struct Rec {
    ctx: *const u8,
    buf: *const u8,
}

impl Rec {
    #[inline(always)]
    fn copy(ctx: &TracePointContext) -> Option<Self> {
        let buf = SCRATCH.get_ptr_mut(0)?;
        let src = ctx.as_ptr() as *const u8;
        // SAFETY: the scratch slot is this CPU's own and RECORD_BYTES long; the helper
        // checks the source. Reading past a shorter record stays within the kernel's
        // per-CPU trace buffer, and those bytes are never used.
        if unsafe { bpf_probe_read_kernel_buf(src, &mut *buf) }.is_err() {
            count(counter::READ_FAILED);
            return None;
        }
        Some(Self {
            ctx: src,
            buf: buf as *const u8,
        })
    }
}

/// Reads a field at an offset from the format file; `None` when absent.
#[inline(always)]
fn field<T: Copy>(rec: &Rec, offset: u16) -> Option<T> {
    let off = offset as usize;
    if offset == ABSENT || off + core::mem::size_of::<T>() > RECORD_BYTES {
        return None;
    }
    // SAFETY: within the scratch copy (checked just above); any bit pattern is valid
    // for the integer types read here.
    Some(unsafe { core::ptr::read_unaligned(rec.buf.add(off) as *const T) })
}

/// A socket's view of its connection, from a tracepoint.
struct Tuple {
    family: u16,
    local_port: u16,
    remote_port: u16,
    /// [`side::SERVER`] when the local port is traced, [`side::CLIENT`] when the remote is.
    side: u32,
}

/// Reads the ports and applies the port filter: `None` for a connection not on a traced
/// port, before anything else is read.
#[inline(always)]
fn ports(ctx: &Rec, l: &AddrLayout) -> Option<Tuple> {
    let (family, local_port, remote_port) = if l.sockaddr_src != ABSENT {
        // struct sockaddr_in / sockaddr_in6: family (host order) then port (network order).
        let family: u16 = field(ctx, l.sockaddr_src)?;
        let sport: u16 = field(ctx, l.sockaddr_src + 2)?;
        let dport: u16 = field(ctx, l.sockaddr_dst + 2)?;
        (family, u16::from_be(sport), u16::from_be(dport))
    } else {
        (
            field(ctx, l.family)?,
            field(ctx, l.sport)?,
            field(ctx, l.dport)?,
        )
    };
    // SAFETY: map lookups of plain keys.
    let side = if unsafe { PORTS.get(&local_port) }.is_some() {
        side::SERVER
    } else if unsafe { PORTS.get(&remote_port) }.is_some() {
        side::CLIENT
    } else {
        return None;
    };
    Some(Tuple {
        family,
        local_port,
        remote_port,
        side,
    })
}

/// Reads the local and remote address as 16 bytes (IPv4 as `::ffff:a.b.c.d`, so that an
/// IPv4 socket and the IPv6 socket at the other end of the same connection agree).
#[inline(always)]
fn addrs(ctx: &Rec, l: &AddrLayout, family: u16) -> Option<([u8; 16], [u8; 16])> {
    let mut local = [0u8; 16];
    let mut remote = [0u8; 16];
    if family == AF_INET {
        let (s, d) = if l.sockaddr_src != ABSENT {
            (l.sockaddr_src + 4, l.sockaddr_dst + 4)
        } else {
            (l.saddr, l.daddr)
        };
        let s: [u8; 4] = field(ctx, s)?;
        let d: [u8; 4] = field(ctx, d)?;
        local[10] = 0xff;
        local[11] = 0xff;
        remote[10] = 0xff;
        remote[11] = 0xff;
        local[12..].copy_from_slice(&s);
        remote[12..].copy_from_slice(&d);
    } else if family == AF_INET6 {
        let (s, d) = if l.sockaddr_src != ABSENT {
            (l.sockaddr_src + 8, l.sockaddr_dst + 8)
        } else {
            (l.saddr_v6, l.daddr_v6)
        };
        local = field(ctx, s)?;
        remote = field(ctx, d)?;
    } else {
        return None;
    }
    Some((local, remote))
}

#[inline(always)]
fn key_of(ctx: &Rec, l: &AddrLayout, t: &Tuple) -> Option<ConnKey> {
    let (local, remote) = addrs(ctx, l, t.family)?;
    Some(if t.side == side::SERVER {
        ConnKey {
            server_addr: local,
            client_addr: remote,
            server_port: t.local_port,
            client_port: t.remote_port,
            _pad: 0,
        }
    } else {
        ConnKey {
            server_addr: remote,
            client_addr: local,
            server_port: t.remote_port,
            client_port: t.local_port,
            _pad: 0,
        }
    })
}

#[inline(always)]
fn seen_bit(side_: u32) -> u32 {
    if side_ == side::SERVER {
        conn_flags::SERVER_SEEN
    } else {
        conn_flags::CLIENT_SEEN
    }
}

/// Ring-buffer flags: no wakeup unless enough data waits (userspace polls on a timer).
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= config!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Claims the right to report this connection's end. The first socket event that ends
/// a connection wins; the other end of a loopback connection then stays quiet. Returns
/// the connection's start time (0 when unseen) and which ends' sockets were seen, or
/// `None` when already reported.
#[inline(always)]
fn claim(key: &ConnKey, side_: u32) -> Option<(u64, u32)> {
    let mut state = CONNS.get_ptr_mut(key);
    if state.is_none() {
        // A connection opened before the capture started, or one whose entry made room.
        let fresh = ConnState {
            start_ns: 0,
            reported: 0,
            flags: seen_bit(side_),
            _pad: 0,
        };
        if CONNS.insert(key, &fresh, 0).is_err() {
            count(counter::CONN_MAP_FULL);
            // Report anyway: a duplicate is better than a loss.
            return Some((0, seen_bit(side_)));
        }
        state = CONNS.get_ptr_mut(key);
    }
    let state = state?;
    // SAFETY: `state` points into a map value that stays valid during this program.
    // Not atomic (the BPF target has no Rust atomics): the two ends of a loopback
    // connection close one after the other on one CPU (the peer's event is driven by the
    // packet the first sent), so they cannot race here; a truly simultaneous close on two
    // CPUs can yield two records, which userspace merges by key.
    unsafe {
        (*state).flags |= seen_bit(side_);
        if (*state).reported != 0 {
            return None;
        }
        (*state).reported = 1;
        Some(((*state).start_ns, (*state).flags))
    }
}

#[inline(always)]
fn emit_closed(
    key: &ConnKey,
    t: &Tuple,
    (start_ns, flags): (u64, u32),
    how_: u32,
    in_task: bool,
    old: u32,
    new: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnClosed>(0) else {
        count(counter::RING_FULL);
        return;
    };
    let (tgid, tid, comm) = if in_task {
        let id = bpf_get_current_pid_tgid();
        (
            (id >> 32) as u32,
            id as u32,
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, 0, [0; 16])
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // Redis closing a client it is freeing right now, in this thread: why it frees it.
    let freeing = if in_task && redis_probe_setting(redis_probes::ENABLED) != 0 {
        take_freeing(tid, now)
    } else {
        None
    };
    entry.write(ConnClosed {
        kind: kind::CONN_CLOSED,
        how: how_,
        observer: t.side,
        rst_reason: NO_REASON,
        error: 0,
        in_task: in_task as u32,
        tgid,
        tid,
        comm,
        start_ns,
        close_ns: now,
        key: *key,
        family: t.family,
        old_state: old as u16,
        new_state: new as u16,
        sockets_seen: (flags
            & (conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN | conn_flags::OWN))
            as u16,
        redis_freed_from: freeing.map_or(0, |f| f.freed_from),
        redis_decided_in: freeing.map_or(0, |f| f.decided_in),
        redis_client_flags: freeing.map_or(NO_FLAGS, |f| f.flags),
    });
    entry.submit(wakeup_flags());
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit_sock_event(
    key: &ConnKey,
    t: &Tuple,
    what: u32,
    rst_reason: u32,
    error: i32,
    in_task: bool,
    state: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<SockEvent>(0) else {
        count(counter::RING_FULL);
        return;
    };
    let id = bpf_get_current_pid_tgid();
    entry.write(SockEvent {
        kind: kind::SOCK,
        what,
        side: t.side,
        rst_reason,
        error,
        in_task: in_task as u32,
        tgid: if in_task { (id >> 32) as u32 } else { 0 },
        tid: if in_task { id as u32 } else { 0 },
        comm: if in_task {
            bpf_get_current_comm().unwrap_or([0; 16])
        } else {
            [0; 16]
        },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        key: *key,
        family: t.family,
        state: state as u16,
        flags: own_conn(key),
    });
    entry.submit(wakeup_flags());
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_inet_sock_set_state(&r));
    0
}

fn try_inet_sock_set_state(ctx: &Rec) -> Option<()> {
    let l = &config!(set_state);
    let protocol: u16 = if l.protocol_size == 1 {
        field::<u8>(ctx, l.protocol)? as u16
    } else {
        field(ctx, l.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return None;
    }
    let old = field::<i32>(ctx, l.oldstate)? as u32;
    let new = field::<i32>(ctx, l.newstate)? as u32;
    if new == tcp_state::SYN_SENT {
        // connect() runs in the connecting task: remember redis-trace's own sockets (the
        // port is not chosen yet, so the socket's address is what identifies them).
        let own = config!(own_tgid);
        if own != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == own {
            if let Some(sk) = field::<u64>(ctx, l.skaddr) {
                if OWN_SOCKS.insert(&sk, &1, 0).is_err() {
                    count(counter::OWN_SOCKS_FULL);
                }
            }
        }
        return None;
    }
    if new == tcp_state::LAST_ACK && redis_probe_setting(redis_probes::ENABLED) != 0 {
        // Redis closing a client that had closed first: that free explains nothing, so
        // it must not linger for the next close in this thread.
        let _ = FREEING.remove(&(bpf_get_current_pid_tgid() as u32));
    }
    // Only transitions that start or end a connection matter; leave the rest early.
    let interesting = matches!(
        (old, new),
        (
            tcp_state::SYN_SENT | tcp_state::SYN_RECV,
            tcp_state::ESTABLISHED
        ) | (
            tcp_state::ESTABLISHED | tcp_state::SYN_RECV,
            tcp_state::FIN_WAIT1
        ) | (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT)
            | (_, tcp_state::CLOSE)
    );
    // Listening sockets, and connects that never got through, are not connections.
    let never_connected = old == tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED;
    if never_connected && new == tcp_state::CLOSE {
        if let Some(sk) = field::<u64>(ctx, l.skaddr) {
            let _ = OWN_SOCKS.remove(&sk);
        }
    }
    if !interesting || old == tcp_state::LISTEN || never_connected {
        return None;
    }
    let t = ports(ctx, &l.addr)?;
    count(counter::HITS);
    let key = key_of(ctx, &l.addr, &t)?;

    if new == tcp_state::ESTABLISHED {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let own = if old == tcp_state::SYN_SENT && is_own(ctx, l.skaddr) {
            conn_flags::OWN
        } else {
            0
        };
        match CONNS.get_ptr_mut(&key) {
            // SAFETY: map value pointer, valid for this program's run.
            Some(s) => unsafe {
                if (*s).reported != 0 {
                    // The 4-tuple was reused by a new connection.
                    *s = ConnState {
                        start_ns: now,
                        reported: 0,
                        flags: seen_bit(t.side) | own,
                        _pad: 0,
                    };
                } else {
                    // A RST flag can only be left from a connect that never got through.
                    (*s).flags &=
                        !(conn_flags::SERVER_RST_RECEIVED | conn_flags::CLIENT_RST_RECEIVED);
                    (*s).flags |= seen_bit(t.side) | own;
                    if (*s).start_ns == 0 {
                        (*s).start_ns = now;
                    }
                }
            },
            None => {
                let fresh = ConnState {
                    start_ns: now,
                    reported: 0,
                    flags: seen_bit(t.side) | own,
                    _pad: 0,
                };
                if CONNS.insert(&key, &fresh, 0).is_err() {
                    count(counter::CONN_MAP_FULL);
                }
            }
        }
        return Some(());
    }

    let how_ = match (old, new) {
        // tcp_close()/tcp_shutdown(): always the closing task.
        (_, tcp_state::FIN_WAIT1) => Some((how::SENT_FIN, true)),
        // The peer's FIN, processed in softirq.
        (_, tcp_state::CLOSE_WAIT) => Some((how::RECEIVED_FIN, false)),
        // A RST arrived just before (tcp_receive_reset marked it): softirq, no task.
        (tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT, tcp_state::CLOSE)
            if rst_received(&key, t.side) =>
        {
            Some((how::RECEIVED_RST, false))
        }
        // An abort by the owning task (tcp_close with unread data, SO_LINGER 0,
        // tcp_disconnect, tcp_abort). A retransmission timeout ends here too, in a
        // timer, and is told apart by the error event that follows (see `how::ABORTED`).
        (tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT, tcp_state::CLOSE) => {
            Some((how::ABORTED, true))
        }
        _ => None,
    };
    if let Some((how_, in_task)) = how_ {
        if let Some(claimed) = claim(&key, t.side) {
            emit_closed(&key, &t, claimed, how_, in_task, old, new);
        }
    }

    if new == tcp_state::CLOSE {
        // Forget the connection once every socket of it that we saw has closed. With its
        // start unseen we cannot know whether the other end is local and still open, so
        // such entries are left for the LRU to recycle rather than risk a second record.
        if let Some(s) = CONNS.get_ptr_mut(&key) {
            // SAFETY: map value pointer, valid for this program's run.
            let (start, flags) = unsafe {
                (*s).flags |= if t.side == side::SERVER {
                    conn_flags::SERVER_CLOSED
                } else {
                    conn_flags::CLIENT_CLOSED
                };
                ((*s).start_ns, (*s).flags)
            };
            if flags & conn_flags::OWN != 0 && t.side == side::CLIENT {
                if let Some(sk) = field::<u64>(ctx, l.skaddr) {
                    let _ = OWN_SOCKS.remove(&sk);
                }
            }
            let seen = flags & (conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN);
            let closed = (flags >> 2) & (conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN);
            if start != 0 && seen == closed {
                let _ = CONNS.remove(&key);
            }
        }
    }
    Some(())
}

/// What thread `tid` was freeing, if it began within the last millisecond; consumed.
#[inline(always)]
fn take_freeing(tid: u32, now: u64) -> Option<Freeing> {
    // SAFETY: plain map lookup; the value is copied out at once.
    let f = unsafe { FREEING.get(&tid) }.copied()?;
    let _ = FREEING.remove(&tid);
    (now.saturating_sub(f.ts) < FREEING_FRESH_NS).then_some(f)
}

/// The caller of a uprobed function: at its first instruction the return address is
/// the word at the stack pointer (x86_64 call convention).
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register set; the stack word is read through the
    // checked user-memory helper.
    unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

/// `client->flags` of Redis's client `c`, when this Redis version's layout is known.
#[inline(always)]
fn client_flags(c: u64) -> u64 {
    let off = redis_probe_setting(redis_probes::FLAGS_OFFSET);
    if off == 0 || off >= u32::from(ABSENT) || c == 0 {
        return NO_FLAGS;
    }
    // SAFETY: user memory read through the checked helper.
    unsafe { bpf_probe_read_user((c + u64::from(off)) as *const u64) }.unwrap_or(NO_FLAGS)
}

/// `void freeClientAsync(client *c)`: Redis decided to free `c` later (output buffer
/// limit, query buffer limit, close after reply, ...). Remember who decided.
#[uprobe]
pub fn redis_free_client_async(ctx: ProbeContext) -> u32 {
    let Some(c) = ctx.arg::<u64>(0) else {
        return 0;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The first decision stands (Redis calls freeClientAsync again for a client already
    // closing), unless it is stale.
    let key = [bpf_get_current_pid_tgid() >> 32, c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let fresh = unsafe { ASYNC_FREES.get(&key) }
        .is_some_and(|d| now.saturating_sub(d.ts) < DECISION_STALE_NS);
    if !fresh {
        let d = Decision {
            decided_in: return_address(&ctx),
            flags: client_flags(c),
            ts: now,
        };
        let _ = ASYNC_FREES.insert(&key, &d, 0);
    }
    0
}

/// `void freeClient(client *c)`: Redis frees `c` now; its socket is closed within.
#[uprobe]
pub fn redis_free_client(ctx: ProbeContext) -> u32 {
    let Some(c) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let freed_from = return_address(&ctx);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = [bpf_get_current_pid_tgid() >> 32, c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let decision = unsafe { ASYNC_FREES.get(&key) }.copied();
    if decision.is_some() {
        let _ = ASYNC_FREES.remove(&key);
    }
    let (decided_in, flags) = match decision {
        Some(d) if now.saturating_sub(d.ts) < DECISION_STALE_NS => (d.decided_in, d.flags),
        _ => (freed_from, client_flags(c)),
    };
    let f = Freeing {
        ts: now,
        freed_from,
        decided_in,
        flags,
    };
    let _ = FREEING.insert(&(bpf_get_current_pid_tgid() as u32), &f, 0);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_reset(&r, false));
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_reset(&r, true));
    0
}

/// Whether the tracepoint's socket is one of redis-trace's own.
#[inline(always)]
fn is_own(ctx: &Rec, skaddr: u16) -> bool {
    // SAFETY: plain map lookup.
    field::<u64>(ctx, skaddr).is_some_and(|sk| unsafe { OWN_SOCKS.get(&sk) }.is_some())
}

/// Whether the connection is one of redis-trace's own.
#[inline(always)]
fn own_conn(key: &ConnKey) -> u32 {
    // SAFETY: plain map lookup.
    unsafe { CONNS.get(key) }.map_or(0, |s| s.flags & conn_flags::OWN)
}

fn rst_bit(side_: u32) -> u32 {
    if side_ == side::SERVER {
        conn_flags::SERVER_RST_RECEIVED
    } else {
        conn_flags::CLIENT_RST_RECEIVED
    }
}

#[inline(always)]
fn rst_received(key: &ConnKey, side_: u32) -> bool {
    // SAFETY: plain map lookup.
    unsafe { CONNS.get(key) }.is_some_and(|s| s.flags & rst_bit(side_) != 0)
}

fn try_reset(ctx: &Rec, sent: bool) -> Option<()> {
    let l = &if sent {
        config!(send_reset)
    } else {
        config!(receive_reset)
    };
    let t = ports(ctx, &l.addr)?;
    count(counter::HITS);
    let key = key_of(ctx, &l.addr, &t)?;
    let state = field::<i32>(ctx, l.state).unwrap_or(0) as u32;
    if !sent {
        // A received RST ends the connection (tcp_reset -> tcp_done): mark it, and let the
        // state change that follows claim it. This tracepoint has no state field, and a
        // connect refused (SYN_SENT -> CLOSE) must not count as a connection.
        // A refused connect of redis-trace's own poller is marked too, so that the RSTs
        // of its reconnect attempts stay out of the output.
        let own = if is_own(ctx, l.skaddr) {
            conn_flags::OWN
        } else {
            0
        };
        match CONNS.get_ptr_mut(&key) {
            // SAFETY: map value pointer, valid for this program's run.
            Some(s) => unsafe { (*s).flags |= rst_bit(t.side) | own },
            None => {
                let fresh = ConnState {
                    start_ns: 0,
                    reported: 0,
                    flags: rst_bit(t.side) | own,
                    _pad: 0,
                };
                if CONNS.insert(&key, &fresh, 0).is_err() {
                    count(counter::CONN_MAP_FULL);
                }
            }
        }
        emit_sock_event(
            &key,
            &t,
            sock_event::RST_RECEIVED,
            NO_REASON,
            0,
            false,
            state,
        );
        return Some(());
    }
    // A sent RST never claims: the state change (abort) or error event around it does,
    // and this record carries the reason to userspace. Whether `current` is the task
    // that caused it depends on the reason: TCP_ABORT_ON_CLOSE and friends are sent from
    // close(); replies to packets and timers run in softirq.
    let reason = field::<u32>(ctx, l.reason).unwrap_or(NO_REASON);
    let in_task = reason < 64 && config!(task_reasons) & (1u64 << reason) != 0;
    emit_sock_event(&key, &t, sock_event::RST_SENT, reason, 0, in_task, state);
    Some(())
}

#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_error_report(&r));
    0
}

fn try_error_report(ctx: &Rec) -> Option<()> {
    let l = &config!(error_report);
    if field::<u16>(ctx, l.protocol)? != IPPROTO_TCP {
        return None;
    }
    let t = ports(ctx, &l.addr)?;
    count(counter::HITS);
    let key = key_of(ctx, &l.addr, &t)?;
    let error: i32 = field(ctx, l.error)?;
    // Never claims: since 6.x tcp_done_with_error() closes the socket before reporting
    // the error, and older kernels report it just before; either way the state change
    // claims and this event tells userspace a timer, not a task, did it.
    emit_sock_event(&key, &t, sock_event::ERROR, NO_REASON, error, false, 0);
    Some(())
}

/// Whether a process is one we watch: by comm, or by pid.
#[inline(always)]
fn watched(comm: &[u8; 16], pid: u32) -> bool {
    // SAFETY: plain map lookup.
    unsafe { WATCHED_PIDS.get(&pid) }.is_some() || watched_name(comm)
}

#[inline(always)]
fn watched_name(comm: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < MAX_PROC_NAMES {
        if let Some(name) = PROC_NAMES.get(i) {
            if name[0] != 0 && name == comm {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn new_proc_event(what: u32) -> ProcEvent {
    let id = bpf_get_current_pid_tgid();
    ProcEvent {
        kind: kind::PROC,
        what,
        pid: 0,
        actor_tgid: (id >> 32) as u32,
        actor_tid: id as u32,
        sig: 0,
        code: 0,
        result: 0,
        comm: [0; 16],
        actor_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        total_vm: 0,
        anon_rss: 0,
        file_rss: 0,
        shmem_rss: 0,
        pgtables: 0,
        uid: 0,
        oom_score_adj: 0,
    }
}

#[inline(always)]
fn emit_proc(ev: &ProcEvent) {
    // Rare and urgent: always wake userspace.
    if EVENTS
        .output::<ProcEvent>(ev, BPF_RB_FORCE_WAKEUP as u64)
        .is_err()
    {
        count(counter::RING_FULL);
    }
}

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_mark_victim(&r));
    0
}

/// Every OOM victim is reported (rare, and a killed client explains resets too).
fn try_mark_victim(ctx: &Rec) -> Option<()> {
    let l = &config!(oom);
    let mut ev = new_proc_event(proc_event::OOM_VICTIM);
    ev.pid = field::<i32>(ctx, l.pid)? as u32;
    if let Some(loc) = field::<u32>(ctx, l.comm_loc) {
        // __data_loc: low 16 bits the offset of the string in the record, high 16 its length.
        let off = (loc & 0xffff) as usize;
        // SAFETY: reading within the tracepoint record through the checked helper.
        if let Ok(c) = unsafe { bpf_probe_read_kernel(ctx.ctx.add(off) as *const [u8; 16]) } {
            ev.comm = c;
        }
    }
    ev.total_vm = field(ctx, l.total_vm).unwrap_or(0);
    ev.anon_rss = field(ctx, l.anon_rss).unwrap_or(0);
    ev.file_rss = field(ctx, l.file_rss).unwrap_or(0);
    ev.shmem_rss = field(ctx, l.shmem_rss).unwrap_or(0);
    ev.pgtables = field(ctx, l.pgtables).unwrap_or(0);
    ev.uid = field(ctx, l.uid).unwrap_or(0);
    ev.oom_score_adj = field::<i16>(ctx, l.oom_score_adj).unwrap_or(0) as i32;
    emit_proc(&ev);
    Some(())
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_signal_generate(&r));
    0
}

fn try_signal_generate(ctx: &Rec) -> Option<()> {
    let l = &config!(signal);
    let sig: i32 = field(ctx, l.sig)?;
    if !(0..64).contains(&sig) || config!(signal_mask) & (1u64 << sig) == 0 {
        return None;
    }
    let pid = field::<i32>(ctx, l.pid)? as u32;
    let comm: [u8; 16] = field(ctx, l.comm)?;
    if !watched(&comm, pid) {
        return None;
    }
    let mut ev = new_proc_event(proc_event::SIGNAL);
    ev.pid = pid;
    ev.comm = comm;
    ev.sig = sig;
    ev.code = field(ctx, l.code).unwrap_or(0);
    ev.result = field(ctx, l.result).unwrap_or(0);
    emit_proc(&ev);
    Some(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_sched_process_exit(&r));
    0
}

fn try_sched_process_exit(ctx: &Rec) -> Option<()> {
    let l = &config!(exit);
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let main_thread = tgid == id as u32;
    let comm: [u8; 16] = field(ctx, l.comm)?;
    // The process is reported once, when its last thread exits (group_dead). That thread
    // may be any of Redis's (bio_*, jemalloc_bg_thd): it is the main thread's exit that
    // carries the process name, so remember a watched process's name then.
    if main_thread && watched_name(&comm) {
        let _ = WATCHED_PIDS.insert(&tgid, &comm, 0);
    }
    let whole = match field::<u8>(ctx, l.group_dead) {
        Some(g) => g != 0,
        None => main_thread,
    };
    if !whole {
        return None;
    }
    // SAFETY: plain map lookup; the value is copied out at once.
    let name = unsafe { WATCHED_PIDS.get(&tgid) }.copied()?;
    let _ = WATCHED_PIDS.remove(&tgid);
    let mut ev = new_proc_event(proc_event::EXIT);
    ev.pid = tgid;
    ev.comm = if name[0] != 0 { name } else { comm };
    ev.sig = 1;
    emit_proc(&ev);
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the programs: GPL, needed for the helpers used (bpf_probe_read_kernel, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// Keep the map sizes tied to the shared constants.
const _: () = assert!(MAX_CONNS > 0 && MAX_PORTS > 0);
