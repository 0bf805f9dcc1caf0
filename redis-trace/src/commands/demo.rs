//! `redis-trace demo`: a newcomer's first run. Starts a throwaway redis-server on a free
//! loopback port, captures it, and reproduces common incidents one after the other,
//! each ending in a connection the capture explains. Cleans up everything it started,
//! also on Ctrl-C. All traffic stays on 127.0.0.1 and every step is bounded in time.
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use redis_lab::{MemCgroup, Redis, resp};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps in small steps so that Ctrl-C is noticed.
fn pause(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !interrupted() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn say(msg: &str) {
    eprintln!("\n=== {msg}");
}

/// 128 random bits as hex, from the kernel.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the demo's password")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The demo's redis-server, killed on drop. It is no open door for other local users:
/// it has a random password (in a 0600 config file, not on its command line), and runs
/// as the `redis` user where one exists, from a fresh private directory.
fn start_server(cgroup: Option<&MemCgroup>) -> Result<Redis> {
    let mut options = Redis::options()
        .dir_prefix("redis-trace-demo-redis")
        .bind("127.0.0.1")
        .password(&random_password()?)
        .args(&["--timeout", "2"])
        .args(&["--client-output-buffer-limit", "pubsub 256kb 128kb 10"])
        .stop_when(interrupted);
    // The `redis` user Debian's package makes, if there is one.
    if let Some((uid, gid)) = crate::sources::procinfo::user_ids("redis") {
        options = options.user(uid, gid);
    }
    // Into the memory cgroup at once (root writes it; redis-server may not), before it
    // holds any data worth the name.
    if let Some(cg) = cgroup {
        options = options.cgroup(cg);
    }
    options.start().context("starting the demo's redis-server")
}

pub fn run() -> Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let cgroup = match MemCgroup::new("redis-trace-demo", 64 << 20) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("redis-trace demo: no memory cgroup ({e:#}): the OOM scene will be skipped");
            None
        }
    };
    let server = start_server(cgroup.as_ref())?;
    say(&format!(
        "a throwaway redis-server listens on {} (timeout 2 s, pubsub output buffer limit 256kb)",
        server.addr()
    ));

    // The capture: this very binary, as a child, its timeline on our stdout.
    let exe = std::env::current_exe().context("finding redis-trace's own binary")?;
    // The capture's own private directory (root's), apart from the server's.
    let capture_dir = redis_lab::private_dir("redis-trace-demo-capture")
        .context("creating a private temporary directory")?;
    let json = capture_dir.join("capture.jsonl");
    let mut capture = Command::new(exe)
        .args(["capture", "--port", &server.port.to_string(), "--json"])
        .arg(&json)
        .env("REDISCLI_AUTH", server.password().unwrap_or_default())
        .stdin(Stdio::null())
        .spawn()
        .context("starting the capture")?;
    let end = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&json).is_ok_and(|t| t.contains("capture_started")) {
        if Instant::now() > end || interrupted() || capture.try_wait()?.is_some() {
            let _ = capture.kill();
            bail!("the capture did not start (see its error above)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pause(Duration::from_millis(1200));

    let result = scenes(&server, cgroup.is_some());
    pause(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    let _ = capture.wait();
    if let Ok(text) = std::fs::read_to_string(&json)
        && let Some(last) = text.lines().last()
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(last)
    {
        say("what the capture concluded");
        if let Some(m) = v["by_cause"].as_object() {
            for (cause, n) in m {
                eprintln!("  {n:>3}  {cause}");
            }
        }
        eprintln!("  lost events: {}", v["lost_events"]);
    }
    drop(server);
    drop(cgroup);
    let _ = std::fs::remove_dir_all(&capture_dir);
    if interrupted() {
        eprintln!("redis-trace demo: interrupted; cleaned up");
    }
    result
}

fn scenes(server: &Redis, oom: bool) -> Result<()> {
    let step = |n: u32, what: &str| say(&format!("{n}/5 {what}"));

    step(
        1,
        "idle timeout: a client connects, sends PING, then stays silent past `timeout 2`",
    );
    let mut idle = server.client()?;
    resp::command(&mut idle, &["CLIENT", "SETNAME", "idle-worker"])?;
    resp::command(&mut idle, &["PING"])?;
    redis_lab::wait_closed_or(&mut idle, Duration::from_secs(8), interrupted);
    drop(idle);
    if interrupted() {
        return Ok(());
    }

    step(
        2,
        "a slow pub/sub subscriber: it stops reading while a publisher bursts",
    );
    let mut sub = server.client()?;
    resp::command(&mut sub, &["CLIENT", "SETNAME", "slow-subscriber"])?;
    resp::command(&mut sub, &["SUBSCRIBE", "news"])?;
    let mut publisher = server.client()?;
    let payload = "x".repeat(64 * 1024);
    // Until Redis drops the subscriber (PUBLISH then reaches 0 receivers); the socket
    // buffers absorb a few MB first. Bounded: at most 32 MB.
    for _ in 0..500 {
        match resp::command(&mut publisher, &["PUBLISH", "news", &payload]) {
            Ok(r) if r == ":0" => break,
            Ok(_) if !interrupted() => {}
            _ => break,
        }
    }
    pause(Duration::from_millis(300));
    drop(sub);
    drop(publisher);
    pause(Duration::from_millis(1500));
    if interrupted() {
        return Ok(());
    }

    step(3, "CLIENT KILL: an operator's connection kills a worker's");
    let mut worker = server.client()?;
    resp::command(&mut worker, &["CLIENT", "SETNAME", "worker-7"])?;
    let id = resp::command(&mut worker, &["CLIENT", "ID"])?;
    let id = id.trim_start_matches(':').to_string();
    let mut admin = server.client()?;
    resp::command(&mut admin, &["CLIENT", "SETNAME", "ops-console"])?;
    resp::command(&mut admin, &["CLIENT", "KILL", "ID", &id])?;
    // Stay connected a moment, so that CLIENT LIST shows who ran the kill.
    pause(Duration::from_millis(2500));
    drop(worker);
    drop(admin);
    if interrupted() {
        return Ok(());
    }

    step(4, "a client aborts: close() with SO_LINGER 0 sends a RST");
    let mut abort = server.client()?;
    resp::command(&mut abort, &["PING"])?;
    redis_lab::set_linger_zero(&abort).context("setting SO_LINGER on the aborting client")?;
    drop(abort);
    pause(Duration::from_millis(1500));
    if interrupted() {
        return Ok(());
    }

    if !oom {
        say("5/5 OOM kill: skipped (no memory cgroup on this host)");
        return Ok(());
    }
    step(
        5,
        "OOM kill: Redis, in a 64 MiB memory cgroup, is filled until the kernel kills it",
    );
    let mut filler = server.client()?;
    resp::command(&mut filler, &["CLIENT", "SETNAME", "bulk-loader"])?;
    let value = "v".repeat(1 << 20);
    for i in 0..200 {
        if interrupted()
            || resp::command(&mut filler, &["SET", &format!("key:{i}"), &value]).is_err()
        {
            break;
        }
    }
    Ok(())
}
