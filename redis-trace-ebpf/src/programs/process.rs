//! Process events of watched processes (Redis servers, by name or pid): OOM kills,
//! fatal signals and exits. Rare and urgent: each wakes userspace.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use redis_trace_ebpf::{MAX_PROC_NAMES, ProcEvent, counter, kind, proc_event};

use super::maps::{EVENTS, PROC_NAMES, WATCHED_PIDS, count};
use super::read::{Rec, field};

/// Whether a process is one we watch: by comm, or by pid.
#[inline(always)]
fn watched(comm: &[u8; 16], pid: u32) -> bool {
    // SAFETY: plain map lookup.
    unsafe { WATCHED_PIDS.get(&pid) }.is_some() || watched_name(comm)
}

#[inline(always)]
fn watched_name(comm: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < MAX_PROC_NAMES {
        if let Some(name) = PROC_NAMES.get(i) {
            if name[0] != 0 && name == comm {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn new_proc_event(what: u32) -> ProcEvent {
    let id = bpf_get_current_pid_tgid();
    ProcEvent {
        kind: kind::PROC,
        what,
        pid: 0,
        actor_tgid: (id >> 32) as u32,
        actor_tid: id as u32,
        sig: 0,
        code: 0,
        result: 0,
        comm: [0; 16],
        actor_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        total_vm: 0,
        anon_rss: 0,
        file_rss: 0,
        shmem_rss: 0,
        pgtables: 0,
        uid: 0,
        oom_score_adj: 0,
    }
}

#[inline(always)]
fn emit_proc(ev: &ProcEvent) {
    // Rare and urgent: always wake userspace.
    if EVENTS
        .output::<ProcEvent>(ev, BPF_RB_FORCE_WAKEUP as u64)
        .is_err()
    {
        count(counter::RING_FULL);
    }
}

/// The furthest into `oom:mark_victim`'s record that its `comm` string may start (its
/// fixed part is 66 bytes in 6.8+ and in 6.1's backport).
const MAX_DATA_LOC_OFFSET: usize = 256;

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_mark_victim(&r));
    0
}

/// Every OOM victim is reported (rare, and a killed client explains resets too).
fn try_mark_victim(ctx: &Rec) -> Option<()> {
    let l = &config!(oom);
    let mut ev = new_proc_event(proc_event::OOM_VICTIM);
    ev.pid = field::<i32>(ctx, l.pid)? as u32;
    if let Some(loc) = field::<u32>(ctx, l.comm_loc) {
        // __data_loc: low 16 bits the offset of the string in the record, high 16 its length.
        let off = (loc & 0xffff) as usize;
        // The bound is for the verifier: 6.1's refuses `ctx + off` for an offset read from
        // the record ("math between ctx pointer and register with unbounded min value is
        // not allowed"), as the two byte loads that make up `off` lose its range there.
        // A comparison gives the register a range it can prove; the string follows the
        // record's fixed fields, well within it on every kernel.
        if off <= MAX_DATA_LOC_OFFSET {
            // SAFETY: reading within the tracepoint record through the checked helper.
            if let Ok(c) = unsafe { bpf_probe_read_kernel(ctx.ctx.add(off) as *const [u8; 16]) } {
                ev.comm = c;
            }
        }
    }
    ev.total_vm = field(ctx, l.total_vm).unwrap_or(0);
    ev.anon_rss = field(ctx, l.anon_rss).unwrap_or(0);
    ev.file_rss = field(ctx, l.file_rss).unwrap_or(0);
    ev.shmem_rss = field(ctx, l.shmem_rss).unwrap_or(0);
    ev.pgtables = field(ctx, l.pgtables).unwrap_or(0);
    ev.uid = field(ctx, l.uid).unwrap_or(0);
    ev.oom_score_adj = field::<i16>(ctx, l.oom_score_adj).unwrap_or(0) as i32;
    emit_proc(&ev);
    Some(())
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_signal_generate(&r));
    0
}

fn try_signal_generate(ctx: &Rec) -> Option<()> {
    let l = &config!(signal);
    let sig: i32 = field(ctx, l.sig)?;
    if !(0..64).contains(&sig) || config!(signal_mask) & (1u64 << sig) == 0 {
        return None;
    }
    let pid = field::<i32>(ctx, l.pid)? as u32;
    let comm: [u8; 16] = field(ctx, l.comm)?;
    if !watched(&comm, pid) {
        return None;
    }
    let mut ev = new_proc_event(proc_event::SIGNAL);
    ev.pid = pid;
    ev.comm = comm;
    ev.sig = sig;
    ev.code = field(ctx, l.code).unwrap_or(0);
    ev.result = field(ctx, l.result).unwrap_or(0);
    emit_proc(&ev);
    Some(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = Rec::copy(&ctx).and_then(|r| try_sched_process_exit(&r));
    0
}

fn try_sched_process_exit(ctx: &Rec) -> Option<()> {
    let l = &config!(exit);
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let main_thread = tgid == id as u32;
    let comm: [u8; 16] = field(ctx, l.comm)?;
    // The process is reported once, when its last thread exits (group_dead). That thread
    // may be any of Redis's (bio_*, jemalloc_bg_thd): it is the main thread's exit that
    // carries the process name, so remember a watched process's name then.
    if main_thread && watched_name(&comm) {
        let _ = WATCHED_PIDS.insert(&tgid, &comm, 0);
    }
    let whole = match field::<u8>(ctx, l.group_dead) {
        Some(g) => g != 0,
        None => main_thread,
    };
    if !whole {
        return None;
    }
    // SAFETY: plain map lookup; the value is copied out at once.
    let name = unsafe { WATCHED_PIDS.get(&tgid) }.copied()?;
    let _ = WATCHED_PIDS.remove(&tgid);
    let mut ev = new_proc_event(proc_event::EXIT);
    ev.pid = tgid;
    ev.comm = if name[0] != 0 { name } else { comm };
    ev.sig = 1;
    emit_proc(&ev);
    Some(())
}
