use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use redis_trace::cli::{Cli, Command};
use redis_trace::stderr;
use std::path::Path;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            // `redis-trace ... | head` closing the pipe is not an error.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<io::Error>())
                .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // Errors can quote Redis (a NOPERM detail) or a path: stderr escapes them.
            stderr::error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

fn report_written(md: &Path, svg: &Path, summary: &redis_trace::report::Summary) {
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

/// The first traced port, from a capture's `capture_started` line, with its Redis pid
/// when the port was discovered rather than named by the operator.
fn first_port(json: &std::path::Path) -> Option<(u16, Option<Option<u32>>)> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(json).ok()?;
    // Only the first line, and at most 1 MiB of it.
    let mut line = String::new();
    std::io::Read::take(std::io::BufReader::new(file), 1 << 20)
        .read_line(&mut line)
        .ok()?;
    let first: serde_json::Value = serde_json::from_str(&line).ok()?;
    let port = first["ports"][0]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())?;
    let discovered = (first["port_source"] == "discovered").then(|| {
        first["ports"][0]["process"]["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
    });
    Some((port, discovered))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Capture(args) => {
            // First of all: a Ctrl-C while the probes load must end the capture cleanly.
            let signals = redis_trace::signals::Signals::install()?;
            let mut opts = args.options()?;
            opts.color = cli.color;
            let report = opts.report.clone().zip(match &opts.json {
                Some(redis_trace::output::JsonTarget::File(p)) => Some(p.clone()),
                _ => None,
            });
            let redact = opts.redact;
            let diagnose_redis = opts.redis.clone();
            let end = runtime.block_on(redis_trace::capture::run(opts, signals.clone()))?;
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
            if let Some((md, json)) = report {
                // The configuration's risks, read-only, for the report's findings.
                let findings = diagnose_redis.and_then(|access| {
                    let (port, discovered) = first_port(&json)?;
                    let d = redis_trace::diagnose::run(&redis_trace::diagnose::Options {
                        port,
                        url: access.url,
                        password_file: access.password_file,
                        discovered,
                        tls: access.tls,
                    })
                    .ok()?;
                    Some(redis_trace::postmortem::findings(&d))
                });
                let (summary, svg) =
                    redis_trace::postmortem::write(&[json], &md, redact, findings.as_deref())?;
                report_written(&md, &svg, &summary);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let (summary, svg) =
                redis_trace::postmortem::write(&args.captures, &args.out, args.redact, None)?;
            report_written(&args.out, &svg, &summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            redis_trace::demo::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose(args) => {
            // A port named by the operator is trusted with the password; a discovered one
            // only if it is a real server.
            let (port, discovered) = match args.port {
                Some(p) => (p, None),
                None => redis_trace::procinfo::redis_ports(&redis_trace::capture::SERVER_NAMES)
                    .ok()
                    .and_then(|p| p.first().map(|(port, pr)| (*port, Some(Some(pr.pid)))))
                    .unwrap_or((6379, Some(None))),
            };
            let d = redis_trace::diagnose::run(&redis_trace::diagnose::Options {
                port,
                url: args.redis_url,
                password_file: args.password_file,
                discovered,
                tls: args.tls.settings(),
            })?;
            let mut out = io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &d)?;
                writeln!(out)?;
            } else {
                let color = cli.color.enabled(out.is_terminal());
                write!(out, "{}", redis_trace::diagnose::render_text(&d, color))?;
            }
            out.flush()?;
            Ok(ExitCode::from(d.exit_code()))
        }
        Command::Generate { what } => {
            let mut out = io::stdout().lock();
            what.write(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
