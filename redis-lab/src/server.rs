//! A throwaway redis-server of our own.
use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{MemCgroup, connect, free_port, private_dir, resp};

type Ready = Box<dyn Fn(&Redis) -> bool>;

/// How to start a [`Redis`]: `Redis::options().port(6390).args(&["--timeout", "2"])
/// .start()?`.
///
/// The server always gets `--port P --bind B --save '' --appendonly no --daemonize no
/// --dir D --logfile D/redis.log`, then the extra arguments (later ones win), where D is
/// a fresh private directory, its working directory too.
pub struct RedisOptions {
    binary: OsString,
    port: Option<u16>,
    bind: String,
    args: Vec<String>,
    wrapper: Vec<String>,
    user: Option<(u32, u32)>,
    password: Option<String>,
    cgroup_procs: Option<PathBuf>,
    dir_prefix: String,
    ready: Option<Ready>,
    ready_limit: Duration,
    stop: Option<Box<dyn Fn() -> bool>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            binary: "redis-server".into(),
            port: None,
            bind: "127.0.0.1 ::1".into(),
            args: Vec::new(),
            wrapper: Vec::new(),
            user: None,
            password: None,
            cgroup_procs: None,
            dir_prefix: "redis-lab".into(),
            ready: None,
            ready_limit: Duration::from_secs(10),
            stop: None,
        }
    }
}

impl RedisOptions {
    /// The server binary (default `redis-server`, found in PATH).
    pub fn binary(mut self, binary: impl Into<OsString>) -> Self {
        self.binary = binary.into();
        self
    }

    /// The port (default: a free loopback port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The addresses to listen on (default `127.0.0.1 ::1`).
    pub fn bind(mut self, bind: &str) -> Self {
        self.bind = bind.into();
        self
    }

    /// Extra arguments, after the defaults: `&["--timeout", "2"]`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// A command that runs the server: `&["ip", "netns", "exec", "NS"]`, or `&["sh",
    /// "-c", script]` (the server binary is then `$0`). It must exec the server, so that
    /// [`Redis::pid`] is the server's. Empty: none.
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs the server (and the wrapper) as this user and group, its directory handed to
    /// them.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Requires this password (`requirepass`, written to a 0600 redis.conf: argv shows
    /// in `ps`). [`Redis::client`] then authenticates.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Moves the server into this memory cgroup as soon as it is started, before it
    /// holds any data.
    pub fn cgroup(mut self, cgroup: &MemCgroup) -> Self {
        self.cgroup_procs = Some(cgroup.procs());
        self
    }

    /// The private directory's name starts with this (default `redis-lab`).
    pub fn dir_prefix(mut self, prefix: &str) -> Self {
        self.dir_prefix = prefix.into();
        self
    }

    /// When the server counts as ready (default: a PING on 127.0.0.1:port answers
    /// +PONG, or -NOAUTH from a server that wants a password; with
    /// [`RedisOptions::password`], AUTH then PING answers +PONG).
    pub fn ready_when(mut self, ready: impl Fn(&Redis) -> bool + 'static) -> Self {
        self.ready = Some(Box::new(ready));
        self
    }

    /// How long to wait for it to be ready (default 10 s).
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_limit = limit;
        self
    }

    /// Gives up waiting (an error) as soon as this says so: a Ctrl-C, say.
    pub fn stop_when(mut self, stop: impl Fn() -> bool + 'static) -> Self {
        self.stop = Some(Box::new(stop));
        self
    }

    /// Starts the server and waits until it is ready. On an error, whatever was started
    /// is killed and removed.
    pub fn start(self) -> Result<Redis> {
        let port = match self.port {
            Some(p) => p,
            None => free_port().context("finding a free port for redis-server")?,
        };
        let dir = private_dir(&self.dir_prefix)
            .context("creating a private directory for redis-server")?;
        let child = match self.spawn(port, &dir) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, dropping `redis` (on an error too) kills it and removes `dir`.
        let mut redis = Redis {
            port,
            child,
            dir,
            password: self.password.clone(),
        };
        if let Some(procs) = &self.cgroup_procs {
            std::fs::write(procs, redis.pid().to_string()).with_context(|| {
                format!("moving redis-server into its cgroup ({})", procs.display())
            })?;
        }
        let deadline = Instant::now() + self.ready_limit;
        loop {
            let ready = match &self.ready {
                Some(f) => f(&redis),
                None => redis.answers_ping(),
            };
            if ready {
                return Ok(redis);
            }
            if let Some(status) = redis.child.try_wait().context("waiting for redis-server")? {
                bail!(
                    "redis-server exited at start ({status}); its log:\n{}",
                    redis.log()
                );
            }
            if self.stop.as_ref().is_some_and(|stop| stop()) {
                bail!("interrupted while waiting for redis-server to start");
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server did not answer PING on port {port} within {:?}",
                    self.ready_limit
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&self, port: u16, dir: &Path) -> Result<Child> {
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::os::unix::process::CommandExt as _;
        let conf = match &self.password {
            Some(pw) => {
                let path = dir.join("redis.conf");
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "requirepass {pw}"))
                    .context("writing redis.conf")?;
                Some(path)
            }
            None => None,
        };
        if let Some((uid, gid)) = self.user {
            for p in std::iter::once(dir).chain(conf.as_deref()) {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to uid {uid}", p.display()))?;
            }
        }
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        // A config file must come first (redis-server's own rule).
        if let Some(c) = &conf {
            cmd.arg(c);
        }
        cmd.args(["--port", &port.to_string(), "--bind", &self.bind])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(&self.args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd.spawn().with_context(|| {
            format!(
                "starting {}: install it (apt-get install redis-server) or run scripts/setup.sh",
                self.binary.to_string_lossy()
            )
        })
    }
}

/// A redis-server of our own, killed and reaped on drop, its directory removed.
pub struct Redis {
    /// The port it listens on (its plain-TCP port, or the TLS one for
    /// [`Redis::start_with_ping`]).
    pub port: u16,
    pub child: Child,
    /// Its private directory (`--dir`, with `redis.log`).
    pub dir: PathBuf,
    password: Option<String>,
}

impl Redis {
    pub fn options() -> RedisOptions {
        RedisOptions::default()
    }

    /// For tests: a loopback redis-server on a free port. Panics if it does not start.
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// For tests: starts redis-server with extra arguments, optionally through a wrapper
    /// command (e.g. one that moves it into a memory cgroup first). Panics if it does
    /// not start.
    pub fn start_with(extra: &[&str], wrapper: Option<&[&str]>) -> Self {
        Self::options()
            .dir_prefix("redis-trace-test")
            .args(extra)
            .wrapper(wrapper.unwrap_or_default())
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// For tests: like [`Redis::start_with`], on `port` (a server's again after it was
    /// stopped). Panics if it does not start.
    pub fn start_on(port: u16, extra: &[&str], wrapper: Option<&[&str]>) -> Self {
        Self::options()
            .dir_prefix("redis-trace-test")
            .port(port)
            .args(extra)
            .wrapper(wrapper.unwrap_or_default())
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// For tests: like [`Redis::start_with`], but ready as soon as it accepts a
    /// connection: no command is sent, so its command statistics (INFO commandstats) show
    /// only what the test runs. Panics if it does not start.
    pub fn start_without_commands(extra: &[&str]) -> Self {
        Self::options()
            .dir_prefix("redis-trace-test")
            .args(extra)
            .ready_when(|r| {
                std::net::TcpStream::connect_timeout(&r.addr(), Duration::from_secs(2)).is_ok()
            })
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// For tests: starts redis-server with `extra` arguments where it listens on `port`
    /// some other way (TLS): ready once `redis-cli -p port CLI_ARGS PING` answers PONG.
    /// Panics if it does not start.
    pub fn start_with_ping(extra: &[&str], port: u16, cli_args: &[&str]) -> Self {
        let cli: Vec<String> = cli_args.iter().map(|s| s.to_string()).collect();
        let mut redis = Self::options()
            .dir_prefix("redis-trace-test")
            .args(extra)
            .ready_when(move |_| {
                Command::new("redis-cli")
                    .args(["-p", &port.to_string()])
                    .args(&cli)
                    .arg("PING")
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
            })
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"));
        redis.port = port;
        redis
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// 127.0.0.1 and its port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The password it requires ([`RedisOptions::password`]).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Its log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A new connection ([`connect`]'s timeouts), authenticated when it has a password.
    pub fn client(&self) -> Result<TcpStream> {
        let addr = self.addr();
        let mut s = connect(addr).with_context(|| format!("connecting to {addr}"))?;
        if let Some(pw) = &self.password {
            let ok = resp::command(&mut s, &["AUTH", pw]).context("AUTH")?;
            if ok != "+OK" {
                bail!("redis-server on {addr} refused its password: {ok}");
            }
        }
        Ok(s)
    }

    /// One command on a new [client](Redis::client): its whole reply, flattened
    /// ([`resp::Reply::flatten`]).
    pub fn call(&self, args: &[&str]) -> Result<String> {
        let mut s = self.client()?;
        // Only the command's name: its arguments may hold a secret.
        let name = args.first().copied().unwrap_or_default();
        resp::command(&mut s, args).with_context(|| format!("redis command {name}"))
    }

    /// Sends one inline command on a fresh connection and returns the first reply line
    /// (with its CRLF). Bounded: 2 s to connect, 5 s to answer.
    pub fn try_command(&self, cmd: &str) -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line)
    }

    /// For tests: [`Redis::try_command`], panicking on an error.
    pub fn command(&self, cmd: &str) -> String {
        self.try_command(cmd)
            .unwrap_or_else(|e| panic!("redis command {cmd:?}: {e}"))
    }

    fn answers_ping(&self) -> bool {
        if self.password.is_some() {
            return self
                .client()
                .and_then(|mut s| Ok(resp::command(&mut s, &["PING"])?))
                .is_ok_and(|r| r == "+PONG");
        }
        self.try_command("PING")
            .is_ok_and(|p| p.starts_with("+PONG") || p.starts_with("-NOAUTH"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
