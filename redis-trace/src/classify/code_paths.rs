//! What the uprobes on redis-server's freeClient and freeClientAsync say: the function
//! that decided to free the client, named from redis-server's own symbols, and what it
//! means.
use super::redis::{client_list_line, from_log};
use super::{Evidence, Facts, Source, Verdict};
use crate::cause::Cause;
use crate::kernel::assemble::KernelClose;
use crate::schema::ClientClass;

/// What a deciding function means, in an operator's words, and the cause it proves.
pub fn meaning(func: &str) -> Option<(&'static str, Cause)> {
    use Cause::*;
    Some(match func {
        "clientsCronHandleTimeout" => ("its idle-timeout check (serverCron)", RedisIdleTimeout),
        "closeClientOnOutputBufferLimitReached" => {
            ("its output buffer limit check", RedisOutputBufferLimit)
        }
        "clientCommand" | "clientKillCommand" => ("CLIENT KILL", RedisClientKill),
        "evictClients" => (
            "client eviction under maxmemory-clients",
            RedisClientEviction,
        ),
        "readQueryFromClient" => ("its query buffer limit check", RedisQueryBufferLimit),
        "prepareForShutdown" | "finishShutdown" => ("its shutdown", RedisShutdown),
        _ => return None,
    })
}

/// Functions that free a client after its last reply: QUIT, or a protocol error.
pub fn after_reply(func: &str) -> bool {
    matches!(
        func,
        "writeToClient"
            | "_writeToClient"
            | "handleClientsWithPendingWrites"
            | "sendReplyToClient"
            | "handleClientsWithPendingWritesUsingThreads"
    )
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
    let how = if p.freed_from == p.decided_in {
        format!("freed it from {}", p.decided_in)
    } else {
        format!(
            "decided in {} and freed it later from {}",
            p.decided_in, p.freed_from
        )
    };
    let flag_note = if flags.is_empty() {
        String::new()
    } else {
        format!(" (client flags: {})", flags.join(", "))
    };
    let uprobe = |text: String| Evidence::new(Source::Uprobe, text);
    if let Some((what, cause)) = meaning(&p.decided_in) {
        out.push(uprobe(format!("uprobe: Redis {how}: {what}{flag_note}")));
        let mut v = Verdict::new(cause, std::mem::take(out));
        if cause == Cause::RedisOutputBufferLimit {
            v.client_class = Some(if flags.contains(&"replica") {
                ClientClass::Replica
            } else if flags.contains(&"pubsub") {
                ClientClass::Pubsub
            } else if p.client_flags.is_some() {
                ClientClass::Normal
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
        return Some(v);
    }
    if after_reply(&p.decided_in) {
        if flags.contains(&"protocol_error") {
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
    out.push(uprobe(format!("uprobe: Redis {how}{flag_note}")));
    None
}
