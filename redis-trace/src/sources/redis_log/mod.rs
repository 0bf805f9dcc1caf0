//! Redis's own log: the lines where Redis says it closed a client, or is going away.
//!
//! Redis names the client it closes in its log (the file `CONFIG GET logfile` names), with
//! the same client info string CLIENT LIST prints (`id=5 addr=127.0.0.1:52442 ... flags=P
//! ... omem=82016 ...`). [`parse_line`] recognises those lines; [`LogTail`] follows the file
//! during a capture.
//!
//! The messages, as Redis 7.0 (src/networking.c, src/server.c, src/debug.c) writes them; the
//! same texts in Redis 6.x-8.x and Valkey 7.2-9 unless noted:
//!
//! - `Client <info> scheduled to be closed ASAP for overcoming of output buffer limits.`
//!   (`closeClientOnOutputBufferLimitReached`, async) and
//!   `Client <info> closed for overcoming of output buffer limits.` (the synchronous variant),
//!   level warning;
//! - `Closing client that reached max query buffer length: <info> (qbuf initial bytes: <repr>)`
//!   (`readQueryFromClient`; Valkey 8 `handleQbLimitReached`), warning; Valkey 9.1.2 wrote it
//!   without the `(qbuf initial bytes: ...)` part (user data hidden, the default);
//! - `Evicting client: <info>` (`evictClients`, maxmemory-clients, Redis >= 7.0), notice
//!   level in 7.0.15;
//! - `Protocol error (<what>) from client: <info>. Query buffer during protocol error: '<..>'`
//!   (`setProtocolError`), verbose (warning when the client is our master); Valkey 8.1+
//!   end it with `. Query buffer: <..>` (`*redacted*` by default);
//! - `Closing idle client` (`clientsCronHandleTimeout`, the `timeout` setting), verbose, no
//!   client info;
//! - `Client closed connection <info>` (the client closed, Redis only noticed), verbose;
//!   bare `Client closed connection` in 6.x;
//! - `Connection with replica <ip:listening port> lost.` (Redis 8: `Connection with replica
//!   (rdbchannel) <..> lost.` for the extra RDB connection; Valkey 8: `Replica <..> rdb
//!   channel disconnected.`) and `Connection with master lost.` (`primary` in Valkey 8+),
//!   written by `freeClient` for a replication link;
//! - `Received SIGTERM scheduling shutdown...`, `Received SIGINT scheduling shutdown...`,
//!   `Received shutdown signal, scheduling shutdown...`, `Received shutdown signal during
//!   loading, scheduling shutdown.`, `You insist... exiting now.` (a second SIGINT: immediate
//!   exit) (`sigShutdownHandler`, written from the signal handler as
//!   `<pid>:signal-handler (<unix seconds>) <message>`);
//! - `User requested shutdown...` (`prepareForShutdown`): written for SHUTDOWN *and* after
//!   a signal; [`LogTail`] and [`parse_lines`] attribute it to the signal when the same pid
//!   logged one just before. Valkey 8+ add ` (user request from '<info>')` for SHUTDOWN,
//!   naming the client that sent it;
//! - `Redis is now ready to exit, bye bye...` (`Valkey is now ...` in Valkey);
//! - `Redis 7.0.15 crashed by signal: 11, si_code: 2` (`sigsegvHandler`; `valkey-server
//!   <version> crashed ...` in Valkey, no `si_code` before Redis 6.0) and the raw line
//!   `=== REDIS BUG REPORT START: Cut & paste starting from here ===` (`=== VALKEY BUG ...`),
//!   which also starts assertion and panic reports.
//!
//! `<info>` is `catClientInfoString`: space-separated `key=value` fields whose values hold no
//! spaces (CLIENT SETNAME and ACL user names refuse them). `addr` is `ip:port`, `[ipv6]:port`
//! (anetFormatAddr brackets any address with a colon), or `<unix socket path>:0`.
//! Redis truncates a message to 1023 bytes (LOG_MAX_LEN), so a long client info can lose
//! the trailing text; an output-buffer line cut that way is still recognised.
//!
//! Line formats: `PID:ROLE DD Mon YYYY HH:MM:SS.mmm L message` (Redis >= 4; `DD Mon
//! HH:MM:SS.mmm` in 3.x, `[PID] DD Mon HH:MM:SS.mmm L message` in 2.x), Valkey's
//! `log-timestamp-format iso8601|milliseconds` variants, Valkey's `log-format logfmt`
//! (`pid=.. role=primary timestamp=".." level=.. message=".."`), the signal-handler form
//! above, and raw lines (crash reports). Timestamps are local time (Redis formats them with
//! its own localtime); they are interpreted in this host's time zone.
//!
//! - `parse`: a line's header (pid, role, timestamp, level) and the whole log in order;
//! - `classify`: what a message says ([`LogKind`]) and the client it names;
//! - `local_time`: the timestamps as calendar dates, in this host's time zone;
//! - `tail`: opening the file safely and following it ([`LogTail`], [`LogFollower`]).
use std::net::SocketAddr;
use std::time::SystemTime;

mod classify;
#[cfg(test)]
mod fixture_tests;
mod local_time;
mod parse;
mod tail;

pub use parse::{parse_line, parse_lines};
pub use tail::{LogFollower, LogLocation, LogTail, open_regular_file};

/// What a log line says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogKind {
    /// "Client ... scheduled to be closed ASAP for overcoming of output buffer limits." (or
    /// "Client ... closed for overcoming of output buffer limits.").
    OutputBufferLimit,
    /// "Closing client that reached max query buffer length: ...".
    QueryBufferLimit,
    /// "Evicting client: ..." (maxmemory-clients; notice level in Redis 7.0.15).
    ClientEviction,
    /// "Protocol error (...) from client: ..." (verbose level).
    ProtocolError,
    /// "Closing idle client" (`timeout`; verbose level). Redis names no client in it: only
    /// its time tells which close it was.
    IdleTimeout,
    /// "Client closed connection" (verbose level): the client closed its end, not Redis.
    /// Redis 7.0+ and Valkey append the client info; 6.x names no client.
    ClientClosedConnection,
    /// "Connection with replica <ip:port> lost." on a primary; `rdb_channel` for Redis 8's
    /// "Connection with replica (rdbchannel) <ip:port> lost." and Valkey 8's "Replica
    /// <ip:port> rdb channel disconnected.". The address is the one the replica announced
    /// (its listening port), not its connection's, so it is kept apart from `client_addr`.
    ReplicaLost {
        listening_addr: Option<SocketAddr>,
        rdb_channel: bool,
    },
    /// "Connection with master lost." ("... primary lost." in Valkey 8+), on a replica.
    PrimaryLost,
    /// "User requested shutdown..." (`by` = "SHUTDOWN command", or the signal when the same
    /// process logged one just before), "Received SIGTERM scheduling shutdown..." ("SIGTERM"),
    /// "Received SIGINT scheduling shutdown..." ("SIGINT"), "Received shutdown signal..."
    /// ("signal"), "You insist... exiting now." (a second SIGINT, "SIGINT"). Valkey 8+'s
    /// "User requested shutdown... (user request from '<info>')" names the client that
    /// sent SHUTDOWN in the event's client fields.
    ShutdownRequested { by: String },
    /// "Redis is now ready to exit, bye bye...".
    ReadyToExit,
    /// "Redis 7.0.15 crashed by signal: 11, si_code: 1"; `None` for the
    /// "=== REDIS BUG REPORT START" line (a crash, an assertion or a panic).
    Crash { signal: Option<i32> },
    /// Another close of a client named by address. No Redis 6.x-8.x or Valkey message found
    /// so far needs it: the parser does not produce it yet.
    ClientKilledByOther,
}

/// One line of interest from Redis's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// From the line's timestamp, interpreted in this host's time zone (Redis logs local
    /// time); `None` for raw lines and unparsable timestamps.
    pub time: Option<SystemTime>,
    pub pid: Option<u32>,
    /// M (master), S (replica), C (child), X (sentinel); `None` for lines written from a
    /// signal handler and raw lines.
    pub role: Option<char>,
    pub kind: LogKind,
    /// `addr=` of the client info (the client's end of the connection). For Valkey 8+'s
    /// "User requested shutdown... (user request from '<info>')", the client that sent
    /// SHUTDOWN.
    pub client_addr: Option<SocketAddr>,
    pub client_id: Option<u64>,
    /// `flags=`, e.g. "N", "P" (pub/sub), "S" (replica), "M" (master).
    pub client_flags: Option<String>,
    /// `name=`; `None` when empty or `*redacted*` (Valkey 8+ hides names by default,
    /// `hide-user-data-from-log yes`).
    pub client_name: Option<String>,
    pub omem: Option<u64>,
    pub qbuf: Option<u64>,
    /// The raw line, trimmed.
    pub line: String,
}
