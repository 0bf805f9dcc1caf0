//! redis-trace: who closed each Redis connection, from kernel evidence.
//!
//! The modules in the order data flows through them (docs/design.md has the map):
//! - [`kernel`]: tracefs, loading the eBPF programs and uprobes, decoding their records;
//! - [`pipeline`]: the capture loop: assemble one connection's records, enrich them;
//! - [`classify`]: the cause of each ended connection, with its evidence;
//! - [`sources`]: Redis (INFO, CONFIG GET, CLIENT LIST), its log, and /proc;
//! - [`schema`]: the JSON-lines records, written by the capture and read by the report;
//! - [`output`]: the writers (JSON lines, the human timeline); [`stderr`]: what it says;
//! - [`report`]: the postmortem report; [`diagnose`]: the configuration's risks;
//! - [`commands`]: one module per subcommand; [`cli`]: the command line;
//! - [`time`], [`signals`]: clocks and timestamps; Ctrl-C and SIGTERM.
pub mod cause;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod diagnose;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod signals;
pub mod sources;
pub mod stderr;
pub mod time;
