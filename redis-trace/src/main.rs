use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use redis_trace::cli::{Cli, Command};

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
            eprintln!("redis-trace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first traced port, from a capture's `capture_started` line.
fn first_port(json: &std::path::Path) -> Option<u16> {
    let text = std::fs::read_to_string(json).ok()?;
    let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    first["ports"][0]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Capture(args) => {
            let opts = args.options()?;
            let report = opts.report.clone().zip(match &opts.json {
                Some(redis_trace::output::JsonTarget::File(p)) => Some(p.clone()),
                _ => None,
            });
            let redact = opts.redact;
            let diagnose_redis = opts.redis.clone();
            let end = runtime.block_on(redis_trace::capture::run(opts))?;
            eprintln!(
                "redis-trace: {} connections closed, {} other resets, {} process events in {:.1} s; {} lost events",
                end.counts.connections_closed,
                end.counts.resets,
                end.counts.process_events,
                end.duration_s,
                end.lost_events
            );
            if end.lost_events > 0 {
                eprintln!(
                    "redis-trace: warning: {} records did not fit in the kernel's ring buffer: the capture is incomplete",
                    end.lost_events
                );
            }
            if let Some((md, json)) = report {
                // The configuration's risks, read-only, for the report's findings.
                let findings = diagnose_redis.and_then(|access| {
                    let port = first_port(&json)?;
                    let d = redis_trace::diagnose::run(&redis_trace::diagnose::Options {
                        port,
                        url: access.url,
                        password_file: access.password_file,
                    })
                    .ok()?;
                    Some(redis_trace::postmortem::findings(&d))
                });
                let (summary, svg) =
                    redis_trace::postmortem::write(&[json], &md, redact, findings.as_deref())?;
                eprintln!(
                    "redis-trace: report written to {} (chart {}): {} connection ends{}",
                    md.display(),
                    svg.display(),
                    summary.connections,
                    summary
                        .dominant_cause
                        .map(|c| format!(", mostly {c}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let (summary, svg) =
                redis_trace::postmortem::write(&args.captures, &args.out, args.redact, None)?;
            eprintln!(
                "redis-trace: report written to {} (chart {}): {} connection ends{}",
                args.out.display(),
                svg.display(),
                summary.connections,
                summary
                    .dominant_cause
                    .map(|c| format!(", mostly {c}"))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            redis_trace::demo::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose(args) => {
            let port = args.port.unwrap_or_else(|| {
                redis_trace::procinfo::redis_ports(&redis_trace::capture::SERVER_NAMES)
                    .ok()
                    .and_then(|p| p.first().map(|(port, _)| *port))
                    .unwrap_or(6379)
            });
            let d = redis_trace::diagnose::run(&redis_trace::diagnose::Options {
                port,
                url: args.redis_url,
                password_file: args.password_file,
            })?;
            let mut out = io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &d)?;
                writeln!(out)?;
            } else {
                let color =
                    out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
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
