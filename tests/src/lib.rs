//! Support for the scenario tests: a throwaway redis-server on a free loopback port, the
//! real `redis-trace` binary capturing it, and small real clients.
//!
//! Tests need root (they load eBPF programs) and panic with a message when something
//! is missing: a scenario that cannot run is a failure, never a silent pass.
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The redis-trace binary under test: `REDIS_TRACE_BIN`, or the release build in this
/// workspace (what `cargo xtask test` builds, with its eBPF programs).
pub fn redis_trace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_TRACE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/redis-trace");
    assert!(
        bin.exists(),
        "{} is missing: run the scenario tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "scenario tests load eBPF programs and need root: run `sudo cargo xtask test`"
    );
}

/// A new private directory (mkdtemp: a fresh name, mode 0700), never one that someone
/// else could have made in /tmp beforehand. The caller removes it.
pub fn private_dir(tag: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("redis-trace-{tag}-"))
        .tempdir()
        .expect("creating a private temporary directory")
        .keep()
}

/// The fake redis-server (tests/src/bin/fake-redis-server.rs), built beside rt-client.
pub fn fake_server_bin() -> PathBuf {
    let bin = client_bin().with_file_name("fake-redis-server");
    assert!(
        bin.exists(),
        "{} is missing: the scenario tests build it (cargo xtask test)",
        bin.display()
    );
    bin
}

/// A port nobody listens on right now (bound then released).
/// Checks that a finished command succeeded (else panics with `what` and its output);
/// returns its stdout.
pub fn check_ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to completion (no stdin); panics with its output unless it succeeds.
/// Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    check_ok(&out, &what)
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// A redis-server of our own, killed on drop.
pub struct Redis {
    pub port: u16,
    pub child: Child,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// Starts redis-server with extra arguments, optionally through a wrapper command
    /// (e.g. one that moves it into a memory cgroup first).
    pub fn start_with(extra: &[&str], wrapper: Option<&[&str]>) -> Self {
        Self::start_on(free_port(), extra, wrapper)
    }

    /// Like [`Redis::start_with`], on `port`: e.g. a server's again after it was stopped.
    /// Ready once PING is answered: PONG, or NOAUTH from a server with a password.
    pub fn start_on(port: u16, extra: &[&str], wrapper: Option<&[&str]>) -> Self {
        let mut redis = Self::spawn(port, extra, wrapper);
        redis.wait_ready(|r| {
            r.try_command("PING")
                .is_ok_and(|p| p.starts_with("+PONG") || p.starts_with("-NOAUTH"))
        });
        redis
    }

    /// Like [`Redis::start_with`], but ready as soon as it accepts a connection: no
    /// command is sent, so its command statistics (INFO commandstats) show only what the
    /// test runs.
    pub fn start_without_commands(extra: &[&str]) -> Self {
        let mut redis = Self::spawn(free_port(), extra, None);
        redis.wait_ready(|r| TcpStream::connect_timeout(&r.addr(), Duration::from_secs(2)).is_ok());
        redis
    }

    fn spawn(port: u16, extra: &[&str], wrapper: Option<&[&str]>) -> Self {
        let dir = private_dir("test");
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1 ::1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg("redis-server");
                c
            }
            None => Command::new("redis-server"),
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            // Its log goes to --logfile; one started with `--logfile ""` logs here instead,
            // which is not the test's output.
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (installed by scripts/setup.sh)");
        Redis { port, child, dir }
    }

    /// Starts redis-server with `extra` arguments where it listens on `port` some other
    /// way (TLS): ready once `redis-cli -p port CLI_ARGS PING` answers PONG.
    pub fn start_with_ping(extra: &[&str], port: u16, cli_args: &[&str]) -> Self {
        let mut redis = Self::spawn(free_port(), extra, None);
        redis.port = port;
        let cli: Vec<String> = cli_args.iter().map(|s| s.to_string()).collect();
        redis.wait_ready(move |r| {
            Command::new("redis-cli")
                .args(["-p", &r.port.to_string()])
                .args(&cli)
                .arg("PING")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
        });
        redis
    }

    fn wait_ready(&mut self, ready: impl Fn(&Redis) -> bool) {
        let redis = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready(redis) {
                break;
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends one inline command on a fresh connection and returns the first reply line.
    pub fn try_command(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line)
    }

    pub fn command(&self, cmd: &str) -> String {
        self.try_command(cmd)
            .unwrap_or_else(|e| panic!("redis command {cmd:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `redis-trace capture --json -`, its records collected by a thread.
pub struct Capture {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Records read by [`Capture::wait_for`], handed back by [`Capture::stop_with`].
    seen: Vec<Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub started: Value,
}

impl Capture {
    /// Starts a capture of `ports` and waits for its `capture_started` line.
    pub fn start(ports: &[u16]) -> Self {
        let mut args: Vec<String> = vec!["capture".into(), "--json".into(), "-".into()];
        for p in ports {
            args.push("--port".into());
            args.push(p.to_string());
        }
        Self::start_args(&args)
    }

    pub fn start_args(args: &[String]) -> Self {
        Self::start_env(args, &[])
    }

    /// Like [`Capture::start_args`], with these environment variables set.
    pub fn start_env(args: &[String], env: &[(&str, &str)]) -> Self {
        require_root();
        let mut child = Command::new(redis_trace_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting redis-trace");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let Ok(first) = first else {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!("redis-trace did not start within 30 s; stderr:\n{err}");
        };
        let started: Value = serde_json::from_str(&first).expect("first line is JSON");
        assert_eq!(
            started["type"], "capture_started",
            "first JSON line must be capture_started: {first}"
        );
        Capture {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr: Some(stderr),
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `limit`) for a record that `want` accepts and returns it; the
    /// records read meanwhile are kept for [`Capture::stop`]. Panics on timeout.
    pub fn wait_for(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "no such record within {limit:?}; records so far: {:?}",
                    self.seen
                );
            };
            let r: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            self.seen.push(r.clone());
            if want(&r) {
                return r;
            }
        }
    }

    /// Sends `sig` and returns every record written after `capture_started`, the last
    /// one being `capture_ended`, plus stderr.
    pub fn stop_with(mut self, sig: i32) -> (Vec<Value>, String) {
        // Let the last events reach the ring buffer and pass the grace period.
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        let mut records = std::mem::take(&mut self.seen);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            records.push(
                serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}")),
            );
        }
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        assert!(
            status,
            "redis-trace did not exit within 30 s of the signal; stderr:\n{err}"
        );
        (records, err)
    }

    pub fn stop(self) -> Vec<Value> {
        self.stop_with(libc::SIGINT).0
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child to exit; false on timeout (the child is then killed).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `connection_closed` records whose server end is on `port`.
pub fn closed_on(records: &[Value], port: u16) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] == "connection_closed")
        .filter(|r| {
            r["server"]
                .as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
                .is_some_and(|a| a.port() == port)
        })
        .cloned()
        .collect()
}

/// The one record for the connection whose client end is `client`.
pub fn closed_for(records: &[Value], client: SocketAddr) -> Value {
    let want = client.to_string();
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "connection_closed" && r["client"] == want.as_str())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one connection_closed for client {want}, got {}: {records:#?}",
        found.len()
    );
    found[0].clone()
}

/// The path of the small client program that tests run as a separate process.
pub fn client_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/rt-client
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = dir.join("rt-client");
    assert!(
        bin.exists(),
        "{} missing: build the scenario-tests package",
        bin.display()
    );
    bin
}

/// Reads rt-client's first line, "local ip:port": the client's end of its connection.
pub fn client_local_addr(out: &mut impl BufRead) -> SocketAddr {
    let mut line = String::new();
    out.read_line(&mut line)
        .expect("rt-client says where it is");
    line.trim()
        .strip_prefix("local ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("rt-client said {line:?}"))
}

/// The thread id of the calling thread.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Sets SO_LINGER {on, 0}: close() then aborts with a RST.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

pub const MEMCG_LIMIT_BYTES: u64 = 64 << 20;

/// A memory cgroup of our own (v2 when the unified hierarchy has the memory
/// controller, else v1), limited to 64 MiB without swap. Dropping it (also on panic)
/// kills whatever is still in it (only processes this test started) and removes it.
pub struct MemCgroup {
    pub dir: PathBuf,
}

fn write_file(path: &Path, value: &str) {
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", path.display()));
}

impl MemCgroup {
    pub fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("redis-trace-test-{}-{nanos}", std::process::id());
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(v2_root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        if v2 {
            // The children of the root get the memory controller only when the root
            // delegates it.
            let subtree = v2_root.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&subtree)
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
            if !enabled {
                write_file(&subtree, "+memory");
            }
            let dir = v2_root.join(&name);
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
            let cg = MemCgroup { dir };
            write_file(&cg.dir.join("memory.max"), &MEMCG_LIMIT_BYTES.to_string());
            if cg.dir.join("memory.swap.max").exists() {
                write_file(&cg.dir.join("memory.swap.max"), "0");
            }
            cg
        } else {
            let v1_root = Path::new("/sys/fs/cgroup/memory");
            assert!(
                v1_root.join("memory.limit_in_bytes").exists(),
                "no memory cgroup controller: neither {} lists memory nor is v1's \
                 mounted at {}",
                v2_root.join("cgroup.controllers").display(),
                v1_root.display()
            );
            let dir = v1_root.join(&name);
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
            let cg = MemCgroup { dir };
            // memory first: memsw may never be below it.
            write_file(
                &cg.dir.join("memory.limit_in_bytes"),
                &MEMCG_LIMIT_BYTES.to_string(),
            );
            if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                write_file(
                    &cg.dir.join("memory.memsw.limit_in_bytes"),
                    &MEMCG_LIMIT_BYTES.to_string(),
                );
            }
            let oom_control = cg.dir.join("memory.oom_control");
            let ctl = std::fs::read_to_string(&oom_control)
                .unwrap_or_else(|e| panic!("reading {}: {e}", oom_control.display()));
            if ctl.lines().any(|l| l.trim() == "oom_kill_disable 1") {
                write_file(&oom_control, "0");
            }
            let ctl = std::fs::read_to_string(&oom_control).unwrap_or_default();
            assert!(
                ctl.lines().any(|l| l.trim() == "oom_kill_disable 0"),
                "the OOM killer stays disabled in {}: {ctl}",
                cg.dir.display()
            );
            cg
        }
    }

    /// A wrapper for `Redis::start_with`: the shell moves itself into the group, then
    /// execs `redis-server` (its `$0`) with the arguments (`$@`), keeping its pid.
    pub fn wrapper_script(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            self.dir.display()
        )
    }

    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // rmdir fails while a process is in it (or until the memcg is released): retry
        // for at most 10 s.
        for _ in 0..500 {
            for pid in self.pids() {
                // SAFETY: kill(2) on a process of our own group (started by this test).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}
