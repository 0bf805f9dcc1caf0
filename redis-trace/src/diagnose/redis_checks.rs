//! The checks on Redis's own view of itself: configuration, INFO, CLIENT LIST and the
//! closes it counted or logged. Pure functions of what was read.
use std::collections::HashMap;
use std::fmt::Write as _;

use super::format::{bytes, clip, dur, pct, window_text};
use super::{
    Finding, IDLE_SHARE, LogCount, LogSummary, MAXCLIENTS_SHARE, MemoryBound, OMEM_SHARE, RECENT,
    RESTART_WINDOW_S, SAMPLES, SHORT_TIMEOUT_S, SMALL_OUTPUT_LIMIT, Severity, check_maxmemory,
    check_maxmemory_clients, check_memory_usage,
};
use crate::schema::ClientClass;
use crate::sources::redis::{BufferLimit, ClientEntry, RedisConfig};

pub(super) fn u64_of(info: &HashMap<String, String>, key: &str) -> Option<u64> {
    info.get(key).and_then(|v| v.trim().parse().ok())
}

pub(super) fn f64_of(info: &HashMap<String, String>, key: &str) -> Option<f64> {
    info.get(key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// One client, for evidence: "id=32 addr=127.0.0.1:49894 name=x flags=P cmd=subscribe".
fn describe(c: &ClientEntry) -> String {
    let mut s = format!("id={}", c.id);
    if let Some(a) = c.addr {
        let _ = write!(s, " addr={a}");
    }
    if !c.name.is_empty() {
        let _ = write!(s, " name={}", c.name);
    }
    if let Some(lib) = &c.lib_name {
        let _ = write!(s, " lib-name={lib}");
    }
    if let Some(user) = &c.user {
        let _ = write!(s, " user={user}");
    }
    let _ = write!(s, " flags={} cmd={}", c.flags, c.cmd);
    s
}

/// serverCron's idle-timeout exemptions: replicas and MONITOR (S, O), masters (M), blocked
/// (b) and pub/sub (P) clients are never closed for idling. Our own CLIENT LIST is left out
/// too.
fn timeout_applies(c: &ClientEntry) -> bool {
    !c.flags.contains(['S', 'O', 'M', 'b', 'P']) && c.cmd != "client|list"
}

// ---- checks on Redis's own view -------------------------------------------------------

/// Every check on what Redis said: configuration, INFO, CLIENT LIST (None when it was
/// refused), the memory Redis can get at most, and its log's recent lines.
pub fn check_redis(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    clients: Option<&[ClientEntry]>,
    bound: Option<&MemoryBound>,
    log: Option<&LogSummary>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(check_restart(info, log));
    out.extend(check_timeout(cfg));
    out.extend(check_tcp_keepalive(cfg, clients));
    out.extend(check_output_buffer_limits(cfg, info));
    out.extend(check_maxmemory(cfg, info, bound));
    out.extend(check_memory_usage(cfg, info));
    out.extend(check_maxmemory_clients(cfg));
    out.extend(check_maxclients(info));
    if let Some(clients) = clients {
        out.extend(check_idle_clients(cfg, clients));
        out.extend(check_client_output_buffers(cfg, clients));
    }
    out.extend(check_closes(cfg, info, log));
    out
}

/// Started less than an hour ago: a restart closes every connection (Warning). The last
/// shutdown or crash line of its log before the start, when there is one, is evidence.
pub fn check_restart(info: &HashMap<String, String>, log: Option<&LogSummary>) -> Option<Finding> {
    let up = u64_of(info, "uptime_in_seconds")?;
    if up >= RESTART_WINDOW_S {
        return None;
    }
    let pid = info.get("process_id").map_or("?", String::as_str);
    let mut evidence = vec![format!(
        "INFO server: uptime_in_seconds:{up} (started {} ago), process_id:{pid}, run_id:{}",
        dur(up),
        info.get("run_id").map_or("?", String::as_str)
    )];
    if let Some(log) = log {
        if let Some(stop) = &log.last_stop {
            evidence.push(format!(
                "Redis log {}: the last stop before now: {}",
                log.path,
                clip(&stop.line, 300)
            ));
        }
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "Redis started {} ago (pid {pid}): its start closed every connection open before",
            dur(up)
        ),
        evidence,
        "If this start was not planned, find why Redis stopped: its log just before the start \
         (shutdown or crash report), the kernel log (OOM kill), the service manager \
         (systemctl status redis-server, journalctl -u redis-server). Clients must reconnect \
         and retry after a restart.",
    ))
}

/// `timeout` in (0, 300]: Warning (pools idle longer than that); above 300: Info.
pub fn check_timeout(cfg: &RedisConfig) -> Option<Finding> {
    let t = cfg.timeout.filter(|t| *t > 0)?;
    let severity = if t <= SHORT_TIMEOUT_S {
        Severity::Warning
    } else {
        Severity::Info
    };
    Some(Finding::new(
        severity,
        format!("timeout {t}: Redis closes clients idle longer than {t} s"),
        vec![format!(
            "CONFIG GET timeout: {t} (clients idle longer than {t}s are closed by Redis; pools \
             must validate or evict idle connections before that; pub/sub, blocked and replica \
             clients are exempt)"
        )],
        format!(
            "Make every connection pool evict idle connections before {t} s (an idle timeout \
             below {t} s) or validate them before use (PING on borrow); or, if nothing relies on \
             Redis dropping idle clients, set `timeout 0` (CONFIG SET timeout 0, and in redis.conf)."
        ),
    ))
}

/// `tcp-keepalive 0`: Warning. Clients idle for over 10 min are named as a likely symptom.
pub fn check_tcp_keepalive(cfg: &RedisConfig, clients: Option<&[ClientEntry]>) -> Option<Finding> {
    if cfg.tcp_keepalive != Some(0) {
        return None;
    }
    let mut evidence = vec![
        "CONFIG GET tcp-keepalive: 0 (Redis sends no TCP keepalive probes on client connections)"
            .to_string(),
    ];
    if let Some(clients) = clients {
        let long: Vec<&ClientEntry> = clients.iter().filter(|c| c.idle >= 600).collect();
        if let Some(max) = long.iter().map(|c| c.idle).max() {
            evidence.push(format!(
                "CLIENT LIST: {} of {} clients idle for more than 10 min (up to {}): with no \
                 keepalive, a peer that vanished keeps its connection open in Redis",
                long.len(),
                clients.len(),
                dur(max)
            ));
        }
    }
    Some(Finding::new(
        Severity::Warning,
        "tcp-keepalive 0: dead peers and middlebox idle timeouts go unnoticed",
        evidence,
        "Set `tcp-keepalive 300` (the default; CONFIG SET tcp-keepalive 300, and in redis.conf), \
         or lower than the idle timeout of any NAT, firewall or load balancer between the \
         clients and Redis, so that idle connections stay alive in them and dead peers are \
         detected.",
    ))
}

/// A pubsub or normal hard output buffer limit under 8 MiB: Warning.
pub fn check_output_buffer_limits(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (class, limit, who, default) in [
        (
            "pubsub",
            cfg.cobl_pubsub.as_ref(),
            "subscribers that fall behind by more than that are disconnected",
            "pubsub 32mb 8mb 60",
        ),
        (
            "normal",
            cfg.cobl_normal.as_ref(),
            "clients whose pending replies exceed that are disconnected",
            "normal 0 0 0",
        ),
    ] {
        let Some(l) = limit else { continue };
        if l.hard == 0 || l.hard >= SMALL_OUTPUT_LIMIT {
            continue;
        }
        let mut evidence = vec![format!(
            "CONFIG GET client-output-buffer-limit: {class} {} {} {} (hard limit {}, soft limit {} \
             for {} s)",
            l.hard,
            l.soft,
            l.soft_seconds,
            bytes(l.hard),
            bytes(l.soft),
            l.soft_seconds
        )];
        if let Some(max) = u64_of(info, "client_recent_max_output_buffer") {
            evidence.push(format!(
                "INFO clients: client_recent_max_output_buffer:{max} ({}, the largest output \
                 buffer of any client in the last seconds)",
                bytes(max)
            ));
        }
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "Small {class} output buffer limit (hard {}): {who}",
                bytes(l.hard)
            ),
            evidence,
            format!(
                "Raise the {class} limit (Redis's default is `{default}`): CONFIG SET \
                 client-output-buffer-limit \"{default}\", and in redis.conf; and make the \
                 clients read their replies promptly."
            ),
        ));
    }
    out
}

/// connected_clients at 90% of maxclients: Warning (new connections will be refused).
pub fn check_maxclients(info: &HashMap<String, String>) -> Option<Finding> {
    let connected = u64_of(info, "connected_clients")?;
    let max = u64_of(info, "maxclients").filter(|m| *m > 0)?;
    if (connected as f64) < MAXCLIENTS_SHARE * max as f64 {
        return None;
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{connected} of maxclients {max} connections in use: Redis refuses new connections at the limit"
        ),
        vec![format!(
            "INFO clients: connected_clients:{connected}, maxclients:{max}"
        )],
        "Cap the pools (connections per instance x instances), close leaked connections, or \
         raise maxclients (and the open-files limit).",
    ))
}

/// `timeout` > 0 and at least 20% of the clients it applies to idle for more than
/// timeout/2: Warning (Redis is about to close them).
pub fn check_idle_clients(cfg: &RedisConfig, clients: &[ClientEntry]) -> Option<Finding> {
    let t = cfg.timeout.filter(|t| *t > 0)?;
    let subject: Vec<&ClientEntry> = clients.iter().filter(|c| timeout_applies(c)).collect();
    let mut near: Vec<&ClientEntry> = subject
        .iter()
        .copied()
        .filter(|c| c.idle.saturating_mul(2) > t)
        .collect();
    if near.is_empty() || (near.len() as f64) < IDLE_SHARE * subject.len() as f64 {
        return None;
    }
    near.sort_by_key(|c| std::cmp::Reverse(c.idle));
    let mut evidence = vec![format!(
        "CLIENT LIST: {} of {} clients subject to timeout {t} have been idle for more than {} s \
         (up to {} s); pub/sub, blocked and replica clients are exempt",
        near.len(),
        subject.len(),
        t / 2,
        near[0].idle
    )];
    for c in near.iter().take(SAMPLES) {
        evidence.push(format!("CLIENT LIST: {} idle={}", describe(c), c.idle));
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{} of {} clients are idle for over half of timeout {t}: Redis closes them at {t} s",
            near.len(),
            subject.len()
        ),
        evidence,
        format!(
            "These connections sit idle in pools: make the pools evict idle connections before \
             {t} s or validate them before use; or set `timeout 0`."
        ),
    ))
}

/// A client whose omem is above half its class's hard limit: Warning.
pub fn check_client_output_buffers(cfg: &RedisConfig, clients: &[ClientEntry]) -> Option<Finding> {
    let mut risky: Vec<(&ClientEntry, &'static str, &BufferLimit)> = clients
        .iter()
        .filter_map(|c| {
            let class = ClientClass::of_flags(&c.flags).as_str();
            let l = cfg.limit_for(ClientClass::of_flags(&c.flags))?;
            (l.hard > 0 && c.omem as f64 > OMEM_SHARE * l.hard as f64).then_some((c, class, l))
        })
        .collect();
    if risky.is_empty() {
        return None;
    }
    risky.sort_by_key(|(c, _, l)| std::cmp::Reverse(c.omem as u128 * 1000 / l.hard as u128));
    let mut evidence = Vec::new();
    for (c, class, l) in risky.iter().take(5) {
        let mut s = format!(
            "CLIENT LIST: {} omem={} ({}) is {:.0}% of the {class} hard limit {}",
            describe(c),
            c.omem,
            bytes(c.omem),
            pct(c.omem, l.hard),
            bytes(l.hard)
        );
        if l.soft > 0 && c.omem > l.soft {
            let _ = write!(
                s,
                "; above the soft limit {}, which closes it after {} s",
                bytes(l.soft),
                l.soft_seconds
            );
        }
        evidence.push(s);
    }
    if risky.len() > 5 {
        evidence.push(format!(
            "CLIENT LIST: {} more such clients",
            risky.len() - 5
        ));
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "{} client(s) with an output buffer past half their class's hard limit: Redis \
             disconnects them at the limit",
            risky.len()
        ),
        evidence,
        "These clients read their replies too slowly or asked for very large ones: make \
         subscribers keep up (a consumer thread that only reads), fetch big values in pages \
         (SCAN, ranges) instead of at once; or raise client-output-buffer-limit for the class.",
    ))
}

/// Closes Redis counted (INFO stats, since start) or logged (its log, last 24 h): output and
/// query buffer limits, client evictions, refused connections: Warning; crashes: Critical.
pub fn check_closes(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    log: Option<&LogSummary>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let window = window_text(log.map_or(RECENT, |l| l.window));
    let log_evidence = |what: &str, count: &LogCount, path: &str| -> Vec<String> {
        if count.count == 0 {
            return Vec::new();
        }
        let mut ev = vec![format!(
            "Redis log {path}: {} {what} in the last {window}{}",
            count.count,
            if count.by_class.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = count
                    .by_class
                    .iter()
                    .map(|(class, n)| format!("{n} {class}"))
                    .collect();
                format!(" ({})", parts.join(", "))
            }
        )];
        for e in count.last.iter().rev() {
            ev.push(format!("Redis log {path}: {}", clip(&e.line, 400)));
        }
        ev
    };
    let empty = LogCount::default();
    let path = log.map_or("", |l| l.path.as_str());

    let kinds: [(&str, &str, Option<&LogCount>, &str, String); 3] = [
        (
            "client_output_buffer_limit_disconnections",
            "client(s) closed for overcoming their output buffer limit",
            log.map(|l| &l.output_buffer),
            "for exceeding their output buffer limit",
            "Find the clients in the log lines (name, addr, flags, cmd): subscribers that fall \
             behind must read faster or get more room (client-output-buffer-limit), normal \
             clients must not fetch huge replies at once (SCAN or ranges instead of KEYS or \
             whole big keys)."
                .to_string(),
        ),
        (
            "client_query_buffer_limit_disconnections",
            "client(s) closed for reaching the max query buffer length",
            log.map(|l| &l.query_buffer),
            "for reaching the query buffer limit",
            format!(
                "A client sent a command or pipeline bigger than client-query-buffer-limit ({}), \
                 or a stream that is not RESP: find it in the log lines; raise the limit only if \
                 such commands are intended.",
                cfg.query_buffer_limit.map_or("?".to_string(), bytes)
            ),
        ),
        (
            "evicted_clients",
            "client(s) evicted (maxmemory-clients)",
            log.map(|l| &l.evictions),
            "to keep client memory under maxmemory-clients",
            format!(
                "All clients' buffers together exceeded maxmemory-clients ({}): find the clients \
                 with big buffers (CLIENT LIST tot-mem, qbuf, omem), or raise maxmemory-clients.",
                cfg.maxmemory_clients.as_deref().unwrap_or("?")
            ),
        ),
    ];
    for (counter, logged_what, logged, why, fix) in kinds {
        let counted = u64_of(info, counter).unwrap_or(0);
        let logged = logged.unwrap_or(&empty);
        if counted == 0 && logged.count == 0 {
            continue;
        }
        let title = if logged.count > 0 {
            format!(
                "Redis closed {} client(s) {why} in the last {window}",
                logged.count
            )
        } else {
            format!("Redis closed {counted} client(s) {why} since it started")
        };
        let mut evidence = Vec::new();
        if counted > 0 {
            evidence.push(format!("INFO stats: {counter}:{counted} (since the start)"));
        }
        evidence.extend(log_evidence(logged_what, logged, path));
        out.push(Finding::new(Severity::Warning, title, evidence, fix));
    }

    if let Some(rejected) = u64_of(info, "rejected_connections").filter(|n| *n > 0) {
        let max = info.get("maxclients").map_or("?", String::as_str);
        out.push(Finding::new(
            Severity::Warning,
            format!("Redis refused {rejected} connection(s) since it started: maxclients ({max}) reached"),
            vec![format!("INFO stats: rejected_connections:{rejected}, INFO clients: maxclients:{max}")],
            "Clients opened more connections than maxclients allows: cap the pools \
             (connections per instance x instances), close leaked connections, or raise \
             maxclients (and the open-files limit).",
        ));
    }

    if let Some(log) = log {
        if log.crashes.count > 0 {
            out.push(Finding::new(
                Severity::Critical,
                format!(
                    "Redis crashed {} time(s) in the last {window}",
                    log.crashes.count
                ),
                log_evidence("crash reports", &log.crashes, &log.path),
                "Read the bug report in the log after that line (the signal or failed assertion, \
                 the stack trace, the last command); upgrade if it is a known bug. Every crash \
                 closes every connection.",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::test_support::*;
    use crate::sources::redis::{parse_config, parse_info};

    // ---- Redis's view, on the redis_client fixtures (redis-server 7.0.15) ---------------

    #[test]
    fn diagnose_fixture_baseline() {
        // timeout 0, tcp-keepalive 300, pubsub 32mb 8mb 60, maxmemory 1gb allkeys-lru,
        // maxmemory-clients 10%, up 36 s, 1.3 MB used (fragmentation 9.64 on so little is
        // no finding), nobody idle, no buffers.
        let cfg = parse_config(&config_pairs());
        let info = parse_info(&fixture("info-7.0.15.txt"));
        let clients = clients();
        let f = check_redis(&cfg, &info, Some(&clients), None, None);
        assert_eq!(f.len(), 2, "{:#?}", titles(&f));
        let restart = find(&f, "Redis started 36s ago (pid 17840)");
        assert_eq!(restart.severity, Severity::Warning);
        assert!(restart.evidence[0].starts_with("INFO server: uptime_in_seconds:36"));
        assert_eq!(find(&f, "maxmemory-clients 10%").severity, Severity::Info);

        let up = info_with(&[("uptime_in_seconds", "3600")]);
        assert!(check_restart(&up, None).is_none());
    }

    #[test]
    fn diagnose_risky_config() {
        let cfg = config_with(&[
            ("timeout", "60"),
            ("tcp-keepalive", "0"),
            (
                "client-output-buffer-limit",
                "normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 524288 60",
            ),
        ]);
        let info = info_with(&[("uptime_in_seconds", "864000")]);
        let f = check_redis(&cfg, &info, Some(&clients()), None, None);
        assert_eq!(f.len(), 4, "{:#?}", titles(&f));

        let t = find(&f, "timeout 60");
        assert_eq!(t.severity, Severity::Warning);
        assert!(
            t.evidence[0].contains(
                "clients idle longer than 60s are closed by Redis; pools must validate or \
                 evict idle connections before that"
            ),
            "{t:?}"
        );
        assert!(t.fix.contains("timeout 0"));
        let k = find(&f, "tcp-keepalive 0");
        assert_eq!(k.severity, Severity::Warning);
        assert!(
            k.title
                .contains("dead peers and middlebox idle timeouts go unnoticed")
        );
        let p = find(&f, "Small pubsub output buffer limit (hard 1 MiB)");
        assert_eq!(p.severity, Severity::Warning);
        assert!(p.evidence[0].starts_with("CONFIG GET client-output-buffer-limit: pubsub 1048576"));
        assert!(p.fix.contains("pubsub 32mb 8mb 60"));

        // Boundaries: 300 is short, 301 is Info; the default pubsub limit and a normal
        // limit of 8 MiB are not small; a normal limit of 4 MiB is.
        let t300 = check_timeout(&config_with(&[("timeout", "300")])).unwrap();
        assert_eq!(t300.severity, Severity::Warning);
        let t301 = check_timeout(&config_with(&[("timeout", "301")])).unwrap();
        assert_eq!(t301.severity, Severity::Info);
        assert!(check_timeout(&config_with(&[("timeout", "0")])).is_none());
        let cobl = |v: &str| {
            check_output_buffer_limits(
                &config_with(&[("client-output-buffer-limit", v)]),
                &HashMap::new(),
            )
        };
        assert!(cobl("normal 8mb 0 0 pubsub 32mb 8mb 60").is_empty());
        let n = cobl("normal 4mb 2mb 10 pubsub 8mb 8mb 60");
        assert_eq!(n.len(), 1);
        assert!(
            n[0].title
                .starts_with("Small normal output buffer limit (hard 4 MiB)")
        );
        assert!(check_tcp_keepalive(&config_with(&[("tcp-keepalive", "60")]), None).is_none());
    }

    #[test]
    fn diagnose_keepalive_names_long_idle_clients() {
        let cfg = config_with(&[("tcp-keepalive", "0")]);
        let mut list = clients();
        client_mut(&mut list, 33).idle = 7200;
        let f = check_tcp_keepalive(&cfg, Some(&list)).unwrap();
        assert_eq!(f.evidence.len(), 2);
        assert!(
            f.evidence[1]
                .starts_with("CLIENT LIST: 1 of 6 clients idle for more than 10 min (up to 2h)"),
            "{f:?}"
        );
    }

    #[test]
    fn diagnose_clients_idle_near_timeout() {
        let cfg = config_with(&[("timeout", "60")]);
        let mut list = clients();
        // Subject to the timeout: 31, 33, 34 (30 is a replica, 32 pub/sub, 35 is us).
        assert!(check_idle_clients(&cfg, &list).is_none());
        client_mut(&mut list, 30).idle = 59;
        client_mut(&mut list, 32).idle = 59;
        assert!(check_idle_clients(&cfg, &list).is_none(), "exempt clients");
        let mut blocked = list.clone();
        client_mut(&mut blocked, 31).flags = "b".into();
        client_mut(&mut blocked, 31).idle = 59;
        assert!(
            check_idle_clients(&cfg, &blocked).is_none(),
            "blocked clients"
        );

        client_mut(&mut list, 31).idle = 45;
        let f = check_idle_clients(&cfg, &list).expect("1 of 3 is >= 20%");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .starts_with("1 of 3 clients are idle for over half of timeout 60"),
            "{f:?}"
        );
        assert!(f.evidence[0].contains("idle for more than 30 s (up to 45 s)"));
        assert!(
            f.evidence[1].contains("name=billing-worker-1") && f.evidence[1].ends_with("idle=45")
        );
        // Exactly timeout/2 is not over half.
        client_mut(&mut list, 31).idle = 30;
        assert!(check_idle_clients(&cfg, &list).is_none());
        // No timeout, no finding.
        client_mut(&mut list, 31).idle = 50_000;
        assert!(check_idle_clients(&config_with(&[("timeout", "0")]), &list).is_none());
    }

    #[test]
    fn diagnose_client_output_buffers() {
        let cfg = parse_config(&config_pairs());
        let mut list = clients();
        assert!(check_client_output_buffers(&cfg, &list).is_none());
        // Normal clients have no hard limit here (normal 0 0 0): never near it.
        client_mut(&mut list, 31).omem = 1 << 30;
        assert!(check_client_output_buffers(&cfg, &list).is_none());
        // The subscriber at 20 MiB of pubsub 32mb 8mb 60; the replica at 100 MiB of 256 MiB.
        client_mut(&mut list, 32).omem = 20 << 20;
        client_mut(&mut list, 32).name = "feed\x1b[2J".into();
        client_mut(&mut list, 30).omem = 100 << 20;
        let f = check_client_output_buffers(&cfg, &list).expect("subscriber near its limit");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .starts_with("1 client(s) with an output buffer past half"),
            "{f:?}"
        );
        assert!(
            f.evidence[0].contains("id=32")
                && f.evidence[0].contains("is 62% of the pubsub hard limit 32 MiB")
                && f.evidence[0].contains("above the soft limit 8 MiB, which closes it after 60 s"),
            "{f:?}"
        );
        client_mut(&mut list, 30).omem = 200 << 20;
        let f = check_client_output_buffers(&cfg, &list).unwrap();
        assert!(f.title.starts_with("2 client(s)"));
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("78% of the replica hard limit 256 MiB"))
        );
    }

    #[test]
    fn diagnose_maxclients_and_counters() {
        let cfg = parse_config(&config_pairs());
        let info = info_with(&[("connected_clients", "9500"), ("maxclients", "10000")]);
        let f = check_maxclients(&info).expect("95% of maxclients");
        assert_eq!(f.severity, Severity::Warning);
        assert!(check_maxclients(&info_with(&[])).is_none());

        let info = info_with(&[
            ("client_output_buffer_limit_disconnections", "3"),
            ("rejected_connections", "2"),
        ]);
        let f = check_closes(&cfg, &info, None);
        assert_eq!(f.len(), 2, "{:#?}", titles(&f));
        let obl = find(
            &f,
            "Redis closed 3 client(s) for exceeding their output buffer limit since it started",
        );
        assert_eq!(
            obl.evidence,
            ["INFO stats: client_output_buffer_limit_disconnections:3 (since the start)"]
        );
        find(
            &f,
            "Redis refused 2 connection(s) since it started: maxclients (10000) reached",
        );
        let f = check_closes(&cfg, &info_with(&[("evicted_clients", "1")]), None);
        assert!(f[0].title.contains("maxmemory-clients"));
        assert!(f[0].fix.contains("maxmemory-clients (10%)"));
    }
}
