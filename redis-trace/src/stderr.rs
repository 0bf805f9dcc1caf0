//! What the tool says to the operator on stderr: one line each, prefixed, and escaped as
//! a whole (a line may quote Redis, /proc or a path, which a local user can control).
use crate::output::escape_name;

/// `redis-trace: LINE`.
pub fn note(line: &str) {
    eprintln!("redis-trace: {}", escape_name(line));
}

/// `redis-trace: warning: LINE`.
pub fn warn(line: &str) {
    eprintln!("redis-trace: warning: {}", escape_name(line));
}

/// `redis-trace: error: LINE`.
pub fn error(line: &str) {
    eprintln!("redis-trace: error: {}", escape_name(line));
}
