//! INFO counters across a poll window: an increase of `evicted_clients`, the buffer
//! limit disconnections or CLIENT KILL calls explains a Redis close nothing else did,
//! when it is the only counter that rose and by as many as there are such closes.
use std::time::SystemTime;

use super::{Evidence, Source, Verdict};
use crate::cause::Cause;
use crate::time::rfc3339_millis;

/// Counter increases Redis reported between two polls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterWindow {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub evicted_clients: u64,
    pub output_buffer_disconnections: Option<u64>,
    pub query_buffer_disconnections: Option<u64>,
    pub client_kill_calls: u64,
}

fn info(text: String) -> Evidence {
    Evidence::new(Source::Info, text)
}

/// Applies counter increases of one poll window to the Redis closes in it that nothing
/// else explained. A counter attributes only when it alone rose, by exactly as many as
/// there are unexplained closes: otherwise which close it explains is a guess.
pub fn apply_counters(window: &CounterWindow, verdicts: &mut [&mut Verdict], killer: Option<&str>) {
    // Closes whose Redis code path the uprobes saw are settled: a counter says nothing
    // more about them (a QUIT in the same second as a CLIENT KILL stays a QUIT).
    let open: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.cause == Cause::RedisCloseUnknown && !v.seen_by_uprobe())
        .map(|(i, _)| i)
        .collect();
    // Increases already explained by closes of that cause in this window.
    let already = |c: Cause| verdicts.iter().filter(|v| v.cause == c).count() as u64;
    let rose: Vec<(Cause, u64, &str)> = [
        (
            Cause::RedisClientEviction,
            window.evicted_clients,
            "evicted_clients",
        ),
        (
            Cause::RedisOutputBufferLimit,
            window.output_buffer_disconnections.unwrap_or(0),
            "client_output_buffer_limit_disconnections",
        ),
        (
            Cause::RedisQueryBufferLimit,
            window.query_buffer_disconnections.unwrap_or(0),
            "client_query_buffer_limit_disconnections",
        ),
        (
            Cause::RedisClientKill,
            window.client_kill_calls,
            "cmdstat_client|kill calls",
        ),
    ]
    .into_iter()
    .map(|(c, d, n)| (c, d.saturating_sub(already(c)), n))
    .filter(|(_, d, _)| *d > 0)
    .collect();
    let span = match (window.from, window.to) {
        (Some(a), Some(b)) => format!("between {} and {}", rfc3339_millis(a), rfc3339_millis(b)),
        _ => "around the close".into(),
    };
    let explained_by_snapshot = |v: &Verdict| v.cause == Cause::RedisIdleTimeout;
    if open.is_empty() {
        // Every close has an explanation, yet a counter rose: say so where the
        // explanation is an inference, so that a reader can weigh it.
        for v in verdicts.iter_mut().filter(|v| explained_by_snapshot(v)) {
            for (_, d, n) in &rose {
                v.evidence.push(info(format!(
                    "INFO {span}: {n} also rose by {d}, with no unexplained close to match it"
                )));
            }
        }
        return;
    }
    let [(cause, delta, counter)] = rose.as_slice() else {
        if !rose.is_empty() {
            let list: Vec<String> = rose.iter().map(|(_, d, n)| format!("{n} +{d}")).collect();
            for &i in &open {
                verdicts[i].evidence.push(info(format!(
                    "INFO {span}: {} rose together: not enough to tell which explains this close",
                    list.join(", ")
                )));
            }
        }
        return;
    };
    if *delta as usize != open.len() {
        for &i in &open {
            verdicts[i].evidence.push(info(format!(
                "INFO {span}: {counter} rose by {delta} while {} Redis closes had no other \
                 explanation: not attributed",
                open.len()
            )));
        }
        return;
    }
    for &i in &open {
        let v = &mut *verdicts[i];
        v.cause = *cause;
        v.evidence.push(info(format!(
            "INFO {span}: {counter} rose by {delta}, matching the {} Redis close(s) nothing else explains",
            open.len()
        )));
        if *cause == Cause::RedisClientKill
            && let Some(k) = killer
        {
            v.killer = Some(k.to_string());
            v.evidence.push(Evidence::new(
                Source::ClientList,
                format!("CLIENT LIST: the connection that ran CLIENT KILL: {k}"),
            ));
        }
    }
}
