//! What the uprobes on redis-server's freeClient and freeClientAsync say: the function
//! that decided to free the client, named from redis-server's own symbols, and what it
//! means. Function names differ between Redis 6.0 to 8.x and Valkey 7.2 to 9.x; each
//! name here is one those versions' sources use (docs/compatibility.md).
use super::redis::{client_list_line, from_log};
use super::{Evidence, Facts, Source, Verdict};
use crate::cause::Cause;
use crate::kernel::assemble::KernelClose;
use crate::schema::{ClientClass, Side};

/// What a deciding function says about the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Redis closes there for one reason only.
    Settles(&'static str, Cause),
    /// Redis closes there for one of these reasons: other evidence (its log line, the
    /// client's flags) must say which.
    OneOf(&'static str, &'static [Cause]),
    /// Frees a client after its last reply: QUIT, a protocol error, a write error.
    AfterReply,
}

/// What a deciding function means, in an operator's words. `direct`: it called
/// freeClient itself (not freeClientAsync).
pub fn meaning(func: &str, direct: bool) -> Option<Meaning> {
    use Cause::*;
    use Meaning::*;
    Some(match func {
        "clientsCronHandleTimeout" => {
            Settles("its idle-timeout check (serverCron)", RedisIdleTimeout)
        }
        // LTO (Redis 8.2) inlines clientsCronHandleTimeout here. Its direct free is the
        // idle timeout; the output buffer check it also runs frees asynchronously.
        "clientsCronRunClient" | "clientsCron" if direct => Settles(
            "its idle-timeout check (serverCron; clientsCronHandleTimeout inlined in this build)",
            RedisIdleTimeout,
        ),
        "clientsCronRunClient" | "clientsCron" => OneOf(
            "its per-client cron checks (idle timeout, output buffer soft limit)",
            &[RedisIdleTimeout, RedisOutputBufferLimit],
        ),
        "closeClientOnOutputBufferLimitReached" => {
            Settles("its output buffer limit check", RedisOutputBufferLimit)
        }
        "clientCommand" | "clientKillCommand" => Settles("CLIENT KILL", RedisClientKill),
        "evictClients" => Settles(
            "client eviction under maxmemory-clients",
            RedisClientEviction,
        ),
        // Valkey 8+.
        "handleQbLimitReached" => Settles("its query buffer limit check", RedisQueryBufferLimit),
        // Redis ≤ 7: the read path frees on the query-buffer limit, a protocol error it
        // cannot answer, or a read of a closed connection; the last never comes first
        // (the peer's FIN or RST would have), and the client's flags or the log tell
        // the other two apart.
        "readQueryFromClient" | "processInputBuffer" => OneOf(
            "its read path (query buffer limit, or a request it cannot parse)",
            &[RedisQueryBufferLimit, RedisProtocolError],
        ),
        // Redis 8: the main thread handles a read error its I/O thread or reader
        // flagged: the query-buffer limit, an oversized or malformed request.
        "handleClientReadError" | "processClientsFromIOThread" => OneOf(
            "its read-error handling (query buffer limit, or a request it cannot parse)",
            &[RedisQueryBufferLimit, RedisProtocolError],
        ),
        "writeToClient"
        | "_writeToClient"
        | "handleClientsWithPendingWrites"
        | "sendReplyToClient"
        | "handleClientsWithPendingWritesUsingThreads"
        | "postWriteToClient"
        | "writeToReplica" => AfterReply,
        _ => return None,
    })
}

/// Functions that only pass a free on: the decider is their caller.
pub fn passes_through(func: &str) -> bool {
    matches!(
        func,
        "freeClient" | "freeClientAsync" | "freeClientOrCloseLater"
    )
}

/// The class Redis's own `getClientType` gives the client (master first, then a
/// replica that is not a MONITOR, then pub/sub), as output-buffer limits use it: a
/// master's limit class is normal.
fn limit_class(flags: &[&str]) -> ClientClass {
    if flags.contains(&"master") {
        ClientClass::Normal
    } else if flags.contains(&"replica") && !flags.contains(&"monitor") {
        ClientClass::Replica
    } else if flags.contains(&"pubsub") {
        ClientClass::Pubsub
    } else {
        ClientClass::Normal
    }
}

/// The verdict of Redis's own code path, when it settles the cause; otherwise what it
/// says goes into `out` for the other rules.
pub(super) fn from_code_path(
    c: &KernelClose,
    ev: &Facts<'_>,
    out: &mut Vec<Evidence>,
) -> Option<Verdict> {
    let p = ev.code_path?;
    let flags: Vec<&str> = p
        .client_flags
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let direct = p.freed_from == p.decided_in;
    let via = p
        .via
        .as_deref()
        .map(|v| format!(" (through {v}, one frame down)"))
        .unwrap_or_default();
    let how = if direct {
        format!("freed it from {}{via}", p.decided_in)
    } else {
        format!(
            "decided in {}{via} and freed it later from {}",
            p.decided_in, p.freed_from
        )
    };
    let flag_note = if flags.is_empty() {
        String::new()
    } else {
        format!(" (client flags: {})", flags.join(", "))
    };
    let uprobe = |text: String| Evidence::new(Source::Uprobe, text);
    let protocol_error = flags.contains(&"protocol_error");
    let (what, cause) = match meaning(&p.decided_in, direct) {
        Some(Meaning::Settles(what, cause)) => (what, cause),
        Some(Meaning::OneOf(what, causes)) => {
            out.push(uprobe(format!("uprobe: Redis {how}: {what}{flag_note}")));
            if protocol_error && causes.contains(&Cause::RedisProtocolError) {
                out.push(uprobe(
                    "uprobe: the client was flagged for a protocol error".to_string(),
                ));
                return Some(Verdict::new(Cause::RedisProtocolError, std::mem::take(out)));
            }
            // Its log line names which (the query-buffer line is logged at warning).
            let mut logged = out.clone();
            if let Some(v) = from_log(c, ev, &mut logged)
                && causes.contains(&v.cause)
            {
                *out = Vec::new();
                return Some(v);
            }
            // Redis 8 with I/O threads decides in the I/O thread, before the main thread
            // flags a protocol error: there the flags do not tell the two apart.
            if p.freed_from == "processClientsFromIOThread" {
                out.push(uprobe(
                    "uprobe: decided in an I/O thread (freed by processClientsFromIOThread), \
                     where the client's flags may not show a protocol error yet: only the log \
                     line tells the query-buffer limit from a protocol error"
                        .to_string(),
                ));
                return None;
            }
            if p.decided_in == "readQueryFromClient"
                && p.client_flags.is_some()
                && c.closed_by_side == Some(Side::Server)
            {
                // Redis ≤ 7 flags a protocol error before it frees; no flag and a close
                // Redis sent first (not a read of a closed connection) leave one reason.
                out.push(uprobe(
                    "uprobe: the client was not flagged for a protocol error, and Redis closed \
                     first (so not after reading the peer's close): the query-buffer limit is \
                     the one close left on that path"
                        .to_string(),
                ));
                return Some(Verdict::new(
                    Cause::RedisQueryBufferLimit,
                    std::mem::take(out),
                ));
            }
            return None;
        }
        Some(Meaning::AfterReply) => {
            if protocol_error {
                out.push(uprobe(format!(
                    "uprobe: Redis {how}, after its reply, with the client flagged for a protocol error{flag_note}"
                )));
                return Some(Verdict::new(Cause::RedisProtocolError, std::mem::take(out)));
            }
            out.push(uprobe(format!(
                "uprobe: Redis {how}, after its last reply to the client (the client sent QUIT, \
                 or a command that closes the connection){flag_note}"
            )));
            return None;
        }
        None => {
            out.push(uprobe(format!("uprobe: Redis {how}{flag_note}")));
            return None;
        }
    };
    out.push(uprobe(format!("uprobe: Redis {how}: {what}{flag_note}")));
    let mut v = Verdict::new(cause, std::mem::take(out));
    if cause == Cause::RedisOutputBufferLimit {
        v.client_class = Some(if p.client_flags.is_some() {
            limit_class(&flags)
        } else {
            // Flags not readable on this version: the log or CLIENT LIST may say.
            ev.client
                .map(|(e, _)| ClientClass::of_flags(&e.flags))
                .unwrap_or(ClientClass::Normal)
        });
    }
    // Supporting evidence, when there is some: the log line, the entry.
    let mut extra = Vec::new();
    if let Some(logged) = from_log(c, ev, &mut extra) {
        v.settings.logged_client_name = logged.settings.logged_client_name;
        v.evidence.extend(
            logged
                .evidence
                .into_iter()
                .filter(|e| e.source == Source::RedisLog),
        );
    }
    if let Some((entry, seen)) = ev.client.filter(|(_, seen)| *seen <= c.time) {
        v.evidence.push(client_list_line(entry, seen));
    }
    if cause == Cause::RedisIdleTimeout
        && let Some(t) = ev.config.and_then(|c| c.timeout)
    {
        v.evidence.push(Evidence::new(
            Source::Config,
            format!("config: timeout is {t}s"),
        ));
        v.settings.timeout = Some(t);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_is_not_a_replica_and_a_master_has_the_normal_class() {
        assert_eq!(limit_class(&["replica", "monitor"]), ClientClass::Normal);
        assert_eq!(limit_class(&["replica"]), ClientClass::Replica);
        assert_eq!(limit_class(&["master", "pubsub"]), ClientClass::Normal);
        assert_eq!(limit_class(&["pubsub"]), ClientClass::Pubsub);
        assert_eq!(limit_class(&[]), ClientClass::Normal);
    }

    #[test]
    fn the_cron_settles_only_its_direct_free() {
        assert_eq!(
            meaning("clientsCronRunClient", true),
            Some(Meaning::Settles(
                "its idle-timeout check (serverCron; clientsCronHandleTimeout inlined in this build)",
                Cause::RedisIdleTimeout
            ))
        );
        assert!(matches!(
            meaning("clientsCronRunClient", false),
            Some(Meaning::OneOf(..))
        ));
        assert_eq!(meaning("prepareForShutdown", true), None);
        assert!(passes_through("freeClient") && !passes_through("clientCommand"));
    }
}
