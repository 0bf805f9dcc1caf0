//! The packet programs' cost per packet (`packet_in`, `packet_out`: every packet of the
//! host runs them), measured where it is paid: traffic that leaves a namespace over a
//! veth, as between hosts. Three namespaces of our own (redis-lab's `Topology`); two
//! redis-servers on the Redis host, one on the traced port and one on another; a capture
//! of the traced port; redis-benchmark from the client's namespace against each in turn.
//! `kernel.bpf_stats_enabled` gives run time and runs per program, so each phase's delta
//! is its cost per packet. Phases alternate, and the spread of the rounds is the noise.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use redis_lab::{Redis, Topology, in_netns};

use crate::bench::{bpf_prog_stats, median};

const PROGRAMS: [&str; 2] = ["packet_in", "packet_out"];

fn server_in(topo: &Topology, port: u16) -> Result<Redis> {
    let addr = SocketAddr::from((Topology::SERVER_V4, port));
    let client_ns = topo.client.clone();
    Redis::options()
        .port(port)
        .bind(&Topology::SERVER_V4.to_string())
        .args(&["--protected-mode", "no", "--loglevel", "warning"])
        .dir_prefix("redis-trace-bench-packets")
        .wrapper(&["ip", "netns", "exec", &topo.redis])
        .ready_when(move |_| {
            in_netns(&client_ns, || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
            .unwrap_or(false)
        })
        .start()
        .context("starting a redis-server in the bench's Redis namespace")
}

/// redis-benchmark from the client's namespace: requests per second.
fn load(topo: &Topology, port: u16, n: u64) -> Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.client, "redis-benchmark", "-q"])
        .args([
            "-h",
            &Topology::SERVER_V4.to_string(),
            "-p",
            &port.to_string(),
        ])
        .args(["-c", "20", "-n", &n.to_string(), "-t", "ping_mbulk"])
        .stdin(Stdio::null())
        .output()
        .context("running redis-benchmark in the client's namespace")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "PING_MBULK: 41152.26 requests per second, p50=..." (the last \r-separated part).
    text.rsplit('\r')
        .next()
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("redis-benchmark said: {text}"))
}

pub fn run(bin: &Path, rounds: usize, n: u64, dir: &Path) -> Result<String> {
    let topo = Topology::new(&format!("rtb{}", std::process::id() % 100_000))?;
    let traced_port = 16379;
    let other_port = 16380;
    let _traced = server_in(&topo, traced_port)?;
    let _other = server_in(&topo, other_port)?;
    let out = dir.join("packets.out");
    let mut capture = Command::new(bin)
        .args(["capture", "--quiet", "--no-redis", "--no-uprobes"])
        .args(["--port", &traced_port.to_string(), "--json"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-trace capture")?;
    let started = Instant::now();
    let attached = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(first) = text.lines().next()
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(first)
        {
            break v["probes_attached"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == "cgroup_skb:packets"));
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = capture.kill();
            bail!("redis-trace did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !attached {
        let _ = capture.kill();
        bail!("the capture runs without its packet programs: nothing to measure");
    }
    // (program, phase) -> ns per run of each round; phase -> requests/s.
    let mut cost: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut runs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut rps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let mut phases = [("other port", other_port), ("traced port", traced_port)];
        if round % 2 == 1 {
            phases.reverse();
        }
        for (phase, port) in phases {
            eprintln!("bench: packets round {}/{rounds}: {phase}", round + 1);
            let before = bpf_prog_stats();
            let r = load(&topo, port, n)?;
            let after = bpf_prog_stats();
            rps.entry(phase).or_default().push(r);
            for p in PROGRAMS {
                let (ns, cnt) = after.get(p).copied().unwrap_or((0, 0));
                let (bns, bcnt) = before.get(p).copied().unwrap_or((0, 0));
                let (dns, dcnt) = (ns.saturating_sub(bns), cnt.saturating_sub(bcnt));
                if dcnt > 0 {
                    cost.entry((p, phase))
                        .or_default()
                        .push(dns as f64 / dcnt as f64);
                    *runs.entry((p, phase)).or_default() += dcnt;
                }
            }
        }
    }
    let _ = capture.kill();
    let _ = capture.wait();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nPacket programs (kernel.bpf_stats_enabled), redis-benchmark -c 20 -n {n} -t ping_mbulk \
         from a client namespace over a veth and a router namespace, {rounds} rounds alternating:\n"
    );
    let _ = writeln!(
        o,
        "| program | traffic | packets | ns per packet, median (range) |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for ((p, phase), v) in &cost {
        let (med, lo, hi) = median(v.clone());
        let _ = writeln!(
            o,
            "| {p} | {phase} | {} | {med:.0} ({lo:.0}..{hi:.0}) |",
            runs.get(&(*p, *phase)).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(o);
    for (phase, v) in &rps {
        let (med, lo, hi) = median(v.clone());
        let _ = writeln!(
            o,
            "Throughput, {phase}: {med:.0} requests/s ({lo:.0}..{hi:.0})."
        );
    }
    Ok(o)
}
