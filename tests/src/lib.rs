//! Support for the scenario tests: a throwaway redis-server on a free loopback port, the
//! real `redis-trace` binary capturing it, and small real clients. The Redis lab itself
//! (the server, RESP, memory cgroups, network namespaces) is crate `redis-lab`, shared
//! with the demo and the bench; its names are re-exported here.
//!
//! Tests need root (they load eBPF programs) and panic with a message when something
//! is missing: a scenario that cannot run is a failure, never a silent pass.
use std::io::{BufRead, BufReader, Read as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use redis_lab::{
    MEMCG_LIMIT_BYTES, MemCgroup, Netns, Redis, RedisOptions, Topology, in_netns, resp, run_in,
    wait_closed,
};
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

/// `major.minor` of the running kernel.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_else(|e| panic!("reading /proc/sys/kernel/osrelease: {e}"));
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("odd kernel release {release:?}"))
    };
    (next(), next())
}

/// The `rst_reason` a record of a RST sent here must carry on this kernel: the reason
/// (`TCP_STATE`, ...) where `tcp:tcp_send_reset` has one (6.10 and later); before that,
/// none, and then `capture_started` must say that the reason is missing. A kernel new
/// enough to have it cannot pass without it.
pub fn expected_rst_reason(started: &Value, reason: &str) -> Value {
    if kernel_version() >= (6, 10) {
        return Value::from(reason);
    }
    let said = started["probes_unavailable"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["probe"] == "tcp:tcp_send_reset reason"));
    assert!(
        said,
        "kernel {:?} has no reset reasons, and capture_started must say so: {started}",
        kernel_version()
    );
    Value::Null
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
    redis_lab::private_dir(&format!("redis-trace-{tag}"))
        .unwrap_or_else(|e| panic!("creating a private temporary directory: {e}"))
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

/// A port nobody listens on right now (bound then released).
pub fn free_port() -> u16 {
    redis_lab::free_port().unwrap_or_else(|e| panic!("binding a free port: {e}"))
}

/// One line of a capture, as JSON. It must also read as the schema's typed record
/// (`redis_trace::schema::Record`, what `report` reads) and write again as the very same
/// JSON: a field the capture writes that the schema does not hold, or holds differently,
/// fails the test, so the report can never drift from the capture.
pub fn record(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
    let typed: redis_trace::schema::Record = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("a line that is not a schema record ({e}): {line}"));
    let again = serde_json::to_value(&typed).expect("a typed record serializes");
    assert_eq!(
        again, v,
        "the schema's record differs from the line the capture wrote"
    );
    v
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
        let started = record(&first);
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
            let r = record(&line);
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
            records.push(record(&line));
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

/// A record's evidence sentences, one per line (empty when it has none).
pub fn evidence_text(r: &Value) -> String {
    r["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
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
    redis_lab::set_linger_zero(s).unwrap_or_else(|e| panic!("setsockopt(SO_LINGER): {e}"));
}
