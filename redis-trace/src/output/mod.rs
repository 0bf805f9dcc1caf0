//! Writers: JSON lines for tooling, a human timeline for the terminal ([`timeline`]),
//! private output files ([`files`]), and [`escape_name`] for everything printed.
//!
//! Both are buffered and flushed by the capture loop once per drain, not per record:
//! at thousands of connections a second, a write per record is what costs.
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

mod escape;
mod files;
mod timeline;

pub use escape::escape_name;
pub use files::{create_private, write_private};
pub use timeline::{closed_line, process_line, redis_status_line, reset_line, status_line};

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

    /// Whether the human timeline is written: its lines are built only then.
    pub fn wants_text(&self) -> bool {
        self.text.is_some()
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
