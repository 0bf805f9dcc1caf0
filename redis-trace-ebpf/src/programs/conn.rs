//! Connection state: `inet_sock_set_state` tracks each connection on a traced port from
//! its start to its close, and the first socket event that ends it reports it, once.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use redis_trace_ebpf::{
    ConnClosed, ConnKey, ConnState, IPPROTO_TCP, NO_FLAGS, NO_NETNS, NO_REASON, conn_flags,
    counter, how, kind, redis_probes, side, tcp_state,
};

use super::maps::{
    CONNS, EVENTS, FREEING, OWN_SOCKS, TUPLES, count, redis_probe_setting, wakeup_flags,
};
use super::packets::{emit_packets, forget_packets};
use super::read::{Rec, Tuple, field, key_of, ports};
use super::redis_uprobes::take_freeing;

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
    let key = key_of(ctx, &l.addr, &t, l.skaddr)?;

    if new == tcp_state::ESTABLISHED {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        mark_tuple(&key, t.side);
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
            if !on_loopback(&key) {
                emit_packets(&key, t.side);
            }
        }
    }

    if new == tcp_state::CLOSE {
        if !on_loopback(&key) {
            forget_packets(&key, t.side);
        }
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

/// The key of a connection's address tuple, whatever its namespace.
#[inline(always)]
fn tuple_of(key: &ConnKey) -> ConnKey {
    ConnKey {
        netns: NO_NETNS,
        ..*key
    }
}

/// Whether the client address is a loopback one (127.0.0.0/8 as `::ffff:127.x.y.z`, or
/// `::1`): such a connection never leaves its namespace, so both of its ends share the
/// key and `TUPLES` has nothing to tell.
#[inline(always)]
pub(super) fn on_loopback(key: &ConnKey) -> bool {
    let a = &key.client_addr;
    // Two plain 8-byte loads (a slice comparison would need memcmp, which BPF lacks).
    // SAFETY: both reads lie within the 16-byte array; any bit pattern is a valid u64.
    let (hi, lo) = unsafe {
        (
            core::ptr::read_unaligned(a.as_ptr() as *const u64),
            core::ptr::read_unaligned(a.as_ptr().add(8) as *const u64),
        )
    };
    (a[10] == 0xff && a[11] == 0xff && a[12] == 127) || (hi == 0 && lo == u64::from_be(1))
}

/// Notes that this end of the tuple was seen established.
#[inline(always)]
fn mark_tuple(key: &ConnKey, side_: u32) {
    if key.netns == NO_NETNS || on_loopback(key) {
        return;
    }
    let t = tuple_of(key);
    match TUPLES.get_ptr_mut(&t) {
        // SAFETY: map value pointer, valid for this program's run.
        Some(bits) => unsafe { *bits |= seen_bit(side_) },
        None => {
            let _ = TUPLES.insert(&t, &seen_bit(side_), 0);
        }
    }
}

/// [`conn_flags::PEER_ELSEWHERE`] when the other end of this tuple was seen in another
/// namespace, not in this connection's.
#[inline(always)]
fn peer_elsewhere(key: &ConnKey, side_: u32, flags: u32) -> u32 {
    let other = seen_bit(if side_ == side::SERVER {
        side::CLIENT
    } else {
        side::SERVER
    });
    if key.netns == NO_NETNS || flags & other != 0 || on_loopback(key) {
        return 0;
    }
    // SAFETY: plain map lookup.
    match unsafe { TUPLES.get(&tuple_of(key)) } {
        Some(bits) if bits & other != 0 => conn_flags::PEER_ELSEWHERE,
        _ => 0,
    }
}

#[inline(always)]
pub(super) fn seen_bit(side_: u32) -> u32 {
    if side_ == side::SERVER {
        conn_flags::SERVER_SEEN
    } else {
        conn_flags::CLIENT_SEEN
    }
}

pub(super) fn rst_bit(side_: u32) -> u32 {
    if side_ == side::SERVER {
        conn_flags::SERVER_RST_RECEIVED
    } else {
        conn_flags::CLIENT_RST_RECEIVED
    }
}

#[inline(always)]
pub(super) fn rst_received(key: &ConnKey, side_: u32) -> bool {
    // SAFETY: plain map lookup.
    unsafe { CONNS.get(key) }.is_some_and(|s| s.flags & rst_bit(side_) != 0)
}

/// Whether the tracepoint's socket is one of redis-trace's own.
#[inline(always)]
pub(super) fn is_own(ctx: &Rec, skaddr: u16) -> bool {
    // SAFETY: plain map lookup.
    field::<u64>(ctx, skaddr).is_some_and(|sk| unsafe { OWN_SOCKS.get(&sk) }.is_some())
}

/// Whether the connection is one of redis-trace's own.
#[inline(always)]
pub(super) fn own_conn(key: &ConnKey) -> u32 {
    // SAFETY: plain map lookup.
    unsafe { CONNS.get(key) }.map_or(0, |s| s.flags & conn_flags::OWN)
}

/// Claims the right to report this connection's end. The first socket event that ends
/// a connection wins; the other end of a loopback connection then stays quiet. Returns
/// the connection's start time (0 when unseen) and which ends' sockets were seen, or
/// `None` when already reported.
#[inline(always)]
pub(super) fn claim(key: &ConnKey, side_: u32) -> Option<(u64, u32)> {
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
pub(super) fn emit_closed(
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
        sockets_seen: ((flags
            & (conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN | conn_flags::OWN))
            | peer_elsewhere(key, t.side, flags)) as u16,
        redis_freed_from: freeing.map_or(0, |f| f.freed_from),
        redis_decided_in: freeing.map_or(0, |f| f.decided_in),
        redis_freed_from_caller: freeing.map_or(0, |f| f.freed_from_caller),
        redis_decided_in_caller: freeing.map_or(0, |f| f.decided_in_caller),
        redis_client_flags: freeing.map_or(NO_FLAGS, |f| f.flags),
    });
    entry.submit(wakeup_flags());
}
