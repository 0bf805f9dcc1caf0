//! The logs of seven real builds (tests/fixtures/redis-log/README.md): every line of
//! interest, its kind and the client it names, counted from the files by hand.
use std::net::SocketAddr;

use super::{LogEvent, LogKind, parse_line, parse_lines};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/redis-log/",
            $name
        ))
    };
}

/// A short name for a kind: the replica lines carry the replica's listening port.
fn label(kind: &LogKind) -> String {
    match kind {
        LogKind::OutputBufferLimit => "obl".into(),
        LogKind::QueryBufferLimit => "qbl".into(),
        LogKind::ClientEviction => "evict".into(),
        LogKind::ProtocolError => "proto".into(),
        LogKind::IdleTimeout => "idle".into(),
        LogKind::ClientClosedConnection => "peer".into(),
        LogKind::ReplicaLost {
            listening_addr,
            rdb_channel,
        } => format!(
            "replica{}:{}",
            if *rdb_channel { "-rdb" } else { "" },
            listening_addr.map_or("?".to_string(), |a| a.port().to_string())
        ),
        LogKind::PrimaryLost => "primary".into(),
        LogKind::ShutdownRequested { by } => format!("shutdown:{by}"),
        LogKind::ReadyToExit => "exit".into(),
        LogKind::Crash { .. } => "crash".into(),
        LogKind::ClientKilledByOther => "killed".into(),
    }
}

/// Each event as (kind, port of `client_addr`); every address in these logs is 127.0.0.1.
fn summary(evs: &[LogEvent]) -> Vec<(String, Option<u16>)> {
    for e in evs {
        if let Some(a) = e.client_addr {
            assert_eq!(a.ip().to_string(), "127.0.0.1", "{}", e.line);
        }
    }
    evs.iter()
        .map(|e| (label(&e.kind), e.client_addr.map(|a| a.port())))
        .collect()
}

fn want(items: &[(&str, Option<u16>)]) -> Vec<(String, Option<u16>)> {
    items.iter().map(|(k, p)| (k.to_string(), *p)).collect()
}

const CMD: &str = "shutdown:SHUTDOWN command";
const TERM: &str = "shutdown:SIGTERM";

/// The client lines that name a client by what it did, with (flags, name).
fn closes_by_redis(evs: &[LogEvent]) -> Vec<(String, Option<&str>, Option<&str>)> {
    evs.iter()
        .filter(|e| {
            matches!(
                e.kind,
                LogKind::OutputBufferLimit
                    | LogKind::QueryBufferLimit
                    | LogKind::ClientEviction
                    | LogKind::ProtocolError
            )
        })
        .map(|e| {
            (
                label(&e.kind),
                e.client_flags.as_deref(),
                e.client_name.as_deref(),
            )
        })
        .collect()
}

fn closes(
    items: &[(&str, &'static str, Option<&'static str>)],
) -> Vec<(String, Option<&'static str>, Option<&'static str>)> {
    items
        .iter()
        .map(|(k, f, n)| (k.to_string(), Some(*f), *n))
        .collect()
}

/// The pid and role every headered event has; the signal-handler line has no role.
fn assert_header(evs: &[LogEvent], pid: u32, role: char) {
    for e in evs {
        assert_eq!(e.pid, Some(pid), "{}", e.line);
        assert!(e.time.is_some(), "{}", e.line);
        if !e.line.contains(":signal-handler (") {
            assert_eq!(e.role, Some(role), "{}", e.line);
        }
    }
}

#[test]
fn redis_log_fixture_redis_6_0_16() {
    let evs = parse_lines(fixture!("redis-6.0.16-clients.log"));
    assert_header(&evs, 558, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", None),
            ("obl", Some(57074)),
            ("obl", Some(52884)),
            ("qbl", Some(52886)),
            ("peer", None),
            ("proto", Some(52890)),
            ("proto", Some(52904)),
            ("proto", Some(52916)),
            ("idle", None),
            ("peer", None),
            ("peer", None),
            ("obl", Some(42775)),
            ("replica:57377", None),
            ("peer", None),
            ("replica:57377", None),
            ("peer", None),
            (CMD, None),
            ("exit", None),
        ])
    );
    // 6.0 has no maxmemory-clients: nothing evicted, and "Client closed connection" bare.
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", Some("slow-subscriber")),
            ("obl", "N", Some("slow-reader")),
            ("qbl", "N", Some("bulk-loader")),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    let replica_obl = &evs[11];
    assert_eq!(replica_obl.client_flags.as_deref(), Some("S"));
    assert_eq!(replica_obl.omem, Some(2_621_464));

    let evs = parse_lines(fixture!("redis-6.0.16-replica.log"));
    assert_header(&evs, 618, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", None),
            ("peer", None),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    let evs = parse_lines(fixture!("redis-6.0.16-sigterm.log"));
    assert_header(&evs, 626, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", None),
            ("peer", None),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

#[test]
fn redis_log_fixture_redis_7_0_15() {
    let evs = parse_lines(fixture!("redis-7.0.15-clients.log"));
    assert_header(&evs, 631, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(38340)),
            ("obl", Some(38354)),
            ("obl", Some(38368)),
            ("qbl", Some(38384)),
            ("evict", Some(38394)),
            ("proto", Some(38404)),
            ("proto", Some(38408)),
            ("proto", Some(38412)),
            ("idle", None),
            ("peer", Some(46312)),
            ("peer", Some(46314)),
            ("obl", Some(46298)),
            ("replica:36627", None),
            ("peer", Some(46330)),
            ("replica:36627", None),
            ("peer", Some(46332)),
            (CMD, None),
            ("exit", None),
        ])
    );
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", Some("slow-subscriber")),
            ("obl", "N", Some("slow-reader")),
            ("qbl", "N", Some("bulk-loader")),
            ("evict", "N", Some("memory-hog")),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    assert_eq!(evs[9].client_name.as_deref(), Some("billing-worker-1"));
    assert_eq!(evs[11].client_flags.as_deref(), Some("S"));
    assert_eq!(evs[11].client_id, Some(14));

    let evs = parse_lines(fixture!("redis-7.0.15-replica.log"));
    assert_header(&evs, 636, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(49630)),
            // The replica's link to its primary, as the replica saw it close.
            ("peer", Some(50761)),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    assert_eq!(evs[1].client_flags.as_deref(), Some("M"));
    let evs = parse_lines(fixture!("redis-7.0.15-sigterm.log"));
    assert_header(&evs, 644, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(59140)),
            ("peer", Some(59156)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

#[test]
fn redis_log_fixture_redis_8_0_2() {
    let evs = parse_lines(fixture!("redis-8.0.2-clients.log"));
    assert_header(&evs, 667, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(53672)),
            ("obl", Some(53686)),
            ("obl", Some(53692)),
            ("qbl", Some(53702)),
            ("evict", Some(53712)),
            ("proto", Some(53726)),
            ("proto", Some(53742)),
            ("proto", Some(53750)),
            ("idle", None),
            ("peer", Some(53782)),
            ("replica-rdb:52615", None),
            ("peer", Some(53786)),
            ("peer", Some(53794)),
            ("obl", Some(53780)),
            ("replica:52615", None),
            ("peer", Some(53814)),
            ("replica-rdb:52615", None),
            ("peer", Some(53804)),
            ("replica:52615", None),
            ("peer", Some(53826)),
            (CMD, None),
            ("exit", None),
        ])
    );
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", Some("slow-subscriber")),
            ("obl", "N", Some("slow-reader")),
            // Redis 8 flags an authenticated client "A".
            ("qbl", "A", Some("bulk-loader")),
            ("evict", "N", Some("memory-hog")),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    // The rdb channel connection, closed by the replica once the RDB is through.
    assert_eq!(evs[9].client_flags.as_deref(), Some("SAC"));
    assert_eq!(evs[13].client_flags.as_deref(), Some("S"));
    assert_eq!(evs[13].omem, Some(1_085_776));

    let evs = parse_lines(fixture!("redis-8.0.2-replica.log"));
    assert_header(&evs, 691, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(60376)),
            ("peer", Some(57895)),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    assert_eq!(evs[1].client_flags.as_deref(), Some("MA"));
    let evs = parse_lines(fixture!("redis-8.0.2-sigterm.log"));
    assert_header(&evs, 699, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(33656)),
            ("peer", Some(33662)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

#[test]
fn redis_log_fixture_redis_8_2_3() {
    let evs = parse_lines(fixture!("redis-8.2.3-clients.log"));
    assert_header(&evs, 723, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(53370)),
            ("obl", Some(53398)),
            ("obl", Some(53410)),
            ("qbl", Some(53426)),
            ("evict", Some(53428)),
            ("proto", Some(53442)),
            ("proto", Some(53450)),
            ("proto", Some(53458)),
            ("idle", None),
            ("peer", Some(53486)),
            ("replica-rdb:49615", None),
            ("peer", Some(53498)),
            ("peer", Some(53506)),
            ("obl", Some(53480)),
            ("replica:49615", None),
            ("peer", Some(53526)),
            ("replica-rdb:49615", None),
            ("peer", Some(53518)),
            ("replica:49615", None),
            ("peer", Some(53542)),
            (CMD, None),
            ("exit", None),
        ])
    );
    // `io-thread=` and `tot-net-*` after the fields we read change nothing.
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", Some("slow-subscriber")),
            ("obl", "N", Some("slow-reader")),
            ("qbl", "A", Some("bulk-loader")),
            ("evict", "N", Some("memory-hog")),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    assert!(evs[1].line.contains(" io-thread=0 "));

    let evs = parse_lines(fixture!("redis-8.2.3-replica.log"));
    assert_header(&evs, 729, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(50920)),
            ("peer", Some(56097)),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    let evs = parse_lines(fixture!("redis-8.2.3-sigterm.log"));
    assert_header(&evs, 737, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(45812)),
            ("peer", Some(45824)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

/// Valkey 8+: names are `*redacted*` by default, so no event has a name.
fn assert_no_names(evs: &[LogEvent]) {
    assert!(evs.iter().any(|e| e.line.contains("name=*redacted*")));
    for e in evs {
        assert_eq!(e.client_name, None, "{}", e.line);
    }
}

#[test]
fn redis_log_fixture_valkey_8_0_1() {
    let evs = parse_lines(fixture!("valkey-8.0.1-clients.log"));
    assert_header(&evs, 649, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(34064)),
            ("obl", Some(34070)),
            ("obl", Some(34076)),
            ("qbl", Some(34080)),
            ("evict", Some(34094)),
            ("proto", Some(34098)),
            ("proto", Some(34104)),
            ("proto", Some(34106)),
            ("idle", None),
            ("peer", Some(34136)),
            ("peer", Some(34140)),
            // Valkey 8 logs the replica's loss first, then its output-buffer close.
            ("replica:55313", None),
            ("obl", Some(34128)),
            ("peer", Some(34150)),
            ("replica:55313", None),
            ("peer", Some(34152)),
            // The client that sent SHUTDOWN.
            (CMD, Some(34068)),
            ("exit", None),
        ])
    );
    assert_no_names(&evs);
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", None),
            ("obl", "N", None),
            ("qbl", "N", None),
            ("evict", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    assert!(
        evs[12]
            .line
            .ends_with(" closed for overcoming of output buffer limits.")
    );
    assert_eq!(evs[12].client_flags.as_deref(), Some("S"));
    assert_eq!(evs[16].client_id, Some(4));

    let evs = parse_lines(fixture!("valkey-8.0.1-replica.log"));
    assert_header(&evs, 654, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(38218)),
            ("peer", Some(34807)),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    let evs = parse_lines(fixture!("valkey-8.0.1-sigterm.log"));
    assert_header(&evs, 662, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(41140)),
            ("peer", Some(41146)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

#[test]
fn redis_log_fixture_valkey_8_1_1() {
    let evs = parse_lines(fixture!("valkey-8.1.1-clients.log"));
    assert_header(&evs, 705, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(46326)),
            ("obl", Some(46336)),
            ("obl", Some(46342)),
            ("qbl", Some(46358)),
            ("evict", Some(46374)),
            ("proto", Some(46380)),
            ("proto", Some(46396)),
            ("proto", Some(46398)),
            ("idle", None),
            ("peer", Some(49134)),
            ("peer", Some(49144)),
            ("replica:38987", None),
            ("obl", Some(49126)),
            ("peer", Some(49156)),
            ("replica:38987", None),
            ("peer", Some(49166)),
            (CMD, Some(46330)),
            ("exit", None),
        ])
    );
    assert_no_names(&evs);
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", None),
            ("obl", "N", None),
            ("qbl", "N", None),
            ("evict", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    // ". Query buffer: *redacted*" is not part of the client info.
    assert!(evs[5].line.ends_with(". Query buffer: *redacted*"));
    assert_eq!(evs[5].client_id, Some(8));

    let evs = parse_lines(fixture!("valkey-8.1.1-replica.log"));
    assert_header(&evs, 710, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(51252)),
            ("peer", Some(40237)),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    let evs = parse_lines(fixture!("valkey-8.1.1-sigterm.log"));
    assert_header(&evs, 718, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(32810)),
            ("peer", Some(32820)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

#[test]
fn redis_log_fixture_valkey_9_1_2() {
    let evs = parse_lines(fixture!("valkey-9.1.2-clients.log"));
    assert_header(&evs, 743, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(32782)),
            ("obl", Some(32806)),
            ("obl", Some(32810)),
            ("qbl", Some(32826)),
            ("evict", Some(32828)),
            ("proto", Some(32830)),
            ("proto", Some(32838)),
            ("proto", Some(32842)),
            ("idle", None),
            ("peer", Some(32886)),
            ("peer", Some(32896)),
            ("obl", Some(32870)),
            ("replica:35941", None),
            ("peer", Some(58218)),
            ("replica:35941", None),
            ("peer", Some(58230)),
            (CMD, Some(32794)),
            ("exit", None),
        ])
    );
    assert_no_names(&evs);
    assert_eq!(
        closes_by_redis(&evs),
        closes(&[
            ("obl", "P", None),
            ("obl", "N", None),
            ("qbl", "N", None),
            ("evict", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("proto", "N", None),
            ("obl", "S", None),
        ])
    );
    // The normal client closed at once ("closed for ..."), the replica "scheduled".
    assert!(
        evs[2]
            .line
            .ends_with(" closed for overcoming of output buffer limits.")
    );
    assert!(
        evs[11]
            .line
            .ends_with(" scheduled to be closed ASAP for overcoming of output buffer limits.")
    );
    // No "(qbuf initial bytes: ...)" in 9.1.2.
    assert!(!evs[3].line.contains("qbuf initial bytes"));
    assert_eq!((evs[3].client_id, evs[3].qbuf), (Some(7), Some(1_310_508)));

    let evs = parse_lines(fixture!("valkey-9.1.2-replica.log"));
    assert_header(&evs, 749, 'S');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(47876)),
            // The link to the primary has an empty `addr=` here.
            ("peer", None),
            ("primary", None),
            (TERM, None),
            (TERM, None),
            ("exit", None),
        ])
    );
    assert_eq!(evs[1].client_flags.as_deref(), Some("M"));
    let evs = parse_lines(fixture!("valkey-9.1.2-sigterm.log"));
    assert_header(&evs, 756, 'M');
    assert_eq!(
        summary(&evs),
        want(&[
            ("peer", Some(44940)),
            ("peer", Some(44948)),
            (TERM, None),
            (TERM, None),
            ("exit", None)
        ])
    );
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

#[test]
fn redis_log_replication_and_close_lines() {
    let at = |msg: &str| parse_line(&format!("9:M 02 Dec 2026 05:54:00.044 * {msg}"));
    let kind = |msg: &str| at(msg).map(|e| e.kind);
    assert_eq!(
        kind("Replica [::1]:6380 rdb channel disconnected."),
        Some(LogKind::ReplicaLost {
            listening_addr: addr("[::1]:6380"),
            rdb_channel: true
        })
    );
    // replicationGetSlaveName before the replica told its port.
    assert_eq!(
        kind("Connection with replica 10.0.0.5:<unknown-replica-port> lost."),
        Some(LogKind::ReplicaLost {
            listening_addr: None,
            rdb_channel: false
        })
    );
    let e = at("Connection with replica 10.0.0.5:6380 lost.").expect("parsed");
    assert_eq!(
        e.client_addr, None,
        "the listening port is not the connection's"
    );
    for not_ours in [
        "Connection with replica 10.0.0.5:6380 lost. Again",
        "Connection with replica a b lost.",
        "Connection with replica  lost.",
        "Replica 10.0.0.5:6380 is capable of rdb channel synchronization, and partial sync isn't possible.",
        "Closing idle clients",
        "Connection with master lost. Reconnecting",
        "Client closed connectionid=3 addr=127.0.0.1:1",
        "Client closed connection because addr=127.0.0.1:1",
    ] {
        assert_eq!(kind(not_ours), None, "{not_ours}");
    }
    assert_eq!(
        kind("Connection with primary lost."),
        Some(LogKind::PrimaryLost)
    );
    assert_eq!(kind("Closing idle client"), Some(LogKind::IdleTimeout));
}

#[test]
fn redis_log_valkey_client_text_cannot_spoof_fields() {
    let at =
        |msg: &str| parse_line(&format!("9:M 02 Dec 2026 05:54:00.044 - {msg}")).expect("parsed");
    // Valkey 8.1+ with hide-user-data-from-log no: the query buffer is the client's bytes.
    let e = at(
        "Protocol error (invalid bulk length) from client: id=8 addr=127.0.0.1:46380 \
         laddr=127.0.0.1:40237 fd=10 name= age=0 flags=N cmd=NULL user=default. Query \
         buffer: '$abc name=evil flags=S omem=9'",
    );
    assert_eq!(e.kind, LogKind::ProtocolError);
    assert_eq!(e.client_addr, addr("127.0.0.1:46380"));
    assert_eq!((e.client_name, e.omem), (None, None));
    assert_eq!(e.client_flags.as_deref(), Some("N"));
    // A name of *redacted* is no name; a real one is kept.
    let obl = "Client id=4 addr=127.0.0.1:1 laddr=127.0.0.1:2 fd=10 name=NAME age=0 flags=P \
               user=*redacted* closed for overcoming of output buffer limits.";
    assert_eq!(at(&obl.replace("NAME", "*redacted*")).client_name, None);
    assert_eq!(
        at(&obl.replace("NAME", "feed")).client_name.as_deref(),
        Some("feed")
    );
    // The SHUTDOWN requester: its fields, however the name ends.
    let e = at(
        "User requested shutdown... (user request from 'id=3 addr=127.0.0.1:46330 \
         laddr=127.0.0.1:40237 fd=9 name=x')addr=10.9.9.9:1 user=*redacted* lib-name= lib-ver=')",
    );
    assert_eq!(e.client_addr, addr("127.0.0.1:46330"));
    assert_eq!(e.client_name.as_deref(), Some("x')addr=10.9.9.9:1"));
    // A quoted client info after anything else is no requester.
    let e = at("User requested shutdown... because 'id=3 addr=127.0.0.1:46330'");
    assert_eq!((e.client_id, e.client_addr), (None, None));
}

#[test]
fn redis_log_named_shutdown_is_not_the_signal() {
    // A signal, then a SHUTDOWN that names its client: the command, not the signal.
    let evs = parse_lines(
        "9:signal-handler (1796190835) Received SIGTERM scheduling shutdown...\n\
         9:M 02 Dec 2026 05:53:55.562 * User requested shutdown... (user request from 'id=4 addr=127.0.0.1:34068 fd=9')\n",
    );
    let kinds: Vec<String> = evs.iter().map(|e| label(&e.kind)).collect();
    assert_eq!(kinds, vec![TERM, CMD]);
}
