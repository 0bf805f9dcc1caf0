//! Scenario tests of what goes into a postmortem: `capture --report` on a real capture
//! of several causes, `report` over saved captures, `--redact`, file modes, `diagnose`,
//! and the generated man page and completions. The real binary, a real redis-server.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scenario_tests::{Redis, redis_trace_bin, require_root, set_linger_zero, wait_timeout};
use serde_json::Value;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn ping(s: &mut TcpStream) {
    s.write_all(b"PING\r\n").expect("write");
    let mut line = String::new();
    BufReader::new(&*s).read_line(&mut line).expect("PONG");
    assert_eq!(line, "+PONG\r\n");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("file").permissions().mode() & 0o777
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    scenario_tests::private_dir(tag)
}

#[test]
fn capture_report_explains_a_real_capture() {
    require_root();
    let redis = Redis::start_with(&["--timeout", "1"], None);
    let dir = tmpdir("report");
    let md = dir.join("incident.md");
    let mut child = Command::new(redis_trace_bin())
        .args([
            "capture",
            "-q",
            "--port",
            &redis.port.to_string(),
            "--duration",
            "6s",
            "--report",
        ])
        .arg(&md)
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-trace");
    // Wait for the JSON file's first line: every probe is live.
    let json = dir.join("incident.jsonl");
    let end = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&json).is_ok_and(|t| t.contains("capture_started")) {
        assert!(Instant::now() < end, "capture did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three client closes, one client abort, two idle timeouts.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut s = connect(redis.addr());
        ping(&mut s);
    }
    let mut s = connect(redis.addr());
    ping(&mut s);
    set_linger_zero(&s);
    drop(s);
    for _ in 0..2 {
        let mut s = connect(redis.addr());
        ping(&mut s);
        clients.push(s);
    }
    assert!(
        wait_timeout(&mut child, Duration::from_secs(60)),
        "capture did not end"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("report written to"), "{err}");
    drop(clients);

    let svg = dir.join("incident.svg");
    assert_eq!(mode(&md), 0o600);
    assert_eq!(mode(&svg), 0o600);
    assert_eq!(mode(&json), 0o600);
    let text = std::fs::read_to_string(&md).expect("report");
    let chart = std::fs::read_to_string(&svg).expect("chart");
    assert!(
        chart.starts_with("<svg") || chart.starts_with("<?xml"),
        "not an SVG"
    );
    assert!(
        text.contains("](incident.svg)"),
        "the report links its chart"
    );
    // The counts in the verdict match the JSON lines.
    let records: Vec<Value> = std::fs::read_to_string(&json)
        .expect("json")
        .lines()
        .map(scenario_tests::record)
        .collect();
    let closes: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "connection_closed")
        .collect();
    let count = |c: &str| closes.iter().filter(|r| r["cause"] == c).count();
    assert_eq!(count("client_close"), 3, "{closes:#?}");
    assert_eq!(count("client_reset"), 1, "{closes:#?}");
    assert_eq!(count("redis_idle_timeout"), 2, "{closes:#?}");
    assert!(
        text.contains(&format!("**3 of {} connection ends**", closes.len())),
        "the verdict names the dominant cause with its count:\n{text}"
    );
    assert!(text.contains("`client_close`"));
    assert!(text.contains("`redis_idle_timeout`"));
    assert!(
        text.contains("## Risk findings"),
        "diagnose's findings are in the report"
    );
    assert!(
        text.contains("timeout 1"),
        "the risky timeout is found:\n{text}"
    );

    // The same report from the saved file, redacted: no client address is left.
    let red = dir.join("shared.md");
    let out = Command::new(redis_trace_bin())
        .args(["report", "--redact", "-o"])
        .arg(&red)
        .arg(&json)
        .output()
        .expect("report");
    assert!(out.status.success(), "{out:?}");
    let shared = std::fs::read_to_string(&red).expect("redacted")
        + &std::fs::read_to_string(dir.join("shared.svg")).expect("svg");
    for r in &closes {
        let client = r["client"].as_str().expect("client");
        let port = client.rsplit(':').next().expect("port");
        assert!(
            !shared.contains(client),
            "{client} left in the redacted report"
        );
        assert!(
            !shared.contains(&format!("127.0.0.1:{port}")),
            "{client} left"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_merges_two_captures_of_one_connection() {
    // Captures of the same connections from the Redis host and the application host,
    // where a load balancer's RST reached the client: proven from both sides.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../redis-trace/tests/fixtures/captures");
    let dir = tmpdir("merge");
    let md = dir.join("both.md");
    let out = Command::new(redis_trace_bin())
        .args(["report", "-o"])
        .arg(&md)
        .arg(fixtures.join("both-ends-redis-host.jsonl"))
        .arg(fixtures.join("both-ends-app-host.jsonl"))
        .output()
        .expect("report");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&md).expect("report");
    assert!(text.contains("middlebox_reset"), "{text}");
    assert!(text.to_lowercase().contains("both sides"), "{text}");
    // Not a capture: a clear error.
    let out = Command::new(redis_trace_bin())
        .args(["report", "-o"])
        .arg(dir.join("x.md"))
        .arg(&md)
        .output()
        .expect("report");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a redis-trace capture"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diagnose_finds_risky_settings_and_stays_quiet_on_sane_ones() {
    let risky = Redis::start_with(
        &[
            "--timeout",
            "60",
            "--tcp-keepalive",
            "0",
            "--client-output-buffer-limit",
            "pubsub 1mb 512kb 60",
        ],
        None,
    );
    let out = Command::new(redis_trace_bin())
        .args(["diagnose", "--json", "--port", &risky.port.to_string()])
        .env_remove("REDISCLI_AUTH")
        .output()
        .expect("diagnose");
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let titles: Vec<String> = d["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["title"].as_str().unwrap_or("").to_string())
        .collect();
    for want in [
        "timeout 60",
        "tcp-keepalive 0",
        "pubsub output buffer limit",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "{want} not found in {titles:#?}"
        );
    }
    assert!(matches!(out.status.code(), Some(2 | 3)), "{out:?}");

    let sane = Redis::start_with(
        &[
            "--timeout",
            "0",
            "--tcp-keepalive",
            "300",
            "--maxmemory",
            "100mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        None,
    );
    let out = Command::new(redis_trace_bin())
        .args(["diagnose", "--json", "--port", &sane.port.to_string()])
        .output()
        .expect("diagnose");
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // Only host-level findings (this test host's overcommit setting and the OOM kills
    // other tests cause) and the server's own fresh start may warn.
    for f in d["findings"].as_array().expect("findings") {
        let title = f["title"].as_str().unwrap_or("");
        let serious = f["severity"] != "info";
        let host_level = title.contains("overcommit")
            || title.contains("OOM killer")
            || title.starts_with("Redis started");
        assert!(
            !serious || host_level,
            "unexpected finding on a sane Redis: {f}"
        );
    }
    // Nobody listening: critical, and says so.
    let out = Command::new(redis_trace_bin())
        .args([
            "diagnose",
            "--port",
            &scenario_tests::free_port().to_string(),
        ])
        .output()
        .expect("diagnose");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is not answering"),
        "{out:?}"
    );
}

#[test]
fn man_page_completions_and_a_closed_pipe() {
    let out = Command::new(redis_trace_bin())
        .args(["generate", "man"])
        .output()
        .expect("man");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH redis-trace"));
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(redis_trace_bin())
            .args(["generate", shell])
            .output()
            .expect("completions");
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    // `| head`: the reader goes away; no error, exit 0.
    let mut child = Command::new(redis_trace_bin())
        .args(["generate", "man"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every subcommand has examples in its help.
    for sub in ["capture", "report", "diagnose", "demo", "generate"] {
        let out = Command::new(redis_trace_bin())
            .args([sub, "--help"])
            .output()
            .expect("help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example"),
            "{sub} --help has no examples"
        );
    }
}
