//! Redis's own log, summarized: its recent close lines, by kind and client class, read
//! from the end of the file `CONFIG GET logfile` names.
use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{LOG_TAIL_BYTES, SAMPLES};
use crate::schema::ClientClass;
use crate::sources::redis_log::{LogEvent, LogKind};

/// Recent lines of one kind: how many, by client class, and the last few.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogCount {
    pub count: usize,
    /// "pubsub", "normal", "replica" (from the logged client's flags) -> count.
    pub by_class: BTreeMap<String, usize>,
    /// The last [`SAMPLES`] events, oldest first.
    pub last: Vec<LogEvent>,
}

impl LogCount {
    fn add(&mut self, ev: &LogEvent) {
        self.count += 1;
        if let Some(flags) = &ev.client_flags {
            *self
                .by_class
                .entry(ClientClass::of_flags(flags).as_str().to_string())
                .or_default() += 1;
        }
        if self.last.len() == SAMPLES {
            self.last.remove(0);
        }
        self.last.push(ev.clone());
    }
}

/// What Redis's log says about the last `window`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSummary {
    /// The file read, for evidence.
    pub path: String,
    pub window: Duration,
    pub output_buffer: LogCount,
    pub query_buffer: LogCount,
    pub evictions: LogCount,
    pub crashes: LogCount,
    /// The last shutdown, exit or crash line in the window.
    pub last_stop: Option<LogEvent>,
}

/// Counts the recent closes in parsed log events (in file order). A line without a time
/// (a crash report banner) takes the time of the event before it; the banner right after
/// a "crashed by signal" line is the same crash.
pub fn summarize_log(
    path: &str,
    events: &[LogEvent],
    now: SystemTime,
    window: Duration,
) -> LogSummary {
    let mut s = LogSummary {
        path: path.to_string(),
        window,
        ..LogSummary::default()
    };
    let mut prev_time = None;
    let mut prev_kind: Option<&LogKind> = None;
    for ev in events {
        let time = ev.time.or(prev_time);
        prev_time = time;
        let same_crash = matches!(ev.kind, LogKind::Crash { signal: None })
            && matches!(prev_kind, Some(LogKind::Crash { signal: Some(_) }));
        prev_kind = Some(&ev.kind);
        // A time in the future (a clock or time zone mismatch) counts as recent.
        let recent = time.is_none_or(|t| now.duration_since(t).map_or(true, |age| age <= window));
        if !recent {
            continue;
        }
        match &ev.kind {
            LogKind::OutputBufferLimit => s.output_buffer.add(ev),
            LogKind::QueryBufferLimit => s.query_buffer.add(ev),
            LogKind::ClientEviction => s.evictions.add(ev),
            LogKind::Crash { .. } if !same_crash => {
                s.crashes.add(ev);
                s.last_stop = Some(ev.clone());
            }
            LogKind::ShutdownRequested { .. } | LogKind::ReadyToExit => {
                s.last_stop = Some(ev.clone());
            }
            _ => {}
        }
    }
    s
}

/// The log file to read: `logfile` as Redis has it, relative to the server's working
/// directory (read through /proc/<pid>/cwd, which also works across mount namespaces), and
/// its name for messages. Err says why there is none.
pub(super) fn redis_log_path(
    logfile: Option<&str>,
    pid: Option<u32>,
) -> Result<(PathBuf, String), String> {
    let name = logfile.unwrap_or("");
    if name.is_empty() {
        return Err("logfile is empty: Redis logs to standard output".into());
    }
    let path = PathBuf::from(name);
    if path.is_absolute() {
        return Ok((path, name.to_string()));
    }
    match pid {
        Some(pid) => {
            let cwd = PathBuf::from(format!("/proc/{pid}/cwd"));
            let shown = std::fs::read_link(&cwd).map_or_else(
                |_| format!("{name} (in Redis's working directory)"),
                |dir| dir.join(name).display().to_string(),
            );
            Ok((cwd.join(path), shown))
        }
        None => Err(format!(
            "logfile {name:?} is relative to Redis's working directory, and its process is not \
             visible here"
        )),
    }
}

/// The last [`LOG_TAIL_BYTES`] of the file, from a line start.
pub(super) fn read_tail(path: &Path) -> anyhow::Result<String> {
    let (mut f, meta) = crate::sources::redis_log::open_regular_file(path)?;
    let len = meta.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(LOG_TAIL_BYTES).read_to_end(&mut buf)?;
    let from = if start > 0 {
        buf.iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1)
    } else {
        0
    };
    Ok(String::from_utf8_lossy(&buf[from..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::test_support::*;
    use crate::diagnose::{RECENT, Severity, check_closes, check_restart};
    use crate::sources::redis::parse_config;
    use crate::sources::redis_log;
    use std::time::UNIX_EPOCH;

    // ---- Redis's log --------------------------------------------------------------------

    /// A log in Valkey's `log-timestamp-format milliseconds` form: the times are exact in
    /// any time zone.
    fn log_text(now_ms: u64) -> String {
        let h = 3_600_000;
        let at = |ms: u64| now_ms - ms;
        [
            format!("7:M {} # Client id=4 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=old age=3 idle=0 flags=P omem=9000 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.", at(48 * h)),
            format!("7:M {} * Ready to accept connections", at(30 * h)),
            format!("7:M {} # Client id=5 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=8 name=feed age=3 idle=0 flags=P omem=82016 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.", at(3 * h)),
            format!("7:M {} # Client id=6 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=9 name=dump age=3 idle=0 flags=N omem=9000000 cmd=hgetall closed for overcoming of output buffer limits.", at(2 * h)),
            format!("7:M {} # Closing client that reached max query buffer length: id=7 addr=127.0.0.1:5003 laddr=127.0.0.1:6379 fd=7 name= age=0 idle=0 flags=N db=0 qbuf=1310720 omem=0 cmd=NULL user=default redir=-1 resp=2 (qbuf initial bytes: \"x\")", at(h)),
            format!("7:M {} - Evicting client: id=8 addr=127.0.0.1:5004 laddr=127.0.0.1:6379 fd=7 name=hog flags=N qbuf=10", at(h)),
            format!("7:M {} # Redis 7.0.15 crashed by signal: 11, si_code: 1", at(h / 2)),
            "=== REDIS BUG REPORT START: Cut & paste starting from here ===".to_string(),
            format!("9:M {} # Server initialized", at(h / 4)),
        ]
        .join("\n")
    }

    #[test]
    fn diagnose_log_summary_and_findings() {
        let now_ms = 1_795_621_623_836u64;
        let now = UNIX_EPOCH + Duration::from_millis(now_ms);
        let events = redis_log::parse_lines(&log_text(now_ms));
        let s = summarize_log("redis.log", &events, now, RECENT);
        assert_eq!(
            s.output_buffer.count, 2,
            "the 48 h old one is out of the window"
        );
        assert_eq!(
            s.output_buffer.by_class,
            BTreeMap::from([("normal".to_string(), 1), ("pubsub".to_string(), 1)])
        );
        assert_eq!(s.query_buffer.count, 1);
        assert_eq!(s.evictions.count, 1);
        assert_eq!(
            s.crashes.count, 1,
            "the banner after the signal line is the same crash"
        );
        assert!(
            s.last_stop
                .as_ref()
                .unwrap()
                .line
                .contains("crashed by signal: 11")
        );

        let cfg = parse_config(&config_pairs());
        let f = check_closes(&cfg, &info_with(&[]), Some(&s));
        assert_eq!(f.len(), 4, "{:#?}", titles(&f));
        let obl = find(
            &f,
            "Redis closed 2 client(s) for exceeding their output buffer limit in the last 24 h",
        );
        assert_eq!(obl.severity, Severity::Warning);
        assert_eq!(
            obl.evidence[0],
            "Redis log redis.log: 2 client(s) closed for overcoming their output buffer limit in \
             the last 24 h (1 normal, 1 pubsub)"
        );
        assert!(
            obl.evidence[1].contains("name=dump"),
            "latest first: {obl:?}"
        );
        assert!(obl.evidence[2].contains("name=feed"));
        find(
            &f,
            "Redis closed 1 client(s) for reaching the query buffer limit",
        );
        find(
            &f,
            "Redis closed 1 client(s) to keep client memory under maxmemory-clients",
        );
        let crash = find(&f, "Redis crashed 1 time(s) in the last 24 h");
        assert_eq!(crash.severity, Severity::Critical);

        // The restart that followed names the last stop.
        let r = check_restart(&info_with(&[]), Some(&s)).unwrap();
        assert!(r.evidence[1].starts_with("Redis log redis.log: the last stop before now:"));

        // A crash banner alone (an assertion) counts.
        let only_banner = redis_log::parse_lines(&format!(
            "7:M {} # Server initialized\n=== REDIS BUG REPORT START: Cut & paste starting from here ===",
            now_ms - 1000
        ));
        assert_eq!(
            summarize_log("x", &only_banner, now, RECENT).crashes.count,
            1
        );
    }

    #[test]
    fn diagnose_log_path_and_tail() {
        assert!(
            redis_log_path(Some(""), Some(1))
                .unwrap_err()
                .contains("standard output")
        );
        assert!(redis_log_path(None, None).is_err());
        assert_eq!(
            redis_log_path(Some("/var/log/redis/redis.log"), None).unwrap(),
            (
                PathBuf::from("/var/log/redis/redis.log"),
                "/var/log/redis/redis.log".to_string()
            )
        );
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            redis_log_path(Some("redis.log"), Some(me)).unwrap(),
            (
                PathBuf::from(format!("/proc/{me}/cwd/redis.log")),
                cwd.join("redis.log").display().to_string()
            )
        );
        assert!(redis_log_path(Some("redis.log"), None).is_err());

        let dir =
            std::env::temp_dir().join(format!("redis-trace-diagnose-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.log");
        let line = "1:M 25 Nov 2026 16:38:04.676 * noise noise noise noise noise noise\n";
        let mut text = line.repeat((LOG_TAIL_BYTES as usize / line.len()) + 10);
        text.push_str("LAST LINE\n");
        std::fs::write(&file, &text).unwrap();
        let tail = read_tail(&file).unwrap();
        assert!(tail.len() as u64 <= LOG_TAIL_BYTES);
        assert!(
            tail.starts_with("1:M 25 Nov"),
            "starts at a line: {:?}",
            &tail[..40]
        );
        assert!(tail.ends_with("LAST LINE\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
