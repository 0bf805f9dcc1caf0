//! The library's readers of Redis and of /proc, against a real redis-server: the
//! `sources::redis` session and poller, `diagnose::run`, and `procinfo`'s view of a
//! running server. They call redis-trace's library directly (no binary, no BPF) and need
//! no root, but a server: that is why they are here and not unit tests, so that a plain
//! `cargo test` starts none.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis_trace::sources::procinfo::{processes_named, redis_ports};
use redis_trace::sources::redis::{BufferLimit, Poller, PollerMsg, Session, Target};
use scenario_tests::Redis;

// ---- sources::redis: Session and Poller --------------------------------------------

/// How to reach the test server on 127.0.0.1, as `user` with `password`.
fn target(redis: &Redis, user: Option<&str>, password: Option<&str>) -> Target {
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    Target {
        url: format!("redis://{user}127.0.0.1:{}/", redis.port),
        password: password.map(str::to_string),
        tls: None,
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
    let ran: Vec<&String> = snap
        .info
        .keys()
        .filter(|k| k.starts_with("cmdstat_"))
        .collect();
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
