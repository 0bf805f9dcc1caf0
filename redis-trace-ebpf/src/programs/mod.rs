//! The tracepoint programs.
//!
//! Cost is what matters here: every TCP state change on the host runs
//! `inet_sock_set_state`. So the port filter comes first, a connection's state lives in
//! the `CONNS` map, and a connection produces one ring-buffer record when it ends (plus
//! RST and error events), written without waking userspace, which drains on a timer.
//!
//! Context matters too: close() and exit run in the closing task, so `current` names
//! who closed; anything driven by an incoming packet or a timer runs in softirq, where
//! `current` is whoever happened to be on the CPU. Records say which (`in_task`).
//!
//! By concern: [`maps`] (every map and global), [`read`] (tracepoint records and their
//! fields), [`conn`] (connection state, `inet_sock_set_state`), [`resets`] (RSTs and
//! socket errors), [`redis_uprobes`] (Redis's client frees), [`process`] (OOM kills,
//! signals, exits), [`packets`] (the `cgroup_skb` programs: what arrived at each end). Program and map names are what the loader attaches and opens by
//! (`redis-trace/src/kernel/load.rs`, `kernel/uprobes.rs`): keep them.

// aya-ebpf's map methods take `impl Borrow<K>`, so clippy asks for keys and values by
// value. By reference is cheaper here: by value, `inet_sock_set_state` (run on every TCP
// state change on the host) grew by ~100 instructions and 40 bytes of its 512-byte stack.
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys by reference: fewer instructions and less stack (see above)"
)]

/// Reads one field of `CONFIG`, not the whole 168-byte struct (`Global::load` copies it
/// all, on every event). Volatile, so that the placeholder value is not folded in.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: `Global<T>` is repr(transparent) over an initialised `T`, and CONFIG
        // is a static that lives as long as the program.
        unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const $crate::programs::maps::CONFIG)
                    .cast::<::redis_trace_ebpf::Config>())
                .$field,
            )
        }
    };
}

mod conn;
mod maps;
mod packets;
mod process;
mod read;
mod redis_uprobes;
mod resets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the programs: GPL, needed for the helpers used (bpf_probe_read_kernel, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
