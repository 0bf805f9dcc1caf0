//! Middlebox or client, proven from the Redis host alone by the packets themselves.
//!
//! Three network namespaces made by each test (client, router, Redis host; see
//! `Topology`), the capture limited to one of them with `--netns`, so that it sees only
//! what a real Redis host (or application host) sees: its own sockets and the packets
//! that reach them. The router forwards with nftables rules of the test's own (a reject
//! with a TCP reset, a conntrack table with a short timeout), the way a firewall, NAT
//! gateway or load balancer between hosts does. Every namespace, veth and rule is
//! removed on drop, also on failure. Root, one test at a time.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use scenario_tests::{
    Capture, Redis, Topology, closed_for, evidence_text, free_port, in_netns, private_dir,
    redis_trace_bin, require_root, run_in, set_linger_zero,
};
use serde_json::Value;

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mb{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The three namespaces and a redis-server in the Redis host's, reachable from the
/// client's over the router.
struct Lab {
    topo: Topology,
    redis: Redis,
    server: SocketAddr,
    v6: bool,
}

impl Lab {
    fn new(v6: bool, redis_args: &[&str]) -> Self {
        require_root();
        let topo = Topology::new(&unique()).unwrap_or_else(|e| panic!("{e:#}"));
        let port = free_port();
        let ip: IpAddr = if v6 {
            Topology::SERVER_V6.into()
        } else {
            Topology::SERVER_V4.into()
        };
        let server = SocketAddr::new(ip, port);
        let client_ns = topo.client.clone();
        let redis = Redis::options()
            .port(port)
            .bind(&format!("{} {}", Topology::SERVER_V4, Topology::SERVER_V6))
            .args(&["--protected-mode", "no"])
            .args(redis_args)
            .dir_prefix(&format!("redis-trace-mb-{port}"))
            .wrapper(&["ip", "netns", "exec", &topo.redis])
            .ready_when(move |_| {
                in_netns(&client_ns, || {
                    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                    ping(&mut s)
                })
                .and_then(|r| r)
                .is_ok_and(|reply| reply.starts_with("+PONG"))
            })
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"));
        Lab {
            topo,
            redis,
            server,
            v6,
        }
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    /// A capture limited to namespace `ns` (one of the topology's).
    fn capture(&self, ns: &str, extra: &[&str]) -> Capture {
        let mut args: Vec<String> = [
            "capture",
            "--json",
            "-",
            "--netns",
            &format!("/run/netns/{ns}"),
            "--port",
            &self.port().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let cap = Capture::start_args(&args);
        let attached = cap.started["probes_attached"].to_string();
        assert!(
            attached.contains("cgroup_skb:packets"),
            "the packet programs must run: {:#}",
            cap.started
        );
        cap
    }

    /// A client connection from the client's namespace, one PING answered.
    fn client(&self) -> TcpStream {
        let mut s = in_netns(&self.topo.client, || {
            TcpStream::connect_timeout(&self.server, Duration::from_secs(2))
        })
        .expect("entering the client's namespace")
        .expect("connecting to Redis over the router");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(ping(&mut s).expect("PING").starts_with("+PONG"));
        s
    }

    /// An nftables `reject with tcp reset` in the router for packets from `from` to `to`.
    fn router_rejects(&self, from: SocketAddr, to: SocketAddr) {
        let fam = if self.v6 { "ip6" } else { "ip" };
        self.topo
            .nft(
                &self.topo.router,
                &[
                    "add table inet mb",
                    "add chain inet mb pass { type filter hook forward priority 0 ; policy accept ; }",
                    &format!(
                        "add rule inet mb pass {fam} saddr {} {fam} daddr {} tcp sport {} \
                         tcp dport {} counter reject with tcp reset",
                        from.ip(),
                        to.ip(),
                        from.port(),
                        to.port()
                    ),
                ],
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn rules(&self) -> String {
        run_in(&self.topo.router, &["nft", "list", "ruleset"]).unwrap_or_default()
    }
}

fn ping(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"PING\r\n")?;
    let mut line = String::new();
    BufReader::new(&*s).read_line(&mut line)?;
    Ok(line)
}

/// Waits for the record of `client`'s connection, then stops the capture.
fn record_of(cap: Capture, client: SocketAddr, limit: Duration) -> Value {
    let (r, _) = records_of(cap, client, limit);
    r
}

/// Like [`record_of`], with every record the capture wrote (`capture_started` first).
fn records_of(mut cap: Capture, client: SocketAddr, limit: Duration) -> (Value, Vec<Value>) {
    let want = client.to_string();
    cap.wait_for(limit, |r| {
        r["type"] == "connection_closed" && r["client"] == want.as_str()
    });
    let started = cap.started.clone();
    let mut records = cap.stop();
    let r = closed_for(&records, client);
    records.insert(0, started);
    (r, records)
}

fn assert_evidence(r: &Value, needle: &str) {
    let ev = evidence_text(r);
    assert!(
        ev.contains(needle),
        "evidence should contain {needle:?}:\n{ev}\nrecord: {r:#}"
    );
}

/// The packets that arrived at `side`'s end.
fn packets_at<'a>(r: &'a Value, side: &str) -> &'a Value {
    r["packets"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["at"] == side))
        .unwrap_or_else(|| panic!("no packets seen at the {side} end: {r:#}"))
}

fn ttl_word(v6: bool) -> &'static str {
    if v6 { "hop limit" } else { "TTL" }
}

/// 1 (and 6): the router rejects Redis's reply with a TCP reset sent to Redis, as if
/// from the client. The RST arrives with the router's initial TTL, the client's packets
/// one lower: a device in the path, one hop closer than the client.
fn router_reset_toward_redis(v6: bool) {
    let lab = Lab::new(v6, &[]);
    let cap = lab.capture(&lab.topo.redis, &["--no-redis"]);
    let mut s = lab.client();
    let client = s.local_addr().expect("addr");
    lab.router_rejects(lab.server, client);
    // Redis's answer to this PING meets the reject; the client hears nothing.
    s.write_all(b"PING\r\n").expect("write");
    let r = record_of(cap, client, Duration::from_secs(10));
    let rules = lab.rules();
    assert!(
        rules.contains("counter packets ") && !rules.contains("counter packets 0 "),
        "the reject rule should have matched Redis's reply:\n{rules}"
    );
    assert_eq!(r["observed_on"], "server", "{r:#}");
    assert_eq!(r["kernel_event"], "received_rst", "{r:#}");
    assert_eq!(
        r["both_ends_local"], false,
        "the capture sees one end: {r:#}"
    );
    assert_eq!(r["cause"], "middlebox_reset", "{r:#}");
    assert_eq!(r["closed_by"], "middlebox", "{r:#}");
    let p = packets_at(&r, "server");
    assert_eq!(p["ip_version"], if v6 { 6 } else { 4 }, "{r:#}");
    assert_eq!(p["ttl_min"], 63, "the client is one hop away: {r:#}");
    assert_eq!(p["ttl_max"], 63, "{r:#}");
    assert_eq!(p["rst"]["ttl"], 64, "the router sent the RST: {r:#}");
    let w = ttl_word(v6);
    assert_evidence(&r, &format!("the RST arrived with {w} 64"));
    assert_evidence(
        &r,
        &format!("had {w} 63: it was sent 1 hop closer than the client"),
    );
    drop(s);
}

/// 2 (and 6): the client aborts (SO_LINGER 0): its own RST, through the router, matches
/// its packets: the client reset it, not a device.
fn client_abort_matches_its_packets(v6: bool) {
    let lab = Lab::new(v6, &[]);
    let cap = lab.capture(&lab.topo.redis, &["--no-redis"]);
    let s = lab.client();
    let client = s.local_addr().expect("addr");
    set_linger_zero(&s);
    drop(s);
    let r = record_of(cap, client, Duration::from_secs(10));
    assert_eq!(r["observed_on"], "server", "{r:#}");
    assert_eq!(r["kernel_event"], "received_rst", "{r:#}");
    assert_eq!(r["cause"], "client_reset", "{r:#}");
    assert_eq!(r["closed_by"], "client", "{r:#}");
    let p = packets_at(&r, "server");
    assert_eq!(p["rst"]["ttl"], 63, "{r:#}");
    assert_eq!(p["ttl_min"], 63, "{r:#}");
    let w = ttl_word(v6);
    assert_evidence(
        &r,
        &format!("the RST arrived with {w} 63 like the client's"),
    );
    if !v6 {
        // Linux numbers a socket's packets: the RST continues the client's sequence.
        assert_evidence(&r, "continues the client's sequence");
    } else {
        assert_evidence(&r, "IPv6 has no IP ID");
    }
}

#[test]
fn router_reset_toward_redis_is_a_middlebox_by_its_ttl() {
    router_reset_toward_redis(false);
}

#[test]
fn client_abort_is_a_client_reset_by_its_fingerprint() {
    client_abort_matches_its_packets(false);
}

#[test]
fn ipv6_router_reset_is_a_middlebox_by_its_hop_limit() {
    router_reset_toward_redis(true);
}

#[test]
fn ipv6_client_abort_is_a_client_reset_by_its_hop_limit() {
    client_abort_matches_its_packets(true);
}

/// 3: a NAT or firewall forgets an idle flow. The router tracks connections with a 2 s
/// established timeout and rejects what it no longer knows; the client idles; Redis's
/// `timeout 4` closes it, the router answers Redis's FIN with a RST. The cause stays
/// Redis's own (idle timeout), a path finding says a device dropped the flow after at
/// most ~4 s idle, and the client's next command fails with "Connection reset by peer".
#[test]
fn nat_idle_drop_keeps_the_idle_timeout_and_adds_the_path_finding() {
    let lab = Lab::new(false, &["--timeout", "4"]);
    lab.topo
        .nft(
            &lab.topo.router,
            &[
                "add table inet nat",
                "add chain inet nat pass { type filter hook forward priority 0 ; policy accept ; }",
                "add rule inet nat pass ct state invalid counter reject with tcp reset",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    for key in [
        "net.netfilter.nf_conntrack_tcp_timeout_established=2",
        // Mid-flow packets of a forgotten flow are not taken up again: invalid.
        "net.netfilter.nf_conntrack_tcp_loose=0",
    ] {
        run_in(&lab.topo.router, &["sysctl", "-qw", key]).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let cap = lab.capture(&lab.topo.redis, &[]);
    let mut s = lab.client();
    let client = s.local_addr().expect("addr");
    let idle_from = Instant::now();
    let (r, records) = records_of(cap, client, Duration::from_secs(20));
    let idled = idle_from.elapsed();
    assert_eq!(r["cause"], "redis_idle_timeout", "{r:#}");
    assert_eq!(r["kernel_event"], "sent_fin", "{r:#}");
    let path = &r["path"];
    assert_eq!(path["kind"], "device_dropped_flow", "{r:#}");
    let idle = path["idle_s"].as_f64().expect("idle_s");
    assert!(
        (3.0..=idled.as_secs_f64() + 0.5).contains(&idle),
        "idle {idle} s (Redis's timeout is 4 s, the client idled {idled:?}): {r:#}"
    );
    assert_evidence(
        &r,
        "a device in the path had dropped this flow after at most",
    );
    assert_evidence(&r, "by a RST the client did not send");
    let p = packets_at(&r, "server");
    assert_eq!(p["rst"]["ttl"], 64, "{r:#}");
    assert!(
        p["rst"]["from_end_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "the RST answered the FIN: {r:#}"
    );
    // The report turns the finding into the fix, with the device's idle bound.
    let dir = private_dir("mb-report");
    let file = dir.join("capture.jsonl");
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("writing the capture");
    let out = dir.join("report.md");
    let status = Command::new(redis_trace_bin())
        .arg("report")
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        // Its one line of stderr would land inside the harness's `test ... ok` line.
        .stderr(Stdio::null())
        .status()
        .expect("running redis-trace report");
    assert!(status.success());
    let report = std::fs::read_to_string(&out).expect("the report");
    // diagnose, run on the Redis host, checks its tcp-keepalive (300, the default)
    // against the capture's bound.
    let diag = Command::new("ip")
        .args(["netns", "exec", &lab.topo.redis])
        .arg(redis_trace_bin())
        .args(["diagnose", "--redis-url"])
        .arg(format!("redis://{}/", lab.server))
        .arg("--capture")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("running redis-trace diagnose");
    let _ = std::fs::remove_dir_all(&dir);
    let diag_out = String::from_utf8_lossy(&diag.stdout);
    // 2: warnings, 3: something critical (this host's kernel log may hold old OOM kills);
    // never 1, an error.
    assert!(
        matches!(diag.status.code(), Some(2 | 3)),
        "diagnose: {}\n{diag_out}\n{}",
        diag.status,
        String::from_utf8_lossy(&diag.stderr)
    );
    assert!(
        diag_out.contains("a device in the path drops idle flows after at most"),
        "{diag_out}"
    );
    assert!(
        diag_out.contains("CONFIG SET tcp-keepalive 2"),
        "{diag_out}"
    );
    assert!(
        report.contains("**Path: a device in the path dropped idle flows** (1)"),
        "{report}"
    );
    assert!(report.contains("`CONFIG SET tcp-keepalive 2`"), "{report}");
    // What the application meets: its next command is reset by the router.
    s.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 64];
    let got = s.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client's next command should fail with Connection reset by peer, got {got:?}"
    );
}

/// 4: the client's host vanishes (its namespace drops every packet); Redis's
/// `tcp-keepalive 2` probes go unanswered until the kernel gives up.
#[test]
fn vanished_client_is_a_kernel_reset_and_the_peer_stopped_answering() {
    let lab = Lab::new(false, &["--tcp-keepalive", "2"]);
    let cap = lab.capture(&lab.topo.redis, &["--no-redis"]);
    let s = lab.client();
    let client = s.local_addr().expect("addr");
    lab.topo
        .nft(
            &lab.topo.client,
            &[
                "add table inet gone",
                "add chain inet gone in { type filter hook input priority 0 ; policy drop ; }",
                "add chain inet gone out { type filter hook output priority 0 ; policy drop ; }",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = record_of(cap, client, Duration::from_secs(30));
    assert_eq!(r["cause"], "kernel_reset", "{r:#}");
    assert_eq!(r["kernel_event"], "timeout", "{r:#}");
    assert_eq!(r["path"]["kind"], "peer_stopped_answering", "{r:#}");
    assert_evidence(&r, "the client (");
    assert_evidence(&r, "stopped answering");
    let p = packets_at(&r, "server");
    assert!(
        p["sent_since_last_arrival"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "keepalive sends 3 probes (and a RST) before giving up: {r:#}"
    );
    let idle = r["path"]["idle_s"].as_f64().expect("idle_s");
    assert!((3.0..30.0).contains(&idle), "{idle}: {r:#}");
    drop(s);
}

/// 5: the tool on the application host (the client's namespace, no Redis there): the
/// router rejects the client's command with a RST as if from Redis; Redis's own packets
/// arrive one hop lower: a middlebox, claimed from Redis.
#[test]
fn router_reset_seen_from_the_client_host_is_a_middlebox_claimed_from_redis() {
    let lab = Lab::new(false, &[]);
    let cap = lab.capture(&lab.topo.client, &["--no-redis"]);
    let mut s = lab.client();
    let client = s.local_addr().expect("addr");
    lab.router_rejects(client, lab.server);
    s.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 64];
    let got = s.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client should see the router's reset, got {got:?}"
    );
    let r = record_of(cap, client, Duration::from_secs(10));
    assert_eq!(r["observed_on"], "client", "{r:#}");
    assert_eq!(r["kernel_event"], "received_rst", "{r:#}");
    assert_eq!(r["both_ends_local"], false, "{r:#}");
    assert_eq!(r["cause"], "middlebox_reset", "{r:#}");
    let p = packets_at(&r, "client");
    assert_eq!(p["ttl_min"], 63, "Redis is one hop away: {r:#}");
    assert_eq!(p["rst"]["ttl"], 64, "{r:#}");
    assert_evidence(&r, "a RST claimed from Redis");
    assert_evidence(&r, "it was sent 1 hop closer than Redis");
    drop(lab.redis);
}
