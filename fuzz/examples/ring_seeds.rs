//! Writes the `ring_record` seeds (fuzz/seeds/ring_record/*.bin): runs of kernel records as
//! the ring buffer hands them over, built from the shared `#[repr(C)]` types and mirroring
//! the events of the real demo capture (redis-trace/tests/fixtures/captures/
//! real-demo-7.0.15.jsonl: redis-server pid 3602 on 127.0.0.1:39573). Rerun after a change
//! of the record types:
//!
//!   cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly run --example ring_seeds
use std::path::Path;

use redis_trace_ebpf::{
    ConnClosed, ConnKey, EndPacket, NO_FLAGS, NO_REASON, PacketsSeen, PeerPackets, ProcEvent,
    SockEvent, conn_flags, how, kind, proc_event, side, sock_event,
};

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the record types are #[repr(C)], integer-only, with explicit padding fields:
    // every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[10] = 0xff;
    x[11] = 0xff;
    x[12..].copy_from_slice(&a);
    x
}

fn key(client_port: u16) -> ConnKey {
    ConnKey {
        server_addr: v4([127, 0, 0, 1]),
        client_addr: v4([127, 0, 0, 1]),
        server_port: 39573,
        client_port,
        netns: 4_026_531_833,
    }
}

const T0: u64 = 5_000_000_000;
const SEEN_BOTH: u16 = (conn_flags::SERVER_SEEN | conn_flags::CLIENT_SEEN) as u16;

fn closed(how: u32, observer: u32, client_port: u16, who: (&str, u32), at: u64) -> ConnClosed {
    ConnClosed {
        kind: kind::CONN_CLOSED,
        how,
        observer,
        rst_reason: NO_REASON,
        error: 0,
        in_task: 1,
        tgid: who.1,
        tid: who.1,
        comm: comm(who.0),
        start_ns: T0,
        close_ns: at,
        key: key(client_port),
        family: 2,
        old_state: 1,
        new_state: if how == how::ABORTED { 7 } else { 4 },
        sockets_seen: SEEN_BOTH,
        redis_freed_from: 0,
        redis_decided_in: 0,
        redis_freed_from_caller: 0,
        redis_decided_in_caller: 0,
        redis_client_flags: NO_FLAGS,
    }
}

fn sock(
    what: u32,
    s: u32,
    client_port: u16,
    reason: u32,
    who: Option<(&str, u32)>,
    at: u64,
) -> SockEvent {
    SockEvent {
        kind: kind::SOCK,
        what,
        side: s,
        rst_reason: reason,
        error: if what == sock_event::ERROR { 104 } else { 0 },
        in_task: u32::from(who.is_some()),
        tgid: who.map_or(0, |w| w.1),
        tid: who.map_or(0, |w| w.1),
        comm: who.map_or([0; 16], |w| comm(w.0)),
        ts_ns: at,
        key: key(client_port),
        family: 2,
        state: 7,
        flags: 0,
    }
}

fn proc(what: u32, sig: i32, at: u64) -> ProcEvent {
    ProcEvent {
        kind: kind::PROC,
        what,
        pid: 3602,
        actor_tgid: 3602,
        actor_tid: 3602,
        sig,
        code: 0x80,
        result: 0,
        comm: comm("redis-server"),
        actor_comm: comm("redis-server"),
        ts_ns: at,
        total_vm: 154_008,
        anon_rss: 65_024,
        file_rss: 9_372,
        shmem_rss: 0,
        pgtables: 280,
        uid: 0,
        oom_score_adj: 0,
    }
}

fn main() -> std::io::Result<()> {
    let redis = ("redis-server", 3602);
    let trace = ("redis-trace", 3597);
    let ms = 1_000_000;
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    // Idle timeout: the server end's FIN, in redis-server's context.
    seeds.push((
        "idle-timeout-fin",
        bytes_of(&closed(
            how::SENT_FIN,
            side::SERVER,
            41346,
            redis,
            T0 + 4000 * ms,
        )),
    ));

    // Client abort (SO_LINGER 0): the abort, then the RST it sent with TCP_ABORT_ON_CLOSE
    // (11), and the error report on the server end.
    let mut abort = closed(how::ABORTED, side::CLIENT, 58230, trace, T0 + 6000 * ms);
    abort.new_state = 7;
    let mut run = bytes_of(&abort);
    run.extend(bytes_of(&sock(
        sock_event::RST_SENT,
        side::CLIENT,
        58230,
        11,
        Some(trace),
        T0 + 6000 * ms + 20_000,
    )));
    run.extend(bytes_of(&sock(
        sock_event::RST_RECEIVED,
        side::SERVER,
        58230,
        NO_REASON,
        None,
        T0 + 6000 * ms + 40_000,
    )));
    run.extend(bytes_of(&sock(
        sock_event::ERROR,
        side::SERVER,
        58230,
        NO_REASON,
        None,
        T0 + 6000 * ms + 41_000,
    )));
    seeds.push(("client-abort-rst", run));

    // The OOM kill of redis-server: signal, OOM victim, exit, then the connection it reset.
    let mut run = bytes_of(&proc(proc_event::SIGNAL, 9, T0 + 7000 * ms));
    run.extend(bytes_of(&proc(
        proc_event::OOM_VICTIM,
        9,
        T0 + 7000 * ms + 10,
    )));
    run.extend(bytes_of(&proc(
        proc_event::EXIT,
        1,
        T0 + 7000 * ms + 900_000,
    )));
    let mut oom = closed(
        how::ABORTED,
        side::SERVER,
        58246,
        redis,
        T0 + 7000 * ms + 800_000,
    );
    oom.redis_client_flags = 0;
    run.extend(bytes_of(&oom));
    run.extend(bytes_of(&sock(
        sock_event::RST_SENT,
        side::SERVER,
        58246,
        11,
        Some(redis),
        T0 + 7000 * ms + 800_100,
    )));
    seeds.push(("oom-kill", run));

    // RSTs to the dead port (NO_SOCKET, 1): resets without a connection record.
    let mut run = bytes_of(&sock(
        sock_event::RST_SENT,
        side::SERVER,
        58256,
        1,
        None,
        T0 + 8000 * ms,
    ));
    run.extend(bytes_of(&sock(
        sock_event::RST_RECEIVED,
        side::CLIENT,
        58256,
        NO_REASON,
        None,
        T0 + 8000 * ms + 30_000,
    )));
    seeds.push(("rst-no-socket", run));

    // A received RST, a kernel timeout, and redis-trace's own poller connection (left out).
    let mut run = bytes_of(&closed(
        how::RECEIVED_RST,
        side::SERVER,
        58300,
        redis,
        T0 + 9000 * ms,
    ));
    let mut timeout = closed(how::ERROR, side::SERVER, 58302, redis, T0 + 9100 * ms);
    timeout.in_task = 0;
    run.extend(bytes_of(&timeout));
    run.extend(bytes_of(&sock(
        sock_event::ERROR,
        side::SERVER,
        58302,
        NO_REASON,
        None,
        T0 + 9100 * ms,
    )));
    let mut own = closed(how::SENT_FIN, side::CLIENT, 58304, trace, T0 + 9200 * ms);
    own.sockets_seen |= conn_flags::OWN as u16;
    run.extend(bytes_of(&own));
    seeds.push(("rst-timeout-own", run));

    // IPv6 (::1) and a simultaneous close on two CPUs (a duplicate record).
    let mut v6 = closed(
        how::RECEIVED_FIN,
        side::SERVER,
        59806,
        redis,
        T0 + 9500 * ms,
    );
    v6.key.server_addr = [0; 16];
    v6.key.server_addr[15] = 1;
    v6.key.client_addr = v6.key.server_addr;
    v6.family = 10;
    let mut run = bytes_of(&v6);
    run.extend(bytes_of(&v6));
    seeds.push(("ipv6-duplicate", run));

    // A remote client behind a router (tests/tests/middlebox.rs: 10.214.1.1 -> 10.214.2.2,
    // one hop): the router's RST (TTL 64, IP ID 0) where the client's packets had TTL 63;
    // then an idle timeout whose FIN the router answers with a RST after 4 s of quiet.
    let remote = |client_port: u16| ConnKey {
        server_addr: v4([10, 214, 2, 2]),
        client_addr: v4([10, 214, 1, 1]),
        server_port: 39573,
        client_port,
        netns: 4_026_532_664,
    };
    let fingerprint = |rst_at: u64, last_rx: u64| PeerPackets {
        first_ns: T0,
        last_rx_ns: last_rx,
        last_tx_ns: last_rx + 14_000,
        packets: 3,
        sent_since_rx: 1,
        first_ttl: 63,
        min_ttl: 63,
        max_ttl: 63,
        ip_version: 4,
        last_ip_id: 20939,
        ip_id_follows: 2,
        rst: EndPacket {
            ts_ns: rst_at,
            last_tx_ns: rst_at - 14_000,
            srtt_us: 30,
            count: 1,
            ttl: 64,
            tcp_flags: 0x04,
            ..EndPacket::default()
        },
        ..PeerPackets::default()
    };
    let mut reset = closed(how::RECEIVED_RST, side::SERVER, 60612, redis, T0 + 9600 * ms);
    reset.key = remote(60612);
    reset.in_task = 0;
    reset.sockets_seen = conn_flags::SERVER_SEEN as u16;
    let mut run = bytes_of(&reset);
    run.extend(bytes_of(&PacketsSeen {
        kind: kind::PACKETS,
        side: side::SERVER,
        ts_ns: T0 + 9600 * ms,
        key: remote(60612),
        flow: fingerprint(T0 + 9600 * ms - 13_000, T0 + 9600 * ms - 110_000),
    }));
    let mut fin = closed(how::SENT_FIN, side::SERVER, 60614, redis, T0 + 14_000 * ms);
    fin.key = remote(60614);
    fin.sockets_seen = conn_flags::SERVER_SEEN as u16;
    run.extend(bytes_of(&fin));
    run.extend(bytes_of(&PacketsSeen {
        kind: kind::PACKETS,
        side: side::SERVER,
        ts_ns: T0 + 14_000 * ms + 90_000,
        key: remote(60614),
        flow: fingerprint(T0 + 14_000 * ms + 80_000, T0 + 10_000 * ms),
    }));
    seeds.push(("remote-middlebox-packets", run));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/ring_record");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, bytes)?;
        println!("{}", path.display());
    }
    Ok(())
}
