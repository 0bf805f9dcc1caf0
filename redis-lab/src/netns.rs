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

fn ip(args: &[&str]) -> Result<()> {
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
    Ok(())
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
