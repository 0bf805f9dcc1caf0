//! The human timeline: one line per record, escaped (names and texts come from clients,
//! Redis and /proc).
use std::time::{Duration, SystemTime};

use crate::output::escape_name;
use crate::schema::{
    ConnectionClosed, Counts, KernelEvent, ProcessEvent, ProcessEventKind, RedisState, RedisStatus,
    ResetSeen,
};

/// The clock time of a record, for the timeline (HH:MM:SS.mmm).
fn clock_of(time: Option<SystemTime>) -> String {
    match time {
        Some(t) => {
            let s = crate::time::rfc3339_micros(t);
            s.get(11..23).unwrap_or(&s).to_string()
        }
        None => "??:??:??.???".into(),
    }
}

fn who(pid: Option<u32>, comm: Option<&str>) -> String {
    match (pid, comm) {
        (Some(p), Some(c)) => format!(" by {} [{p}]", escape_name(c)),
        (Some(p), None) => format!(" by pid {p}"),
        _ => String::new(),
    }
}

pub fn closed_line(c: &ConnectionClosed, color: bool) -> String {
    let packet = match (c.packet, c.rst_reason.as_deref()) {
        (Some(p), Some(r)) => format!("{} {r}", p.as_str()),
        (Some(p), None) => p.as_str().to_string(),
        (None, _) => "no packet".to_string(),
    };
    let side = c.closed_by_side.map_or("unknown side", |s| s.as_str());
    let took = c
        .duration_ms
        .map(|d| format!(", after {d:.1} ms"))
        .unwrap_or_default();
    let timeout = if c.kernel_event == KernelEvent::Timeout {
        " (kernel timeout)"
    } else {
        ""
    };
    let name = c
        .redis_client
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .map(|r| format!(" [{}]", escape_name(&r.name)))
        .unwrap_or_default();
    let class = c
        .client_class
        .map(|k| format!(" ({})", k.as_str()))
        .unwrap_or_default();
    let key = c
        .key_evidence()
        .map(|e| format!("\n              {}", escape_name(e)))
        .unwrap_or_default();
    // What the packets said about the path, whatever the cause: the operator's fix.
    let path = c
        .path
        .as_ref()
        .map(|p| format!("\n              path: {}", escape_name(&p.finding)))
        .unwrap_or_default();
    let cause = if color {
        format!(
            "{}{:<26}\x1b[0m",
            c.cause.terminal_colour(),
            c.cause.as_str()
        )
    } else {
        format!("{:<26}", c.cause.as_str())
    };
    format!(
        "{}  {cause} {}{name} -> {}  closed by {side} ({packet}){timeout}{}{took}{class}{key}{path}",
        clock_of(c.time),
        c.client,
        c.server,
        who(c.pid, c.comm.as_deref()),
    )
}

pub fn reset_line(r: &ResetSeen) -> String {
    let from = r.sent_by.map_or("unseen sender", |s| s.as_str());
    let reason = r
        .rst_reason
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    format!(
        "{}  {} -> {}  RST{reason} sent by {from}{}",
        clock_of(r.time),
        r.client,
        r.server,
        who(r.pid, r.comm.as_deref())
    )
}

pub fn process_line(p: &ProcessEvent) -> String {
    let what = match (p.event, &p.signal, &p.oom) {
        (ProcessEventKind::OomKill, _, Some(o)) => format!(
            "OOM kill of {} [{}] (anon-rss {} MB)",
            escape_name(&p.comm),
            p.pid,
            o.anon_rss_kb / 1024
        ),
        (ProcessEventKind::Signal, Some(s), _) => format!(
            "{} to {} [{}] from {} [{}] ({})",
            s.name,
            escape_name(&p.comm),
            p.pid,
            escape_name(&s.sender.comm),
            s.sender.pid,
            s.origin
        ),
        _ => format!("exit of {} [{}]", escape_name(&p.comm), p.pid),
    };
    format!("{}  {what}", clock_of(p.time))
}

/// What changed in redis-trace's view of a Redis server (for stderr, which escapes it).
pub fn redis_status_line(st: &RedisStatus) -> String {
    match st.status {
        RedisState::Connected => format!(
            "Redis on port {} {}: pid {}, version {}, up {} s; its log is {}{}",
            st.port,
            if st.restarted {
                "restarted"
            } else {
                "connected"
            },
            st.pid.map_or("?".into(), |p| p.to_string()),
            st.version.as_deref().unwrap_or("?"),
            st.uptime_s.map_or("?".into(), |u| u.to_string()),
            if st.log_readable {
                "read too"
            } else {
                "not readable"
            },
            st.log_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        RedisState::Unavailable => format!(
            "Redis on port {} unavailable ({}): causes fall back to kernel evidence",
            st.port,
            st.error.as_deref().unwrap_or("?")
        ),
    }
}

/// The live status line: elapsed, connections ended, the top causes, lost events.
pub fn status_line(elapsed: Duration, counts: &Counts, lost: u64) -> String {
    let mut top: Vec<(&String, &u64)> = counts.by_cause.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let causes: Vec<String> = top
        .iter()
        .take(4)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    format!(
        "[{}s] {} ended | {} | lost {lost}",
        elapsed.as_secs(),
        counts.connections_closed,
        if causes.is_empty() {
            "-".to_string()
        } else {
            causes.join(", ")
        }
    )
}
