//! Uprobes on Redis's `freeClientAsync` and `freeClient`: which code path decided to
//! free a client, for the close of its socket that follows in the same thread.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use redis_trace_ebpf::{ABSENT, NO_FLAGS, redis_probes};

use super::maps::{ASYNC_FREES, Decision, FREEING, Freeing, redis_probe_setting};

/// A deferred free normally follows its decision within one event-loop turn; a decision
/// older than this is stale (the uprobes were paused in between, and the client's
/// memory may since hold another client): a new decision replaces it.
const DECISION_STALE_NS: u64 = 2_000_000_000;

/// A free older than this is not the one behind a close (it was a client that had
/// already closed its end, or a free without a socket).
const FREEING_FRESH_NS: u64 = 1_000_000;

/// What thread `tid` was freeing, if it began within the last millisecond; consumed.
#[inline(always)]
pub(super) fn take_freeing(tid: u32, now: u64) -> Option<Freeing> {
    // SAFETY: plain map lookup; the value is copied out at once.
    let f = unsafe { FREEING.get(&tid) }.copied()?;
    let _ = FREEING.remove(&tid);
    (now.saturating_sub(f.ts) < FREEING_FRESH_NS).then_some(f)
}

/// The caller of a uprobed function: at its first instruction the return address is
/// the word at the stack pointer (x86_64 call convention).
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register set; the stack word is read through the
    // checked user-memory helper.
    unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

/// `client->flags` of Redis's client `c`, when this Redis version's layout is known.
#[inline(always)]
fn client_flags(c: u64) -> u64 {
    let off = redis_probe_setting(redis_probes::FLAGS_OFFSET);
    if off == 0 || off >= u32::from(ABSENT) || c == 0 {
        return NO_FLAGS;
    }
    // SAFETY: user memory read through the checked helper.
    unsafe { bpf_probe_read_user((c + u64::from(off)) as *const u64) }.unwrap_or(NO_FLAGS)
}

/// `void freeClientAsync(client *c)`: Redis decided to free `c` later (output buffer
/// limit, query buffer limit, close after reply, ...). Remember who decided.
#[uprobe]
pub fn redis_free_client_async(ctx: ProbeContext) -> u32 {
    let Some(c) = ctx.arg::<u64>(0) else {
        return 0;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The first decision stands (Redis calls freeClientAsync again for a client already
    // closing), unless it is stale.
    let key = [bpf_get_current_pid_tgid() >> 32, c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let fresh = unsafe { ASYNC_FREES.get(&key) }
        .is_some_and(|d| now.saturating_sub(d.ts) < DECISION_STALE_NS);
    if !fresh {
        let d = Decision {
            decided_in: return_address(&ctx),
            flags: client_flags(c),
            ts: now,
        };
        let _ = ASYNC_FREES.insert(&key, &d, 0);
    }
    0
}

/// `void freeClient(client *c)`: Redis frees `c` now; its socket is closed within.
#[uprobe]
pub fn redis_free_client(ctx: ProbeContext) -> u32 {
    let Some(c) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let freed_from = return_address(&ctx);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = [bpf_get_current_pid_tgid() >> 32, c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let decision = unsafe { ASYNC_FREES.get(&key) }.copied();
    if decision.is_some() {
        let _ = ASYNC_FREES.remove(&key);
    }
    let (decided_in, flags) = match decision {
        Some(d) if now.saturating_sub(d.ts) < DECISION_STALE_NS => (d.decided_in, d.flags),
        _ => (freed_from, client_flags(c)),
    };
    let f = Freeing {
        ts: now,
        freed_from,
        decided_in,
        flags,
    };
    let _ = FREEING.insert(&(bpf_get_current_pid_tgid() as u32), &f, 0);
    0
}
