//! A throwaway redis-server of our own.
use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::net::private_dir_in;
use crate::{Build, MemCgroup, connect, free_port, private_dir, resp};

type Ready = Box<dyn Fn(&Redis) -> bool>;

/// How to start a [`Redis`]: `Redis::options().port(6390).args(&["--timeout", "2"])
/// .start()?`.
///
/// The server always gets `--port P --bind B --save '' --appendonly no --daemonize no
/// --dir D --logfile D/redis.log`, then the extra arguments (later ones win), where D is
/// a fresh private directory, its working directory too.
///
/// Redis 6.0 does not split a quoted multi-word value given as one argument: pass
/// `&["--client-output-buffer-limit", "pubsub", "1mb", "256kb", "1"]`, which every
/// version reads, not `"pubsub 1mb 256kb 1"`.
pub struct RedisOptions {
    binary: OsString,
    /// A chroot for the server ([`RedisOptions::build`]).
    root: Option<PathBuf>,
    /// `LD_LIBRARY_PATH` for the server ([`RedisOptions::build`]).
    lib_path: Option<PathBuf>,
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
            root: None,
            lib_path: None,
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

    /// Runs this build ([`Build`], from `cargo xtask builds`): its binary, chrooted in
    /// its root and with its `LD_LIBRARY_PATH` when it has them. With a root, the
    /// private directory is made under ROOT/tmp, so that [`Redis::dir`] and
    /// [`Redis::log_path`] stay host paths, while the server is given the paths it sees;
    /// it is started as `unshare --mount --propagation private --mount-proc=ROOT/proc
    /// chroot ROOT BINARY ...`, a container's view with its own /proc (both exec:
    /// [`Redis::pid`] is the server's; the /proc mount lives in the server's own mount
    /// namespace and goes with it).
    pub fn build(mut self, build: &Build) -> Self {
        self.binary = build.binary.clone().into();
        self.root = build.root.clone();
        self.lib_path = build.lib_path.clone();
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
    /// them. For a chrooted [`Build`], the wrapper stays root and `chroot --userspec`
    /// changes user.
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
        let dir = self.private_dir()?;
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

    /// A fresh private directory: in the root's /tmp for a chrooted build.
    fn private_dir(&self) -> Result<PathBuf> {
        match &self.root {
            Some(root) => private_dir_in(&root.join("tmp"), &self.dir_prefix).with_context(|| {
                format!(
                    "creating a private directory for redis-server in {}/tmp",
                    root.display()
                )
            }),
            None => private_dir(&self.dir_prefix)
                .context("creating a private directory for redis-server"),
        }
    }

    /// A host path as the server sees it: relative to its root, if any.
    fn server_path(&self, host: &Path) -> PathBuf {
        match &self.root {
            Some(root) => match host.strip_prefix(root) {
                Ok(rel) => Path::new("/").join(rel),
                Err(_) => host.to_path_buf(),
            },
            None => host.to_path_buf(),
        }
    }

    fn spawn(&self, port: u16, dir: &Path) -> Result<Child> {
        let mut cmd = self.command(port, dir)?;
        cmd.spawn().with_context(|| match &self.root {
            Some(root) => format!(
                "starting chroot {} {}: is the build there (cargo xtask builds)?",
                root.display(),
                self.binary.to_string_lossy()
            ),
            None => format!(
                "starting {}: install it (apt-get install redis-server) or run scripts/setup.sh",
                self.binary.to_string_lossy()
            ),
        })
    }

    /// The server's command line (writing its config file first, when it needs one).
    fn command(&self, port: u16, dir: &Path) -> Result<Command> {
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
        let mut launcher: Vec<OsString> = self.wrapper.iter().map(OsString::from).collect();
        if let Some(root) = &self.root {
            // A /proc of its own inside the root, in a mount namespace of its own (gone
            // with the server): without it INFO says used_memory_rss:0.
            let mut proc_at = OsString::from("--mount-proc=");
            proc_at.push(root.join("proc"));
            launcher.extend(["unshare", "--mount", "--propagation", "private"].map(OsString::from));
            launcher.push(proc_at);
            launcher.push("chroot".into());
            // chroot(2) needs root: chroot itself changes to the user afterwards.
            if let Some((uid, gid)) = self.user {
                launcher.push(format!("--userspec={uid}:{gid}").into());
            }
            launcher.push(root.into());
        }
        let mut cmd = match launcher.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        if let Some(lib) = &self.lib_path {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        if let (Some((uid, gid)), None) = (self.user, &self.root) {
            cmd.uid(uid).gid(gid);
        }
        // A config file must come first (redis-server's own rule).
        if let Some(c) = &conf {
            cmd.arg(self.server_path(c));
        }
        cmd.args(["--port", &port.to_string(), "--bind", &self.bind])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.server_path(dir))
            .arg("--logfile")
            .arg(self.server_path(&dir.join("redis.log")))
            .args(&self.args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Ok(cmd)
    }
}

/// A redis-server of our own, killed and reaped on drop, its directory removed.
pub struct Redis {
    /// The port it listens on (its plain-TCP port, or the TLS one for
    /// [`Redis::start_with_ping`]).
    pub port: u16,
    pub child: Child,
    /// Its private directory (`--dir`, with `redis.log`), as a host path: under the
    /// root for a chrooted [`Build`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerKind;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn build(root: Option<&Path>, lib_path: Option<&str>) -> Build {
        Build {
            name: "valkey-8.1.1".into(),
            server: ServerKind::Valkey,
            version: "8.1.1".into(),
            binary: "/usr/bin/valkey-server".into(),
            root: root.map(Path::to_path_buf),
            lib_path: lib_path.map(PathBuf::from),
            source: "test".into(),
        }
    }

    #[test]
    fn rooted_build_runs_chrooted_with_root_relative_paths() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        let opts = Redis::options()
            .build(&build(Some(root.path()), None))
            .password("pw")
            .args(&["--timeout", "2"]);
        let dir = opts.private_dir().unwrap();
        assert!(
            dir.starts_with(root.path().join("tmp")),
            "{}",
            dir.display()
        );
        let cmd = opts.command(6400, &dir).unwrap();
        let inner = Path::new("/tmp").join(dir.file_name().unwrap());
        let inner = inner.to_string_lossy();
        assert_eq!(cmd.get_program(), "unshare");
        let a = args(&cmd);
        let r = root.path().to_string_lossy();
        let proc_at = format!("--mount-proc={r}/proc");
        assert_eq!(
            a[..7],
            [
                "--mount",
                "--propagation",
                "private",
                &proc_at,
                "chroot",
                &r,
                "/usr/bin/valkey-server"
            ]
        );
        assert_eq!(a[7], format!("{inner}/redis.conf"));
        let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone());
        assert_eq!(at("--dir").unwrap(), inner);
        assert_eq!(at("--logfile").unwrap(), format!("{inner}/redis.log"));
        assert_eq!(at("--port").unwrap(), "6400");
        assert_eq!(a[a.len() - 2..], ["--timeout", "2"]);
        // The conf file is written where the host sees it.
        assert!(dir.join("redis.conf").is_file());
        assert!(cmd.get_envs().all(|(k, _)| k != "LD_LIBRARY_PATH"));
    }

    #[test]
    fn rooted_build_changes_user_inside_chroot() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        let opts = Redis::options()
            .build(&build(Some(root.path()), None))
            .user(65534, 65534);
        let dir = opts.private_dir().unwrap();
        // Only root may hand the directory over; the argv is what is checked here.
        let Ok(cmd) = opts.command(6400, &dir) else {
            return;
        };
        let a = args(&cmd);
        assert_eq!(cmd.get_program(), "unshare");
        assert_eq!(
            a[4..7],
            [
                "chroot",
                "--userspec=65534:65534",
                &root.path().to_string_lossy()
            ]
        );
    }

    #[test]
    fn wrapper_comes_before_chroot() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        let opts = Redis::options()
            .build(&build(Some(root.path()), None))
            .wrapper(&["ip", "netns", "exec", "ns1"]);
        let dir = opts.private_dir().unwrap();
        let cmd = opts.command(6400, &dir).unwrap();
        assert_eq!(cmd.get_program(), "ip");
        let a = args(&cmd);
        assert_eq!(a[..4], ["netns", "exec", "ns1", "unshare"]);
        assert_eq!(a[8..10], ["chroot", &root.path().to_string_lossy()]);
        assert_eq!(a[10], "/usr/bin/valkey-server");
    }

    #[test]
    fn lib_path_is_set_for_the_child_only() {
        let opts = Redis::options().build(&build(None, Some("/b/lib")));
        let dir = opts.private_dir().unwrap();
        let cmd = opts.command(6400, &dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cmd.get_program(), "/usr/bin/valkey-server");
        let env: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            env,
            [(
                std::ffi::OsStr::new("LD_LIBRARY_PATH"),
                Some(std::ffi::OsStr::new("/b/lib"))
            )]
        );
        let a = args(&cmd);
        let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone());
        assert_eq!(at("--dir").unwrap(), dir.to_string_lossy());
    }

    #[test]
    fn default_build_is_unchanged() {
        let opts = Redis::options();
        let dir = opts.private_dir().unwrap();
        let cmd = opts.command(6400, &dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cmd.get_program(), "redis-server");
        let d = dir.to_string_lossy().into_owned();
        let log = format!("{d}/redis.log");
        assert_eq!(
            args(&cmd),
            [
                "--port",
                "6400",
                "--bind",
                "127.0.0.1 ::1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                &d,
                "--logfile",
                &log,
            ]
        );
        assert_eq!(cmd.get_envs().count(), 0);
    }
}
