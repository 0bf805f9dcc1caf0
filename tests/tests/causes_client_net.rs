//! Scenario tests of the causes a client or the network gives a connection's end, and of
//! how redis-trace reads Redis's own view (password, password file, a restricted ACL
//! user, Redis going away and coming back). The real binary, its real eBPF programs on
//! this kernel, a real redis-server, real clients; the middlebox test builds three
//! network namespaces of its own with a router between client and Redis. Run as root,
//! one at a time: `cargo xtask test`.
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scenario_tests::resp::{self, Reply};
use scenario_tests::{
    Netns, Redis, RedisOptions, closed_for, free_port, in_netns, redis_trace_bin, require_root,
    set_linger_zero, wait_timeout,
};
use serde_json::Value;

// ---- small helpers ----------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn ping(s: &mut TcpStream) {
    s.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).expect("read PONG");
    assert_eq!(&buf, b"+PONG\r\n");
}

fn my_pid() -> u64 {
    u64::from(std::process::id())
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000
    )
}

fn evidence_of(r: &Value) -> Vec<String> {
    r["evidence"]
        .as_array()
        .unwrap_or_else(|| panic!("no evidence array: {r}"))
        .iter()
        .map(|e| {
            e.as_str()
                .unwrap_or_else(|| panic!("evidence not strings: {r}"))
                .to_string()
        })
        .collect()
}

fn assert_evidence(r: &Value, needle: &str) {
    let ev = evidence_of(r);
    assert!(
        ev.iter().any(|e| e.contains(needle)),
        "no evidence containing {needle:?}: {r:#}"
    );
}

/// Runs a command to completion; panics with its output when it fails.
fn run(args: &[&str]) -> String {
    scenario_tests::run_ok(Command::new(args[0]).args(&args[1..]))
}

// ---- redis-server of our own, with any arguments ---------------------------------

/// Starts redis-server (the lab's defaults plus `options`), ready once a PING answers
/// +PONG or -NOAUTH (a server with a password). The returned `Redis` kills it and
/// removes its directory on drop.
fn start_redis(port: u16, options: RedisOptions) -> Redis {
    options
        .port(port)
        .dir_prefix(&format!("redis-trace-cnet-{port}"))
        .start()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A loopback redis-server (127.0.0.1 and ::1) on a free port.
fn local_redis(extra: &[&str]) -> Redis {
    start_redis(free_port(), Redis::options().args(extra))
}

// ---- a minimal RESP client (for AUTH, ACL, MONITOR) ----------------------------------

struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let stream = connect(addr);
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Conn { stream, reader }
    }

    fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    fn send(&mut self, args: &[&str]) {
        resp::send(&mut self.stream, args).expect("write");
    }

    fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        resp::read_reply(&mut self.reader).unwrap_or_else(|e| panic!("reply to {args:?}: {e}"))
    }
}

/// One command as an administrator (default user, `password`), on a fresh connection
/// (a server with `--timeout 1` closes idle ones). Returns the reply and the address the
/// command came from.
fn admin(redis: &Redis, password: &str, args: &[&str]) -> (Reply, SocketAddr) {
    let mut c = Conn::open(redis.addr());
    assert_eq!(c.call(&["AUTH", password]), Reply::Simple("OK".into()));
    let reply = c.call(args);
    (reply, c.local())
}

// ---- a capture with an environment of our choosing ---------------------------------

/// `redis-trace capture` with its JSON lines read by a thread; unlike the harness's
/// `Capture`, it controls REDISCLI_AUTH and lets a test wait for a record mid-capture.
struct Cap {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    records: Vec<Value>,
}

impl Cap {
    /// Starts `redis-trace capture --json - ARGS`, REDISCLI_AUTH set to `auth` or unset,
    /// and waits for `capture_started`.
    fn start(args: &[&str], auth: Option<&str>) -> Self {
        require_root();
        let mut cmd = Command::new(redis_trace_bin());
        cmd.args(["capture", "--json", "-"])
            .args(args)
            .env_remove("REDISCLI_AUTH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(pw) = auth {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let mut child = cmd.spawn().expect("starting redis-trace");
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
        let mut cap = Cap {
            child,
            lines: rx,
            stderr: Some(stderr),
            records: Vec::new(),
        };
        let Ok(first) = cap.lines.recv_timeout(Duration::from_secs(30)) else {
            let _ = cap.child.kill();
            let _ = cap.child.wait();
            let err = cap.stderr.take().and_then(|h| h.join().ok());
            panic!("redis-trace did not start within 30 s; stderr:\n{err:?}");
        };
        let started = scenario_tests::record(&first);
        assert_eq!(
            started["type"], "capture_started",
            "first JSON line must be capture_started: {first}"
        );
        cap.records.push(started);
        cap
    }

    fn take(&mut self, line: String) {
        self.records.push(scenario_tests::record(&line));
    }

    /// Waits (at most `limit`) for a record matching `pred` written after the first
    /// `from` records; returns its index.
    fn wait_for(
        &mut self,
        what: &str,
        from: usize,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.records.iter().skip(from).position(&pred) {
                return from + i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} within {limit:?}; records so far: {:#?}",
                self.records
            );
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.take(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("redis-trace ended early; records: {:#?}", self.records)
                }
            }
        }
    }

    /// The first `redis_status` record for `port` after the first `from` records.
    fn wait_status(&mut self, port: u16, from: usize, limit: Duration) -> usize {
        self.wait_for("redis_status record", from, limit, |r| {
            r["type"] == "redis_status" && r["port"] == port
        })
    }

    /// SIGINT, then every record (the first being capture_started, the last
    /// capture_ended), stderr and the exit status.
    fn stop(mut self) -> (Vec<Value>, String, Option<ExitStatus>) {
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let exited = wait_timeout(&mut self.child, Duration::from_secs(30));
        let status = self.child.try_wait().ok().flatten();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.take(line);
        }
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        assert!(
            exited,
            "redis-trace did not exit within 30 s of SIGINT; stderr:\n{err}"
        );
        let end = self.records.last().expect("records");
        assert_eq!(end["type"], "capture_ended", "{end}; stderr:\n{err}");
        (std::mem::take(&mut self.records), err, status)
    }
}

impl Drop for Cap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that authenticates (when `password`), PINGs, then stays idle until Redis's
/// idle timeout closes it (EOF within 8 s). Returns its address.
fn idle_until_timeout(redis: &Redis, password: Option<&str>) -> SocketAddr {
    let mut s = connect(redis.addr());
    if let Some(pw) = password {
        s.write_all(format!("AUTH {pw}\r\n").as_bytes())
            .expect("write");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read +OK");
        assert_eq!(&buf, b"+OK\r\n");
    }
    ping(&mut s);
    let addr = s.local_addr().expect("addr");
    s.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("EOF from the idle timeout");
    assert_eq!(n, 0, "expected EOF, got {:?}", &buf[..n]);
    assert!(started.elapsed() < Duration::from_secs(8));
    addr
}

/// The record of a close by Redis's idle timeout, explained from CLIENT LIST + config.
fn assert_idle_timeout(r: &Value, redis: &Redis) {
    assert_eq!(r["closed_by_side"], "server", "{r:#}");
    assert_eq!(r["packet"], "FIN", "{r:#}");
    assert_eq!(r["pid"], u64::from(redis.pid()), "{r:#}");
    assert_eq!(r["comm"], "redis-server", "{r:#}");
    assert_eq!(r["cause"], "redis_idle_timeout", "{r:#}");
    assert_eq!(r["closed_by"], "redis", "{r:#}");
    assert_evidence(r, "kernel: the server end sent the first FIN");
    assert_evidence(r, "CLIENT LIST at ");
    assert_evidence(r, "config: timeout is 1s");
    assert!(
        r["redis_client"]["id"].as_u64().is_some(),
        "CLIENT LIST entry missing: {r:#}"
    );
}

fn assert_connected(status: &Value, redis: &Redis) {
    assert_eq!(status["status"], "connected", "{status:#}");
    assert_eq!(status["pid"], u64::from(redis.pid()), "{status:#}");
    assert_eq!(status["restarted"], false, "{status:#}");
    assert_eq!(status["error"], Value::Null, "{status:#}");
}

/// A private file (mode 0600) with `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn private(text: &str) -> Self {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let path = scenario_tests::private_dir("pw").join("password");
        let f = TempFile(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&f.0)
            .expect("creating the password file");
        file.write_all(text.as_bytes()).expect("writing it");
        let mode = std::fs::metadata(&f.0).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        f
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // The file and the private directory made for it.
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---- 1, 2: the client ends it ------------------------------------------------------

#[test]
fn client_fin_is_client_close() {
    let redis = local_redis(&[]);
    let mut cap = Cap::start(&["--port", &redis.port.to_string()], None);
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);
    let mut s = connect(redis.addr());
    ping(&mut s);
    let addr = s.local_addr().expect("addr");
    drop(s);
    let (records, _, _) = cap.stop();
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "client", "{r:#}");
    assert_eq!(r["packet"], "FIN", "{r:#}");
    assert_eq!(r["pid"], my_pid(), "{r:#}");
    assert_eq!(r["rst_reason"], Value::Null, "{r:#}");
    assert_eq!(r["cause"], "client_close", "{r:#}");
    assert_eq!(r["closed_by"], "client", "{r:#}");
    assert_evidence(&r, "kernel: the client end sent the first FIN");
    assert_eq!(r["both_ends_local"], true, "{r:#}");
}

#[test]
fn client_linger_zero_abort_is_client_reset() {
    let redis = local_redis(&[]);
    let mut cap = Cap::start(&["--port", &redis.port.to_string()], None);
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);
    let reason = scenario_tests::expected_rst_reason(&cap.records[0], "TCP_STATE");
    let mut s = connect(redis.addr());
    ping(&mut s);
    set_linger_zero(&s);
    let addr = s.local_addr().expect("addr");
    drop(s);
    let (records, _, _) = cap.stop();
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "client", "{r:#}");
    assert_eq!(r["packet"], "RST", "{r:#}");
    assert_eq!(r["rst_reason"], reason, "{r:#}");
    assert_eq!(r["kernel_event"], "aborted", "{r:#}");
    assert_eq!(r["pid"], my_pid(), "{r:#}");
    assert_eq!(r["cause"], "client_reset", "{r:#}");
    assert_eq!(r["closed_by"], "client", "{r:#}");
    match reason.as_str() {
        Some(reason) => assert_evidence(
            &r,
            &format!("kernel: the client end sent the first RST ({reason})"),
        ),
        None => assert_evidence(&r, "kernel: the client end sent the first RST by "),
    }
}

// ---- 2b: the kernel gives up on a connection (retransmission timeout) --------------

/// A client whose packets stop arriving (dropped in a namespace of our own) with
/// TCP_USER_TIMEOUT 1 s: its TCP stack gives up (ETIMEDOUT, tcp_write_err), no FIN, no
/// RST. Where `sock:inet_sk_error_report` exists, that is a `kernel_reset` naming the
/// error; where the kernel lacks the tracepoint (5.10), the close must not be blamed on
/// anyone: `unknown`, with the missing probe named in the evidence.
#[test]
fn retransmission_timeout_is_a_kernel_reset_or_says_what_is_missing() {
    require_root();
    let id = unique();
    let mut ns = Netns::new();
    let ns_name = ns
        .add(format!("rt-{id}-rto"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    run(&["ip", "-n", &ns_name, "link", "set", "lo", "up"]);
    let port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let probe = {
        let ns_name = ns_name.clone();
        move || {
            in_netns(&ns_name, || {
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"PING\r\n")?;
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line)?;
                Ok(line)
            })
            .and_then(|line| line)
        }
    };
    let redis = start_redis(
        port,
        Redis::options()
            .bind("127.0.0.1")
            .wrapper(&["ip", "netns", "exec", &ns_name])
            .ready_when(move |_| probe().is_ok_and(|reply| reply.starts_with("+PONG"))),
    );
    let cap = Cap::start(&["--port", &port.to_string(), "--no-redis"], None);
    let started = cap.records[0].clone();

    let mut s = in_netns(&ns_name, || connect(server)).expect("entering the namespace");
    ping(&mut s);
    let client = s.local_addr().expect("addr");
    let ms: libc::c_uint = 1000;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_uint.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&raw const ms).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_USER_TIMEOUT: {}",
        std::io::Error::last_os_error()
    );
    // From now on nothing the client sends arrives.
    let nft = |rule: &str| run(&["ip", "netns", "exec", &ns_name, "nft", rule]);
    nft("add table inet rtto");
    nft("add chain inet rtto input { type filter hook input priority 0 ; policy accept ; }");
    nft(&format!(
        "add rule inet rtto input tcp sport {} tcp dport {port} counter drop",
        client.port()
    ));
    s.write_all(b"PING\r\n").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let got = s.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT)),
        "the client's TCP stack should give up with ETIMEDOUT, got {got:?}"
    );
    // Whether this kernel has the tracepoint (redis-trace mounted tracefs if needed).
    let has_error_report = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| std::path::Path::new(&format!("{t}/events/sock/inet_sk_error_report")).is_dir());
    let (records, _, _) = cap.stop();
    let r = closed_for(&records, client);
    assert_eq!(r["observed_on"], "client", "{r:#}");
    assert_ne!(r["packet"], "FIN", "{r:#}");
    if has_error_report {
        assert_eq!(r["kernel_event"], "timeout", "{r:#}");
        assert_eq!(r["cause"], "kernel_reset", "{r:#}");
        assert_eq!(r["error"], "ETIMEDOUT", "{r:#}");
        assert_evidence(
            &r,
            "kernel: the client end's TCP stack gave up on the connection",
        );
    } else {
        let said = started["probes_unavailable"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["probe"] == "sock:inet_sk_error_report"));
        assert!(
            said,
            "capture_started must say the tracepoint is missing: {started}"
        );
        assert_eq!(r["kernel_event"], "aborted", "{r:#}");
        assert_eq!(r["cause"], "unknown", "{r:#}");
        assert_evidence(&r, "sock:inet_sk_error_report is not running");
    }
    drop(s);
    drop(redis);
    drop(ns);
}

// ---- 3: a middlebox resets it, in network namespaces of our own ---------------------

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 1);
const ROUTER_C_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 2);
const ROUTER_S_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 2, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 2, 2);

#[test]
fn reset_from_a_router_is_a_middlebox_reset() {
    require_root();
    let id = unique();
    // Deleted on drop (also on panic), with whatever still runs in them.
    let mut ns = Netns::new();
    let mut add = |name: String| ns.add(name).unwrap_or_else(|e| panic!("{e:#}"));
    let cli_ns = add(format!("rt-{id}-client"));
    let rtr_ns = add(format!("rt-{id}-router"));
    let srv_ns = add(format!("rt-{id}-redis"));
    // client c0 <-> r0 router r1 <-> s0 redis
    run(&[
        "ip", "-n", &cli_ns, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns",
        &rtr_ns,
    ]);
    run(&[
        "ip", "-n", &rtr_ns, "link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns",
        &srv_ns,
    ]);
    for (n, dev, addr) in [
        (&cli_ns, "c0", format!("{CLIENT_IP}/30")),
        (&rtr_ns, "r0", format!("{ROUTER_C_IP}/30")),
        (&rtr_ns, "r1", format!("{ROUTER_S_IP}/30")),
        (&srv_ns, "s0", format!("{SERVER_IP}/30")),
    ] {
        run(&["ip", "-n", n, "addr", "add", &addr, "dev", dev]);
        run(&["ip", "-n", n, "link", "set", dev, "up"]);
    }
    run(&[
        "ip",
        "-n",
        &cli_ns,
        "route",
        "add",
        "10.213.2.0/30",
        "via",
        &ROUTER_C_IP.to_string(),
    ]);
    run(&[
        "ip",
        "-n",
        &srv_ns,
        "route",
        "add",
        "10.213.1.0/30",
        "via",
        &ROUTER_S_IP.to_string(),
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &rtr_ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);

    let port = free_port();
    let server = SocketAddr::from((SERVER_IP, port));
    let probe = {
        let cli_ns = cli_ns.clone();
        move || {
            in_netns(&cli_ns, || {
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"PING\r\n")?;
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line)?;
                Ok(line)
            })
            .and_then(|line| line)
        }
    };
    let redis = start_redis(
        port,
        Redis::options()
            .bind(&SERVER_IP.to_string())
            .args(&["--protected-mode", "no"])
            .wrapper(&["ip", "netns", "exec", &srv_ns])
            .ready_when(move |_| {
                probe()
                    .is_ok_and(|reply| reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
            }),
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", redis.pid())).unwrap_or_default();
    assert_eq!(comm.trim(), "redis-server", "ip netns exec kept the pid");

    // The capture runs in the root namespace; Redis is not reachable from here.
    let cap = Cap::start(&["--port", &port.to_string(), "--no-redis"], None);

    let mut s = in_netns(&cli_ns, || connect(server)).expect("entering the client's namespace");
    ping(&mut s);
    let client = s.local_addr().expect("addr");
    assert_eq!(client.ip(), CLIENT_IP);

    // The router now rejects this flow with a TCP reset (sent as if from Redis).
    run(&[
        "ip", "netns", "exec", &rtr_ns, "nft", "add", "table", "inet", "rtmb",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &rtr_ns,
        "nft",
        "add chain inet rtmb mbfilter { type filter hook forward priority 0 ; policy accept ; }",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &rtr_ns,
        "nft",
        &format!(
            "add rule inet rtmb mbfilter ip saddr {CLIENT_IP} ip daddr {SERVER_IP} \
             tcp sport {} tcp dport {port} counter reject with tcp reset",
            client.port()
        ),
    ]);
    s.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 16];
    let got = s.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client should see the router's reset, got {got:?}"
    );
    let rules = run(&[
        "ip", "netns", "exec", &rtr_ns, "nft", "list", "table", "inet", "rtmb",
    ]);
    assert!(
        rules.contains("packets 1 "),
        "the reject rule should have matched the client's packet once:\n{rules}"
    );

    let (records, _, _) = cap.stop();
    let r = closed_for(&records, client);
    assert_eq!(r["server"], server.to_string(), "{r:#}");
    assert_eq!(r["packet"], "RST", "{r:#}");
    assert_eq!(r["kernel_event"], "received_rst", "{r:#}");
    assert_eq!(r["observed_on"], "client", "{r:#}");
    assert_eq!(r["both_ends_local"], true, "{r:#}");
    assert_eq!(r["start_seen"], true, "{r:#}");
    let resets = r["resets"].as_array().expect("resets");
    assert!(
        resets
            .iter()
            .any(|x| x["direction"] == "received" && x["side"] == "client"),
        "{r:#}"
    );
    assert!(
        !resets.iter().any(|x| x["direction"] == "sent"),
        "no TCP stack here sent a RST: {r:#}"
    );
    assert_eq!(r["cause"], "middlebox_reset", "{r:#}");
    assert_eq!(r["closed_by"], "middlebox", "{r:#}");
    assert_evidence(&r, "the server end's TCP stack never sent a RST");
    // Nothing about this connection may claim Redis closed or reset it.
    let other: Vec<&Value> = records
        .iter()
        .filter(|x| x["client"] == client.to_string() && x["type"] != "connection_closed")
        .collect();
    assert!(
        other.iter().all(|x| x["sent_by"] != "server"),
        "a reset record says the server sent a RST: {other:#?}"
    );
    // ... nor may its evidence: Redis's end sent nothing, the router did.
    let wrong: Vec<String> = evidence_of(&r)
        .into_iter()
        .filter(|e| e.contains("the server end sent"))
        .collect();
    assert!(
        wrong.is_empty(),
        "the evidence says the server end sent the RST, which the kernel shows it did \
         not: {wrong:?} in {r:#}"
    );
    drop(s);
    drop(redis);
    drop(ns);
}

// ---- 4, 5: a Redis that requires a password -----------------------------------------

#[test]
fn password_from_env_reads_client_list_and_explains_idle_timeout() {
    let redis = local_redis(&["--requirepass", "s3cret", "--timeout", "1"]);
    let mut cap = Cap::start(&["--port", &redis.port.to_string()], Some("s3cret"));
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);
    let addr = idle_until_timeout(&redis, Some("s3cret"));
    let (records, _, status) = cap.stop();
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let r = closed_for(&records, addr);
    assert_idle_timeout(&r, &redis);
}

#[test]
fn no_password_is_reported_and_causes_fall_back_to_the_kernel() {
    let redis = local_redis(&["--requirepass", "s3cret", "--timeout", "1"]);
    // Without the uprobes (which need no password and would name the idle timeout
    // anyway), to see the fallback from Redis's own view to the kernel's.
    let mut cap = Cap::start(&["--port", &redis.port.to_string(), "--no-uprobes"], None);
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    let status = cap.records[st].clone();
    assert_eq!(status["status"], "unavailable", "{status:#}");
    let error = status["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("requires a password"),
        "the error should say a password is required: {status:#}"
    );
    let addr = idle_until_timeout(&redis, Some("s3cret"));
    let (records, stderr, exit) = cap.stop();
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit: {exit:?}; {stderr}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "redis_status" && r["status"] == "connected"),
        "connected without a password? {records:#?}"
    );
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "server", "{r:#}");
    assert_eq!(r["packet"], "FIN", "{r:#}");
    assert_eq!(r["pid"], u64::from(redis.pid()), "{r:#}");
    assert_eq!(r["comm"], "redis-server", "{r:#}");
    assert_eq!(r["cause"], "redis_close_unknown", "{r:#}");
    assert_eq!(r["closed_by"], "redis", "{r:#}");
    assert_eq!(r["redis_client"], Value::Null, "{r:#}");
    assert_evidence(&r, "kernel: the server end sent the first FIN");
    assert_evidence(&r, "Redis's own view was not available");
    assert_evidence(&r, "requires a password");
}

#[test]
fn password_file_reads_client_list_and_explains_idle_timeout() {
    let redis = local_redis(&["--requirepass", "s3cret", "--timeout", "1"]);
    let file = TempFile::private("s3cret\n");
    let path = file.0.display().to_string();
    // No REDISCLI_AUTH: the password can only come from the file.
    let mut cap = Cap::start(
        &["--port", &redis.port.to_string(), "--password-file", &path],
        None,
    );
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);
    let addr = idle_until_timeout(&redis, Some("s3cret"));
    let (records, _, status) = cap.stop();
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let r = closed_for(&records, addr);
    assert_idle_timeout(&r, &redis);
}

// ---- 6: a restricted ACL user, and the tool only reads ------------------------------

/// `1700000000.123456 [0 127.0.0.1:5555] "INFO" "server"` -> (client address,
/// command name with its subcommand for CONFIG/CLIENT, lowercase).
fn monitor_entry(line: &str) -> Option<(String, String)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let addr = line[open + 1..close].split_whitespace().nth(1)?.to_string();
    let args: Vec<String> = line[close + 1..]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_ascii_lowercase)
        .collect();
    let first = args.first()?.clone();
    let cmd = match (first.as_str(), args.get(1)) {
        ("config" | "client" | "acl", Some(sub)) => format!("{first}|{sub}"),
        _ => first,
    };
    Some((addr, cmd))
}

#[test]
fn restricted_acl_user_is_enough_and_the_tool_only_reads() {
    const ADMIN_PW: &str = "adminpw";
    let redis = local_redis(&["--requirepass", ADMIN_PW, "--timeout", "1"]);
    let mut own: HashSet<String> = HashSet::new();
    let (reply, a) = admin(
        &redis,
        ADMIN_PW,
        &[
            "ACL",
            "SETUSER",
            "ruser",
            "reset",
            "on",
            ">rpass",
            "+info",
            "+config|get",
            "+client|list",
            "+ping",
        ],
    );
    own.insert(a.to_string());
    assert_eq!(reply, Reply::Simple("OK".into()));
    let (reply, a) = admin(&redis, ADMIN_PW, &["ACL", "LOG", "RESET"]);
    own.insert(a.to_string());
    assert_eq!(reply, Reply::Simple("OK".into()));

    // MONITOR (admin): every command any client runs from now on.
    let mut mon = Conn::open(redis.addr());
    assert_eq!(mon.call(&["AUTH", ADMIN_PW]), Reply::Simple("OK".into()));
    assert_eq!(mon.call(&["MONITOR"]), Reply::Simple("OK".into()));
    mon.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let seen = Arc::clone(&seen);
        let stop = Arc::clone(&stop);
        let mut reader = BufReader::new(mon.stream.try_clone().expect("clone"));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match resp::read_reply(&mut reader) {
                    Ok(Reply::Simple(l)) => seen.lock().expect("lock").push(l),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        })
    };

    let url = format!("redis://ruser@127.0.0.1:{}/", redis.port);
    let mut cap = Cap::start(
        &["--port", &redis.port.to_string(), "--redis-url", &url],
        Some("rpass"),
    );
    let st = cap.wait_status(redis.port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);
    // The tool's connection, as Redis sees it: user ruser.
    let (list, a) = admin(&redis, ADMIN_PW, &["CLIENT", "LIST"]);
    own.insert(a.to_string());
    let list = list.text().expect("CLIENT LIST text").to_string();
    let tool_addrs: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "user=ruser"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("addr="))
                .map(str::to_string)
        })
        .collect();
    assert!(
        !tool_addrs.is_empty(),
        "no connection of user ruser in CLIENT LIST:\n{list}"
    );

    let addr = idle_until_timeout(&redis, Some(ADMIN_PW));
    own.insert(addr.to_string());
    let (records, _, status) = cap.stop();
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let r = closed_for(&records, addr);
    assert_idle_timeout(&r, &redis);
    assert!(
        !records
            .iter()
            .any(|x| x["type"] == "redis_status" && x["status"] == "unavailable"),
        "the restricted user lost access: {records:#?}"
    );

    // Read-only: no refused command in ACL LOG for ruser ...
    let (log, a) = admin(&redis, ADMIN_PW, &["ACL", "LOG"]);
    own.insert(a.to_string());
    let Reply::Array(Some(entries)) = &log else {
        panic!("ACL LOG: {log:?}");
    };
    for entry in entries {
        let Reply::Array(Some(kv)) = entry else {
            panic!("ACL LOG entry: {entry:?}");
        };
        let user = kv
            .chunks_exact(2)
            .find(|p| p[0].text() == Some("username"))
            .and_then(|p| p[1].text());
        assert_ne!(user, Some("ruser"), "ACL LOG refused ruser: {entry:?}");
    }
    // ... and every command from a connection that is not this test's was a read.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = mon.stream.shutdown(std::net::Shutdown::Both);
    let _ = monitor.join();
    let seen = seen.lock().expect("lock").clone();
    let allowed = ["auth", "info", "config|get", "client|list", "ping"];
    let mut tool_cmds = 0;
    for line in &seen {
        let (from, cmd) = monitor_entry(line).unwrap_or_else(|| panic!("MONITOR line {line:?}"));
        if own.contains(&from) {
            continue;
        }
        tool_cmds += 1;
        assert!(
            allowed.contains(&cmd.as_str()),
            "redis-trace ran {cmd:?} from {from}: {line}"
        );
    }
    assert!(
        seen.iter().any(|l| monitor_entry(l)
            .is_some_and(|(from, cmd)| tool_addrs.contains(&from) && cmd == "info")),
        "MONITOR saw no INFO from the tool's connections {tool_addrs:?}: {seen:#?}"
    );
    assert!(tool_cmds > 0);
}

// ---- 7: Redis goes away mid-capture and comes back ----------------------------------

/// connect() from a socket bound first, so the address is known even when refused.
fn refused_connect(port: u16) -> SocketAddr {
    // SAFETY: plain socket calls on a socket this function owns, with correctly sized
    // sockaddr_in structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let rc = libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let rc = libc::getsockname(
            fd,
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut got_len,
        );
        assert_eq!(rc, 0, "getsockname");
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, u16::from_be(got.sin_port)));
        sa.sin_port = port.to_be();
        let rc = libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, -1, "connect to a stopped Redis succeeded");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
        local
    }
}

#[test]
fn redis_stopped_and_restarted_mid_capture() {
    let port = free_port();
    let mut first = start_redis(port, Redis::options());
    let first_pid = first.pid();
    let mut cap = Cap::start(&["--port", &port.to_string()], None);
    let st1 = cap.wait_status(port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st1], &first);

    // A client connected across the shutdown.
    let mut held = connect(first.addr());
    ping(&mut held);
    let held_addr = held.local_addr().expect("addr");

    let mut admin_conn = Conn::open(first.addr());
    admin_conn.send(&["SHUTDOWN", "NOSAVE"]);
    assert!(
        wait_timeout(&mut first.child, Duration::from_secs(10)),
        "redis-server did not exit on SHUTDOWN NOSAVE"
    );
    drop(admin_conn);
    // The held client sees Redis's FIN.
    let mut buf = [0u8; 16];
    let n = held.read(&mut buf).expect("EOF from the shutdown");
    assert_eq!(n, 0);
    drop(held);

    let down = cap.wait_status(port, st1 + 1, Duration::from_secs(15));
    let status = cap.records[down].clone();
    assert_eq!(status["status"], "unavailable", "{status:#}");
    assert!(
        status["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status:#}"
    );
    // While Redis is down: a connection attempt is refused by the kernel.
    let refused = refused_connect(port);

    let second = start_redis(port, Redis::options());
    assert_ne!(second.pid(), first_pid);
    let up = cap.wait_status(port, down + 1, Duration::from_secs(30));
    let status = cap.records[up].clone();
    assert_eq!(status["status"], "connected", "{status:#}");
    assert_eq!(status["restarted"], true, "{status:#}");
    assert_eq!(status["pid"], u64::from(second.pid()), "{status:#}");

    // The capture still traces the port.
    let mut s = connect(second.addr());
    ping(&mut s);
    let after = s.local_addr().expect("addr");
    drop(s);

    let (records, stderr, exit) = cap.stop();
    assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}; {stderr}");
    assert_eq!(records.last().expect("end")["ended_by"], "interrupt");

    let r = closed_for(&records, held_addr);
    assert_eq!(r["closed_by_side"], "server", "{r:#}");
    assert_eq!(r["packet"], "FIN", "{r:#}");
    assert_eq!(r["pid"], u64::from(first_pid), "{r:#}");
    // The sockets are closed by whichever of Redis's threads exits last (a bio_* thread,
    // jemalloc's background thread, an I/O thread): `comm` is that thread's name, `pid`
    // Redis's.
    assert!(
        r["comm"].as_str().is_some_and(|c| c == "redis-server"
            || c.starts_with("bio_")
            || c.starts_with("io_thd_")
            || c == "jemalloc_bg_thd"),
        "{r:#}"
    );
    assert_eq!(r["cause"], "redis_shutdown", "{r:#}");
    assert_eq!(r["closed_by"], "redis", "{r:#}");
    assert_evidence(&r, &format!("redis-server (pid {first_pid}) exited"));

    let resets: Vec<&Value> = records
        .iter()
        .filter(|x| x["type"] == "reset" && x["client"] == refused.to_string())
        .collect();
    assert_eq!(
        resets.len(),
        1,
        "one reset for the refused SYN: {records:#?}"
    );
    assert_eq!(
        resets[0]["server"],
        format!("127.0.0.1:{port}"),
        "{:#}",
        resets[0]
    );
    assert_eq!(resets[0]["sent_by"], "server", "{:#}", resets[0]);

    let r = closed_for(&records, after);
    assert_eq!(r["cause"], "client_close", "{r:#}");
    assert_eq!(r["closed_by"], "client", "{r:#}");
}

/// redis-trace's own connection to Redis (its poller) is not the user's traffic: its
/// close is left out (`own_connections`), and so must be anything else it causes on
/// the port, also while Redis is down (writing into its dead connection, reconnecting).
#[test]
fn the_tools_own_traffic_makes_no_records_while_redis_is_down() {
    let port = free_port();
    let mut redis = start_redis(port, Redis::options());
    let mut cap = Cap::start(&["--port", &port.to_string()], None);
    let st = cap.wait_status(port, 0, Duration::from_secs(15));
    assert_connected(&cap.records[st], &redis);

    // The tool's connection, as Redis lists it: every client but this test's.
    let mut admin_conn = Conn::open(redis.addr());
    let list = admin_conn.call(&["CLIENT", "LIST"]);
    let list = list.text().expect("CLIENT LIST text").to_string();
    let mine = admin_conn.local().to_string();
    let tool: Vec<String> = list
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("addr="))
                .map(str::to_string)
        })
        .filter(|a| *a != mine)
        .collect();
    assert_eq!(tool.len(), 1, "the tool's one connection: {list}");

    admin_conn.send(&["SHUTDOWN", "NOSAVE"]);
    assert!(
        wait_timeout(&mut redis.child, Duration::from_secs(10)),
        "redis-server did not exit on SHUTDOWN NOSAVE"
    );
    drop(admin_conn);
    let down = cap.wait_status(port, st + 1, Duration::from_secs(15));
    assert_eq!(cap.records[down]["status"], "unavailable");
    // Let the poller retry a few times (backoff 0.5 s, 1 s, 2 s ...).
    std::thread::sleep(Duration::from_millis(2500));

    let (records, _, _) = cap.stop();
    let end = records.last().expect("end");
    assert_eq!(
        end["own_connections"], 1,
        "the poller's connection is left out: {end}"
    );
    // This test made no connection attempt after the shutdown and has no socket that
    // could draw a RST: every RST on the port now comes from redis-trace itself.
    let resets: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "reset" && r["server"] == format!("127.0.0.1:{port}"))
        .collect();
    let own_conn: Vec<&&Value> = resets.iter().filter(|r| r["client"] == tool[0]).collect();
    assert!(
        resets.is_empty(),
        "redis-trace reported its own traffic as `reset` records (its poller's connection \
         is {}; {} of them on it, the others its reconnection attempts): {resets:#?}",
        tool[0],
        own_conn.len()
    );
}
