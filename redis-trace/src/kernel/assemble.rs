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
    ConnClosed, ConnKey, EndPacket, NO_NETNS, NO_REASON, PacketsSeen, SockEvent, conn_flags,
    flow_flags, how, side, sock_event,
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
    /// The network namespace of the server's socket (of the client's when only that end
    /// was seen); `None` when the kernel gave none.
    pub netns: Option<u32>,
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
    /// What arrived at each end's socket, from the packet programs (connections that
    /// leave the loopback; the latest account of each end).
    pub arrivals: Vec<Arrivals>,
}

/// The packets that arrived at one end of a connection: the peer's own (a fingerprint:
/// TTLs, IP IDs) and the first RST and FIN. Times are kernel ns.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrivals {
    /// The end whose socket received them.
    pub at: Side,
    pub ip_version: u8,
    /// Whether the first packet was the connection's SYN or SYN-ACK.
    pub start_seen: bool,
    /// Packets counted (RSTs and FINs apart).
    pub packets: u32,
    /// (first, lowest, highest) TTL or hop limit of the counted packets.
    pub ttl: Option<(u8, u8, u8)>,
    /// IPv4 only: the last counted packet's IP ID, and how many followed the one
    /// before by a small step.
    pub last_ip_id: Option<u16>,
    pub ip_id_follows: u32,
    pub ip_id_zero: u32,
    pub last_rx_ns: Option<u64>,
    pub last_tx_ns: Option<u64>,
    /// Packets this end sent since the peer's last one arrived.
    pub sent_since_rx: u32,
    pub rst: Option<EndArrival>,
    pub fin: Option<EndArrival>,
}

/// The first RST or FIN that arrived at an end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndArrival {
    pub ts_ns: u64,
    /// This end's last packet before it.
    pub last_tx_ns: Option<u64>,
    pub srtt_us: Option<u32>,
    pub count: u32,
    pub window: u16,
    /// IPv4 only.
    pub ip_id: Option<u16>,
    pub ttl: u8,
    pub tcp_flags: u8,
}

impl Arrivals {
    pub fn from_raw(p: &PacketsSeen) -> Self {
        let f = &p.flow;
        let v4 = f.ip_version == 4;
        let end = |e: &EndPacket| {
            (e.ts_ns != 0).then_some(EndArrival {
                ts_ns: e.ts_ns,
                last_tx_ns: (e.last_tx_ns != 0).then_some(e.last_tx_ns),
                srtt_us: (e.srtt_us != 0).then_some(e.srtt_us),
                count: e.count,
                window: e.window,
                ip_id: v4.then_some(e.ip_id),
                ttl: e.ttl,
                tcp_flags: e.tcp_flags,
            })
        };
        Self {
            at: side_of(p.side),
            ip_version: f.ip_version,
            start_seen: f.flags & flow_flags::START_SEEN != 0,
            packets: f.packets,
            ttl: (f.packets > 0).then_some((f.first_ttl, f.min_ttl, f.max_ttl)),
            last_ip_id: (v4 && f.packets > 0).then_some(f.last_ip_id),
            ip_id_follows: u32::from(f.ip_id_follows),
            ip_id_zero: u32::from(f.ip_id_zero),
            last_rx_ns: (f.last_rx_ns != 0).then_some(f.last_rx_ns),
            last_tx_ns: (f.last_tx_ns != 0).then_some(f.last_tx_ns),
            sent_since_rx: f.sent_since_rx,
            rst: end(&f.rst),
            fin: end(&f.fin),
        }
    }
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
    /// Which group of this key it is: a key's addresses can be reused by a new
    /// connection while the old one's group waits.
    generation: u64,
    first_ts: u64,
    closed: Vec<ConnClosed>,
    socks: Vec<SockEvent>,
    packets: Vec<PacketsSeen>,
    /// redis-trace's own connection (its Redis poller): not the user's traffic.
    own: bool,
}

/// Owners of sockets open at capture start, keyed by (network namespace, local, remote);
/// namespace [`NO_NETNS`] where it is not known.
pub type Owners = HashMap<(u32, SocketAddr, SocketAddr), ProcessRef>;

/// A map for per-connection state: keys come from the kernel, and a storm makes
/// millions of lookups, so a fast (still randomly seeded) hasher.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A key without its namespace: the addresses and ports alone.
fn tuple(k: &ConnKey) -> ConnKey {
    ConnKey {
        netns: NO_NETNS,
        ..*k
    }
}

const BOTH_SEEN: u32 = conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN;

/// A record of one end of a connection whose other end this namespace did not see: the
/// other end may be in another namespace of this host (a veth pair, a bridge).
fn one_end_only(c: &ConnClosed) -> bool {
    let own = if c.observer == side::SERVER {
        conn_flags::SERVER_SEEN
    } else {
        conn_flags::CLIENT_SEEN
    };
    u32::from(c.sockets_seen) & BOTH_SEEN == own
}

pub struct Assembler {
    grace_ns: u64,
    groups: FastMap<ConnKey, Group>,
    /// The namespaces of the pending groups of each address tuple: the two ends of a
    /// connection between two namespaces arrive under two keys.
    by_tuple: FastMap<ConnKey, Vec<u32>>,
    order: VecDeque<(u64, ConnKey, u64)>,
    generations: u64,
    /// Groups closed early (their key was reused by a new connection), for `flush`.
    ready: Vec<(ConnKey, Group)>,
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
            groups: FastMap::default(),
            by_tuple: FastMap::default(),
            generations: 0,
            ready: Vec::new(),
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
        let by_tuple = &mut self.by_tuple;
        let generations = &mut self.generations;
        self.groups.entry(key).or_insert_with(|| {
            *generations += 1;
            order.push_back((ts, key, *generations));
            by_tuple.entry(tuple(&key)).or_default().push(key.netns);
            Group {
                generation: *generations,
                first_ts: ts,
                ..Group::default()
            }
        })
    }

    /// Pending groups of the same addresses in other namespaces.
    fn others(&self, key: &ConnKey) -> impl Iterator<Item = ConnKey> + '_ {
        let key = *key;
        self.by_tuple
            .get(&tuple(&key))
            .into_iter()
            .flatten()
            .filter(move |ns| **ns != key.netns)
            .map(move |ns| ConnKey { netns: *ns, ..key })
    }

    /// The group a connection's end belongs to: its own key's, or, for one end of a
    /// connection between two local namespaces, the group of its other end.
    fn key_for_closed(&self, c: &ConnClosed) -> ConnKey {
        if self.groups.contains_key(&c.key) || !one_end_only(c) {
            return c.key;
        }
        self.others(&c.key)
            .find(|k| {
                self.groups.get(k).is_some_and(|g| {
                    !g.closed.is_empty()
                        && g.closed
                            .iter()
                            .all(|o| o.observer != c.observer && one_end_only(o))
                })
            })
            .unwrap_or(c.key)
    }

    /// The group a socket event belongs to: its own key's; for an event without a
    /// namespace, or on one end of a connection between two namespaces, the one group
    /// of the same addresses.
    fn key_for_sock(&self, key: &ConnKey, side_: u32) -> ConnKey {
        if self.groups.contains_key(key) {
            return *key;
        }
        let others: Vec<ConnKey> = self
            .others(key)
            .filter(|k| {
                key.netns == NO_NETNS
                    || self.groups.get(k).is_some_and(|g| {
                        g.closed
                            .iter()
                            .any(|o| o.observer != side_ && one_end_only(o))
                    })
            })
            .collect();
        match others.as_slice() {
            [one] => *one,
            _ => *key,
        }
    }

    pub fn push_closed(&mut self, c: ConnClosed) {
        let key = self.key_for_closed(&c);
        // The same addresses, but another start: a new connection that reused them while
        // the old one's record waited. The old one is complete.
        let reused = key == c.key
            && c.start_ns != 0
            && self.groups.get(&key).is_some_and(|g| {
                g.closed
                    .iter()
                    .any(|o| o.start_ns != 0 && o.start_ns != c.start_ns)
            });
        if reused && let Some(old) = self.groups.remove(&key) {
            self.forget(&key);
            self.ready.push((key, old));
        }
        self.absorb_unnamespaced(key);
        let g = self.group(key, c.close_ns);
        g.first_ts = g.first_ts.min(c.close_ns);
        g.own |= u32::from(c.sockets_seen) & conn_flags::OWN != 0;
        g.closed.push(c);
    }

    /// What arrived at one end, sent with its connection's record or after it.
    pub fn push_packets(&mut self, p: PacketsSeen) {
        let key = self.key_for_sock(&p.key, p.side);
        // Only beside a record of its connection: alone, it explains nothing.
        if let Some(g) = self.groups.get_mut(&key) {
            g.packets.push(p);
        }
    }

    pub fn push_sock(&mut self, s: SockEvent) {
        let key = self.key_for_sock(&s.key, s.side);
        self.absorb_unnamespaced(key);
        let g = self.group(key, s.ts_ns);
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
        for (key, g) in std::mem::take(&mut self.ready) {
            self.finish(key, g, out);
        }
        while let Some(&(ts, key, generation)) = self.order.front() {
            if now_ns != u64::MAX && now_ns.saturating_sub(ts) < self.grace_ns {
                break;
            }
            self.order.pop_front();
            // An entry of a group already gone (merged, or closed early) is skipped.
            if self
                .groups
                .get(&key)
                .is_some_and(|g| g.generation == generation)
                && let Some(g) = self.groups.remove(&key)
            {
                self.forget(&key);
                self.finish(key, g, out);
            }
        }
    }

    /// Events without a namespace that came first (an error report, a RST sent where
    /// no socket exists) join the group of the same addresses that has one.
    fn absorb_unnamespaced(&mut self, key: ConnKey) {
        if key.netns == NO_NETNS {
            return;
        }
        let bare = tuple(&key);
        if let Some(early) = self.groups.remove(&bare) {
            self.forget(&bare);
            let g = self.group(key, early.first_ts);
            g.first_ts = g.first_ts.min(early.first_ts);
            g.own |= early.own;
            g.socks.extend(early.socks);
            g.closed.extend(early.closed);
            g.packets.extend(early.packets);
        }
    }

    fn forget(&mut self, key: &ConnKey) {
        let t = tuple(key);
        if let Some(list) = self.by_tuple.get_mut(&t) {
            list.retain(|ns| *ns != key.netns);
            if list.is_empty() {
                self.by_tuple.remove(&t);
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
            let mut record = self.connection(&first, &g.closed, &g.socks);
            // The latest account of each end: one sent after a late RST has it.
            g.packets.sort_by_key(|p| p.ts_ns);
            for p in g.packets.iter().rev() {
                let a = Arrivals::from_raw(p);
                if !record.arrivals.iter().any(|o| o.at == a.at) {
                    record.arrivals.push(a);
                }
            }
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

    fn connection(
        &self,
        c: &ConnClosed,
        closed: &[ConnClosed],
        socks: &[SockEvent],
    ) -> KernelClose {
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
        // Each end's namespace: from its own records (the two ends of a connection
        // between namespaces were seen in two).
        let ns_of = |s: u32| {
            closed
                .iter()
                .find(|o| o.observer == s && o.key.netns != NO_NETNS)
                .map(|o| o.key.netns)
                .or_else(|| {
                    socks
                        .iter()
                        .find(|e| e.side == s && e.key.netns != NO_NETNS)
                        .map(|e| e.key.netns)
                })
        };
        let (server_ns, client_ns) = (ns_of(side::SERVER), ns_of(side::CLIENT));
        let owner = |ns: Option<u32>, local: SocketAddr, remote: SocketAddr| {
            match ns {
                Some(n) => self.owners.get(&(n, local, remote)),
                None => self
                    .owners
                    .iter()
                    .find(|((_, l, r), _)| *l == local && *r == remote)
                    .map(|(_, p)| p),
            }
            .cloned()
        };
        let seen = closed
            .iter()
            .fold(0u32, |acc, o| acc | u32::from(o.sockets_seen));
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
            server_process: owner(server_ns.or(client_ns), srv, cli),
            client_process: owner(client_ns.or(server_ns), cli, srv),
            both_ends_local: seen & both == both || seen & conn_flags::PEER_ELSEWHERE != 0,
            netns: server_ns.or(client_ns),
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
            arrivals: Vec::new(),
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
            netns: socks
                .iter()
                .map(|e| e.key.netns)
                .find(|n| *n != NO_NETNS)
                .or((key.netns != NO_NETNS).then_some(key.netns)),
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

    fn in_ns(mut c: ConnClosed, netns: u32, seen: u32) -> ConnClosed {
        c.key.netns = netns;
        c.sockets_seen = seen as u16;
        c
    }

    #[test]
    fn two_namespaces_with_the_same_addresses_stay_two_connections() {
        // Two pods' loopback connections, same addresses and ports, each end seen in
        // its own namespace.
        let out = run(|a| {
            a.push_closed(in_ns(
                closed(how::SENT_FIN, side::SERVER, 1, 1010 * MS),
                11,
                3,
            ));
            a.push_closed(in_ns(
                closed(how::SENT_FIN, side::CLIENT, 1, 1011 * MS),
                22,
                3,
            ));
        });
        assert_eq!(out.len(), 2, "{out:?}");
        let mut ns: Vec<Option<u32>> = out
            .iter()
            .map(|o| match o {
                Assembled::Closed(c) => c.netns,
                Assembled::Reset(r) => r.netns,
            })
            .collect();
        ns.sort();
        assert_eq!(ns, [Some(11), Some(22)]);
    }

    #[test]
    fn the_two_ends_of_a_connection_between_namespaces_are_one_record() {
        // Redis in namespace 11 closes; the client on the host (namespace 1) sees its FIN.
        let c = only_conn(run(|a| {
            let server = conn_flags::SERVER_SEEN | conn_flags::PEER_ELSEWHERE;
            a.push_closed(in_ns(
                closed(how::SENT_FIN, side::SERVER, 1, 1010 * MS),
                11,
                server,
            ));
            let client = conn_flags::CLIENT_SEEN | conn_flags::PEER_ELSEWHERE;
            a.push_closed(in_ns(
                closed(how::RECEIVED_FIN, side::CLIENT, 0, 1011 * MS),
                1,
                client,
            ));
        }));
        assert_eq!(c.closed_by_side, Some(Side::Server));
        assert_eq!(
            c.netns,
            Some(11),
            "the server end's namespace names the record"
        );
        assert!(c.both_ends_local);
    }

    #[test]
    fn an_error_report_without_a_namespace_joins_its_connection() {
        // inet_sk_error_report carries no socket: its key has no namespace, and it can
        // come before the state change that closes the socket.
        let c = only_conn(run(|a| {
            a.push_sock(sock(
                sock_event::ERROR,
                side::SERVER,
                NO_REASON,
                110,
                1009 * MS,
            ));
            a.push_closed(in_ns(
                closed(how::ABORTED, side::SERVER, 1, 1010 * MS),
                11,
                1,
            ));
        }));
        assert_eq!(c.kernel_event, KernelEvent::Timeout, "{c:?}");
        assert_eq!(c.error.as_deref(), Some("ETIMEDOUT"));
        assert_eq!(c.netns, Some(11));
        assert!(!c.both_ends_local);
    }

    #[test]
    fn a_rst_sent_without_a_socket_joins_the_rst_its_peer_received() {
        // A SYN to a port nobody listens on: the RST is sent with no socket (no
        // namespace), and received by the client's socket (with one).
        let out = run(|a| {
            a.push_sock(sock(sock_event::RST_SENT, side::SERVER, 1, 0, 1009 * MS));
            let mut got = sock(
                sock_event::RST_RECEIVED,
                side::CLIENT,
                NO_REASON,
                0,
                1009 * MS,
            );
            got.key.netns = 5;
            a.push_sock(got);
        });
        assert_eq!(out.len(), 1, "{out:?}");
        let Some(Assembled::Reset(r)) = out.into_iter().next() else {
            panic!("a reset record");
        };
        assert_eq!(
            (r.sent_by, r.received_by),
            (Some(Side::Server), Some(Side::Client))
        );
        assert_eq!(r.netns, Some(5));
    }

    #[test]
    fn addresses_reused_by_a_new_connection_within_the_grace_period_are_two_records() {
        // The kernel hands out the same client port again: a new connection, its own
        // start, closed while the first one's record still waits.
        let out = run(|a| {
            a.push_closed(closed(how::SENT_FIN, side::CLIENT, 1, 1010 * MS));
            let mut again = closed(how::SENT_FIN, side::CLIENT, 1, 1030 * MS);
            again.start_ns = 1020 * MS;
            a.push_closed(again);
        });
        let starts: Vec<Option<u64>> = out
            .iter()
            .map(|o| match o {
                Assembled::Closed(c) => c.start_ns,
                Assembled::Reset(_) => None,
            })
            .collect();
        assert_eq!(starts, [Some(1000 * MS), Some(1020 * MS)]);
    }
}
