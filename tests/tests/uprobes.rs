//! Scenario tests of the uprobes on redis-server: each Redis-side close names the Redis
//! code path that decided it, on Debian's redis-server 7.0; a binary without the
//! symbols falls back cleanly. Real kernel, real redis-server, real clients.
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use scenario_tests::{Capture, Redis, closed_for, resp};
use serde_json::Value;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Sends one command and returns its whole reply, flattened (`+OK`, `:1`, ...).
fn cmd(s: &mut TcpStream, args: &[&str]) -> String {
    resp::command(s, args).unwrap_or_else(|e| panic!("redis command {args:?}: {e}"))
}

/// Reads until the server closes the connection (bounded).
fn wait_closed(s: &mut TcpStream, limit: Duration) {
    assert!(
        scenario_tests::wait_closed(s, limit),
        "the server did not close the connection within {limit:?}"
    );
}

fn code_path(r: &Value) -> (&str, &str) {
    let p = &r["redis_code_path"];
    (
        p["decided_in"]
            .as_str()
            .unwrap_or_else(|| panic!("no redis_code_path: {r}")),
        p["freed_from"].as_str().unwrap_or(""),
    )
}

fn assert_uprobe_evidence(r: &Value) {
    let ev = r["evidence"].as_array().expect("evidence");
    assert!(
        ev.iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("uprobe: Redis"))),
        "no uprobe evidence: {r}"
    );
}

#[test]
fn each_redis_close_names_the_code_path_that_decided_it() {
    let redis = Redis::start_with(
        &[
            "--timeout",
            "2",
            "--client-output-buffer-limit",
            "pubsub 64kb 32kb 60",
            "--client-query-buffer-limit",
            "1mb",
        ],
        None,
    );
    let cap = Capture::start(&[redis.port]);
    let probes = &cap.started["redis_uprobes"][0];
    assert_eq!(probes["pid"], u64::from(redis.pid()), "{}", cap.started);
    assert_eq!(probes["unavailable"], Value::Null, "{}", cap.started);
    assert_eq!(probes["client_flags"], true, "7.0's client layout is known");
    let attached: Vec<&str> = probes["attached"]
        .as_array()
        .expect("attached")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(attached, ["freeClient", "freeClientAsync"]);

    let addr = redis.addr();
    // Idle timeout.
    let mut idle = connect(addr);
    cmd(&mut idle, &["CLIENT", "SETNAME", "idle"]);
    let idle_addr = idle.local_addr().expect("addr");
    // CLIENT KILL from another connection.
    let mut victim = connect(addr);
    let victim_addr = victim.local_addr().expect("addr");
    let id = cmd(&mut victim, &["CLIENT", "ID"]);
    let mut admin = connect(addr);
    assert_eq!(
        cmd(
            &mut admin,
            &["CLIENT", "KILL", "ID", id.trim_start_matches(':')]
        ),
        ":1"
    );
    wait_closed(&mut victim, Duration::from_secs(5));
    drop(admin);
    // QUIT: Redis closes after its reply; not a kill, even in the same second as one.
    let mut quit = connect(addr);
    let quit_addr = quit.local_addr().expect("addr");
    assert_eq!(cmd(&mut quit, &["QUIT"]), "+OK");
    wait_closed(&mut quit, Duration::from_secs(5));
    // Protocol error.
    let mut proto = connect(addr);
    let proto_addr = proto.local_addr().expect("addr");
    proto.write_all(b"*1\r\n$abc\r\n").expect("write");
    wait_closed(&mut proto, Duration::from_secs(5));
    // A pub/sub subscriber that does not read, while a publisher bursts.
    let mut sub = connect(addr);
    let sub_addr = sub.local_addr().expect("addr");
    cmd(&mut sub, &["SUBSCRIBE", "news"]);
    let mut publisher = connect(addr);
    let payload = "x".repeat(64 * 1024);
    let mut dropped = false;
    for _ in 0..500 {
        if cmd(&mut publisher, &["PUBLISH", "news", &payload]) == ":0" {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the subscriber was never dropped");
    drop(publisher);
    // A query larger than client-query-buffer-limit.
    let mut big = connect(addr);
    let big_addr = big.local_addr().expect("addr");
    let _ = big.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000000\r\n");
    let _ = big.write_all(&vec![b'x'; 1_500_000]);
    wait_closed(&mut big, Duration::from_secs(5));
    wait_closed(&mut idle, Duration::from_secs(8));
    drop(sub);
    let records = cap.stop();

    let r = closed_for(&records, idle_addr);
    assert_eq!(
        code_path(&r),
        ("clientsCronHandleTimeout", "clientsCronHandleTimeout"),
        "{r}"
    );
    assert_eq!(r["cause"], "redis_idle_timeout", "{r}");
    assert_uprobe_evidence(&r);

    let r = closed_for(&records, victim_addr);
    assert_eq!(code_path(&r).0, "clientCommand", "{r}");
    assert_eq!(r["cause"], "redis_client_kill", "{r}");

    let r = closed_for(&records, quit_addr);
    assert_eq!(code_path(&r).0, "writeToClient", "{r}");
    assert_ne!(r["cause"], "redis_client_kill", "a QUIT is not a kill: {r}");
    assert_eq!(r["cause"], "redis_close_unknown", "{r}");
    assert!(
        r["redis_code_path"]["client_flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "close_after_reply")),
        "{r}"
    );

    let r = closed_for(&records, proto_addr);
    assert_eq!(code_path(&r).0, "writeToClient", "{r}");
    assert_eq!(r["cause"], "redis_protocol_error", "{r}");

    let r = closed_for(&records, sub_addr);
    assert_eq!(
        code_path(&r),
        (
            "closeClientOnOutputBufferLimitReached",
            "freeClientsInAsyncFreeQueue"
        ),
        "{r}"
    );
    assert_eq!(r["cause"], "redis_output_buffer_limit", "{r}");
    assert_eq!(r["client_class"], "pubsub", "{r}");

    let r = closed_for(&records, big_addr);
    assert_eq!(code_path(&r).0, "readQueryFromClient", "{r}");
    assert_eq!(r["cause"], "redis_query_buffer_limit", "{r}");
}

#[test]
fn a_kill_and_an_idle_timeout_in_the_same_second_are_told_apart() {
    let redis = Redis::start_with(&["--timeout", "1"], None);
    let cap = Capture::start(&[redis.port]);
    let addr = redis.addr();
    let mut idle = connect(addr);
    cmd(&mut idle, &["PING"]);
    let idle_addr = idle.local_addr().expect("addr");
    let mut busy = connect(addr);
    let busy_addr = busy.local_addr().expect("addr");
    let id = cmd(&mut busy, &["CLIENT", "ID"]);
    // Keep `busy` active until `idle`'s timeout is about to fire, then kill it.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1900) {
        cmd(&mut busy, &["PING"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut admin = connect(addr);
    assert_eq!(
        cmd(
            &mut admin,
            &["CLIENT", "KILL", "ID", id.trim_start_matches(':')]
        ),
        ":1"
    );
    wait_closed(&mut busy, Duration::from_secs(5));
    wait_closed(&mut idle, Duration::from_secs(5));
    drop(admin);
    let records = cap.stop();
    let a = closed_for(&records, idle_addr);
    let b = closed_for(&records, busy_addr);
    let ta = humantime::parse_rfc3339(a["time"].as_str().unwrap_or("")).expect("time");
    let tb = humantime::parse_rfc3339(b["time"].as_str().unwrap_or("")).expect("time");
    let gap = ta
        .duration_since(tb)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    assert!(
        gap < Duration::from_secs(1),
        "not in the same second: {a} {b}"
    );
    assert_eq!(a["cause"], "redis_idle_timeout", "{a}");
    assert_eq!(code_path(&a).0, "clientsCronHandleTimeout", "{a}");
    assert_eq!(b["cause"], "redis_client_kill", "{b}");
    assert_eq!(code_path(&b).0, "clientCommand", "{b}");
}

/// A copy of redis-server whose exported freeClient/freeClientAsync names are changed:
/// what an unknown fork or a binary without those dynamic symbols looks like.
fn redis_without_symbols(dir: &std::path::Path) -> std::path::PathBuf {
    let real = std::fs::canonicalize("/usr/bin/redis-server").expect("redis-server installed");
    let mut bytes = std::fs::read(&real).expect("read redis-server");
    let mut renamed = 0;
    for name in [&b"\0freeClient\0"[..], &b"\0freeClientAsync\0"[..]] {
        let mut i = 0;
        while let Some(pos) = bytes[i..].windows(name.len()).position(|w| w == name) {
            bytes[i + pos + 1] = b'X';
            renamed += 1;
            i += pos + name.len();
        }
    }
    assert!(renamed >= 2, "symbol names not found in {}", real.display());
    std::fs::create_dir_all(dir).expect("dir");
    // Named redis-server: Debian's binary picks its role from argv[0].
    let copy = dir.join("redis-server");
    std::fs::write(&copy, &bytes).expect("write copy");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

#[test]
fn a_redis_without_the_symbols_falls_back_to_other_evidence() {
    let dir = scenario_tests::private_dir("nosym");
    let copy = redis_without_symbols(&dir);
    let script = format!("shift; exec {} \"$@\"", copy.display());
    let redis = Redis::start_with(&["--timeout", "1"], Some(&["sh", "-c", &script, "sh"]));
    let cap = Capture::start(&[redis.port]);
    let probes = &cap.started["redis_uprobes"][0];
    let why = probes["unavailable"]
        .as_str()
        .unwrap_or_else(|| panic!("uprobes should be unavailable: {}", cap.started));
    assert!(why.contains("has no symbol for freeClient"), "{why}");
    assert_eq!(probes["attached"], Value::Array(vec![]));
    let mut idle = connect(redis.addr());
    cmd(&mut idle, &["PING"]);
    let idle_addr = idle.local_addr().expect("addr");
    wait_closed(&mut idle, Duration::from_secs(6));
    let records = cap.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let r = closed_for(&records, idle_addr);
    assert_eq!(r["redis_code_path"], Value::Null, "{r}");
    // Still explained, from CLIENT LIST and the timeout setting.
    assert_eq!(r["cause"], "redis_idle_timeout", "{r}");
    assert_eq!(r["closed_by_side"], "server", "{r}");
}

#[test]
fn no_uprobes_turns_them_off() {
    let redis = Redis::start();
    let cap = Capture::start_args(&[
        "capture".into(),
        "--json".into(),
        "-".into(),
        "--no-uprobes".into(),
        "--port".into(),
        redis.port.to_string(),
    ]);
    assert_eq!(
        cap.started["redis_uprobes"],
        Value::Array(vec![]),
        "{}",
        cap.started
    );
    let mut c = connect(redis.addr());
    assert_eq!(cmd(&mut c, &["QUIT"]), "+OK");
    let a = c.local_addr().expect("addr");
    wait_closed(&mut c, Duration::from_secs(5));
    let records = cap.stop();
    assert_eq!(closed_for(&records, a)["redis_code_path"], Value::Null);
}

#[test]
fn uprobes_pause_under_heavy_churn_and_resume_when_calm() {
    let redis = Redis::start();
    let mut cap = Capture::start(&[redis.port]);
    assert_eq!(cap.started["redis_uprobes"][0]["unavailable"], Value::Null);
    // Well above 1,000 connection ends a second for a few seconds (bounded: 15,000).
    let addr = redis.addr();
    let start = Instant::now();
    for _ in 0..15_000 {
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
        let mut s = connect(addr);
        s.write_all(b"PING\r\n").expect("write");
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).expect("PONG");
    }
    // Calm: wait for the resume (10 s of calm once the capture has caught up; bounded),
    // then one connection.
    let is_note = |r: &Value, prefix: &str| {
        r["type"] == "redis_uprobes" && r["note"].as_str().is_some_and(|n| n.starts_with(prefix))
    };
    cap.wait_for(Duration::from_secs(60), |r| is_note(r, "uprobes resumed"));
    let mut quit = connect(addr);
    assert_eq!(cmd(&mut quit, &["QUIT"]), "+OK");
    let quit_addr = quit.local_addr().expect("addr");
    wait_closed(&mut quit, Duration::from_secs(5));
    let records = cap.stop();
    let notes: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "redis_uprobes")
        .filter_map(|r| r["note"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with("uprobes paused")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("uprobes resumed")),
        "{notes:?}"
    );
    // After the resume, code paths are back. (The churn reused ephemeral ports, so the
    // QUIT's address may have ended earlier connections too: take its last.)
    let want = quit_addr.to_string();
    let r = records
        .iter()
        .rfind(|r| r["type"] == "connection_closed" && r["client"] == want.as_str())
        .unwrap_or_else(|| panic!("no record for {want}"));
    assert_eq!(code_path(r).0, "writeToClient", "{r}");
}
