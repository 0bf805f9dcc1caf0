//! `redis-trace report`: the postmortem report rendered from saved JSON lines (also run
//! by `capture --report` at the end of a capture), with `diagnose`'s risk findings.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::{diagnose, report, stderr};

/// Renders `captures` into `md` and the chart beside it (both mode 0600).
pub fn write(
    captures: &[PathBuf],
    md: &Path,
    redact: bool,
    findings: Option<&[diagnose::Finding]>,
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

/// `redis-trace report FILE... --out FILE.md`.
pub fn run(args: &crate::cli::ReportArgs) -> Result<()> {
    let (summary, svg) = write(&args.captures, &args.out, args.redact, None)?;
    report_written(&args.out, &svg, &summary);
    Ok(())
}

/// Says where the report went and what it found.
pub fn report_written(md: &Path, svg: &Path, summary: &report::Summary) {
    stderr::note(&format!(
        "report written to {} (chart {}): {} connection ends{}",
        md.display(),
        svg.display(),
        summary.connections,
        summary
            .dominant_cause
            .as_deref()
            .map(|c| format!(", mostly {c}"))
            .unwrap_or_default()
    ));
}
