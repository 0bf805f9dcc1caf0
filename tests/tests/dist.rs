//! What `cargo xtask dist --deb` ships works where operators copy it: the static binary
//! runs in a Debian bullseye root (glibc 2.31) and in a root with no libc at all, a
//! short real capture included; the .deb installs in a clean root with its man page.
//!
//! `cargo xtask test` builds both and names them in REDIS_TRACE_DIST_BIN and
//! REDIS_TRACE_DEB. The bullseye root is made once with mmdebstrap under target/.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use scenario_tests::{Redis, check_ok, private_dir, require_root, run_ok};
use serde_json::Value;

fn shipped(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{var} does not name a file: run the scenario tests with `cargo xtask test`")
        })
}

/// One bullseye root for the tests of this file (made once: ~1 min, ~150 MB).
fn bullseye_root() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _held = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-roots/bullseye");
    if root.join("etc/debian_version").exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.parent().expect("parent")).expect("target/test-roots");
    // mmdebstrap: scripts/setup.sh installs it.
    run_ok(
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--include=man-db", "--quiet", "bullseye"])
            .arg(&root)
            .arg("deb http://deb.debian.org/debian bullseye main"),
    );
    root
}

/// Runs `script` (sh) in a mount namespace of its own, where ROOT has /proc and /sys
/// (with tracefs) mounted: nothing stays mounted after it.
fn in_root(root: &Path, script: &str) -> Output {
    let setup = format!(
        "set -e; R='{r}'; mkdir -p \"$R/proc\" \"$R/sys\" \"$R/tmp\"; \
         mount -t proc proc \"$R/proc\"; mount --rbind /sys \"$R/sys\"; \
         mountpoint -q \"$R/sys/kernel/tracing\" || mount -t tracefs nodev \"$R/sys/kernel/tracing\"; {script}",
        r = root.display()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &setup])
        .stdin(Stdio::null())
        .output()
        .expect("unshare")
}

/// A short real capture of `redis` by `/rt` inside `root`, while this test opens and
/// closes a connection: its record must be there.
fn capture_in(root: &Path, redis: &Redis) {
    let script = format!(
        "chroot '{r}' /rt capture -q --no-redis --no-uprobes --port {p} --duration 3s --json /tmp/c.jsonl && cat '{r}/tmp/c.jsonl'",
        r = root.display(),
        p = redis.port
    );
    let worker = {
        let port = redis.port;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("ping");
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf);
            s.local_addr().expect("addr")
        })
    };
    let out = in_root(root, &script);
    let client = worker.join().expect("client");
    let text = check_ok(&out, "capture in the root");
    let records: Vec<Value> = text.lines().map(scenario_tests::record).collect();
    assert_eq!(
        records.first().map(|r| &r["type"]),
        Some(&"capture_started".into())
    );
    assert_eq!(
        records.last().map(|r| &r["type"]),
        Some(&"capture_ended".into())
    );
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "connection_closed" && r["client"] == client.to_string()),
        "no record of {client}: {text}"
    );
}

#[test]
fn the_static_binary_runs_on_bullseye_and_without_any_libc() {
    require_root();
    let bin = shipped("REDIS_TRACE_DIST_BIN");
    let redis = Redis::start();

    // Debian 11: glibc 2.31.
    let root = bullseye_root();
    let version = std::fs::read_to_string(root.join("etc/debian_version")).expect("version");
    assert!(version.starts_with("11"), "not bullseye: {version}");
    std::fs::copy(&bin, root.join("rt")).expect("copy into the root");
    let out = in_root(&root, &format!("chroot '{}' /rt --version", root.display()));
    let v = check_ok(&out, "--version");
    assert!(v.contains("eBPF object sha256:"), "{v}");
    let out = in_root(
        &root,
        &format!("chroot '{}' /rt generate man", root.display()),
    );
    assert!(check_ok(&out, "generate man").contains(".TH redis-trace"));
    capture_in(&root, &redis);
    let _ = std::fs::remove_file(root.join("rt"));

    // No libc, no loader, nothing but the binary.
    let bare = private_dir("bare-root");
    std::fs::copy(&bin, bare.join("rt")).expect("copy");
    let out = in_root(&bare, &format!("chroot '{}' /rt --version", bare.display()));
    check_ok(&out, "--version with no libc");
    capture_in(&bare, &redis);
    let _ = std::fs::remove_dir_all(&bare);
}

#[test]
fn the_deb_installs_in_a_clean_root_with_its_man_page() {
    require_root();
    let deb = shipped("REDIS_TRACE_DEB");
    let root = bullseye_root();
    std::fs::copy(&deb, root.join("tmp/redis-trace.deb")).expect("copy the .deb");
    let r = root.display();
    let out = in_root(
        &root,
        &format!(
            "chroot '{r}' dpkg -i /tmp/redis-trace.deb >/dev/null && \
             chroot '{r}' redis-trace --help && chroot '{r}' man -w redis-trace && \
             chroot '{r}' dpkg -L redis-trace"
        ),
    );
    let text = check_ok(&out, "dpkg -i, --help, man -w");
    assert!(text.contains("Usage: redis-trace"), "{text}");
    for f in [
        "/usr/share/man/man1/redis-trace.1.gz",
        "/usr/bin/redis-trace",
        "/usr/share/bash-completion/completions/redis-trace",
        "/usr/share/zsh/vendor-completions/_redis-trace",
        "/usr/share/fish/vendor_completions.d/redis-trace.fish",
    ] {
        assert!(text.contains(f), "{f} missing: {text}");
    }
    let out = in_root(
        &root,
        &format!("chroot '{r}' dpkg -r redis-trace >/dev/null"),
    );
    check_ok(&out, "dpkg -r");
    let _ = std::fs::remove_file(root.join("tmp/redis-trace.deb"));
}
