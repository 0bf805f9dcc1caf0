//! `redis-trace diagnose`: the configuration's risks, as text or JSON.
use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::DiagnoseArgs;
use crate::diagnose;
use crate::output::ColorChoice;
use crate::sources::procinfo::{self, SERVER_NAMES};

pub fn run(args: &DiagnoseArgs, color: ColorChoice) -> Result<ExitCode> {
    // A port named by the operator is trusted with the password; a discovered one only if
    // it is a real server.
    let (port, discovered) = match args.port {
        Some(p) => (p, None),
        None => procinfo::redis_ports(&SERVER_NAMES)
            .ok()
            .and_then(|p| p.first().map(|(port, pr)| (*port, Some(Some(pr.pid)))))
            .unwrap_or((6379, Some(None))),
    };
    let d = diagnose::run(&diagnose::Options {
        port,
        url: args.redis_url.clone(),
        password_file: args.password_file.clone(),
        discovered,
        tls: args.tls.settings(),
        captures: args.capture.clone(),
    })?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        let color = color.enabled(out.is_terminal());
        write!(out, "{}", diagnose::render_text(&d, color))?;
    }
    out.flush()?;
    Ok(ExitCode::from(d.exit_code()))
}
