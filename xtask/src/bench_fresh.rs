//! The cost an operator meets: a tracer started fresh one second before a burst of short
//! connections (a capture begun in the middle of a reconnect storm), each traced burst
//! paired with an untraced one right before or after it, so that the machine's drift
//! cancels within the pair. Pairs repeat until the noise control (an untraced burst
//! paired with an untraced burst) is tight enough, and every configuration's ratio is the
//! median of its pairs with a distribution-free 95 % confidence interval.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench::{bpf_prog_stats, median};

#[derive(Debug, Clone, Copy)]
pub struct FreshSettings {
    pub min_pairs: usize,
    pub max_pairs: usize,
    /// Connections per burst (one request each).
    pub churn_n: u64,
    /// Stop once the noise control's confidence interval is narrower than this.
    pub target_spread: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Config {
    NoiseControl,
    Floor,
    Tcplife,
    Default,
    Bare,
}

impl Config {
    const ALL: [Config; 5] = [
        Config::NoiseControl,
        Config::Floor,
        Config::Tcplife,
        Config::Default,
        Config::Bare,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::NoiseControl => "no tracer (noise control: untraced against untraced)",
            Config::Floor => "the floor: bpftrace counting the same tracepoints, nothing else",
            Config::Tcplife => "libbpf-tools tcplife",
            Config::Default => "redis-trace capture, as run by default (uprobes, Redis polling)",
            Config::Bare => "redis-trace capture --no-uprobes --no-redis",
        }
    }

    fn is_redis_trace(self) -> bool {
        matches!(self, Config::Default | Config::Bare)
    }
}

/// The floor: the tracepoints redis-trace attaches, each only counted in a map.
fn floor_script() -> &'static str {
    "tracepoint:sock:inet_sock_set_state { @[1] = count(); }\n\
     tracepoint:tcp:tcp_send_reset { @[2] = count(); }\n\
     tracepoint:tcp:tcp_receive_reset { @[3] = count(); }\n\
     tracepoint:sock:inet_sk_error_report { @[4] = count(); }\n\
     tracepoint:sched:sched_process_exit { @[5] = count(); }\n\
     tracepoint:signal:signal_generate { @[6] = count(); }\n\
     tracepoint:oom:mark_victim { @[7] = count(); }\n"
}

fn spawn(c: Config, bin: &Path, port: u16, dir: &Path) -> Result<Option<Child>> {
    let out = dir.join(format!("fresh-{c:?}.out"));
    let file = || std::fs::File::create(&out);
    Ok(match c {
        Config::NoiseControl => None,
        Config::Floor => {
            let script = dir.join("floor.bt");
            std::fs::write(&script, floor_script())?;
            Some(
                Command::new("bpftrace")
                    .arg(&script)
                    .stdout(file()?)
                    .stderr(Stdio::null())
                    .spawn()?,
            )
        }
        Config::Tcplife => Some(
            Command::new("tcplife")
                .args(["-L", &port.to_string()])
                .stdout(file()?)
                .stderr(Stdio::null())
                .spawn()?,
        ),
        Config::Default | Config::Bare => {
            let mut cmd = Command::new(bin);
            cmd.args(["capture", "--quiet", "--port", &port.to_string(), "--json"])
                .arg(&out);
            if c == Config::Bare {
                cmd.args(["--no-uprobes", "--no-redis"]);
            }
            Some(cmd.stdin(Stdio::null()).stderr(Stdio::null()).spawn()?)
        }
    })
}

/// On-CPU time of every thread of a process, in ns (schedstat: exact, unlike ticks).
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let t = t.ok()?;
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// On-CPU ns by thread name.
pub(crate) fn cpu_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return m;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0u64);
        *m.entry(name.trim().to_string()).or_insert(0) += ns;
    }
    m
}

pub(crate) fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn interrupt(mut c: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// What a burst is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A new connection per request: `n` connections.
    Churn(u64),
    /// 50 persistent connections, `n` requests of each of PING, SET and GET.
    Persistent(u64),
}

impl Load {
    /// Connections the burst ends (what the tracer reports).
    fn connections(self) -> u64 {
        match self {
            Load::Churn(n) => n,
            Load::Persistent(_) => 150,
        }
    }
}

/// The burst: requests per second (the mean over the tests of a persistent burst).
fn burst(port: u16, load: Load) -> Result<f64> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"]);
    match load {
        Load::Churn(n) => cmd.args([
            "-k",
            "0",
            "-c",
            "20",
            "-n",
            &n.to_string(),
            "-t",
            "ping_mbulk",
        ]),
        Load::Persistent(n) => {
            cmd.args(["-c", "50", "-n", &n.to_string(), "-t", "ping_mbulk,set,get"])
        }
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .split(['\r', '\n'])
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(_, r)| r.contains("requests per second"))
                .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        })
        .collect();
    if rates.is_empty() {
        bail!("redis-benchmark printed no result: {text}");
    }
    Ok(rates.iter().sum::<f64>() / rates.len() as f64)
}

/// What one traced burst cost and what the tracer saw.
#[derive(Debug, Default, Clone)]
struct Traced {
    rate: f64,
    /// CPU of the tracer's first second (its start-up), ms.
    start_cpu_ms: f64,
    /// CPU from the burst's start until its records were written, per connection, µs.
    cpu_us_per_conn: f64,
    by_thread: BTreeMap<String, u64>,
    peak_rss_kb: u64,
    records: u64,
    lost: Option<u64>,
    kernel: BTreeMap<String, (u64, u64)>,
    /// redis-trace's own account (`capture_ended.tracer_cpu_ms`): ms by stage.
    stages: BTreeMap<String, f64>,
}

/// Lead time between starting the tracer and the burst.
const LEAD: Duration = Duration::from_secs(1);
/// After the burst: the grace period, the poll a Redis-side close waits for, the write.
const DRAIN: Duration = Duration::from_millis(1500);

fn untraced(port: u16, load: Load) -> Result<f64> {
    // The same pacing as a traced run: idle for the lead, then the burst.
    std::thread::sleep(LEAD);
    burst(port, load)
}

fn traced(c: Config, bin: &Path, port: u16, load: Load, dir: &Path) -> Result<Traced> {
    let n = load.connections();
    let started = Instant::now();
    let child = spawn(c, bin, port, dir)?.context("no tracer to start")?;
    let pid = child.id();
    std::thread::sleep(LEAD.saturating_sub(started.elapsed()));
    let cpu0 = cpu_ns(pid).unwrap_or(0);
    let bpf0 = c.is_redis_trace().then(bpf_prog_stats);
    let rate = burst(port, load)?;
    let bpf1 = c.is_redis_trace().then(bpf_prog_stats);
    std::thread::sleep(DRAIN);
    let cpu1 = cpu_ns(pid).unwrap_or(0);
    let by_thread = cpu_by_thread(pid);
    let peak = peak_rss_kb(pid).unwrap_or(0);
    interrupt(child);
    let mut kernel = BTreeMap::new();
    if let (Some(a), Some(b)) = (bpf0, bpf1) {
        for (name, (ns, cnt)) in b {
            let (ans, acnt) = a.get(&name).copied().unwrap_or((0, 0));
            kernel.insert(name, (ns.saturating_sub(ans), cnt.saturating_sub(acnt)));
        }
    }
    let out = dir.join(format!("fresh-{c:?}.out"));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut stages = BTreeMap::new();
    let (records, lost) = if c.is_redis_trace() {
        let records = text.matches("\"type\":\"connection_closed\"").count() as u64;
        let end: serde_json::Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        if let Some(cpu) = end["tracer_cpu_ms"].as_object() {
            for (k, v) in cpu {
                if let Some(ms) = v.as_f64() {
                    stages.insert(k.clone(), ms);
                } else if let Some(threads) = v.as_object() {
                    for (name, ms) in threads {
                        stages.insert(format!("thread {name}"), ms.as_f64().unwrap_or(0.0));
                    }
                }
            }
        }
        (records, end["lost_events"].as_u64())
    } else {
        (text.lines().count() as u64, None)
    };
    // A tracer that saw nothing of the burst measured nothing.
    if c.is_redis_trace() && records < n {
        bail!(
            "{} wrote {records} connection records for a burst of {n}: it was not attached in time",
            c.name()
        );
    }
    if c == Config::Tcplife && records < n / 2 {
        bail!("tcplife printed {records} lines for a burst of {n}");
    }
    Ok(Traced {
        rate,
        start_cpu_ms: (cpu0 as f64) / 1e6,
        cpu_us_per_conn: cpu1.saturating_sub(cpu0) as f64 / 1e3 / n as f64,
        by_thread,
        peak_rss_kb: peak,
        records,
        lost,
        kernel,
        stages,
    })
}

/// The median and a distribution-free ~95 % confidence interval for it (order
/// statistics: with n values, the k-th smallest and k-th largest, k = (n - 1.96 √n) / 2).
pub(crate) fn median_ci(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = s.len() as f64;
    let k = ((n - 1.96 * n.sqrt()) / 2.0).floor().max(0.0) as usize;
    let k = k.min((s.len() - 1) / 2);
    (median(s.clone()).0, s[k], s[s.len() - 1 - k])
}

#[derive(Default)]
struct Results {
    ratios: BTreeMap<Config, Vec<f64>>,
    traced: BTreeMap<Config, Vec<Traced>>,
    baseline: Vec<f64>,
}

pub struct Fresh {
    pub table: String,
}

pub fn run(bin: &Path, s: FreshSettings, port: u16, dir: &Path) -> Result<Fresh> {
    let mut fresh = churn_or_persistent(bin, s, port, dir, Load::Churn(s.churn_n), &Config::ALL)?;
    // Persistent connections: the default capture against the noise control only.
    let persistent = churn_or_persistent(
        bin,
        FreshSettings {
            max_pairs: s.min_pairs,
            ..s
        },
        port,
        dir,
        Load::Persistent(s.churn_n * 3),
        &[Config::NoiseControl, Config::Default],
    )?;
    let _ = writeln!(
        fresh.table,
        "\nPersistent connections (`-c 50 -n {} -t ping_mbulk,set,get`, the mean of the three \
         tests' ratios per pair; a fresh start 1 s before, as above):\n",
        s.churn_n * 3
    );
    let _ = writeln!(
        fresh.table,
        "| configuration | ratio, median (95 % interval) |"
    );
    let _ = writeln!(fresh.table, "|---|---|");
    // The persistent run's first table only (its rows up to the first blank line).
    let rows = persistent
        .table
        .lines()
        .skip_while(|l| !l.starts_with("| configuration"))
        .skip(2)
        .take_while(|l| l.starts_with("| "));
    for line in rows {
        // Only the name and the ratio columns.
        let cols: Vec<&str> = line.split(" | ").collect();
        if cols.len() > 1 {
            let _ = writeln!(fresh.table, "{} | {} |", cols[0], cols[1]);
        }
    }
    Ok(fresh)
}

fn churn_or_persistent(
    bin: &Path,
    s: FreshSettings,
    port: u16,
    dir: &Path,
    load: Load,
    configs: &[Config],
) -> Result<Fresh> {
    let mut r = Results::default();
    let mut pairs = 0;
    let mut spread = f64::INFINITY;
    while pairs < s.max_pairs {
        // Rotate which configuration runs first, and which half of a pair.
        let mut order = configs.to_vec();
        let len = order.len();
        order.rotate_left(pairs % len);
        for c in order {
            eprintln!(
                "bench: fresh start, pair {}/{}..{}: {}",
                pairs + 1,
                s.min_pairs,
                s.max_pairs,
                c.name()
            );
            let traced_first = pairs % 2 == 1;
            let (base, t) = if c == Config::NoiseControl {
                let a = untraced(port, load)?;
                let b = untraced(port, load)?;
                let (base, other) = if traced_first { (b, a) } else { (a, b) };
                (
                    base,
                    Traced {
                        rate: other,
                        ..Traced::default()
                    },
                )
            } else if traced_first {
                let t = traced(c, bin, port, load, dir)?;
                (untraced(port, load)?, t)
            } else {
                let base = untraced(port, load)?;
                (base, traced(c, bin, port, load, dir)?)
            };
            r.baseline.push(base);
            r.ratios.entry(c).or_default().push(t.rate / base);
            r.traced.entry(c).or_default().push(t);
        }
        pairs += 1;
        let noise = median_ci(&r.ratios[&Config::NoiseControl]);
        spread = noise.2 - noise.1;
        eprintln!(
            "bench: after {pairs} pairs the noise control's 95 % interval is {spread:.3} wide"
        );
        if pairs >= s.min_pairs && spread < s.target_spread {
            break;
        }
    }

    let mut out = String::new();
    let base = median(r.baseline.clone());
    let _ = writeln!(
        out,
        "{load:?}: {pairs} pairs per configuration (the noise control's 95 % interval: {spread:.3} wide{}); \
         untraced burst {:.0} requests/s (median; {:.0}..{:.0}).\n",
        if spread < s.target_spread {
            format!(", below the {:.2} asked for", s.target_spread)
        } else {
            format!(
                ", NOT below the {:.2} asked for after the most pairs allowed: read the ratios with that noise",
                s.target_spread
            )
        },
        base.0,
        base.1,
        base.2
    );
    let _ = writeln!(
        out,
        "| configuration (fresh start 1 s before the burst) | churn ratio, median (95 % interval) | tracer CPU per connection | tracer start-up CPU | peak RSS | records / lost |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for &c in configs {
        let Some(v) = r.ratios.get(&c) else { continue };
        let (m, lo, hi) = median_ci(v);
        let t = &r.traced[&c];
        let cpu = median(t.iter().map(|x| x.cpu_us_per_conn).collect());
        let start = median(t.iter().map(|x| x.start_cpu_ms).collect());
        let rss = median(t.iter().map(|x| x.peak_rss_kb as f64 / 1024.0).collect());
        let records = if c.is_redis_trace() {
            let lost: u64 = t.iter().filter_map(|x| x.lost).sum();
            let min = t.iter().map(|x| x.records).min().unwrap_or(0);
            format!("≥ {min} per burst / {lost}")
        } else {
            "—".into()
        };
        let _ = writeln!(
            out,
            "| {} | {m:.3} ({lo:.3}..{hi:.3}) | {} | {} | {} | {records} |",
            c.name(),
            if c == Config::NoiseControl {
                "—".into()
            } else {
                format!("{:.1} µs ({:.1}..{:.1})", cpu.0, cpu.1, cpu.2)
            },
            if c == Config::NoiseControl {
                "—".into()
            } else {
                format!("{:.0} ms", start.0)
            },
            if c == Config::NoiseControl {
                "—".into()
            } else {
                format!("{:.1} MB", rss.0)
            },
        );
    }
    // Where redis-trace's CPU goes, by thread.
    for c in [Config::Default, Config::Bare] {
        let Some(t) = r.traced.get(&c) else { continue };
        let mut names: Vec<&String> = t.iter().flat_map(|x| x.by_thread.keys()).collect();
        names.sort();
        names.dedup();
        let parts: Vec<String> = names
            .iter()
            .map(|n| {
                let ms = median(
                    t.iter()
                        .map(|x| x.by_thread.get(*n).copied().unwrap_or(0) as f64 / 1e6)
                        .collect(),
                );
                format!("{n} {:.0} ms", ms.0)
            })
            .collect();
        let _ = writeln!(
            out,
            "\n{}: CPU by thread over its whole run (start-up, burst, drain; medians): {}.",
            c.name(),
            parts.join(", ")
        );
    }
    // Where redis-trace's CPU goes, by its own account per stage.
    for c in [Config::Default, Config::Bare] {
        let Some(t) = r.traced.get(&c) else { continue };
        let mut names: Vec<&String> = t.iter().flat_map(|x| x.stages.keys()).collect();
        names.sort();
        names.dedup();
        let n = load.connections() as f64;
        let parts: Vec<String> = names
            .iter()
            .map(|name| {
                let per = median(
                    t.iter()
                        .map(|x| x.stages.get(*name).copied().unwrap_or(0.0))
                        .collect(),
                )
                .0;
                if name.as_str() == "start" {
                    format!("start {per:.0} ms")
                } else {
                    format!("{name} {:.2} µs", per * 1e3 / n)
                }
            })
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(
                out,
                "\n{}: its own account (`capture_ended.tracer_cpu_ms`, medians), per connection of the burst: {}.",
                c.name(),
                parts.join(", ")
            );
        }
    }
    // In-kernel cost per program during the traced bursts.
    let _ = writeln!(
        out,
        "\nIn-kernel cost of redis-trace's programs during its bursts (kernel.bpf_stats_enabled; \
         bpf_stats adds its own ~20-40 ns to each run):\n"
    );
    let _ = writeln!(
        out,
        "| configuration | program | runs per burst | ns per run |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for c in [Config::Default, Config::Bare] {
        let Some(t) = r.traced.get(&c) else { continue };
        let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for x in t {
            for (name, (ns, cnt)) in &x.kernel {
                let e = sums.entry(name.as_str()).or_insert((0, 0));
                e.0 += ns;
                e.1 += cnt;
            }
        }
        for (name, (ns, cnt)) in sums {
            if cnt > 0 && crate::bench::is_ours(name) {
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {:.0} |",
                    if c == Config::Default {
                        "default"
                    } else {
                        "--no-uprobes --no-redis"
                    },
                    cnt / t.len() as u64,
                    ns as f64 / cnt as f64
                );
            }
        }
    }
    Ok(Fresh { table: out })
}

/// In-kernel cost per program on the traced port and on another: one capture (as run by
/// default), churn bursts against our server and against a second redis-server on
/// another port, alternating; `kernel.bpf_stats_enabled` deltas per phase.
pub fn kernel_cost_by_port(
    bin: &Path,
    traced_port: u16,
    other_port: u16,
    n: u64,
    rounds: usize,
    dir: &Path,
) -> Result<String> {
    let child = spawn(Config::Default, bin, traced_port, dir)?.context("no capture")?;
    std::thread::sleep(LEAD * 2);
    let mut phases: BTreeMap<(&str, String), Vec<(u64, u64)>> = BTreeMap::new();
    let mut result = Ok(());
    for round in 0..rounds {
        for (what, port) in [("traced port", traced_port), ("other port", other_port)] {
            eprintln!(
                "bench: in-kernel cost, round {}/{rounds}: {what}",
                round + 1
            );
            let a = bpf_prog_stats();
            if let Err(e) = burst(port, Load::Churn(n)) {
                result = Err(e);
                break;
            }
            for (name, (ns, cnt)) in bpf_prog_stats() {
                let (ans, acnt) = a.get(&name).copied().unwrap_or((0, 0));
                if crate::bench::is_ours(&name) {
                    phases
                        .entry((what, name))
                        .or_default()
                        .push((ns.saturating_sub(ans), cnt.saturating_sub(acnt)));
                }
            }
        }
    }
    interrupt(child);
    result?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "In-kernel cost per program, one capture as run by default, {rounds} alternating churn \
         bursts of {n} connections against the traced port and against another redis-server \
         on another port (kernel.bpf_stats_enabled, which adds its own ~20-40 ns to each run; \
         median of the bursts' ns per run, min..max):\n"
    );
    let _ = writeln!(out, "| program | traffic | runs per burst | ns per run |");
    let _ = writeln!(out, "|---|---|---|---|");
    for ((what, name), v) in &phases {
        let runs = median(v.iter().map(|x| x.1 as f64).collect()).0;
        if runs < 1.0 {
            continue;
        }
        let per = median(
            v.iter()
                .filter(|x| x.1 > 0)
                .map(|x| x.0 as f64 / x.1 as f64)
                .collect(),
        );
        let _ = writeln!(
            out,
            "| {name} | {what} | {runs:.0} | {:.0} ({:.0}..{:.0}) |",
            per.0, per.1, per.2
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_narrows_with_more_pairs() {
        let five = [0.97, 0.99, 1.0, 1.01, 1.03];
        let (m, lo, hi) = median_ci(&five);
        assert_eq!((m, lo, hi), (1.0, 0.97, 1.03));
        let twelve: Vec<f64> = (0..12).map(|i| 0.95 + f64::from(i) * 0.01).collect();
        let (_, lo, hi) = median_ci(&twelve);
        // k = (12 - 6.79) / 2 = 2: the third smallest and third largest.
        assert!(
            (lo - 0.97).abs() < 1e-9 && (hi - 1.04).abs() < 1e-9,
            "{lo} {hi}"
        );
    }
}
