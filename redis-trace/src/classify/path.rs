//! What the packets say: whether a RST that arrived from the peer's address was sent by
//! the peer's host or by a device in the path, and what the path did to the flow.
//!
//! The method is that of Weaver, Sommer and Paxson, "Detecting Forged TCP Reset Packets"
//! (NDSS 2009): a RST is checked against the peer's own packets on the same flow.
//! - **TTL / hop limit.** Every router decrements it, so the packets of one sender on
//!   one path arrive with one TTL (give or take a route change). A RST made by a device
//!   in the path is sent with that device's initial TTL and crosses fewer hops: it
//!   arrives with a TTL the peer's packets never had. That decides.
//! - **IP ID (IPv4).** Linux numbers each socket's packets in sequence; a RST the peer's
//!   socket sent continues that sequence. One that does not (nftables' reject sends ID
//!   0) was not sent by that socket, but a host answering for a socket already gone does
//!   the same, so a broken sequence only withholds "the client sent it", never decides.
//! - **Timing.** A RST that comes sooner after this end's packet than the round trip
//!   allows cannot be the peer's answer to it. It is reported, and contradicts "the
//!   peer sent it", but never decides alone: a client aborting while our reply is in
//!   flight (its read timeout firing) crosses it exactly so.
//!
//! Too little to tell (no packet of the peer seen, TTLs that vary on their own, a peer
//! zero hops away with nothing else to check) is said as such.
use std::net::SocketAddr;

use super::{Evidence, Source};
use crate::kernel::assemble::{Arrivals, EndArrival, KernelClose};
use crate::schema::{EndPacketView, KernelEvent, Packet, PacketsView, PathFinding, PathKind, Side};

/// The most the peer's own TTLs may spread for the fingerprint to mean anything.
const TTL_SPREAD: u8 = 2;
/// A RST this much sooner than the round trip (a fraction of it) cannot answer our
/// packet; round trips below the floor are too short to judge.
const RTT_FRACTION: u32 = 4;
const RTT_FLOOR_US: u32 = 1_000;
/// A quiet period this long before a RST is worth naming as idleness.
const IDLE_FLOOR_NS: u64 = 1_000_000_000;

/// Who sent a RST, by its packets.
#[derive(Debug, Clone, PartialEq)]
pub enum RstOrigin {
    /// A device in the path: the RST does not match the peer's packets.
    Device(Vec<Evidence>),
    /// The peer's own host: it matches, and nothing contradicts it.
    Peer(Vec<Evidence>),
    /// The packets cannot tell.
    Unsure(Vec<Evidence>),
}

/// The usual initial TTLs (Linux 64, Windows 128, network gear 255; some 32).
fn initial_ttl(ttl: u8) -> u8 {
    [32u8, 64, 128]
        .into_iter()
        .find(|i| ttl <= *i)
        .unwrap_or(255)
}

fn ttl_word(v: u8) -> &'static str {
    if v == 6 { "hop limit" } else { "TTL" }
}

fn ttl_range(min: u8, max: u8) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A duration for people: `850 µs`, `12.4 ms`, `3.2 s`.
fn span(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{} µs", ns / 1000)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

/// Whether this RST came sooner after this end's last packet than the peer could
/// answer it: (delay, round trip) when it did.
fn too_fast(rst: &EndArrival) -> Option<(u64, u32)> {
    let (tx, srtt) = (rst.last_tx_ns?, rst.srtt_us?);
    let delay = rst.ts_ns.checked_sub(tx)?;
    (srtt >= RTT_FLOOR_US && delay < u64::from(srtt / RTT_FRACTION) * 1000).then_some((delay, srtt))
}

/// Checks the first RST that arrived at `a.at`'s end against the peer's packets.
/// `peer` names the end the RST claims to come from ("client", "Redis"), at `addr`.
pub fn rst_origin(a: &Arrivals, peer: &str, addr: SocketAddr) -> RstOrigin {
    let w = ttl_word(a.ip_version);
    let at = a.at.as_str();
    let Some(rst) = a.rst else {
        return RstOrigin::Unsure(vec![Evidence::new(
            Source::Kernel,
            format!("packets: no RST was seen arriving at the {at} end's socket"),
        )]);
    };
    let Some((_, min, max)) = a.ttl else {
        return RstOrigin::Unsure(vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: the RST arrived with {w} {}, but no packet of {peer} ({addr}) was \
                 seen on this connection before it: nothing to check it against",
                rst.ttl
            ),
        )]);
    };
    let n = a.packets;
    let timing = too_fast(&rst).map(|(delay, srtt)| {
        Evidence::new(
            Source::Kernel,
            format!(
                "packets: the RST came {} after this end's last packet, while the round trip to \
                 {peer} takes {}: sooner than {peer} could answer it",
                span(delay),
                span(u64::from(srtt) * 1000)
            ),
        )
    });
    // (From the kernel, min <= max; a record that says otherwise proves nothing.)
    if max.saturating_sub(min) > TTL_SPREAD || min > max {
        let mut ev = vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: {peer}'s {n} packets arrived with {w}s from {min} to {max}: they vary \
                 on their own (route changes, several paths), so the RST's {w} {} proves nothing",
                rst.ttl
            ),
        )];
        ev.extend(timing);
        return RstOrigin::Unsure(ev);
    }
    if rst.ttl < min || rst.ttl > max {
        let (i_rst, i_peer) = (initial_ttl(rst.ttl), initial_ttl(max));
        let how = if i_rst != i_peer {
            format!(
                "it was sent with another initial {w} ({i_rst}, {peer}'s {i_peer}): not by \
                 {peer}'s TCP stack"
            )
        } else if rst.ttl > max {
            format!("it was sent {} closer than {peer}", hops(rst.ttl - max))
        } else {
            format!("it was sent {} farther than {peer}", hops(min - rst.ttl))
        };
        let mut ev = vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: the RST arrived with {w} {}; every packet from {addr} on this \
                 connection ({n}) had {w} {}: {how}",
                rst.ttl,
                ttl_range(min, max)
            ),
        )];
        if let (Some(id), Some(last)) = (rst.ip_id, a.last_ip_id)
            && !follows(last, id)
        {
            ev.push(Evidence::new(
                Source::Kernel,
                format!("packets: its IP ID {id} does not continue {peer}'s (last {last}) either"),
            ));
        }
        ev.extend(timing);
        return RstOrigin::Device(ev);
    }
    // The TTL matches. The IP ID can confirm it (IPv4, a sender that numbers in
    // sequence), or break it.
    let ttl_ok = format!(
        "the RST arrived with {w} {} like {peer}'s {n} packets ({w} {})",
        rst.ttl,
        ttl_range(min, max)
    );
    let sequential = a.packets >= 2 && a.ip_id_follows * 2 >= a.packets - 1;
    match (rst.ip_id, a.last_ip_id) {
        (Some(id), Some(last)) if sequential && !follows(last, id) => {
            let mut ev = vec![Evidence::new(
                Source::Kernel,
                format!(
                    "packets: {ttl_ok}, but its IP ID {id} does not continue {peer}'s \
                     sequence (last {last}): not sent by {peer}'s socket; its host answering \
                     for a socket already gone, or a device that copies the {w}, look like this"
                ),
            )];
            ev.extend(timing);
            RstOrigin::Unsure(ev)
        }
        _ if timing.is_some() => {
            let mut ev = vec![Evidence::new(Source::Kernel, format!("packets: {ttl_ok}"))];
            ev.extend(timing);
            RstOrigin::Unsure(ev)
        }
        (Some(id), Some(last)) if sequential => RstOrigin::Peer(vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: {ttl_ok}, and its IP ID {id} continues {peer}'s sequence (last \
                 {last}): {peer}'s own socket sent it"
            ),
        )]),
        _ if max == initial_ttl(max) => RstOrigin::Unsure(vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: {ttl_ok}, but {peer} is zero hops away ({w} {max} is an initial \
                 value) and nothing else can be checked: a device on the same link would look \
                 the same"
            ),
        )]),
        _ => RstOrigin::Peer(vec![Evidence::new(
            Source::Kernel,
            format!(
                "packets: {ttl_ok}: sent from {peer}'s host (this rests on the {w} alone{})",
                if a.ip_version == 6 {
                    ": IPv6 has no IP ID"
                } else {
                    ": its IP IDs are not in sequence"
                }
            ),
        )]),
    }
}

fn hops(n: u8) -> String {
    if n == 1 {
        "1 hop".into()
    } else {
        format!("{n} hops")
    }
}

/// Whether IP ID `id` continues a sequence whose last was `last`.
fn follows(last: u16, id: u16) -> bool {
    let step = id.wrapping_sub(last);
    (1..=redis_trace_ebpf::IP_ID_STEP).contains(&step)
}

/// The name of the end that `side` is, as the evidence says it.
pub fn end_name(side: Side) -> &'static str {
    match side {
        Side::Server => "Redis",
        _ => "the client",
    }
}

/// What the packets say about the path, for a connection whose cause is settled
/// otherwise: a device that had forgotten the flow answered this end's FIN or keepalive
/// probe with a RST, or the peer stopped answering before the kernel gave up.
pub fn path_finding(c: &KernelClose) -> Option<(PathFinding, Evidence)> {
    let me = c.observed_on;
    let a = c.arrivals.iter().find(|a| a.at == me)?;
    let peer = end_name(if me == Side::Server {
        Side::Client
    } else {
        Side::Server
    });
    let addr = if me == Side::Server {
        c.client
    } else {
        c.server
    };
    let quiet = |until: u64| a.last_rx_ns.and_then(|rx| until.checked_sub(rx));
    let rst_after_end = a.rst.filter(|r| r.ts_ns >= c.close_ns);
    let sent_fin = c.kernel_event == KernelEvent::SentFin && c.packet == Some(Packet::Fin);
    let gave_up = c.kernel_event == KernelEvent::Timeout;
    if (sent_fin && rst_after_end.is_some()) || (gave_up && a.rst.is_some()) {
        let rst = a.rst?;
        if let RstOrigin::Device(ev) = rst_origin(a, peer, addr) {
            let idle = quiet(c.close_ns);
            let what = if sent_fin {
                format!(
                    "this end's FIN ({} after it) was answered",
                    span(rst.ts_ns.saturating_sub(c.close_ns))
                )
            } else {
                "this end's probes were answered".to_string()
            };
            let finding = format!(
                "a device in the path had dropped this flow{}: {what} by a RST {peer} did \
                 not send ({})",
                idle.map(|i| format!(
                    " after at most {} idle ({peer}'s last packet came {} before the end)",
                    span(i),
                    span(i)
                ))
                .unwrap_or_default(),
                ev.iter()
                    .map(|e| e.text.trim_start_matches("packets: ").to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return Some((
                PathFinding {
                    kind: PathKind::DeviceDroppedFlow,
                    idle_s: idle.map(|i| i as f64 / 1e9),
                    finding: finding.clone(),
                },
                Evidence::new(Source::Kernel, format!("path: {finding}")),
            ));
        }
    }
    if gave_up && a.sent_since_rx > 0 {
        let idle = quiet(c.close_ns);
        let finding = format!(
            "{peer} ({addr}) stopped answering: {} packets of this end went unanswered \
             (keepalive probes or retransmissions){}",
            a.sent_since_rx,
            idle.map(|i| format!(", and its last packet arrived {} before the end", span(i)))
                .unwrap_or_else(|| ", and no packet of it was seen".to_string())
        );
        return Some((
            PathFinding {
                kind: PathKind::PeerStoppedAnswering,
                idle_s: idle.map(|i| i as f64 / 1e9),
                finding: finding.clone(),
            },
            Evidence::new(Source::Kernel, format!("path: {finding}")),
        ));
    }
    None
}

/// How long the flow had been quiet (nothing from the peer) before its RST arrived:
/// worth saying when long, since a device forgets idle flows.
pub fn quiet_before_rst(a: &Arrivals) -> Option<u64> {
    let q = a.rst?.ts_ns.checked_sub(a.last_rx_ns?)?;
    (q >= IDLE_FLOOR_NS).then_some(q)
}

/// The record's view of what arrived at an end, times relative to the end.
pub fn view(a: &Arrivals, close_ns: u64) -> PacketsView {
    let rel = |ts: u64| (ts as f64 - close_ns as f64) / 1e6;
    let end = |e: &EndArrival| EndPacketView {
        ttl: e.ttl,
        ip_id: e.ip_id,
        window: e.window,
        flags: tcp_flags(e.tcp_flags),
        count: e.count,
        after_own_last_ms: e.last_tx_ns.and_then(|tx| e.ts_ns.checked_sub(tx)).map(ms),
        srtt_ms: e.srtt_us.map(|u| f64::from(u) / 1000.0),
        from_end_ms: rel(e.ts_ns),
    };
    PacketsView {
        at: a.at,
        ip_version: a.ip_version,
        packets: a.packets,
        start_seen: a.start_seen,
        ttl_first: a.ttl.map(|t| t.0),
        ttl_min: a.ttl.map(|t| t.1),
        ttl_max: a.ttl.map(|t| t.2),
        ip_id_last: a.last_ip_id,
        ip_id_follows: a.ip_id_follows,
        quiet_ms_before_end: a.last_rx_ns.and_then(|rx| close_ns.checked_sub(rx)).map(ms),
        sent_since_last_arrival: a.sent_since_rx,
        rst: a.rst.as_ref().map(end),
        fin: a.fin.as_ref().map(end),
    }
}

/// `RST|ACK`, in the order of the header's bits.
pub fn tcp_flags(f: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| f & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    set.join("|")
}
