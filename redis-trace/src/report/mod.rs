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

use anyhow::{Result, bail};

use crate::diagnose::finding::Finding;

mod markdown;
mod model;
pub(crate) mod read;
mod redact;
mod svg;
mod text;

pub use model::Summary;
pub use read::{Capture, load, parse_capture};

#[cfg(test)]
mod tests;

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
    let markdown = markdown::render(
        &m,
        &summary,
        findings.as_deref(),
        &opts.chart_name,
        opts.redact,
    );
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
