//! Uprobes on Redis's `freeClientAsync` and `freeClient`: which code path decided to
//! free a client, for the close of its socket that follows in the same thread.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use redis_trace_ebpf::{ABSENT, NO_FLAGS};

use super::maps::{ASYNC_FREES, Decision, FREEING, Freeing, REDIS_FLAGS_OFFSET};

/// A deferred free normally follows its decision within one event-loop turn; a decision
/// older than this is stale (the uprobes were paused in between, and the client's
/// memory may since hold another client): a new decision replaces it.
const DECISION_STALE_NS: u64 = 2_000_000_000;

/// A free older than this is not the one behind a close (it was a client that had
/// already closed its end, or a free without a socket). Redis 8 with I/O threads first
/// takes the client back from its thread and only then closes the socket: more than 1 ms
/// later on a busy two-core host (with a 1 ms window its idle-timeout and CLIENT KILL
/// closes lost their code path), so the window is 50 ms; a stale entry is replaced by the
/// thread's next free.
const FREEING_FRESH_NS: u64 = 50_000_000;

/// What thread `tid` was freeing, if it began within [`FREEING_FRESH_NS`]; consumed.
#[inline(always)]
pub(super) fn take_freeing(tid: u32, now: u64) -> Option<Freeing> {
    // SAFETY: plain map lookup; the value is copied out at once.
    let f = unsafe { FREEING.get(&tid) }.copied()?;
    let _ = FREEING.remove(&tid);
    (now.saturating_sub(f.ts) < FREEING_FRESH_NS).then_some(f)
}

/// The caller of a uprobed function: at its first instruction the return address is
/// the word at the stack pointer (x86_64 call convention). And one frame further up:
/// the caller's own return address, the word above the frame pointer it saved, when it
/// keeps one (`push rbp; mov rbp, rsp`; the loader checks the caller's code before it
/// trusts this word, which is otherwise just stack data).
#[inline(always)]
fn callers(ctx: &ProbeContext) -> (u64, u64) {
    // SAFETY: `regs` is the probe's register set; the stack words are read through the
    // checked user-memory helper.
    unsafe {
        let sp = (*ctx.regs).rsp;
        let bp = (*ctx.regs).rbp;
        let ret = bpf_probe_read_user(sp as *const u64).unwrap_or(0);
        let up = if bp == 0 {
            0
        } else {
            bpf_probe_read_user((bp + 8) as *const u64).unwrap_or(0)
        };
        (ret, up)
    }
}

/// `client->flags` of Redis's client `c`, when this Redis version's layout is known.
#[inline(always)]
fn client_flags(tgid: u32, c: u64) -> u64 {
    // SAFETY: plain map lookup; the value is copied out at once.
    let Some(off) = (unsafe { REDIS_FLAGS_OFFSET.get(&tgid) }).copied() else {
        return NO_FLAGS;
    };
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
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The first decision stands (Redis calls freeClientAsync again for a client already
    // closing), unless it is stale.
    let key = [u64::from(tgid), c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let fresh = unsafe { ASYNC_FREES.get(&key) }
        .is_some_and(|d| now.saturating_sub(d.ts) < DECISION_STALE_NS);
    if !fresh {
        let (decided_in, decided_in_caller) = callers(&ctx);
        let d = Decision {
            decided_in,
            decided_in_caller,
            flags: client_flags(tgid, c),
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
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let (freed_from, freed_from_caller) = callers(&ctx);
    // An LTO build's exported stub and the local function it jumps to are both probed:
    // the second probe of one free (same client, same return address: a jump pushes
    // none) must not replace what the first recorded.
    // SAFETY: plain map lookup; the value is copied out at once.
    if unsafe { FREEING.get(&tid) }.is_some_and(|f| {
        f.client == c && f.freed_from == freed_from && now.saturating_sub(f.ts) < FREEING_FRESH_NS
    }) {
        return 0;
    }
    let key = [u64::from(tgid), c];
    // SAFETY: plain map lookup; the value is copied out at once.
    let decision = unsafe { ASYNC_FREES.get(&key) }.copied();
    if decision.is_some() {
        let _ = ASYNC_FREES.remove(&key);
    }
    let (decided_in, decided_in_caller, flags) = match decision {
        Some(d) if now.saturating_sub(d.ts) < DECISION_STALE_NS => {
            (d.decided_in, d.decided_in_caller, d.flags)
        }
        _ => (freed_from, freed_from_caller, client_flags(tgid, c)),
    };
    let f = Freeing {
        ts: now,
        client: c,
        freed_from,
        freed_from_caller,
        decided_in,
        decided_in_caller,
        flags,
    };
    let _ = FREEING.insert(&tid, &f, 0);
    0
}
