//! Scenario tests of `redis-trace capture`: the real binary, its real eBPF programs on
//! this kernel, a real redis-server, real clients. Each checks the records field by
//! field. Run as root, one at a time: `cargo xtask test`.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scenario_tests::{
    Capture, Redis, client_bin, closed_for, closed_on, expected_rst_reason, free_port, gettid,
    redis_trace_bin, require_root, set_linger_zero,
};
use serde_json::Value;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
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

/// Runs `f` on a thread with a known name (its comm), returning its tid.
fn on_named_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, u32) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || (f(), gettid()))
        .expect("spawn")
        .join()
        .expect("join")
}

#[test]
fn quit_is_a_server_fin_and_close_is_a_client_fin() {
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);

    // QUIT: Redis replies +OK, then closes: FIN from redis-server, in its own context.
    let mut quit = connect(redis.addr());
    let quit_addr = quit.local_addr().expect("addr");
    quit.write_all(b"QUIT\r\n").expect("write");
    let mut reply = String::new();
    BufReader::new(&quit).read_line(&mut reply).expect("reply");
    assert_eq!(reply, "+OK\r\n");
    let mut rest = Vec::new();
    let _ = quit.read_to_end(&mut rest); // EOF: the server's FIN arrived
    drop(quit);

    // A client that just closes, on a thread named "fin-closer".
    let (close_addr, tid) = on_named_thread("fin-closer", {
        let addr = redis.addr();
        move || {
            let mut s = connect(addr);
            ping(&mut s);
            let a = s.local_addr().expect("addr");
            drop(s);
            a
        }
    });

    let records = cap.stop();
    let q = closed_for(&records, quit_addr);
    assert_eq!(q["closed_by_side"], "server", "{q}");
    assert_eq!(q["packet"], "FIN", "{q}");
    assert_eq!(q["pid"], u64::from(redis.pid()), "{q}");
    assert_eq!(q["comm"], "redis-server", "{q}");
    assert_eq!(q["rst_reason"], Value::Null, "{q}");
    assert_eq!(q["server"], format!("127.0.0.1:{}", redis.port));
    assert!(q["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{q}");
    assert_eq!(q["start_seen"], true);

    let c = closed_for(&records, close_addr);
    assert_eq!(c["closed_by_side"], "client", "{c}");
    assert_eq!(c["packet"], "FIN", "{c}");
    assert_eq!(c["pid"], my_pid(), "{c}");
    assert_eq!(c["tid"], u64::from(tid), "{c}");
    assert_eq!(c["comm"], "fin-closer", "{c}");
    assert!(
        c["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() >= 20),
        "{c}"
    );
}

#[test]
fn idle_timeout_is_a_server_fin_from_redis() {
    let redis = Redis::start_with(&["--timeout", "1"], None);
    let cap = Capture::start(&[redis.port]);
    let mut s = connect(redis.addr());
    ping(&mut s);
    let addr = s.local_addr().expect("addr");
    // Redis checks idle clients from serverCron: within a few seconds of `timeout`.
    let mut buf = [0u8; 1];
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let n = s.read(&mut buf).expect("EOF from the idle timeout");
    assert_eq!(n, 0, "expected EOF");
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(s);
    let records = cap.stop();
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "server", "{r}");
    assert_eq!(r["packet"], "FIN", "{r}");
    assert_eq!(r["pid"], u64::from(redis.pid()), "{r}");
    assert_eq!(r["comm"], "redis-server", "{r}");
    assert!(r["duration_ms"].as_f64().is_some_and(|d| d >= 900.0), "{r}");
}

#[test]
fn linger_zero_close_is_a_client_rst_tcp_state() {
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);
    let reason = expected_rst_reason(&cap.started, "TCP_STATE");
    let (addr, tid) = on_named_thread("lingerer", {
        let a = redis.addr();
        move || {
            let mut s = connect(a);
            ping(&mut s);
            set_linger_zero(&s);
            let addr = s.local_addr().expect("addr");
            drop(s);
            addr
        }
    });
    let records = cap.stop();
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "client", "{r}");
    assert_eq!(r["packet"], "RST", "{r}");
    assert_eq!(r["rst_reason"], reason, "{r}");
    assert_eq!(r["pid"], my_pid(), "{r}");
    assert_eq!(r["tid"], u64::from(tid), "{r}");
    assert_eq!(r["comm"], "lingerer", "{r}");
}

#[test]
fn client_killed_with_unread_data_is_a_client_rst_abort_on_close() {
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);
    let reason = expected_rst_reason(&cap.started, "TCP_ABORT_ON_CLOSE");
    let mut child = Command::new(client_bin())
        .args(["hold-unread", &redis.addr().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rt-client");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("rt-client says where it is");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("local ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("rt-client said {line:?}"));
    // Let the PONG arrive unread in its receive queue, then kill it.
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    child.kill().expect("kill rt-client");
    let _ = child.wait();
    let records = cap.stop();
    let r = closed_for(&records, addr);
    assert_eq!(r["closed_by_side"], "client", "{r}");
    assert_eq!(r["packet"], "RST", "{r}");
    assert_eq!(r["rst_reason"], reason, "{r}");
    assert_eq!(r["pid"], u64::from(pid), "{r}");
    assert_eq!(r["comm"], "rt-client", "{r}");
}

#[test]
fn ipv6_loopback_connection() {
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);
    let addr6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], redis.port));
    let mut s = connect(addr6);
    ping(&mut s);
    let local = s.local_addr().expect("addr");
    drop(s);
    let records = cap.stop();
    let r = closed_for(&records, local);
    assert_eq!(r["server"], format!("[::1]:{}", redis.port), "{r}");
    assert_eq!(r["closed_by_side"], "client", "{r}");
    assert_eq!(r["packet"], "FIN", "{r}");
    assert_eq!(r["pid"], my_pid(), "{r}");
}

#[test]
fn two_thousand_short_connections_give_two_thousand_records_and_no_loss() {
    const N: usize = 2000;
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        assert!(Instant::now() < deadline, "2000 connections took over 60 s");
        let mut s = connect(redis.addr());
        // Alternate who closes: half QUIT (server FIN), half client close (client FIN).
        if i % 2 == 0 {
            s.write_all(b"QUIT\r\n").expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        } else {
            ping(&mut s);
        }
        clients.push(s.local_addr().expect("addr"));
        drop(s);
    }
    let records = cap.stop();
    let end = records.last().expect("records");
    assert_eq!(end["type"], "capture_ended", "{end}");
    assert_eq!(end["lost_events"], 0, "{end}");
    let closed = closed_on(&records, redis.port);
    assert_eq!(closed.len(), N, "one record per connection");
    // The kernel may hand a client port out again once the server holds the
    // old connection in TIME_WAIT (a SYN may reopen it), so compare the
    // multisets: each connection made is reported exactly as often as it was made.
    let mut seen: Vec<String> = closed
        .iter()
        .map(|r| r["client"].as_str().unwrap_or("").to_string())
        .collect();
    seen.sort();
    let mut made: Vec<String> = clients.iter().map(|a| a.to_string()).collect();
    made.sort();
    let missing: Vec<&String> = made.iter().filter(|a| !seen.contains(a)).take(5).collect();
    assert!(
        seen == made,
        "every connection made is reported once, by its client address: {} records, {} made, missing e.g. {missing:?}",
        seen.len(),
        made.len()
    );
    let by_server = closed
        .iter()
        .filter(|r| r["closed_by_side"] == "server")
        .count();
    assert_eq!(
        by_server,
        N / 2,
        "QUIT connections are closed by the server"
    );
    assert_eq!(end["connections_closed"], N as u64);
}

#[test]
fn untraced_port_gives_no_record() {
    let traced = Redis::start();
    let other = Redis::start();
    let cap = Capture::start(&[traced.port]);
    for _ in 0..20 {
        let mut s = connect(other.addr());
        ping(&mut s);
        set_linger_zero(&s); // RSTs too must be filtered
    }
    let mut s = connect(traced.addr());
    ping(&mut s);
    let local = s.local_addr().expect("addr");
    drop(s);
    let records = cap.stop();
    assert!(
        closed_on(&records, other.port).is_empty(),
        "records for an untraced port"
    );
    let stray: Vec<&Value> = records
        .iter()
        .filter(|r| r.to_string().contains(&format!(":{}\"", other.port)))
        .collect();
    assert!(stray.is_empty(), "untraced port leaked: {stray:#?}");
    closed_for(&records, local);
}

#[test]
fn stream_starts_and_ends_and_sigint_loses_nothing_seen() {
    let redis = Redis::start();
    let cap = Capture::start(&[redis.port]);
    let s = &cap.started;
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["ports"][0]["port"], redis.port);
    assert_eq!(s["ports"][0]["process"]["pid"], u64::from(redis.pid()));
    let attached = s["probes_attached"].as_array().expect("probes_attached");
    for p in [
        "sock:inet_sock_set_state",
        "tcp:tcp_send_reset",
        "tcp:tcp_receive_reset",
        "oom:mark_victim",
        "signal:signal_generate",
        "sched:sched_process_exit",
        "cgroup_skb:packets",
    ] {
        assert!(attached.iter().any(|a| a == p), "{p} not attached: {s}");
    }
    // This kernel (6.18) has every probe and field: none may be reported missing.
    assert_eq!(s["probes_unavailable"], Value::Array(vec![]), "{s}");
    assert!(s["kernel"].as_str().is_some_and(|k| !k.is_empty()));

    let mut addrs = Vec::new();
    for _ in 0..50 {
        let mut c = connect(redis.addr());
        ping(&mut c);
        addrs.push(c.local_addr().expect("addr"));
    }
    // SIGINT right away: records still in the grace period must be written, not lost.
    // SAFETY: kill(2) on the capture's pid.
    unsafe { libc::kill(cap.pid() as i32, libc::SIGINT) };
    let (records, stderr) = cap.stop_with(0);
    let end = records.last().expect("records");
    assert_eq!(end["type"], "capture_ended", "{end}");
    assert_eq!(end["ended_by"], "interrupt");
    assert_eq!(end["lost_events"], 0);
    for a in addrs {
        closed_for(&records, a);
    }
    assert!(
        stderr.contains("lost events"),
        "summary on stderr: {stderr}"
    );
}

#[test]
fn duration_ends_the_capture_by_itself() {
    let redis = Redis::start();
    let mut child = Command::new(redis_trace_bin())
        .args([
            "capture",
            "--port",
            &redis.port.to_string(),
            "--duration",
            "2s",
            "--json",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-trace");
    let started = Instant::now();
    assert!(
        scenario_tests::wait_timeout(&mut child, Duration::from_secs(30)),
        "did not stop"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let last = scenario_tests::record(out.lines().last().expect("a line"));
    assert_eq!(last["ended_by"], "duration", "{last}");
}

#[test]
fn ports_are_discovered_from_running_redis_servers() {
    let redis = Redis::start();
    let cap = Capture::start_args(&["capture".into(), "--json".into(), "-".into()]);
    let ports = cap.started["ports"].as_array().expect("ports").clone();
    assert_eq!(cap.started["port_source"], "discovered");
    let ours = ports
        .iter()
        .find(|p| p["port"] == redis.port)
        .unwrap_or_else(|| panic!("port {} not discovered: {ports:?}", redis.port));
    assert_eq!(ours["process"]["pid"], u64::from(redis.pid()));
    let mut s = connect(redis.addr());
    ping(&mut s);
    let local = s.local_addr().expect("addr");
    drop(s);
    let records = cap.stop();
    closed_for(&records, local);
}

#[test]
fn connections_open_before_the_capture_are_reported_with_their_owner() {
    let redis = Redis::start();
    let mut s = connect(redis.addr());
    ping(&mut s);
    let local = s.local_addr().expect("addr");
    let cap = Capture::start(&[redis.port]);
    assert!(
        cap.started["open_connections_at_start"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    drop(s);
    let records = cap.stop();
    let r = closed_for(&records, local);
    assert_eq!(r["start_seen"], false, "{r}");
    assert_eq!(r["duration_ms"], Value::Null, "{r}");
    assert_eq!(r["closed_by_side"], "client", "{r}");
    assert_eq!(r["client_process"]["pid"], my_pid(), "{r}");
    assert_eq!(r["server_process"]["pid"], u64::from(redis.pid()), "{r}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    require_root();
    let redis = Redis::start();
    // An output path that cannot be written: refused before anything is attached.
    let out = Command::new(redis_trace_bin())
        .args([
            "capture",
            "--port",
            &redis.port.to_string(),
            "--json",
            "/nonexistent-dir/x.jsonl",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write /nonexistent-dir/x.jsonl"),
        "{err}"
    );

    // Not root: runs as nobody, and says what to do.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(redis_trace_bin())
        .args(["capture", "--port", &redis.port.to_string()])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

    // A port nobody listens on: the capture runs (Redis may come up) and says so.
    let idle = free_port();
    let cap = Capture::start(&[idle]);
    let (records, stderr) = cap.stop_with(libc::SIGTERM);
    assert!(
        stderr.contains(&format!(
            "tracing port {idle} (no Redis process listens on it now)"
        )),
        "{stderr}"
    );
    assert_eq!(
        records.last().map(|r| r["ended_by"].clone()),
        Some("terminate".into())
    );
}

#[test]
fn json_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let redis = Redis::start();
    let dir = scenario_tests::private_dir("json");
    let path = dir.join("capture.jsonl");
    let mut child = Command::new(redis_trace_bin())
        .args([
            "capture",
            "-q",
            "--port",
            &redis.port.to_string(),
            "--duration",
            "1s",
            "--json",
        ])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-trace");
    assert!(scenario_tests::wait_timeout(
        &mut child,
        Duration::from_secs(30)
    ));
    let mode = std::fs::metadata(&path)
        .expect("json file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.starts_with("{\"type\":\"capture_started\""));
    assert!(
        text.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.contains("capture_ended"))
    );
}

#[test]
fn tracefs_is_mounted_when_missing() {
    require_root();
    let redis = Redis::start();
    // In a mount namespace of its own, without tracefs: the host's mounts stay as they are.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         test -e /sys/kernel/tracing/events && exit 99; \
         {} capture --port {} --duration 1s --quiet || exit $?; \
         for e in {}; do test -d /sys/kernel/tracing/events/$e && echo have $e; done",
        redis_trace_bin().display(),
        redis.port,
        TRACEPOINTS.join(" ")
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "tracefs could not be unmounted for the test"
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        err.contains("tracefs was not mounted: mounted it at /sys/kernel/tracing"),
        "{err}"
    );
    // Every probe whose tracepoint this kernel has (all 7 since 5.1x; 5.10 has no
    // inet_sk_error_report) attaches: none is lost to the verifier or a layout.
    let have = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("have "))
        .count();
    assert!(have >= 6, "tracepoints found: {have}; {out:?}");
    // And the packet programs, which are not tracepoints, count as one more probe unless
    // the capture says why it runs without them.
    let packets = usize::from(!err.contains("cgroup_skb:packets unavailable"));
    let expected = have + packets;
    assert!(
        err.contains(&format!("{expected} probes attached")),
        "expected {expected} probes attached ({have} tracepoints, {packets} packet probe): {err}"
    );
}

/// The tracepoints redis-trace attaches to (redis-trace/src/kernel/layout.rs, PROBES).
const TRACEPOINTS: [&str; 7] = [
    "sock/inet_sock_set_state",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "sock/inet_sk_error_report",
    "oom/mark_victim",
    "signal/signal_generate",
    "sched/sched_process_exit",
];
