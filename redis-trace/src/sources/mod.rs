//! What redis-trace reads besides the kernel: Redis itself (INFO, CONFIG GET, CLIENT
//! LIST), its log, and /proc. Both the capture pipeline and `diagnose` use them.
pub mod procinfo;
pub mod redis;
pub mod redis_log;
