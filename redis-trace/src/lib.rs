//! redis-trace: who closed each Redis connection, from kernel evidence.
//!
//! - [`capture`]: the kernel programs' loader and the capture loop;
//! - [`record`]: the JSON-lines records it writes;
//! - [`output`]: the writers (JSON lines, the human timeline); [`stderr`]: what it says;
//! - [`tracefs`], [`procinfo`]: what the kernel and /proc tell about this host.
pub mod capture;
pub mod cause;
pub mod cli;
pub mod demo;
pub mod diagnose;
pub mod enrich;
pub mod output;
pub mod postmortem;
pub mod procinfo;
pub mod record;
pub mod report;
pub mod signals;
pub mod stderr;
pub mod timefmt;
pub mod tracefs;
