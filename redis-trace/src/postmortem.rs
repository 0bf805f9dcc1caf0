//! The report for a postmortem: rendered from saved JSON lines (`redis-trace report`,
//! or `capture --report` at the end of a capture), with `diagnose`'s risk findings.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::{diagnose, report};

/// `diagnose` findings in the report's terms.
pub fn findings(d: &diagnose::Diagnosis) -> Vec<report::Finding> {
    d.findings
        .iter()
        .map(|f| report::Finding {
            severity: match f.severity {
                diagnose::Severity::Critical => report::Severity::Critical,
                diagnose::Severity::Warning => report::Severity::Warning,
                diagnose::Severity::Info => report::Severity::Info,
            },
            title: f.title.clone(),
            evidence: f.evidence.clone(),
            fix: f.fix.clone(),
        })
        .collect()
}

/// Renders `captures` into `md` and the chart beside it (both mode 0600).
pub fn write(
    captures: &[PathBuf],
    md: &Path,
    redact: bool,
    findings: Option<&[report::Finding]>,
) -> Result<(report::Summary, PathBuf)> {
    if md.extension().and_then(|e| e.to_str()) != Some("md") {
        bail!("name the report FILE.md (the chart goes beside it as FILE.svg)");
    }
    let loaded = report::load(captures)?;
    let rendered = report::render(
        &loaded,
        &report::ReportOptions {
            redact,
            chart_name: report::chart_name_for(md),
            findings,
        },
    )?;
    let svg = report::write(md, &rendered)?;
    Ok((rendered.summary, svg))
}
