//! Decoding of ring-buffer records into owned Rust values.
//!
//! The records are the `#[repr(C)]` types of `redis_trace_ebpf`; a record of the wrong
//! size or an unknown kind is an error (counted by the caller), never a panic.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use redis_trace_ebpf::{ConnClosed, ConnKey, PacketsSeen, ProcEvent, SockEvent, kind};

/// A record from the kernel.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    Closed(ConnClosed),
    Sock(SockEvent),
    Proc(ProcEvent),
    Packets(PacketsSeen),
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let kind_word = bytes
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| format!("record of {} bytes has no kind", bytes.len()))?;
        match kind_word {
            kind::CONN_CLOSED => read::<ConnClosed>(bytes).map(Record::Closed),
            kind::SOCK => read::<SockEvent>(bytes).map(Record::Sock),
            kind::PROC => read::<ProcEvent>(bytes).map(Record::Proc),
            kind::PACKETS => read::<PacketsSeen>(bytes).map(Record::Packets),
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

/// Copies a plain-old-data record out of the ring buffer.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < size_of::<T>() {
        return Err(format!(
            "record of {} bytes, expected {}",
            bytes.len(),
            size_of::<T>()
        ));
    }
    // SAFETY: the length is checked above; `T` is one of the #[repr(C)] integer-only
    // record types, valid for any bit pattern; read_unaligned copes with alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A 16-byte address as the kernel side stores it (IPv4 as `::ffff:a.b.c.d`).
pub fn ip(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn server(key: &ConnKey) -> SocketAddr {
    SocketAddr::new(ip(key.server_addr), key.server_port)
}

pub fn client(key: &ConnKey) -> SocketAddr {
    SocketAddr::new(ip(key.client_addr), key.client_port)
}

/// A NUL-padded kernel comm as a string (lossy: comm is bytes, not UTF-8).
pub fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Name of an errno the socket error tracepoint reports.
pub fn errno_name(e: i32) -> String {
    match e {
        32 => "EPIPE".into(),
        100 => "ENETDOWN".into(),
        101 => "ENETUNREACH".into(),
        103 => "ECONNABORTED".into(),
        104 => "ECONNRESET".into(),
        110 => "ETIMEDOUT".into(),
        111 => "ECONNREFUSED".into(),
        112 => "EHOSTDOWN".into(),
        113 => "EHOSTUNREACH".into(),
        other => format!("errno {other}"),
    }
}

pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.into()
}

/// si_code of a generated signal (include/uapi/asm-generic/siginfo.h).
pub fn signal_origin(code: i32) -> String {
    match code {
        0 => "user".into(),
        0x80 => "kernel".into(),
        -1 => "queue".into(),
        -6 => "tkill".into(),
        c if c > 0 => format!("fault (code {c})"),
        c => format!("code {c}"),
    }
}

pub fn signal_result(r: i32) -> String {
    // enum trace_signal_result (include/trace/events/signal.h).
    match r {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already_pending".into(),
        3 => "overflow_fail".into(),
        4 => "lose_info".into(),
        r => format!("result {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_trace_ebpf::{NO_REASON, how, side};

    fn closed() -> ConnClosed {
        let mut key = ConnKey::default();
        key.server_addr[10] = 0xff;
        key.server_addr[11] = 0xff;
        key.server_addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        key.client_addr = key.server_addr;
        key.server_port = 6379;
        key.client_port = 50000;
        let mut comm = [0u8; 16];
        comm[..12].copy_from_slice(b"redis-server");
        ConnClosed {
            kind: kind::CONN_CLOSED,
            how: how::SENT_FIN,
            observer: side::SERVER,
            rst_reason: NO_REASON,
            error: 0,
            in_task: 1,
            tgid: 42,
            tid: 42,
            comm,
            start_ns: 1,
            close_ns: 2,
            key,
            family: 2,
            old_state: 1,
            new_state: 4,
            sockets_seen: 1,
            redis_freed_from: 0,
            redis_decided_in: 0,
            redis_freed_from_caller: 0,
            redis_decided_in_caller: 0,
            redis_client_flags: redis_trace_ebpf::NO_FLAGS,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a #[repr(C)] value as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_a_closed_record() {
        let raw = bytes_of(&closed());
        let Ok(Record::Closed(c)) = Record::decode(&raw) else {
            panic!("not decoded as ConnClosed");
        };
        assert_eq!(comm(&c.comm), "redis-server");
        assert_eq!(server(&c.key).to_string(), "127.0.0.1:6379");
        assert_eq!(client(&c.key).to_string(), "127.0.0.1:50000");
        assert_eq!(c.tgid, 42);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let raw = bytes_of(&closed());
        assert!(Record::decode(&raw[..50]).is_err());
        assert!(Record::decode(&[]).is_err());
        let mut bad = raw.clone();
        bad[0] = 99;
        assert!(Record::decode(&bad).is_err());
    }

    #[test]
    fn ipv6_addresses_stay_ipv6() {
        let mut a = [0u8; 16];
        a[15] = 1;
        assert_eq!(ip(a).to_string(), "::1");
    }

    #[test]
    fn comm_without_nul_uses_all_16_bytes() {
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }
}
