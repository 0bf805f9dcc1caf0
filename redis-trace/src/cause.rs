//! The causes a connection end is given, each with its meaning: its name in the JSON
//! lines, who it blames, how much it settles, its colours, and what an operator reads about
//! it (docs/causes.md). Every property is an exhaustive match: a new cause is one variant,
//! and the compiler lists each place to fill in.
use serde::{Deserialize, Serialize};

/// Why a connection ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    RedisIdleTimeout,
    RedisOutputBufferLimit,
    RedisClientKill,
    RedisQueryBufferLimit,
    RedisClientEviction,
    RedisProtocolError,
    RedisShutdown,
    RedisOomKilled,
    RedisKilled,
    RedisCrashed,
    RedisCloseUnknown,
    ClientClose,
    ClientReset,
    MiddleboxReset,
    PeerReset,
    KernelReset,
    /// The evidence does not say (also what a cause unknown to this version reads as).
    #[default]
    #[serde(other)]
    Unknown,
}

/// Who ended a connection, as `closed_by` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClosedBy {
    Redis,
    Client,
    Middlebox,
    Kernel,
    #[default]
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ClosedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Redis => "redis",
            ClosedBy::Client => "client",
            ClosedBy::Middlebox => "middlebox",
            ClosedBy::Kernel => "kernel",
            ClosedBy::Unknown => "unknown",
        }
    }
}

/// What the report says about a cause.
pub struct CauseText {
    /// A clause for the verdict: "3: a client aborted".
    pub verdict: &'static str,
    /// What happened, in an operator's words.
    pub meaning: &'static str,
    /// What usually fixes it.
    pub fix: &'static str,
}

impl Cause {
    /// Every cause, Redis's own first: the order ties are ranked in.
    pub const ALL: [Cause; 17] = [
        Cause::RedisIdleTimeout,
        Cause::RedisOutputBufferLimit,
        Cause::RedisClientKill,
        Cause::RedisQueryBufferLimit,
        Cause::RedisClientEviction,
        Cause::RedisProtocolError,
        Cause::RedisShutdown,
        Cause::RedisOomKilled,
        Cause::RedisKilled,
        Cause::RedisCrashed,
        Cause::RedisCloseUnknown,
        Cause::ClientClose,
        Cause::ClientReset,
        Cause::MiddleboxReset,
        Cause::PeerReset,
        Cause::KernelReset,
        Cause::Unknown,
    ];

    /// Its name in the JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::RedisIdleTimeout => "redis_idle_timeout",
            Cause::RedisOutputBufferLimit => "redis_output_buffer_limit",
            Cause::RedisClientKill => "redis_client_kill",
            Cause::RedisQueryBufferLimit => "redis_query_buffer_limit",
            Cause::RedisClientEviction => "redis_client_eviction",
            Cause::RedisProtocolError => "redis_protocol_error",
            Cause::RedisShutdown => "redis_shutdown",
            Cause::RedisOomKilled => "redis_oom_killed",
            Cause::RedisKilled => "redis_killed",
            Cause::RedisCrashed => "redis_crashed",
            Cause::RedisCloseUnknown => "redis_close_unknown",
            Cause::ClientClose => "client_close",
            Cause::ClientReset => "client_reset",
            Cause::MiddleboxReset => "middlebox_reset",
            Cause::PeerReset => "peer_reset",
            Cause::KernelReset => "kernel_reset",
            Cause::Unknown => "unknown",
        }
    }

    /// The cause of that name, if there is one.
    pub fn named(name: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Who ended it, in the words of `closed_by`.
    pub fn closed_by(self) -> ClosedBy {
        match self {
            Cause::RedisIdleTimeout => ClosedBy::Redis,
            Cause::RedisOutputBufferLimit => ClosedBy::Redis,
            Cause::RedisClientKill => ClosedBy::Redis,
            Cause::RedisQueryBufferLimit => ClosedBy::Redis,
            Cause::RedisClientEviction => ClosedBy::Redis,
            Cause::RedisProtocolError => ClosedBy::Redis,
            Cause::RedisShutdown => ClosedBy::Redis,
            Cause::RedisOomKilled => ClosedBy::Redis,
            Cause::RedisKilled => ClosedBy::Redis,
            Cause::RedisCrashed => ClosedBy::Redis,
            Cause::RedisCloseUnknown => ClosedBy::Redis,
            Cause::ClientClose => ClosedBy::Client,
            Cause::ClientReset => ClosedBy::Client,
            Cause::MiddleboxReset => ClosedBy::Middlebox,
            Cause::PeerReset => ClosedBy::Unknown,
            Cause::KernelReset => ClosedBy::Kernel,
            Cause::Unknown => ClosedBy::Unknown,
        }
    }

    /// How much it settles: 0 a definite cause, 2 "Redis closed it, reason unseen", 3 "a
    /// RST from the peer's address", 4 nothing. When two captures saw one connection, the
    /// lower rank wins.
    pub fn rank(self) -> u8 {
        match self {
            Cause::RedisIdleTimeout => 0,
            Cause::RedisOutputBufferLimit => 0,
            Cause::RedisClientKill => 0,
            Cause::RedisQueryBufferLimit => 0,
            Cause::RedisClientEviction => 0,
            Cause::RedisProtocolError => 0,
            Cause::RedisShutdown => 0,
            Cause::RedisOomKilled => 0,
            Cause::RedisKilled => 0,
            Cause::RedisCrashed => 0,
            Cause::RedisCloseUnknown => 2,
            Cause::ClientClose => 0,
            Cause::ClientReset => 0,
            Cause::MiddleboxReset => 0,
            Cause::PeerReset => 3,
            Cause::KernelReset => 0,
            Cause::Unknown => 4,
        }
    }

    /// Its colour on the report's chart.
    pub fn chart_colour(self) -> &'static str {
        match self {
            Cause::RedisIdleTimeout => "#4e79a7",
            Cause::RedisOutputBufferLimit => "#e15759",
            Cause::RedisClientKill => "#f28e2b",
            Cause::RedisQueryBufferLimit => "#b07aa1",
            Cause::RedisClientEviction => "#9c755f",
            Cause::RedisProtocolError => "#edc948",
            Cause::RedisShutdown => "#76b7b2",
            Cause::RedisOomKilled => "#7b0d1e",
            Cause::RedisKilled => "#d37295",
            Cause::RedisCrashed => "#3d3d3d",
            Cause::RedisCloseUnknown => "#bab0ac",
            Cause::ClientClose => "#59a14f",
            Cause::ClientReset => "#a0cbe8",
            Cause::MiddleboxReset => "#ff9d00",
            Cause::PeerReset => "#d4a6c8",
            Cause::KernelReset => "#499894",
            Cause::Unknown => "#e0e0e0",
        }
    }

    /// Its ANSI colour on the live timeline: Redis's doing red (yellow when the reason is
    /// unseen), the client's green, the path's magenta, the kernel's cyan, unknown dim.
    pub fn terminal_colour(self) -> &'static str {
        match self {
            Cause::RedisIdleTimeout => "\x1b[31m",
            Cause::RedisOutputBufferLimit => "\x1b[31m",
            Cause::RedisClientKill => "\x1b[31m",
            Cause::RedisQueryBufferLimit => "\x1b[31m",
            Cause::RedisClientEviction => "\x1b[31m",
            Cause::RedisProtocolError => "\x1b[31m",
            Cause::RedisShutdown => "\x1b[31m",
            Cause::RedisOomKilled => "\x1b[31m",
            Cause::RedisKilled => "\x1b[31m",
            Cause::RedisCrashed => "\x1b[31m",
            Cause::RedisCloseUnknown => "\x1b[33m",
            Cause::ClientClose => "\x1b[32m",
            Cause::ClientReset => "\x1b[32m",
            Cause::MiddleboxReset => "\x1b[35m",
            Cause::PeerReset => "\x1b[35m",
            Cause::KernelReset => "\x1b[36m",
            Cause::Unknown => "\x1b[2m",
        }
    }

    /// What it means to an operator, and the fix that usually applies.
    pub fn text(self) -> CauseText {
        let (verdict, meaning, fix) = match self {
            Cause::RedisIdleTimeout => (
                "Redis closed idle connections at its `timeout`",
                "Redis's `timeout` setting closes a connection that sent nothing for that many \
             seconds. Connection pools that keep idle connections longer find them closed on \
             next use (`Connection reset by peer`, `Broken pipe`, `EOF`).",
                "Align the client pool's idle timeout (max idle time, eviction interval) below \
             Redis's `timeout`, and below any load-balancer or firewall idle timeout on the path; \
             or let the pool validate connections before use. `timeout 0` disables the close \
             altogether (then rely on `tcp-keepalive` to clean up dead clients).",
            ),
            Cause::RedisOutputBufferLimit => (
                "Redis closed clients for the output buffer limit",
                "The client read replies or messages slower than Redis produced them; its output \
             buffer in Redis grew past `client-output-buffer-limit` for its class (the hard \
             limit, or the soft limit for longer than its seconds) and Redis dropped it. For \
             pub/sub this is a subscriber falling behind its channels.",
                "Drain consumers promptly: a subscriber must read continuously and do slow work \
             elsewhere (a queue, a worker pool); scale out subscribers. If bursts are expected, \
             raise the limit for that class, e.g. `CONFIG SET client-output-buffer-limit \
             \"pubsub 64mb 16mb 60\"` (and in redis.conf). For normal clients, avoid huge \
             replies: use SCAN instead of KEYS, HSCAN/SSCAN/ZSCAN instead of HGETALL/SMEMBERS on \
             big keys, paginate LRANGE. For replicas, raise the replica limit and \
             `repl-backlog-size`.",
            ),
            Cause::RedisClientKill => (
                "someone ran CLIENT KILL on them",
                "A connection ran CLIENT KILL (an operator, a script, an admin UI, or tooling such \
             as Sentinel) and Redis closed the killed client.",
                "Find who runs CLIENT KILL (the killer is named when it was still connected); if it \
             should not, restrict it with an ACL (`-client|kill`) for that user.",
            ),
            Cause::RedisQueryBufferLimit => (
                "Redis closed clients whose query buffer hit `client-query-buffer-limit`",
                "The client sent a request (or a pipeline it did not wait on) larger than \
             `client-query-buffer-limit` (1 GB by default), and Redis dropped it.",
                "Send large values and pipelines in smaller batches; raise \
             `client-query-buffer-limit` (and `proto-max-bulk-len`) only if such sizes are \
             intended. A client stuck mid-command can also cause it.",
            ),
            Cause::RedisClientEviction => (
                "Redis evicted clients to stay under `maxmemory-clients`",
                "All clients' buffers together went over `maxmemory-clients` and Redis evicted the \
             largest clients to get back under it.",
                "Raise `maxmemory-clients` or find the clients with big buffers (CLIENT LIST \
             `tot-mem`, `omem`, `qbuf`); mark critical connections with `CLIENT NO-EVICT on`.",
            ),
            Cause::RedisProtocolError => (
                "Redis closed clients that broke the protocol",
                "A client sent bytes that are not valid RESP: a client library bug, TLS spoken to a \
             plaintext port, an HTTP health check or a port scanner.",
                "Check what connects (the client address and name below); align TLS settings \
             between client and server; point HTTP health checks at something else (or use a \
             TCP check or PING).",
            ),
            Cause::RedisShutdown => (
                "Redis shut down",
                "redis-server exited gracefully (SHUTDOWN, or SIGTERM/SIGINT from a service \
             manager, a deployment or an orchestrator; the sender is named), closing every \
             connection at once.",
                "If planned: fail over first (Sentinel, Cluster) and have clients reconnect with \
             backoff. If not: find the sender named in the evidence (systemd unit, container \
             runtime, liveness probe).",
            ),
            Cause::RedisOomKilled => (
                "the kernel's OOM killer killed redis-server",
                "The host or Redis's memory cgroup ran out of memory and the kernel's OOM killer \
             chose redis-server; every connection dropped at once and the data not persisted \
             was lost.",
                "Set `maxmemory` below the container or host limit (leave room for replication and \
             client buffers and for a fork's copy-on-write during BGSAVE/AOF rewrite) with a \
             `maxmemory-policy` that fits the data (e.g. `allkeys-lru` for a cache); set \
             `vm.overcommit_memory=1` so background saves can fork; size the cgroup for peak \
             use.",
            ),
            Cause::RedisKilled => (
                "another process killed redis-server",
                "A fatal signal (SIGKILL, ...) from another process ended redis-server; the sender \
             is named in the evidence.",
                "Find the sender (a deployment tool, an orchestrator's liveness probe, an \
             operator's `kill -9`) and stop Redis with SHUTDOWN or SIGTERM instead, which \
             lets it persist and close cleanly.",
            ),
            Cause::RedisCrashed => (
                "redis-server crashed",
                "redis-server died on a fault signal (SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE); its \
             log holds a crash report when it could write one.",
                "Read the crash report in the Redis log (stack trace, INFO, the command running); \
             check the memory (`redis-server --test-memory`), loaded modules, and the release \
             notes of later versions for the fix; upgrade.",
            ),
            Cause::RedisCloseUnknown => (
                "Redis closed them for a reason that is not visible outside Redis",
                "Redis's end sent the close, but nothing Redis shows (INFO counters, CLIENT LIST, \
             its log at the current level) says why: QUIT, a protocol error logged only at \
             `verbose`, an idle timeout of a client never seen in CLIENT LIST.",
                "Capture again with Redis's own view available (a user with `+info +config|get \
             +client|list +ping`, the log file readable) and, for protocol errors, `loglevel \
             verbose` during the capture.",
            ),
            Cause::ClientClose => (
                "the client closed the connection",
                "The client's end sent the first FIN: the application closed it (pool shrinking, \
             a client-side timeout, an application restart). Usually benign.",
                "If the application reported errors at these times, check its client-side timeouts \
             (a read timeout shorter than slow commands closes the connection mid-reply) and \
             the pool's idle and lifetime settings.",
            ),
            Cause::ClientReset => (
                "a client aborted",
                "The client's own TCP stack sent a RST: the process closed a socket with unread \
             data, set SO_LINGER 0, or died (killed, crashed, OOM-killed) with connections \
             open.",
                "Look at the client process named in the evidence: crashes, restarts, OOM kills or \
             timeouts that close sockets mid-reply; close pooled connections gracefully on \
             shutdown.",
            ),
            Cause::MiddleboxReset => (
                "a device in the path reset them (neither end sent the RST)",
                "Something between the client and Redis (a firewall, NAT or conntrack table, a load \
             balancer, a service mesh proxy) sent a RST that neither end's TCP stack sent, \
             typically when it expired an idle flow.",
                "Find that device's idle timeout (cloud load balancers: minutes; conntrack: \
             `nf_conntrack_tcp_timeout_established`) and stay below it: enable `tcp-keepalive` \
             in Redis (e.g. 60) and TCP keepalive in the client, and align the pool's idle \
             timeout with it.",
            ),
            Cause::PeerReset => (
                "a RST came from the client's address (the client or a device in the path)",
                "A RST arrived from the remote end's address. A capture on one host cannot tell \
             whether the remote host sent it or a device in the path did.",
                "Capture on the client host too, at the same time, and run `redis-trace report` over \
             both captures: it matches the two ends and tells a client reset from a middlebox \
             reset. Meanwhile check load-balancer and firewall idle timeouts and \
             `tcp-keepalive`.",
            ),
            Cause::KernelReset => (
                "the kernel gave up on the connection (retransmission or keepalive timeout)",
                "The TCP stack itself ended the connection: retransmissions or keepalive probes \
             went unanswered (a network partition, a peer host that vanished, a dropped path).",
                "Check the network path and the peer host at that time; enable `tcp-keepalive` so \
             dead peers are found, and tune `net.ipv4.tcp_retries2` if detection is too slow.",
            ),
            Cause::Unknown => (
                "the evidence does not say who ended them",
                "The kernel's view did not settle who ended these connections.",
                "Check that every probe was attached and no events were lost, and capture again \
             with Redis's own view available.",
            ),
        };
        CauseText {
            verdict,
            meaning,
            fix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_name_side_and_words() {
        for c in Cause::ALL {
            let json = serde_json::to_string(&c).expect("json");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            let back: Cause = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, c);
            let t = c.text();
            assert!(!t.verdict.is_empty() && !t.meaning.is_empty() && !t.fix.is_empty());
        }
        let future: Cause = serde_json::from_str("\"a_newer_cause\"").expect("tolerated");
        assert_eq!(future, Cause::Unknown);
    }
}
