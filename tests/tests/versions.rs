//! The same incidents on every Redis and Valkey build `cargo xtask builds` fetched
//! (target/redis-builds/builds.json, or `REDIS_TRACE_BUILDS`): idle timeout, CLIENT KILL,
//! output-buffer limits (pub/sub and replica), query-buffer limit, client eviction,
//! protocol error, QUIT, SIGKILL and SHUTDOWN, each checked for its cause and for how it
//! was proven. Writes the table docs/compatibility.md carries to
//! target/compatibility-versions.md.
//!
//! Run by `cargo xtask test --versions`; without the manifest it fails and says how to
//! make it.
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use redis_lab::Build;
use scenario_tests::{Capture, Redis, resp};
use serde_json::Value;

/// One cell of the table.
struct Row {
    build: String,
    scenario: &'static str,
    expected: &'static str,
    cause: String,
    proof: String,
    ok: bool,
}

fn builds() -> Vec<Build> {
    let path = std::env::var_os("REDIS_TRACE_BUILDS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(Build::default_manifest);
    Build::load_all(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

fn call(r: &Redis, args: &[&str]) -> String {
    r.call(args)
        .unwrap_or_else(|e| panic!("{:?} on port {}: {e:#}", args.first(), r.port))
}

/// Reads until the server closes (bounded): Redis has closed this connection.
fn wait_closed(s: &mut TcpStream, limit: Duration) {
    let end = Instant::now() + limit;
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64 << 10];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
    panic!("the server did not close the connection within {limit:?}");
}

fn addr(s: &TcpStream) -> SocketAddr {
    s.local_addr().expect("local address")
}

/// How the record's cause was proven: the uprobes' code path, else the source of its
/// key evidence.
fn proof(r: &Value) -> String {
    // A decider the binary does not name (Redis 6.0 exports few functions) proves
    // nothing: then the evidence that did.
    if let Some(d) = r["redis_code_path"]["decided_in"]
        .as_str()
        .filter(|d| !d.starts_with("0x"))
    {
        let via = r["redis_code_path"]["via"]
            .as_str()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        return format!("uprobe: {d}{via}");
    }
    let ev: Vec<&str> = r["evidence"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ev.iter()
        .skip(1)
        .filter(|e| !e.starts_with("uprobe:"))
        .find_map(|e| e.split_once(':').map(|(src, _)| src))
        .map_or_else(
            || "kernel".to_string(),
            |src| match src {
                // Past the close itself, the kernel's word is the process's end.
                "kernel" => "kernel: the process's end".to_string(),
                other => other.to_string(),
            },
        )
}

/// Waits for the record of the connection from `client` and checks its cause.
#[allow(clippy::too_many_arguments)]
fn check(
    cap: &mut Capture,
    rows: &mut Vec<Row>,
    build: &Build,
    scenario: &'static str,
    client: SocketAddr,
    expected: &'static str,
    class: Option<&str>,
) {
    let c = client.to_string();
    let r = cap.wait_for(Duration::from_secs(15), |r| {
        r["type"] == "connection_closed" && r["client"] == c.as_str()
    });
    let cause = r["cause"].as_str().unwrap_or("").to_string();
    let class_ok = class.is_none_or(|k| r["client_class"] == k);
    let mut proof = proof(&r);
    if let Some(k) = r["client_class"].as_str() {
        proof = format!("{proof} (class {k})");
    }
    let ok = cause == expected && class_ok;
    if !ok {
        eprintln!(
            "{}: {scenario}: expected {expected} {class:?}, got:\n{r:#}",
            build.name
        );
    }
    rows.push(Row {
        build: build.name.clone(),
        scenario,
        expected,
        cause,
        proof,
        ok,
    });
}

fn version_at_least(b: &Build, major: u32, minor: u32) -> bool {
    let mut p = b.version.split('.').filter_map(|x| x.parse::<u32>().ok());
    let v = (p.next().unwrap_or(0), p.next().unwrap_or(0));
    v >= (major, minor)
}

/// Every scenario on one build: a primary and a replica of it, one capture of both.
fn run_build(b: &Build, extra: &[&str], rows: &mut Vec<Row>) {
    let primary = Redis::options()
        .build(b)
        .dir_prefix("redis-trace-versions")
        .bind("127.0.0.1")
        .args(extra)
        .start()
        .unwrap_or_else(|e| panic!("{}: {e:#}", b.name));
    let p = primary.port.to_string();
    let replica = Redis::options()
        .build(b)
        .dir_prefix("redis-trace-versions")
        .bind("127.0.0.1")
        .args(&["--replicaof", "127.0.0.1", &p])
        .start()
        .unwrap_or_else(|e| panic!("{} replica: {e:#}", b.name));
    let mut cap = Capture::start(&[primary.port, replica.port]);
    // Both servers are probed, read as this build, their client flags understood.
    let probes = cap.started["redis_uprobes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(probes.len(), 2, "{}: {}", b.name, cap.started);
    for p in &probes {
        assert_eq!(p["unavailable"], Value::Null, "{}: {p}", b.name);
        assert_eq!(p["version"], b.version.as_str(), "{}: {p}", b.name);
        assert_eq!(p["server"], b.server.as_str(), "{}: {p}", b.name);
        assert_eq!(p["client_flags"], true, "{}: {p}", b.name);
        // Valkey 8.0 and 8.1 export a freeClient stub no caller inside uses.
        let stub = b.server.as_str() == "valkey" && b.version.starts_with("8.");
        let body = p["attached"].as_array().is_some_and(|a| {
            a.iter()
                .any(|l| l.as_str().is_some_and(|l| l.contains("stub jumps to")))
        });
        assert_eq!(body, stub, "{}: the stub's body probed: {p}", b.name);
        // What this version's INFO gives, said up front.
        let counters = (b.server.as_str() == "redis" && version_at_least(b, 7, 4))
            || (b.server.as_str() == "valkey" && version_at_least(b, 8, 0));
        let said = p["evidence_sources"].as_array().and_then(|a| {
            a.iter().find(|e| {
                e["source"]
                    .as_str()
                    .is_some_and(|s| s.contains("limit_disconnections"))
            })
        });
        let said = said.unwrap_or_else(|| panic!("{}: no counters entry: {p}", b.name));
        assert_eq!(said["works"], counters, "{}: {said}", b.name);
        assert_eq!(said["why_not"].is_string(), !counters, "{}: {said}", b.name);
    }

    // Idle timeout.
    call(&primary, &["CONFIG", "SET", "timeout", "1"]);
    let mut idle = primary.client().expect("client");
    assert_eq!(resp::command(&mut idle, &["PING"]).expect("PING"), "+PONG");
    wait_closed(&mut idle, Duration::from_secs(10));
    call(&primary, &["CONFIG", "SET", "timeout", "0"]);
    check(
        &mut cap,
        rows,
        b,
        "idle timeout",
        addr(&idle),
        "redis_idle_timeout",
        None,
    );

    // CLIENT KILL from another connection.
    let mut victim = primary.client().expect("client");
    let id = resp::command(&mut victim, &["CLIENT", "ID"]).expect("CLIENT ID");
    let id = id.trim_start_matches(':').to_string();
    call(&primary, &["CLIENT", "KILL", "ID", &id]);
    wait_closed(&mut victim, Duration::from_secs(5));
    check(
        &mut cap,
        rows,
        b,
        "CLIENT KILL",
        addr(&victim),
        "redis_client_kill",
        None,
    );

    // Output-buffer limit: a pub/sub subscriber that never reads.
    {
        call(
            &primary,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 256kb 128kb 1",
            ],
        );
        let mut sub = primary.client().expect("client");
        sub.write_all(&resp::encode(&["SUBSCRIBE", "firehose"]))
            .expect("SUBSCRIBE");
        std::thread::sleep(Duration::from_millis(200));
        let a = addr(&sub);
        let payload = "x".repeat(64 << 10);
        let mut publisher = primary.client().expect("client");
        for _ in 0..2000 {
            let n =
                resp::command(&mut publisher, &["PUBLISH", "firehose", &payload]).expect("PUBLISH");
            if n == ":0" {
                break;
            }
        }
        check(
            &mut cap,
            rows,
            b,
            "output buffer limit",
            a,
            "redis_output_buffer_limit",
            Some("pubsub"),
        );
    }

    // A replica over its output-buffer limit.
    let end = Instant::now() + Duration::from_secs(20);
    let replica_addr = loop {
        let list = call(&primary, &["CLIENT", "LIST", "TYPE", "replica"]);
        let info = call(&primary, &["INFO", "replication"]);
        if info.contains("state=online")
            && let Some(a) = list
                .split_whitespace()
                .find_map(|f| f.strip_prefix("addr="))
                .and_then(|a| a.parse::<SocketAddr>().ok())
        {
            break a;
        }
        assert!(
            Instant::now() < end,
            "{}: the replica did not sync within 20 s",
            b.name
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    call(
        &primary,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "replica 256kb 128kb 1",
        ],
    );
    // A replica that stops reading (Valkey's keep up with a 2 MiB burst otherwise).
    // SAFETY: kill(2) on the test's own child.
    unsafe { libc::kill(replica.pid() as i32, libc::SIGSTOP) };
    let huge = "r".repeat(2 << 20);
    'dropped: for _ in 0..16 {
        call(&primary, &["SET", "huge", &huge]);
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            if call(&primary, &["INFO", "replication"]).contains("connected_slaves:0") {
                break 'dropped;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    check(
        &mut cap,
        rows,
        b,
        "replica output buffer limit",
        replica_addr,
        "redis_output_buffer_limit",
        Some("replica"),
    );
    // SAFETY: as above.
    unsafe { libc::kill(replica.pid() as i32, libc::SIGCONT) };
    call(&replica, &["REPLICAOF", "NO", "ONE"]);

    // Query-buffer limit.
    call(
        &primary,
        &["CONFIG", "SET", "client-query-buffer-limit", "1mb"],
    );
    let mut big = primary.client().expect("client");
    let mut cmd = format!("*3\r\n$3\r\nSET\r\n$1\r\nq\r\n${}\r\n", 2 << 20).into_bytes();
    cmd.extend_from_slice(&vec![b'q'; 2 << 20]);
    cmd.extend_from_slice(b"\r\n");
    let _ = big.write_all(&cmd);
    wait_closed(&mut big, Duration::from_secs(10));
    check(
        &mut cap,
        rows,
        b,
        "query buffer limit",
        addr(&big),
        "redis_query_buffer_limit",
        None,
    );
    call(
        &primary,
        &["CONFIG", "SET", "client-query-buffer-limit", "1gb"],
    );

    // Client eviction (maxmemory-clients, Redis 7.0 and later).
    if version_at_least(b, 7, 0) {
        call(&primary, &["CONFIG", "SET", "maxmemory-clients", "1mb"]);
        let mut hungry = primary.client().expect("client");
        let mut cmd = format!("*3\r\n$3\r\nSET\r\n$1\r\nh\r\n${}\r\n", 4 << 20).into_bytes();
        cmd.extend_from_slice(&vec![b'h'; 2 << 20]);
        let _ = hungry.write_all(&cmd);
        wait_closed(&mut hungry, Duration::from_secs(10));
        check(
            &mut cap,
            rows,
            b,
            "client eviction",
            addr(&hungry),
            "redis_client_eviction",
            None,
        );
        call(&primary, &["CONFIG", "SET", "maxmemory-clients", "0"]);
    }

    // Protocol error.
    let mut bad = primary.client().expect("client");
    bad.write_all(b"*1\r\n$abc\r\n").expect("write");
    wait_closed(&mut bad, Duration::from_secs(5));
    check(
        &mut cap,
        rows,
        b,
        "protocol error",
        addr(&bad),
        "redis_protocol_error",
        None,
    );

    // QUIT: Redis closes after its reply; nothing is wrong, and the record says so.
    let mut quit = primary.client().expect("client");
    assert_eq!(resp::command(&mut quit, &["QUIT"]).expect("QUIT"), "+OK");
    wait_closed(&mut quit, Duration::from_secs(5));
    check(
        &mut cap,
        rows,
        b,
        "QUIT",
        addr(&quit),
        "redis_close_unknown",
        None,
    );

    // SIGKILL of the (former) replica, with a client connected to it.
    let mut replica = replica;
    let bystander = replica.client().expect("client");
    // SAFETY: kill(2) on the test's own child.
    unsafe { libc::kill(replica.pid() as i32, libc::SIGKILL) };
    let _ = replica.child.wait();
    check(
        &mut cap,
        rows,
        b,
        "SIGKILL",
        addr(&bystander),
        "redis_killed",
        None,
    );

    // SHUTDOWN: the other clients' connections end with the process.
    let mut primary = primary;
    let other = primary.client().expect("client");
    let mut admin = primary.client().expect("client");
    let _ = admin.write_all(&resp::encode(&["SHUTDOWN", "NOSAVE"]));
    let end = Instant::now() + Duration::from_secs(10);
    while primary.child.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < end,
            "{}: SHUTDOWN did not end the server",
            b.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check(
        &mut cap,
        rows,
        b,
        "SHUTDOWN",
        addr(&other),
        "redis_shutdown",
        None,
    );
    let _ = cap.stop();
}

fn table(rows: &[Row], builds: &[Build]) -> String {
    let scenarios: Vec<&str> = {
        let mut s: Vec<&str> = Vec::new();
        for r in rows {
            if !s.contains(&r.scenario) {
                s.push(r.scenario);
            }
        }
        s
    };
    let mut out = String::from("| incident |");
    for b in builds {
        out.push_str(&format!(" {} |", b.name));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(builds.len()));
    out.push('\n');
    for s in &scenarios {
        let expected = rows
            .iter()
            .find(|r| r.scenario == *s)
            .map_or("", |r| r.expected);
        out.push_str(&format!("| {s} (`{expected}`) |"));
        for b in builds {
            match rows.iter().find(|r| r.scenario == *s && r.build == b.name) {
                Some(r) if r.ok => out.push_str(&format!(" ✓ {} |", r.proof)),
                Some(r) => out.push_str(&format!(" ✗ `{}` ({}) |", r.cause, r.proof)),
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

#[test]
#[ignore = "needs every build fetched: run by `cargo xtask test --versions`"]
fn every_build_gives_each_cause_with_its_proof() {
    let mut builds = builds();
    // A subset while debugging one build: REDIS_TRACE_BUILD=valkey-9.1.2.
    if let Ok(only) = std::env::var("REDIS_TRACE_BUILD") {
        builds.retain(|b| b.name == only);
    }
    assert!(!builds.is_empty(), "the build manifest lists no build");
    // Redis 8 moves reads and writes to I/O threads when asked: its frees then wait for
    // the thread that holds the client. Each Redis 8 runs both ways.
    let mut columns: Vec<(Build, Vec<&str>)> = Vec::new();
    for b in builds {
        let threaded = b.server.as_str() == "redis" && version_at_least(&b, 8, 0);
        let mut with_threads = b.clone();
        with_threads.name = format!("{} io-threads 4", b.name);
        columns.push((b, Vec::new()));
        if threaded {
            // Its I/O threads decide a protocol error before the client is flagged: only
            // the log line (verbose) tells it from the query-buffer limit there.
            columns.push((
                with_threads,
                vec!["--io-threads", "4", "--loglevel", "verbose"],
            ));
        }
    }
    let mut rows = Vec::new();
    for (b, extra) in &columns {
        run_build(b, extra, &mut rows);
    }
    let builds: Vec<Build> = columns.into_iter().map(|(b, _)| b).collect();
    let t = table(&rows, &builds);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/compatibility-versions.md");
    std::fs::write(&out, &t).expect("writing the table");
    eprintln!("{t}");
    let wrong: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} {}: {} ({})", r.build, r.scenario, r.cause, r.proof))
        .collect();
    assert!(
        wrong.is_empty(),
        "wrong or unproven causes:\n{}",
        wrong.join("\n")
    );
}

/// A container in miniature: another version's redis-server in its own root (chroot,
/// mount namespace with its own /proc) and its own network namespace, listening only on
/// that namespace's loopback. Its log path goes through a symlink inside the root that
/// points to an absolute path: it must resolve inside the root (the real log), never to
/// the same path on the host (a decoy). Its uprobes attach to its own binary.
#[test]
#[ignore = "needs the chrooted builds fetched: run by `cargo xtask test --versions`"]
fn a_server_in_its_own_root_and_namespace_is_probed_and_its_log_read_inside_its_root() {
    use std::os::unix::fs::MetadataExt as _;
    let b = builds()
        .into_iter()
        .find(|b| b.root.is_some() && b.server.as_str() == "redis")
        .expect("a chrooted Redis build in the manifest (cargo xtask builds)");
    let root = b.root.clone().expect("root");
    let mut ns = scenario_tests::Netns::new();
    let name = ns
        .add(format!("rt-root-{}", std::process::id()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // ROOT/tmp/rt-link-PID -> /tmp/rt-logs-PID (absolute). The host's /tmp/rt-logs-PID
    // holds a decoy log; the root's holds the real one.
    let id = std::process::id();
    let link = root.join(format!("tmp/rt-link-{id}"));
    let inside = root.join(format!("tmp/rt-logs-{id}"));
    let decoy = std::path::PathBuf::from(format!("/tmp/rt-logs-{id}"));
    struct Cleanup(Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
            }
        }
    }
    let _cleanup = Cleanup(vec![link.clone(), inside.clone(), decoy.clone()]);
    std::fs::create_dir_all(&inside).expect("log dir in the root");
    std::fs::create_dir_all(&decoy).expect("decoy dir on the host");
    std::fs::write(decoy.join("redis.log"), "decoy: not the server's log\n").expect("decoy");
    std::os::unix::fs::symlink(format!("/tmp/rt-logs-{id}"), &link).expect("symlink");
    let logfile = format!("/tmp/rt-link-{id}/redis.log");

    let ns_name = name.clone();
    let redis = Redis::options()
        .build(&b)
        .dir_prefix("redis-trace-root")
        .bind("127.0.0.1")
        .args(&[
            "--timeout",
            "1",
            "--loglevel",
            "verbose",
            "--logfile",
            &logfile,
        ])
        .wrapper(&["ip", "netns", "exec", &name])
        .ready_when(move |r| {
            let port = r.port;
            scenario_tests::in_netns(&ns_name, move || {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(500),
                )
                .ok()
                .and_then(|mut s| resp::command(&mut s, &["PING"]).ok())
                .is_some_and(|r| r.contains("PONG"))
            })
            .unwrap_or(false)
        })
        .start()
        .unwrap_or_else(|e| panic!("{} in {name}: {e:#}", b.name));
    let netns = std::fs::metadata(format!("/run/netns/{name}"))
        .expect("netns")
        .ino();
    let mut cap = Capture::start_args(&[
        "capture".into(),
        "--json".into(),
        "-".into(),
        "--pid".into(),
        redis.pid().to_string(),
    ]);
    let probes = cap.started["redis_uprobes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(probes.len(), 1, "{}", cap.started);
    assert_eq!(probes[0]["unavailable"], Value::Null, "{}", probes[0]);
    assert_eq!(
        probes[0]["version"],
        b.version.as_str(),
        "its own binary: {}",
        probes[0]
    );
    let status = cap.wait_for(Duration::from_secs(15), |r| {
        r["type"] == "redis_status" && r["status"] == "connected"
    });
    assert_eq!(status["pid"], redis.pid(), "{status}");
    assert_eq!(status["netns"], netns, "{status}");
    assert_eq!(status["version"], b.version.as_str(), "{status}");
    assert_eq!(status["log_readable"], true, "{status}");

    let port = redis.port;
    let mut idle = scenario_tests::in_netns(&name, move || {
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
    })
    .expect("netns")
    .expect("connect inside the namespace");
    assert_eq!(resp::command(&mut idle, &["PING"]).expect("PING"), "+PONG");
    let client = addr(&idle);
    wait_closed(&mut idle, Duration::from_secs(10));
    // A subscriber that reads nothing, dropped for its output buffer: Redis logs that
    // (warning level), in the log inside its root.
    let connect = |name: &str| {
        let port = redis.port;
        scenario_tests::in_netns(name, move || {
            TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .expect("netns")
        .expect("connect inside the namespace")
    };
    let mut publisher = connect(&name);
    let set = [
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 64kb 32kb 60",
    ];
    assert_eq!(
        resp::command(&mut publisher, &set).expect("CONFIG SET"),
        "+OK"
    );
    let mut sub = connect(&name);
    let subscriber = addr(&sub);
    assert_eq!(
        resp::command(&mut sub, &["SUBSCRIBE", "news"]).expect("SUBSCRIBE"),
        "subscribe news :1"
    );
    let payload = "x".repeat(64 * 1024);
    let mut last = String::new();
    let dropped = (0..500).any(|_| {
        last = resp::command(&mut publisher, &["PUBLISH", "news", &payload]).expect("PUBLISH");
        last == ":0"
    });
    assert!(
        dropped,
        "Redis never dropped the subscriber after 32 MiB: {last}"
    );
    drop(publisher);
    let records = cap.stop();
    let r = scenario_tests::closed_for(&records, client);
    assert_eq!(r["cause"], "redis_idle_timeout", "{r:#}");
    assert_eq!(r["netns"], netns, "{r:#}");
    assert_eq!(
        r["redis_code_path"]["decided_in"], "clientsCronHandleTimeout",
        "the uprobes on the root's own binary: {r:#}"
    );
    let r = scenario_tests::closed_for(&records, subscriber);
    assert_eq!(r["cause"], "redis_output_buffer_limit", "{r:#}");
    let ev: Vec<&str> = r["evidence"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        ev.iter()
            .any(|e| e.starts_with("Redis log: ") && e.contains(&subscriber.to_string())),
        "the log inside the root was read, not the decoy at the same path on the host: {r:#}"
    );
    assert!(
        std::fs::read_to_string(inside.join("redis.log"))
            .is_ok_and(|l| l.contains("output buffer limits")),
        "the server wrote its log inside its root"
    );
    drop(sub);
    drop(redis);
    drop(ns);
}
