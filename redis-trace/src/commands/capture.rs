//! `redis-trace capture`: the capture, then (with `--report`) diagnose's findings and the
//! postmortem report from the JSON file it wrote.
use std::path::PathBuf;

use anyhow::Result;

use crate::cli::CaptureArgs;
use crate::output::ColorChoice;
use crate::output::JsonTarget;
use crate::{diagnose, pipeline, schema, signals, stderr};

pub fn run(
    args: &CaptureArgs,
    color: ColorChoice,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    // First of all: a Ctrl-C while the probes load must end the capture cleanly.
    let signals = signals::Signals::install()?;
    let mut opts = args.options()?;
    opts.color = color;
    let report = opts.report.clone().zip(match &opts.json {
        Some(JsonTarget::File(p)) => Some(p.clone()),
        _ => None,
    });
    let redact = opts.redact;
    let diagnose_redis = opts.redis.clone();
    let outcome = runtime.block_on(pipeline::run(opts, signals.clone()))?;
    let end = &outcome.ended;
    stderr::note(&format!(
        "{} connections closed, {} other resets, {} process events in {:.1} s; {} lost events",
        end.counts.connections_closed,
        end.counts.resets,
        end.counts.process_events,
        end.duration_s,
        end.lost_events
    ));
    if end.lost_events > 0 {
        stderr::warn(&format!(
            "{} records did not fit in the kernel's ring buffer: the capture is incomplete",
            end.lost_events
        ));
    }
    // Everything captured is on disk: from here a signal ends the tool at once.
    signals.finishing();
    let Some((md, json)) = report else {
        return Ok(());
    };
    // The configuration's risks, read-only, for the report's findings.
    let findings = diagnose_redis.and_then(|access| {
        let (port, discovered) = first_port(&outcome.started)?;
        let d = diagnose::run(&diagnose::Options {
            port,
            url: access.url,
            password_file: access.password_file,
            discovered,
            tls: access.tls,
            // The report shows this capture's path findings itself.
            captures: Vec::new(),
        })
        .ok()?;
        Some(d.findings)
    });
    let captures: [PathBuf; 1] = [json];
    let (summary, svg) = super::report::write(&captures, &md, redact, findings.as_deref())?;
    super::report::report_written(&md, &svg, &summary);
    Ok(())
}

/// The first traced port, with its Redis pid when the port was discovered rather than
/// named by the operator.
fn first_port(started: &schema::CaptureStarted) -> Option<(u16, Option<Option<u32>>)> {
    let first = started.ports.first()?;
    let discovered = (started.port_source == schema::PortSource::Discovered)
        .then(|| first.process.as_ref().map(|p| p.pid));
    Some((first.port, discovered))
}
