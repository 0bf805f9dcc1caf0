//! Reading tracepoint records: one copy of the record, then plain loads of the fields at
//! the offsets the loader read from the format files; the connection's ports (with the
//! port filter), addresses and map key.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    programs::TracePointContext,
};
use redis_trace_ebpf::{
    ABSENT, ABSENT_OFFSET, AF_INET, AF_INET6, AddrLayout, ConnKey, NO_NETNS, counter, side,
};

use super::maps::{NETNS_SCOPE, SCRATCH, count, port_traced};

/// Bytes of a tracepoint record copied at once: every field used lies within them (the
/// largest record used, `tcp_send_reset`, is 88 bytes).
pub(super) const RECORD_BYTES: usize = 96;

/// A tracepoint record, copied with one helper call; its fields are then plain loads
/// (a helper call per field was most of the programs' cost).
pub(super) struct Rec {
    pub(super) ctx: *const u8,
    pub(super) buf: *const u8,
}

impl Rec {
    #[inline(always)]
    pub(super) fn copy(ctx: &TracePointContext) -> Option<Self> {
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
pub(super) fn field<T: Copy>(rec: &Rec, offset: u16) -> Option<T> {
    let off = offset as usize;
    if offset == ABSENT || off + core::mem::size_of::<T>() > RECORD_BYTES {
        return None;
    }
    // SAFETY: within the scratch copy (checked just above); any bit pattern is valid
    // for the integer types read here.
    Some(unsafe { core::ptr::read_unaligned(rec.buf.add(off) as *const T) })
}

/// A socket's view of its connection, from a tracepoint.
pub(super) struct Tuple {
    pub(super) family: u16,
    pub(super) local_port: u16,
    pub(super) remote_port: u16,
    /// [`side::SERVER`] when the local port is traced, [`side::CLIENT`] when the remote is.
    pub(super) side: u32,
}

/// Reads the ports and applies the port filter: `None` for a connection not on a traced
/// port, before anything else is read.
#[inline(always)]
pub(super) fn ports(ctx: &Rec, l: &AddrLayout) -> Option<Tuple> {
    let (family, local_port, remote_port) = if l.sockaddr_src != ABSENT {
        // struct sockaddr_in / sockaddr_in6: family (host order) then port (network order).
        let family: u16 = field(ctx, l.sockaddr_src)?;
        let sport: u16 = field(ctx, l.sockaddr_src + 2)?;
        let dport: u16 = field(ctx, l.sockaddr_dst + 2)?;
        (family, u16::from_be(sport), u16::from_be(dport))
    } else {
        (
            if l.family != ABSENT {
                field(ctx, l.family)?
            } else {
                family_from_v6(ctx, l)?
            },
            field(ctx, l.sport)?,
            field(ctx, l.dport)?,
        )
    };
    let side = if port_traced(u32::from(local_port)) {
        side::SERVER
    } else if port_traced(u32::from(remote_port)) {
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

/// The family of a record without a `family` field (5.10's `tcp_send_reset` and
/// `tcp_receive_reset`): their `saddr_v6` holds an IPv4 socket's address v4-mapped
/// (include/trace/events/tcp.h, TP_STORE_V4MAPPED), an IPv6 socket's as it is.
#[inline(always)]
fn family_from_v6(ctx: &Rec, l: &AddrLayout) -> Option<u16> {
    let a: [u8; 16] = field(ctx, l.saddr_v6)?;
    let mapped = a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff;
    Some(if mapped { AF_INET } else { AF_INET6 })
}

/// Reads the local and remote address as 16 bytes (IPv4 as `::ffff:a.b.c.d`, so that an
/// IPv4 socket and the IPv6 socket at the other end of the same connection agree).
#[inline(always)]
pub(super) fn addrs(ctx: &Rec, l: &AddrLayout, family: u16) -> Option<([u8; 16], [u8; 16])> {
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

/// The network namespace of the tracepoint's socket (`sk->__sk_common.skc_net->ns.inum`,
/// at offsets from this kernel's BTF), or [`NO_NETNS`] when there is no socket or no
/// offsets. A missing socket (address 0) makes an address the helper refuses, which
/// reads as 0, rather than a branch: each branch on a value read at run time multiplies
/// the paths the verifier walks in every program that reads a key (the offsets are
/// constants of the frozen configuration, which it resolves).
#[inline(always)]
pub(super) fn netns_of(ctx: &Rec, skaddr: u16) -> u32 {
    let n = &config!(netns);
    if n.skc_net == ABSENT_OFFSET || n.ns_inum == ABSENT_OFFSET {
        return NO_NETNS;
    }
    let sk = field::<u64>(ctx, skaddr).unwrap_or(0);
    // SAFETY: the helper checks the kernel address and fails cleanly on a bad one.
    let net =
        unsafe { bpf_probe_read_kernel((sk.wrapping_add(u64::from(n.skc_net))) as *const u64) }
            .unwrap_or(0);
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((net.wrapping_add(u64::from(n.ns_inum))) as *const u32) }
        .unwrap_or(NO_NETNS)
}

/// The connection's key, with the namespace of the socket at `skaddr` ([`ABSENT`] when
/// the tracepoint has none); `None` when a scoped capture does not trace that namespace.
#[inline(always)]
pub(super) fn key_of(ctx: &Rec, l: &AddrLayout, t: &Tuple, skaddr: u16) -> Option<ConnKey> {
    let netns = netns_of(ctx, skaddr);
    // An event without a namespace (a socket error report) passes: userspace joins it
    // to its connection, which was scoped already.
    if config!(netns).scoped != 0 && netns != NO_NETNS {
        // SAFETY: plain map lookup.
        let traced = unsafe { NETNS_SCOPE.get(&netns) }.is_some();
        if !traced {
            return None;
        }
    }
    let (local, remote) = addrs(ctx, l, t.family)?;
    Some(if t.side == side::SERVER {
        ConnKey {
            server_addr: local,
            client_addr: remote,
            server_port: t.local_port,
            client_port: t.remote_port,
            netns,
        }
    } else {
        ConnKey {
            server_addr: remote,
            client_addr: local,
            server_port: t.remote_port,
            client_port: t.local_port,
            netns,
        }
    })
}
