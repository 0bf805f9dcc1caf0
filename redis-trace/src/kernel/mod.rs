//! The kernel side, from userspace: tracefs and the tracepoints' layouts, loading and
//! attaching the eBPF programs, the uprobes on redis-server, and decoding what the
//! programs hand over and joining one connection's records into one `KernelClose`.
pub mod assemble;
pub mod btf;
pub mod decode;
pub mod layout;
pub mod load;
pub mod packets;
pub mod redis_elf;
pub mod ring;
pub mod tracefs;
pub mod uprobes;
