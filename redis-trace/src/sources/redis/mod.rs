//! Redis's own view of its connections: INFO, CONFIG GET and CLIENT LIST, read-only.
//!
//! redis-trace runs on production hosts during incidents, so this module only ever *reads*:
//! the commands it sends are `AUTH` (when a password is given), `INFO`, `CONFIG GET` and
//! `CLIENT LIST`. A user with `+info +config|get +client|list` is enough. The client library
//! is told not to send `CLIENT SETINFO` or `SELECT`, and every socket operation has a 2 s
//! timeout so a hung Redis never blocks the tool.
//!
//! `CLIENT LIST` runs on Redis's main thread and costs O(clients), so [`Poller`] bounds it:
//! at most once per interval, never more often than 100x its own last duration, at most
//! every 10 s above 10 000 clients, and only while the capture asks for it.
//!
//! - `target`: where Redis is (URL, password, TLS): [`Target`];
//! - `parse`: the parsers of INFO, CONFIG GET and CLIENT LIST replies;
//! - `session`: one read-only, size-capped connection: [`Session`];
//! - `poller`: the background thread a capture reads Redis with: [`Poller`];
//! - `tls`: TLS with rustls.

mod parse;
mod poller;
mod session;
mod target;
pub mod tls;

pub use parse::{
    BufferLimit, ClientEntry, InfoCounters, RedisConfig, ServerId, ServerKind, parse_client_list,
    parse_config, parse_info,
};
pub use poller::{Poller, PollerMsg};
pub use session::{MAX_REPLY, Session, Snapshot};
pub use target::Target;
