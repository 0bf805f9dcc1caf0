//! Scenario tests of Redis servers in network namespaces of their own, as containers and
//! pods run them: found without `--port`, told apart when several listen on one port,
//! read from inside their namespace, labelled, reached through a DNAT port mapping, and
//! scoped with `--pid`, `--netns` and `--container`. Every namespace, veth, nftables
//! table and cgroup is made by the test and removed on drop (also on failure); traffic
//! goes only to loopback and to addresses on the test's own veths. Root, one at a time.
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use scenario_tests::resp::command;
use scenario_tests::{
    Capture, Netns, Redis, closed_for, closed_on, evidence_text, free_port, in_netns, require_root,
};
use serde_json::Value;

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The inode of a namespace file: the number records name a namespace by.
fn netns_inode(name: &str) -> u64 {
    std::fs::metadata(format!("/run/netns/{name}"))
        .expect("netns file")
        .ino()
}

/// A namespace with its loopback up and a veth to the host: host `10.216.N.1/30`,
/// namespace `10.216.N.2/30`. Returns (namespace, host address, namespace address).
fn namespace_with_veth(ns: &mut Netns, tag: &str, n: u8) -> (String, Ipv4Addr, Ipv4Addr) {
    let name = ns
        .add(format!("ct-{}-{tag}", unique()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let host_if = format!("cth{}{n}", std::process::id() % 10_000);
    let (host, inside) = (Ipv4Addr::new(10, 216, n, 1), Ipv4Addr::new(10, 216, n, 2));
    run(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
    ]);
    run(&["ip", "addr", "add", &format!("{host}/30"), "dev", &host_if]);
    run(&["ip", "link", "set", &host_if, "up"]);
    run(&[
        "ip",
        "-n",
        &name,
        "addr",
        "add",
        &format!("{inside}/30"),
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &name, "link", "set", "eth0", "up"]);
    (name, host, inside)
}

/// A redis-server running inside namespace `ns` (through `ip netns exec`, which execs:
/// the pid is the server's), listening on `bind` port `port`.
fn redis_in(ns: &str, port: u16, bind: &str, extra: &[&str]) -> Redis {
    let ns_owned = ns.to_string();
    Redis::options()
        .port(port)
        .bind(bind)
        .args(&["--protected-mode", "no"])
        .args(extra)
        .wrapper(&["ip", "netns", "exec", ns])
        .ready_when(move |r| {
            let port = r.port;
            in_netns(&ns_owned, move || {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_millis(500),
                )
                .ok()
                .and_then(|mut s| command(&mut s, &["PING"]).ok())
                .is_some_and(|r| r.contains("PONG"))
            })
            .unwrap_or(false)
        })
        .start()
        .unwrap_or_else(|e| panic!("redis-server in {ns}: {e:#}"))
}

/// A client socket made inside namespace `ns`, connected to `to`, optionally from a
/// chosen local port (so that two namespaces' connections have the same addresses).
fn client_in(ns: &str, to: SocketAddr, local_port: Option<u16>) -> TcpStream {
    let s = in_netns(ns, move || -> std::io::Result<TcpStream> {
        match local_port {
            None => TcpStream::connect_timeout(&to, Duration::from_secs(5)),
            Some(p) => {
                let sock =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                sock.set_reuse_address(true)?;
                sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, p)).into())?;
                sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
                Ok(sock.into())
            }
        }
    })
    .expect("entering the namespace")
    .unwrap_or_else(|e| panic!("connecting to {to} in {ns}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn ping(s: &mut TcpStream) {
    assert!(command(s, &["PING"]).expect("PING").contains("PONG"));
}

/// Reads until EOF (the server closed), at most `limit`.
fn wait_eof(s: &mut TcpStream, limit: Duration) {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("no EOF within {limit:?} ({:?}): {e}", started.elapsed()),
        }
    }
}

fn capture(args: &[&str]) -> Capture {
    let mut a: Vec<String> = vec!["capture".into(), "--json".into(), "-".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    Capture::start_args(&a)
}

/// Waits until the capture has read the view of the Redis with this pid.
fn wait_connected(cap: &mut Capture, pid: u32) -> Value {
    cap.wait_for(Duration::from_secs(15), |r| {
        r["type"] == "redis_status" && r["status"] == "connected" && r["pid"] == pid
    })
}

#[test]
fn redis_in_its_own_namespace_is_found_and_its_idle_timeout_explained_from_inside() {
    require_root();
    let mut ns = Netns::new();
    let (name, _host, inside) = namespace_with_veth(&mut ns, "one", 1);
    let port = free_port();
    // Bound to the namespace's loopback and its veth address: 127.0.0.1 here is not
    // the host's, so Redis's view can only be read from inside.
    let redis = redis_in(
        &name,
        port,
        &format!("127.0.0.1 {inside}"),
        &["--timeout", "1"],
    );
    let inode = netns_inode(&name);

    // No --port: discovered across namespaces.
    let mut cap = capture(&[]);
    let entry = cap.started["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == port)
        .cloned()
        .unwrap_or_else(|| panic!("port {port} not discovered: {:#}", cap.started));
    assert_eq!(entry["process"]["pid"], redis.pid(), "{entry:#}");
    assert_eq!(entry["netns"], inode, "{entry:#}");
    let status = wait_connected(&mut cap, redis.pid());
    assert_eq!(status["netns"], inode, "{status:#}");
    assert_eq!(status["log_readable"], true, "{status:#}");

    // A client on the host, over the veth; Redis's idle timeout closes it.
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from((inside, port)), Duration::from_secs(5))
            .expect("connect over the veth");
    ping(&mut s);
    let client = s.local_addr().expect("addr");
    // Let a CLIENT LIST see it idle before the timeout.
    wait_eof(&mut s, Duration::from_secs(8));
    let records = cap.stop();
    let r = closed_for(&records, client);
    assert_eq!(r["cause"], "redis_idle_timeout", "{r:#}");
    assert_eq!(r["closed_by_side"], "server", "{r:#}");
    assert_eq!(r["pid"], redis.pid(), "{r:#}");
    assert_eq!(r["netns"], inode, "{r:#}");
    assert_eq!(r["redis_server"]["pid"], redis.pid(), "{r:#}");
    assert_eq!(r["redis_server"]["netns"], inode, "{r:#}");
    assert_eq!(
        r["both_ends_local"], true,
        "the client end is on this host: {r:#}"
    );
    let ev = evidence_text(&r);
    assert!(ev.contains("CLIENT LIST at "), "{ev}");
    assert!(ev.contains("config: timeout is 1s"), "{ev}");
    assert!(r["redis_client"]["id"].as_u64().is_some(), "{r:#}");
}

/// Two namespaces, each with a Redis on 127.0.0.1:PORT, each with a client from the same
/// local port: the two connections have the same addresses and ports.
struct TwoPods {
    ns: Netns,
    names: [String; 2],
    redis: [Redis; 2],
    port: u16,
}

fn two_pods() -> TwoPods {
    let mut ns = Netns::new();
    let a = ns.add(format!("ct-{}-a", unique())).expect("netns a");
    let b = ns.add(format!("ct-{}-b", unique())).expect("netns b");
    let port = free_port();
    let ra = redis_in(&a, port, "127.0.0.1", &["--timeout", "1"]);
    let rb = redis_in(&b, port, "127.0.0.1", &[]);
    TwoPods {
        ns,
        names: [a, b],
        redis: [ra, rb],
        port,
    }
}

/// In pod A a client idles out; in pod B a client is CLIENT KILLed. Returns the two
/// clients' address (the same in both).
fn idle_here_kill_there(p: &TwoPods) -> SocketAddr {
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
    let local = free_port();
    let mut a = client_in(&p.names[0], to, Some(local));
    let mut b = client_in(&p.names[1], to, Some(local));
    assert_eq!(a.local_addr().expect("a"), b.local_addr().expect("b"));
    ping(&mut a);
    ping(&mut b);
    let id = command(&mut b, &["CLIENT", "ID"]).expect("CLIENT ID");
    let id = id.trim_start_matches(':').to_string();
    let mut admin = client_in(&p.names[1], to, None);
    // Pod A's client idles out meanwhile (timeout 1).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        command(&mut admin, &["CLIENT", "KILL", "ID", &id]).expect("KILL"),
        ":1"
    );
    wait_eof(&mut a, Duration::from_secs(8));
    wait_eof(&mut b, Duration::from_secs(8));
    a.local_addr().expect("addr")
}

#[test]
fn two_namespaces_on_one_loopback_port_keep_their_own_causes() {
    require_root();
    let p = two_pods();
    let mut cap = capture(&["--port", &p.port.to_string()]);
    let started = cap.started.clone();
    let entries: Vec<&Value> = started["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|e| e["port"] == p.port)
        .collect();
    assert_eq!(entries.len(), 2, "one entry per namespace: {started:#}");
    // Both servers' views, in whichever order they come.
    let seen = std::cell::RefCell::new(Vec::new());
    cap.wait_for(Duration::from_secs(15), |r| {
        if r["type"] == "redis_status" && r["status"] == "connected" {
            seen.borrow_mut().push(r["pid"].clone());
        }
        p.redis
            .iter()
            .all(|x| seen.borrow().contains(&Value::from(x.pid())))
    });
    let client = idle_here_kill_there(&p);
    let records = cap.stop();
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "connection_closed" && r["client"] == client.to_string())
        .collect();
    assert_eq!(mine.len(), 2, "one record per namespace: {mine:#?}");
    let of = |i: usize| {
        let inode = netns_inode(&p.names[i]);
        let found: Vec<&&Value> = mine.iter().filter(|r| r["netns"] == inode).collect();
        assert_eq!(found.len(), 1, "namespace {i}: {mine:#?}");
        (*found[0]).clone()
    };
    let (a, b) = (of(0), of(1));
    assert_eq!(a["cause"], "redis_idle_timeout", "{a:#}");
    assert_eq!(a["pid"], p.redis[0].pid(), "{a:#}");
    assert_eq!(a["redis_server"]["pid"], p.redis[0].pid(), "{a:#}");
    assert_eq!(b["cause"], "redis_client_kill", "{b:#}");
    assert_eq!(b["pid"], p.redis[1].pid(), "{b:#}");
    assert_eq!(b["redis_server"]["pid"], p.redis[1].pid(), "{b:#}");
    // Each one's evidence is its own server's: pod B's timeout is 0.
    assert!(evidence_text(&a).contains("config: timeout is 1s"), "{a:#}");
    assert!(!evidence_text(&b).contains("timeout is 1s"), "{b:#}");
    drop(p.ns);
}

#[test]
fn pid_and_netns_scopes_report_only_their_server() {
    require_root();
    let p = two_pods();
    let inode_b = netns_inode(&p.names[1]);
    for scope in [
        vec!["--pid".to_string(), p.redis[1].pid().to_string()],
        vec!["--netns".to_string(), format!("/run/netns/{}", p.names[1])],
    ] {
        let args: Vec<&str> = scope.iter().map(String::as_str).collect();
        let mut cap = capture(&args);
        let ports = cap.started["ports"].as_array().expect("ports").clone();
        assert_eq!(ports.len(), 1, "{:#}", cap.started);
        assert_eq!(ports[0]["netns"], inode_b, "{ports:#?}");
        wait_connected(&mut cap, p.redis[1].pid());
        let client = idle_here_kill_there(&p);
        let records = cap.stop();
        // Pod B's killed client (and its admin connection closing); not pod A's client,
        // although it has the same addresses and ports.
        let mine: Vec<Value> = closed_on(&records, p.port)
            .into_iter()
            .filter(|r| r["client"] == client.to_string())
            .collect();
        assert_eq!(mine.len(), 1, "{scope:?}: only pod B's close: {mine:#?}");
        assert_eq!(mine[0]["netns"], inode_b, "{:#}", mine[0]);
        assert_eq!(mine[0]["cause"], "redis_client_kill", "{:#}", mine[0]);
        // Pod A's traffic produced nothing, not even a reset record.
        assert!(
            records
                .iter()
                .all(|r| r["netns"].is_null() || r["netns"] == inode_b),
            "{scope:?}: {records:#?}"
        );
    }
    drop(p.ns);
}

/// A cgroup named as Docker names a container's, holding `pid`, removed on drop.
struct ContainerCgroup {
    dir: PathBuf,
}

impl ContainerCgroup {
    fn new(id: &str, pid: u32) -> Self {
        // cgroup v2 (unified, or its hybrid mount), else v1's pids hierarchy.
        let dir = [
            ("/sys/fs/cgroup/unified", "cgroup.procs"),
            ("/sys/fs/cgroup", "cgroup.controllers"),
            ("/sys/fs/cgroup/pids", "cgroup.procs"),
        ]
        .iter()
        .find(|(root, probe)| PathBuf::from(root).join(probe).exists())
        .map(|(root, _)| PathBuf::from(root).join(format!("docker-{id}.scope")))
        .expect("a cgroup hierarchy to make a container's cgroup in");
        std::fs::create_dir(&dir).expect("creating the container's cgroup");
        let cg = Self { dir };
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).expect("moving the pid");
        cg
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Whatever is still in it goes back to the root first.
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        if let Some(root) = self.dir.parent() {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn container_scope_and_label_come_from_the_cgroup_path() {
    require_root();
    let p = two_pods();
    let id = format!(
        "{:016x}{}",
        u64::from(std::process::id()) << 20 | 0xc0ffee,
        "ab".repeat(24)
    );
    let cg = ContainerCgroup::new(&id, p.redis[1].pid());
    let mut cap = capture(&["--container", &id[..12]]);
    let ports = cap.started["ports"].as_array().expect("ports").clone();
    assert_eq!(ports.len(), 1, "{:#}", cap.started);
    assert_eq!(ports[0]["container"]["runtime"], "docker", "{ports:#?}");
    assert_eq!(ports[0]["container"]["id"], id.as_str(), "{ports:#?}");
    wait_connected(&mut cap, p.redis[1].pid());
    let client = idle_here_kill_there(&p);
    let records = cap.stop();
    let mine: Vec<Value> = closed_on(&records, p.port)
        .into_iter()
        .filter(|r| r["client"] == client.to_string())
        .collect();
    assert_eq!(mine.len(), 1, "only the container's: {mine:#?}");
    assert!(
        closed_on(&records, p.port)
            .iter()
            .all(|r| r["redis_server"]["container"]["id"] == id.as_str()),
        "{records:#?}"
    );
    assert_eq!(
        mine[0]["redis_server"]["container"]["id"],
        id.as_str(),
        "{:#}",
        mine[0]
    );
    assert_eq!(mine[0]["cause"], "redis_client_kill", "{:#}", mine[0]);
    drop(cg);
    drop(p.ns);
}

/// Docker-style port mapping: host port -> DNAT -> the namespace's Redis. The client
/// connects to the host's own address and port; the kernel rewrites the destination.
#[test]
fn a_dnat_port_mapping_still_explains_an_output_buffer_limit() {
    require_root();
    let mut ns = Netns::new();
    let (name, host, inside) = namespace_with_veth(&mut ns, "dnat", 2);
    let port = free_port();
    let redis = redis_in(
        &name,
        port,
        &format!("127.0.0.1 {inside}"),
        &["--client-output-buffer-limit", "pubsub 64kb 32kb 60"],
    );
    let host_port = free_port();
    let table = format!("ctdnat{}", std::process::id());
    run(&["nft", "add", "table", "ip", &table]);
    struct Table(String);
    impl Drop for Table {
        fn drop(&mut self) {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &self.0])
                .status();
        }
    }
    let _table = Table(table.clone());
    run(&[
        "nft",
        &format!("add chain ip {table} out {{ type nat hook output priority -100 ; }}"),
    ]);
    run(&[
        "nft",
        &format!(
            "add rule ip {table} out ip daddr {host} tcp dport {host_port} dnat to {inside}:{port}"
        ),
    ]);
    let mut cap = capture(&[]);
    wait_connected(&mut cap, redis.pid());

    let mapped = SocketAddr::V4(SocketAddrV4::new(host, host_port));
    let mut sub =
        TcpStream::connect_timeout(&mapped, Duration::from_secs(5)).expect("through the mapping");
    sub.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let client = sub.local_addr().expect("addr");
    assert_eq!(
        command(&mut sub, &["SUBSCRIBE", "news"]).expect("SUBSCRIBE"),
        "subscribe news :1"
    );
    let mut publisher =
        TcpStream::connect_timeout(&mapped, Duration::from_secs(5)).expect("publisher");
    publisher
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let payload = "x".repeat(64 * 1024);
    let mut dropped = false;
    for _ in 0..500 {
        let r = command(&mut publisher, &["PUBLISH", "news", &payload]).expect("PUBLISH");
        if r == ":0" {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "Redis never dropped the subscriber after 32 MiB");
    drop(publisher);
    let records = cap.stop();
    // Redis saw the client as the host's veth address (the source is not rewritten).
    let r = closed_for(&records, client);
    assert_eq!(
        r["server"],
        SocketAddr::from((inside, port)).to_string(),
        "{r:#}"
    );
    assert_eq!(r["cause"], "redis_output_buffer_limit", "{r:#}");
    assert_eq!(r["client_class"], "pubsub", "{r:#}");
    assert_eq!(r["netns"], netns_inode(&name), "{r:#}");
    assert!(
        evidence_text(&r).contains("Redis log: "),
        "the log inside the namespace: {r:#}"
    );
    drop(sub);
    drop(redis);
    drop(ns);
}

/// A TCP forwarder, as a proxy in front of Redis: perl (Debian's perl-base) copied under
/// the name `haproxy`, so that its task name is the proxy's. Killed on drop.
struct Proxy {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

const FORWARDER: &str = r#"
use IO::Socket::INET; use IO::Select;
my ($lport, $rport) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $lport, Listen => 5,
    ReuseAddr => 1) or die "listen: $!";
$| = 1; print "ready\n";
while (my $c = $l->accept) {
    my $u = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $rport) or next;
    my $s = IO::Select->new($c, $u); my $done = 0;
    while (!$done) {
        my @r = $s->can_read(30); $done = 1 unless @r;
        for my $h (@r) {
            my $buf; my $n = sysread($h, $buf, 65536);
            if (!$n) { $done = 1; last }
            syswrite($h == $c ? $u : $c, $buf);
        }
    }
    close $u; close $c;
}
"#;

impl Proxy {
    fn start(to: u16) -> Self {
        use std::io::BufRead as _;
        let dir = scenario_tests::private_dir("rt-proxy");
        let bin = dir.join("haproxy");
        std::fs::copy("/usr/bin/perl", &bin).expect("perl (perl-base) copied as haproxy");
        let port = free_port();
        let mut child = Command::new(&bin)
            .args(["-e", FORWARDER, &port.to_string(), &to.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the proxy");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("proxy ready");
        assert_eq!(line.trim(), "ready");
        Self { child, dir, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_local_proxy_holding_the_client_end_is_named() {
    require_root();
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port);
    let mut cap = capture(&["--port", &redis.port.to_string()]);
    wait_connected(&mut cap, redis.pid());
    let mut s = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port)))
        .expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    ping(&mut s);
    // The client leaves; the proxy closes its own connection to Redis.
    drop(s);
    let r = cap.wait_for(Duration::from_secs(10), |r| {
        r["type"] == "connection_closed" && r["server"] == redis.addr().to_string()
    });
    let records = cap.stop();
    assert!(
        records
            .iter()
            .all(|x| x["type"] != "connection_closed" || x == &r)
    );
    assert_eq!(r["cause"], "client_close", "{r:#}");
    assert_eq!(r["comm"], "haproxy", "{r:#}");
    assert_eq!(r["peer_proxy"]["comm"], "haproxy", "{r:#}");
    assert_eq!(r["peer_proxy"]["pid"], proxy.child.id(), "{r:#}");
    assert!(
        evidence_text(&r).contains("a proxy: the real client is behind it"),
        "{r:#}"
    );
}

/// A server as containers run it, as pid 1 of a pid namespace of its own: INFO says
/// `process_id:1`, which must become the host's pid (never pid 1 of the host: its root,
/// its log, its process events).
#[test]
fn a_server_that_is_pid_1_of_its_own_pid_namespace_is_known_by_its_host_pid() {
    require_root();
    let port = free_port();
    // unshare forks: the server is its child, pid 1 inside.
    let launcher = Redis::options()
        .port(port)
        .args(&["--timeout", "1"])
        .wrapper(&["unshare", "--pid", "--fork", "--mount-proc"])
        .start()
        .unwrap_or_else(|e| panic!("redis-server in a pid namespace: {e:#}"));
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.pid()))
        .expect("unshare's children");
    let server: u32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the server, unshare's child");
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the server this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _kill = Kill(server);
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "pid 1 inside: {status}"
    );
    assert_eq!(
        command(&mut launcher.client().expect("client"), &["INFO", "server"])
            .map(|i| i.contains("process_id:1\r\n"))
            .ok(),
        Some(true),
        "INFO gives the namespace's pid"
    );
    let mut cap = capture(&["--pid", &server.to_string()]);
    let st = wait_connected(&mut cap, server);
    assert_eq!(
        st["log_readable"], true,
        "its log, through its own root: {st:#}"
    );
    let mut s = launcher.client().expect("client");
    ping(&mut s);
    let client = s.local_addr().expect("addr");
    wait_eof(&mut s, Duration::from_secs(8));
    let records = cap.stop();
    let r = closed_for(&records, client);
    assert_eq!(r["cause"], "redis_idle_timeout", "{r:#}");
    assert_eq!(r["pid"], server, "{r:#}");
    assert_eq!(r["redis_server"]["pid"], server, "{r:#}");
    assert!(
        records
            .iter()
            .filter(|x| x["type"] == "redis_status")
            .all(|x| x["pid"] == server),
        "no status names pid 1: {records:#?}"
    );
}
