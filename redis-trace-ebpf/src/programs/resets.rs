//! Resets and socket errors: RSTs received and sent, and errors reported on a socket
//! (a retransmission timeout, ...). They never claim a connection's end: they mark it
//! or tell userspace why, in a socket event.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use redis_trace_ebpf::{
    ConnKey, ConnState, IPPROTO_TCP, NO_REASON, SockEvent, conn_flags, counter, kind, sock_event,
};

use super::conn::{is_own, on_loopback, own_conn, rst_bit};
use super::maps::{CONNS, EVENTS, count, wakeup_flags};
use super::packets::emit_packets;
use super::read::{Rec, Tuple, field, key_of, ports};

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

fn try_reset(ctx: &Rec, sent: bool) -> Option<()> {
    let l = &if sent {
        config!(send_reset)
    } else {
        config!(receive_reset)
    };
    let t = ports(ctx, &l.addr)?;
    count(counter::HITS);
    let key = key_of(ctx, &l.addr, &t, l.skaddr)?;
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
        let mut reported = false;
        match CONNS.get_ptr_mut(&key) {
            // SAFETY: map value pointer, valid for this program's run.
            Some(s) => unsafe {
                (*s).flags |= rst_bit(t.side) | own;
                reported = (*s).reported != 0;
            },
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
        // A RST after the record (one that answers our FIN): what it looked like.
        if reported && !on_loopback(&key) {
            emit_packets(&key, t.side);
        }
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
    // This tracepoint has no socket address: the namespace stays unknown.
    let key = key_of(ctx, &l.addr, &t, redis_trace_ebpf::ABSENT)?;
    let error: i32 = field(ctx, l.error)?;
    // Never claims: since 6.x tcp_done_with_error() closes the socket before reporting
    // the error, and older kernels report it just before; either way the state change
    // claims and this event tells userspace a timer, not a task, did it.
    emit_sock_event(&key, &t, sock_event::ERROR, NO_REASON, error, false, 0);
    Some(())
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
