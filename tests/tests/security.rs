//! Safe to run as root on a shared host (docs/security.md): a traced program is never
//! executed, the password goes only to the Redis the operator meant, outputs cannot be
//! turned against root, the demo's Redis is no open door, the Redis log is opened
//! safely, what Redis says is escaped, signals work from the first moment, and setup
//! stops no service.
//!
//! The hostile "Redis" here is tests/src/bin/fake-redis-server.rs: what any local user
//! could start on a free port.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scenario_tests::{
    Capture, Redis, fake_server_bin, free_port, private_dir, redis_trace_bin, require_root,
    wait_timeout,
};
use serde_json::Value;

/// nobody:nogroup on Debian.
const NOBODY: u32 = 65534;
const SECRET: &str = "s3cret-for-the-real-redis-only";

/// A fake redis-server, running as `uid`, from a copy of its binary named
/// `redis-server` (owned by `uid`) in a directory of its own. Killed on drop.
struct Fake {
    child: Child,
    port: u16,
    dir: PathBuf,
    exe: PathBuf,
    record: PathBuf,
}

impl Fake {
    fn start(uid: u32, extra: &[&str]) -> Self {
        require_root();
        let dir = private_dir("fake");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let exe = dir.join("redis-server");
        std::fs::copy(fake_server_bin(), &exe).expect("copying the fake server");
        std::os::unix::fs::chown(&exe, Some(uid), Some(uid)).expect("chown exe");
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).expect("chown dir");
        let record = dir.join("received");
        let port = free_port();
        let child = Command::new(&exe)
            .args(["--port", &port.to_string(), "--record"])
            .arg(&record)
            .args(extra)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the fake redis-server");
        let fake = Fake {
            child,
            port,
            dir,
            exe,
            record,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "the fake server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        // What connecting just now wrote is not redis-trace's.
        let _ = std::fs::remove_file(&fake.record);
        fake
    }

    fn executed(&self) -> bool {
        let mut m = self.exe.clone().into_os_string();
        m.push(".executed");
        Path::new(&m).exists()
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ended(records: &[Value]) -> &Value {
    records.last().expect("records")
}

/// Must-fix 1 and 2: a local user's fake redis-server on a free port is discovered and
/// probed, but never executed, and never receives the operator's password; the real,
/// root-owned redis-server discovered beside it does.
#[test]
fn a_users_fake_redis_is_probed_never_run_and_never_gets_the_password() {
    let fake = Fake::start(NOBODY, &[]);
    let real = Redis::start();
    let set = real.command(&format!("CONFIG SET requirepass {SECRET}"));
    assert!(set.starts_with("+OK"), "{set}");
    // Discovery (no --port): both are found by name.
    let cap = Capture::start_env(
        &[
            "capture".into(),
            "--json".into(),
            "-".into(),
            "--duration".into(),
            "4s".into(),
        ],
        &[("REDISCLI_AUTH", SECRET)],
    );
    let probes = cap.started["redis_uprobes"]
        .as_array()
        .expect("redis_uprobes")
        .iter()
        .find(|p| p["pid"] == fake.child.id())
        .unwrap_or_else(|| panic!("the fake server was not probed: {}", cap.started))
        .clone();
    assert_eq!(
        probes["attached"],
        serde_json::json!(["freeClient", "freeClientAsync"]),
        "{probes}"
    );
    let (records, err) = cap.stop_with(libc::SIGINT);
    assert!(
        !fake.executed(),
        "redis-trace executed the traced program; stderr:\n{err}"
    );
    let got = fake.received();
    assert!(
        !got.contains(SECRET),
        "the fake server received the password: {got:?}"
    );
    assert!(
        got.contains("INFO"),
        "redis-trace should still read the fake server, without the password: {got:?}"
    );
    assert!(
        err.contains(&format!(
            "not sending the Redis password to port {}",
            fake.port
        )),
        "stderr should say why: {err}"
    );
    // The real server (root, /usr/bin/redis-server) got it: connected.
    let connected = records.iter().any(|r| {
        r["type"] == "redis_status" && r["port"] == real.port && r["status"] == "connected"
    });
    assert!(
        connected,
        "the real server should be read with the password; stderr:\n{err}"
    );
    let end = ended(&records);
    assert_eq!(end["own_connections_unmarked"], 0, "{end}");
    assert!(end["connections_without_start"].is_u64(), "{end}");
}

/// Must-fix 2, `diagnose`: a discovered listener of another user gets no password either.
#[test]
fn diagnose_sends_no_password_to_a_users_fake_redis() {
    let fake = Fake::start(NOBODY, &[]);
    let out = Command::new(redis_trace_bin())
        .args(["diagnose", "--json"])
        .env("REDISCLI_AUTH", SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("diagnose");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !fake.received().contains(SECRET),
        "diagnose sent the password to the fake server: {:?}; stderr:\n{err}",
        fake.received()
    );
    assert!(
        fake.received().contains("INFO") || err.contains("not sending the Redis password"),
        "diagnose should have read the fake server without the password; stderr:\n{err}"
    );
    assert!(!fake.executed());
}

fn capture_to(json: &Path, port: u16, extra: &[&str]) -> std::process::Output {
    Command::new(redis_trace_bin())
        .args(["capture", "-q", "--no-redis", "--no-uprobes", "--port"])
        .arg(port.to_string())
        .args(["--duration", "1s"])
        .args(extra)
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .expect("redis-trace capture")
}

/// Must-fix 3: an output path that is a symlink is replaced, not followed; a file another
/// user owns becomes root's, 0600; a capture that fails its checks touches nothing.
#[test]
fn outputs_are_new_private_files_and_never_follow_symlinks() {
    require_root();
    let redis = Redis::start();
    let dir = private_dir("outputs");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let link = dir.join("trace.jsonl");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let out = capture_to(&link, redis.port, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "the symlink's target was written"
    );
    let meta = std::fs::symlink_metadata(&link).expect("output");
    assert!(meta.file_type().is_file(), "the output is not a new file");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);

    // A file of another user's, world-writable: replaced by root's own 0600 file.
    let theirs = dir.join("theirs.jsonl");
    std::fs::write(&theirs, "old\n").expect("theirs");
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = capture_to(&theirs, redis.port, &[]);
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::metadata(&theirs).expect("output");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let text = std::fs::read_to_string(&theirs).expect("read");
    assert!(text.starts_with("{\"type\":\"capture_started\""), "{text}");

    // A precondition fails (a password in the URL): the existing file stays as it was.
    let kept = dir.join("kept.jsonl");
    std::fs::write(&kept, "keep me\n").expect("kept");
    let out = Command::new(redis_trace_bin())
        .args(["capture", "-q", "--port"])
        .arg(redis.port.to_string())
        .args(["--redis-url", "redis://:pw@127.0.0.1:1/", "--json"])
        .arg(&kept)
        .output()
        .expect("capture");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&kept).expect("kept"), "keep me\n");

    // The report and its chart: the same.
    let victim2 = dir.join("victim2");
    std::fs::write(&victim2, "precious\n").expect("victim2");
    let md = dir.join("report.md");
    std::os::unix::fs::symlink(&victim2, &md).expect("symlink");
    std::os::unix::fs::symlink(&victim2, dir.join("report.svg")).expect("symlink");
    let out = Command::new(redis_trace_bin())
        .arg("report")
        .arg(&theirs)
        .arg("-o")
        .arg(&md)
        .output()
        .expect("report");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim2).expect("v2"), "precious\n");
    for f in [md.clone(), dir.join("report.svg")] {
        let meta = std::fs::symlink_metadata(&f).expect("report file");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Must-fix 6: a FIFO as Redis's logfile neither hangs the capture nor is read, and
/// Ctrl-C still ends it at once; a symlink to /etc/shadow is not followed. Must-fix 8:
/// Redis's version with control characters is escaped on stderr.
#[test]
fn a_hostile_logfile_is_refused_and_ctrl_c_still_works() {
    require_root();
    let dir = private_dir("logs");
    let fifo = dir.join("redis.log");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let link = dir.join("shadow.log");
    std::os::unix::fs::symlink("/etc/shadow", &link).expect("symlink");
    for (logfile, why) in [(&fifo, "not a regular file"), (&link, "symbolic link")] {
        let fake = Fake::start(
            0,
            &[
                "--logfile",
                &logfile.to_string_lossy(),
                "--version-text",
                "7.0.15\u{1b}]0;owned\u{7}",
            ],
        );
        let cap = Capture::start(&[fake.port]);
        // Long enough for the poller to connect and the log to be opened.
        std::thread::sleep(Duration::from_millis(1500));
        let asked = Instant::now();
        let (records, err) = cap.stop_with(libc::SIGINT);
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "Ctrl-C took {:?}",
            asked.elapsed()
        );
        assert_eq!(ended(&records)["type"], "capture_ended");
        let status = records
            .iter()
            .find(|r| r["type"] == "redis_status" && r["status"] == "connected")
            .unwrap_or_else(|| panic!("no redis_status; stderr:\n{err}"));
        assert_eq!(status["log_readable"], false, "{status}");
        let note = status["log_note"].as_str().unwrap_or_default();
        assert!(note.contains(why), "{logfile:?}: {status}");
        assert!(
            err.contains(why),
            "stderr should say why the log is not read: {err}"
        );
        // A version that is not a plain x.y.z is not believed, so never printed.
        assert!(
            !err.contains('\u{1b}') && !err.contains("owned") && err.contains("version ?"),
            "Redis's hostile version must not reach stderr: {err:?}"
        );
        assert!(!err.contains("root:"), "/etc/shadow leaked: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn sigcgt(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Must-fix 9: SIGINT and SIGTERM are caught before anything is attached (before
/// `capture_started`), and a Ctrl-C then ends the capture cleanly.
#[test]
fn signals_are_handled_from_the_first_moment() {
    require_root();
    let redis = Redis::start();
    let dir = private_dir("signals");
    let json = dir.join("c.jsonl");
    let mut child = Command::new(redis_trace_bin())
        .args(["capture", "-q", "--port"])
        .arg(redis.port.to_string())
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capture");
    let pid = child.id();
    let int_and_term = (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1));
    let end = Instant::now() + Duration::from_secs(10);
    while sigcgt(pid) & int_and_term != int_and_term {
        assert!(Instant::now() < end, "the handlers never came");
        assert!(child.try_wait().ok().flatten().is_none(), "exited early");
        std::thread::yield_now();
    }
    let started_already = std::fs::read_to_string(&json).is_ok_and(|t| !t.is_empty());
    assert!(
        !started_already,
        "the signal handlers came only after the probes were live"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert!(wait_timeout(&mut child, Duration::from_secs(30)), "no exit");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("status");
    assert!(status.success(), "{status}; stderr:\n{err}");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let last: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("json");
    assert_eq!(last["type"], "capture_ended", "{text}");
    assert_eq!(last["ended_by"], "interrupt");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Must-fix 4 and 5: the demo's redis-server wants a password, runs as the `redis`
/// user, from a fresh 0700 directory; Ctrl-C cleans everything up.
#[test]
fn the_demos_redis_is_no_open_door() {
    require_root();
    let mut demo = Command::new(redis_trace_bin())
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let mut err = BufReader::new(demo.stderr.take().expect("stderr"));
    let mut port = None;
    let mut line = String::new();
    let end = Instant::now() + Duration::from_secs(30);
    while port.is_none() && Instant::now() < end {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(rest) = line.split("listens on 127.0.0.1:").nth(1) {
            port = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    // Drain the rest in the background so the demo never blocks on stderr.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    let Some(port) = port else {
        let _ = demo.kill();
        let _ = demo.wait();
        panic!("the demo did not say where its redis-server listens");
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap_or(0);
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    // Which process serves it, and as whom.
    let owner = scenario_tests_listener_pid(port);
    let (uid, cwd_mode) = owner
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
            let mode = std::fs::metadata(format!("/proc/{pid}/cwd"))
                .map(|m| m.mode() & 0o777)
                .ok();
            (uid, mode)
        })
        .unwrap_or((None, None));
    let cwd = owner.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let exited = wait_timeout(&mut demo, Duration::from_secs(30));
    if !exited {
        let _ = demo.kill();
    }
    assert!(
        reply.starts_with("-NOAUTH"),
        "an unauthenticated PING got {reply:?}"
    );
    let redis_uid = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"redis")).then(|| f.get(2)?.parse::<u32>().ok())?
        });
    if let Some(want) = redis_uid {
        assert_eq!(
            uid,
            Some(want),
            "the demo's redis-server should run as redis"
        );
    }
    assert_eq!(cwd_mode, Some(0o700), "its directory should be private");
    assert!(exited, "the demo did not end on Ctrl-C");
    if let Some(cwd) = cwd {
        assert!(!cwd.exists(), "{} was left behind", cwd.display());
    }
}

/// The pid of the process listening on 127.0.0.1:`port`, from /proc.
fn scenario_tests_listener_pid(port: u16) -> Option<u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && *f.get(3)? == "0A").then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                return Some(pid);
            }
        }
    }
    None
}

/// Must-fix 10: setup installs packages without starting their services, and stops
/// none. Run with stand-ins for apt-get and systemctl that record what they were asked.
#[test]
fn setup_starts_and_stops_no_service() {
    require_root();
    let dir = private_dir("setup");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let log = dir.join("calls");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    let stub = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("stub");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    stub(
        "apt-get",
        &format!(
            "echo \"apt-get $*\" >> {log}\n\
             if [ \"$1\" = install ] || [ \"$3\" = install ] || echo \"$*\" | grep -q install; then\n\
               if [ -x /usr/sbin/policy-rc.d ]; then /usr/sbin/policy-rc.d redis-server start; echo \"policy $?\" >> {log}; else echo 'policy none' >> {log}; fi\n\
             fi\nexit 0",
            log = log.display()
        ),
    );
    for name in ["systemctl", "service", "invoke-rc.d"] {
        stub(name, &format!("echo \"{name} $*\" >> {}", log.display()));
    }
    // A PATH without redis-server makes setup install it; the rest of the tools are
    // linked from this host.
    for tool in [
        "bash", "sh", "sed", "ls", "head", "cut", "grep", "mkdir", "ln", "touch", "rm", "chmod",
        "printf", "cat", "dirname",
    ] {
        for d in ["/usr/bin", "/bin"] {
            let src = Path::new(d).join(tool);
            if src.exists() && !bin.join(tool).exists() {
                let _ = std::os::unix::fs::symlink(&src, bin.join(tool));
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup.sh");
    let out = Command::new(bin.join("bash"))
        .arg(&setup)
        .env_clear()
        .env("PATH", format!("{}:{home}/.cargo/bin", bin.display()))
        .env("HOME", &home)
        .env("REDIS_TRACE_SETUP_QUIET", "1")
        .output()
        .expect("setup.sh");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        calls.contains("install") && calls.contains("redis-server"),
        "setup should have installed redis-server: {calls}; {out:?}"
    );
    assert!(
        calls.contains("policy 101"),
        "services must be kept from starting during the install: {calls}"
    );
    for stop in ["systemctl", "service ", "invoke-rc.d"] {
        assert!(!calls.contains(stop), "setup touched a service: {calls}");
    }
    assert_eq!(policy.exists(), had_policy, "policy-rc.d left changed");
    let _ = std::fs::remove_dir_all(&dir);
}
