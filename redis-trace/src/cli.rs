//! The command line: clap's raw arguments, then the validated options the rest uses.
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::output::JsonTarget;
use crate::pipeline;

#[derive(Debug, Parser)]
#[command(
    name = "redis-trace",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("REDIS_TRACE_EBPF_BUILD"), ")"),
    about = "Who closed each Redis connection, and how: kernel evidence for \
             `Connection reset by peer` and `Broken pipe`.",
    long_about = None,
)]
pub struct Cli {
    /// When to color the output: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::output::ColorChoice;

/// TLS to Redis, as redis-cli's --tls --cacert --cert --key --insecure.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Verify Redis's TLS certificate against this CA (PEM). Implies TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for Redis servers that require one; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM); with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Speak TLS without verifying Redis's certificate (only when you must).
    #[arg(long)]
    pub tls_insecure: bool,
}

impl TlsArgs {
    pub fn settings(&self) -> crate::sources::redis::tls::TlsSettings {
        crate::sources::redis::tls::TlsSettings {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            insecure: self.tls_insecure,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace connection ends on Redis ports until Ctrl-C, SIGTERM or --duration.
    #[command(after_help = "\
Examples:
  redis-trace capture                         trace every local redis-server's ports
  redis-trace capture --port 6379 --duration 30s
  redis-trace capture --json trace.jsonl      JSON lines to a file (mode 0600), timeline on stdout
  redis-trace capture --json - | jq .         JSON lines on stdout

Needs root (or CAP_BPF and CAP_PERFMON). Mounts tracefs at /sys/kernel/tracing if it is
not mounted.")]
    Capture(CaptureArgs),
    /// Start a throwaway redis-server, capture it, and reproduce common incidents (idle
    /// timeout, slow pub/sub subscriber, CLIENT KILL, client abort, OOM kill), each
    /// explained as it happens. Cleans up after itself, also on Ctrl-C. Needs root.
    #[command(after_help = "Example:\n  sudo redis-trace demo")]
    Demo,
    /// Render the postmortem report (Markdown plus an SVG chart) from saved JSON lines,
    /// without root and without BPF. Several captures (say the Redis host and an
    /// application host) are merged into one timeline, each connection's two ends
    /// matched.
    #[command(after_help = "\
Examples:
  redis-trace report trace.jsonl -o incident.md
  redis-trace report redis-host.jsonl app-host.jsonl -o incident.md --redact")]
    Report(ReportArgs),
    /// Check a Redis for what usually causes connection resets (read-only, no BPF):
    /// restarts, OOM kills, idle timeout, tcp-keepalive, buffer limits, memory.
    #[command(after_help = "\
Examples:
  redis-trace diagnose                  the Redis running here (or 127.0.0.1:6379)
  redis-trace diagnose --port 6380 --json

Exit status: 0 nothing above info, 2 warnings, 3 critical findings, 1 error.")]
    Diagnose(DiagnoseArgs),
    /// Print a man page or shell completions, generated from this command line.
    #[command(after_help = "\
Examples:
  redis-trace generate man > /usr/local/share/man/man1/redis-trace.1
  redis-trace generate bash > /etc/bash_completion.d/redis-trace")]
    Generate {
        #[arg(value_enum)]
        what: Generate,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Capture files (JSON lines written by `capture --json`).
    #[arg(required = true, value_name = "CAPTURE.jsonl")]
    pub captures: Vec<std::path::PathBuf>,
    /// The report to write (FILE.md; the chart goes beside it as FILE.svg).
    #[arg(
        short,
        long,
        value_name = "FILE.md",
        default_value = "redis-trace-report.md"
    )]
    pub out: std::path::PathBuf,
    /// Replace client addresses and names with stable pseudonyms, for sharing outside
    /// the team.
    #[arg(long)]
    pub redact: bool,
}

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// Redis port on 127.0.0.1. Default: the port a local redis-server listens on, or 6379.
    #[arg(short, long)]
    pub port: Option<u16>,
    /// redis://[user@]host:port/ (password from REDISCLI_AUTH or --password-file).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Read the Redis password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// A capture (`capture --json`) whose path findings to check against this Redis's
    /// `tcp-keepalive` (a device that drops idle flows); repeatable.
    #[arg(long, value_name = "CAPTURE.jsonl")]
    pub capture: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generate {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Generate {
    /// Writes the man page or completion script for the whole CLI.
    pub fn write(self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        use clap::CommandFactory as _;
        let mut cmd = Cli::command();
        match self {
            Generate::Man => clap_mangen::Man::new(cmd).render(out),
            Generate::Bash => {
                clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "redis-trace", out);
                Ok(())
            }
            Generate::Zsh => {
                clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "redis-trace", out);
                Ok(())
            }
            Generate::Fish => {
                clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "redis-trace", out);
                Ok(())
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Redis port to trace (repeatable). Default: the ports running redis-server and
    /// valkey-server processes listen on.
    #[arg(short, long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Trace only this server process: its network namespace and, without --port, its
    /// listening ports.
    #[arg(long, value_name = "PID", conflicts_with_all = ["netns", "container"])]
    pub pid: Option<u32>,

    /// Trace only this network namespace: /run/netns/NAME (ip netns) or /proc/PID/ns/net.
    /// The host's own is /proc/1/ns/net.
    #[arg(long, value_name = "PATH", conflicts_with = "container")]
    pub netns: Option<std::path::PathBuf>,

    /// Trace only the network namespace of this container (an id or a prefix of at least
    /// 4 characters, as `docker ps` or `crictl ps` shows it).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,

    /// Stop after this long (e.g. 30s, 5m).
    #[arg(short, long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Write JSON lines to FILE ('-' for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,

    /// No human-readable timeline on stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// Where to read Redis's own view (INFO, CONFIG GET, CLIENT LIST; read-only), as
    /// redis://[user@]host:port/. Default: each traced port on 127.0.0.1. The password
    /// comes from REDISCLI_AUTH or --password-file, never from the command line.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,

    /// Read the Redis password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,

    /// Use kernel evidence only: do not connect to Redis.
    #[arg(long, conflicts_with_all = ["redis_url", "password_file", "tls_ca", "tls_cert", "tls_key", "tls_insecure"])]
    pub no_redis: bool,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Do not attach uprobes to redis-server (which of its code paths freed a client).
    #[arg(long)]
    pub no_uprobes: bool,

    /// At the end, write a postmortem report (FILE.md, chart beside it as FILE.svg),
    /// from the JSON lines (written to FILE.jsonl unless --json names a file).
    #[arg(long, value_name = "FILE.md")]
    pub report: Option<std::path::PathBuf>,

    /// With --report: replace client addresses and names with stable pseudonyms.
    #[arg(long, requires = "report")]
    pub redact: bool,
}

impl CaptureArgs {
    pub fn options(&self) -> Result<pipeline::Options> {
        if self.ports.contains(&0) {
            bail!("port 0 is not a port Redis can listen on");
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            bail!("--duration must be longer than zero");
        }
        let mut json = self.json.as_deref().map(JsonTarget::parse);
        if let Some(report) = &self.report {
            if report.extension().and_then(|e| e.to_str()) != Some("md") {
                bail!("name the report FILE.md (the chart goes beside it as FILE.svg)");
            }
            match &json {
                Some(JsonTarget::Stdout) => {
                    bail!("--report renders from the JSON lines in a file: give --json FILE, not -")
                }
                None => json = Some(JsonTarget::File(report.with_extension("jsonl"))),
                Some(JsonTarget::File(_)) => {}
            }
        }
        if self
            .container
            .as_deref()
            .is_some_and(|c| c.trim().len() < 4)
        {
            bail!("--container needs at least 4 characters of the container id");
        }
        let scope = match (&self.pid, &self.netns, &self.container) {
            (Some(pid), _, _) => Some(pipeline::Scope::Pid(*pid)),
            (_, Some(path), _) => Some(pipeline::Scope::Netns(path.clone())),
            (_, _, Some(id)) => Some(pipeline::Scope::Container(id.trim().to_string())),
            _ => None,
        };
        Ok(pipeline::Options {
            ports: self.ports.clone(),
            scope,
            duration: self.duration,
            json,
            report: self.report.clone(),
            redact: self.redact,
            quiet: self.quiet,
            uprobes: !self.no_uprobes,
            redis: (!self.no_redis).then(|| pipeline::RedisAccess {
                url: self.redis_url.clone(),
                password_file: self.password_file.clone(),
                tls: self.tls.settings(),
            }),
            color: ColorChoice::Auto,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn capture_arguments_parse() {
        let cli = Cli::try_parse_from([
            "redis-trace",
            "capture",
            "-p",
            "6379",
            "--port",
            "6380",
            "--duration",
            "30s",
            "--json",
            "-",
        ])
        .expect("parse");
        let Command::Capture(args) = cli.command else {
            panic!("not capture");
        };
        let opts = args.options().expect("valid");
        assert_eq!(opts.ports, vec![6379, 6380]);
        assert_eq!(opts.duration, Some(Duration::from_secs(30)));
        assert_eq!(opts.json, Some(JsonTarget::Stdout));
    }

    #[test]
    fn man_page_and_completions_are_generated() {
        let mut man = Vec::new();
        Generate::Man.write(&mut man).expect("man");
        let man = String::from_utf8_lossy(&man);
        assert!(man.contains(".TH redis-trace"), "{man}");
        assert!(man.contains("capture"));
        let mut bash = Vec::new();
        Generate::Bash.write(&mut bash).expect("bash");
        assert!(String::from_utf8_lossy(&bash).contains("--port"));
    }

    #[test]
    fn color_and_tls_options_parse() {
        let cli = Cli::try_parse_from([
            "redis-trace",
            "capture",
            "--color",
            "never",
            "--redis-url",
            "rediss://127.0.0.1:6380/",
            "--tls-ca",
            "/etc/ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .expect("parse");
        assert_eq!(cli.color, ColorChoice::Never);
        let Command::Capture(args) = cli.command else {
            panic!("not capture");
        };
        let tls = args.tls.settings();
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert!(tls.any() && !tls.insecure);
        // A certificate needs its key.
        assert!(Cli::try_parse_from(["redis-trace", "capture", "--tls-cert", "c.pem"]).is_err());
        assert!(
            Cli::try_parse_from(["redis-trace", "capture", "--no-redis", "--tls-insecure"])
                .is_err()
        );
        assert!(ColorChoice::Always.enabled(false));
        assert!(!ColorChoice::Never.enabled(true));
        assert!(!ColorChoice::Auto.enabled(false));
    }

    #[test]
    fn version_names_the_embedded_ebpf_object() {
        let v = Cli::command().render_version();
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(v.contains("eBPF object"), "{v}");
    }

    #[test]
    fn port_zero_is_refused() {
        let cli = Cli::try_parse_from(["redis-trace", "capture", "-p", "0"]).expect("parse");
        let Command::Capture(args) = cli.command else {
            panic!("not capture");
        };
        assert!(args.options().is_err());
    }
}
