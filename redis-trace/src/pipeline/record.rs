//! The `connection_closed` record, built once, at the end of the pipeline, from the
//! kernel's account of the close, the Redis code path, the verdict and the CLIENT LIST
//! entry.
use crate::classify::Verdict;
use crate::kernel::assemble::KernelClose;
use crate::schema::{ConnectionClosed, RedisClientView, RedisCodePath, ResetNote};

pub fn connection_closed(
    k: KernelClose,
    redis_code_path: Option<RedisCodePath>,
    verdict: Verdict,
    redis_client: Option<RedisClientView>,
) -> ConnectionClosed {
    ConnectionClosed {
        time: Some(k.time),
        cause: verdict.cause,
        closed_by: verdict.closed_by(),
        evidence: verdict.sentences(),
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
