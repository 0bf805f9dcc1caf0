//! Evidence from outside the kernel: Redis itself (INFO, CONFIG GET, CLIENT LIST), its
//! log, and /proc.
pub mod evidence;
pub mod redis_client;
pub mod redis_log;
pub mod redis_tls;
