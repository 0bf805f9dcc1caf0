//! `redis-trace report`: a Markdown report (and an SVG chart beside it) from saved JSON
//! lines, for a postmortem or an issue. No root and no BPF: it only reads captures.
//!
//! - [`load`] reads captures (docs/json-lines.md), tolerating a last line cut short by a
//!   killed capture: it is left out and a `{"type": "report_warning", "message"}` record
//!   takes its place, which the report shows;
//! - [`render`] merges the captures into one timeline (the two ends of a connection, seen
//!   by captures on both hosts, become one row; a RST that neither end's capture saw being
//!   sent is a middlebox reset proven from both sides) and writes the Markdown and SVG;
//! - [`write`] puts both next to each other, readable by their owner only.
//!
//! Everything that came from a capture is treated as untrusted text: client names, process
//! names, Redis log lines. It reaches the Markdown only inside escaped code spans and the
//! SVG only XML-escaped; with `redact`, client addresses, client names and client process
//! names become stable pseudonyms everywhere, evidence and log lines included.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::diagnose::finding::Finding;

mod markdown;
mod model;
mod redact;
mod svg;
mod texts;

#[cfg(test)]
mod tests;

/// One capture file, as read by [`load`].
#[derive(Debug, Clone)]
pub struct Capture {
    pub path: PathBuf,
    pub records: Vec<Value>,
}

pub struct ReportOptions<'a> {
    /// Replace client addresses, client names and client process names by pseudonyms.
    pub redact: bool,
    /// The file name the Markdown links the chart by (see [`chart_name_for`]).
    pub chart_name: String,
    /// Risk findings to include; `None`: the report says they were not checked.
    pub findings: Option<&'a [Finding]>,
}

pub struct Rendered {
    pub markdown: String,
    pub svg: String,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Connection ends in the timeline (a connection seen from both ends counts once).
    pub connections: u64,
    pub by_cause: std::collections::BTreeMap<String, u64>,
    /// The most frequent cause.
    pub dominant_cause: Option<String>,
    /// Summed over the captures: records the kernel could not hand over.
    pub lost_events: u64,
    /// Connections whose RST, received at one end, two captures prove neither end sent.
    pub middlebox_proven: u64,
}

/// The record type [`load`] adds for what it tolerated.
pub(crate) const WARNING_TYPE: &str = "report_warning";

/// Reads capture files. Errors name the file and line; a file that does not start with
/// `capture_started` is not a redis-trace capture. A last line cut short (the capture was
/// killed while writing it) is left out with a warning the report shows.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Capture>> {
    paths.iter().map(|p| load_one(p)).collect()
}

/// The longest line a capture may have. A real record is a few KB; a longer line is not
/// one, and is not held in memory.
const MAX_LINE: u64 = 16 << 20;

/// Reads a capture file line by line (never the whole file at once): a regular file only,
/// each line at most [`MAX_LINE`].
fn load_one(path: &Path) -> Result<Capture> {
    use std::io::{BufRead as _, Read as _};
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file: give `report` the JSON lines a capture wrote",
            path.display()
        );
    }
    let mut reader = std::io::BufReader::new(file);
    let mut parser = CaptureParser::new(path);
    let mut no = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        no += 1;
        if line.len() as u64 > MAX_LINE {
            bail!(
                "{}:{no}: a line of over {} MiB is not a redis-trace record",
                path.display(),
                MAX_LINE >> 20
            );
        }
        let complete = line.ends_with(b"\n");
        parser.line(no, &line, complete)?;
    }
    parser.finish()
}

/// Parses the bytes of one capture file (what [`load`] does, line by line, as it reads
/// it); `path` only names the file in errors and in the report.
pub fn parse_capture(path: &Path, bytes: &[u8]) -> Result<Capture> {
    let mut parser = CaptureParser::new(path);
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        parser.line(i + 1, line, line.ends_with(b"\n"))?;
    }
    parser.finish()
}

/// The records of one capture, taken a line at a time.
struct CaptureParser<'a> {
    path: &'a Path,
    records: Vec<Value>,
    started: bool,
}

impl<'a> CaptureParser<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            records: Vec::new(),
            started: false,
        }
    }

    /// Line `no`; `complete` when it ends with its newline (only the file's last line
    /// may not: a capture stopped while writing it).
    fn line(&mut self, no: usize, line: &[u8], complete: bool) -> Result<()> {
        let path = self.path;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if !self.started {
            let not_capture = |why: String| {
                anyhow::anyhow!(
                    "{} is not a redis-trace capture: it does not start with a capture_started \
                     record ({why}); write one with `redis-trace capture --json FILE`",
                    path.display()
                )
            };
            let head: Value = serde_json::from_slice(line)
                .map_err(|e| not_capture(format!("line {no} is not JSON: {e}")))?;
            if head.get("type").and_then(Value::as_str) != Some("capture_started") {
                return Err(not_capture(format!(
                    "line {no} has type {}",
                    head.get("type").unwrap_or(&Value::Null)
                )));
            }
            self.started = true;
        }
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) if !complete => {
                self.records.push(serde_json::json!({
                    "type": WARNING_TYPE,
                    "message": format!(
                        "line {no} is cut short ({} bytes, {e}): the capture was stopped while \
                         writing it; it is left out",
                        line.len()
                    ),
                }));
                return Ok(());
            }
            Err(e) => bail!("{}:{no}: not a JSON record: {e}", path.display()),
        };
        let Some(kind) = v.get("type").and_then(Value::as_str) else {
            bail!(
                "{}:{no}: not a redis-trace record (no \"type\" field)",
                path.display()
            );
        };
        if kind == "capture_started"
            && let Some(s) = v.get("schema_version").and_then(Value::as_u64)
            && s != u64::from(crate::schema::SCHEMA_VERSION)
        {
            self.records.push(serde_json::json!({
                "type": WARNING_TYPE,
                "message": format!(
                    "written with schema_version {s}; this redis-trace reads {}: fields it does \
                     not know are left out",
                    crate::schema::SCHEMA_VERSION
                ),
            }));
        }
        self.records.push(v);
        Ok(())
    }

    fn finish(self) -> Result<Capture> {
        if !self.started {
            bail!(
                "{} is empty: not a redis-trace capture (a capture writes capture_started first, \
                 once its probes are attached)",
                self.path.display()
            );
        }
        Ok(Capture {
            path: self.path.to_path_buf(),
            records: self.records,
        })
    }
}

/// Renders the report of one or more captures.
pub fn render(captures: &[Capture], opts: &ReportOptions) -> Result<Rendered> {
    if captures.is_empty() {
        bail!("no capture to report on");
    }
    let mut m = model::Model::build(captures);
    let summary = m.summary();
    let findings: Option<Vec<Finding>> = opts.findings.map(<[Finding]>::to_vec);
    let findings = if opts.redact {
        let mut r = redact::Redactor::new(&m);
        r.apply(&mut m);
        findings.map(|f| f.into_iter().map(|f| r.finding(f)).collect())
    } else {
        findings
    };
    let markdown = markdown::render(&m, &summary, findings.as_deref(), opts);
    let svg = svg::render(&m);
    Ok(Rendered {
        markdown,
        svg,
        summary,
    })
}

/// The chart's file name for a report written to `md_path` (what [`write`] names it).
pub fn chart_name_for(md_path: &Path) -> String {
    md_path
        .with_extension("svg")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.svg".into())
}

/// Writes FILE.md and the SVG beside it (same stem, .svg), both mode 0600 (they hold
/// addresses), returning the SVG path.
pub fn write(md_path: &Path, rendered: &Rendered) -> Result<PathBuf> {
    let svg_path = md_path.with_extension("svg");
    if svg_path == md_path {
        bail!(
            "{}: name the report FILE.md; the chart goes beside it as FILE.svg",
            md_path.display()
        );
    }
    for (path, text) in [
        (md_path, &rendered.markdown),
        (svg_path.as_path(), &rendered.svg),
    ] {
        crate::output::write_private(path, text.as_bytes())?;
    }
    Ok(svg_path)
}
