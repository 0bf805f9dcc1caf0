//! Writers: JSON lines for tooling, a human timeline for the terminal.
//!
//! Both are buffered and flushed by the capture loop once per drain, not per record:
//! at thousands of connections a second, a write per record is what costs.
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::schema::{ConnectionClosed, ProcessEvent, ResetSeen};
use crate::sources::procinfo::escape_name;

/// When to color (`--color`, as ripgrep has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// When writing to a terminal and NO_COLOR is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to color output going to a terminal (`is_terminal`) or not.
    pub fn enabled(self, is_terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonTarget {
    Stdout,
    File(PathBuf),
}

impl JsonTarget {
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

/// Creates an output file readable by its owner only (captures hold client addresses and
/// process names), safely on a shared host: a new file is made with `O_CREAT|O_EXCL`
/// (which never follows a symlink) and mode 0600 in the target's directory, then renamed
/// over `path`. Whatever was at `path` (a symlink planted by another user, a file they
/// own) is replaced, never followed, truncated or reused.
pub fn create_private(path: &Path) -> Result<File> {
    persist(new_private_beside(path)?, path)
}

/// Writes `bytes` to a new 0600 file beside `path` and renames it over `path` once
/// complete: readers never see half a report, and nothing at `path` is followed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = new_private_beside(path)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    persist(tmp, path).map(drop)?;
    Ok(())
}

/// Renames the private temporary file over `path`.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<File> {
    tmp.persist(path).map_err(|e| {
        anyhow::Error::new(e.error).context(format!(
            "cannot write {}: choose a path in a writable directory (not a directory's name)",
            path.display()
        ))
    })
}

/// A new, empty 0600 file in `path`'s directory, removed again if it is not persisted.
fn new_private_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {}: choose a path in a writable directory",
                path.display()
            )
        })?;
    // The umask cannot widen 0600, but make sure of the mode whatever it is.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(tmp)
}

pub struct Writers {
    json: Option<BufWriter<Box<dyn Write + Send>>>,
    text: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Color the timeline: stdout is a terminal and NO_COLOR is unset.
    pub color: bool,
    /// A status line is drawn on stderr (a terminal) and must be cleared before output.
    status_shown: bool,
}

impl Writers {
    /// JSON to `json` if given; the human timeline to stdout unless JSON took stdout or
    /// `quiet` is set.
    pub fn open(json: Option<&JsonTarget>, quiet: bool, color: ColorChoice) -> Result<Self> {
        let json_writer: Option<Box<dyn Write + Send>> = match json {
            None => None,
            Some(JsonTarget::Stdout) => Some(Box::new(io::stdout())),
            Some(JsonTarget::File(p)) => Some(Box::new(create_private(p)?)),
        };
        let text = (!quiet && json != Some(&JsonTarget::Stdout))
            .then(|| BufWriter::new(Box::new(io::stdout()) as Box<dyn Write + Send>));
        let color = text.is_some() && color.enabled(io::stdout().is_terminal());
        Ok(Self {
            json: json_writer.map(|w| BufWriter::with_capacity(64 * 1024, w)),
            text,
            color,
            status_shown: false,
        })
    }

    /// Whether a live status line may be drawn on stderr.
    pub fn status_allowed(&self) -> bool {
        self.text.is_some() && io::stderr().is_terminal()
    }

    /// Draws (or redraws) the one-line status on stderr.
    pub fn status(&mut self, line: &str) {
        let mut e = io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{line}");
        let _ = e.flush();
        self.status_shown = true;
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let mut e = io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.status_shown = false;
        }
    }

    pub fn json<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        if let Some(w) = self.json.as_mut() {
            serde_json::to_writer(&mut *w, record).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn text(&mut self, line: &str) -> io::Result<()> {
        if self.text.is_some() {
            self.clear_status();
        }
        if let Some(w) = self.text.as_mut() {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = self.json.as_mut() {
            w.flush()?;
        }
        if let Some(w) = self.text.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

/// The clock time of an RFC 3339 timestamp, for the timeline (HH:MM:SS.mmm).
fn clock_of(time: &str) -> &str {
    time.get(11..23).unwrap_or(time)
}

fn who(pid: Option<u32>, comm: Option<&str>) -> String {
    match (pid, comm) {
        (Some(p), Some(c)) => format!(" by {} [{p}]", escape_name(c)),
        (Some(p), None) => format!(" by pid {p}"),
        _ => String::new(),
    }
}

/// ANSI color of a cause on the timeline: Redis's doing red, the client's green, the
/// path's magenta, the kernel's cyan, unknown dim.
fn cause_color(cause: &str) -> &'static str {
    match cause {
        "redis_close_unknown" => "\x1b[33m",
        c if c.starts_with("redis_") => "\x1b[31m",
        c if c.starts_with("client_") => "\x1b[32m",
        "middlebox_reset" | "peer_reset" => "\x1b[35m",
        "kernel_reset" => "\x1b[36m",
        _ => "\x1b[2m",
    }
}

pub fn closed_line(c: &ConnectionClosed) -> String {
    closed_line_colored(c, false)
}

pub fn closed_line_colored(c: &ConnectionClosed, color: bool) -> String {
    let packet = match (c.packet, c.rst_reason.as_deref()) {
        (Some(p), Some(r)) => format!("{p} {r}"),
        (Some(p), None) => p.to_string(),
        (None, _) => "no packet".to_string(),
    };
    let side = c.closed_by_side.unwrap_or("unknown side");
    let took = c
        .duration_ms
        .map(|d| format!(", after {d:.1} ms"))
        .unwrap_or_default();
    let timeout = if c.kernel_event == "timeout" {
        " (kernel timeout)"
    } else {
        ""
    };
    let name = c
        .redis_client
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .map(|r| format!(" [{}]", escape_name(&r.name)))
        .unwrap_or_default();
    let class = c
        .client_class
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    // The key piece of evidence: the first one that is not the kernel's own sentence.
    let key = c
        .evidence
        .iter()
        .find(|e| !e.starts_with("kernel: the "))
        .or(c.evidence.first())
        .map(|e| format!("\n              {}", escape_name(e)))
        .unwrap_or_default();
    let cause = if color {
        format!(
            "{}{:<26}\x1b[0m",
            cause_color(c.cause.as_str()),
            c.cause.as_str()
        )
    } else {
        format!("{:<26}", c.cause.as_str())
    };
    format!(
        "{}  {cause} {}{name} -> {}  closed by {side} ({packet}){timeout}{}{took}{class}{key}",
        clock_of(&c.time),
        c.client,
        c.server,
        who(c.pid, c.comm.as_deref()),
    )
}

pub fn reset_line(r: &ResetSeen) -> String {
    let from = r.sent_by.unwrap_or("unseen sender");
    let reason = r
        .rst_reason
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    format!(
        "{}  {} -> {}  RST{reason} sent by {from}{}",
        clock_of(&r.time),
        r.client,
        r.server,
        who(r.pid, r.comm.as_deref())
    )
}

pub fn process_line(p: &ProcessEvent) -> String {
    let what = match (p.event, &p.signal, &p.oom) {
        ("oom_kill", _, Some(o)) => format!(
            "OOM kill of {} [{}] (anon-rss {} MB)",
            escape_name(&p.comm),
            p.pid,
            o.anon_rss_kb / 1024
        ),
        ("signal", Some(s), _) => format!(
            "{} to {} [{}] from {} [{}] ({})",
            s.name,
            escape_name(&p.comm),
            p.pid,
            escape_name(&s.sender.comm),
            s.sender.pid,
            s.origin
        ),
        _ => format!("exit of {} [{}]", escape_name(&p.comm), p.pid),
    };
    format!("{}  {what}", clock_of(&p.time))
}
