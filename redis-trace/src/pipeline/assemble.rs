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

use crate::classify::Cause;
use crate::kernel::decode::{client, comm, server};
use crate::kernel::layout::ResetReasons;
use crate::schema::{ConnectionClosed, ProcessRef, ResetNote, ResetSeen, errno_name};

/// Maps kernel time (CLOCK_MONOTONIC, what `bpf_ktime_get_ns` returns) to wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_zero: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mono = monotonic_ns();
        let now = SystemTime::now();
        Self {
            wall_at_zero: now
                .checked_sub(Duration::from_nanos(mono))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// A clock whose kernel time 0 is `wall_at_zero` (for tests and offline use).
    pub fn fixed(wall_at_zero: SystemTime) -> Self {
        Self { wall_at_zero }
    }

    pub fn wall(&self, ts_ns: u64) -> SystemTime {
        self.wall_at_zero + Duration::from_nanos(ts_ns)
    }

    /// RFC 3339, UTC, microseconds.
    pub fn rfc3339(&self, ts_ns: u64) -> String {
        crate::time::rfc3339_micros(self.wall(ts_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the kernel programs' clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// What the assembler hands to the writers.
#[derive(Debug, Clone)]
pub enum Assembled {
    Closed(Box<ConnectionClosed>),
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
            if !record.start_seen
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

    fn connection(&self, c: &ConnClosed, socks: &[SockEvent]) -> ConnectionClosed {
        let me = c.observer;
        let peer = other(me);
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
                Some(me),
                Some("FIN"),
                if c.in_task != 0 { task() } else { none },
                None,
                "sent_fin",
            ),
            how::RECEIVED_FIN => (Some(peer), Some("FIN"), none, None, "received_fin"),
            how::ABORTED => {
                // A task's abort sends its RST after the state change; a timer's abort
                // (retransmission or keepalive timeout) reports an error instead, and a
                // keepalive RST comes before the state change.
                let rst_after = socks.iter().find(|e| {
                    e.what == sock_event::RST_SENT && e.side == me && e.ts_ns >= c.close_ns
                });
                if let Some(rst) = rst_after {
                    (
                        Some(me),
                        Some("RST"),
                        task(),
                        self.reason(rst.rst_reason),
                        "aborted",
                    )
                } else if error_on(me).is_some() {
                    let rst = rst_sent_by(me);
                    (
                        rst.map(|_| me),
                        rst.map(|_| "RST"),
                        none,
                        rst.and_then(|r| self.reason(r.rst_reason)),
                        "timeout",
                    )
                } else {
                    // No RST and no error followed: the abort is real, the task unproven.
                    (Some(me), None, none, None, "aborted")
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
                    Some(peer),
                    Some("RST"),
                    who,
                    sender.and_then(|s| self.reason(s.rst_reason)),
                    "received_rst",
                )
            }
            _ => {
                // how::ERROR: the kernel gave up on the connection itself.
                let rst = rst_sent_by(me);
                (
                    rst.map(|_| me),
                    rst.map(|_| "RST"),
                    none,
                    rst.and_then(|r| self.reason(r.rst_reason)),
                    "timeout",
                )
            }
        };

        let srv = server(&c.key);
        let cli = client(&c.key);
        let both = conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN;
        let error = error_on(me)
            .or_else(|| socks.iter().find(|e| e.what == sock_event::ERROR))
            .map(|e| errno_name(e.error));
        ConnectionClosed {
            kind: "connection_closed",
            time: self.clock.rfc3339(c.close_ns),
            // Filled in by the cause classifier.
            cause: Cause::Unknown,
            closed_by: "unknown",
            evidence: Vec::new(),
            client_class: None,
            killer: None,
            redis_client: None,
            server: srv.to_string(),
            client: cli.to_string(),
            closed_by_side: closed_by.map(side_name),
            packet,
            pid,
            tid,
            comm: comm_,
            rst_reason: reason,
            duration_ms: (c.start_ns != 0 && c.close_ns >= c.start_ns)
                .then(|| (c.close_ns - c.start_ns) as f64 / 1e6),
            kernel_event,
            observed_on: side_name(me),
            error,
            server_process: self.owners.get(&(srv, cli)).cloned(),
            client_process: self.owners.get(&(cli, srv)).cloned(),
            start_seen: c.start_ns != 0,
            both_ends_local: u32::from(c.sockets_seen) & both == both,
            resets: socks
                .iter()
                .filter(|e| is_rst(e))
                .map(|e| self.note(e))
                .collect(),
            close_ns: c.close_ns,
            redis_code_path: None,
            redis_raw: (c.redis_freed_from, c.redis_decided_in, c.redis_client_flags),
        }
    }

    fn note(&self, e: &SockEvent) -> ResetNote {
        ResetNote {
            time: self.clock.rfc3339(e.ts_ns),
            direction: if e.what == sock_event::RST_SENT {
                "sent"
            } else {
                "received"
            },
            side: side_name(e.side),
            rst_reason: self.reason(e.rst_reason),
        }
    }

    fn reset(&self, key: &ConnKey, socks: &[SockEvent]) -> ResetSeen {
        let sent = socks.iter().find(|e| e.what == sock_event::RST_SENT);
        let received = socks.iter().find(|e| e.what == sock_event::RST_RECEIVED);
        let first = sent.or(received).map_or(0, |e| e.ts_ns);
        ResetSeen {
            kind: "reset",
            time: self.clock.rfc3339(first),
            server: server(key).to_string(),
            client: client(key).to_string(),
            sent_by: sent.map(|e| side_name(e.side)),
            received_by: received.map(|e| side_name(e.side)),
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

pub fn side_name(s: u32) -> &'static str {
    match s {
        side::SERVER => "server",
        side::CLIENT => "client",
        _ => "unknown",
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

    fn run(push: impl FnOnce(&mut Assembler)) -> Vec<Assembled> {
        let mut a = Assembler::new(
            Duration::from_millis(200),
            reasons(),
            Clock::fixed(SystemTime::UNIX_EPOCH),
            Owners::new(),
        );
        push(&mut a);
        let mut out = Vec::new();
        a.flush(u64::MAX, &mut out);
        out
    }

    fn only_conn(out: Vec<Assembled>) -> ConnectionClosed {
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
        assert_eq!(c.closed_by_side, Some("client"));
        assert_eq!(c.packet, Some("FIN"));
        assert_eq!((c.pid, c.comm.as_deref()), (Some(77), Some("python3")));
        assert_eq!(c.duration_ms, Some(10.0));
        assert_eq!(c.server, "127.0.0.1:6379");
        assert_eq!(c.client, "127.0.0.1:40000");
    }

    #[test]
    fn received_fin_blames_the_peer_and_no_task() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::RECEIVED_FIN, side::SERVER, 0, 1010 * MS))
        }));
        assert_eq!(c.closed_by_side, Some("client"));
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
        assert_eq!(c.closed_by_side, Some("client"));
        assert_eq!(c.packet, Some("RST"));
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
        assert_eq!(c.kernel_event, "timeout");
        assert_eq!(c.pid, None);
        assert_eq!(c.packet, Some("RST"));
        assert_eq!(c.rst_reason.as_deref(), Some("TCP_KEEPALIVE_TIMEOUT"));
        assert_eq!(c.error.as_deref(), Some("ETIMEDOUT"));
    }

    #[test]
    fn unconfirmed_abort_keeps_side_but_names_no_task() {
        let c = only_conn(run(|a| {
            a.push_closed(closed(how::ABORTED, side::SERVER, 1, 1010 * MS))
        }));
        assert_eq!(c.closed_by_side, Some("server"));
        assert_eq!((c.pid, c.packet), (None, None));
    }

    #[test]
    fn simultaneous_duplicates_merge_into_the_earliest() {
        let mut a = Assembler::new(
            Duration::from_millis(200),
            reasons(),
            Clock::fixed(SystemTime::UNIX_EPOCH),
            Owners::new(),
        );
        a.push_closed(closed(how::SENT_FIN, side::SERVER, 1, 1011 * MS));
        a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1010 * MS));
        let mut out = Vec::new();
        a.flush(u64::MAX, &mut out);
        assert_eq!(a.merged_duplicates, 1);
        let c = only_conn(out);
        assert_eq!(c.closed_by_side, Some("client"));
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
        assert_eq!(r.sent_by, Some("server"));
        assert_eq!(r.received_by, Some("client"));
        assert_eq!(r.rst_reason.as_deref(), Some("NO_SOCKET"));
    }

    #[test]
    fn groups_wait_for_the_grace_period() {
        let mut a = Assembler::new(
            Duration::from_millis(200),
            reasons(),
            Clock::fixed(SystemTime::UNIX_EPOCH),
            Owners::new(),
        );
        a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1000 * MS));
        let mut out = Vec::new();
        a.flush(1100 * MS, &mut out);
        assert!(out.is_empty());
        a.flush(1200 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(a.pending(), 0);
    }
}
