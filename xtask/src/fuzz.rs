//! `cargo xtask fuzz`: runs every cargo-fuzz target of fuzz/ (one per parser of outside
//! input) for a bounded time, each on a scratch corpus under target/fuzz/ seeded from
//! fuzz/seeds/ (the repository's real fixtures), and fails if any target crashed.
//!
//! The targets are built once, up front, so that each one's time is spent fuzzing. They
//! build with the nightly toolchain (libFuzzer's sanitizer flags), with debug assertions
//! and overflow checks on, and with an empty eBPF object (`AYA_BUILD_SKIP=1`): no parser
//! needs the kernel programs.
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

/// Seconds per target in `cargo xtask test` (and so in CI): enough to replay the seeds
/// and catch a regression that panics on them or near them.
pub const CI_SECONDS: u64 = 3;

/// The cargo-fuzz release installed when it is missing (builds with the stable toolchain).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// libFuzzer's limit for one input, in seconds: an input that takes longer is a hang.
const INPUT_TIMEOUT_S: u64 = 20;

/// How one target did.
pub struct Outcome {
    pub target: String,
    /// Inputs executed (libFuzzer's "Done N runs", or its last status line on a crash).
    pub runs: Option<u64>,
    /// Seconds libFuzzer reports having run ("in S second(s)"), else the wall time.
    pub seconds: u64,
    pub crashed: bool,
    /// The input that crashed it (libFuzzer's "Test unit written to ...").
    pub artifact: Option<PathBuf>,
    /// libFuzzer's whole output.
    pub log: PathBuf,
}

/// cargo, through rustup, with the nightly toolchain (cargo-fuzz needs its -Z flags).
fn nightly_cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .current_dir(dir)
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("REDIS_TRACE_REQUIRE_EBPF")
        // Set by the stable cargo running xtask; the nightly one must pick its own.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

fn ensure_cargo_fuzz(fuzz_dir: &Path) -> Result<()> {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        bail!("the fuzz targets need the nightly toolchain: run `cargo xtask setup`");
    }
    if ok(nightly_cargo(fuzz_dir).args(["fuzz", "--version"])) {
        return Ok(());
    }
    crate::status(
        &format!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (once, about a minute)"),
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
    )
}

/// Every target, as `cargo fuzz list` names them (the [[bin]]s of fuzz/Cargo.toml).
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let out = nightly_cargo(fuzz_dir)
        .args(["fuzz", "list"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Copies fuzz/seeds/<target>/* into the scratch corpus (which keeps what earlier runs
/// found); returns the number of seeds.
fn seed_corpus(seeds: &Path, corpus: &Path) -> Result<usize> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let Ok(entries) = std::fs::read_dir(seeds) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), corpus.join(entry.file_name()))
                .with_context(|| format!("copying seed {}", entry.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// What libFuzzer's output says: (runs, seconds) from "Done N runs in S second(s)", and
/// the artifact of a crash.
fn parse_log(text: &str) -> (Option<u64>, Option<u64>, Option<PathBuf>) {
    let mut runs = None;
    let mut seconds = None;
    let mut artifact = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 123456 runs in 61 second(s)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [n, "runs", "in", s, ..] = words.as_slice() {
                runs = n.parse().ok();
                seconds = s.parse().ok();
            }
        } else if let Some(rest) = line.strip_prefix('#') {
            // Status lines: "#12345\tpulse  cov: ..." (the count so far, for a crash).
            if runs.is_none() || seconds.is_none() {
                if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    runs = Some(n);
                }
            }
        } else if let Some(i) = line.find("Test unit written to ") {
            let path = line[i + "Test unit written to ".len()..].trim();
            artifact = Some(PathBuf::from(path));
        }
    }
    (runs, seconds, artifact)
}

fn fuzz_one(root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let fuzz_dir = root.join("fuzz");
    let scratch = root.join("target/fuzz");
    let corpus = scratch.join("corpus").join(target);
    let seeds = seed_corpus(&fuzz_dir.join("seeds").join(target), &corpus)?;
    let logs = scratch.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{target}.log"));
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s ({seeds} seeds; output in {})",
        log.display()
    );

    let started = Instant::now();
    let mut cmd = nightly_cargo(&fuzz_dir);
    cmd.args(["fuzz", "run", "--debug-assertions", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1");
    // Tokens of the input's format (JSON keys, enum values), when the target has them.
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    // libFuzzer writes to stderr, a panic's message to stderr too; keep both, in order of
    // arrival per stream.
    let stdout = child.stdout.take().context("fuzz stdout")?;
    let out_thread = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .fold(String::new(), |mut s, l| {
                let _ = writeln!(s, "{l}");
                s
            })
    });
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(text, "{line}");
        }
    }
    let status = child.wait()?;
    text.push_str(&out_thread.join().unwrap_or_default());
    std::fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;

    let (runs, secs, artifact) = parse_log(&text);
    let artifact = artifact.map(|a| if a.is_relative() { fuzz_dir.join(a) } else { a });
    let crashed = !status.success();
    if crashed && artifact.is_none() && runs.is_none() {
        // Not libFuzzer failing: the build or cargo-fuzz itself.
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        bail!(
            "cargo fuzz run {target} failed ({status}) before fuzzing; see {}",
            log.display()
        );
    }
    Ok(Outcome {
        target: target.to_string(),
        runs,
        seconds: secs.unwrap_or_else(|| started.elapsed().as_secs()),
        crashed,
        artifact,
        log,
    })
}

/// The per-target table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from("target            executions    seconds  crash\n");
    for o in outcomes {
        let runs = o.runs.map_or_else(|| "?".to_string(), |n| n.to_string());
        let crash = match (&o.crashed, &o.artifact) {
            (false, _) => "no".to_string(),
            (true, Some(a)) => format!("YES: {}", a.display()),
            (true, None) => format!("YES: see {}", o.log.display()),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>11} {:>10}  {crash}",
            o.target, runs, o.seconds
        );
    }
    s
}

/// Builds every target, then fuzzes each (or only `only`) for `seconds`. Err when a
/// target crashed, naming the inputs that did.
pub fn run(root: &Path, seconds: u64, only: Option<&str>) -> Result<Vec<Outcome>> {
    let fuzz_dir = root.join("fuzz");
    ensure_cargo_fuzz(&fuzz_dir)?;
    let mut targets = list_targets(&fuzz_dir)?;
    if let Some(only) = only {
        if !targets.iter().any(|t| t == only) {
            bail!("no fuzz target {only:?}; there are: {}", targets.join(", "));
        }
        targets.retain(|t| t == only);
    }
    let started = Instant::now();
    let mut build = nightly_cargo(&fuzz_dir);
    build.args(["fuzz", "build", "--debug-assertions"]);
    if let Some(only) = only {
        build.arg(only);
    }
    crate::status("building the fuzz targets (nightly, libFuzzer)", &mut build)?;
    eprintln!("xtask: fuzz targets built in {:.0?}", started.elapsed());

    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(fuzz_one(root, t, seconds)?);
    }
    println!("{}", table(&outcomes));
    let crashed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| match &o.artifact {
            Some(a) => format!(
                "{} (input {}; reproduce: cd fuzz && cargo +nightly fuzz run -a {} {})",
                o.target,
                a.display(),
                o.target,
                a.display()
            ),
            None => format!("{} (see {})", o.target, o.log.display()),
        })
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join("; "));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_done_line() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #1048576\tpulse  cov: 10 ft: 10 corp: 1/1b lim: 4 exec/s: 349525 rss: 31Mb\n\
                   Done 2097152 runs in 61 second(s)\nstat::number_of_executed_units: 2097152\n";
        assert_eq!(parse_log(log), (Some(2_097_152), Some(61), None));
    }

    #[test]
    fn parses_a_crash() {
        let log = "#40\tNEW    cov: 12 ft: 14 corp: 3/9b lim: 4 exec/s: 0 rss: 31Mb L: 3/4 MS: 1\n\
                   thread '<unnamed>' panicked at src/tracefs.rs:1:1:\n\
                   ==17== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/w/fuzz/artifacts/tracefs_format/'; Test unit written to \
                   /w/fuzz/artifacts/tracefs_format/crash-da39a3ee\n";
        assert_eq!(
            parse_log(log),
            (
                Some(40),
                None,
                Some(PathBuf::from(
                    "/w/fuzz/artifacts/tracefs_format/crash-da39a3ee"
                ))
            )
        );
    }
}
