use std::io;
use std::process::ExitCode;

use clap::Parser as _;
use redis_trace::cli::{Cli, Command};
use redis_trace::{commands, stderr};

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

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match &cli.command {
        Command::Capture(args) => commands::capture::run(args, cli.color, &runtime)?,
        Command::Report(args) => commands::report::run(args)?,
        Command::Demo => commands::demo::run()?,
        Command::Diagnose(args) => return commands::diagnose::run(args, cli.color),
        Command::Generate { what } => what.write(&mut io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}
