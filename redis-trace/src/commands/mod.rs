//! One module per subcommand; `main.rs` only dispatches.
pub mod capture;
pub mod demo;
pub mod diagnose;
pub mod report;
