//! What each cause means to an operator, and the fix that usually applies: one entry for
//! every cause of docs/causes.md.

/// The words of one cause in the report.
pub(super) struct CauseText {
    /// A clause for the verdict: "3: a client aborted".
    pub verdict: &'static str,
    /// What happened, in an operator's words.
    pub meaning: &'static str,
    /// What usually fixes it.
    pub fix: &'static str,
}

pub(super) fn cause_text(cause: &str) -> CauseText {
    let (verdict, meaning, fix) = match cause {
        "redis_idle_timeout" => (
            "Redis closed idle connections at its `timeout`",
            "Redis's `timeout` setting closes a connection that sent nothing for that many \
             seconds. Connection pools that keep idle connections longer find them closed on \
             next use (`Connection reset by peer`, `Broken pipe`, `EOF`).",
            "Align the client pool's idle timeout (max idle time, eviction interval) below \
             Redis's `timeout`, and below any load-balancer or firewall idle timeout on the path; \
             or let the pool validate connections before use. `timeout 0` disables the close \
             altogether (then rely on `tcp-keepalive` to clean up dead clients).",
        ),
        "redis_output_buffer_limit" => (
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
        "redis_client_kill" => (
            "someone ran CLIENT KILL on them",
            "A connection ran CLIENT KILL (an operator, a script, an admin UI, or tooling such \
             as Sentinel) and Redis closed the killed client.",
            "Find who runs CLIENT KILL (the killer is named when it was still connected); if it \
             should not, restrict it with an ACL (`-client|kill`) for that user.",
        ),
        "redis_query_buffer_limit" => (
            "Redis closed clients whose query buffer hit `client-query-buffer-limit`",
            "The client sent a request (or a pipeline it did not wait on) larger than \
             `client-query-buffer-limit` (1 GB by default), and Redis dropped it.",
            "Send large values and pipelines in smaller batches; raise \
             `client-query-buffer-limit` (and `proto-max-bulk-len`) only if such sizes are \
             intended. A client stuck mid-command can also cause it.",
        ),
        "redis_client_eviction" => (
            "Redis evicted clients to stay under `maxmemory-clients`",
            "All clients' buffers together went over `maxmemory-clients` and Redis evicted the \
             largest clients to get back under it.",
            "Raise `maxmemory-clients` or find the clients with big buffers (CLIENT LIST \
             `tot-mem`, `omem`, `qbuf`); mark critical connections with `CLIENT NO-EVICT on`.",
        ),
        "redis_protocol_error" => (
            "Redis closed clients that broke the protocol",
            "A client sent bytes that are not valid RESP: a client library bug, TLS spoken to a \
             plaintext port, an HTTP health check or a port scanner.",
            "Check what connects (the client address and name below); align TLS settings \
             between client and server; point HTTP health checks at something else (or use a \
             TCP check or PING).",
        ),
        "redis_shutdown" => (
            "Redis shut down",
            "redis-server exited gracefully (SHUTDOWN, or SIGTERM/SIGINT from a service \
             manager, a deployment or an orchestrator; the sender is named), closing every \
             connection at once.",
            "If planned: fail over first (Sentinel, Cluster) and have clients reconnect with \
             backoff. If not: find the sender named in the evidence (systemd unit, container \
             runtime, liveness probe).",
        ),
        "redis_oom_killed" => (
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
        "redis_killed" => (
            "another process killed redis-server",
            "A fatal signal (SIGKILL, ...) from another process ended redis-server; the sender \
             is named in the evidence.",
            "Find the sender (a deployment tool, an orchestrator's liveness probe, an \
             operator's `kill -9`) and stop Redis with SHUTDOWN or SIGTERM instead, which \
             lets it persist and close cleanly.",
        ),
        "redis_crashed" => (
            "redis-server crashed",
            "redis-server died on a fault signal (SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE); its \
             log holds a crash report when it could write one.",
            "Read the crash report in the Redis log (stack trace, INFO, the command running); \
             check the memory (`redis-server --test-memory`), loaded modules, and the release \
             notes of later versions for the fix; upgrade.",
        ),
        "redis_close_unknown" => (
            "Redis closed them for a reason that is not visible outside Redis",
            "Redis's end sent the close, but nothing Redis shows (INFO counters, CLIENT LIST, \
             its log at the current level) says why: QUIT, a protocol error logged only at \
             `verbose`, an idle timeout of a client never seen in CLIENT LIST.",
            "Capture again with Redis's own view available (a user with `+info +config|get \
             +client|list +ping`, the log file readable) and, for protocol errors, `loglevel \
             verbose` during the capture.",
        ),
        "client_close" => (
            "the client closed the connection",
            "The client's end sent the first FIN: the application closed it (pool shrinking, \
             a client-side timeout, an application restart). Usually benign.",
            "If the application reported errors at these times, check its client-side timeouts \
             (a read timeout shorter than slow commands closes the connection mid-reply) and \
             the pool's idle and lifetime settings.",
        ),
        "client_reset" => (
            "a client aborted",
            "The client's own TCP stack sent a RST: the process closed a socket with unread \
             data, set SO_LINGER 0, or died (killed, crashed, OOM-killed) with connections \
             open.",
            "Look at the client process named in the evidence: crashes, restarts, OOM kills or \
             timeouts that close sockets mid-reply; close pooled connections gracefully on \
             shutdown.",
        ),
        "middlebox_reset" => (
            "a device in the path reset them (neither end sent the RST)",
            "Something between the client and Redis (a firewall, NAT or conntrack table, a load \
             balancer, a service mesh proxy) sent a RST that neither end's TCP stack sent, \
             typically when it expired an idle flow.",
            "Find that device's idle timeout (cloud load balancers: minutes; conntrack: \
             `nf_conntrack_tcp_timeout_established`) and stay below it: enable `tcp-keepalive` \
             in Redis (e.g. 60) and TCP keepalive in the client, and align the pool's idle \
             timeout with it.",
        ),
        "peer_reset" => (
            "a RST came from the client's address (the client or a device in the path)",
            "A RST arrived from the remote end's address. A capture on one host cannot tell \
             whether the remote host sent it or a device in the path did.",
            "Capture on the client host too, at the same time, and run `redis-trace report` over \
             both captures: it matches the two ends and tells a client reset from a middlebox \
             reset. Meanwhile check load-balancer and firewall idle timeouts and \
             `tcp-keepalive`.",
        ),
        "kernel_reset" => (
            "the kernel gave up on the connection (retransmission or keepalive timeout)",
            "The TCP stack itself ended the connection: retransmissions or keepalive probes \
             went unanswered (a network partition, a peer host that vanished, a dropped path).",
            "Check the network path and the peer host at that time; enable `tcp-keepalive` so \
             dead peers are found, and tune `net.ipv4.tcp_retries2` if detection is too slow.",
        ),
        "unknown" => (
            "the evidence does not say who ended them",
            "The kernel's view did not settle who ended these connections.",
            "Check that every probe was attached and no events were lost, and capture again \
             with Redis's own view available.",
        ),
        _ => (
            "a cause this report does not know",
            "A cause written by a newer redis-trace.",
            "Read the evidence below; a newer `redis-trace report` explains it.",
        ),
    };
    CauseText {
        verdict,
        meaning,
        fix,
    }
}

/// A byte count in Redis's config units: 33554432 → "32mb".
pub(super) fn redis_bytes(n: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = KB * 1024;
    const GB: u64 = MB * 1024;
    match n {
        0 => "0".into(),
        n if n % GB == 0 => format!("{}gb", n / GB),
        n if n % MB == 0 => format!("{}mb", n / MB),
        n if n % KB == 0 => format!("{}kb", n / KB),
        n => n.to_string(),
    }
}

/// "config: client-output-buffer-limit pubsub 33554432 8388608 60" → "pubsub 32mb 8mb 60".
pub(super) fn output_limit(evidence: &str) -> Option<String> {
    let rest = evidence
        .split("client-output-buffer-limit ")
        .nth(1)?
        .trim_end_matches(['.', ')']);
    let mut w = rest.split_whitespace();
    let class = w.next()?;
    let hard: u64 = w.next()?.parse().ok()?;
    let soft: u64 = w.next()?.parse().ok()?;
    let secs: u64 = w.next()?.parse().ok()?;
    Some(format!(
        "{class} {} {} {secs}",
        redis_bytes(hard),
        redis_bytes(soft)
    ))
}

/// "config: timeout is 300s; ..." → 300.
pub(super) fn idle_timeout(evidence: &str) -> Option<u64> {
    let rest = evidence.split("timeout is ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A client class as people say it.
pub(super) fn class_words(class: &str, n: u64) -> String {
    let (one, many) = match class {
        "pubsub" => ("pub/sub subscriber", "pub/sub subscribers"),
        "replica" => ("replica", "replicas"),
        "master" => ("master link", "master links"),
        _ => ("normal client", "normal clients"),
    };
    if n == 1 { one.into() } else { many.into() }
}
