//! `cargo xtask vm-test`: the scenario tests on the kernels production Redis runs on,
//! each booted in QEMU (issue 15). Every test elsewhere runs on this machine's kernel;
//! this proves the kernel side (verifier, tracepoint layouts, missing tracepoints) on
//! Debian 11's 5.10, Debian 12's 6.1 and bookworm-backports' 6.12.
//!
//! - Kernels: Debian's `linux-image-*-amd64-unsigned` packages, through a private
//!   sources list (as `cargo xtask builds` does), `dpkg-deb -x`, `depmod -b`; cached in
//!   target/vm/kernels/ with a stamp naming the package, so a second run downloads
//!   nothing. The newest package of each series that the mirror has is taken (Debian
//!   drops old ABI numbers from the mirror, so a pin would rot); the stamp and the table
//!   in docs/compatibility.md name the one used.
//! - Boot: the uncompressed vmlinux (the PVH entry skips the decompressor, slow under
//!   TCG), a small initramfs (Debian's busybox-static and the virtio/9p/overlay modules
//!   in dependency order), the host's `/` shared read-only over 9p under a tmpfs overlay,
//!   and a second, writable 9p share for the results. `/dev/kvm` on this machine kind is
//!   a paravirtual nested hypervisor that cannot run stock kernels, so QEMU emulates
//!   (TCG), single-threaded: a multi-threaded TCG guest oopsed once while probes were
//!   attached (../shared/notes/platform.md, "Kernels in VMs").
//! - Inside: the release binary's `capture_started` (which probes attach), then the
//!   scenario test executables built on the host, one test at a time, on [`SCENARIOS`]:
//!   one per kernel-side mechanism (TCG runs the guest 5-20x slower than the host; the
//!   full suite runs on the host kernel in `cargo xtask test`).
//! - Results: each test's `ok`/`FAILED` line as the test harness prints it. A scenario
//!   that did not report `ok` (failed, ignored, filtered out, timed out, the VM died) is
//!   a failure: nothing is counted as passed that did not run and pass.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One kernel of the matrix: the newest `PREFIX<abi>-amd64-unsigned` in `suite`.
pub struct Kernel {
    pub name: &'static str,
    pub suite: &'static str,
    /// The package name up to the ABI part: `linux-image-5.10.0-` + `35` + `-amd64-unsigned`.
    pub prefix: &'static str,
    /// Who runs it in production, for the table.
    pub who: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
        prefix: "linux-image-5.10.0-",
        who: "Debian 11",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
        who: "Debian 12, Amazon Linux 2023",
    },
    Kernel {
        name: "6.12",
        suite: "bookworm-backports",
        prefix: "linux-image-6.12.",
        who: "Debian 12 backports, Debian 13",
    },
];
const SUFFIX: &str = "-amd64-unsigned";

/// The core subset run in every VM: (test executable, test name, the kernel-side
/// mechanism it proves). Names are exact: a scenario renamed away fails here, loudly.
pub const SCENARIOS: &[(&str, &str, &str)] = &[
    (
        "capture",
        "quit_is_a_server_fin_and_close_is_a_client_fin",
        "FIN from each side (inet_sock_set_state)",
    ),
    (
        "capture",
        "linger_zero_close_is_a_client_rst_tcp_state",
        "RST sent on close() with SO_LINGER 0 (tcp_send_reset)",
    ),
    (
        "capture",
        "client_killed_with_unread_data_is_a_client_rst_abort_on_close",
        "RST sent by a dying process with unread data (tcp_send_reset)",
    ),
    (
        "causes_client_net",
        "client_linger_zero_abort_is_client_reset",
        "a client's abort: its RST sent, and received by the server (client_reset)",
    ),
    (
        "containers",
        "two_namespaces_on_one_loopback_port_keep_their_own_causes",
        "two namespaces' servers on one loopback port (each socket's namespace, BTF offsets)",
    ),
    (
        "causes_client_net",
        "reset_from_a_router_is_a_middlebox_reset",
        "RST from a router between namespaces (tcp_receive_reset, no tcp_send_reset)",
    ),
    (
        "middlebox",
        "router_reset_toward_redis_is_a_middlebox_by_its_ttl",
        "a remote RST checked against the peer's packets (cgroup_skb programs, TTL)",
    ),
    (
        "middlebox",
        "nat_idle_drop_keeps_the_idle_timeout_and_adds_the_path_finding",
        "a NAT that forgot an idle flow answers Redis's FIN (packets after the record)",
    ),
    (
        "causes_client_net",
        "retransmission_timeout_is_a_kernel_reset_or_says_what_is_missing",
        "the kernel gives up (retransmission timeout: inet_sk_error_report, or its absence)",
    ),
    (
        "capture",
        "idle_timeout_is_a_server_fin_from_redis",
        "Redis's idle timeout (server FIN in Redis's context)",
    ),
    (
        "causes_redis",
        "oom_kill_is_redis_oom_killed_for_every_connection",
        "OOM kill of redis-server (oom:mark_victim)",
    ),
    (
        "causes_redis",
        "oom_kill_without_the_oom_probe_is_unknown_never_a_shutdown",
        "OOM kill with oom:mark_victim left out: unknown, never a wrong cause",
    ),
    (
        "causes_redis",
        "sigkill_from_another_process_is_redis_killed_naming_kill",
        "SIGKILL sent to redis-server (signal:signal_generate, sched_process_exit)",
    ),
    (
        "causes_redis",
        "shutdown_command_is_redis_shutdown_for_the_other_clients",
        "Redis exiting on its own (sched_process_exit, no signal)",
    ),
    (
        "capture",
        "ipv6_loopback_connection",
        "IPv6 addresses (the v6 fields of every tracepoint)",
    ),
    (
        "capture",
        "connections_open_before_the_capture_are_reported_with_their_owner",
        "connections open before the capture (/proc, then the kernel's close)",
    ),
    (
        "capture",
        "two_thousand_short_connections_give_two_thousand_records_and_no_loss",
        "2,000-connection churn without loss (ring buffer, connection map)",
    ),
    (
        "capture",
        "tracefs_is_mounted_when_missing",
        "tracefs not mounted at start (the tool mounts it)",
    ),
];

/// The tracepoints the kernel programs use: their format files are kept from each run
/// (target/vm/runs/KERNEL/formats/), the unit tests' fixtures come from there.
const TRACEPOINTS: &[&str] = &[
    "sock/inet_sock_set_state",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "sock/inet_sk_error_report",
    "oom/mark_victim",
    "signal/signal_generate",
    "sched/sched_process_exit",
];

/// Time limits: a stuck mirror or a hung VM ends in an error, never a hang.
const APT_LIMIT: Duration = Duration::from_secs(300);
/// One test executable's run inside the guest (its scenarios, one at a time; the
/// longest, `capture`, takes about 60 s under TCG here).
const GUEST_BINARY_LIMIT: Duration = Duration::from_secs(300);
/// The whole VM: boot, probe check, every scenario, power off (85-140 s here). Three
/// kernels that all hang stay within CI's budget for this step (~25 minutes).
const VM_LIMIT: Duration = Duration::from_secs(480);
/// Guest memory: the OOM test's cgroup is 64 MiB; 2,000 connections and redis-server
/// fit easily.
const GUEST_MEM: &str = "2048M";

/// The modules the initramfs loads (with their dependencies): virtio transport, 9p
/// filesystem, overlayfs.
const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Paths under target/vm/.
struct Dirs {
    base: PathBuf,
}

impl Dirs {
    fn apt(&self) -> PathBuf {
        self.base.join("apt")
    }
    fn kernel(&self, k: &Kernel) -> PathBuf {
        self.base.join("kernels").join(k.name)
    }
    fn stamp(&self, k: &Kernel) -> PathBuf {
        self.base
            .join("kernels")
            .join(format!("{}.fetched", k.name))
    }
    fn run(&self, k: &Kernel) -> PathBuf {
        self.base.join("runs").join(k.name)
    }
    fn logs(&self) -> PathBuf {
        self.base.join("logs")
    }

    /// apt-get options that use only our sources, lists and cache.
    fn apt_opts(&self) -> Vec<String> {
        crate::builds::private_apt_opts(&self.apt())
    }
}

/// A fetched kernel, ready to boot.
struct Ready {
    /// `uname -r`, e.g. 5.10.0-35-amd64.
    release: String,
    /// The Debian package and version it came from.
    package: String,
    dir: PathBuf,
    vmlinux: PathBuf,
}

/// What one kernel's run gave.
pub struct Outcome {
    pub kernel: &'static str,
    pub release: String,
    pub package: String,
    pub attached: Vec<String>,
    pub unavailable: Vec<(String, String)>,
    /// Per scenario: passed or not, and the harness's word for it.
    pub results: Vec<(&'static str, bool, String)>,
    pub wall: Duration,
    pub problem: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.1).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

pub struct Args<'a> {
    pub kernel: &'a str,
    pub filter: Option<&'a str>,
}

/// The marker lines in docs/compatibility.md between which the kernel table goes.
const TABLE_START: &str = "<!-- kernel matrix: written by `cargo xtask vm-test --kernel all` -->";
const TABLE_END: &str = "<!-- end of kernel matrix -->";

pub fn run(root: &Path, target: &Path, args: &Args<'_>) -> Result<Vec<Outcome>> {
    let started = Instant::now();
    if !crate::is_root() {
        bail!("cargo xtask vm-test runs as root (apt-get, QEMU's 9p shares of /): use sudo");
    }
    let kernels: Vec<&Kernel> = match args.kernel {
        "all" => KERNELS.iter().collect(),
        name => vec![KERNELS.iter().find(|k| k.name == name).with_context(|| {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
            format!(
                "no kernel {name:?}: choose one of {} or all",
                names.join(", ")
            )
        })?],
    };
    let scenarios: Vec<&(&str, &str, &str)> = SCENARIOS
        .iter()
        .filter(|s| args.filter.is_none_or(|f| s.1.contains(f)))
        .collect();
    if scenarios.is_empty() {
        bail!(
            "no scenario of the VM subset matches {:?} (the list is SCENARIOS in xtask/src/vm.rs)",
            args.filter.unwrap_or_default()
        );
    }
    ensure_host_tools()?;
    let dirs = Dirs {
        base: root.join("target/vm"),
    };
    std::fs::create_dir_all(dirs.logs())?;
    let _lock = crate::builds::lock(&dirs.base.join(".lock"))?;

    // Everything the guest runs is built here first: the guest only executes.
    let bin = crate::build()?;
    let exes = test_executables()?;
    let mut plan: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &scenarios {
        plan.entry(s.0).or_default().push(s.1);
    }
    for name in plan.keys() {
        if !exes.contains_key(*name) {
            bail!("the scenario-tests package has no test executable {name:?}");
        }
    }

    let mut ready = Vec::new();
    let mut apt_ready = false;
    for k in &kernels {
        let t = Instant::now();
        let r = fetch(&dirs, k, &mut apt_ready).with_context(|| format!("kernel {}", k.name))?;
        eprintln!(
            "xtask: vm-test: kernel {} is {} ({}), ready in {:.1} s",
            k.name,
            r.release,
            r.package,
            t.elapsed().as_secs_f64()
        );
        ready.push(r);
    }

    let mut outcomes = Vec::new();
    for (k, r) in kernels.iter().zip(&ready) {
        let o = boot_and_test(&dirs, k, r, &bin, target, &exes, &plan)?;
        println!(
            "vm {} ({}): {} passed, {} failed in {:.0} s",
            k.name,
            r.release,
            o.passed(),
            o.failed(),
            o.wall.as_secs_f64()
        );
        outcomes.push(o);
    }
    print_matrix(&outcomes, &scenarios);
    let table = table(&outcomes, &scenarios);
    std::fs::write(dirs.base.join("kernel-matrix.md"), &table)?;
    if args.kernel == "all" && args.filter.is_none() {
        splice_table(root, &table)?;
    }
    eprintln!(
        "xtask: vm-test: {} kernel(s) in {:.0} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(outcomes)
}

/// QEMU, busybox-static (the initramfs's shell) and kmod (depmod, modprobe for the
/// modules' order): installed from the host's own sources when missing
/// (scripts/setup.sh installs them too).
fn ensure_host_tools() -> Result<()> {
    let mut missing = Vec::new();
    if which("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86");
    }
    if !Path::new("/bin/busybox").exists() || !is_static(Path::new("/bin/busybox")) {
        missing.push("busybox-static");
    }
    if which("depmod").is_none() || which("modprobe").is_none() {
        missing.push("kmod");
    }
    if which("dpkg-deb").is_none() {
        missing.push("dpkg");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::status(
        &format!("installing {} (apt-get)", missing.join(" ")),
        Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq >/dev/null; apt-get install -y -qq --no-install-recommends \"$@\" >/dev/null",
                "sh",
            ])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("{} needed: run scripts/setup.sh", missing.join(" ")))?;
    if which("qemu-system-x86_64").is_none() || !is_static(Path::new("/bin/busybox")) {
        bail!(
            "installed {}, yet QEMU or a static busybox is still missing",
            missing.join(" ")
        );
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An ELF with no PT_INTERP: it runs in an initramfs with no libc.
fn is_static(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return false;
    };
    use object::Object as _;
    file.section_by_name(".interp").is_none()
}

/// The scenario test executables (built here, with the release profile), by name.
fn test_executables() -> Result<BTreeMap<String, PathBuf>> {
    eprintln!("xtask: building the scenario tests (cargo test --release --no-run)");
    let out = crate::cargo()
        .args([
            "test",
            "--release",
            "--package",
            "scenario-tests",
            "--no-run",
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the scenario tests failed ({})", out.status);
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            v["target"]["name"].as_str(),
            v["executable"].as_str(),
        ) {
            exes.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    if exes.is_empty() {
        bail!("cargo test --no-run named no test executable");
    }
    Ok(exes)
}

/// The kernel of `k`, from the cache or from Debian's mirror.
fn fetch(dirs: &Dirs, k: &Kernel, apt_ready: &mut bool) -> Result<Ready> {
    let dir = dirs.kernel(k);
    if let Ok(stamp) = std::fs::read_to_string(dirs.stamp(k))
        && let Some(r) = ready_from(&dir, stamp.trim())
    {
        return Ok(r);
    }
    if !*apt_ready {
        apt_update(dirs)?;
        *apt_ready = true;
    }
    let (pkg, version) = newest_package(dirs, k)?;
    let dl = dirs.apt().join("debs").join(k.name);
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    crate::builds::bounded(
        &format!("downloading {pkg} {version} from Debian {}", k.suite),
        Command::new("apt-get")
            .args(dirs.apt_opts())
            .arg("download")
            .arg(format!("{pkg}={version}"))
            .current_dir(&dl),
        &dirs.logs().join(format!("download-{}.log", k.name)),
        APT_LIMIT,
    )?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dl.display()))?;
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    crate::status(
        &format!("extracting {}", deb.display()),
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
    )?;
    let release = only_release(&partial)?;
    // The package ships no modules.dep: make one, so that modprobe works in the guest
    // (veth, nf_tables for the middlebox test) and here (the initramfs's module order).
    crate::status(
        &format!("depmod for {release}"),
        Command::new(which("depmod").unwrap_or_else(|| "depmod".into()))
            .arg("-a")
            .arg("-b")
            .arg(&partial)
            .arg(&release),
    )?;
    let vmlinuz = partial.join(format!("boot/vmlinuz-{release}"));
    extract_vmlinux(&vmlinuz, &partial.join("vmlinux"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)?;
    std::fs::remove_dir_all(&dl)?;
    let key = format!("{pkg} {version}");
    std::fs::write(dirs.stamp(k), &key)?;
    ready_from(&dir, &key).context("the extracted kernel is incomplete")
}

fn ready_from(dir: &Path, package: &str) -> Option<Ready> {
    let release = only_release(dir).ok()?;
    let vmlinux = dir.join("vmlinux");
    let deps = dir.join(format!("lib/modules/{release}/modules.dep"));
    (vmlinux.is_file() && deps.is_file() && !package.is_empty()).then(|| Ready {
        release,
        package: package.to_string(),
        dir: dir.to_path_buf(),
        vmlinux,
    })
}

/// The one kernel release under DIR/lib/modules.
fn only_release(dir: &Path) -> Result<String> {
    let mods = dir.join("lib/modules");
    let names: Vec<String> = std::fs::read_dir(&mods)
        .with_context(|| format!("reading {}", mods.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in {}, found {names:?}", mods.display()),
    }
}

fn apt_update(dirs: &Dirs) -> Result<()> {
    let apt = dirs.apt();
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    if !Path::new(KEYRING).exists() {
        bail!("{KEYRING} is missing: apt-get install debian-archive-keyring");
    }
    let mut list = String::new();
    for k in KERNELS {
        list.push_str(&format!(
            "deb [signed-by={KEYRING}] {MIRROR} {} main\n",
            k.suite
        ));
    }
    std::fs::write(apt.join("sources.list"), list)?;
    crate::builds::bounded(
        "apt-get update of a private package list (the kernels' suites)",
        Command::new("apt-get").args(dirs.apt_opts()).arg("update"),
        &dirs.logs().join("apt-update.log"),
        APT_LIMIT,
    )
}

/// The newest `PREFIX<abi>-amd64-unsigned` that `k.suite` has, and its version.
fn newest_package(dirs: &Dirs, k: &Kernel) -> Result<(String, String)> {
    let out = Command::new("apt-cache")
        .args(dirs.apt_opts())
        .args(["pkgnames", k.prefix])
        .output()
        .context("running apt-cache pkgnames")?;
    let names = String::from_utf8_lossy(&out.stdout);
    let pkg = pick_newest(names.lines(), k.prefix).with_context(|| {
        format!(
            "Debian's mirror lists no {}<abi>{SUFFIX} (suite {})",
            k.prefix, k.suite
        )
    })?;
    let out = Command::new("apt-cache")
        .args(dirs.apt_opts())
        .args(["madison", &pkg])
        .output()
        .context("running apt-cache madison")?;
    // "pkg | version | http://... suite/main amd64 Packages"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .filter(|l| l.contains(&format!(" {}/", k.suite)))
        .find_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
        .with_context(|| format!("no version of {pkg} in {}: {text}", k.suite))?;
    Ok((pkg, version))
}

/// Of package names, the newest plain (not -cloud, -rt) `PREFIX<abi>-amd64-unsigned`,
/// comparing the ABI's numbers.
fn pick_newest<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Option<String> {
    let abi_key = |abi: &str| -> Vec<u64> {
        abi.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    names
        .filter_map(|n| {
            let abi = n.trim().strip_prefix(prefix)?.strip_suffix(SUFFIX)?;
            (!abi.is_empty() && !abi.contains('-') && abi.starts_with(|c: char| c.is_ascii_digit()))
                .then(|| (abi_key(abi), n.trim().to_string()))
        })
        .max()
        .map(|(_, n)| n)
}

/// The ELF inside a bzImage: found at its compressor's magic, as the kernel's
/// scripts/extract-vmlinux does. Booted directly (PVH), it skips the decompression that
/// takes seconds under TCG.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let tools: [(&[u8], &str, &[&str]); 4] = [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz", &["-dc"]),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dcq"]),
        (&[0x1f, 0x8b, 0x08], "gzip", &["-dc"]),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4", &["-dc"]),
    ];
    for (magic, tool, args) in tools {
        let mut at = 0;
        while let Some(pos) = find(&data[at..], magic) {
            let start = at + pos;
            at = start + 1;
            let Ok(mut child) = Command::new(tool)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            else {
                break;
            };
            let input = data[start..].to_vec();
            let mut stdin = child.stdin.take().context("stdin")?;
            let feeder = std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
            let result = child.wait_with_output()?;
            let _ = feeder.join();
            // Trailing garbage makes the tool complain; the output is what counts.
            if result.stdout.starts_with(b"\x7fELF") {
                std::fs::write(out, &result.stdout)?;
                return Ok(());
            }
        }
    }
    bail!(
        "found no compressed ELF kernel in {} (xz, zstd, gzip, lz4)",
        vmlinuz.display()
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The initramfs: busybox, the modules in load order, and /init.
fn initramfs(k: &Ready, out: &Path) -> Result<()> {
    let modprobe = which("modprobe").context("modprobe (kmod) is missing")?;
    // One module per call: modprobe takes the words after the first as its parameters.
    let mut depends = String::new();
    for m in INITRAMFS_MODULES {
        let o = Command::new(&modprobe)
            .arg("-d")
            .arg(&k.dir)
            .arg("-S")
            .arg(&k.release)
            .arg("--show-depends")
            .arg(m)
            .output()
            .context("running modprobe --show-depends")?;
        if !o.status.success() {
            bail!(
                "modprobe --show-depends {m}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        depends.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let mut order = String::new();
    for line in depends.lines() {
        // "insmod /DIR/lib/modules/R/kernel/.../x.ko[.xz] " or "builtin x"
        let Some(path) = line.strip_prefix("insmod ") else {
            continue;
        };
        let path = Path::new(path.split_whitespace().next().unwrap_or_default());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("odd module path in {line:?}"))?;
        let (base, data) = if let Some(b) = name.strip_suffix(".xz") {
            let d = Command::new("xz").arg("-dc").arg(path).output()?;
            if !d.status.success() {
                bail!("xz -dc {} failed", path.display());
            }
            (b.to_string(), d.stdout)
        } else if let Some(b) = name.strip_suffix(".zst") {
            let d = Command::new("zstd").arg("-dcq").arg(path).output()?;
            if !d.status.success() {
                bail!("zstd -dc {} failed", path.display());
            }
            (b.to_string(), d.stdout)
        } else {
            (name.to_string(), std::fs::read(path)?)
        };
        if files.iter().any(|f| f.0 == format!("modules/{base}")) {
            continue;
        }
        order.push_str(&base);
        order.push('\n');
        files.push((format!("modules/{base}"), data, 0o644));
    }
    files.push(("modules.order".into(), order.into_bytes(), 0o644));
    files.push(("init".into(), INIT.as_bytes().to_vec(), 0o755));
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox")?;
    files.push(("bin/busybox".into(), busybox, 0o755));
    let dirs = [
        "bin", "dev", "proc", "sys", "modules", "host", "rw", "newroot",
    ];
    write_cpio(out, &dirs, &files)
}

/// The initramfs's /init (busybox sh). It mounts the host's root read-only under a tmpfs
/// overlay, the results share on /vm-out, the kernel's filesystems, then runs
/// /vm-out/guest.sh chrooted there and powers off. Whatever happens, it powers off: a
/// kernel panic reboots, which -no-reboot turns into QEMU's exit.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read m; do insmod /modules/$m || echo "vm: insmod $m failed"; done < /modules.order
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro hostroot /host || echo "vm: no host root"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || echo "vm: no overlay"
R=/newroot
mkdir -p $R/vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results $R/vm-out || echo "vm: no results share"
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
# A workspace or target directory under the host's /tmp (a clone there) stays visible:
# its top directory is bound back over the guest's own /tmp.
for P in $(cat $R/vm-out/host-tmp.paths 2>/dev/null); do
  D=/tmp/$(echo $P | cut -d/ -f3)
  mkdir -p $R$D && mount --bind /host$D $R$D || echo "vm: cannot show $D"
done
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
# tracefs is left unmounted: redis-trace mounts it itself (a test checks that).
# The kernel's own modules (veth, nf_tables...), from where xtask extracted them.
KREL=$(uname -r)
MODS=$(cat $R/vm-out/modules.path)
mkdir -p $R/lib/modules/$KREL
mount --bind $R$MODS $R/lib/modules/$KREL || echo "vm: no modules at $MODS"
# The kernel loads modules on demand (veth, nf_tables) by running modprobe_path in the
# initramfs's root: point it at the modprobe of the chroot, where the modules are.
printf '#!/bin/sh\nexec chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-chroot
chmod 755 /bin/modprobe-chroot
echo /bin/modprobe-chroot > /proc/sys/kernel/modprobe
hostname vm-$KREL
echo "vm: $KREL up after $(cut -d' ' -f1 /proc/uptime) s"
chroot $R /bin/sh /vm-out/guest.sh
echo "vm: guest.sh exited $?"
sync
poweroff -f
"#;

/// An uncompressed newc cpio archive (what the kernel unpacks as initramfs).
fn write_cpio(out: &Path, dirs: &[&str], files: &[(String, Vec<u8>, u32)]) -> Result<()> {
    let mut buf = Vec::new();
    let mut ino = 1u32;
    let mut entry = |buf: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        ino += 1;
        buf.extend_from_slice(header.as_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
        buf.extend_from_slice(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    };
    for d in dirs {
        entry(&mut buf, d, 0o040755, &[]);
    }
    for (name, data, perm) in files {
        entry(&mut buf, name, 0o100000 | perm, data);
    }
    entry(&mut buf, "TRAILER!!!", 0, &[]);
    std::fs::write(out, buf).with_context(|| format!("writing {}", out.display()))
}

/// The script run inside the guest, chrooted in the host's (overlaid) root.
fn guest_script(
    bin: &Path,
    target: &Path,
    exes: &BTreeMap<String, PathBuf>,
    plan: &BTreeMap<&str, Vec<&str>>,
) -> String {
    let mut s = String::new();
    s.push_str("# Written by cargo xtask vm-test (xtask/src/vm.rs); run inside the VM.\n");
    s.push_str(
        "cd /vm-out\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    s.push_str("export HOME=/root\nip link set lo up\nuname -r > /vm-out/release\n");
    s.push_str(&format!(
        "export REDIS_TRACE_BIN={}\nexport CARGO_TARGET_DIR={}\n",
        bin.display(),
        target.display()
    ));
    // Which probes this kernel runs: the binary's own capture_started. It mounts
    // tracefs for the probe check; unmount it again for the scenario that wants it absent.
    s.push_str(&format!(
        "timeout -k 5 120 {} capture --port 1 --duration 1s --no-redis --no-uprobes --quiet --json /vm-out/started.jsonl > /vm-out/started.log 2>&1\n\
         echo \"vm: probe check exited $?\"; cat /vm-out/started.log\n\
         mkdir -p /vm-out/formats\n\
         for e in {}; do cp /sys/kernel/tracing/events/$e/format /vm-out/formats/$(echo $e | sed 's,/,__,').format 2>/dev/null; done\n\
         umount /sys/kernel/tracing 2>/dev/null\n",
        bin.display(),
        TRACEPOINTS.join(" ")
    ));
    for (exe, names) in plan {
        let path = exes
            .get(*exe)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            "echo \"vm: running {exe} ({} scenarios)\"\n\
             {{ timeout -k 10 {} {path} --exact --test-threads=1 {} 2>&1; echo \"vm: {exe} exited $?\"; }} | tee /vm-out/{exe}.log\n",
            names.len(),
            GUEST_BINARY_LIMIT.as_secs(),
            names.join(" ")
        ));
    }
    s.push_str("echo vm: done > /vm-out/done\nsync\n");
    s
}

fn boot_and_test(
    dirs: &Dirs,
    k: &'static Kernel,
    r: &Ready,
    bin: &Path,
    target: &Path,
    exes: &BTreeMap<String, PathBuf>,
    plan: &BTreeMap<&str, Vec<&str>>,
) -> Result<Outcome> {
    let start = Instant::now();
    let run = dirs.run(k);
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run)?;
    let initrd = run.join("initramfs.cpio");
    initramfs(r, &initrd)?;
    std::fs::write(run.join("guest.sh"), guest_script(bin, target, exes, plan))?;
    let console_path = run.join("console.log");
    let mut console = File::create(&console_path)?;
    let modules = r.dir.join("lib/modules").join(&r.release);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-machine",
        "q35",
    ])
    .args(["-m", GUEST_MEM, "-smp", "1", "-nographic", "-no-reboot"])
    .args(["-nic", "none", "-monitor", "none", "-serial", "stdio"])
    .arg("-kernel")
    .arg(&r.vmlinux)
    .arg("-initrd")
    .arg(&initrd)
    .args([
        "-append",
        "console=ttyS0 rdinit=/init panic=-1 oops=panic loglevel=4 tsc=reliable",
    ])
    .args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ])
    .arg("-virtfs")
    .arg(format!(
        "local,path={},mount_tag=results,security_model=none,multidevs=remap",
        run.display()
    ));
    // The guest binds them at /lib/modules/RELEASE, from the same path in the host's root.
    std::fs::write(run.join("modules.path"), modules.display().to_string())?;
    // What the guest must see of the host's /tmp (its own /tmp is a fresh tmpfs).
    let cwd = std::env::current_dir().context("the current directory")?;
    let under_tmp: Vec<String> = [cwd.as_path(), modules.as_path()]
        .iter()
        .filter(|p| p.starts_with("/tmp/"))
        .map(|p| p.display().to_string())
        .collect();
    std::fs::write(run.join("host-tmp.paths"), under_tmp.join("\n"))?;
    eprintln!(
        "xtask: vm-test: booting {} in QEMU (TCG, single-threaded); console in {}",
        r.release,
        console_path.display()
    );
    use std::os::unix::process::CommandExt as _;
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx2.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });
    let deadline = start + VM_LIMIT;
    let mut problem = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                let _ = writeln!(console, "{line}");
                println!("[{}] {line}", k.name);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: signals to the process group made for this QEMU only.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            problem = Some(format!(
                "the VM did not finish within {} s and was killed",
                VM_LIMIT.as_secs()
            ));
            break;
        }
    }
    let status = child.wait()?;
    if problem.is_none() && !run.join("done").exists() {
        problem = Some(format!(
            "the VM stopped ({status}) before the guest finished; see {}",
            console_path.display()
        ));
    }
    let (attached, unavailable) = probes(&run.join("started.jsonl"));
    // Every program is checked against this kernel, not only the host's: a probe the
    // kernel has but that did not attach (the verifier, a layout) fails the run.
    let mut results = vec![(
        PROBES_ROW,
        !attached.is_empty() && unavailable.iter().all(|u| acceptable_gap(&u.0, &u.1)),
        if attached.is_empty() {
            "no capture_started".to_string()
        } else {
            format!("{} attached", attached.len())
        },
    )];
    for (exe, names) in plan {
        let log = std::fs::read_to_string(run.join(format!("{exe}.log"))).unwrap_or_default();
        for name in names {
            let word = harness_word(&log, name);
            let name: &'static str = SCENARIOS.iter().find(|s| s.1 == *name).map_or("?", |s| s.1);
            results.push((name, word == "ok", word));
        }
    }
    let release = std::fs::read_to_string(run.join("release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| r.release.clone());
    Ok(Outcome {
        kernel: k.name,
        release,
        package: r.package.clone(),
        attached,
        unavailable,
        results,
        wall: start.elapsed(),
        problem,
    })
}

/// The result row of the probe check (the binary's own `capture_started`).
const PROBES_ROW: &str = "every_probe_this_kernel_has_attaches";

/// A probe missing for a reason the kernel imposes (the tracepoint or the reset reason
/// field does not exist), not for one the tool could fix (the verifier, a layout).
fn acceptable_gap(probe: &str, why: &str) -> bool {
    why.starts_with("this kernel has no ")
        || (probe == "tcp:tcp_send_reset reason" && why.contains("has no `reason` field"))
}

/// What the test harness said of one test: "ok", "FAILED", "ignored", or "not run".
fn harness_word(log: &str, name: &str) -> String {
    let prefix = format!("test {name} ... ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|w| w.split_whitespace().next().unwrap_or("?").to_string())
        .unwrap_or_else(|| "not run".into())
}

/// `capture_started`'s probes: attached, and unavailable with why.
fn probes(path: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(v) = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "capture_started")
    else {
        return (Vec::new(), Vec::new());
    };
    let attached = v["probes_attached"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let unavailable = v["probes_unavailable"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["probe"].as_str().unwrap_or("?").to_string(),
                        p["why"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (attached, unavailable)
}

fn print_matrix(outcomes: &[Outcome], scenarios: &[&(&str, &str, &str)]) {
    println!();
    let mut head = format!("{:<72}", "scenario");
    for o in outcomes {
        head.push_str(&format!(" {:>8}", o.kernel));
    }
    println!("{head}");
    let probe_row = (
        "",
        PROBES_ROW,
        "every probe whose tracepoint exists attaches",
    );
    for s in std::iter::once(&probe_row).chain(scenarios.iter().copied()) {
        let mut line = format!("{:<72}", s.1);
        for o in outcomes {
            let cell = o
                .results
                .iter()
                .find(|r| r.0 == s.1)
                .map_or(
                    "-".to_string(),
                    |r| {
                        if r.1 { "ok".into() } else { r.2.clone() }
                    },
                );
            line.push_str(&format!(" {cell:>8}"));
        }
        println!("{line}");
    }
    for o in outcomes {
        println!(
            "{} ({}): probes attached {}/{}; {:.0} s{}",
            o.kernel,
            o.release,
            o.attached.len(),
            o.attached.len() + o.unavailable.iter().filter(|u| !u.0.contains(' ')).count(),
            o.wall.as_secs_f64(),
            o.problem
                .as_deref()
                .map(|p| format!("; {p}"))
                .unwrap_or_default()
        );
        for (p, why) in &o.unavailable {
            println!("    unavailable: {p}: {why}");
        }
    }
}

/// The Markdown table for docs/compatibility.md.
fn table(outcomes: &[Outcome], scenarios: &[&(&str, &str, &str)]) -> String {
    let mut t = String::from("| | ");
    t.push_str(
        &outcomes
            .iter()
            .map(|o| format!("{} (`{}`)", o.kernel, o.release))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    t.push_str(" |\n|---|");
    t.push_str(&"---|".repeat(outcomes.len()));
    t.push('\n');
    let row = |t: &mut String, label: &str, cells: Vec<String>| {
        t.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    };
    row(
        &mut t,
        "Debian package",
        outcomes.iter().map(|o| o.package.clone()).collect(),
    );
    row(
        &mut t,
        "runs in",
        outcomes
            .iter()
            .map(|o| {
                KERNELS
                    .iter()
                    .find(|k| k.name == o.kernel)
                    .map_or("", |k| k.who)
                    .to_string()
            })
            .collect(),
    );
    row(
        &mut t,
        "probes attached",
        outcomes
            .iter()
            .map(|o| {
                if o.attached.is_empty() {
                    "none".into()
                } else {
                    o.attached
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            })
            .collect(),
    );
    row(
        &mut t,
        "unavailable",
        outcomes
            .iter()
            .map(|o| {
                if o.unavailable.is_empty() {
                    "none".into()
                } else {
                    o.unavailable
                        .iter()
                        .map(|(p, why)| format!("`{p}`: {}", why.replace('|', "\\|")))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            })
            .collect(),
    );
    let probe_row = (
        "",
        PROBES_ROW,
        "every probe whose tracepoint exists attaches (the verifier, the layouts)",
    );
    for s in std::iter::once(&probe_row).chain(scenarios.iter().copied()) {
        row(
            &mut t,
            &format!("{} (`{}`)", s.2, s.1),
            outcomes
                .iter()
                .map(|o| match o.results.iter().find(|r| r.0 == s.1) {
                    Some((_, true, _)) => "✓".into(),
                    Some((_, false, w)) => format!("✗ {w}"),
                    None => "-".into(),
                })
                .collect(),
        );
    }
    row(
        &mut t,
        "scenarios",
        outcomes
            .iter()
            .map(|o| format!("{} passed, {} failed", o.passed(), o.failed()))
            .collect(),
    );
    row(
        &mut t,
        "wall time (boot + tests, TCG)",
        outcomes
            .iter()
            .map(|o| format!("{:.0} s", o.wall.as_secs_f64()))
            .collect(),
    );
    t
}

fn splice_table(root: &Path, table: &str) -> Result<()> {
    let doc_path = root.join("docs/compatibility.md");
    let doc = std::fs::read_to_string(&doc_path).context("reading docs/compatibility.md")?;
    let (Some(a), Some(b)) = (doc.find(TABLE_START), doc.find(TABLE_END)) else {
        bail!("docs/compatibility.md lacks the lines {TABLE_START} and {TABLE_END}");
    };
    let new = format!("{}{TABLE_START}\n{table}{}", &doc[..a], &doc[b..]);
    std::fs::write(&doc_path, new).context("writing docs/compatibility.md")?;
    eprintln!("xtask: vm-test: kernel table written to docs/compatibility.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_plain_package_is_picked() {
        let names = [
            "linux-image-5.10.0-9-amd64-unsigned",
            "linux-image-5.10.0-35-amd64-unsigned",
            "linux-image-5.10.0-35-cloud-amd64-unsigned",
            "linux-image-5.10.0-35-rt-amd64-unsigned",
            "linux-image-5.10.0-35-amd64",
        ];
        assert_eq!(
            pick_newest(names.into_iter(), "linux-image-5.10.0-").as_deref(),
            Some("linux-image-5.10.0-35-amd64-unsigned")
        );
        let bpo = [
            "linux-image-6.12.9+bpo-amd64-unsigned",
            "linux-image-6.12.48+deb12-amd64-unsigned",
            "linux-image-6.12.48+deb12-cloud-amd64-unsigned",
        ];
        assert_eq!(
            pick_newest(bpo.into_iter(), "linux-image-6.12.").as_deref(),
            Some("linux-image-6.12.48+deb12-amd64-unsigned")
        );
    }

    #[test]
    fn harness_words() {
        let log = "running 2 tests\ntest a ... ok\ntest ab ... FAILED\n";
        assert_eq!(harness_word(log, "a"), "ok");
        assert_eq!(harness_word(log, "ab"), "FAILED");
        assert_eq!(harness_word(log, "b"), "not run");
    }

    #[test]
    fn only_gaps_the_kernel_imposes_are_acceptable() {
        let no_tp = "this kernel has no sock:inet_sk_error_report tracepoint (x is missing)";
        assert!(acceptable_gap("sock:inet_sk_error_report", no_tp));
        assert!(acceptable_gap(
            "tcp:tcp_send_reset reason",
            "this kernel's tcp_send_reset has no `reason` field (added in 6.10)"
        ));
        assert!(!acceptable_gap(
            "oom:mark_victim",
            "loading the program for oom:mark_victim (the kernel's verifier refused it): ..."
        ));
        assert!(!acceptable_gap(
            "tcp:tcp_send_reset",
            "tcp_send_reset has no field `family`"
        ));
    }

    #[test]
    fn scenarios_are_unique() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.1 != s.1), "{}", s.1);
        }
    }

    #[test]
    fn cpio_is_newc() {
        let dir = std::env::temp_dir().join(format!("vm-cpio-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let out = dir.join("a.cpio");
        write_cpio(
            &out,
            &["bin"],
            &[("init".into(), b"#!/bin/sh\n".to_vec(), 0o755)],
        )
        .expect("cpio");
        let data = std::fs::read(&out).expect("read");
        assert!(data.starts_with(b"070701"));
        assert!(data.len().is_multiple_of(4));
        assert!(find(&data, b"TRAILER!!!").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
