//! Joins the kernel's records about one connection into what a user reads.
//!
//! The kernel sends one `ConnClosed` per connection, claimed by whichever socket saw the
//! end first, plus `SockEvent`s (RSTs sent or received, socket errors) that complete it:
//! a task's abort is followed by the RST that carries the reset reason, and a timer's
//! abort by an error report, in that order, microseconds apart. So records are held per
//! connection for a short grace period (kernel time) and then written as one.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use redis_trace_ebpf::{
    ConnClosed, ConnKey, NO_REASON, SockEvent, conn_flags, how, side, sock_event,
};

use super::decode::{client, comm, errno_name, server};
use super::layout::ResetReasons;
use crate::schema::{Direction, KernelEvent, Packet, ProcessRef, ResetSeen, Side};
use crate::time::Clock;

/// One connection's end as the kernel saw it, typed: what the classifier reads, and what
/// the `connection_closed` record is built from (once, after enrichment).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelClose {
    /// Kernel time (CLOCK_MONOTONIC ns) of the state change that ended it.
    pub close_ns: u64,
    /// The same, as wall time.
    pub time: SystemTime,
    /// Kernel time it was established, when the capture saw that.
    pub start_ns: Option<u64>,
    pub server: SocketAddr,
    pub client: SocketAddr,
    /// Whose end sent the first FIN or RST; `None` when neither sent one.
    pub closed_by_side: Option<Side>,
    pub packet: Option<Packet>,
    /// The task that closed it, when the kernel did that in the task's own context.
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub rst_reason: Option<String>,
    pub kernel_event: KernelEvent,
    pub observed_on: Side,
    /// The socket error the kernel reported (ECONNRESET, ETIMEDOUT, ...).
    pub error: Option<String>,
    pub server_process: Option<ProcessRef>,
    pub client_process: Option<ProcessRef>,
    /// Whether both ends' sockets are on this host.
    pub both_ends_local: bool,
    pub resets: Vec<KernelReset>,
    /// What the Redis uprobes recorded for this close (all 0 when nothing).
    pub redis: RedisRaw,
}

impl KernelClose {
    /// How long it lived, when its start was seen.
    pub fn duration_ms(&self) -> Option<f64> {
        self.start_ns
            .filter(|s| self.close_ns >= *s)
            .map(|s| (self.close_ns - s) as f64 / 1e6)
    }
}

/// A RST sent or received around a connection's end.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelReset {
    pub ts_ns: u64,
    pub time: SystemTime,
    pub direction: Direction,
    pub side: Side,
    pub rst_reason: Option<String>,
}

/// The uprobes' raw view of a close: return addresses in redis-server and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisRaw {
    pub freed_from: u64,
    pub decided_in: u64,
    /// One frame up from each (see `ConnClosed::redis_freed_from_caller`).
    pub freed_from_caller: u64,
    pub decided_in_caller: u64,
    pub client_flags: u64,
}

/// What the assembler hands to the writers.
#[derive(Debug, Clone)]
pub enum Assembled {
    Closed(Box<KernelClose>),
    Reset(ResetSeen),
}

#[derive(Default)]
struct Group {
    first_ts: u64,
    closed: Vec<ConnClosed>,
    socks: Vec<SockEvent>,
    /// redis-trace's own connection (its Redis poller): not the user's traffic.
    own: bool,
}

/// Owners of sockets open at capture start, keyed by (local, remote).
pub type Owners = HashMap<(SocketAddr, SocketAddr), ProcessRef>;

pub struct Assembler {
    grace_ns: u64,
    groups: HashMap<ConnKey, Group>,
    order: VecDeque<(u64, ConnKey)>,
    reasons: ResetReasons,
    clock: Clock,
    owners: Owners,
    /// Duplicate `ConnClosed` records merged (a simultaneous close on two CPUs).
    pub merged_duplicates: u64,
    /// redis-trace's own connections to Redis, left out.
    pub own_skipped: u64,
    /// Closes without a start that were not open at start (see `CaptureEnded`).
    pub without_start: u64,
}

impl Assembler {
    pub fn new(grace: Duration, reasons: ResetReasons, clock: Clock, owners: Owners) -> Self {
        Self {
            grace_ns: grace.as_nanos() as u64,
            groups: HashMap::new(),
            order: VecDeque::new(),
            reasons,
            clock,
            owners,
            merged_duplicates: 0,
            own_skipped: 0,
            without_start: 0,
        }
    }

    fn group(&mut self, key: ConnKey, ts: u64) -> &mut Group {
        let order = &mut self.order;
        self.groups.entry(key).or_insert_with(|| {
            order.push_back((ts, key));
            Group {
                first_ts: ts,
                ..Group::default()
            }
        })
    }

    pub fn push_closed(&mut self, c: ConnClosed) {
        let g = self.group(c.key, c.close_ns);
        g.first_ts = g.first_ts.min(c.close_ns);
        g.own |= u32::from(c.sockets_seen) & conn_flags::OWN != 0;
        g.closed.push(c);
    }

    pub fn push_sock(&mut self, s: SockEvent) {
        let g = self.group(s.key, s.ts_ns);
        g.first_ts = g.first_ts.min(s.ts_ns);
        g.own |= s.flags & conn_flags::OWN != 0;
        g.socks.push(s);
    }

    pub fn pending(&self) -> usize {
        self.groups.len()
    }

    /// Emits every group older than the grace period at kernel time `now_ns`; all of
    /// them when `now_ns` is `u64::MAX` (end of capture).
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Assembled>) {
        while let Some(&(ts, key)) = self.order.front() {
            if now_ns != u64::MAX && now_ns.saturating_sub(ts) < self.grace_ns {
                break;
            }
            self.order.pop_front();
            if let Some(g) = self.groups.remove(&key) {
                self.finish(key, g, out);
            }
        }
    }

    fn finish(&mut self, key: ConnKey, mut g: Group, out: &mut Vec<Assembled>) {
        g.socks.sort_by_key(|s| s.ts_ns);
        g.closed.sort_by_key(|c| c.close_ns);
        if g.own {
            self.own_skipped += u64::from(!g.closed.is_empty());
            return;
        }
        if let Some(first) = g.closed.first().copied() {
            self.merged_duplicates += g.closed.len() as u64 - 1;
            let record = self.connection(&first, &g.socks);
            if record.start_ns.is_none()
                && record.server_process.is_none()
                && record.client_process.is_none()
            {
                self.without_start += 1;
            }
            out.push(Assembled::Closed(Box::new(record)));
        } else if g.socks.iter().any(is_rst) {
            out.push(Assembled::Reset(self.reset(&key, &g.socks)));
        }
        // Socket errors alone, after the connection's record went out, add nothing.
    }

    fn reason(&self, n: u32) -> Option<String> {
        if n == NO_REASON {
            return None;
        }
        Some(
            self.reasons
                .name(n)
                .map_or_else(|| format!("reason {n}"), str::to_string),
        )
    }

    fn connection(&self, c: &ConnClosed, socks: &[SockEvent]) -> KernelClose {
        let me = c.observer;
        let peer = other(me);
        let (me_side, peer_side) = (side_of(me), side_of(peer));
        let rst_sent_by = |s: u32| {
            socks
                .iter()
                .find(|e| e.what == sock_event::RST_SENT && e.side == s)
        };
        let error_on = |s: u32| {
            socks
                .iter()
                .find(|e| e.what == sock_event::ERROR && e.side == s)
        };
        let task = || {
            (
                Some(c.tgid),
                Some(c.tid),
                Some(comm(&c.comm)).filter(|s| !s.is_empty()),
            )
        };
        let none = (None, None, None);

        let (closed_by, packet, (pid, tid, comm_), reason, kernel_event) = match c.how {
            how::SENT_FIN => (
                Some(me_side),
                Some(Packet::Fin),
                if c.in_task != 0 { task() } else { none },
                None,
                KernelEvent::SentFin,
            ),
            how::RECEIVED_FIN => (
                Some(peer_side),
                Some(Packet::Fin),
                none,
                None,
                KernelEvent::ReceivedFin,
            ),
            how::ABORTED => {
                // A task's abort sends its RST after the state change; a timer's abort
                // (retransmission or keepalive timeout) reports an error instead, and a
                // keepalive RST comes before the state change.
                let rst_after = socks.iter().find(|e| {
                    e.what == sock_event::RST_SENT && e.side == me && e.ts_ns >= c.close_ns
                });
                if let Some(rst) = rst_after {
                    (
                        Some(me_side),
                        Some(Packet::Rst),
                        task(),
                        self.reason(rst.rst_reason),
                        KernelEvent::Aborted,
                    )
                } else if error_on(me).is_some() {
                    let rst = rst_sent_by(me);
                    (
                        rst.map(|_| me_side),
                        rst.map(|_| Packet::Rst),
                        none,
                        rst.and_then(|r| self.reason(r.rst_reason)),
                        KernelEvent::Timeout,
                    )
                } else {
                    // No RST and no error followed: the abort is real, the task unproven.
                    (Some(me_side), None, none, None, KernelEvent::Aborted)
                }
            }
            how::RECEIVED_RST => {
                // When the sender is on this host too, its RST event names the reason.
                let sender = rst_sent_by(peer);
                let who = match sender {
                    Some(s) if s.in_task != 0 => (
                        Some(s.tgid),
                        Some(s.tid),
                        Some(comm(&s.comm)).filter(|x| !x.is_empty()),
                    ),
                    _ => none,
                };
                (
                    Some(peer_side),
                    Some(Packet::Rst),
                    who,
                    sender.and_then(|s| self.reason(s.rst_reason)),
                    KernelEvent::ReceivedRst,
                )
            }
            _ => {
                // how::ERROR: the kernel gave up on the connection itself.
                let rst = rst_sent_by(me);
                (
                    rst.map(|_| me_side),
                    rst.map(|_| Packet::Rst),
                    none,
                    rst.and_then(|r| self.reason(r.rst_reason)),
                    KernelEvent::Timeout,
                )
            }
        };

        let srv = server(&c.key);
        let cli = client(&c.key);
        let both = conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN;
        let error = error_on(me)
            .or_else(|| socks.iter().find(|e| e.what == sock_event::ERROR))
            .map(|e| errno_name(e.error));
        KernelClose {
            close_ns: c.close_ns,
            time: self.clock.wall(c.close_ns),
            start_ns: (c.start_ns != 0).then_some(c.start_ns),
            server: srv,
            client: cli,
            closed_by_side: closed_by,
            packet,
            pid,
            tid,
            comm: comm_,
            rst_reason: reason,
            kernel_event,
            observed_on: me_side,
            error,
            server_process: self.owners.get(&(srv, cli)).cloned(),
            client_process: self.owners.get(&(cli, srv)).cloned(),
            both_ends_local: u32::from(c.sockets_seen) & both == both,
            resets: socks
                .iter()
                .filter(|e| is_rst(e))
                .map(|e| self.note(e))
                .collect(),
            redis: RedisRaw {
                freed_from: c.redis_freed_from,
                decided_in: c.redis_decided_in,
                freed_from_caller: c.redis_freed_from_caller,
                decided_in_caller: c.redis_decided_in_caller,
                client_flags: c.redis_client_flags,
            },
        }
    }

    fn note(&self, e: &SockEvent) -> KernelReset {
        KernelReset {
            ts_ns: e.ts_ns,
            time: self.clock.wall(e.ts_ns),
            direction: if e.what == sock_event::RST_SENT {
                Direction::Sent
            } else {
                Direction::Received
            },
            side: side_of(e.side),
            rst_reason: self.reason(e.rst_reason),
        }
    }

    fn reset(&self, key: &ConnKey, socks: &[SockEvent]) -> ResetSeen {
        let sent = socks.iter().find(|e| e.what == sock_event::RST_SENT);
        let received = socks.iter().find(|e| e.what == sock_event::RST_RECEIVED);
        let first = sent.or(received).map_or(0, |e| e.ts_ns);
        ResetSeen {
            time: Some(self.clock.wall(first)),
            server: server(key),
            client: client(key),
            sent_by: sent.map(|e| side_of(e.side)),
            received_by: received.map(|e| side_of(e.side)),
            rst_reason: sent.and_then(|e| self.reason(e.rst_reason)),
            pid: sent.filter(|e| e.in_task != 0).map(|e| e.tgid),
            comm: sent.filter(|e| e.in_task != 0).map(|e| comm(&e.comm)),
        }
    }
}

fn is_rst(e: &SockEvent) -> bool {
    e.what == sock_event::RST_SENT || e.what == sock_event::RST_RECEIVED
}

fn other(s: u32) -> u32 {
    if s == side::SERVER {
        side::CLIENT
    } else {
        side::SERVER
    }
}

/// The side a kernel record names.
pub fn side_of(s: u32) -> Side {
    match s {
        side::SERVER => Side::Server,
        side::CLIENT => Side::Client,
        _ => Side::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_trace_ebpf::kind;

    const MS: u64 = 1_000_000;

    fn key() -> ConnKey {
        let mut k = ConnKey::default();
        k.server_addr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        k.client_addr = k.server_addr;
        k.server_port = 6379;
        k.client_port = 40000;
        k
    }

    fn comm16(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn closed(how_: u32, observer: u32, in_task: u32, ts: u64) -> ConnClosed {
        ConnClosed {
            kind: kind::CONN_CLOSED,
            how: how_,
            observer,
            rst_reason: NO_REASON,
            error: 0,
            in_task,
            tgid: if in_task != 0 { 77 } else { 0 },
            tid: if in_task != 0 { 78 } else { 0 },
            comm: if in_task != 0 {
                comm16("python3")
            } else {
                [0; 16]
            },
            start_ns: 1000 * MS,
            close_ns: ts,
            key: key(),
            family: 2,
            old_state: 1,
            new_state: 7,
            sockets_seen: 3,
            redis_freed_from: 0,
            redis_decided_in: 0,
            redis_freed_from_caller: 0,
            redis_decided_in_caller: 0,
            redis_client_flags: redis_trace_ebpf::NO_FLAGS,
        }
    }

    fn sock(what: u32, side_: u32, reason: u32, error: i32, ts: u64) -> SockEvent {
        SockEvent {
            kind: kind::SOCK,
            what,
            side: side_,
            rst_reason: reason,
            error,
            in_task: 0,
            tgid: 0,
            tid: 0,
            comm: [0; 16],
            ts_ns: ts,
            key: key(),
            family: 2,
            state: 7,
            flags: 0,
        }
    }

    fn reasons() -> ResetReasons {
        ResetReasons(vec![
            (1, "NO_SOCKET".into()),
            (11, "TCP_ABORT_ON_CLOSE".into()),
            (14, "TCP_STATE".into()),
            (15, "TCP_KEEPALIVE_TIMEOUT".into()),
        ])
    }

    fn assembler() -> Assembler {
        Assembler::new(
            Duration::from_millis(200),
            reasons(),
            Clock::fixed(SystemTime::UNIX_EPOCH),
            Owners::new(),
        )
    }

    fn run(push: impl FnOnce(&mut Assembler)) -> Vec<Assembled> {
        let mut a = assembler();
        push(&mut a);
        let mut out = Vec::new();
        a.flush(u64::MAX, &mut out);
        out
    }

    fn only_conn(out: Vec<Assembled>) -> KernelClose {
        assert_eq!(out.len(), 1, "{out:?}");
        match out.into_iter().next() {
            Some(Assembled::Closed(c)) => *c,
            other => panic!("expected a connection record, got {other:?}"),
        }
    }

    #[test]
    fn client_fin_names_the_client_task() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1010 * MS))
        }));
        assert_eq!(c.closed_by_side, Some(Side::Client));
        assert_eq!(c.packet, Some(Packet::Fin));
        assert_eq!((c.pid, c.comm.as_deref()), (Some(77), Some("python3")));
        assert_eq!(c.duration_ms(), Some(10.0));
        assert_eq!(c.server.to_string(), "127.0.0.1:6379");
        assert_eq!(c.client.to_string(), "127.0.0.1:40000");
    }

    #[test]
    fn received_fin_blames_the_peer_and_no_task() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::RECEIVED_FIN, side::SERVER, 0, 1010 * MS))
        }));
        assert_eq!(c.closed_by_side, Some(Side::Client));
        assert_eq!(c.pid, None);
        assert_eq!(c.comm, None);
    }

    #[test]
    fn abort_followed_by_rst_is_a_task_reset_with_reason() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::ABORTED, side::CLIENT, 1, 1010 * MS));
            a.push_sock(sock(
                sock_event::RST_RECEIVED,
                side::SERVER,
                NO_REASON,
                0,
                1010 * MS + 5,
            ));
            a.push_sock(sock(
                sock_event::ERROR,
                side::SERVER,
                NO_REASON,
                104,
                1010 * MS + 6,
            ));
            a.push_sock(sock(
                sock_event::RST_SENT,
                side::CLIENT,
                14,
                0,
                1010 * MS + 9,
            ));
        }));
        assert_eq!(c.closed_by_side, Some(Side::Client));
        assert_eq!(c.packet, Some(Packet::Rst));
        assert_eq!(c.rst_reason.as_deref(), Some("TCP_STATE"));
        assert_eq!(c.pid, Some(77));
        assert_eq!(c.resets.len(), 2);
    }

    #[test]
    fn keepalive_timeout_does_not_blame_the_task_on_the_cpu() {
        let c = only_conn(run(|a| {
            a.push_sock(sock(sock_event::RST_SENT, side::SERVER, 15, 0, 1010 * MS));
            a.push_closed(closed(how::ABORTED, side::SERVER, 1, 1010 * MS + 3));
            a.push_sock(sock(
                sock_event::ERROR,
                side::SERVER,
                NO_REASON,
                110,
                1010 * MS + 4,
            ));
        }));
        assert_eq!(c.kernel_event, KernelEvent::Timeout);
        assert_eq!(c.pid, None);
        assert_eq!(c.packet, Some(Packet::Rst));
        assert_eq!(c.rst_reason.as_deref(), Some("TCP_KEEPALIVE_TIMEOUT"));
        assert_eq!(c.error.as_deref(), Some("ETIMEDOUT"));
    }

    #[test]
    fn unconfirmed_abort_keeps_side_but_names_no_task() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::ABORTED, side::SERVER, 1, 1010 * MS))
        }));
        assert_eq!(c.closed_by_side, Some(Side::Server));
        assert_eq!((c.pid, c.packet), (None, None));
    }

    #[test]
    fn simultaneous_duplicates_merge_into_the_earliest() {
        let mut a = assembler();
        a.push_closed(closed(how::SENT_FIN, side::SERVER, 1, 1011 * MS));
        a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1010 * MS));
        let mut out = Vec::new();
        a.flush(u64::MAX, &mut out);
        assert_eq!(a.merged_duplicates, 1);
        let c = only_conn(out);
        assert_eq!(c.closed_by_side, Some(Side::Client));
    }

    #[test]
    fn late_rst_alone_becomes_a_reset_record() {
        let out = run(|a| {
            a.push_sock(sock(sock_event::RST_SENT, side::SERVER, 1, 0, 5000 * MS));
            a.push_sock(sock(
                sock_event::RST_RECEIVED,
                side::CLIENT,
                NO_REASON,
                0,
                5000 * MS + 1,
            ));
        });
        let [Assembled::Reset(r)] = out.as_slice() else {
            panic!("expected one reset record: {out:?}");
        };
        assert_eq!(r.sent_by, Some(Side::Server));
        assert_eq!(r.received_by, Some(Side::Client));
        assert_eq!(r.rst_reason.as_deref(), Some("NO_SOCKET"));
    }

    #[test]
    fn groups_wait_for_the_grace_period() {
        let mut a = assembler();
        a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1000 * MS));
        let mut out = Vec::new();
        a.flush(1100 * MS, &mut out);
        assert!(out.is_empty());
        a.flush(1200 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(a.pending(), 0);
    }
}
