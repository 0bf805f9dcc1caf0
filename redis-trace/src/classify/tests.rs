//! The classifier on recorded event sequences: what the kernel, Redis and its log
//! said in real incidents, reduced to the facts each rule uses.
use std::time::{Duration, SystemTime};

use super::*;
use crate::kernel::assemble::{Arrivals, EndArrival, KernelReset, RedisRaw};
use crate::schema::{ProbeStatus, ProcessEventKind, ProcessRef, SignalInfo};
use crate::sources::redis::BufferLimit;
use crate::sources::redis_log::parse_line;

const T0: u64 = 1_800_000_000;

fn at(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(T0 as f64 + secs)
}

fn closed(side: &str, packet: Option<Packet>, event: KernelEvent, t: f64) -> KernelClose {
    let server = side == "server";
    KernelClose {
        close_ns: 0,
        time: at(t),
        start_ns: Some(0),
        server: "127.0.0.1:6379".parse().expect("addr"),
        client: "127.0.0.1:50000".parse().expect("addr"),
        netns: None,
        closed_by_side: Some(if server { Side::Server } else { Side::Client }),
        packet,
        pid: server.then_some(100),
        tid: server.then_some(100),
        comm: server.then(|| "redis-server".to_string()),
        rst_reason: None,
        kernel_event: event,
        observed_on: Side::Server,
        error: None,
        server_process: None,
        client_process: None,
        both_ends_local: false,
        resets: vec![],
        redis: RedisRaw::default(),
        arrivals: Vec::new(),
    }
}

fn entry(idle: u64, flags: &str, omem: u64) -> ClientEntry {
    ClientEntry {
        id: 7,
        addr: "127.0.0.1:50000".parse().ok(),
        name: "worker".into(),
        flags: flags.into(),
        idle,
        omem,
        cmd: "get".into(),
        ..ClientEntry::default()
    }
}

fn config() -> RedisConfig {
    RedisConfig {
        timeout: Some(10),
        cobl_normal: Some(BufferLimit::default()),
        cobl_pubsub: Some(BufferLimit {
            hard: 32 << 20,
            soft: 8 << 20,
            soft_seconds: 60,
        }),
        query_buffer_limit: Some(1 << 30),
        ..RedisConfig::default()
    }
}

fn evidence<'a>(
    client: Option<(&'a ClientEntry, SystemTime)>,
    config: Option<&'a RedisConfig>,
    procs: &'a [ProcessEvent],
    log: &'a [LogEvent],
) -> Facts<'a> {
    Facts {
        redis_pids: &[100],
        proc_events: procs,
        log,
        client,
        config,
        redis_view: Ok(()),
        first_client_list: Some(at(0.0)),
        log_view: Ok(()),
        code_path: None,
        missing_probes: &[],
        timeout_changed: None,
    }
}

#[test]
fn idle_client_closed_when_its_timeout_falls_due() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 20.3);
    let e = entry(3, "N", 0);
    let cfg = config();
    // Snapshot at 13 s said idle 3 s: last activity at 10 s, timeout due at 20 s.
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_eq!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    assert_eq!(v.closed_by(), ClosedBy::Redis);
    assert!(v.evidence.iter().any(|s| s.text.starts_with("CLIENT LIST")));
    assert!(v.evidence.iter().any(|s| s.text.contains("timeout is 10s")));
}

#[test]
fn a_huge_timeout_from_a_hostile_redis_does_not_panic() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 20.3);
    let e = entry(3, "N", 0);
    let mut cfg = config();
    // Past what parse_config keeps, as if a Redis had said it: checked, not a panic.
    cfg.timeout = Some(u64::MAX);
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_ne!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
}

#[test]
fn a_close_long_before_the_timeout_is_not_called_a_timeout() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 15.0);
    let e = entry(3, "N", 0);
    let cfg = config();
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    assert!(
        v.evidence
            .iter()
            .any(|s| s.text.contains("not the idle timeout"))
    );
}

#[test]
fn a_timeout_set_at_run_time_frees_clients_idle_longer_at_once() {
    // 10,000 idle clients, then CONFIG SET timeout 2 between the polls at 30 s and 31 s:
    // a client idle 25 s at the snapshot of 13 s is freed at 30.4 s, long after
    // `last activity + 2 s`, and that is the timeout all the same.
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 30.4);
    let e = entry(25, "N", 0);
    let mut cfg = config();
    cfg.timeout = Some(2);
    let mut facts = evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]);
    facts.timeout_changed = Some((at(30.0), at(31.0)));
    let v = classify(&c, &facts);
    assert_eq!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    assert!(
        v.evidence
            .iter()
            .any(|s| s.text.contains("set to 2s at run time")),
        "{v:#?}"
    );
    // Without the change seen, the same close is not explained by the timeout.
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_ne!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    // A close before the window (timeout still unset then) is not the timeout either.
    let early = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 29.0);
    let v = classify(&early, &facts);
    assert_ne!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    // Nor one long after the window.
    let late = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 35.0);
    let v = classify(&late, &facts);
    assert_ne!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
}

#[test]
fn pubsub_clients_are_exempt_from_the_idle_timeout() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 20.3);
    let e = entry(3, "P", 0);
    let cfg = config();
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
}

#[test]
fn output_buffer_log_line_names_the_class() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 0.0);
    let line = "100:M 25 Nov 2026 17:02:05.076 # Client id=6 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name=sub age=0 idle=0 flags=P db=0 sub=1 psub=0 omem=319608 cmd=subscribe user=default redir=-1 resp=2 scheduled to be closed ASAP for overcoming of output buffer limits.";
    let mut ev = parse_line(line).expect("a log event");
    ev.time = Some(at(-0.01));
    let cfg = config();
    let log = [ev];
    let v = classify(&c, &evidence(None, Some(&cfg), &[], &log));
    assert_eq!(v.cause, Cause::RedisOutputBufferLimit, "{v:#?}");
    assert_eq!(v.client_class, Some(ClientClass::Pubsub));
    assert!(v.evidence.iter().any(|s| s.text.starts_with("Redis log:")));
    assert!(
        v.evidence
            .iter()
            .any(|s| s.text.contains("pubsub 33554432 8388608 60"))
    );
}

#[test]
fn a_log_line_for_another_client_or_time_does_not_count() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 60.0);
    let line = "100:M 25 Nov 2026 17:02:05.076 # Client id=6 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= age=0 idle=0 flags=P db=0 sub=1 psub=0 omem=319608 cmd=subscribe user=default scheduled to be closed ASAP for overcoming of output buffer limits.";
    let mut ev = parse_line(line).expect("a log event");
    ev.time = Some(at(0.0)); // a minute before the close
    let log = [ev];
    let v = classify(&c, &evidence(None, None, &[], &log));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
}

#[test]
fn omem_over_the_hard_limit_is_an_output_buffer_close() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 5.0);
    let e = entry(0, "P", 40 << 20);
    let cfg = config();
    let v = classify(&c, &evidence(Some((&e, at(4.5))), Some(&cfg), &[], &[]));
    assert_eq!(v.cause, Cause::RedisOutputBufferLimit, "{v:#?}");
    assert_eq!(v.client_class, Some(ClientClass::Pubsub));
}

fn exit(t: f64) -> ProcessEvent {
    ProcessEvent {
        time: Some(at(t)),
        event: ProcessEventKind::Exit,
        pid: 100,
        comm: "redis-server".into(),
        redis: true,
        ..ProcessEvent::default()
    }
}

fn signal(t: f64, sig: i32, name: &str, origin: &str, sender: u32, comm: &str) -> ProcessEvent {
    ProcessEvent {
        event: ProcessEventKind::Signal,
        signal: Some(SignalInfo {
            number: sig,
            name: name.into(),
            origin: origin.into(),
            sender: ProcessRef {
                pid: sender,
                comm: comm.into(),
            },
            result: "delivered".into(),
        }),
        ..exit(t)
    }
}

#[test]
fn oom_kill_then_exit_explains_the_server_side_resets() {
    let mut c = closed("server", Some(Packet::Rst), KernelEvent::Aborted, 1.01);
    c.rst_reason = Some("TCP_ABORT_ON_CLOSE".into());
    let procs = [
        signal(1.0, 9, "SIGKILL", "kernel", 100, "redis-server"),
        ProcessEvent {
            event: ProcessEventKind::OomKill,
            ..exit(1.0)
        },
        exit(1.005),
    ];
    let v = classify(&c, &evidence(None, None, &procs, &[]));
    assert_eq!(v.cause, Cause::RedisOomKilled, "{v:#?}");
}

fn missing(probe: &str) -> ProbeStatus {
    ProbeStatus {
        probe: probe.into(),
        why: Some("the kernel's verifier refused it".into()),
        cost: Some("no records of OOM kills".into()),
    }
}

#[test]
fn oom_kill_without_the_oom_probe_is_unknown_not_a_shutdown() {
    // 6.1 before the verifier fix: no OOM record, only the kernel's SIGKILL and the exit.
    let mut c = closed("server", Some(Packet::Rst), KernelEvent::Aborted, 1.01);
    c.rst_reason = Some("TCP_ABORT_ON_CLOSE".into());
    let lacks = [missing("oom:mark_victim")];
    for sender in [(100, "redis-server"), (4242, "python3")] {
        let procs = [
            signal(1.0, 9, "SIGKILL", "kernel", sender.0, sender.1),
            exit(1.005),
        ];
        let mut facts = evidence(None, None, &procs, &[]);
        facts.missing_probes = &lacks;
        let v = classify(&c, &facts);
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
        assert!(v.killer.is_none(), "{v:#?}");
        assert!(
            v.evidence
                .iter()
                .any(|e| e.source == super::Source::Unavailable
                    && e.text.contains(
                        "oom:mark_victim was not running (the kernel's verifier refused it)"
                    )),
            "{v:#?}"
        );
    }
    // With the probe running, the same SIGKILL from itself is still not a SHUTDOWN.
    let procs = [
        signal(1.0, 9, "SIGKILL", "kernel", 100, "redis-server"),
        exit(1.005),
    ];
    let v = classify(&c, &evidence(None, None, &procs, &[]));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
}

#[test]
fn an_exit_without_signal_is_a_shutdown_only_when_the_probes_ran() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.01);
    let procs = [exit(1.005)];
    let v = classify(&c, &evidence(None, None, &procs, &[]));
    assert_eq!(v.cause, Cause::RedisShutdown, "{v:#?}");
    for probe in ["oom:mark_victim", "signal:signal_generate"] {
        let lacks = [missing(probe)];
        let mut facts = evidence(None, None, &procs, &[]);
        facts.missing_probes = &lacks;
        let v = classify(&c, &facts);
        assert_eq!(v.cause, Cause::RedisCloseUnknown, "{probe}: {v:#?}");
        assert!(
            v.evidence.iter().any(|e| e
                .text
                .starts_with(&format!("kernel: {probe} was not running"))),
            "{v:#?}"
        );
    }
}

#[test]
fn sigkill_from_another_process_names_it() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.01);
    let procs = [signal(1.0, 9, "SIGKILL", "user", 4242, "kill"), exit(1.005)];
    let v = classify(&c, &evidence(None, None, &procs, &[]));
    assert_eq!(v.cause, Cause::RedisKilled, "{v:#?}");
    assert_eq!(v.killer.as_deref(), Some("kill (pid 4242)"));
}

#[test]
fn segfault_is_a_crash_and_sigterm_a_shutdown() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.01);
    let procs = [
        signal(1.0, 11, "SIGSEGV", "fault (code 1)", 100, "redis-server"),
        exit(1.005),
    ];
    assert_eq!(
        classify(&c, &evidence(None, None, &procs, &[])).cause,
        Cause::RedisCrashed
    );
    let procs = [
        signal(1.0, 15, "SIGTERM", "user", 77, "systemd"),
        exit(1.005),
    ];
    assert_eq!(
        classify(&c, &evidence(None, None, &procs, &[])).cause,
        Cause::RedisShutdown
    );
}

#[test]
fn a_close_by_another_process_is_not_blamed_on_redis_dying() {
    let mut c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.01);
    c.pid = Some(555); // not the Redis pid
    let procs = [exit(1.0)];
    let v = classify(&c, &evidence(None, None, &procs, &[]));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
}

#[test]
fn client_side_endings() {
    let c = closed("client", Some(Packet::Fin), KernelEvent::SentFin, 1.0);
    assert_eq!(
        classify(&c, &evidence(None, None, &[], &[])).cause,
        Cause::ClientClose
    );
    let c = closed("client", Some(Packet::Rst), KernelEvent::Aborted, 1.0);
    assert_eq!(
        classify(&c, &evidence(None, None, &[], &[])).cause,
        Cause::ClientReset
    );
    let c = closed("client", None, KernelEvent::Timeout, 1.0);
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(
        (v.cause, v.closed_by()),
        (Cause::KernelReset, ClosedBy::Kernel)
    );
}

#[test]
fn received_rst_local_ends_not_sent_by_either_is_a_middlebox() {
    let mut c = closed("client", Some(Packet::Rst), KernelEvent::ReceivedRst, 1.0);
    c.observed_on = Side::Server;
    c.both_ends_local = true;
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(
        (v.cause, v.closed_by()),
        (Cause::MiddleboxReset, ClosedBy::Middlebox)
    );
    // The same RST, when the client's stack is seen sending it: the client reset.
    c.resets = vec![KernelReset {
        ts_ns: 0,
        time: c.time,
        direction: Direction::Sent,
        side: Side::Client,
        rst_reason: Some("TCP_ABORT_ON_DATA".into()),
    }];
    assert_eq!(
        classify(&c, &evidence(None, None, &[], &[])).cause,
        Cause::ClientReset
    );
    // A remote client: nothing tells the endpoint from the path.
    c.resets.clear();
    c.both_ends_local = false;
    assert_eq!(
        classify(&c, &evidence(None, None, &[], &[])).cause,
        Cause::PeerReset
    );
}

#[test]
fn no_redis_view_says_so_and_stays_unknown() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.0);
    let mut ev = evidence(None, None, &[], &[]);
    ev.redis_view = Err("Redis requires a password");
    let v = classify(&c, &ev);
    assert_eq!(v.cause, Cause::RedisCloseUnknown);
    assert!(
        v.evidence
            .iter()
            .any(|s| s.text.contains("requires a password")),
        "{v:#?}"
    );
}

fn unknown_verdict() -> Verdict {
    Verdict::new(
        Cause::RedisCloseUnknown,
        vec![Evidence::new(Source::KernelClose, "kernel: ...")],
    )
}

#[test]
fn one_counter_rise_matching_the_unexplained_closes_attributes_them() {
    let w = CounterWindow {
        from: Some(at(0.0)),
        to: Some(at(1.0)),
        client_kill_calls: 1,
        ..CounterWindow::default()
    };
    let mut a = unknown_verdict();
    let mut b = Verdict::new(Cause::RedisIdleTimeout, vec![]);
    apply_counters(
        &w,
        &mut [&mut a, &mut b],
        Some("id=9 addr=127.0.0.1:1 name=ops"),
    );
    assert_eq!(a.cause, Cause::RedisClientKill);
    assert_eq!(a.killer.as_deref(), Some("id=9 addr=127.0.0.1:1 name=ops"));
    assert_eq!(
        b.cause,
        Cause::RedisIdleTimeout,
        "explained closes are left alone"
    );
}

#[test]
fn counters_that_do_not_match_attribute_nothing() {
    let w = CounterWindow {
        evicted_clients: 1,
        ..CounterWindow::default()
    };
    let (mut a, mut b) = (unknown_verdict(), unknown_verdict());
    apply_counters(&w, &mut [&mut a, &mut b], None);
    assert_eq!(
        (a.cause, b.cause),
        (Cause::RedisCloseUnknown, Cause::RedisCloseUnknown)
    );
    assert!(a.evidence.iter().any(|s| s.text.contains("not attributed")));
    let w = CounterWindow {
        evicted_clients: 1,
        client_kill_calls: 1,
        ..CounterWindow::default()
    };
    let (mut a, mut b) = (unknown_verdict(), unknown_verdict());
    apply_counters(&w, &mut [&mut a, &mut b], None);
    assert_eq!(
        (a.cause, b.cause),
        (Cause::RedisCloseUnknown, Cause::RedisCloseUnknown)
    );
}

fn with_path<'a>(mut f: Facts<'a>, p: &'a RedisCodePath) -> Facts<'a> {
    f.code_path = Some(p);
    f
}

fn path(decided: &str, freed: &str, flags: Option<&[&str]>) -> RedisCodePath {
    RedisCodePath {
        decided_in: decided.into(),
        via: None,
        freed_from: freed.into(),
        client_flags: flags.map(|f| f.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn the_read_path_is_the_query_buffer_only_when_redis_closed_first_unflagged() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 1.0);
    let p = path(
        "readQueryFromClient",
        "beforeNextClient",
        Some(&["close_asap"]),
    );
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisQueryBufferLimit, "{v:#?}");
    // Flagged for a protocol error: that, not the query buffer.
    let p = path(
        "readQueryFromClient",
        "beforeNextClient",
        Some(&["protocol_error"]),
    );
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisProtocolError, "{v:#?}");
    // Decided in a Redis 8 I/O thread: its flags are not yet complete there.
    let p = path(
        "readQueryFromClient",
        "processClientsFromIOThread",
        Some(&[]),
    );
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    // Flags unreadable and no log line: which of the two is not known.
    let p = path("readQueryFromClient", "beforeNextClient", None);
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
}

#[test]
fn redis_8_read_errors_need_the_log_to_say_which() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 0.0);
    let p = path(
        "handleClientReadError",
        "freeClientsInAsyncFreeQueue",
        Some(&[]),
    );
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisCloseUnknown, "{v:#?}");
    let line = "100:M 25 Nov 2026 17:02:05.076 # Closing client that reached max query buffer length: id=6 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= age=0 idle=0 flags=N db=0 qbuf=1048576 cmd=NULL user=default (qbuf initial bytes: \"*3\\r\\n$3\\r\\nSET\")";
    let mut ev = parse_line(line).expect("a log event");
    ev.time = Some(at(-0.01));
    let log = [ev];
    let v = classify(&c, &with_path(evidence(None, None, &[], &log), &p));
    assert_eq!(v.cause, Cause::RedisQueryBufferLimit, "{v:#?}");
}

#[test]
fn a_monitor_over_its_output_buffer_is_not_called_a_replica() {
    let c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 0.0);
    let p = path(
        "closeClientOnOutputBufferLimitReached",
        "freeClientsInAsyncFreeQueue",
        Some(&["replica", "monitor"]),
    );
    let v = classify(&c, &with_path(evidence(None, None, &[], &[]), &p));
    assert_eq!(v.cause, Cause::RedisOutputBufferLimit, "{v:#?}");
    assert_eq!(v.client_class, Some(ClientClass::Normal), "{v:#?}");
}

// ---- the packets: RSTs checked against the peer's own (numbers from the scenario tests
// in tests/tests/middlebox.rs: a client one hop behind a router, 10.214.1.1 -> 10.214.2.2)

const MS: u64 = 1_000_000;

/// What arrived at Redis's end: 3 client packets with TTL 63 and IP IDs in sequence up
/// to 20939, then a RST with `rst_ttl` and `rst_id`, 14 µs after Redis's last packet.
fn arrivals(rst_ttl: u8, rst_id: Option<u16>) -> Arrivals {
    Arrivals {
        at: Side::Server,
        ip_version: if rst_id.is_some() { 4 } else { 6 },
        start_seen: false,
        packets: 3,
        ttl: Some((63, 63, 63)),
        last_ip_id: rst_id.map(|_| 20939),
        ip_id_follows: 2,
        ip_id_zero: 0,
        last_rx_ns: Some(10 * MS),
        last_tx_ns: Some(10 * MS + 14_000),
        sent_since_rx: 1,
        rst: Some(EndArrival {
            ts_ns: 10 * MS + 28_000,
            last_tx_ns: Some(10 * MS + 14_000),
            srtt_us: Some(30),
            count: 1,
            window: 0,
            ip_id: rst_id,
            ttl: rst_ttl,
            tcp_flags: 0x04,
        }),
        fin: None,
    }
}

fn remote_rst(a: Arrivals) -> KernelClose {
    let mut c = closed("client", Some(Packet::Rst), KernelEvent::ReceivedRst, 1.0);
    c.server = "10.214.2.2:6379".parse().expect("addr");
    c.client = "10.214.1.1:50000".parse().expect("addr");
    c.pid = None;
    c.comm = None;
    c.close_ns = a.rst.map_or(0, |r| r.ts_ns);
    c.arrivals = vec![a];
    c
}

fn origin(a: &Arrivals) -> path::RstOrigin {
    path::rst_origin(a, "the client", "10.214.1.1:50000".parse().expect("addr"))
}

fn texts(ev: &[Evidence]) -> String {
    ev.iter()
        .map(|e| e.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_rst_one_hop_closer_than_the_client_is_a_middlebox() {
    // nftables' reject: the router's initial TTL 64, IP ID 0.
    let c = remote_rst(arrivals(64, Some(0)));
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::MiddleboxReset, "{v:#?}");
    let t = texts(&v.evidence);
    assert!(
        t.contains(
            "the RST arrived with TTL 64; every packet from 10.214.1.1:50000 on this connection (3) \
             had TTL 63: it was sent 1 hop closer than the client"
        ),
        "{t}"
    );
    assert!(t.contains("its IP ID 0 does not continue"), "{t}");
    // Two hops closer, and one hop farther, are devices too: the rule is the mismatch.
    let mut two = arrivals(64, Some(0));
    two.ttl = Some((62, 62, 62));
    assert!(
        matches!(origin(&two), path::RstOrigin::Device(e) if texts(&e).contains("2 hops closer"))
    );
    assert!(
        matches!(origin(&arrivals(62, Some(0))), path::RstOrigin::Device(e) if texts(&e).contains("1 hop farther"))
    );
}

#[test]
fn a_rst_with_another_initial_ttl_is_not_the_clients_stack() {
    // A Windows client (initial 128, 10 hops) and a RST from network gear (initial 255).
    let mut a = arrivals(250, Some(0));
    a.ttl = Some((118, 118, 118));
    match origin(&a) {
        path::RstOrigin::Device(e) => {
            assert!(
                texts(&e).contains("another initial TTL (255, the client's 128)"),
                "{}",
                texts(&e)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rst_that_continues_the_clients_ip_ids_is_a_client_reset() {
    // SO_LINGER 0 through the router: TTL 63, IP ID one after the client's last.
    let c = remote_rst(arrivals(63, Some(20940)));
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::ClientReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("continues the client's sequence (last 20939)"));
}

#[test]
fn a_matching_ttl_with_a_broken_ip_id_sequence_stays_peer_reset() {
    // The client's host answering for a socket already gone sends IP ID 0 too.
    let c = remote_rst(arrivals(63, Some(0)));
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::PeerReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("does not continue the client's sequence"));
}

#[test]
fn ipv6_rests_on_the_hop_limit_alone_and_says_so() {
    let c = remote_rst(arrivals(63, None));
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::ClientReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("rests on the hop limit alone: IPv6 has no IP ID"));
    assert_eq!(
        classify(
            &remote_rst(arrivals(64, None)),
            &evidence(None, None, &[], &[])
        )
        .cause,
        Cause::MiddleboxReset
    );
}

#[test]
fn too_little_to_tell_stays_peer_reset_and_says_why() {
    // No packet of the client seen (a capture started after its last one).
    let mut a = arrivals(64, Some(0));
    a.packets = 0;
    a.ttl = None;
    let v = classify(&remote_rst(a), &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::PeerReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("nothing to check it against"));
    // TTLs that vary on their own (several paths).
    let mut a = arrivals(64, Some(0));
    a.ttl = Some((55, 55, 63));
    let v = classify(&remote_rst(a), &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::PeerReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("vary on their own"));
    // A client zero hops away, with nothing else to check (IPv6): a device on the same
    // link would look the same.
    let mut a = arrivals(64, None);
    a.ttl = Some((64, 64, 64));
    let v = classify(&remote_rst(a), &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::PeerReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("zero hops away"));
    // A record whose TTL range is upside down (not from this kernel) proves nothing.
    let mut a = arrivals(64, Some(0));
    a.ttl = Some((63, 70, 60));
    assert!(matches!(origin(&a), path::RstOrigin::Unsure(_)));
}

#[test]
fn a_rst_sooner_than_the_round_trip_contradicts_the_client_but_never_decides() {
    // 20 ms to the client; the RST came 1 ms after Redis's packet.
    let mut a = arrivals(63, Some(20940));
    if let Some(r) = a.rst.as_mut() {
        r.srtt_us = Some(20_000);
        r.last_tx_ns = Some(r.ts_ns - MS);
    }
    match origin(&a) {
        path::RstOrigin::Unsure(e) => assert!(
            texts(&e).contains("sooner than the client could answer it"),
            "{}",
            texts(&e)
        ),
        other => panic!("a fast RST must contradict the client: {other:?}"),
    }
    // With the TTL already saying "device", it is one more fact.
    if let Some(r) = a.rst.as_mut() {
        r.ttl = 64;
    }
    assert!(
        matches!(origin(&a), path::RstOrigin::Device(e) if texts(&e).contains("sooner than the client"))
    );
}

#[test]
fn without_the_packet_programs_a_remote_rst_says_what_is_missing() {
    let mut c = remote_rst(arrivals(64, Some(0)));
    c.arrivals.clear();
    let missing = [ProbeStatus {
        probe: crate::kernel::packets::PACKETS_PROBE.into(),
        why: Some("left out".into()),
        cost: None,
    }];
    let mut f = evidence(None, None, &[], &[]);
    f.missing_probes = &missing;
    let v = classify(&c, &f);
    assert_eq!(v.cause, Cause::PeerReset, "{v:#?}");
    assert!(texts(&v.evidence).contains("cgroup_skb:packets is not running (left out)"));
}

#[test]
fn an_idle_timeout_whose_fin_a_forgetful_nat_answers_keeps_its_cause_and_gains_a_path() {
    // Redis's FIN after 4 s of quiet (the client's last packet at 10 ms), answered 80 µs
    // later by the router's RST (TTL 64).
    let mut c = closed("server", Some(Packet::Fin), KernelEvent::SentFin, 20.3);
    c.close_ns = 4010 * MS;
    let mut a = arrivals(64, Some(0));
    a.rst = a.rst.map(|r| EndArrival {
        ts_ns: c.close_ns + 80_000,
        ..r
    });
    c.arrivals = vec![a];
    let e = entry(3, "N", 0);
    let cfg = config();
    let v = classify(&c, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]));
    assert_eq!(v.cause, Cause::RedisIdleTimeout, "{v:#?}");
    let p = v.path.as_ref().expect("a path finding");
    assert_eq!(p.kind, crate::schema::PathKind::DeviceDroppedFlow);
    assert_eq!(p.idle_s, Some(4.0));
    assert!(
        p.finding.contains("after at most 4.0 ms")
            || p.finding.contains("after at most 4000.0 ms")
            || p.finding.contains("after at most 4.0 s"),
        "{}",
        p.finding
    );
    assert!(texts(&v.evidence).contains("path: a device in the path had dropped this flow"));
    // The client's own host answering the FIN (TTL 63, IP ID in sequence) is no device.
    let mut c2 = c.clone();
    if let Some(r) = c2.arrivals[0].rst.as_mut() {
        r.ttl = 63;
        r.ip_id = Some(20940);
    }
    assert!(
        classify(&c2, &evidence(Some((&e, at(13.0))), Some(&cfg), &[], &[]))
            .path
            .is_none()
    );
}

#[test]
fn a_keepalive_timeout_says_the_peer_stopped_answering() {
    let mut c = closed("server", None, KernelEvent::Timeout, 6.0);
    c.error = Some("ETIMEDOUT".into());
    c.close_ns = 5010 * MS;
    let mut a = arrivals(64, Some(0));
    a.rst = None;
    a.sent_since_rx = 4;
    c.arrivals = vec![a];
    let v = classify(&c, &evidence(None, None, &[], &[]));
    assert_eq!(v.cause, Cause::KernelReset, "{v:#?}");
    let p = v.path.as_ref().expect("a path finding");
    assert_eq!(p.kind, crate::schema::PathKind::PeerStoppedAnswering);
    assert_eq!(p.idle_s, Some(5.0));
    assert!(
        p.finding.contains("4 packets of this end went unanswered"),
        "{}",
        p.finding
    );
    // Nothing sent since the peer's last packet: no such finding.
    c.arrivals[0].sent_since_rx = 0;
    assert!(classify(&c, &evidence(None, None, &[], &[])).path.is_none());
}

#[test]
fn tcp_flags_read_in_header_order() {
    assert_eq!(path::tcp_flags(0x14), "RST|ACK");
    assert_eq!(path::tcp_flags(0x11), "FIN|ACK");
    assert_eq!(path::tcp_flags(0), "");
}
