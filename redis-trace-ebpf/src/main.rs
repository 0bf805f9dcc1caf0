//! Kernel side of redis-trace: tracepoint programs that follow connections on the traced
//! (Redis) ports and report, once per connection, who ended it.
//!
//! Built for `bpfel-unknown-none` by `redis-trace`'s build script. On the host this file
//! compiles to an empty program so that `cargo` commands over the workspace keep working.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
