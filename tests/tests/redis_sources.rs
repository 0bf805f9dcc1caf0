//! The library's readers of Redis and of /proc, against a real redis-server: the
//! `sources::redis` session and poller, `diagnose::run`, and `procinfo`'s view of a
//! running server. They call redis-trace's library directly (no binary, no BPF) and need
//! no root, but a server: that is why they are here and not unit tests, so that a plain
//! `cargo test` starts none.
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis_trace::diagnose::{Finding, Options, Severity, render_text, run};
use redis_trace::sources::procinfo::{processes_named, redis_ports};
use redis_trace::sources::redis::{BufferLimit, Poller, PollerMsg, Session, Target};
use scenario_tests::{Redis, free_port};

// ---- sources::redis: Session and Poller --------------------------------------------

/// How to reach the test server on 127.0.0.1, as `user` with `password`.
fn target(redis: &Redis, user: Option<&str>, password: Option<&str>) -> Target {
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    Target {
        url: format!("redis://{user}127.0.0.1:{}/", redis.port),
        password: password.map(str::to_string),
        tls: None,
        netns: None,
    }
}

fn err_text(r: anyhow::Result<Session>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn redis_client_session_snapshot_and_config() {
    // No PING first: the command statistics below are this session's alone.
    let redis = Redis::start_without_commands(&[
        "--client-output-buffer-limit",
        "pubsub 64mb 16mb 30",
        // To standard output, as asserted below.
        "--logfile",
        "",
    ]);
    let mut s = Session::connect(&target(&redis, None, None)).expect("connect");
    let cfg = s.config().expect("config");
    assert_eq!(cfg.timeout, Some(0));
    assert_eq!(
        cfg.cobl_pubsub,
        Some(BufferLimit {
            hard: 64 << 20,
            soft: 16 << 20,
            soft_seconds: 30
        })
    );
    assert!(cfg.cobl_replica.is_some());
    assert!(cfg.maxmemory_clients.is_some());
    assert_eq!(cfg.logfile.as_deref(), Some(""));

    let before = Instant::now();
    let snap = s.snapshot(false).expect("snapshot");
    assert!(snap.taken_at >= before);
    assert!(snap.clients.is_none() && snap.client_list_duration.is_none());
    assert_eq!(snap.info.get("tcp_port"), Some(&redis.port.to_string()));
    assert!(snap.info.contains_key("connected_clients"));
    assert!(snap.info.contains_key("used_memory"));
    assert!(snap.info.contains_key("role"));
    assert!(snap.info.contains_key("total_connections_received"));

    let snap = s.snapshot(true).expect("snapshot with clients");
    let clients = snap.clients.expect("client list");
    assert!(snap.client_list_duration.is_some());
    let me = clients
        .iter()
        .find(|c| c.cmd == "client|list")
        .expect("own connection");
    assert_eq!(me.laddr.map(|a| a.port()), Some(redis.port));
    // Read-only: what this session ran, per Redis's own command statistics.
    only_read_only_commands_ran(&snap.info, false);
}
#[test]
fn redis_client_requirepass() {
    let redis = Redis::start_with(&["--requirepass", "secret"], None);
    let err = err_text(Session::connect(&target(&redis, None, None)));
    assert!(
        err.contains("Redis requires a password: set REDISCLI_AUTH or use --password-file"),
        "{err}"
    );
    let err = err_text(Session::connect(&target(&redis, None, Some("wrong"))));
    assert!(
        err.contains("Redis rejected the credentials (WRONGPASS)"),
        "{err}"
    );
    let mut s = Session::connect(&target(&redis, None, Some("secret"))).expect("connect");
    s.config().expect("config");
    assert!(s.snapshot(true).expect("snapshot").clients.is_some());
}

#[test]
fn redis_client_minimal_acl_user() {
    let redis = Redis::start_with(
        &[
            // One argument per ACL rule: redis-server joins them into `user tracer on ...`.
            "--user",
            "tracer",
            "on",
            ">tracerpw",
            "+info",
            "+config|get",
            "+client|list",
            "+ping",
            "--user",
            "noclients",
            "on",
            ">pw2",
            "+info",
            "+config|get",
            "+ping",
        ],
        None,
    );
    let mut s =
        Session::connect(&target(&redis, Some("tracer"), Some("tracerpw"))).expect("connect");
    let cfg = s.config().expect("config");
    assert!(cfg.maxmemory.is_some() && cfg.timeout.is_some());
    let snap = s.snapshot(true).expect("snapshot");
    let clients = snap.clients.expect("client list");
    assert!(clients.iter().any(|c| c.user.as_deref() == Some("tracer")));
    assert!(snap.info.contains_key("connected_clients"));

    let err = err_text(Session::connect(&target(
        &redis,
        Some("tracer"),
        Some("nope"),
    )));
    assert!(
        err.contains("Redis rejected the credentials (WRONGPASS)"),
        "{err}"
    );
    let err = err_text(Session::connect(&target(
        &redis,
        Some("noclients"),
        Some("pw2"),
    )));
    assert!(
        err.contains("the Redis user lacks permission for INFO/CONFIG GET/CLIENT LIST: grant +info +config|get +client|list"),
        "{err}"
    );
    let err = err_text(Session::connect(&target(&redis, Some("tracer"), None)));
    assert!(err.contains("REDISCLI_AUTH"), "{err}");
}
fn wait_for(p: &Poller, what: &str, pred: impl Fn(&PollerMsg) -> bool) -> PollerMsg {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match p.try_recv() {
            Some(m) if pred(&m) => return m,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no {what} from the poller within 15 s");
}

#[test]
fn redis_client_poller_down_and_back() {
    let redis = Redis::start();
    let wanted = Arc::new(AtomicBool::new(true));
    let p = Poller::start(
        target(&redis, None, None),
        Duration::from_millis(100),
        wanted.clone(),
    );
    match wait_for(&p, "Connected", |m| {
        matches!(m, PollerMsg::Connected { .. })
    }) {
        PollerMsg::Connected { config, info } => {
            assert!(config.timeout.is_some());
            assert_eq!(info.get("tcp_port"), Some(&redis.port.to_string()));
        }
        _ => unreachable!(),
    }
    let snap = wait_for(
        &p,
        "a snapshot with clients",
        |m| matches!(m, PollerMsg::Snapshot(s) if s.clients.is_some()),
    );
    let PollerMsg::Snapshot(snap) = snap else {
        unreachable!()
    };
    let first_run_id = snap.info.get("run_id").cloned();
    assert!(first_run_id.is_some());

    let port = redis.port;
    drop(redis);
    match wait_for(&p, "Down", |m| matches!(m, PollerMsg::Down { .. })) {
        PollerMsg::Down { error } => assert!(!error.is_empty()),
        _ => unreachable!(),
    }
    let _redis = Redis::start_on(port, &[], None);
    match wait_for(&p, "Connected again", |m| {
        matches!(m, PollerMsg::Connected { .. })
    }) {
        PollerMsg::Connected { info, .. } => {
            assert_ne!(
                info.get("run_id").cloned(),
                first_run_id,
                "a new redis-server"
            );
        }
        _ => unreachable!(),
    }
    let started = Instant::now();
    p.stop();
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---- sources::procinfo: a running server, as /proc shows it -------------------------

const REDIS: &[&str] = &["redis-server", "valkey-server"];

#[test]
fn redis_ports_finds_a_running_redis_server() -> anyhow::Result<()> {
    let redis = Redis::start();
    let port = redis.port;
    let pid = redis.pid();

    let ports = redis_ports(REDIS)?;
    let (_, process) = ports
        .iter()
        .find(|(p, _)| *p == port)
        .with_context(|| format!("port {port} not in {ports:?}"))?;
    assert_eq!(process.pid, pid);
    assert_eq!(process.comm, "redis-server");
    assert!(ports.windows(2).all(|w| w[0].0 < w[1].0), "{ports:?}");

    let named = processes_named(REDIS)?;
    assert!(named.iter().any(|p| p.pid == pid), "{named:?}");
    Ok(())
}

// ---- diagnose::run ------------------------------------------------------------------

fn options(redis: &Redis) -> Options {
    Options {
        port: redis.port,
        ..Options::default()
    }
}

fn connect(redis: &Redis) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout on the socket");
    s
}

fn titles(findings: &[Finding]) -> Vec<(Severity, &str)> {
    findings
        .iter()
        .map(|f| (f.severity, f.title.as_str()))
        .collect()
}

fn find<'a>(findings: &'a [Finding], needle: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.title.contains(needle))
        .unwrap_or_else(|| panic!("no finding with {needle:?} in {:#?}", titles(findings)))
}

/// Sends one command and reads the first line of its reply.
fn command(s: &mut TcpStream, args: &[&str]) -> String {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(cmd, "${}\r\n{a}\r\n", a.len());
    }
    s.write_all(cmd.as_bytes()).expect("write");
    let mut line = String::new();
    BufReader::new(&*s).read_line(&mut line).expect("read");
    line.trim_end().to_string()
}

/// Titles of findings about this host, not about the Redis diagnosed: they depend on
/// the machine the tests run on (its sysctl, earlier OOM kills in its kernel log).
fn host_level(f: &Finding) -> bool {
    f.title.starts_with("vm.overcommit_memory is ")
        || f.title
            .starts_with("redis-server was killed by the kernel's OOM killer")
        || f.title
            .starts_with("valkey-server was killed by the kernel's OOM killer")
}

#[test]
fn diagnose_real_risky_server() {
    let redis = Redis::start_with(
        &[
            "--timeout",
            "60",
            "--tcp-keepalive",
            "0",
            "--client-output-buffer-limit",
            "pubsub 1mb 512kb 60",
            // Relative: found through /proc/<pid>/cwd (--dir).
            "--logfile",
            "redis.log",
        ],
        None,
    );
    // A subscriber that does not read, and one 2 MiB message: over the 1 MiB hard limit.
    let mut sub = connect(&redis);
    sub.set_nodelay(true).unwrap();
    assert!(command(&mut sub, &["CLIENT", "SETNAME", "slow-sub"]).starts_with("+OK"));
    assert_eq!(command(&mut sub, &["SUBSCRIBE", "news"]), "*3");
    let mut publisher = connect(&redis);
    let payload = "x".repeat(2 << 20);
    assert_eq!(
        command(&mut publisher, &["PUBLISH", "news", &payload]),
        ":1"
    );
    let log = redis.dir.join("redis.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("overcoming of output buffer limits")
    {
        assert!(
            Instant::now() < deadline,
            "no output buffer line in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let d = run(&options(&redis)).expect("diagnose");
    println!("{}", render_text(&d, false));
    let facts = d.redis.as_ref().expect("facts");
    assert_eq!(facts.pid, Some(redis.pid()));
    assert!(facts.process_on_this_host);
    assert_eq!(facts.version.as_deref().map(|v| v.is_empty()), Some(false));
    assert!(facts.uptime_s.is_some_and(|u| u < 60));
    assert_eq!(facts.timeout, Some(60));

    let t = find(
        &d.findings,
        "timeout 60: Redis closes clients idle longer than 60 s",
    );
    assert_eq!(t.severity, Severity::Warning);
    let k = find(&d.findings, "tcp-keepalive 0");
    assert_eq!(k.severity, Severity::Warning);
    let p = find(&d.findings, "Small pubsub output buffer limit (hard 1 MiB)");
    assert_eq!(p.severity, Severity::Warning);
    let r = find(&d.findings, "Redis started ");
    assert_eq!(r.severity, Severity::Warning);
    let obl = find(
        &d.findings,
        "Redis closed 1 client(s) for exceeding their output buffer limit in the last 24 h",
    );
    assert_eq!(obl.severity, Severity::Warning);
    assert!(obl.evidence[0].ends_with("(1 pubsub)"), "{obl:?}");
    assert!(obl.evidence[1].contains("name=slow-sub"), "{obl:?}");
    assert!(d.exit_code() >= 2);
    let worst: Vec<Severity> = d.findings.iter().map(|f| f.severity).collect();
    assert!(worst.windows(2).all(|w| w[0] >= w[1]), "sorted: {worst:?}");
}

#[test]
fn diagnose_real_sane_server() {
    // No PING first: the command statistics below are the diagnosis's alone.
    let redis = Redis::start_without_commands(&[
        "--timeout",
        "0",
        "--tcp-keepalive",
        "300",
        "--maxmemory",
        "100mb",
        "--maxmemory-policy",
        "allkeys-lru",
        // To standard output, as asserted below.
        "--logfile",
        "",
    ]);
    let d = run(&options(&redis)).expect("diagnose");
    println!("{}", render_text(&d, false));
    // Started a moment ago: a test server always has the restart finding.
    let r = find(&d.findings, "Redis started ");
    assert_eq!(r.severity, Severity::Warning);
    let serious: Vec<&Finding> = d
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info && !host_level(f) && !std::ptr::eq(*f, r))
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
    // Logs to stdout: said so, as Info.
    let log = find(&d.findings, "Redis log not read");
    assert_eq!(log.severity, Severity::Info);
    assert!(log.evidence[0].contains("standard output"));
    let facts = d.redis.as_ref().unwrap();
    assert_eq!(facts.maxmemory, Some(100 << 20));
    assert!(facts.process_on_this_host);

    // Read-only: what the diagnosis (and this look) ran, per Redis's command statistics.
    let target = Target::new(None, redis.port, None).unwrap();
    let snap = Session::connect(&target).unwrap().snapshot(false).unwrap();
    only_read_only_commands_ran(&snap.info, true);
}

#[test]
fn diagnose_real_unreachable_and_refused() {
    let port = free_port();
    let d = run(&Options {
        port,
        ..Options::default()
    })
    .expect("unreachable is a finding, not an error");
    assert!(d.redis.is_none());
    let f = find(
        &d.findings,
        &format!("Redis at 127.0.0.1:{port} is not answering: refused the connection"),
    );
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.evidence.iter().any(|e| e.starts_with("/proc: ")), "{f:?}");
    assert_eq!(d.exit_code(), 3);

    let redis = Redis::start_with(&["--requirepass", "secret"], None);
    let err = format!(
        "{:#}",
        run(&options(&redis)).expect_err("no password: a tool error")
    );
    assert!(err.contains("Redis requires a password"), "{err}");
}

/// The version read from redis-server's ELF (never by running it, in redis-trace) is the
/// one the binary itself prints: here the test runs it, as the tool must not.
#[test]
fn version_of_the_installed_redis_server_from_its_elf() {
    let data = std::fs::read("/usr/bin/redis-server").expect("redis-server installed");
    let file = object::File::parse(&*data).expect("an ELF");
    let v = redis_trace::kernel::redis_elf::elf_version(&file).expect("a Redis version in .rodata");
    assert_eq!(v.server.as_str(), "redis");
    let out = std::process::Command::new("/usr/bin/redis-server")
        .arg("--version")
        .output()
        .expect("run the test's own redis-server");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains(&format!("v={} ", v.version)),
        "ELF says {v:?}, the binary says {line}"
    );
}

/// Read-only: what ran on this server, per Redis's own command statistics, is INFO,
/// CONFIG GET and CLIENT LIST alone (and, when `some`, at least one of them).
fn only_read_only_commands_ran(info: &std::collections::HashMap<String, String>, some: bool) {
    let ran: Vec<&String> = info.keys().filter(|k| k.starts_with("cmdstat_")).collect();
    assert!(!some || !ran.is_empty(), "no command statistics");
    for k in &ran {
        assert!(
            matches!(
                k.as_str(),
                "cmdstat_info" | "cmdstat_config|get" | "cmdstat_client|list"
            ),
            "unexpected command {k} in {ran:?}"
        );
    }
}
