//! Why Redis closed a connection: its own decision seen by the uprobes, its process
//! ending, its log, and its last CLIENT LIST entry against its configuration.
use std::time::{Duration, SystemTime};

use super::{Evidence, Facts, Source, Verdict};
use crate::cause::Cause;
use crate::kernel::assemble::KernelClose;
use crate::schema::{ClientClass, OutputBufferLimit, ProcessEvent, ProcessEventKind};
use crate::sources::redis::{ClientEntry, RedisConfig};
use crate::sources::redis_log::{LogEvent, LogKind};
use crate::time::{rfc3339_millis, secs_between};

/// The server end closed it and the uprobes did not settle why (see
/// `code_paths`, which runs first). Why did Redis close it?
pub(super) fn redis_close(c: &KernelClose, ev: &Facts<'_>, mut out: Vec<Evidence>) -> Verdict {
    let close = c.time;
    // The Redis process itself ending explains every close around it.
    if let Some(v) = process_end(c, ev, &mut out) {
        return v;
    }
    // Redis's log names the client's address on the closes it logs.
    if let Some(v) = from_log(c, ev, &mut out) {
        return v;
    }
    // The last CLIENT LIST entry of the connection.
    if let Some((entry, seen)) = ev.client.filter(|(_, seen)| *seen <= close) {
        let class = ClientClass::of_flags(&entry.flags);
        out.push(client_list_line(entry, seen));
        if let Some(cfg) = ev.config {
            if let Some(limit) = cfg.limit_for(class)
                && limit.hard > 0
                && entry.omem >= limit.hard
            {
                out.push(Evidence::new(
                    Source::Config,
                    format!(
                        "its output buffer ({} bytes) had reached the {} hard limit ({} bytes)",
                        entry.omem,
                        class.as_str(),
                        limit.hard
                    ),
                ));
                let mut v = Verdict::new(Cause::RedisOutputBufferLimit, out);
                v.client_class = Some(class);
                return v;
            }
            if let Some(q) = cfg.query_buffer_limit
                && q > 0
                && entry.qbuf >= q
            {
                out.push(Evidence::new(
                    Source::Config,
                    format!(
                        "its query buffer ({} bytes) had reached client-query-buffer-limit ({q})",
                        entry.qbuf
                    ),
                ));
                return Verdict::new(Cause::RedisQueryBufferLimit, out);
            }
            if let Some(v) = idle_timeout(entry, seen, close, cfg, ev.timeout_changed, &mut out) {
                return v;
            }
        }
    } else if ev.redis_view.is_ok() {
        out.push(Evidence::new(
            Source::ClientList,
            match ev.first_client_list {
                Some(first) if first <= close => {
                    "CLIENT LIST: no entry was seen for this connection (it lived between two snapshots)"
                }
                _ => "CLIENT LIST: not yet taken when it closed",
            },
        ));
    }
    if let Err(why) = ev.redis_view {
        out.push(Evidence::new(
            Source::Unavailable,
            format!("Redis's own view was not available: {why}"),
        ));
    }
    if let Err(why) = ev.log_view {
        out.push(Evidence::new(
            Source::Unavailable,
            format!("Redis's log was not available: {why}"),
        ));
    }
    Verdict::new(Cause::RedisCloseUnknown, out)
}

/// "CLIENT LIST at T: id=.. name=.. flags=.. ...".
pub(super) fn client_list_line(e: &ClientEntry, seen: SystemTime) -> Evidence {
    let name = if e.name.is_empty() {
        String::new()
    } else {
        format!(" name={}", e.name)
    };
    Evidence::new(
        Source::ClientList,
        format!(
            "CLIENT LIST at {}: id={}{name} flags={} age={}s idle={}s omem={} qbuf={} cmd={}",
            rfc3339_millis(seen),
            e.id,
            e.flags,
            e.age,
            e.idle,
            e.omem,
            e.qbuf,
            e.cmd
        ),
    )
}

/// Redis's serverCron frees a client once `now - lastinteraction > timeout`, checking
/// every client about once a second (server.c clientsCronHandleTimeout). From the idle
/// time CLIENT LIST reported, the close is predicted to the second; a close at that time
/// is the timeout, any other time is not. A `timeout` set at run time (`changed`: after
/// one poll, before the next) fires at once for every client already idle longer: then
/// the close is predicted within that window.
fn idle_timeout(
    e: &ClientEntry,
    seen: SystemTime,
    close: SystemTime,
    cfg: &RedisConfig,
    changed: Option<(SystemTime, SystemTime)>,
    out: &mut Vec<Evidence>,
) -> Option<Verdict> {
    let timeout = cfg.timeout.filter(|t| *t > 0)?;
    // Exempt from the timeout: replicas, masters, blocked and pub/sub clients.
    if e.flags.contains(['S', 'M', 'P', 'b']) {
        return None;
    }
    // Redis counts in whole seconds: idle = unixtime - lastinteraction, and the client
    // is freed once now - lastinteraction > timeout, so never before `seen - idle +
    // timeout` (activity after the snapshot only makes it later), and at most about
    // 2 s after it (the +1 of `>`, plus serverCron visiting each client once a second).
    let last_activity = seen.checked_sub(Duration::from_secs(e.idle))?;
    let predicted = last_activity.checked_add(Duration::from_secs(timeout))?;
    // Set at run time after the client had been idle that long: it fires once serverCron
    // sees the new value, within the window between the two polls.
    let (earliest, latest, set_at_run_time) = match changed {
        Some((from, to)) if from > predicted => (from, to, true),
        _ => (predicted, predicted, false),
    };
    let off = secs_between(earliest, close);
    let off_latest = secs_between(latest, close);
    if off >= -0.05 && off_latest <= 2.5 {
        out.push(Evidence::new(
            Source::Config,
            if set_at_run_time {
                format!(
                    "config: timeout was set to {timeout}s at run time, between {} and {}; the \
                     client had been idle since {} ({}s at that snapshot), past the new timeout, \
                     and the close came {off:+.1}s after the earliest it could be set",
                    rfc3339_millis(earliest),
                    rfc3339_millis(latest),
                    rfc3339_millis(last_activity),
                    e.idle
                )
            } else {
                format!(
                    "config: timeout is {timeout}s; idle {}s at that snapshot puts the idle timeout at {}, \
                     and the close came {off:+.1}s from it",
                    e.idle,
                    rfc3339_millis(predicted)
                )
            },
        ));
        let mut v = Verdict::new(Cause::RedisIdleTimeout, std::mem::take(out));
        v.settings.timeout = Some(timeout);
        return Some(v);
    }
    out.push(Evidence::new(
        Source::Config,
        format!(
            "config: timeout is {timeout}s, but the close came {off:+.1}s from when that timeout \
             would have fired: not the idle timeout (or the client was active after the last snapshot)"
        ),
    ));
    None
}

/// Matches Redis log lines for this client's address within a few seconds of the close.
pub(super) fn from_log(
    c: &KernelClose,
    ev: &Facts<'_>,
    out: &mut Vec<Evidence>,
) -> Option<Verdict> {
    let near = |t: Option<SystemTime>| t.is_some_and(|t| secs_between(t, c.time).abs() <= 5.0);
    let line = ev
        .log
        .iter()
        .filter(|l| l.client_addr == Some(c.client) && near(l.time))
        .find(|l| {
            matches!(
                l.kind,
                LogKind::OutputBufferLimit
                    | LogKind::QueryBufferLimit
                    | LogKind::ClientEviction
                    | LogKind::ProtocolError
            )
        })?;
    out.push(log_line(line));
    let mut v = match line.kind {
        LogKind::OutputBufferLimit => {
            let mut v = Verdict::new(Cause::RedisOutputBufferLimit, std::mem::take(out));
            v.client_class = Some(ClientClass::of_flags(
                line.client_flags.as_deref().unwrap_or(""),
            ));
            v
        }
        LogKind::QueryBufferLimit => {
            Verdict::new(Cause::RedisQueryBufferLimit, std::mem::take(out))
        }
        LogKind::ClientEviction => Verdict::new(Cause::RedisClientEviction, std::mem::take(out)),
        _ => Verdict::new(Cause::RedisProtocolError, std::mem::take(out)),
    };
    v.settings.logged_client_name = line.client_name.clone();
    if let (Some(cfg), Some(class)) = (ev.config, v.client_class)
        && let Some(l) = cfg.limit_for(class)
    {
        v.evidence.push(Evidence::new(
            Source::Config,
            format!(
                "config: client-output-buffer-limit {} {} {} {}",
                class.as_str(),
                l.hard,
                l.soft,
                l.soft_seconds
            ),
        ));
        v.settings.output_buffer_limit = Some(OutputBufferLimit {
            class,
            hard: l.hard,
            soft: l.soft,
            soft_seconds: l.soft_seconds,
        });
    }
    Some(v)
}

fn log_line(l: &LogEvent) -> Evidence {
    Evidence::new(Source::RedisLog, format!("Redis log: {}", l.line))
}

const OOM_PROBE: &str = "oom:mark_victim";
const SIGNAL_PROBE: &str = "signal:signal_generate";

/// One sentence per probe of `probes` that this capture runs without: what is missing,
/// why, and what it costs here.
fn missing_probe_evidence(ev: &Facts<'_>, probes: &[&str]) -> Vec<Evidence> {
    probes
        .iter()
        .filter_map(|p| ev.missing(p))
        .map(|m| {
            Evidence::new(
                Source::Unavailable,
                format!(
                    "kernel: {} was not running ({}): {}, so the cause of this exit is left unknown",
                    m.probe,
                    m.why.as_deref().unwrap_or("unavailable on this kernel"),
                    m.cost.as_deref().unwrap_or("its records are missing")
                ),
            )
        })
        .collect()
}

/// redis-server died or exited around the close, and the close came from its own exit.
fn process_end(c: &KernelClose, ev: &Facts<'_>, out: &mut Vec<Evidence>) -> Option<Verdict> {
    let close = c.time;
    // Which Redis process: the closing task when the kernel names it, else any watched.
    let pids: Vec<u32> = match c.pid {
        Some(p) if ev.redis_pids.contains(&p) => vec![p],
        Some(_) => return None,
        None => ev.redis_pids.to_vec(),
    };
    let since = |e: &ProcessEvent, t: SystemTime| e.time.map(|et| secs_between(et, t));
    // The exit must come before the close (the kernel closes a dying process's sockets
    // after sched_process_exit) or within a second after it.
    let exit = ev.proc_events.iter().find(|e| {
        pids.contains(&e.pid)
            && e.event == ProcessEventKind::Exit
            && since(e, close).is_some_and(|s| (-1.0..=10.0).contains(&s))
    })?;
    let (pid, exit_time) = (exit.pid, exit.time?);
    let before_exit = |e: &&ProcessEvent| {
        e.pid == pid && since(e, exit_time).is_some_and(|s| (0.0..=30.0).contains(&s))
    };
    let kernel = |text: String| Evidence::new(Source::Kernel, text);
    out.push(kernel(format!(
        "kernel: redis-server (pid {pid}) exited at {}",
        rfc3339_millis(exit_time)
    )));
    if ev
        .proc_events
        .iter()
        .filter(before_exit)
        .any(|e| e.event == ProcessEventKind::OomKill)
    {
        out.push(kernel(format!(
            "kernel: the OOM killer chose redis-server (pid {pid}) as its victim"
        )));
        return Some(Verdict::new(Cause::RedisOomKilled, std::mem::take(out)));
    }
    let signal = ev
        .proc_events
        .iter()
        .filter(before_exit)
        .filter(|e| e.event == ProcessEventKind::Signal)
        .find_map(|e| e.signal.as_ref());
    let crash_log = ev
        .log
        .iter()
        .find(|l| matches!(l.kind, LogKind::Crash { .. }) && l.pid.is_none_or(|p| p == pid));
    let shutdown_log = ev.log.iter().find(|l| {
        matches!(
            l.kind,
            LogKind::ShutdownRequested { .. } | LogKind::ReadyToExit
        ) && l.pid.is_none_or(|p| p == pid)
    });
    match signal.map(|s| (s.number, s)) {
        // SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT: a crash, whoever raised it.
        Some((sig @ (4 | 6 | 7 | 8 | 11), s)) => {
            out.push(kernel(format!(
                "kernel: {} ({sig}) was sent to redis-server ({}, by {} pid {})",
                s.name, s.origin, s.sender.comm, s.sender.pid
            )));
            if let Some(l) = crash_log {
                out.push(log_line(l));
            }
            Some(Verdict::new(Cause::RedisCrashed, std::mem::take(out)))
        }
        Some((sig @ (2 | 15), s)) => {
            out.push(kernel(format!(
                "kernel: {} ({sig}) from {} (pid {}): Redis shuts down gracefully on it",
                s.name, s.sender.comm, s.sender.pid
            )));
            if let Some(l) = shutdown_log {
                out.push(log_line(l));
            }
            Some(Verdict::new(Cause::RedisShutdown, std::mem::take(out)))
        }
        // The OOM killer sends SIGKILL from the kernel (SEND_SIG_PRIV: si_code SI_KERNEL)
        // in the allocating task, Redis's or another's. Without the OOM probe that SIGKILL
        // cannot be told from other kernel kills: never name a killer or a shutdown then.
        Some((9, s)) if s.origin == "kernel" && ev.missing(OOM_PROBE).is_some() => {
            out.push(kernel(format!(
                "kernel: SIGKILL (9) was sent to redis-server by the kernel (in {} pid {}), \
                 as the OOM killer does",
                s.sender.comm, s.sender.pid
            )));
            out.extend(missing_probe_evidence(ev, &[OOM_PROBE]));
            Some(Verdict::new(Cause::RedisCloseUnknown, std::mem::take(out)))
        }
        Some((sig, s)) if s.sender.pid != pid => {
            out.push(kernel(format!(
                "kernel: {} ({sig}) was sent to redis-server by {} (pid {}, {})",
                s.name, s.sender.comm, s.sender.pid, s.origin
            )));
            let mut v = Verdict::new(Cause::RedisKilled, std::mem::take(out));
            v.killer = Some(format!("{} (pid {})", s.sender.comm, s.sender.pid));
            Some(v)
        }
        _ => {
            if let Some(l) = crash_log {
                out.push(log_line(l));
                return Some(Verdict::new(Cause::RedisCrashed, std::mem::take(out)));
            }
            if let Some(l) = shutdown_log {
                out.push(log_line(l));
                return Some(Verdict::new(Cause::RedisShutdown, std::mem::take(out)));
            }
            // A SIGKILL that Redis (or the kernel in its context) sent itself: not a
            // SHUTDOWN, whatever else is missing.
            if let Some(s) = signal.filter(|s| s.number == 9) {
                out.push(kernel(format!(
                    "kernel: SIGKILL (9) was sent to redis-server from its own context ({}), \
                     not by another process",
                    s.origin
                )));
                out.extend(missing_probe_evidence(ev, &[OOM_PROBE]));
                return Some(Verdict::new(Cause::RedisCloseUnknown, std::mem::take(out)));
            }
            // "No signal and no OOM kill" proves a SHUTDOWN only where the probes that
            // would have seen them ran.
            let missing = missing_probe_evidence(ev, &[OOM_PROBE, SIGNAL_PROBE]);
            if !missing.is_empty() {
                out.push(kernel(
                    "kernel: no record of a fatal signal or an OOM kill before the exit, \
                     but this kernel could not run every probe that records them"
                        .into(),
                ));
                out.extend(missing);
                return Some(Verdict::new(Cause::RedisCloseUnknown, std::mem::take(out)));
            }
            out.push(kernel(
                "kernel: no fatal signal and no OOM kill preceded the exit: \
                 Redis exited on its own (SHUTDOWN)"
                    .into(),
            ));
            Some(Verdict::new(Cause::RedisShutdown, std::mem::take(out)))
        }
    }
}
