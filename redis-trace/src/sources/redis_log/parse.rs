//! One log line -> a [`LogEvent`]: its header in each format Redis and Valkey write,
//! then its message (see `classify`); and a whole log, in order.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::classify::{ClientFields, SHUTDOWN_COMMAND, classify, classify_raw};
use super::local_time::{month_number, parse_iso8601, parse_legacy_stamp};
use super::{LogEvent, LogKind};

/// Parses one log line; `None` for lines of no interest.
///
/// Stateless: "User requested shutdown..." is always `by: "SHUTDOWN command"` here; see
/// [`parse_lines`] and [`LogTail`] for the attribution to a preceding signal.
pub fn parse_line(line: &str) -> Option<LogEvent> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let header = parse_header(line);
    let (kind, info) = match &header {
        Some(h) => classify(h.msg)?,
        // Lines without a header are raw output (crash reports, INFO, CLIENT LIST): only the
        // bug report banner counts, never something that merely looks like a message.
        None => (classify_raw(line)?, None),
    };
    let fields = info.map(ClientFields::parse).unwrap_or_default();
    Some(LogEvent {
        time: header.as_ref().and_then(|h| h.time),
        pid: header.as_ref().and_then(|h| h.pid),
        role: header.as_ref().and_then(|h| h.role),
        kind,
        client_addr: fields.addr,
        client_id: fields.id,
        client_flags: fields.flags,
        client_name: fields.name,
        omem: fields.omem,
        qbuf: fields.qbuf,
        line: line.to_string(),
    })
}

/// Parses a whole log text, in order, attributing "User requested shutdown..." to the
/// signal the same process logged just before (as [`LogTail::poll`] does).
pub fn parse_lines(text: &str) -> Vec<LogEvent> {
    let mut ctx = Context::default();
    text.lines()
        .filter_map(parse_line)
        .map(|mut ev| {
            ctx.apply(&mut ev);
            ev
        })
        .collect()
}

/// What earlier lines tell about later ones.
#[derive(Debug, Default)]
pub(super) struct Context {
    /// The last "Received SIG... scheduling shutdown" not yet followed by its "User requested
    /// shutdown...": (pid, signal).
    pending_signal: Option<(Option<u32>, String)>,
}

impl Context {
    pub(super) fn apply(&mut self, ev: &mut LogEvent) {
        match &mut ev.kind {
            LogKind::ShutdownRequested { by } if by == SHUTDOWN_COMMAND => {
                // A line that names the client who sent SHUTDOWN (Valkey 8+) is the command
                // whatever came before.
                let named = ev.client_id.is_some() || ev.client_addr.is_some();
                if let Some((pid, signal)) = self.pending_signal.take() {
                    if pid == ev.pid && !named {
                        *by = signal;
                    }
                }
            }
            LogKind::ShutdownRequested { by } => {
                self.pending_signal = Some((ev.pid, by.clone()));
            }
            LogKind::ReadyToExit | LogKind::Crash { .. } => self.pending_signal = None,
            _ => {}
        }
    }
}

/// The prefix of a log line.
struct Header<'a> {
    pid: Option<u32>,
    role: Option<char>,
    time: Option<SystemTime>,
    msg: &'a str,
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    if line.starts_with("pid=") {
        return parse_logfmt(line);
    }
    if let Some(rest) = line.strip_prefix('[') {
        // Redis 2.x: "[PID] DD Mon HH:MM:SS.mmm L message".
        let (pid, rest) = rest.split_once("] ")?;
        let pid = parse_digits::<u32>(pid)?;
        let (time, msg) = parse_stamp_and_level(rest)?;
        return Some(Header {
            pid: Some(pid),
            role: None,
            time,
            msg,
        });
    }
    let (pid, rest) = line.split_once(':')?;
    let pid = parse_digits::<u32>(pid)?;
    if let Some(rest) = rest.strip_prefix("signal-handler (") {
        // "PID:signal-handler (UNIXSECS) message"
        let (secs, msg) = rest.split_once(") ")?;
        let secs = parse_digits::<u64>(secs)?;
        let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        return Some(Header {
            pid: Some(pid),
            role: None,
            time,
            msg,
        });
    }
    let mut chars = rest.chars();
    let role = chars.next().filter(|c| c.is_ascii_uppercase())?;
    let rest = chars.as_str().strip_prefix(' ')?;
    let (time, msg) = parse_stamp_and_level(rest)?;
    Some(Header {
        pid: Some(pid),
        role: Some(role),
        time,
        msg,
    })
}

/// "<timestamp> <level char> <message>", the timestamp in one of the forms Redis and Valkey
/// write. The time is `None` when the timestamp has the right shape but not a valid value.
fn parse_stamp_and_level(s: &str) -> Option<(Option<SystemTime>, &str)> {
    let (first, rest) = s.split_once(' ')?;
    let (time, rest) = if first.len() <= 2 && first.bytes().all(|b| b.is_ascii_digit()) {
        // "DD Mon YYYY HH:MM:SS.mmm" or "DD Mon HH:MM:SS.mmm"
        let (mon, rest) = rest.split_once(' ')?;
        month_number(mon)?;
        let (third, rest2) = rest.split_once(' ')?;
        if third.contains(':') {
            (parse_legacy_stamp(first, mon, None, third), rest2)
        } else {
            let (clock, rest3) = rest2.split_once(' ')?;
            let year = parse_digits::<i32>(third)?;
            (parse_legacy_stamp(first, mon, Some(year), clock), rest3)
        }
    } else if first.len() >= 10 && first.bytes().all(|b| b.is_ascii_digit()) {
        // Valkey log-timestamp-format milliseconds.
        let ms = parse_digits::<u64>(first)?;
        (UNIX_EPOCH.checked_add(Duration::from_millis(ms)), rest)
    } else if first.len() >= 19 && first.as_bytes().get(10) == Some(&b'T') {
        // Valkey log-timestamp-format iso8601.
        (parse_iso8601(first), rest)
    } else {
        return None;
    };
    let (level, msg) = match rest.split_once(' ') {
        Some(pair) => pair,
        None => (rest, ""),
    };
    if !matches!(level, "." | "-" | "*" | "#") {
        return None;
    }
    Some((time, msg))
}

/// Valkey `log-format logfmt`:
/// `pid=1 role=primary timestamp="..." level=notice message="..."`.
fn parse_logfmt(line: &str) -> Option<Header<'_>> {
    let rest = line.strip_prefix("pid=")?;
    let (pid, rest) = rest.split_once(' ')?;
    let pid = parse_digits::<u32>(pid)?;
    let rest = rest.strip_prefix("role=")?;
    // Role names hold a '/' ("RDB/AOF") but no space.
    let (role, rest) = rest.split_once(' ')?;
    let role = match role {
        "primary" | "master" => Some('M'),
        "replica" | "slave" => Some('S'),
        "RDB/AOF" | "child" => Some('C'),
        "sentinel" => Some('X'),
        _ => None,
    };
    let rest = rest.strip_prefix("timestamp=\"")?;
    let (stamp, rest) = rest.split_once("\" ")?;
    let rest = rest.strip_prefix("level=")?;
    let (_level, rest) = rest.split_once(' ')?;
    let msg = rest.strip_prefix("message=\"")?;
    let msg = msg.strip_suffix('"').unwrap_or(msg);
    let time = parse_any_stamp(stamp);
    Some(Header {
        pid: Some(pid),
        role,
        time,
        msg,
    })
}

fn parse_any_stamp(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split(' ').collect();
    match parts.as_slice() {
        [day, mon, year, clock] => parse_legacy_stamp(day, mon, Some(parse_digits(year)?), clock),
        [day, mon, clock] => parse_legacy_stamp(day, mon, None, clock),
        [one] if one.len() >= 10 && one.bytes().all(|b| b.is_ascii_digit()) => {
            UNIX_EPOCH.checked_add(Duration::from_millis(parse_digits(one)?))
        }
        [one] => parse_iso8601(one),
        _ => None,
    }
}

pub(super) fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const CLIENTS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-clients.log"
    ));
    const SIGTERM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-sigterm.log"
    ));
    const SIGINT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-sigint.log"
    ));
    const SEGFAULT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-segfault.log"
    ));

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    /// The events of `text` other than "Client closed connection", and those.
    fn split_peer_closes(text: &str) -> (Vec<LogEvent>, Vec<LogEvent>) {
        parse_lines(text)
            .into_iter()
            .partition(|e| e.kind != LogKind::ClientClosedConnection)
    }

    /// The local calendar fields of `t`, to check a parsed time without assuming a zone.
    fn local_fields(t: SystemTime) -> (i32, i32, i32, i32, i32, i32, u32) {
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        let secs = libc::time_t::try_from(d.as_secs()).expect("fits time_t");
        // SAFETY: zeroed tm is valid; localtime_r writes into it.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        let r = unsafe { libc::localtime_r(&secs, &mut tm) };
        assert!(!r.is_null());
        (
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            d.subsec_millis(),
        )
    }

    #[test]
    fn redis_log_fixture_clients() {
        let (evs, peer_closes) = split_peer_closes(CLIENTS);
        let peers: Vec<_> = peer_closes
            .iter()
            .map(|e| (e.client_addr, e.client_name.as_deref()))
            .collect();
        assert_eq!(
            peers,
            vec![
                (addr("127.0.0.1:51456"), None),
                (addr("127.0.0.1:33526"), Some("polite"))
            ]
        );
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                LogKind::OutputBufferLimit,
                LogKind::QueryBufferLimit,
                LogKind::ClientEviction,
                LogKind::ProtocolError,
                LogKind::ProtocolError,
                LogKind::ProtocolError,
                LogKind::ShutdownRequested {
                    by: "SHUTDOWN command".into()
                },
                LogKind::ReadyToExit,
            ]
        );
        for e in &evs {
            assert_eq!(e.pid, Some(20070));
            assert_eq!(e.role, Some('M'));
            assert!(e.time.is_some(), "{}", e.line);
        }

        let obl = &evs[0];
        assert_eq!(obl.client_addr, addr("127.0.0.1:51480"));
        assert_eq!(obl.client_id, Some(5));
        assert_eq!(obl.client_flags.as_deref(), Some("P"));
        assert_eq!(obl.client_name.as_deref(), Some("slow-subscriber"));
        assert_eq!(obl.omem, Some(82016));
        assert_eq!(obl.qbuf, Some(0));
        assert!(
            obl.line
                .starts_with("20070:M 25 Nov 2026 16:47:02.552 # Client id=5")
        );
        assert!(obl.line.ends_with("output buffer limits."));
        let t = obl.time.expect("time");
        assert_eq!(local_fields(t), (2026, 11, 25, 16, 47, 2, 552));

        let qbl = &evs[1];
        assert_eq!(qbl.client_addr, addr("127.0.0.1:33488"));
        assert_eq!(qbl.client_id, Some(6));
        assert_eq!(qbl.client_flags.as_deref(), Some("N"));
        assert_eq!(qbl.client_name.as_deref(), Some("bulk-loader"));
        assert_eq!(qbl.qbuf, Some(1_310_720));
        assert_eq!(qbl.omem, Some(0));
        assert_eq!(
            local_fields(qbl.time.expect("time")),
            (2026, 11, 25, 16, 47, 3, 395)
        );

        let evict = &evs[2];
        assert_eq!(evict.client_addr, addr("127.0.0.1:33496"));
        assert_eq!(evict.client_name.as_deref(), Some("memory-hog"));
        assert_eq!(evict.qbuf, Some(1_572_864));

        let proto = &evs[3];
        assert_eq!(proto.client_addr, addr("127.0.0.1:33498"));
        assert_eq!(proto.client_name.as_deref(), Some("bad-bulk"));
        assert_eq!(proto.client_id, Some(8));
        // No name set: `name=` is empty.
        assert_eq!(evs[4].client_name, None);
        assert_eq!(evs[4].client_addr, addr("127.0.0.1:33500"));
        assert_eq!(evs[5].client_addr, addr("127.0.0.1:33510"));

        assert_eq!(evs[6].client_addr, None);
        assert_eq!(evs[7].client_addr, None);
    }

    #[test]
    fn redis_log_fixture_noise_is_ignored() {
        for l in CLIENTS.lines() {
            let interesting = l.contains("output buffer limits")
                || l.contains("Client closed connection")
                || l.contains("max query buffer")
                || l.contains("Evicting client")
                || l.contains("Protocol error")
                || l.contains("shutdown")
                || l.contains("bye bye");
            assert_eq!(parse_line(l).is_some(), interesting, "{l}");
        }
        // A client closing its own connection is its own kind, not a close by Redis.
        let peer_closes = parse_lines(CLIENTS)
            .into_iter()
            .filter(|e| e.kind == LogKind::ClientClosedConnection)
            .count();
        assert_eq!(peer_closes, 2);
    }

    #[test]
    fn redis_log_fixture_sigterm_and_sigint() {
        for (text, sig, pid, secs) in [
            (SIGTERM, "SIGTERM", 20075, 1_795_625_225),
            (SIGINT, "SIGINT", 20080, 1_795_625_225),
        ] {
            let (evs, peer_closes) = split_peer_closes(text);
            assert_eq!(peer_closes.len(), 2, "the PING's redis-cli and the probe");
            let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
            let by = LogKind::ShutdownRequested { by: sig.into() };
            assert_eq!(kinds, vec![by.clone(), by, LogKind::ReadyToExit]);
            // Written from the signal handler: unix seconds, no role.
            assert_eq!(evs[0].pid, Some(pid));
            assert_eq!(evs[0].role, None);
            assert_eq!(evs[0].time, Some(UNIX_EPOCH + Duration::from_secs(secs)));
            assert_eq!(evs[1].role, Some('M'));
            // Alone, the prepareForShutdown line cannot tell.
            let alone = parse_line(&evs[1].line).expect("parsed");
            assert_eq!(
                alone.kind,
                LogKind::ShutdownRequested {
                    by: "SHUTDOWN command".into()
                }
            );
        }
    }

    #[test]
    fn redis_log_fixture_segfault() {
        let (evs, peer_closes) = split_peer_closes(SEGFAULT);
        assert_eq!(peer_closes.len(), 1);
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        // The CLIENT LIST / CURRENT CLIENT INFO dumps in the report are not events.
        assert_eq!(
            kinds,
            vec![
                LogKind::Crash { signal: None },
                LogKind::Crash { signal: Some(11) }
            ]
        );
        assert_eq!(evs[0].pid, None);
        assert_eq!(evs[0].time, None);
        assert_eq!(evs[1].pid, Some(20085));
        assert_eq!(evs[1].role, Some('M'));
        assert_eq!(
            local_fields(evs[1].time.expect("time")),
            (2026, 11, 25, 16, 47, 6, 111)
        );
    }

    #[test]
    fn redis_log_line_formats() {
        let msg = "Evicting client: id=7 addr=127.0.0.1:33496 laddr=127.0.0.1:6379 fd=7 name=hog flags=N qbuf=10";
        // Valkey log-timestamp-format iso8601 and milliseconds.
        let e = parse_line(&format!("42:S 2026-11-25T16:47:03.836+01:00 - {msg}")).expect("iso");
        assert_eq!(e.role, Some('S'));
        assert_eq!(e.kind, LogKind::ClientEviction);
        let want = UNIX_EPOCH + Duration::from_millis(1_795_625_223_836 - 3_600_000);
        assert_eq!(e.time, Some(want));
        let e = parse_line(&format!("42:M 2026-11-25T15:47:03.836Z - {msg}")).expect("iso Z");
        assert_eq!(e.time, Some(want));
        let e = parse_line(&format!("42:M 1795621623836 - {msg}")).expect("ms");
        assert_eq!(e.time, Some(want));
        // Valkey log-format logfmt.
        let e = parse_line(&format!(
            "pid=42 role=replica timestamp=\"2026-11-25T15:47:03.836Z\" level=verbose message=\"{msg}\""
        ))
        .expect("logfmt");
        assert_eq!((e.pid, e.role, e.time), (Some(42), Some('S'), Some(want)));
        assert_eq!(e.client_name.as_deref(), Some("hog"));
        let e = parse_line(&format!(
            "pid=42 role=primary timestamp=\"25 Nov 2026 16:47:03.836\" level=verbose message=\"{msg}\""
        ))
        .expect("logfmt legacy stamp");
        assert_eq!(
            local_fields(e.time.expect("time")),
            (2026, 11, 25, 16, 47, 3, 836)
        );
        // Redis 3.x (no year) and 2.x ("[pid]").
        let e = parse_line(&format!("42:M 25 Nov 16:47:03.836 - {msg}")).expect("3.x");
        let (_, mo, d, h, mi, s, ms) = local_fields(e.time.expect("time"));
        assert_eq!((mo, d, h, mi, s, ms), (11, 25, 16, 47, 3, 836));
        let e = parse_line(&format!("[42] 25 Nov 16:47:03.836 # {msg}")).expect("2.x");
        assert_eq!((e.pid, e.role), (Some(42), None));
        // Bad timestamp values: still the event, no time.
        let e = parse_line(&format!("42:M 31 Feb 2026 99:47:03.836 - {msg}")).expect("bad time");
        assert_eq!(e.time, None);
        assert_eq!(e.kind, LogKind::ClientEviction);
        // Not log lines.
        for junk in [
            "",
            "   ",
            "42:M",
            "42:M 25 Nov",
            "42:M 25 Nov 2026 16:47:03.836 ? Evicting client: id=1",
            "x:M 25 Nov 2026 16:47:03.836 - Evicting client: id=1",
            "42:m 25 Nov 2026 16:47:03.836 - Evicting client: id=1",
            "pid=42 role=primary",
            "\u{fffd}\u{fffd}:M 25 Nov",
            "42:M 25 Nov 2026 16:47:03.836 - Protocol error (x)",
        ] {
            assert_eq!(parse_line(junk), None, "{junk:?}");
        }
        // CRLF and surrounding blanks are trimmed.
        let e = parse_line(&format!("  42:M 25 Nov 2026 16:47:03.836 - {msg}\r\n")).expect("crlf");
        assert!(e.line.starts_with("42:M") && e.line.ends_with("qbuf=10"));
    }
}
