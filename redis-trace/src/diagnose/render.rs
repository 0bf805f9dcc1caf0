//! The diagnosis as text for a terminal.
use std::fmt::Write as _;

use super::format::{bytes, dur};
use super::{Diagnosis, Finding, Severity};
use crate::output::escape_name;

fn label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

fn paint(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\x1b[1;31m",
        Severity::Warning => "\x1b[1;33m",
        Severity::Info => "\x1b[36m",
    }
}

/// The diagnosis for a terminal: a line about Redis, then the findings, most severe first,
/// each with its evidence and fix. Every text is escaped (client names, log lines and
/// anything else Redis or the kernel wrote cannot reach the terminal as control sequences);
/// `color` adds ANSI colors to the severity labels only.
pub fn render_text(d: &Diagnosis, color: bool) -> String {
    let e = |s: &str| escape_name(s);
    let mut out = String::new();
    if let Some(r) = &d.redis {
        let _ = write!(
            out,
            "Redis {} at {}",
            e(r.version.as_deref().unwrap_or("?")),
            e(&r.addr)
        );
        if let Some(pid) = r.pid {
            let _ = write!(out, ", pid {pid}");
        }
        if let Some(up) = r.uptime_s {
            let _ = write!(out, ", up {}", dur(up));
            if let Some(since) = &r.started_at {
                let _ = write!(out, " (since {})", e(since));
            }
        }
        if let Some(role) = &r.role {
            let _ = write!(out, ", {}", e(role));
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "  clients: {} connected, {} blocked, max recent output buffer {}; memory: {} used{}",
            r.connected_clients.map_or("?".into(), |n| n.to_string()),
            r.blocked_clients.map_or("?".into(), |n| n.to_string()),
            r.client_recent_max_output_buffer.map_or("?".into(), bytes),
            r.used_memory.map_or("?".into(), bytes),
            match r.maxmemory {
                Some(0) => ", no maxmemory".to_string(),
                Some(m) => format!(" of maxmemory {}", bytes(m)),
                None => String::new(),
            }
        );
    }
    let mut sorted: Vec<&Finding> = d.findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let count = |s: Severity| sorted.iter().filter(|f| f.severity == s).count();
    if sorted.is_empty() {
        out.push_str("No findings.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} critical, {} warning(s), {} info\n",
        count(Severity::Critical),
        count(Severity::Warning),
        count(Severity::Info)
    );
    for f in sorted {
        let tag = format!("{:<8}", label(f.severity));
        if color {
            let _ = writeln!(out, "{}{tag}\x1b[0m  {}", paint(f.severity), e(&f.title));
        } else {
            let _ = writeln!(out, "{tag}  {}", e(&f.title));
        }
        for ev in &f.evidence {
            let _ = writeln!(out, "          - {}", e(ev));
        }
        let _ = writeln!(out, "          fix: {}\n", e(&f.fix));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::test_support::*;
    use crate::diagnose::{RedisFacts, check_client_output_buffers};
    use crate::sources::redis::parse_config;

    #[test]
    fn diagnose_render_text_sorts_and_escapes() {
        let cfg = parse_config(&config_pairs());
        let mut list = clients();
        client_mut(&mut list, 32).omem = 30 << 20;
        client_mut(&mut list, 32).name = "evil\x1b]0;pwned\x07\u{202e}txt".into();
        let mut findings = vec![finding(Severity::Info, "an info")];
        findings.extend(check_client_output_buffers(&cfg, &list));
        findings.push(finding(Severity::Critical, "a critical"));
        let d = Diagnosis {
            redis: Some(RedisFacts {
                addr: "127.0.0.1:6379".into(),
                pid: Some(7),
                version: Some("7.0.15\x1b[2J".into()),
                uptime_s: Some(90),
                connected_clients: Some(6),
                blocked_clients: Some(0),
                used_memory: Some(1 << 20),
                maxmemory: Some(0),
                ..RedisFacts::default()
            }),
            findings,
        };
        for color in [false, true] {
            let text = render_text(&d, color);
            assert!(!text.contains("\x1b]") && !text.contains("\x1b[2J") && !text.contains('\x07'));
            assert!(!text.contains('\u{202e}'));
            assert!(
                text.contains("name=evil\\x1b]0;pwned\\x07\\u{202e}txt"),
                "{text}"
            );
            assert!(text.starts_with("Redis 7.0.15\\x1b[2J at 127.0.0.1:6379, pid 7, up 1m 30s"));
            assert!(text.contains("1 critical, 1 warning(s), 1 info"));
            let c = text.find("a critical").unwrap();
            let w = text.find("client(s) with an output buffer").unwrap();
            let i = text.find("an info").unwrap();
            assert!(c < w && w < i, "{text}");
            assert_eq!(text.contains("\x1b[1;31mCRITICAL"), color);
            if !color {
                assert!(!text.contains('\x1b'));
                assert!(text.contains(
                    "CRITICAL  a critical\n          - source: a critical\n          fix: do it\n"
                ));
            }
        }
        let empty = Diagnosis {
            redis: None,
            findings: vec![],
        };
        assert_eq!(render_text(&empty, false), "No findings.\n");
    }
}
