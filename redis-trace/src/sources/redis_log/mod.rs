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
//!   (`readQueryFromClient`), warning;
//! - `Evicting client: <info>` (`evictClients`, maxmemory-clients, Redis >= 7.0), notice
//!   level in 7.0.15;
//! - `Protocol error (<what>) from client: <info>. Query buffer during protocol error: '<..>'`
//!   (`setProtocolError`), verbose (warning when the client is our master);
//! - `Received SIGTERM scheduling shutdown...`, `Received SIGINT scheduling shutdown...`,
//!   `Received shutdown signal, scheduling shutdown...`, `Received shutdown signal during
//!   loading, scheduling shutdown.`, `You insist... exiting now.` (a second SIGINT: immediate
//!   exit) (`sigShutdownHandler`, written from the signal handler as
//!   `<pid>:signal-handler (<unix seconds>) <message>`);
//! - `User requested shutdown...` (`prepareForShutdown`): written for SHUTDOWN *and* after
//!   a signal; [`LogTail`] and [`parse_lines`] attribute it to the signal when the same pid
//!   logged one just before;
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

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

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
    /// "User requested shutdown..." (`by` = "SHUTDOWN command", or the signal when the same
    /// process logged one just before), "Received SIGTERM scheduling shutdown..." ("SIGTERM"),
    /// "Received SIGINT scheduling shutdown..." ("SIGINT"), "Received shutdown signal..."
    /// ("signal"), "You insist... exiting now." (a second SIGINT, "SIGINT").
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
    /// `addr=` of the client info (the client's end of the connection).
    pub client_addr: Option<SocketAddr>,
    pub client_id: Option<u64>,
    /// `flags=`, e.g. "N", "P" (pub/sub), "S" (replica), "M" (master).
    pub client_flags: Option<String>,
    /// `name=`; `None` when empty.
    pub client_name: Option<String>,
    pub omem: Option<u64>,
    pub qbuf: Option<u64>,
    /// The raw line, trimmed.
    pub line: String,
}

/// Parses one log line; `None` for lines of no interest.
///
/// Stateless: "User requested shutdown..." is always `by: "SHUTDOWN command"` here; see
/// [`parse_lines`] and [`LogTail`] for the attribution to a preceding signal.
pub fn parse_line(line: &str) -> Option<LogEvent> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let header = parse_header(line);
    let (kind, info) = match &header {
        Some(h) => classify(h.msg)?,
        // Lines without a header are raw output (crash reports, INFO, CLIENT LIST): only the
        // bug report banner counts, never something that merely looks like a message.
        None => (classify_raw(line)?, None),
    };
    let fields = info.map(ClientFields::parse).unwrap_or_default();
    Some(LogEvent {
        time: header.as_ref().and_then(|h| h.time),
        pid: header.as_ref().and_then(|h| h.pid),
        role: header.as_ref().and_then(|h| h.role),
        kind,
        client_addr: fields.addr,
        client_id: fields.id,
        client_flags: fields.flags,
        client_name: fields.name,
        omem: fields.omem,
        qbuf: fields.qbuf,
        line: line.to_string(),
    })
}

/// Parses a whole log text, in order, attributing "User requested shutdown..." to the
/// signal the same process logged just before (as [`LogTail::poll`] does).
pub fn parse_lines(text: &str) -> Vec<LogEvent> {
    let mut ctx = Context::default();
    text.lines()
        .filter_map(parse_line)
        .map(|mut ev| {
            ctx.apply(&mut ev);
            ev
        })
        .collect()
}

/// Opens the Redis log at `path` for reading, safely: the path comes from Redis (`CONFIG
/// GET logfile`), which a hostile or compromised server controls. A symlink as the last
/// component is refused (`O_NOFOLLOW`: no reading /etc/shadow through a planted link), the
/// open never blocks (`O_NONBLOCK`: a FIFO would hang the capture), and anything but a
/// regular file is refused before a byte is read.
pub fn open_regular_file(path: &Path) -> anyhow::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "the Redis log {} is a symbolic link: not followed (name the file itself in \
                     Redis's logfile)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening the Redis log {}", path.display()))
            }
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat of the Redis log {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "the Redis log {} is not a regular file: not read",
            path.display()
        );
    }
    Ok((file, meta))
}

/// Follows a Redis log file: what is appended after [`LogTail::open`], across truncation
/// and rotation.
pub struct LogTail {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    /// Offset in `file` up to which we have read.
    pos: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// Drop bytes up to the next newline: we started mid-line, or the line was too long.
    skipping: bool,
    ctx: Context,
}

/// A [`LogTail`] read on a thread of its own, so that a slow file system (a hung NFS
/// mount) can delay the log lines but never the capture's loop. The thread stops when
/// this is dropped.
pub struct LogFollower {
    rx: std::sync::mpsc::Receiver<Vec<LogEvent>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often the follower thread looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(20);

impl LogFollower {
    pub fn start(mut tail: LogTail) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("redis-log".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let events = tail.poll();
                    // A full channel waits for the reader; a gone one ends the thread.
                    if !events.is_empty() && tx.send(events).is_err() {
                        return;
                    }
                    std::thread::sleep(FOLLOW_EVERY);
                }
            })
            .context("starting the Redis log reader thread")?;
        Ok(Self { rx, stop })
    }

    /// The lines read since the last call, without waiting.
    pub fn poll(&mut self) -> Vec<LogEvent> {
        let mut out = Vec::new();
        while let Ok(events) = self.rx.try_recv() {
            out.extend(events);
        }
        out
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// At most this much is read per [`LogTail::poll`]; the rest waits for the next call.
const MAX_READ_PER_POLL: u64 = 4 * 1024 * 1024;
/// A line longer than this (only raw dumps are) is dropped rather than buffered.
const MAX_LINE: usize = 1024 * 1024;

impl LogTail {
    /// Opens the log and positions at its current end (we only want what happens during
    /// the capture).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let (file, meta) = open_regular_file(path)?;
        let pos = meta.len();
        let skipping = pos > 0 && !byte_before_is_newline(&file, pos);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            pos,
            partial: Vec::new(),
            skipping,
            ctx: Context::default(),
        })
    }

    /// Lines appended since the last call, parsed. A file that shrank (truncated) is read
    /// again from its start; when the path names another file (rotated: renamed away and
    /// recreated), what is left in the old one is read first, then the new one from its
    /// start. Bounded: reads at most 4 MiB per call.
    pub fn poll(&mut self) -> Vec<LogEvent> {
        let mut out = Vec::new();
        let mut budget = MAX_READ_PER_POLL;
        // Finish the file we hold (also when the path is gone or renamed).
        self.read_available(&mut budget, &mut out);
        if budget == 0 {
            return out;
        }
        let rotated = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => meta.dev() != self.dev || meta.ino() != self.ino,
            // Renamed and not recreated yet: keep the old file, look again next time.
            Err(_) => false,
        };
        if rotated {
            // The new file gets the same checks as the first (a symlink or FIFO put in
            // its place is not followed).
            if let Ok((file, meta)) = open_regular_file(&self.path) {
                {
                    // A last line without its newline in the old file: take it as complete.
                    self.end_line(&[], &mut out);
                    self.file = file;
                    self.dev = meta.dev();
                    self.ino = meta.ino();
                    self.pos = 0;
                    self.partial.clear();
                    self.skipping = false;
                    self.read_available(&mut budget, &mut out);
                }
            }
        }
        out
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what `self.file` holds past `self.pos`, within `budget`.
    fn read_available(&mut self, budget: &mut u64, out: &mut Vec<LogEvent>) {
        let len = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        if len < self.pos {
            // Truncated (logrotate copytruncate, `> file`): start again from the top.
            self.pos = 0;
            self.partial.clear();
            self.skipping = false;
        }
        let want = (len - self.pos).min(*budget);
        if want == 0 {
            return;
        }
        if self.file.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        let got = match (&self.file).take(want).read_to_end(&mut buf) {
            Ok(n) => n as u64,
            Err(_) => return,
        };
        self.pos += got;
        *budget = budget.saturating_sub(got);
        self.feed(&buf, out);
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<LogEvent>) {
        let mut segments = bytes.split(|b| *b == b'\n').peekable();
        while let Some(seg) = segments.next() {
            if segments.peek().is_some() {
                self.end_line(seg, out);
            } else if !self.skipping {
                // The unterminated rest: keep it for the next call.
                self.partial.extend_from_slice(seg);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// `seg` ends the current line (the newline was seen, or the file was left behind).
    fn end_line(&mut self, seg: &[u8], out: &mut Vec<LogEvent>) {
        if self.skipping {
            self.skipping = false;
            self.partial.clear();
            return;
        }
        let ev = if self.partial.is_empty() {
            parse_line(&String::from_utf8_lossy(seg))
        } else {
            self.partial.extend_from_slice(seg);
            let ev = parse_line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
            ev
        };
        if let Some(mut ev) = ev {
            self.ctx.apply(&mut ev);
            out.push(ev);
        }
    }
}

fn byte_before_is_newline(mut file: &File, pos: u64) -> bool {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(pos - 1)).is_ok() && file.read_exact(&mut b).is_ok() && b[0] == b'\n'
}

/// What earlier lines tell about later ones.
#[derive(Debug, Default)]
struct Context {
    /// The last "Received SIG... scheduling shutdown" not yet followed by its "User requested
    /// shutdown...": (pid, signal).
    pending_signal: Option<(Option<u32>, String)>,
}

impl Context {
    fn apply(&mut self, ev: &mut LogEvent) {
        match &mut ev.kind {
            LogKind::ShutdownRequested { by } if by == SHUTDOWN_COMMAND => {
                if let Some((pid, signal)) = self.pending_signal.take() {
                    if pid == ev.pid {
                        *by = signal;
                    }
                }
            }
            LogKind::ShutdownRequested { by } => {
                self.pending_signal = Some((ev.pid, by.clone()));
            }
            LogKind::ReadyToExit | LogKind::Crash { .. } => self.pending_signal = None,
            _ => {}
        }
    }
}

/// The prefix of a log line.
struct Header<'a> {
    pid: Option<u32>,
    role: Option<char>,
    time: Option<SystemTime>,
    msg: &'a str,
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    if line.starts_with("pid=") {
        return parse_logfmt(line);
    }
    if let Some(rest) = line.strip_prefix('[') {
        // Redis 2.x: "[PID] DD Mon HH:MM:SS.mmm L message".
        let (pid, rest) = rest.split_once("] ")?;
        let pid = parse_digits::<u32>(pid)?;
        let (time, msg) = parse_stamp_and_level(rest)?;
        return Some(Header {
            pid: Some(pid),
            role: None,
            time,
            msg,
        });
    }
    let (pid, rest) = line.split_once(':')?;
    let pid = parse_digits::<u32>(pid)?;
    if let Some(rest) = rest.strip_prefix("signal-handler (") {
        // "PID:signal-handler (UNIXSECS) message"
        let (secs, msg) = rest.split_once(") ")?;
        let secs = parse_digits::<u64>(secs)?;
        let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        return Some(Header {
            pid: Some(pid),
            role: None,
            time,
            msg,
        });
    }
    let mut chars = rest.chars();
    let role = chars.next().filter(|c| c.is_ascii_uppercase())?;
    let rest = chars.as_str().strip_prefix(' ')?;
    let (time, msg) = parse_stamp_and_level(rest)?;
    Some(Header {
        pid: Some(pid),
        role: Some(role),
        time,
        msg,
    })
}

/// "<timestamp> <level char> <message>", the timestamp in one of the forms Redis and Valkey
/// write. The time is `None` when the timestamp has the right shape but not a valid value.
fn parse_stamp_and_level(s: &str) -> Option<(Option<SystemTime>, &str)> {
    let (first, rest) = s.split_once(' ')?;
    let (time, rest) = if first.len() <= 2 && first.bytes().all(|b| b.is_ascii_digit()) {
        // "DD Mon YYYY HH:MM:SS.mmm" or "DD Mon HH:MM:SS.mmm"
        let (mon, rest) = rest.split_once(' ')?;
        month_number(mon)?;
        let (third, rest2) = rest.split_once(' ')?;
        if third.contains(':') {
            (parse_legacy_stamp(first, mon, None, third), rest2)
        } else {
            let (clock, rest3) = rest2.split_once(' ')?;
            let year = parse_digits::<i32>(third)?;
            (parse_legacy_stamp(first, mon, Some(year), clock), rest3)
        }
    } else if first.len() >= 10 && first.bytes().all(|b| b.is_ascii_digit()) {
        // Valkey log-timestamp-format milliseconds.
        let ms = parse_digits::<u64>(first)?;
        (UNIX_EPOCH.checked_add(Duration::from_millis(ms)), rest)
    } else if first.len() >= 19 && first.as_bytes().get(10) == Some(&b'T') {
        // Valkey log-timestamp-format iso8601.
        (parse_iso8601(first), rest)
    } else {
        return None;
    };
    let (level, msg) = match rest.split_once(' ') {
        Some(pair) => pair,
        None => (rest, ""),
    };
    if !matches!(level, "." | "-" | "*" | "#") {
        return None;
    }
    Some((time, msg))
}

/// Valkey `log-format logfmt`:
/// `pid=1 role=primary timestamp="..." level=notice message="..."`.
fn parse_logfmt(line: &str) -> Option<Header<'_>> {
    let rest = line.strip_prefix("pid=")?;
    let (pid, rest) = rest.split_once(' ')?;
    let pid = parse_digits::<u32>(pid)?;
    let rest = rest.strip_prefix("role=")?;
    // Role names hold a '/' ("RDB/AOF") but no space.
    let (role, rest) = rest.split_once(' ')?;
    let role = match role {
        "primary" | "master" => Some('M'),
        "replica" | "slave" => Some('S'),
        "RDB/AOF" | "child" => Some('C'),
        "sentinel" => Some('X'),
        _ => None,
    };
    let rest = rest.strip_prefix("timestamp=\"")?;
    let (stamp, rest) = rest.split_once("\" ")?;
    let rest = rest.strip_prefix("level=")?;
    let (_level, rest) = rest.split_once(' ')?;
    let msg = rest.strip_prefix("message=\"")?;
    let msg = msg.strip_suffix('"').unwrap_or(msg);
    let time = parse_any_stamp(stamp);
    Some(Header {
        pid: Some(pid),
        role,
        time,
        msg,
    })
}

fn parse_any_stamp(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split(' ').collect();
    match parts.as_slice() {
        [day, mon, year, clock] => parse_legacy_stamp(day, mon, Some(parse_digits(year)?), clock),
        [day, mon, clock] => parse_legacy_stamp(day, mon, None, clock),
        [one] if one.len() >= 10 && one.bytes().all(|b| b.is_ascii_digit()) => {
            UNIX_EPOCH.checked_add(Duration::from_millis(parse_digits(one)?))
        }
        [one] => parse_iso8601(one),
        _ => None,
    }
}

/// `by` of "User requested shutdown...", which prepareForShutdown also logs after a signal.
const SHUTDOWN_COMMAND: &str = "SHUTDOWN command";

/// What the message says, and the client info string in it if any.
fn classify(msg: &str) -> Option<(LogKind, Option<&str>)> {
    const OBL_ASYNC: &str = " scheduled to be closed ASAP for overcoming of output buffer limits";
    const OBL_SYNC: &str = " closed for overcoming of output buffer limits";
    if let Some(rest) = msg.strip_prefix("Client ") {
        if let Some(i) = rest.find(OBL_ASYNC).or_else(|| rest.find(OBL_SYNC)) {
            return Some((LogKind::OutputBufferLimit, Some(&rest[..i])));
        }
        // Cut at LOG_MAX_LEN (1023 bytes) before the reason: a client info that long is
        // only ever logged this way.
        if rest.starts_with("id=") && msg.len() >= 1000 {
            return Some((LogKind::OutputBufferLimit, Some(rest)));
        }
        return None;
    }
    if let Some(rest) = msg.strip_prefix("Closing client that reached max query buffer length: ") {
        let info = rest
            .find(" (qbuf initial bytes: ")
            .map_or(rest, |i| &rest[..i]);
        return Some((LogKind::QueryBufferLimit, Some(info)));
    }
    if let Some(rest) = msg.strip_prefix("Evicting client: ") {
        return Some((LogKind::ClientEviction, Some(rest)));
    }
    if let Some(rest) = msg.strip_prefix("Protocol error (") {
        let (_, rest) = rest.split_once(") from client: ")?;
        let info = rest
            .find(". Query buffer during protocol error")
            .map_or(rest, |i| &rest[..i]);
        return Some((LogKind::ProtocolError, Some(info)));
    }
    if msg.starts_with("User requested shutdown") {
        return Some(shutdown(SHUTDOWN_COMMAND));
    }
    if msg.starts_with("Received SIGTERM scheduling shutdown") {
        return Some(shutdown("SIGTERM"));
    }
    if msg.starts_with("Received SIGINT scheduling shutdown") {
        return Some(shutdown("SIGINT"));
    }
    if msg.starts_with("You insist... exiting now") {
        // A second SIGINT while shutting down: exit(1) at once, no "bye bye".
        return Some(shutdown("SIGINT"));
    }
    if msg.starts_with("Received shutdown signal") && msg.contains("scheduling shutdown") {
        return Some(shutdown("signal"));
    }
    if let Some(name) = msg.strip_suffix(" is now ready to exit, bye bye...") {
        if !name.contains(' ') {
            return Some((LogKind::ReadyToExit, None));
        }
    }
    if let Some(i) = msg.find(" crashed by signal: ") {
        // "<Redis|valkey-server> <version> crashed by signal: N[, si_code: C]"
        if msg[..i].split(' ').count() == 2 {
            let digits: String = msg[i + " crashed by signal: ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let signal = digits.parse::<i32>().ok();
            return Some((LogKind::Crash { signal }, None));
        }
    }
    classify_raw(msg).map(|k| (k, None))
}

fn classify_raw(line: &str) -> Option<LogKind> {
    let banner = line.strip_prefix("=== ")?;
    let (_, rest) = banner.split_once(' ')?;
    if rest.starts_with("BUG REPORT START") {
        return Some(LogKind::Crash { signal: None });
    }
    None
}

fn shutdown(by: &str) -> (LogKind, Option<&'static str>) {
    (LogKind::ShutdownRequested { by: by.to_string() }, None)
}

/// The fields of a client info string we keep; the first occurrence of each counts (the
/// fixed fields come first, before anything a client chooses).
#[derive(Debug, Default)]
struct ClientFields {
    id: Option<u64>,
    addr: Option<SocketAddr>,
    flags: Option<String>,
    name: Option<String>,
    omem: Option<u64>,
    qbuf: Option<u64>,
}

impl ClientFields {
    fn parse(info: &str) -> Self {
        let mut f = Self::default();
        let (mut id, mut addr, mut flags, mut name, mut omem, mut qbuf) =
            (false, false, false, false, false, false);
        for (key, value) in info.split(' ').filter_map(|t| t.split_once('=')) {
            match key {
                "id" if !id => {
                    id = true;
                    f.id = parse_digits(value);
                }
                "addr" if !addr => {
                    addr = true;
                    f.addr = parse_client_addr(value);
                }
                "flags" if !flags => {
                    flags = true;
                    f.flags = Some(value.to_string()).filter(|v| !v.is_empty());
                }
                "name" if !name => {
                    name = true;
                    f.name = Some(value.to_string()).filter(|v| !v.is_empty());
                }
                "omem" if !omem => {
                    omem = true;
                    f.omem = parse_digits(value);
                }
                "qbuf" if !qbuf => {
                    qbuf = true;
                    f.qbuf = parse_digits(value);
                }
                _ => {}
            }
        }
        f
    }
}

/// `127.0.0.1:52442`, `[::1]:52442`, `::1:52442` (unbracketed, as very old Redis and some
/// tools write it); `None` for unix sockets (`/path:0`) and anything else.
pub(crate) fn parse_client_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = parse_digits::<u16>(port)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // A zone we cannot resolve to an index ("fe80::1%eth0"): keep the address.
    let host = host.split('%').next().unwrap_or(host);
    let ip = host.parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(mon: &str) -> Option<i32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS
        .iter()
        .position(|m| *m == mon)
        .and_then(|i| i32::try_from(i).ok())
}

/// "HH:MM:SS.fff" -> (h, m, s, nanoseconds).
fn parse_clock(s: &str) -> Option<(i32, i32, i32, u32)> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (s, ""),
    };
    let mut it = hms.split(':');
    let h = parse_digits::<i32>(it.next()?)?;
    let m = parse_digits::<i32>(it.next()?)?;
    let sec = parse_digits::<i32>(it.next()?)?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 {
            return None;
        }
        let v = parse_digits::<u32>(frac)?;
        v * 10u32.pow(9 - frac.len() as u32)
    };
    Some((h, m, sec, nanos))
}

/// A local date and time (as Redis writes it) to a point in time, via mktime(3) in this
/// host's time zone. Without a year (Redis 3.x), the most recent such date that is not more
/// than a day ahead of now.
fn parse_legacy_stamp(day: &str, mon: &str, year: Option<i32>, clock: &str) -> Option<SystemTime> {
    let day = parse_digits::<i32>(day)?;
    let mon = month_number(mon)?;
    let (h, m, s, nanos) = parse_clock(clock)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let to_time = |year: i32| local_to_system_time(year, mon, day, h, m, s, nanos);
    match year {
        Some(y) => to_time(y),
        None => {
            let now = SystemTime::now();
            let this_year = local_year(now)?;
            let t = to_time(this_year)?;
            if t > now + Duration::from_secs(86_400) {
                to_time(this_year - 1)
            } else {
                Some(t)
            }
        }
    }
}

fn local_to_system_time(
    year: i32,
    mon0: i32,
    day: i32,
    h: i32,
    m: i32,
    s: i32,
    nanos: u32,
) -> Option<SystemTime> {
    // SAFETY: an all-zero `tm` is valid (integers and a null tm_zone that mktime ignores).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = mon0;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    tm.tm_isdst = -1; // let the zone rules decide
    // SAFETY: `tm` is a valid, exclusively borrowed struct tm; mktime only reads the zone
    // data it loads itself.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        return None;
    }
    let secs = u64::try_from(t).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn local_year(t: SystemTime) -> Option<i32> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    // time_t, inferred from localtime_r (naming it is deprecated on musl).
    let secs = secs.try_into().ok()?;
    // SAFETY: as above, an all-zero `tm` is valid; localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let r = unsafe { libc::localtime_r(&secs, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(tm.tm_year + 1900)
}

/// "2026-11-25T16:47:02.552+01:00" (also "Z", "+0100", "+01"; without a zone: local time).
fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let year = parse_digits::<i32>(d.next()?)?;
    let mon = parse_digits::<i32>(d.next()?)?;
    let day = parse_digits::<i32>(d.next()?)?;
    if d.next().is_some() || !(1..=12).contains(&mon) || !(1..=31).contains(&day) {
        return None;
    }
    let zone_at = rest.find(['Z', '+', '-']);
    let (clock, zone) = match zone_at {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (h, m, sec, nanos) = parse_clock(clock)?;
    let offset_secs: i64 = match zone {
        None => return local_to_system_time(year, mon - 1, day, h, m, sec, nanos),
        Some("Z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            let (oh, om) = match digits.len() {
                2 => (parse_digits::<i64>(&digits)?, 0),
                // `get`: four bytes need not be four characters ("€1").
                4 => (
                    parse_digits::<i64>(digits.get(..2)?)?,
                    parse_digits::<i64>(digits.get(2..)?)?,
                ),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(year), i64::from(mon), i64::from(day));
    let secs =
        days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(sec) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const CLIENTS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-clients.log"
    ));
    const SIGTERM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-sigterm.log"
    ));
    const SIGINT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-sigint.log"
    ));
    const SEGFAULT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redis-log/redis-7.0-segfault.log"
    ));

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    /// The local calendar fields of `t`, to check a parsed time without assuming a zone.
    fn local_fields(t: SystemTime) -> (i32, i32, i32, i32, i32, i32, u32) {
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        let secs = libc::time_t::try_from(d.as_secs()).expect("fits time_t");
        // SAFETY: zeroed tm is valid; localtime_r writes into it.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        let r = unsafe { libc::localtime_r(&secs, &mut tm) };
        assert!(!r.is_null());
        (
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            d.subsec_millis(),
        )
    }

    #[test]
    fn redis_log_fixture_clients() {
        let evs = parse_lines(CLIENTS);
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                LogKind::OutputBufferLimit,
                LogKind::QueryBufferLimit,
                LogKind::ClientEviction,
                LogKind::ProtocolError,
                LogKind::ProtocolError,
                LogKind::ProtocolError,
                LogKind::ShutdownRequested {
                    by: "SHUTDOWN command".into()
                },
                LogKind::ReadyToExit,
            ]
        );
        for e in &evs {
            assert_eq!(e.pid, Some(20070));
            assert_eq!(e.role, Some('M'));
            assert!(e.time.is_some(), "{}", e.line);
        }

        let obl = &evs[0];
        assert_eq!(obl.client_addr, addr("127.0.0.1:51480"));
        assert_eq!(obl.client_id, Some(5));
        assert_eq!(obl.client_flags.as_deref(), Some("P"));
        assert_eq!(obl.client_name.as_deref(), Some("slow-subscriber"));
        assert_eq!(obl.omem, Some(82016));
        assert_eq!(obl.qbuf, Some(0));
        assert!(
            obl.line
                .starts_with("20070:M 25 Nov 2026 16:47:02.552 # Client id=5")
        );
        assert!(obl.line.ends_with("output buffer limits."));
        let t = obl.time.expect("time");
        assert_eq!(local_fields(t), (2026, 11, 25, 16, 47, 2, 552));

        let qbl = &evs[1];
        assert_eq!(qbl.client_addr, addr("127.0.0.1:33488"));
        assert_eq!(qbl.client_id, Some(6));
        assert_eq!(qbl.client_flags.as_deref(), Some("N"));
        assert_eq!(qbl.client_name.as_deref(), Some("bulk-loader"));
        assert_eq!(qbl.qbuf, Some(1_310_720));
        assert_eq!(qbl.omem, Some(0));
        assert_eq!(
            local_fields(qbl.time.expect("time")),
            (2026, 11, 25, 16, 47, 3, 395)
        );

        let evict = &evs[2];
        assert_eq!(evict.client_addr, addr("127.0.0.1:33496"));
        assert_eq!(evict.client_name.as_deref(), Some("memory-hog"));
        assert_eq!(evict.qbuf, Some(1_572_864));

        let proto = &evs[3];
        assert_eq!(proto.client_addr, addr("127.0.0.1:33498"));
        assert_eq!(proto.client_name.as_deref(), Some("bad-bulk"));
        assert_eq!(proto.client_id, Some(8));
        // No name set: `name=` is empty.
        assert_eq!(evs[4].client_name, None);
        assert_eq!(evs[4].client_addr, addr("127.0.0.1:33500"));
        assert_eq!(evs[5].client_addr, addr("127.0.0.1:33510"));

        assert_eq!(evs[6].client_addr, None);
        assert_eq!(evs[7].client_addr, None);
    }

    #[test]
    fn redis_log_fixture_noise_is_ignored() {
        for l in CLIENTS.lines() {
            let interesting = l.contains("output buffer limits")
                || l.contains("max query buffer")
                || l.contains("Evicting client")
                || l.contains("Protocol error")
                || l.contains("shutdown")
                || l.contains("bye bye");
            assert_eq!(parse_line(l).is_some(), interesting, "{l}");
        }
        // A client closing its own connection is not Redis closing it.
        assert!(
            CLIENTS
                .lines()
                .any(|l| l.contains("Client closed connection id=")),
            "fixture has the verbose close line"
        );
    }

    #[test]
    fn redis_log_fixture_sigterm_and_sigint() {
        for (text, sig, pid, secs) in [
            (SIGTERM, "SIGTERM", 20075, 1_795_625_225),
            (SIGINT, "SIGINT", 20080, 1_795_625_225),
        ] {
            let evs = parse_lines(text);
            let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
            let by = LogKind::ShutdownRequested { by: sig.into() };
            assert_eq!(kinds, vec![by.clone(), by, LogKind::ReadyToExit]);
            // Written from the signal handler: unix seconds, no role.
            assert_eq!(evs[0].pid, Some(pid));
            assert_eq!(evs[0].role, None);
            assert_eq!(evs[0].time, Some(UNIX_EPOCH + Duration::from_secs(secs)));
            assert_eq!(evs[1].role, Some('M'));
            // Alone, the prepareForShutdown line cannot tell.
            let alone = parse_line(&evs[1].line).expect("parsed");
            assert_eq!(
                alone.kind,
                LogKind::ShutdownRequested {
                    by: "SHUTDOWN command".into()
                }
            );
        }
    }

    #[test]
    fn redis_log_fixture_segfault() {
        let evs = parse_lines(SEGFAULT);
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        // The CLIENT LIST / CURRENT CLIENT INFO dumps in the report are not events.
        assert_eq!(
            kinds,
            vec![
                LogKind::Crash { signal: None },
                LogKind::Crash { signal: Some(11) }
            ]
        );
        assert_eq!(evs[0].pid, None);
        assert_eq!(evs[0].time, None);
        assert_eq!(evs[1].pid, Some(20085));
        assert_eq!(evs[1].role, Some('M'));
        assert_eq!(
            local_fields(evs[1].time.expect("time")),
            (2026, 11, 25, 16, 47, 6, 111)
        );
    }

    const OBL_V6: &str = "7:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=[::1]:52442 laddr=[::1]:6379 fd=8 name=worker age=3 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=20474 argv-mem=0 multi-mem=0 rbs=16384 rbp=16384 obl=16384 oll=4 omem=82016 tot-mem=119704 events=rw cmd=subscribe user=default redir=-1 resp=2 lib-name= lib-ver= scheduled to be closed ASAP for overcoming of output buffer limits.";

    #[test]
    fn redis_log_addresses() {
        let e = parse_line(OBL_V6).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_addr, addr("[::1]:52442"));
        assert_eq!(e.client_name.as_deref(), Some("worker"));
        assert_eq!(parse_client_addr("::1:6379"), addr("[::1]:6379"));
        assert_eq!(
            parse_client_addr("[fe80::1%eth0]:6379"),
            addr("[fe80::1]:6379")
        );
        assert_eq!(
            parse_client_addr("::ffff:10.0.0.1:40000"),
            addr("[::ffff:10.0.0.1]:40000")
        );
        assert_eq!(parse_client_addr("10.1.2.3:1"), addr("10.1.2.3:1"));
        assert_eq!(parse_client_addr("/tmp/redis.sock:0"), None);
        assert_eq!(parse_client_addr("127.0.0.1"), None);
        assert_eq!(parse_client_addr("127.0.0.1:99999"), None);
        // Unix socket client: recognised, no address.
        let unix = OBL_V6.replace("addr=[::1]:52442", "addr=/run/redis.sock:0");
        let e = parse_line(&unix).expect("parsed");
        assert_eq!(e.client_addr, None);
        assert_eq!(e.client_id, Some(5));
    }

    #[test]
    fn redis_log_client_data_cannot_spoof_fields() {
        // The query buffer dump is the client's bytes: only the client info counts.
        let l = "1:M 25 Nov 2026 16:47:03.395 # Closing client that reached max query buffer length: id=6 addr=127.0.0.1:33488 laddr=127.0.0.1:6379 fd=7 name= age=0 idle=0 flags=N db=0 qbuf=1310720 omem=0 cmd=NULL user=default redir=-1 resp=2 (qbuf initial bytes: \"addr=10.9.9.9:1 name=evil flags=S\")";
        let e = parse_line(l).expect("parsed");
        assert_eq!(e.client_addr, addr("127.0.0.1:33488"));
        assert_eq!(e.client_name, None);
        assert_eq!(e.client_flags.as_deref(), Some("N"));
        // A message that only quotes one of ours is not one.
        assert!(
            parse_line("1:M 25 Nov 2026 16:47:03.395 * DB 0: User requested shutdown... keys")
                .is_none()
        );
        assert!(
            parse_line("id=4 addr=127.0.0.1:43148 laddr=127.0.0.1:27414 fd=8 name=crasher")
                .is_none()
        );
        assert!(parse_line("argv[1]: '\"=== REDIS BUG REPORT START\"'").is_none());
    }

    #[test]
    fn redis_log_other_messages_and_versions() {
        let sync = "1:M 25 Nov 2026 16:47:03.395 # Client id=9 addr=10.0.0.7:5000 laddr=10.0.0.1:6379 fd=9 name= age=1 idle=0 flags=S db=0 omem=300000000 cmd=psync closed for overcoming of output buffer limits.";
        let e = parse_line(sync).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_flags.as_deref(), Some("S"));
        assert_eq!(e.omem, Some(300_000_000));

        // Cut at LOG_MAX_LEN before the reason.
        let long_name = "n".repeat(1000);
        let mut cut = format!(
            "Client id=5 addr=127.0.0.1:1234 laddr=127.0.0.1:6379 fd=8 name={long_name} age=3 idle=0 flags=P db=0 sub=1 omem=5 cmd=subscribe user=default"
        );
        cut.truncate(1023);
        let e = parse_line(&format!("1:M 25 Nov 2026 16:38:04.676 # {cut}")).expect("parsed");
        assert_eq!(e.kind, LogKind::OutputBufferLimit);
        assert_eq!(e.client_addr, addr("127.0.0.1:1234"));

        // Valkey's banner and crash line, Redis 5's crash line.
        let e = parse_line("=== VALKEY BUG REPORT START: Cut & paste starting from here ===")
            .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: None });
        let e = parse_line(
            "9:M 10 Apr 2025 18:13:53.586 # valkey-server 8.1.1 crashed by signal: 6, si_code: 0",
        )
        .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: Some(6) });
        let e = parse_line("9:M 10 Apr 2019 18:13:53.586 # Redis 5.0.7 crashed by signal: 11")
            .expect("parsed");
        assert_eq!(e.kind, LogKind::Crash { signal: Some(11) });
        let e =
            parse_line("9:M 10 Apr 2025 18:13:53.586 # Valkey is now ready to exit, bye bye...")
                .expect("parsed");
        assert_eq!(e.kind, LogKind::ReadyToExit);
        let e = parse_line("9:signal-handler (1744308833) Received shutdown signal during loading, scheduling shutdown.")
            .expect("parsed");
        assert_eq!(
            e.kind,
            LogKind::ShutdownRequested {
                by: "signal".into()
            }
        );
        let evs = parse_lines(
            "9:signal-handler (1744308833) Received SIGTERM scheduling shutdown...\n\
             9:signal-handler (1744308834) You insist... exiting now.\n\
             9:M 10 Apr 2025 18:13:53.586 # User requested shutdown...\n",
        );
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        let by = |s: &str| LogKind::ShutdownRequested { by: s.into() };
        assert_eq!(kinds, vec![by("SIGTERM"), by("SIGINT"), by("SIGINT")]);
        // Another process's shutdown line does not take this one's signal.
        let evs = parse_lines(
            "9:signal-handler (1744308833) Received SIGTERM scheduling shutdown...\n\
             10:M 10 Apr 2025 18:13:53.586 # User requested shutdown...\n",
        );
        assert_eq!(
            evs[1].kind,
            LogKind::ShutdownRequested {
                by: "SHUTDOWN command".into()
            }
        );
    }

    #[test]
    fn redis_log_line_formats() {
        let msg = "Evicting client: id=7 addr=127.0.0.1:33496 laddr=127.0.0.1:6379 fd=7 name=hog flags=N qbuf=10";
        // Valkey log-timestamp-format iso8601 and milliseconds.
        let e = parse_line(&format!("42:S 2026-11-25T16:47:03.836+01:00 - {msg}")).expect("iso");
        assert_eq!(e.role, Some('S'));
        assert_eq!(e.kind, LogKind::ClientEviction);
        let want = UNIX_EPOCH + Duration::from_millis(1_795_625_223_836 - 3_600_000);
        assert_eq!(e.time, Some(want));
        let e = parse_line(&format!("42:M 2026-11-25T15:47:03.836Z - {msg}")).expect("iso Z");
        assert_eq!(e.time, Some(want));
        let e = parse_line(&format!("42:M 1795621623836 - {msg}")).expect("ms");
        assert_eq!(e.time, Some(want));
        // Valkey log-format logfmt.
        let e = parse_line(&format!(
            "pid=42 role=replica timestamp=\"2026-11-25T15:47:03.836Z\" level=verbose message=\"{msg}\""
        ))
        .expect("logfmt");
        assert_eq!((e.pid, e.role, e.time), (Some(42), Some('S'), Some(want)));
        assert_eq!(e.client_name.as_deref(), Some("hog"));
        let e = parse_line(&format!(
            "pid=42 role=primary timestamp=\"25 Nov 2026 16:47:03.836\" level=verbose message=\"{msg}\""
        ))
        .expect("logfmt legacy stamp");
        assert_eq!(
            local_fields(e.time.expect("time")),
            (2026, 11, 25, 16, 47, 3, 836)
        );
        // Redis 3.x (no year) and 2.x ("[pid]").
        let e = parse_line(&format!("42:M 25 Nov 16:47:03.836 - {msg}")).expect("3.x");
        let (_, mo, d, h, mi, s, ms) = local_fields(e.time.expect("time"));
        assert_eq!((mo, d, h, mi, s, ms), (11, 25, 16, 47, 3, 836));
        let e = parse_line(&format!("[42] 25 Nov 16:47:03.836 # {msg}")).expect("2.x");
        assert_eq!((e.pid, e.role), (Some(42), None));
        // Bad timestamp values: still the event, no time.
        let e = parse_line(&format!("42:M 31 Feb 2026 99:47:03.836 - {msg}")).expect("bad time");
        assert_eq!(e.time, None);
        assert_eq!(e.kind, LogKind::ClientEviction);
        // Not log lines.
        for junk in [
            "",
            "   ",
            "42:M",
            "42:M 25 Nov",
            "42:M 25 Nov 2026 16:47:03.836 ? Evicting client: id=1",
            "x:M 25 Nov 2026 16:47:03.836 - Evicting client: id=1",
            "42:m 25 Nov 2026 16:47:03.836 - Evicting client: id=1",
            "pid=42 role=primary",
            "\u{fffd}\u{fffd}:M 25 Nov",
            "42:M 25 Nov 2026 16:47:03.836 - Protocol error (x)",
        ] {
            assert_eq!(parse_line(junk), None, "{junk:?}");
        }
        // CRLF and surrounding blanks are trimmed.
        let e = parse_line(&format!("  42:M 25 Nov 2026 16:47:03.836 - {msg}\r\n")).expect("crlf");
        assert!(e.line.starts_with("42:M") && e.line.ends_with("qbuf=10"));
    }

    #[test]
    fn redis_log_iso8601_zone_of_multibyte_characters_does_not_panic() {
        // Found while fuzzing the log parser (reproduced with the redis_log target): a zone
        // "+€1" is four bytes, and was sliced through the '€' as if it were "+HHMM".
        for zone in ["+€1", "-1€", "+é12", "+1é2"] {
            let line = format!("123:M 2026-11-25T16:47:02.552{zone} * Evicting client: id=1");
            let e = parse_line(&line).expect("still the event");
            assert_eq!((e.time, e.kind), (None, LogKind::ClientEviction), "{zone}");
        }
        let logfmt = "pid=1 role=primary timestamp=\"2026-11-25T16:47:02.552+€1\" level=notice \
                      message=\"Evicting client: id=1\"";
        assert_eq!(parse_line(logfmt).expect("logfmt").time, None);
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "redis-trace-redis-log-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    fn obl_line(port: u16) -> String {
        format!(
            "1:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=127.0.0.1:{port} laddr=127.0.0.1:6379 fd=8 name= age=3 idle=0 flags=P db=0 omem=82016 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.\n"
        )
    }

    fn ports(evs: &[LogEvent]) -> Vec<u16> {
        evs.iter()
            .filter_map(|e| e.client_addr.map(|a| a.port()))
            .collect()
    }

    #[test]
    fn redis_log_tail_append_partial_truncate() {
        let dir = Scratch::new("append");
        let path = dir.0.join("redis.log");
        // Old content, ending mid-line: none of it is reported.
        append(&path, &obl_line(1000));
        append(
            &path,
            "1:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=127.0.0.1:1001",
        );
        let mut tail = LogTail::open(&path).expect("open");
        assert_eq!(tail.path(), path.as_path());
        assert!(tail.poll().is_empty());
        append(
            &path,
            " scheduled to be closed ASAP for overcoming of output buffer limits.\n",
        );
        assert!(
            tail.poll().is_empty(),
            "the rest of a line from before open"
        );

        append(&path, &obl_line(1002));
        append(&path, "1:M 25 Nov 2026 16:38:05.000 * noise\n");
        assert_eq!(ports(&tail.poll()), vec![1002]);
        assert!(tail.poll().is_empty());

        // A line written in two pieces.
        let line = obl_line(1003);
        let (a, b) = line.split_at(40);
        append(&path, a);
        assert!(tail.poll().is_empty());
        append(&path, b);
        assert_eq!(ports(&tail.poll()), vec![1003]);

        // Truncated, then written again (shorter than before).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        assert!(tail.poll().is_empty());
        append(&path, &obl_line(1004));
        assert_eq!(ports(&tail.poll()), vec![1004]);
    }

    #[test]
    fn redis_log_tail_rotation() {
        let dir = Scratch::new("rotate");
        let path = dir.0.join("redis.log");
        let old = dir.0.join("redis.log.1");
        append(
            &path,
            "1:M 25 Nov 2026 16:38:04.000 * Ready to accept connections\n",
        );
        let mut tail = LogTail::open(&path).expect("open");
        append(&path, &obl_line(2000));
        std::fs::rename(&path, &old).expect("rename");
        // Written to the old file after the rename (a writer that still had it open).
        append(&old, &obl_line(2001));
        // Not recreated yet: the old file is still followed.
        assert_eq!(ports(&tail.poll()), vec![2000, 2001]);
        append(&old, &obl_line(2002));
        append(&path, &obl_line(2003));
        append(
            &path,
            "1:signal-handler (1795625225) Received SIGTERM scheduling shutdown...\n",
        );
        append(
            &path,
            "1:M 25 Nov 2026 16:47:05.672 # User requested shutdown...\n",
        );
        let evs = tail.poll();
        assert_eq!(ports(&evs), vec![2002, 2003]);
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        let term = LogKind::ShutdownRequested {
            by: "SIGTERM".into(),
        };
        assert_eq!(kinds[2..], [term.clone(), term]);
        // The old file is left behind for good.
        append(&old, &obl_line(2004));
        append(&path, &obl_line(2005));
        assert_eq!(ports(&tail.poll()), vec![2005]);
        // Removed altogether: nothing, no error.
        std::fs::remove_file(&path).expect("remove");
        assert!(tail.poll().is_empty());
        append(&path, &obl_line(2006));
        assert_eq!(ports(&tail.poll()), vec![2006]);
    }

    #[test]
    fn redis_log_tail_is_bounded() {
        let dir = Scratch::new("bounded");
        let path = dir.0.join("redis.log");
        append(&path, "");
        let mut tail = LogTail::open(&path).expect("open");
        // 6 MiB of noise lines, then one of ours, then an overlong line and one more.
        let noise = "1:M 25 Nov 2026 16:38:04.000 * noise noise noise noise noise noise\n";
        let mut big = String::with_capacity(6 << 20);
        while big.len() < 6 << 20 {
            big.push_str(noise);
        }
        append(&path, &big);
        append(&path, &obl_line(3000));
        append(&path, &"x".repeat(MAX_LINE + 10));
        append(&path, &format!("{}\n", obl_line(3001).trim_end()));
        append(&path, &obl_line(3002));
        let mut seen = Vec::new();
        let mut polls = 0;
        for _ in 0..10 {
            let evs = tail.poll();
            polls += 1;
            seen.extend(ports(&evs));
            if seen.len() >= 2 {
                break;
            }
        }
        // The overlong line swallows the one it runs into; the next is read.
        assert_eq!(seen, vec![3000, 3002]);
        assert!(polls >= 2, "6 MiB takes more than one 4 MiB poll");
        assert!(tail.poll().is_empty());
    }

    #[test]
    fn redis_log_tail_missing_file() {
        let dir = Scratch::new("missing");
        assert!(LogTail::open(&dir.0.join("nope.log")).is_err());
        assert!(LogTail::open(&dir.0).is_err(), "a directory");
    }
}
