//! Builds the kernel programs (crate `redis-trace-ebpf`) with the nightly toolchain and
//! bpf-linker, for the binary to embed: one file to copy to a host.
//!
//! Without that toolchain (or with `AYA_BUILD_SKIP=1`) an empty object is embedded
//! instead, so `cargo build`/`clippy` work anywhere; such a binary says, when asked to
//! capture, how to get a real one. `REDIS_TRACE_REQUIRE_EBPF=1` (set by `cargo xtask`)
//! turns a missing toolchain into a build error instead.
//!
//! The nested cargo build runs quietly: one line says it runs, and its output is shown
//! only when it fails (aya-build's `build_ebpf` forwards every progress line as a cargo
//! warning: ~100 lines in a newcomer's first command). The flags are aya-build's.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The eBPF crate's binary target: the object embedded.
const OBJECT: &str = "redis-trace";
const PACKAGE: &str = "redis-trace-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=REDIS_TRACE_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let required = env::var("REDIS_TRACE_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");

    let missing = missing_toolchain();
    if skip || missing.is_some() {
        let why = missing.unwrap_or_else(|| "AYA_BUILD_SKIP is set".to_string());
        if required {
            bail!("cannot build the eBPF programs: {why}; run scripts/setup.sh");
        }
        println!(
            "cargo:warning=embedding an empty eBPF object ({why}); `redis-trace capture` will not work. Run scripts/setup.sh and rebuild."
        );
        fs::write(out_dir.join(OBJECT), []).context("writing the stub eBPF object")?;
        println!("cargo:rustc-env=REDIS_TRACE_EBPF_BUILD=no eBPF object ({why})");
        return Ok(());
    }

    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .join("../redis-trace-ebpf");
    println!("cargo:rerun-if-changed={}", root.display());
    let object = build_ebpf(&root, &out_dir)?;
    fs::copy(&object, out_dir.join(OBJECT))
        .with_context(|| format!("copying {} into OUT_DIR", object.display()))?;
    let bytes = fs::read(&object).context("reading the eBPF object")?;
    println!(
        "cargo:rustc-env=REDIS_TRACE_EBPF_BUILD=eBPF object sha256:{} ({} KiB), {}, {}",
        &sha256_hex(&bytes)[..16],
        bytes.len() / 1024,
        tool_version(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])),
        tool_version(Command::new("bpf-linker").arg("--version")),
    );
    Ok(())
}

/// `cargo +nightly build` of the eBPF crate for the bpf target, quietly. Returns the
/// object's path.
fn build_ebpf(root: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_else(|_| "little".into());
    let target = if endian == "big" {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };
    // The architecture the programs read registers of (uprobes): the binary's own.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let target_dir = out_dir.join("ebpf-target");
    // Separators as in CARGO_ENCODED_RUSTFLAGS.
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    println!("cargo:warning=building the eBPF programs ({PACKAGE}, nightly, {target})");
    let output = Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--quiet",
            "--package",
            PACKAGE,
        ])
        .args(["--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer build's compiler settings are not the nested one's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .context("running cargo for the eBPF programs")?;
    if !output.status.success() {
        bail!(
            "building the eBPF programs failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let object = target_dir.join(target).join("release").join(OBJECT);
    if !object.exists() {
        bail!("the eBPF build did not produce {}", object.display());
    }
    Ok(object)
}

fn tool_version(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Why the eBPF toolchain cannot run here, if it cannot.
fn missing_toolchain() -> Option<String> {
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok(Command::new("bpf-linker").arg("--version")) {
        return Some("bpf-linker not found".into());
    }
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Some("no nightly Rust toolchain".into());
    }
    None
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
