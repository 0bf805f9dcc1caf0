//! Packets: two `cgroup_skb` programs on the cgroup v2 root see every packet delivered
//! to a local socket (ingress, IP header at offset 0) and every packet a local socket
//! sends (egress). On a traced port that leaves the loopback they keep a fingerprint of
//! what arrived at that end (`FLOWS`): the peer's TTLs and IP IDs, and the first RST and
//! FIN with their numbers. Nothing is written per packet; the fingerprint rides with the
//! connection's record (`emit_packets`, from the tracepoints). Both programs always pass
//! the packet: they observe, never filter.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_ktime_get_ns, bpf_tcp_sock},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use redis_trace_ebpf::{
    AF_INET, AF_INET6, ConnKey, EndPacket, FlowKey, IP_ID_STEP, PacketsSeen, PeerPackets, counter,
    flow_flags, kind, side,
};

use super::maps::{EVENTS, FLOWS, count, port_traced, wakeup_flags};

/// The packet goes on (a `cgroup_skb` program's verdict).
const PASS: i32 = 1;
/// Every namespace's loopback device has this index: its packets never meet a device in
/// the path, so they are not fingerprinted.
const LOOPBACK_IFINDEX: u32 = 1;
const IPPROTO_TCP: u8 = 6;

mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

#[cgroup_skb(ingress)]
pub fn packet_in(ctx: SkBuffContext) -> i32 {
    let _ = arrived(&ctx);
    PASS
}

#[cgroup_skb(egress)]
pub fn packet_out(ctx: SkBuffContext) -> i32 {
    let _ = sent(&ctx);
    PASS
}

/// Reads one `__sk_buff` field. Volatile, at its constant offset: the verifier allows
/// context loads only at constant offsets, and the compiler would otherwise pick the
/// field through a computed pointer (local or remote address by side).
macro_rules! skb_field {
    ($skb:expr, $($f:tt)+) => {
        // SAFETY: a context load at a constant offset, which the verifier rewrites into
        // a read of the packet's socket.
        unsafe { core::ptr::read_volatile(&raw const (*$skb).$($f)+) }
    };
}

/// The flow of the packet's socket, seen from that (local) end; `None` off the traced
/// ports and on the loopback. Ports first: this runs for every packet of the host.
#[inline(always)]
fn flow_of(skb: *const __sk_buff) -> Option<FlowKey> {
    if skb_field!(skb, ifindex) == LOOPBACK_IFINDEX {
        return None;
    }
    // `local_port` is in host order; `remote_port` in network order in the upper half.
    let local_port = skb_field!(skb, local_port);
    let remote_port = u32::from_be(skb_field!(skb, remote_port));
    // A listening socket (no peer yet) receives SYNs: its addresses are not a flow's.
    if remote_port == 0 {
        return None;
    }
    let to_side = if port_traced(local_port) {
        side::SERVER
    } else if port_traced(remote_port) {
        side::CLIENT
    } else {
        return None;
    };
    // Every address field is read, whatever the family, before any branch on it: loads
    // in two branches would be merged into one through a computed pointer.
    let family = skb_field!(skb, family);
    let (l4, r4) = (skb_field!(skb, local_ip4), skb_field!(skb, remote_ip4));
    let l6 = [
        skb_field!(skb, local_ip6[0]),
        skb_field!(skb, local_ip6[1]),
        skb_field!(skb, local_ip6[2]),
        skb_field!(skb, local_ip6[3]),
    ];
    let r6 = [
        skb_field!(skb, remote_ip6[0]),
        skb_field!(skb, remote_ip6[1]),
        skb_field!(skb, remote_ip6[2]),
        skb_field!(skb, remote_ip6[3]),
    ];
    let mut local = [0u8; 16];
    let mut remote = [0u8; 16];
    if family == u32::from(AF_INET) {
        // In network order, as stored.
        local[10] = 0xff;
        local[11] = 0xff;
        remote[10] = 0xff;
        remote[11] = 0xff;
        local[12..].copy_from_slice(&l4.to_ne_bytes());
        remote[12..].copy_from_slice(&r4.to_ne_bytes());
    } else if family == u32::from(AF_INET6) {
        // An IPv4-mapped peer of an IPv6 socket reads mapped, as in the tracepoints.
        for i in 0..4 {
            local[i * 4..i * 4 + 4].copy_from_slice(&l6[i].to_ne_bytes());
            remote[i * 4..i * 4 + 4].copy_from_slice(&r6[i].to_ne_bytes());
        }
    } else {
        return None;
    }
    let (local_port, remote_port) = (local_port as u16, remote_port as u16);
    let server = to_side == side::SERVER;
    Some(FlowKey {
        server_addr: if server { local } else { remote },
        client_addr: if server { remote } else { local },
        server_port: if server { local_port } else { remote_port },
        client_port: if server { remote_port } else { local_port },
        to_side,
    })
}

/// The receiving socket's smoothed round-trip time in µs, 0 when unknown.
#[inline(always)]
fn srtt_us(skb: *const __sk_buff) -> u32 {
    let sk = skb_field!(skb, __bindgen_anon_2.sk);
    // SAFETY: the helper takes any socket and returns null for one that is not TCP.
    unsafe {
        if sk.is_null() {
            return 0;
        }
        let tp = bpf_tcp_sock(sk);
        if tp.is_null() {
            return 0;
        }
        (*tp).srtt_us >> 3
    }
}

fn arrived(ctx: &SkBuffContext) -> Option<()> {
    let key = flow_of(ctx.skb.skb)?;
    // One helper call for both headers where it can (each call is most of the cost): an
    // IPv4 header without options and the TCP bytes 12..16 lie within the first 36
    // bytes, and no IPv4 TCP packet is shorter than 40; IPv6's fixed header is 40 bytes
    // and no IPv6 TCP packet is shorter than 60.
    let first: u8 = ctx.load(0).ok()?;
    let (ip_version, ttl, ip_id, tcp) = if first >> 4 == 4 {
        let h: [u8; 36] = ctx.load(0).ok()?;
        if h[9] != IPPROTO_TCP {
            return None;
        }
        let ihl = usize::from(first & 0x0f) * 4;
        let tcp: [u8; 4] = if ihl == 20 {
            [h[32], h[33], h[34], h[35]]
        } else {
            ctx.load(ihl + 12).ok()?
        };
        (4u8, h[8], u16::from_be_bytes([h[4], h[5]]), tcp)
    } else if first >> 4 == 6 {
        // Extension headers before TCP are rare on a TCP flow; such packets are skipped.
        let h: [u8; 56] = ctx.load(0).ok()?;
        if h[6] != IPPROTO_TCP {
            return None;
        }
        (6u8, h[7], 0u16, [h[52], h[53], h[54], h[55]])
    } else {
        return None;
    };
    // Data offset, flags, window.
    let flags = tcp[1];
    let window = u16::from_be_bytes([tcp[2], tcp[3]]);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    // A SYN-ACK at the client end starts the flow afresh: the addresses may have served
    // an earlier connection. (A server end's SYN arrives at the listening socket, which
    // is left out: its flow starts with the handshake's last ACK.)
    let start = flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN | tcp_flag::ACK
        && key.to_side == side::CLIENT;
    let mut f = if start { None } else { FLOWS.get_ptr_mut(&key) };
    if f.is_none() {
        let fresh = PeerPackets {
            first_ns: now,
            ip_version,
            flags: if start { flow_flags::START_SEEN } else { 0 },
            ..PeerPackets::default()
        };
        if FLOWS.insert(&key, &fresh, 0).is_err() {
            count(counter::FLOWS_FULL);
            return None;
        }
        f = FLOWS.get_ptr_mut(&key);
    }
    let f = f?;
    // SAFETY: `f` points into a map value that stays valid during this program. Two
    // CPUs can update one flow at once (two packets of one connection in parallel);
    // the fingerprint is statistics, and a lost count changes no verdict.
    unsafe {
        if flags & (tcp_flag::RST | tcp_flag::FIN) != 0 {
            let end = if flags & tcp_flag::RST != 0 {
                &mut (*f).rst
            } else {
                // The peer's FIN is its own answer: it ends the idle time.
                (*f).last_rx_ns = now;
                (*f).sent_since_rx = 0;
                &mut (*f).fin
            };
            if end.ts_ns == 0 {
                *end = EndPacket {
                    ts_ns: now,
                    last_tx_ns: (*f).last_tx_ns,
                    srtt_us: srtt_us(ctx.skb.skb),
                    count: 0,
                    window,
                    ip_id,
                    ttl,
                    tcp_flags: flags,
                    _pad: [0; 2],
                };
            }
            end.count = end.count.saturating_add(1);
            // RSTs and FINs are what is checked against the fingerprint: kept apart.
            return Some(());
        }
        let n = (*f).packets;
        if n == 0 {
            (*f).first_ttl = ttl;
            (*f).min_ttl = ttl;
            (*f).max_ttl = ttl;
        } else {
            if ttl < (*f).min_ttl {
                (*f).min_ttl = ttl;
            }
            if ttl > (*f).max_ttl {
                (*f).max_ttl = ttl;
            }
            let step = ip_id.wrapping_sub((*f).last_ip_id);
            // 1..=IP_ID_STEP, in one comparison (0 wraps to the top).
            if step.wrapping_sub(1) < IP_ID_STEP {
                (*f).ip_id_follows = (*f).ip_id_follows.saturating_add(1);
            }
        }
        if ip_id == 0 {
            (*f).ip_id_zero = (*f).ip_id_zero.saturating_add(1);
        }
        (*f).last_ip_id = ip_id;
        (*f).packets = n.saturating_add(1);
        (*f).last_rx_ns = now;
        (*f).sent_since_rx = 0;
    }
    Some(())
}

fn sent(ctx: &SkBuffContext) -> Option<()> {
    let key = flow_of(ctx.skb.skb)?;
    let f = FLOWS.get_ptr_mut(&key)?;
    // SAFETY: map value pointer, valid for this program's run; see `arrived`.
    unsafe {
        (*f).last_tx_ns = bpf_ktime_get_ns();
        (*f).sent_since_rx = (*f).sent_since_rx.saturating_add(1);
    }
    Some(())
}

/// Sends what arrived at `side_`'s end of the connection, if anything was kept: with
/// its record, and with each RST that arrives after it.
#[inline(always)]
pub(super) fn emit_packets(key: &ConnKey, side_: u32) {
    // SAFETY: plain map lookup.
    let Some(flow) = (unsafe { FLOWS.get(&FlowKey::of(key, side_)) }) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<PacketsSeen>(0) else {
        count(counter::RING_FULL);
        return;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` is the reserved record, written field by field (a 168-byte value
    // built on the stack first would not fit beside the tracepoint's own).
    unsafe {
        (*out).kind = kind::PACKETS;
        (*out).side = side_;
        (*out).ts_ns = bpf_ktime_get_ns();
        (*out).key = *key;
        core::ptr::copy_nonoverlapping(flow as *const PeerPackets, &raw mut (*out).flow, 1);
    }
    entry.submit(wakeup_flags());
}

/// Forgets what arrived at `side_`'s end, once its socket has closed.
#[inline(always)]
pub(super) fn forget_packets(key: &ConnKey, side_: u32) {
    let _ = FLOWS.remove(&FlowKey::of(key, side_));
}
