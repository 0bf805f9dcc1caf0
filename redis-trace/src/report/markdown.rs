//! The Markdown report. Text from a capture (names, addresses, evidence, log lines) only
//! appears inside code spans, where Markdown and HTML are inert; control and bidi
//! characters are escaped so that nothing can break a line or a table row, or display as
//! something else.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::model::Summary;
use super::model::{CapInfo, Conn, Model, ProcEvt, Status, ranked_causes};
use super::text::{
    TimeStyle, cell, class_words, code, code_span, count, day, duration_ms, full, hms, plain,
    redis_bytes, span, truncate,
};
use crate::cause::Cause;
use crate::diagnose::finding::Finding;
use crate::schema::{
    self, EndedBy, KernelEvent, OutputBufferLimit, PathKind, ProcessEventKind, RedisState,
};

/// Examples shown per cause.
const EXAMPLES: usize = 3;
/// Longest key evidence in a timeline row (the full text is in the examples).
const CELL_MAX: usize = 180;
/// Most resets listed.
const RESETS_MAX: usize = 50;

/// The verdict clause of one cause, with what its records say about it.
fn verdict_clause(cause: Cause, conns: &[&Conn]) -> String {
    let text = cause.text();
    match cause {
        Cause::RedisOutputBufferLimit => {
            let mut classes: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
            for c in conns {
                let class = c.rec.client_class.clone().unwrap_or_default();
                let e = classes.entry(class).or_default();
                e.0 += 1;
                if e.1.is_none() {
                    e.1 = c.rec.settings.output_buffer_limit.as_ref().map(limit_text);
                }
            }
            if let [(class, (n, limit))] = classes.iter().collect::<Vec<_>>().as_slice()
                && !class.is_empty()
            {
                let limit = limit
                    .as_ref()
                    .map(|l| format!(" ({})", code(l)))
                    .unwrap_or_default();
                let who = class_words(class, *n);
                let who = if *n == 1 { format!("a {who}") } else { who };
                return format!("Redis closed {who} for the output buffer limit{limit}");
            }
            let parts: Vec<String> = classes
                .iter()
                .map(|(class, (n, limit))| {
                    let who = if class.is_empty() {
                        count(*n, "client of unknown class", "clients of unknown class")
                    } else {
                        format!("{n} {}", class_words(class, *n))
                    };
                    match limit {
                        Some(l) => format!("{who} ({})", code(l)),
                        None => who,
                    }
                })
                .collect();
            format!(
                "Redis closed clients for the output buffer limit: {}",
                parts.join(", ")
            )
        }
        Cause::RedisIdleTimeout => {
            let t = conns.iter().find_map(|c| c.rec.settings.timeout);
            match t {
                Some(t) => format!("{} ({t} s)", text.verdict),
                None => text.verdict.to_string(),
            }
        }
        Cause::RedisClientKill | Cause::RedisKilled => {
            let mut killers: Vec<&str> = conns
                .iter()
                .filter_map(|c| c.rec.killer.as_deref())
                .collect();
            killers.sort_unstable();
            killers.dedup();
            match killers.as_slice() {
                [k] => format!("{} (by {})", text.verdict, code(k)),
                _ => text.verdict.to_string(),
            }
        }
        _ if conns.len() == 1 => text.verdict.replace(" them", " it"),
        _ => text.verdict.to_string(),
    }
}

fn by_cause(m: &Model, cause: Cause) -> Vec<&Conn> {
    m.conns.iter().filter(|c| c.cause == cause).collect()
}

/// "pubsub 32mb 8mb 60", as redis.conf writes it.
fn limit_text(l: &OutputBufferLimit) -> String {
    format!(
        "{} {} {} {}",
        l.class.as_str(),
        redis_bytes(l.hard),
        redis_bytes(l.soft),
        l.soft_seconds
    )
}

fn warnings(o: &mut String, m: &Model, sum: &Summary) {
    let mut lines = Vec::new();
    for c in &m.caps {
        let lost = c.ended.as_ref().map_or(0, |e| e.lost);
        if lost > 0 {
            lines.push(format!(
                "**Incomplete capture:** {} (on {}) lost {} (records the kernel could not hand \
                 over): the counts below are short by up to that many.",
                code(&c.file),
                code(&c.host),
                count(lost, "event", "events")
            ));
        }
        for w in &c.warnings {
            lines.push(format!("**Warning:** {}: {}", code(&c.file), code(w)));
        }
        if let Some(e) = &c.ended
            && (e.untracked > 0 || e.bad_records > 0)
        {
            lines.push(format!(
                "**Note:** {}: {} reported without their start (the kernel's map was full), {} \
                 undecodable.",
                code(&c.file),
                count(e.untracked, "connection", "connections"),
                count(e.bad_records, "record", "records")
            ));
        }
    }
    if sum.lost_events > 0 && m.caps.len() > 1 {
        lines.push(format!(
            "**{} lost in all.**",
            count(sum.lost_events, "event", "events")
        ));
    }
    if !lines.is_empty() {
        let _ = writeln!(o, "> {}\n", lines.join("\n>\n> "));
    }
}

fn ports_of(c: &CapInfo) -> String {
    if c.ports.is_empty() {
        return "none".into();
    }
    c.ports
        .iter()
        .map(|p| match &p.process {
            Some(pr) => format!(
                "{} ({}{})",
                p.port,
                cell(&pr.comm),
                pr.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
            ),
            None => p.port.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn probes_of(c: &CapInfo) -> String {
    if c.probes_unavailable.is_empty() {
        return "none".into();
    }
    c.probes_unavailable
        .iter()
        .map(|p| {
            let mut s = cell(&p.probe);
            if let Some(w) = &p.why {
                let _ = write!(s, " ({})", plain(w));
            }
            if let Some(cost) = &p.cost {
                let _ = write!(s, ": {}", plain(cost));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn window_of(start: Option<SystemTime>, end: Option<SystemTime>) -> String {
    match (start, end) {
        (Some(a), Some(b)) => {
            let len = b.duration_since(a).unwrap_or_default();
            let to = if day(a) == day(b) { hms(b) } else { full(b) };
            format!("{} → {to} UTC ({})", full(a), span(len))
        }
        (Some(a), None) => format!("from {} UTC", full(a)),
        _ => "unknown".into(),
    }
}

/// What the `redis_status` records say of each Redis server.
fn redis_line(m: &Model, style: &TimeStyle) -> String {
    if m.statuses.is_empty() {
        return "not queried (no `redis_status` record: `--no-redis`, or no Redis seen)".into();
    }
    let mut seen: Vec<(usize, u64)> = Vec::new();
    let mut parts = Vec::new();
    for s in &m.statuses {
        if seen.contains(&(s.host, s.port)) {
            continue;
        }
        let first_ok = m
            .statuses
            .iter()
            .find(|x| x.host == s.host && x.port == s.port && x.status == RedisState::Connected);
        seen.push((s.host, s.port));
        let port = s.port.to_string();
        let host = if m.caps.len() > 1 {
            format!(" on {}", cell(&m.caps[s.host].host))
        } else {
            String::new()
        };
        match first_ok {
            Some(ok) => {
                let mut t = format!(
                    "port {port}{host}: Redis {}",
                    ok.version
                        .as_deref()
                        .map(cell)
                        .unwrap_or_else(|| "?".into())
                );
                if let Some(p) = ok.pid {
                    let _ = write!(t, ", pid {p}");
                }
                if let Some(up) = ok.uptime_s {
                    let _ = write!(
                        t,
                        ", up {} at {}",
                        span(Duration::from_secs(up)),
                        style.of(ok.time)
                    );
                }
                if !ok.log_readable {
                    t.push_str(", log not readable");
                }
                parts.push(t);
            }
            None => parts.push(format!(
                "port {port}{host}: unavailable ({})",
                s.error
                    .as_deref()
                    .map(cell)
                    .unwrap_or_else(|| "no reason given".into())
            )),
        }
    }
    let restarts = m.statuses.iter().filter(|s| s.restarted).count() as u64;
    if restarts > 0 {
        parts.push(format!(
            "**{}** (see the events below)",
            count(restarts, "restart", "restarts")
        ));
    }
    parts.join("; ")
}

fn header(o: &mut String, m: &Model, sum: &Summary, style: &TimeStyle) {
    let total_resets = m.resets.len() as u64;
    let ends = format!(
        "{} ({} not part of a close, {})",
        sum.connections,
        count(total_resets, "RST", "RSTs"),
        count(m.procs.len() as u64, "process event", "process events"),
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    if let [c] = m.caps.as_slice() {
        let _ = writeln!(
            o,
            "| Host | {}, kernel {} |",
            cell(&c.host),
            cell(&c.kernel)
        );
        let _ = writeln!(o, "| Redis | {} |", redis_line(m, style));
        let ended = c
            .ended
            .as_ref()
            .filter(|e| e.ended_by != EndedBy::Unknown)
            .map(|e| format!(", ended by {}", cell(e.ended_by.as_str())))
            .unwrap_or_else(|| ", **did not end cleanly**".into());
        let _ = writeln!(
            o,
            "| Capture window | {}{ended} |",
            window_of(c.start, c.end)
        );
        let _ = writeln!(o, "| Ports | {} |", ports_of(c));
        let _ = writeln!(o, "| Probes unavailable | {} |", probes_of(c));
        let _ = writeln!(
            o,
            "| Tool | redis-trace {} (report by {}) |",
            cell(&c.tool_version),
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            o,
            "| Connection ends | {ends}; {} open when the capture started |",
            c.open_at_start
        );
        let _ = writeln!(o, "| Lost events | {} |", lost_of(c));
        return;
    }
    let _ = writeln!(o, "| Redis | {} |", redis_line(m, style));
    let _ = writeln!(o, "| Capture window | {} |", window_of(m.start, m.end));
    let _ = writeln!(o, "| Connection ends | {ends} |");
    let _ = writeln!(
        o,
        "| Lost events | {} |",
        if sum.lost_events == 0 && m.caps.iter().all(|c| c.ended.is_some()) {
            "none".to_string()
        } else {
            sum.lost_events.to_string()
        }
    );
    let _ = writeln!(
        o,
        "| Report by | redis-trace {} |",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        o,
        "\n| Capture | Host | Kernel | Window | Ports | Tool | Probes unavailable | Lost events |\n|---|---|---|---|---|---|---|---|"
    );
    for c in &m.caps {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.file),
            cell(&c.host),
            cell(&c.kernel),
            window_of(c.start, c.end),
            ports_of(c),
            cell(&c.tool_version),
            probes_of(c),
            lost_of(c)
        );
    }
}

fn lost_of(c: &CapInfo) -> String {
    match &c.ended {
        Some(e) if e.lost == 0 => "none".into(),
        Some(e) => format!("**{}**", e.lost),
        None => "unknown (no capture_ended)".into(),
    }
}

fn verdict(o: &mut String, m: &Model, sum: &Summary) {
    let _ = writeln!(o, "## Verdict\n");
    if sum.connections == 0 {
        let _ = writeln!(
            o,
            "No connection ended on the traced ports during the capture{}.\n",
            if m.procs.is_empty() {
                ""
            } else {
                " (process events are listed below)"
            }
        );
        return;
    }
    let ranked = ranked_causes(&sum.by_cause);
    let mut sentences = Vec::new();
    for (i, (cause, n)) in ranked.iter().enumerate() {
        let clause = verdict_clause(*cause, &by_cause(m, *cause));
        let s = if i == 0 {
            let lead = if *n == sum.connections {
                format!("All {} connection ends", sum.connections)
            } else {
                format!("{n} of {} connection ends", sum.connections)
            };
            format!("**{lead}** ({}): {clause}.", code(cause.as_str()))
        } else {
            format!("**{n}** ({}): {clause}.", code(cause.as_str()))
        };
        sentences.push(s);
    }
    let _ = writeln!(o, "{}\n", sentences.join(" "));
    by_server(o, m);
    let both = m.conns.iter().filter(|c| !c.others.is_empty()).count() as u64;
    if both > 0 {
        let _ = writeln!(
            o,
            "{} seen from both ends (captures on two hosts, matched by server and client \
             address).{}\n",
            count(both, "connection was", "connections were"),
            if sum.middlebox_proven > 0 {
                format!(
                    " **{} of them: a RST arrived that neither end's TCP stack sent, proven \
                     from both sides: a middlebox reset.**",
                    sum.middlebox_proven
                )
            } else {
                String::new()
            }
        );
    }
    if sum.by_cause.contains_key("peer_reset") {
        let _ = writeln!(
            o,
            "`peer_reset` means a RST came from the remote end's address: a capture on that host \
             too (then `redis-trace report` over both) tells the client from a middlebox.\n"
        );
    }
}

/// With several Redis servers in the records (containers on one node): each one's
/// connection ends by cause.
fn by_server(o: &mut String, m: &Model) {
    let mut servers: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for c in &m.conns {
        let name = c
            .rec
            .redis_server
            .clone()
            .unwrap_or_else(|| "not a traced server".into());
        *servers
            .entry(name)
            .or_default()
            .entry(c.cause.as_str().to_string())
            .or_default() += 1;
    }
    if servers.len() < 2 {
        return;
    }
    let _ = writeln!(
        o,
        "By server:\n\n| server | connection ends | causes |\n|---|---|---|"
    );
    for (name, causes) in &servers {
        let total: u64 = causes.values().sum();
        let list: Vec<String> = ranked_causes(causes)
            .iter()
            .map(|(c, n)| format!("{} {n}", code_span(c.as_str(), true)))
            .collect();
        let _ = writeln!(o, "| {} | {total} | {} |", cell(name), list.join(", "));
    }
    o.push('\n');
}

fn what_to_do(o: &mut String, m: &Model, sum: &Summary) {
    if sum.connections == 0 {
        return;
    }
    let _ = writeln!(o, "### What it means and what to do\n");
    for (cause, n) in ranked_causes(&sum.by_cause) {
        let t = cause.text();
        let conns = by_cause(m, cause);
        let mut extra = String::new();
        if cause == Cause::RedisOutputBufferLimit
            && let Some(l) = conns
                .iter()
                .find_map(|c| c.rec.settings.output_buffer_limit.as_ref().map(limit_text))
        {
            let _ = write!(
                extra,
                " The limit in force: {}.",
                code(&format!("client-output-buffer-limit {l}"))
            );
        }
        if cause == Cause::RedisIdleTimeout
            && let Some(t) = conns.iter().find_map(|c| c.rec.settings.timeout)
        {
            let _ = write!(extra, " Redis's `timeout` here: {t} s.");
        }
        let _ = writeln!(
            o,
            "- **{}** ({n}): {}{extra}\n  **Fix:** {}\n",
            code(cause.as_str()),
            t.meaning,
            t.fix
        );
    }
    path_advice(o, m);
}

/// What the packets said about the path, whatever each connection's cause: a device
/// that forgets idle flows is fixed by keeping flows below its idle timeout.
fn path_advice(o: &mut String, m: &Model) {
    let with = |k: PathKind| -> Vec<&schema::PathFinding> {
        m.conns
            .iter()
            .filter_map(|c| c.rec.path.as_ref())
            .filter(|p| p.kind == k)
            .collect()
    };
    let dropped = with(PathKind::DeviceDroppedFlow);
    if !dropped.is_empty() {
        let shortest = dropped
            .iter()
            .filter_map(|p| p.idle_s)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .fold(f64::INFINITY, f64::min);
        let bound = if shortest.is_finite() {
            format!(
                ", the shortest after {shortest:.1} s idle: that device's idle timeout is at most that"
            )
        } else {
            String::new()
        };
        let keepalive = if shortest.is_finite() {
            // Redis's keepalive probes start after `tcp-keepalive` seconds idle.
            ((shortest / 2.0).floor() as u64).max(1).to_string()
        } else {
            "60".into()
        };
        let _ = writeln!(
            o,
            "- **Path: a device in the path dropped idle flows** ({}): the packets show a \
             RST that the peer did not send (its TTL or IP ID differ from the peer's own \
             packets){bound}.\n  **Fix:** keep idle connections from reaching that timeout: \
             {} below it (e.g. {}), TCP keepalive on the clients, and a pool idle timeout \
             shorter than it; or raise the device's idle timeout.\n",
            dropped.len(),
            code("tcp-keepalive"),
            code(&format!("CONFIG SET tcp-keepalive {keepalive}")),
        );
    }
    let silent = with(PathKind::PeerStoppedAnswering);
    if !silent.is_empty() {
        let _ = writeln!(
            o,
            "- **Path: peers stopped answering** ({}): this end kept sending (keepalive \
             probes, retransmissions) and nothing came back until the kernel gave up: the \
             peer's host vanished or the path dropped everything.\n  **Fix:** check those \
             client hosts and the network at those times; keep {} on so dead peers are found.\n",
            silent.len(),
            code("tcp-keepalive"),
        );
    }
}

fn risks(o: &mut String, findings: Option<&[Finding]>) {
    let _ = writeln!(o, "## Risk findings\n");
    match findings {
        None => {
            let _ = writeln!(
                o,
                "Not checked: no risk diagnosis was run for this report.\n"
            );
        }
        Some([]) => {
            let _ = writeln!(o, "Checked: no risks found.\n");
        }
        Some(f) => {
            let mut f: Vec<&Finding> = f.iter().collect();
            // Most severe first (Severity orders Info < Warning < Critical); stable, so
            // findings of one severity keep diagnose's order.
            f.sort_by_key(|x| std::cmp::Reverse(x.severity));
            for x in f {
                let _ = writeln!(o, "- **{}: {}**", x.severity.as_str(), plain(&x.title));
                for e in &x.evidence {
                    let _ = writeln!(o, "  - {}", code(e));
                }
                if !x.fix.is_empty() {
                    let _ = writeln!(o, "  - Fix: {}", plain(&x.fix));
                }
            }
            o.push('\n');
        }
    }
}

fn closer(c: &Conn) -> String {
    let r = &c.rec;
    match (r.pid, r.comm.as_deref()) {
        (Some(p), Some(n)) => format!("{p} {}", cell(n)),
        (Some(p), None) => p.to_string(),
        (None, Some(n)) => cell(n),
        (None, None) => "—".into(),
    }
}

fn closed_by(c: &Conn) -> String {
    let r = &c.rec;
    let mut s = c.closed_by.to_string();
    // A middlebox's RST only looks like it came from an end.
    let side = r
        .closed_by_side
        .filter(|_| c.cause != Cause::MiddleboxReset);
    let how: Vec<String> = [
        side.map(|x| format!("{} end", plain(x.as_str()))),
        r.packet.map(|p| plain(p.as_str())),
        r.rst_reason.as_deref().map(cell),
        (r.kernel_event == KernelEvent::Timeout).then(|| "kernel timeout".into()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !how.is_empty() {
        let _ = write!(s, " ({})", how.join(" "));
    }
    if !c.others.is_empty() {
        s.push_str(", both ends seen");
    }
    s
}

fn example(o: &mut String, i: usize, c: &Conn, m: &Model, style: &TimeStyle) {
    let r = &c.rec;
    let mut line = format!(
        "{}. {} · client {}",
        i + 1,
        style.of(r.time),
        code(&r.client)
    );
    if let Some(n) = c.client_name() {
        let _ = write!(line, " ({})", code(n));
    }
    let _ = write!(
        line,
        " → server {} · closed by {}",
        code(&r.server),
        closed_by(c)
    );
    if let (Some(p), Some(n)) = (r.pid, r.comm.as_deref()) {
        let _ = write!(line, " · {} pid {p}", code(n));
    }
    if let Some(d) = r.duration_ms {
        let _ = write!(line, " · after {}", duration_ms(d));
    }
    if let Some(k) = &r.client_class {
        let _ = write!(line, " · {}", code(k));
    }
    if let Some(k) = &r.killer {
        let _ = write!(line, " · killer {}", code(k));
    }
    let _ = writeln!(o, "{line}");
    for e in c.evidence(&m.caps) {
        let _ = writeln!(o, "   - {}", code(&e));
    }
}

/// First, middle and last: the spread of a cause over the capture.
fn pick_examples<'a>(conns: &[&'a Conn]) -> Vec<&'a Conn> {
    let n = conns.len();
    let idx: Vec<usize> = match n {
        0 => vec![],
        1..=EXAMPLES => (0..n).collect(),
        _ => vec![0, n / 2, n - 1],
    };
    idx.into_iter().map(|i| conns[i]).collect()
}

fn evidence_by_cause(o: &mut String, m: &Model, sum: &Summary, style: &TimeStyle) {
    if sum.connections == 0 {
        return;
    }
    let _ = writeln!(o, "## Evidence by cause\n");
    for (cause, n) in ranked_causes(&sum.by_cause) {
        let conns = by_cause(m, cause);
        let ex = pick_examples(&conns);
        let _ = writeln!(
            o,
            "### {} ({n})\n\n{}:\n",
            code(cause.as_str()),
            if ex.len() as u64 == n {
                count(n, "connection", "connections")
            } else {
                format!("{} of {n} (first, middle, last)", ex.len())
            }
        );
        for (i, c) in ex.into_iter().enumerate() {
            example(o, i, c, m, style);
        }
        o.push('\n');
    }
}

fn timeline(o: &mut String, m: &Model, chart_name: &str, style: &TimeStyle) {
    let _ = writeln!(o, "## Timeline\n");
    let _ = writeln!(
        o,
        "![connection ends over time]({})\n",
        chart_name.replace(['(', ')', ' '], "_")
    );
    if m.conns.is_empty() {
        let _ = writeln!(o, "No connection ends.\n");
        return;
    }
    let _ = writeln!(
        o,
        "| Time (UTC) | Cause | Closed by | Client | Client name | pid/comm | Key evidence |\n|---|---|---|---|---|---|---|"
    );
    for c in &m.conns {
        let r = &c.rec;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            style.of(r.time),
            cell(c.cause.as_str()),
            closed_by(c),
            cell(&r.client),
            c.client_name().map(cell).unwrap_or_else(|| "—".into()),
            closer(c),
            c.key_evidence()
                .map(|e| cell(&truncate(&e, CELL_MAX)))
                .unwrap_or_else(|| "—".into()),
        );
    }
    o.push('\n');
}

fn proc_line(p: &ProcEvt) -> String {
    let who = |comm: &str, pid: Option<u64>| match pid {
        Some(pid) => format!("{} (pid {pid})", code(comm)),
        None => code(comm),
    };
    let target = match (p.pid, p.redis) {
        (Some(pid), true) => format!("{} (pid {pid}, the traced Redis)", code(&p.comm)),
        (None, true) => format!("{} (the traced Redis)", code(&p.comm)),
        _ => who(&p.comm, p.pid),
    };
    match (p.event, &p.signal, &p.oom) {
        (ProcessEventKind::OomKill, _, o) => {
            let mut s = format!("**OOM kill** of {target}");
            if let Some(o) = o {
                if let Some(kb) = o.anon_rss_kb {
                    let _ = write!(s, ", anon-rss {} MB", kb / 1024);
                }
                if let Some(by) = &o.invoked_by {
                    let _ = write!(s, ", OOM killer run by {}", who(&by.comm, by.pid));
                }
            }
            s
        }
        (ProcessEventKind::Signal, Some(sig), _) => {
            let mut s = format!("**{}** to {target}", plain(&sig.name));
            if let Some(from) = &sig.sender {
                let _ = write!(s, " from {}", who(&from.comm, from.pid));
            }
            if !sig.origin.is_empty() {
                let _ = write!(s, " ({})", plain(&sig.origin));
            }
            if !sig.result.is_empty() && sig.result != "delivered" {
                let _ = write!(s, ", {}", plain(&sig.result));
            }
            s
        }
        (ProcessEventKind::Signal, None, _) => format!("signal of {target}"),
        (ProcessEventKind::Exit, _, _) => format!("**exit** of {target}"),
    }
}

fn status_line(s: &Status) -> Option<String> {
    let port = s.port;
    match s.status {
        RedisState::Connected if s.restarted => Some(format!(
            "**Redis restarted** on port {port}: now pid {}{}",
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            s.uptime_s
                .map(|u| format!(", up {}", span(Duration::from_secs(u))))
                .unwrap_or_default()
        )),
        RedisState::Connected => Some(format!(
            "redis-trace reached Redis on port {port}{}",
            s.version
                .as_deref()
                .map(|v| format!(" ({})", code(v)))
                .unwrap_or_default()
        )),
        RedisState::Unavailable => Some(format!(
            "Redis on port {port} unavailable to redis-trace: {}",
            s.error
                .as_deref()
                .map(code)
                .unwrap_or_else(|| "no reason given".into())
        )),
    }
}

fn events(o: &mut String, m: &Model, style: &TimeStyle) {
    let mut rows: Vec<(Option<SystemTime>, usize, String)> = Vec::new();
    for p in &m.procs {
        rows.push((p.time, p.cap, proc_line(p)));
    }
    for s in &m.statuses {
        if let Some(l) = status_line(s) {
            rows.push((s.time, s.host, l));
        }
    }
    let _ = writeln!(o, "## Process events and Redis status\n");
    if rows.is_empty() {
        let _ = writeln!(o, "None.\n");
        return;
    }
    rows.sort_by_key(|r| (r.0.is_none(), r.0));
    for (t, cap, line) in rows {
        let host = if m.caps.len() > 1 {
            format!(" (on {})", code(&m.caps[cap].host))
        } else {
            String::new()
        };
        let _ = writeln!(o, "- {} {line}{host}", style.of(t));
    }
    o.push('\n');
}

fn resets(o: &mut String, m: &Model, style: &TimeStyle) {
    if m.resets.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Other RSTs\n\n{} not part of a connection's first close (sent to a port with no \
         socket, or on a connection already reported, such as a client writing into a \
         socket Redis closed){}.\n",
        count(m.resets.len() as u64, "RST", "RSTs"),
        if m.resets.len() > RESETS_MAX {
            format!("; the first {RESETS_MAX}")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "| Time (UTC) | Client | Server | Sent by | Received by | Reason | pid/comm |\n|---|---|---|---|---|---|---|"
    );
    for r in m.resets.iter().take(RESETS_MAX) {
        let pc = match (r.pid, r.comm.as_deref()) {
            (Some(p), Some(c)) => format!("{p} {}", cell(c)),
            (Some(p), None) => p.to_string(),
            (None, Some(c)) => cell(c),
            _ => "—".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {pc} |",
            style.of(r.time),
            cell(&r.client),
            cell(&r.server),
            r.sent_by
                .map(|x| cell(x.as_str()))
                .unwrap_or_else(|| "not seen here".into()),
            r.received_by
                .map(|x| cell(x.as_str()))
                .unwrap_or_else(|| "not seen here".into()),
            r.rst_reason
                .as_deref()
                .map(cell)
                .unwrap_or_else(|| "—".into()),
        );
    }
    o.push('\n');
}

pub(super) fn render(
    m: &Model,
    sum: &Summary,
    findings: Option<&[Finding]>,
    chart_name: &str,
    redact: bool,
) -> String {
    let one_day = match (m.start, m.end) {
        (Some(a), Some(b)) => day(a) == day(b),
        _ => false,
    } && m
        .conns
        .iter()
        .filter_map(|c| c.rec.time)
        .chain(m.procs.iter().filter_map(|p| p.time))
        .all(|t| m.start.is_some_and(|a| day(a) == day(t)));
    let style = TimeStyle { one_day };
    let mut o = String::new();
    let title_day = m.start.map(|t| format!(", {}", day(t))).unwrap_or_default();
    let hosts: Vec<String> = m.caps.iter().map(|c| code(&c.host)).collect();
    let _ = writeln!(
        o,
        "# Redis connection ends: {}{title_day}\n",
        hosts.join(" and ")
    );
    warnings(&mut o, m, sum);
    header(&mut o, m, sum, &style);
    o.push('\n');
    verdict(&mut o, m, sum);
    what_to_do(&mut o, m, sum);
    risks(&mut o, findings);
    evidence_by_cause(&mut o, m, sum, &style);
    timeline(&mut o, m, chart_name, &style);
    events(&mut o, m, &style);
    resets(&mut o, m, &style);
    let files: Vec<String> = m.caps.iter().map(|c| code(&c.file)).collect();
    let _ = writeln!(
        o,
        "---\nGenerated by `redis-trace report` {} from {}. Times are UTC{}.{}",
        env!("CARGO_PKG_VERSION"),
        files.join(", "),
        if style.one_day {
            m.start
                .map(|t| format!(", on {}", day(t)))
                .unwrap_or_default()
        } else {
            String::new()
        },
        if redact {
            " Client addresses, client names and client process names are pseudonyms \
             (`--redact`): the same client keeps the same pseudonym throughout."
        } else {
            " It holds client addresses and names: share it with `--redact` where they must \
             not appear."
        }
    );
    o
}
