//! `cargo xtask bench`: what redis-trace costs Redis, how fast it starts, and that it
//! loses nothing, side by side with what an operator would otherwise run, in one run so
//! that the machine's noise cancels out. Prints a table and writes it to
//! target/bench/results.md (docs/benchmarks.md keeps a copy of the latest figures).
//!
//! Every load is redis-benchmark against our own redis-server on 127.0.0.1, bounded in
//! requests; every tracer is stopped after its run.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use redis_lab::Redis;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub rounds: usize,
    /// Requests per persistent-connection test (each of ping_mbulk, set, get).
    pub persistent_n: u64,
    /// Connections for the churn test (one request each).
    pub churn_n: u64,
    /// The main measure: fresh starts in a burst (bench_fresh).
    pub fresh: crate::bench_fresh::FreshSettings,
    /// Also the long-attached rounds of every tracer (the previous method).
    pub attached: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tracer {
    None,
    NoneControl,
    RedisTrace,
    RedisTraceNoUprobes,
    RedisTraceNoRedis,
    Bpftrace,
    Tcplife,
    Tcpstates,
}

impl Tracer {
    const ALL: [Tracer; 8] = [
        Tracer::None,
        Tracer::NoneControl,
        Tracer::RedisTrace,
        Tracer::RedisTraceNoUprobes,
        Tracer::RedisTraceNoRedis,
        Tracer::Bpftrace,
        Tracer::Tcplife,
        Tracer::Tcpstates,
    ];

    fn name(self) -> &'static str {
        match self {
            Tracer::None => "no tracer (baseline)",
            Tracer::NoneControl => "no tracer (noise control)",
            Tracer::RedisTrace => "redis-trace capture (uprobes, Redis polling)",
            Tracer::RedisTraceNoUprobes => "redis-trace capture --no-uprobes",
            Tracer::RedisTraceNoRedis => "redis-trace capture --no-redis --no-uprobes",
            Tracer::Bpftrace => "bpftrace, one line per event",
            Tracer::Tcplife => "libbpf-tools tcplife",
            Tracer::Tcpstates => "libbpf-tools tcpstates",
        }
    }
}

/// One tracer process under measurement.
struct Running {
    child: Option<Child>,
    out: PathBuf,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    fn peak_rss_kb(&self) -> Option<u64> {
        crate::bench_fresh::peak_rss_kb(self.pid()?)
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::bench_fresh::interrupt(c);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bench's redis-server (crate redis-lab): loopback only, room for the churn's
/// connections, quiet.
fn start_redis() -> Result<Redis> {
    Redis::options()
        .dir_prefix("redis-trace-bench")
        .bind("127.0.0.1")
        .args(&["--maxclients", "10000", "--loglevel", "warning"])
        .start()
        .context("starting the bench's redis-server")
}

fn bpftrace_script(port: u16) -> String {
    // The same tracepoints as redis-trace, filtered by port, one printed line per event:
    // what an operator would write by hand.
    format!(
        "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->sport == {port} || args->dport == {port})/ \
         {{ printf(\"%d %s %d->%d %d %d\\n\", pid, comm, args->oldstate, args->newstate, args->sport, args->dport); }}\n\
         tracepoint:tcp:tcp_receive_reset /args->sport == {port} || args->dport == {port}/ \
         {{ printf(\"rst-in %d %s\\n\", pid, comm); }}\n\
         tracepoint:tcp:tcp_send_reset {{ printf(\"rst-out %d %s %d\\n\", pid, comm, args->reason); }}\n"
    )
}

/// Starts a tracer and waits until it is attached.
fn start(t: Tracer, bin: &Path, port: u16, dir: &Path) -> Result<Running> {
    let out = dir.join(format!("{t:?}.out"));
    let file = || std::fs::File::create(&out);
    let child = match t {
        Tracer::None | Tracer::NoneControl => None,
        Tracer::RedisTrace | Tracer::RedisTraceNoUprobes | Tracer::RedisTraceNoRedis => {
            let mut c = Command::new(bin);
            c.args(["capture", "--quiet", "--port", &port.to_string(), "--json"])
                .arg(&out);
            match t {
                Tracer::RedisTraceNoRedis => {
                    c.args(["--no-redis", "--no-uprobes"]);
                }
                Tracer::RedisTraceNoUprobes => {
                    c.arg("--no-uprobes");
                }
                _ => {}
            }
            Some(c.stderr(Stdio::null()).spawn()?)
        }
        Tracer::Bpftrace => {
            let script = dir.join("trace.bt");
            std::fs::write(&script, bpftrace_script(port))?;
            Some(
                Command::new("bpftrace")
                    .arg(&script)
                    .stdout(file()?)
                    .stderr(Stdio::null())
                    .spawn()?,
            )
        }
        Tracer::Tcplife | Tracer::Tcpstates => Some(
            Command::new(if t == Tracer::Tcplife {
                "tcplife"
            } else {
                "tcpstates"
            })
            .args(["-L", &port.to_string()])
            .stdout(file()?)
            .stderr(Stdio::null())
            .spawn()?,
        ),
    };
    let mut r = Running { child, out };
    wait_attached(&mut r, t, port)?;
    Ok(r)
}

/// Waits until the tracer reports a connection made after its start: then its probes
/// are live, whatever its logs say.
fn wait_attached(r: &mut Running, t: Tracer, port: u16) -> Result<()> {
    if r.child.is_none() {
        return Ok(());
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
        }
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&r.out).unwrap_or_default();
        let seen = match t {
            Tracer::RedisTrace | Tracer::RedisTraceNoUprobes | Tracer::RedisTraceNoRedis => {
                text.contains("connection_closed")
            }
            _ => text.lines().count() > 1,
        };
        if seen {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{} did not report a connection within 60 s", t.name());
        }
        if let Some(c) = r.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            bail!("{} exited at start ({st})", t.name());
        }
    }
}

/// Runs redis-benchmark and returns requests per second by test.
fn redis_benchmark(port: u16, args: &[&str]) -> Result<BTreeMap<String, f64>> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = BTreeMap::new();
    // "PING_MBULK: 98039.22 requests per second, p50=0.263 msec" (after \r progress).
    for line in text.split(['\n', '\r']) {
        if let Some((name, rest)) = line.split_once(": ")
            && let Some(num) = rest.split_whitespace().next()
            && rest.contains("requests per second")
            && let Ok(v) = num.parse::<f64>()
        {
            rps.insert(name.trim().to_string(), v);
        }
    }
    if rps.is_empty() {
        bail!("redis-benchmark printed no result: {text}");
    }
    Ok(rps)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[derive(Default, Debug, Clone)]
struct Sample {
    persistent: BTreeMap<String, f64>,
    churn: f64,
    cpu_us_per_conn: Option<f64>,
    peak_rss_kb: Option<u64>,
}

pub(crate) fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let m = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (m, v[0], v[v.len() - 1])
}

/// Start to first event: the process starts while a client connects and closes every
/// millisecond; the first connection the tracer reports, by its own kernel time for
/// redis-trace (its records are written after a grace period) or by when the line
/// appeared for the others.
fn start_latency(t: Tracer, bin: &Path, port: u16, dir: &Path) -> Result<(f64, Option<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let loader = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while !s2.load(Ordering::Relaxed) && Instant::now() < end {
            if let Ok(s) = TcpStream::connect(addr) {
                drop(s);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let out = dir.join(format!("{t:?}.start"));
    let started_wall = SystemTime::now();
    let t0 = Instant::now();
    let mut child = match t {
        Tracer::RedisTrace | Tracer::RedisTraceNoUprobes | Tracer::RedisTraceNoRedis => {
            let mut c = Command::new(bin);
            c.args([
                "capture",
                "--quiet",
                "--port",
                &port.to_string(),
                "--json",
                "-",
            ]);
            match t {
                Tracer::RedisTraceNoRedis => {
                    c.args(["--no-redis", "--no-uprobes"]);
                }
                Tracer::RedisTraceNoUprobes => {
                    c.arg("--no-uprobes");
                }
                _ => {}
            }
            c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?
        }
        Tracer::Bpftrace => {
            let script = dir.join("trace.bt");
            std::fs::write(&script, bpftrace_script(port))?;
            Command::new("bpftrace")
                .arg(&script)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?
        }
        _ => Command::new(if t == Tracer::Tcplife {
            "tcplife"
        } else {
            "tcpstates"
        })
        .args(["-L", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?,
    };
    let stdout = child.stdout.take().context("stdout")?;
    let mut first_line_ms = None;
    let mut first_kernel_ms = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let is_event = match t {
            Tracer::RedisTrace | Tracer::RedisTraceNoUprobes | Tracer::RedisTraceNoRedis => {
                line.contains("\"connection_closed\"")
            }
            Tracer::Bpftrace => !line.starts_with("Attaching"),
            // tcplife/tcpstates print a header first.
            _ => line.contains(&port.to_string()),
        };
        if !is_event {
            continue;
        }
        first_line_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(ts) = v["time"].as_str()
            && let Ok(k) = humantime::parse_rfc3339(ts)
            && let Ok(d) = k.duration_since(started_wall)
        {
            first_kernel_ms = Some(d.as_secs_f64() * 1e3);
        }
        break;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = loader.join();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let _ = std::fs::remove_file(out);
    let line = first_line_ms.context("no event seen")?;
    Ok((
        first_kernel_ms.unwrap_or(line),
        first_kernel_ms.map(|_| line),
    ))
}

/// A counter of INFO stats, asked on a connection of its own.
fn info_stat(redis: &Redis, key: &str) -> Result<u64> {
    redis
        .call(&["INFO", "stats"])?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("INFO stats has no {key}"))
}

/// Per-program kernel run time (kernel.bpf_stats_enabled): name -> (run_time_ns, run_cnt).
pub(crate) fn bpf_prog_stats() -> BTreeMap<String, (u64, u64)> {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return BTreeMap::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return BTreeMap::new();
    };
    let mut m = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        if let (Some(name), Some(ns), Some(cnt)) = (
            p["name"].as_str(),
            p["run_time_ns"].as_u64(),
            p["run_cnt"].as_u64(),
        ) {
            let e = m.entry(name.to_string()).or_insert((0, 0));
            e.0 += ns;
            e.1 += cnt;
        }
    }
    m
}

/// Whether a program (by the name bpftool shows, 15 characters at most) is one of ours.
pub(crate) fn is_ours(name: &str) -> bool {
    [
        "inet_sock_set_s",
        "tcp_send_reset",
        "tcp_receive_res",
        "inet_sk_error_r",
        "mark_victim",
        "signal_generate",
        "sched_process_e",
        "packet_in",
        "packet_out",
        "redis_free_clie",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

pub fn run(bin: &Path, s: Settings, root: &Path) -> Result<String> {
    for tool in [
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "bpftrace",
        "tcplife",
        "tcpstates",
        "bpftool",
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!(
                "{tool} is missing: run `cargo xtask bench`, which installs it (apt-get install redis-tools bpftrace libbpf-tools bpftool)"
            );
        }
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let redis = start_redis()?;
    let port = redis.port;
    let tick = clk_tck();
    let mut samples: BTreeMap<Tracer, Vec<Sample>> = BTreeMap::new();
    let mut kernel_cost: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");

    let persistent_args = [
        "-c".to_string(),
        "50".into(),
        "-n".into(),
        s.persistent_n.to_string(),
        "-t".into(),
        "ping_mbulk,set,get".into(),
    ];
    let churn_args = [
        "-k".to_string(),
        "0".into(),
        "-c".into(),
        "20".into(),
        "-n".into(),
        s.churn_n.to_string(),
        "-t".into(),
        "ping_mbulk".into(),
    ];
    fn as_refs(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    // Warm-up: the first run on a fresh server is slower.
    redis_benchmark(port, &as_refs(&churn_args))?;

    // The main measure: what a capture started in the middle of a storm costs.
    let fresh = crate::bench_fresh::run(bin, s.fresh, port, &dir)?;
    let other = start_redis()?;
    let by_port = crate::bench_fresh::kernel_cost_by_port(
        bin,
        port,
        other.port,
        s.fresh.churn_n,
        s.fresh.min_pairs.min(5),
        &dir,
    )?;
    drop(other);

    for round in 0..if s.attached { s.rounds } else { 0 } {
        // Rotate the order each round so that no configuration always runs first.
        let mut order = Tracer::ALL.to_vec();
        let n = order.len();
        order.rotate_left(round % n);
        for t in order {
            eprintln!("bench: round {}/{}: {}", round + 1, s.rounds, t.name());
            let mut r = start(t, bin, port, &dir)?;
            let persistent = redis_benchmark(port, &as_refs(&persistent_args))?;
            let before_cpu = r.cpu_ticks();
            let before_bpf = (t == Tracer::RedisTrace).then(bpf_prog_stats);
            let churn = redis_benchmark(port, &as_refs(&churn_args))?;
            let after_cpu = r.cpu_ticks();
            if let Some(before) = before_bpf {
                for (name, (ns, cnt)) in bpf_prog_stats() {
                    let (bns, bcnt) = before.get(&name).copied().unwrap_or((0, 0));
                    let e = kernel_cost.entry(name).or_insert((0, 0));
                    e.0 += ns.saturating_sub(bns);
                    e.1 += cnt.saturating_sub(bcnt);
                }
            }
            let cpu_us_per_conn = before_cpu
                .zip(after_cpu)
                .map(|(a, b)| (b - a) as f64 / tick * 1e6 / s.churn_n as f64);
            let peak_rss_kb = r.peak_rss_kb();
            r.stop();
            samples.entry(t).or_default().push(Sample {
                persistent,
                churn: churn.values().next().copied().unwrap_or(0.0),
                cpu_us_per_conn,
                peak_rss_kb,
            });
        }
    }

    // Start to first event, several times each.
    let mut starts: BTreeMap<Tracer, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for _ in 0..s.rounds {
        for t in [
            Tracer::RedisTrace,
            Tracer::RedisTraceNoUprobes,
            Tracer::RedisTraceNoRedis,
            Tracer::Bpftrace,
            Tracer::Tcplife,
            Tracer::Tcpstates,
        ] {
            eprintln!("bench: start latency: {}", t.name());
            starts
                .entry(t)
                .or_default()
                .push(start_latency(t, bin, port, &dir)?);
        }
    }

    // Highest churn: as many connections as the machine makes, all must be recorded.
    eprintln!("bench: loss check at maximum churn");
    let loss_n = s.churn_n * 2;
    let mut r = start(Tracer::RedisTrace, bin, port, &dir)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = info_stat(&redis, "total_connections_received")?;
    // Count only the records of connections made between the two INFO calls.
    std::thread::sleep(Duration::from_millis(100));
    let window_start = SystemTime::now();
    let max_churn = redis_benchmark(
        port,
        &[
            "-k",
            "0",
            "-c",
            "50",
            "-n",
            &loss_n.to_string(),
            "-t",
            "ping_mbulk",
        ],
    )?;
    let window_end = SystemTime::now();
    let after = info_stat(&redis, "total_connections_received")?;
    std::thread::sleep(Duration::from_millis(500));
    r.stop();
    // The INFO call after the run is one more connection of its own.
    let made = after.saturating_sub(before).saturating_sub(1);
    let text = std::fs::read_to_string(&r.out).unwrap_or_default();
    let recorded = text
        .lines()
        .filter(|l| l.contains("\"connection_closed\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
        })
        .filter(|t| *t >= window_start && *t <= window_end)
        .count() as u64;
    let end: serde_json::Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let lost = end["lost_events"].as_u64().unwrap_or(u64::MAX);
    drop(redis);

    // The table.
    let base = samples.get(&Tracer::None).cloned().unwrap_or_default();
    let base_churn = median(base.iter().map(|x| x.churn).collect());
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        out,
        "Machine: {} cores, {cpu}, Linux {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
    );
    let _ = writeln!(out, "### A capture started in the middle of a storm\n");
    out.push_str(&fresh.table);
    let _ = writeln!(out);
    out.push_str(&by_port);
    if s.attached {
        let _ = writeln!(
            out,
            "\n### Long attached (the previous method): {} rounds, medians (min..max). Baseline churn {:.0} conn/s.\n",
            s.rounds, base_churn.0
        );
    }
    if s.attached {
        let _ = writeln!(
            out,
            "| configuration | churn ratio (-k 0) | persistent ratio ping_mbulk / set / get | tracer CPU per connection | peak RSS |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
    }
    for t in Tracer::ALL {
        let Some(v) = samples.get(&t) else { continue };
        let churn = median(v.iter().map(|x| x.churn / base_churn.0).collect());
        let mut pers = Vec::new();
        for test in ["PING_MBULK", "SET", "GET"] {
            let b = median(
                base.iter()
                    .filter_map(|x| x.persistent.get(test).copied())
                    .collect(),
            )
            .0;
            let m = median(
                v.iter()
                    .filter_map(|x| x.persistent.get(test).map(|r| r / b))
                    .collect(),
            );
            pers.push(format!("{:.3}", m.0));
        }
        let cpu = median(v.iter().filter_map(|x| x.cpu_us_per_conn).collect());
        let rss = median(
            v.iter()
                .filter_map(|x| x.peak_rss_kb.map(|k| k as f64 / 1024.0))
                .collect(),
        );
        let _ = writeln!(
            out,
            "| {} | {:.3} ({:.3}..{:.3}) | {} | {} | {} |",
            t.name(),
            churn.0,
            churn.1,
            churn.2,
            pers.join(" / "),
            if cpu.0.is_nan() {
                "—".into()
            } else {
                format!("{:.1} µs ({:.1}..{:.1})", cpu.0, cpu.1, cpu.2)
            },
            if rss.0.is_nan() {
                "—".into()
            } else {
                format!("{:.1} MB", rss.0)
            },
        );
    }
    let _ = writeln!(out, "\n### Start and loss\n");
    let _ = writeln!(
        out,
        "| tracer | start to first event captured | start to first line written |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for (t, v) in &starts {
        let first = median(v.iter().map(|x| x.0).collect());
        let line = median(v.iter().filter_map(|x| x.1).collect());
        let _ = writeln!(
            out,
            "| {} | {:.0} ms ({:.0}..{:.0}) | {} |",
            t.name(),
            first.0,
            first.1,
            first.2,
            if line.0.is_nan() {
                "same".into()
            } else {
                format!("{:.0} ms ({:.0}..{:.0})", line.0, line.1, line.2)
            }
        );
    }
    let _ = writeln!(
        out,
        "\nMaximum churn ({:.0} conn/s, -c 50 -k 0): {made} connections made (INFO total_connections_received), {recorded} connection_closed records, lost events {lost}.",
        max_churn.values().next().copied().unwrap_or(0.0)
    );
    if s.attached {
        let _ = writeln!(
            out,
            "\nIn-kernel cost of redis-trace's programs during its long-attached churn runs (kernel.bpf_stats_enabled):\n"
        );
        let _ = writeln!(out, "| program | runs | ns per run |");
        let _ = writeln!(out, "|---|---|---|");
        for (name, (ns, cnt)) in &kernel_cost {
            if *cnt > 0 && is_ours(name) {
                let _ = writeln!(out, "| {name} | {cnt} | {:.0} |", *ns as f64 / *cnt as f64);
            }
        }
    }
    let _ = writeln!(
        out,
        "\n(The packet programs run for every packet of the host; on the loopback, as here, \
         they leave at their first check.)"
    );
    out.push_str(&crate::bench_packets::run(
        bin,
        s.rounds,
        s.persistent_n / 3,
        &dir,
    )?);
    std::fs::write(dir.join("results.md"), &out)?;
    Ok(out)
}
