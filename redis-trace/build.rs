//! Builds the kernel programs (crate `redis-trace-ebpf`) with the nightly toolchain and
//! bpf-linker, for the binary to embed: one file to copy to a host.
//!
//! Without that toolchain (or with `AYA_BUILD_SKIP=1`) an empty object is embedded
//! instead, so `cargo build`/`clippy` work anywhere; such a binary says, when asked to
//! capture, how to get a real one. `REDIS_TRACE_REQUIRE_EBPF=1` (set by `cargo xtask`)
//! turns a missing toolchain into a build error instead.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

const OBJECT: &str = "redis-trace";

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
        return Ok(());
    }

    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .join("../redis-trace-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "redis-trace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
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
