//! Network namespaces of our own.
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Network namespaces made by [`Netns::add`]: on drop (also on panic), whatever still
/// runs in them (only processes their owner started) is killed and they are deleted,
/// which removes their veths and nftables rules.
#[derive(Default)]
pub struct Netns {
    names: Vec<String>,
}

/// Runs `ip ARGS`; its stdout, or an error with its stderr.
fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

impl Netns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes namespace `name`, its loopback up; returns the name.
    pub fn add(&mut self, name: String) -> Result<String> {
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.names {
            let pids = Command::new("ip")
                .args(["netns", "pids", ns])
                .stdin(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process in a namespace we created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for ns in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (by its name under
/// /var/run/netns): sockets it creates live in `ns`, and stay there when handed back.
/// A panic in `f` is passed on.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path)?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: setns(2) on this thread only, with a netns fd we opened.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Three namespaces of our own in a line, as a client, a router and a Redis host on
/// different networks: `client c0 <-> r0 router r1 <-> s0 redis`, IPv4 and IPv6, the
/// router forwarding both. Packets between client and Redis cross one hop, so the
/// router's own packets arrive with a TTL one higher than the client's.
pub struct Topology {
    /// Deleted on drop (also on panic), with their veths, rules and processes.
    pub netns: Netns,
    pub client: String,
    pub router: String,
    pub redis: String,
}

impl Topology {
    pub const CLIENT_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 214, 1, 1);
    pub const SERVER_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 214, 2, 2);
    pub const CLIENT_V6: std::net::Ipv6Addr =
        std::net::Ipv6Addr::new(0xfd00, 0x214, 1, 0, 0, 0, 0, 1);
    pub const SERVER_V6: std::net::Ipv6Addr =
        std::net::Ipv6Addr::new(0xfd00, 0x214, 2, 0, 0, 0, 0, 2);

    /// Makes the three namespaces, named `PREFIX-client`, `PREFIX-router`, `PREFIX-redis`.
    pub fn new(prefix: &str) -> Result<Self> {
        let mut netns = Netns::new();
        let client = netns.add(format!("{prefix}-client"))?;
        let router = netns.add(format!("{prefix}-router"))?;
        let redis = netns.add(format!("{prefix}-redis"))?;
        ip(&[
            "-n", &client, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns",
            &router,
        ])?;
        ip(&[
            "-n", &router, "link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns",
            &redis,
        ])?;
        for (ns, dev, v4, v6) in [
            (&client, "c0", "10.214.1.1/24", "fd00:214:1::1/64"),
            (&router, "r0", "10.214.1.2/24", "fd00:214:1::2/64"),
            (&router, "r1", "10.214.2.1/24", "fd00:214:2::1/64"),
            (&redis, "s0", "10.214.2.2/24", "fd00:214:2::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev])?;
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for (ns, v4, v6, via4, via6) in [
            (
                &client,
                "10.214.2.0/24",
                "fd00:214:2::/64",
                "10.214.1.2",
                "fd00:214:1::2",
            ),
            (
                &redis,
                "10.214.1.0/24",
                "fd00:214:1::/64",
                "10.214.2.1",
                "fd00:214:2::1",
            ),
        ] {
            ip(&["-n", ns, "route", "add", v4, "via", via4])?;
            ip(&["-n", ns, "-6", "route", "add", v6, "via", via6])?;
        }
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run_in(&router, &["sysctl", "-qw", key])?;
        }
        Ok(Self {
            netns,
            client,
            router,
            redis,
        })
    }

    /// Adds nftables rules in namespace `ns`: each string is one `nft` command line.
    pub fn nft(&self, ns: &str, commands: &[&str]) -> Result<()> {
        for c in commands {
            run_in(ns, &["nft", c])?;
        }
        Ok(())
    }
}

/// Runs a command inside namespace `ns` (`ip netns exec`); its stdout.
pub fn run_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    ip_output(&all)
}
