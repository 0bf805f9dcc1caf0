//! `redis-trace demo`: a newcomer's first run. Starts a throwaway redis-server on a free
//! loopback port, captures it, and reproduces common incidents one after the other,
//! each ending in a connection the capture explains. Cleans up everything it started,
//! also on Ctrl-C. All traffic stays on 127.0.0.1 and every step is bounded in time.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

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

/// A memory cgroup for the OOM scene, removed on drop.
struct MemCgroup {
    dir: PathBuf,
    procs: PathBuf,
}

impl MemCgroup {
    fn create(limit: u64) -> Result<Self> {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let name = format!("redis-trace-demo-{}", std::process::id());
        if std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|w| w == "memory")) {
            let dir = Path::new("/sys/fs/cgroup").join(&name);
            std::fs::create_dir(&dir).context("creating a cgroup v2 group")?;
            std::fs::write(dir.join("memory.max"), limit.to_string())?;
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            return Ok(Self {
                procs: dir.join("cgroup.procs"),
                dir,
            });
        }
        let dir = Path::new("/sys/fs/cgroup/memory").join(&name);
        std::fs::create_dir(&dir).context("creating a cgroup v1 memory group")?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        Ok(Self {
            procs: dir.join("cgroup.procs"),
            dir,
        })
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The demo's redis-server, killed on drop. It is no open door for other local users:
/// it has a random password (in a 0600 config file, not on its command line), and runs
/// as the `redis` user where one exists, from a fresh private directory.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    password: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A connection that has authenticated.
    fn client(&self) -> Result<TcpStream> {
        let mut s = connect(self.addr())?;
        let ok = command(&mut s, &["AUTH", &self.password])?;
        if ok != "+OK" {
            bail!("the demo's redis-server refused its password: {ok}");
        }
        Ok(s)
    }
}

/// 128 random bits as hex, from the kernel.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the demo's password")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh private directory (mkdtemp, 0700), never a predictable /tmp path.
fn private_dir(tag: &str) -> Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("redis-trace-demo-{tag}-"))
        .tempdir()
        .context("creating a private temporary directory")?
        .keep())
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Sends one command (RESP array) and reads one reply line.
fn command(s: &mut TcpStream, args: &[&str]) -> Result<String> {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&*s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn wait_eof(s: &mut TcpStream, limit: Duration) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !interrupted() {
        match s.read(&mut buf) {
            // EOF: the server's FIN arrived.
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset: gone too.
            Err(_) => return true,
        }
    }
    false
}

fn start_server(cgroup: Option<&MemCgroup>) -> Result<Server> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = private_dir("redis")?;
    let password = random_password()?;
    // The password goes in a config file only its owner reads: argv shows in `ps`.
    let conf = dir.join("redis.conf");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&conf)
        .and_then(|mut f| writeln!(f, "requirepass {password}"))
        .context("writing the demo's redis.conf")?;
    // The `redis` user Debian's package makes, if there is one.
    let user = crate::sources::procinfo::user_ids("redis");
    if let Some((uid, gid)) = user {
        for p in [&dir, &conf] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the redis user", p.display()))?;
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let mut cmd = Command::new("redis-server");
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let log = dir.join("redis.log");
    cmd.arg(&conf)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--timeout", "2"])
        .args(["--client-output-buffer-limit", "pubsub 256kb 128kb 10"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = cmd.spawn().context(
        "starting redis-server: install it (apt-get install redis-server) or run scripts/setup.sh",
    )?;
    let server = Server {
        child,
        port,
        dir,
        password,
    };
    // Into the memory cgroup at once (root writes it; redis-server may not), before it
    // holds any data worth the name.
    if let Some(cg) = cgroup {
        std::fs::write(&cg.procs, server.child.id().to_string())
            .context("moving the demo's redis-server into its memory cgroup")?;
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = server.client()
            && command(&mut s, &["PING"]).is_ok_and(|r| r == "+PONG")
        {
            return Ok(server);
        }
        if Instant::now() > end || interrupted() {
            bail!("redis-server did not come up on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run() -> Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let cgroup = match MemCgroup::create(64 << 20) {
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
    let capture_dir = private_dir("capture")?;
    let json = capture_dir.join("capture.jsonl");
    let mut capture = Command::new(exe)
        .args(["capture", "--port", &server.port.to_string(), "--json"])
        .arg(&json)
        .env("REDISCLI_AUTH", &server.password)
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

fn scenes(server: &Server, oom: bool) -> Result<()> {
    let step = |n: u32, what: &str| say(&format!("{n}/5 {what}"));

    step(
        1,
        "idle timeout: a client connects, sends PING, then stays silent past `timeout 2`",
    );
    let mut idle = server.client()?;
    command(&mut idle, &["CLIENT", "SETNAME", "idle-worker"])?;
    command(&mut idle, &["PING"])?;
    wait_eof(&mut idle, Duration::from_secs(8));
    drop(idle);
    if interrupted() {
        return Ok(());
    }

    step(
        2,
        "a slow pub/sub subscriber: it stops reading while a publisher bursts",
    );
    let mut sub = server.client()?;
    command(&mut sub, &["CLIENT", "SETNAME", "slow-subscriber"])?;
    command(&mut sub, &["SUBSCRIBE", "news"])?;
    let mut publisher = server.client()?;
    let payload = "x".repeat(64 * 1024);
    // Until Redis drops the subscriber (PUBLISH then reaches 0 receivers); the socket
    // buffers absorb a few MB first. Bounded: at most 32 MB.
    for _ in 0..500 {
        match command(&mut publisher, &["PUBLISH", "news", &payload]) {
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
    command(&mut worker, &["CLIENT", "SETNAME", "worker-7"])?;
    let id = command(&mut worker, &["CLIENT", "ID"])?;
    let id = id.trim_start_matches(':').to_string();
    let mut admin = server.client()?;
    command(&mut admin, &["CLIENT", "SETNAME", "ops-console"])?;
    command(&mut admin, &["CLIENT", "KILL", "ID", &id])?;
    // Stay connected a moment, so that CLIENT LIST shows who ran the kill.
    pause(Duration::from_millis(2500));
    drop(worker);
    drop(admin);
    if interrupted() {
        return Ok(());
    }

    step(4, "a client aborts: close() with SO_LINGER 0 sends a RST");
    let mut abort = server.client()?;
    command(&mut abort, &["PING"])?;
    {
        use std::os::fd::AsRawFd as _;
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
        unsafe {
            libc::setsockopt(
                abort.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
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
    command(&mut filler, &["CLIENT", "SETNAME", "bulk-loader"])?;
    let value = "v".repeat(1 << 20);
    for i in 0..200 {
        if interrupted() || command(&mut filler, &["SET", &format!("key:{i}"), &value]).is_err() {
            break;
        }
    }
    Ok(())
}
