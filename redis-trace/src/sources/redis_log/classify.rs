//! What a log message says happened ([`LogKind`]), and the fields of the client info
//! string it names.
use std::net::{IpAddr, SocketAddr};

use super::LogKind;
use super::parse::parse_digits;

/// `by` of "User requested shutdown...", which prepareForShutdown also logs after a signal.
pub(super) const SHUTDOWN_COMMAND: &str = "SHUTDOWN command";

/// What the message says, and the client info string in it if any.
pub(super) fn classify(msg: &str) -> Option<(LogKind, Option<&str>)> {
    const OBL_ASYNC: &str = " scheduled to be closed ASAP for overcoming of output buffer limits";
    const OBL_SYNC: &str = " closed for overcoming of output buffer limits";
    // Before the output-buffer lines, which also start with "Client ": those go on with
    // the client info ("Client id=..."), this one with its own words.
    if let Some(rest) = msg.strip_prefix("Client closed connection") {
        return match rest.strip_prefix(' ') {
            None if rest.is_empty() => Some((LogKind::ClientClosedConnection, None)),
            Some(info) if info.starts_with("id=") => {
                Some((LogKind::ClientClosedConnection, Some(info)))
            }
            _ => None,
        };
    }
    if let Some(rest) = msg.strip_prefix("Client ") {
        if let Some(i) = rest.find(OBL_ASYNC).or_else(|| rest.find(OBL_SYNC)) {
            return Some((LogKind::OutputBufferLimit, Some(&rest[..i])));
        }
        // Cut at LOG_MAX_LEN (1023 bytes) before the reason: a client info that long is
        // only ever logged this way.
        if rest.starts_with("id=") && msg.len() >= 1000 {
            return Some((LogKind::OutputBufferLimit, Some(rest)));
        }
        return None;
    }
    if let Some(rest) = msg.strip_prefix("Closing client that reached max query buffer length: ") {
        let info = rest
            .find(" (qbuf initial bytes: ")
            .map_or(rest, |i| &rest[..i]);
        return Some((LogKind::QueryBufferLimit, Some(info)));
    }
    if let Some(rest) = msg.strip_prefix("Evicting client: ") {
        return Some((LogKind::ClientEviction, Some(rest)));
    }
    if let Some(rest) = msg.strip_prefix("Protocol error (") {
        let (_, rest) = rest.split_once(") from client: ")?;
        // ". Query buffer during protocol error: '...'" (Redis, Valkey 8.0) or ". Query
        // buffer: ..." (Valkey 8.1+): the client's bytes, never client fields. The client
        // info cannot hold this text: its values have no spaces.
        let info = rest.find(". Query buffer").map_or(rest, |i| &rest[..i]);
        return Some((LogKind::ProtocolError, Some(info)));
    }
    if msg == "Closing idle client" {
        return Some((LogKind::IdleTimeout, None));
    }
    if msg == "Connection with master lost." || msg == "Connection with primary lost." {
        return Some((LogKind::PrimaryLost, None));
    }
    if let Some(name) = msg
        .strip_prefix("Connection with replica ")
        .and_then(|r| r.strip_suffix(" lost."))
    {
        let (name, rdb_channel) = match name.strip_prefix("(rdbchannel) ") {
            Some(n) => (n, true),
            None => (name, false),
        };
        return replica_lost(name, rdb_channel);
    }
    if let Some(name) = msg
        .strip_prefix("Replica ")
        .and_then(|r| r.strip_suffix(" rdb channel disconnected."))
    {
        return replica_lost(name, true);
    }
    if let Some(rest) = msg.strip_prefix("User requested shutdown") {
        // Valkey 8+: "User requested shutdown... (user request from '<client info>')".
        let requester = rest
            .strip_prefix("... (user request from '")
            .map(|r| r.strip_suffix("')").unwrap_or(r))
            .filter(|info| info.starts_with("id="));
        return Some((
            LogKind::ShutdownRequested {
                by: SHUTDOWN_COMMAND.to_string(),
            },
            requester,
        ));
    }
    if msg.starts_with("Received SIGTERM scheduling shutdown") {
        return Some(shutdown("SIGTERM"));
    }
    if msg.starts_with("Received SIGINT scheduling shutdown") {
        return Some(shutdown("SIGINT"));
    }
    if msg.starts_with("You insist... exiting now") {
        // A second SIGINT while shutting down: exit(1) at once, no "bye bye".
        return Some(shutdown("SIGINT"));
    }
    if msg.starts_with("Received shutdown signal") && msg.contains("scheduling shutdown") {
        return Some(shutdown("signal"));
    }
    if let Some(name) = msg.strip_suffix(" is now ready to exit, bye bye...") {
        if !name.contains(' ') {
            return Some((LogKind::ReadyToExit, None));
        }
    }
    if let Some(i) = msg.find(" crashed by signal: ") {
        // "<Redis|valkey-server> <version> crashed by signal: N[, si_code: C]"
        if msg[..i].split(' ').count() == 2 {
            let digits: String = msg[i + " crashed by signal: ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let signal = digits.parse::<i32>().ok();
            return Some((LogKind::Crash { signal }, None));
        }
    }
    classify_raw(msg).map(|k| (k, None))
}

pub(super) fn classify_raw(line: &str) -> Option<LogKind> {
    let banner = line.strip_prefix("=== ")?;
    let (_, rest) = banner.split_once(' ')?;
    if rest.starts_with("BUG REPORT START") {
        return Some(LogKind::Crash { signal: None });
    }
    None
}

/// The replica's name as `replicationGetSlaveName` writes it: `ip:listening-port` (an
/// `ip:<unknown-replica-port>` has no address), never with a space.
fn replica_lost(name: &str, rdb_channel: bool) -> Option<(LogKind, Option<&'static str>)> {
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let kind = LogKind::ReplicaLost {
        listening_addr: parse_client_addr(name),
        rdb_channel,
    };
    Some((kind, None))
}

fn shutdown(by: &str) -> (LogKind, Option<&'static str>) {
    (LogKind::ShutdownRequested { by: by.to_string() }, None)
}

/// What Valkey 8+ writes for `name=` and `user=` with `hide-user-data-from-log yes`.
const REDACTED: &str = "*redacted*";

/// The fields of a client info string we keep; the first occurrence of each counts (the
/// fixed fields come first, before anything a client chooses).
#[derive(Debug, Default)]
pub(super) struct ClientFields {
    pub(super) id: Option<u64>,
    pub(super) addr: Option<SocketAddr>,
    pub(super) flags: Option<String>,
    pub(super) name: Option<String>,
    pub(super) omem: Option<u64>,
    pub(super) qbuf: Option<u64>,
}

impl ClientFields {
    pub(super) fn parse(info: &str) -> Self {
        let mut f = Self::default();
        let (mut id, mut addr, mut flags, mut name, mut omem, mut qbuf) =
            (false, false, false, false, false, false);
        for (key, value) in info.split(' ').filter_map(|t| t.split_once('=')) {
            match key {
                "id" if !id => {
                    id = true;
                    f.id = parse_digits(value);
                }
                "addr" if !addr => {
                    addr = true;
                    f.addr = parse_client_addr(value);
                }
                "flags" if !flags => {
                    flags = true;
                    f.flags = Some(value.to_string()).filter(|v| !v.is_empty());
                }
                "name" if !name => {
                    name = true;
                    f.name = Some(value.to_string()).filter(|v| !v.is_empty() && v != REDACTED);
                }
                "omem" if !omem => {
                    omem = true;
                    f.omem = parse_digits(value);
                }
                "qbuf" if !qbuf => {
                    qbuf = true;
                    f.qbuf = parse_digits(value);
                }
                _ => {}
            }
        }
        f
    }
}

/// `127.0.0.1:52442`, `[::1]:52442`, `::1:52442` (unbracketed, as very old Redis and some
/// tools write it); `None` for unix sockets (`/path:0`) and anything else.
pub(crate) fn parse_client_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = parse_digits::<u16>(port)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // A zone we cannot resolve to an index ("fe80::1%eth0"): keep the address.
    let host = host.split('%').next().unwrap_or(host);
    let ip = host.parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::redis_log::{parse_line, parse_lines};

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    const OBL_V6: &str = "7:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=[::1]:52442 laddr=[::1]:6379 fd=8 name=worker age=3 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=20474 argv-mem=0 multi-mem=0 rbs=16384 rbp=16384 obl=16384 oll=4 omem=82016 tot-mem=119704 events=rw cmd=subscribe user=default redir=-1 resp=2 lib-name= lib-ver= scheduled to be closed ASAP for overcoming of output buffer limits.";

    #[test]
    fn redis_log_addresses() {
        let e = parse_line(OBL_V6).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_addr, addr("[::1]:52442"));
        assert_eq!(e.client_name.as_deref(), Some("worker"));
        assert_eq!(parse_client_addr("::1:6379"), addr("[::1]:6379"));
        assert_eq!(
            parse_client_addr("[fe80::1%eth0]:6379"),
            addr("[fe80::1]:6379")
        );
        assert_eq!(
            parse_client_addr("::ffff:10.0.0.1:40000"),
            addr("[::ffff:10.0.0.1]:40000")
        );
        assert_eq!(parse_client_addr("10.1.2.3:1"), addr("10.1.2.3:1"));
        assert_eq!(parse_client_addr("/tmp/redis.sock:0"), None);
        assert_eq!(parse_client_addr("127.0.0.1"), None);
        assert_eq!(parse_client_addr("127.0.0.1:99999"), None);
        // Unix socket client: recognised, no address.
        let unix = OBL_V6.replace("addr=[::1]:52442", "addr=/run/redis.sock:0");
        let e = parse_line(&unix).expect("parsed");
        assert_eq!(e.client_addr, None);
        assert_eq!(e.client_id, Some(5));
    }

    #[test]
    fn redis_log_client_data_cannot_spoof_fields() {
        // The query buffer dump is the client's bytes: only the client info counts.
        let l = "1:M 25 Nov 2026 16:47:03.395 # Closing client that reached max query buffer length: id=6 addr=127.0.0.1:33488 laddr=127.0.0.1:6379 fd=7 name= age=0 idle=0 flags=N db=0 qbuf=1310720 omem=0 cmd=NULL user=default redir=-1 resp=2 (qbuf initial bytes: \"addr=10.9.9.9:1 name=evil flags=S\")";
        let e = parse_line(l).expect("parsed");
        assert_eq!(e.client_addr, addr("127.0.0.1:33488"));
        assert_eq!(e.client_name, None);
        assert_eq!(e.client_flags.as_deref(), Some("N"));
        // A message that only quotes one of ours is not one.
        assert!(
            parse_line("1:M 25 Nov 2026 16:47:03.395 * DB 0: User requested shutdown... keys")
                .is_none()
        );
        assert!(
            parse_line("id=4 addr=127.0.0.1:43148 laddr=127.0.0.1:27414 fd=8 name=crasher")
                .is_none()
        );
        assert!(parse_line("argv[1]: '\"=== REDIS BUG REPORT START\"'").is_none());
    }

    #[test]
    fn redis_log_other_messages_and_versions() {
        let sync = "1:M 25 Nov 2026 16:47:03.395 # Client id=9 addr=10.0.0.7:5000 laddr=10.0.0.1:6379 fd=9 name= age=1 idle=0 flags=S db=0 omem=300000000 cmd=psync closed for overcoming of output buffer limits.";
        let e = parse_line(sync).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_flags.as_deref(), Some("S"));
        assert_eq!(e.omem, Some(300_000_000));

        // Cut at LOG_MAX_LEN before the reason.
        let long_name = "n".repeat(1000);
        let mut cut = format!(
            "Client id=5 addr=127.0.0.1:1234 laddr=127.0.0.1:6379 fd=8 name={long_name} age=3 idle=0 flags=P db=0 sub=1 omem=5 cmd=subscribe user=default"
        );
        cut.truncate(1023);
        let e = parse_line(&format!("1:M 25 Nov 2026 16:38:04.676 # {cut}")).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_addr, addr("127.0.0.1:1234"));

        // Valkey's banner and crash line, Redis 5's crash line.
        let e = parse_line("=== VALKEY BUG REPORT START: Cut & paste starting from here ===")
            .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: None });
        let e = parse_line(
            "9:M 10 Apr 2025 18:13:53.586 # valkey-server 8.1.1 crashed by signal: 6, si_code: 0",
        )
        .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: Some(6) });
        let e = parse_line("9:M 10 Apr 2019 18:13:53.586 # Redis 5.0.7 crashed by signal: 11")
            .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: Some(11) });
        let e =
            parse_line("9:M 10 Apr 2025 18:13:53.586 # Valkey is now ready to exit, bye bye...")
                .expect("parsed");
        assert_eq!(e.kind, LogKind::ReadyToExit);
        let e = parse_line("9:signal-handler (1744308833) Received shutdown signal during loading, scheduling shutdown.")
            .expect("parsed");
        assert_eq!(
            e.kind,
            LogKind::ShutdownRequested {
                by: "signal".into()
            }
        );
        let evs = parse_lines(
            "9:signal-handler (1744308833) Received SIGTERM scheduling shutdown...\n\
             9:signal-handler (1744308834) You insist... exiting now.\n\
             9:M 10 Apr 2025 18:13:53.586 # User requested shutdown...\n",
        );
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        let by = |s: &str| LogKind::ShutdownRequested { by: s.into() };
        assert_eq!(kinds, vec![by("SIGTERM"), by("SIGINT"), by("SIGINT")]);
        // Another process's shutdown line does not take this one's signal.
        let evs = parse_lines(
            "9:signal-handler (1744308833) Received SIGTERM scheduling shutdown...\n\
             10:M 10 Apr 2025 18:13:53.586 # User requested shutdown...\n",
        );
        assert_eq!(
            evs[1].kind,
            LogKind::ShutdownRequested {
                by: "SHUTDOWN command".into()
            }
        );
    }
}
