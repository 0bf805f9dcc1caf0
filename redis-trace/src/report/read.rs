//! Reading capture files into typed records (see `crate::schema`), line by line, with
//! what was tolerated (a last line cut short, a newer schema) kept as warnings.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::schema::{Record, ReportWarning};

/// One capture file, as read by [`load`]: its typed records, in file order.
#[derive(Debug, Clone)]
pub struct Capture {
    pub path: PathBuf,
    pub records: Vec<Record>,
}

/// The record types a capture writes (docs/json-lines.md).
const KNOWN_TYPES: [&str; 7] = [
    "capture_started",
    "connection_closed",
    "reset",
    "process_event",
    "redis_status",
    "redis_uprobes",
    "capture_ended",
];

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
    records: Vec<Record>,
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
                self.warn(format!(
                    "line {no} is cut short ({} bytes, {e}): the capture was stopped while \
                     writing it; it is left out",
                    line.len()
                ));
                return Ok(());
            }
            Err(e) => bail!("{}:{no}: not a JSON record: {e}", path.display()),
        };
        let Some(kind) = v.get("type").and_then(Value::as_str).map(str::to_owned) else {
            bail!(
                "{}:{no}: not a redis-trace record (no \"type\" field)",
                path.display()
            );
        };
        if kind == "capture_started"
            && let Some(s) = v.get("schema_version").and_then(Value::as_u64)
            && s != u64::from(crate::schema::SCHEMA_VERSION)
        {
            self.warn(format!(
                "written with schema_version {s}; this redis-trace reads {}: fields it does \
                 not know are left out",
                crate::schema::SCHEMA_VERSION
            ));
        }
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            // A record type of a newer redis-trace: nothing here reads it.
            return Ok(());
        }
        match serde_json::from_value::<Record>(v) {
            Ok(r) => self.records.push(r),
            Err(e) => self.warn(format!(
                "line {no}: a {kind} record whose fields do not read ({e}); it is left out"
            )),
        }
        Ok(())
    }

    fn warn(&mut self, message: String) {
        self.records
            .push(Record::ReportWarning(ReportWarning { message }));
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
