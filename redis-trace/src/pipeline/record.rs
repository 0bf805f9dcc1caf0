//! The `connection_closed` record, built once, at the end of the pipeline, from the
//! kernel's account of the close, the Redis code path, the verdict and the CLIENT LIST
//! entry.
use crate::classify::Verdict;
use crate::kernel::assemble::KernelClose;
use crate::schema::{
    ConnectionClosed, ProcessRef, RedisClientView, RedisCodePath, ResetNote, ServerRef, Side,
};

/// Local proxies that put themselves between clients and Redis: when one holds the
/// client end, the real client is behind it.
pub const PROXIES: [&str; 7] = [
    "docker-proxy",
    "haproxy",
    "envoy",
    "twemproxy",
    "nutcracker",
    "redis-proxy",
    "kube-proxy",
];

/// The client end's process when it is a known proxy: from /proc at start, or the task
/// that closed the client end.
pub fn proxy_of(k: &KernelClose) -> Option<ProcessRef> {
    let closing = (k.closed_by_side == Some(Side::Client))
        .then(|| {
            Some(ProcessRef {
                pid: k.pid?,
                comm: k.comm.clone()?,
            })
        })
        .flatten();
    k.client_process
        .clone()
        .or(closing)
        .filter(|p| PROXIES.contains(&p.comm.as_str()))
}

pub fn connection_closed(
    k: KernelClose,
    redis_code_path: Option<RedisCodePath>,
    verdict: Verdict,
    redis_client: Option<RedisClientView>,
    redis_server: Option<ServerRef>,
) -> ConnectionClosed {
    let peer_proxy = proxy_of(&k);
    let mut evidence = verdict.sentences();
    if let Some(p) = &peer_proxy {
        evidence.push(format!(
            "kernel: the client end is held by {} (pid {}), a proxy: the real client is behind it",
            p.comm, p.pid
        ));
    }
    let packets = k
        .arrivals
        .iter()
        .map(|a| crate::classify::path::view(a, k.close_ns))
        .collect();
    ConnectionClosed {
        packets,
        path: verdict.path.clone(),
        netns: k.netns,
        redis_server,
        peer_proxy,
        time: Some(k.time),
        cause: verdict.cause,
        closed_by: verdict.closed_by(),
        evidence,
        client_class: verdict.client_class,
        killer: verdict.killer,
        redis_client,
        server: k.server,
        client: k.client,
        closed_by_side: k.closed_by_side,
        packet: k.packet,
        pid: k.pid,
        tid: k.tid,
        duration_ms: k.duration_ms(),
        comm: k.comm,
        rst_reason: k.rst_reason,
        kernel_event: k.kernel_event,
        observed_on: k.observed_on,
        error: k.error,
        server_process: k.server_process,
        client_process: k.client_process,
        start_seen: k.start_ns.is_some(),
        both_ends_local: k.both_ends_local,
        resets: k
            .resets
            .into_iter()
            .map(|r| ResetNote {
                time: Some(r.time),
                direction: r.direction,
                side: r.side,
                rst_reason: r.rst_reason,
            })
            .collect(),
        redis_code_path,
        redis_settings: verdict.settings,
    }
}
