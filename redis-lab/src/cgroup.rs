//! A memory cgroup of our own, to get a Redis OOM-killed.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

/// The limit of [`MemCgroup::create`]: a Redis filled with 1 MiB SETs runs out after
/// about 60.
pub const MEMCG_LIMIT_BYTES: u64 = 64 << 20;

/// A memory cgroup of our own (v2 when the unified hierarchy at /sys/fs/cgroup has the
/// memory controller, else v1 at /sys/fs/cgroup/memory), limited without swap. Dropping
/// it (also on panic) kills whatever is still in it (only processes its owner put
/// there) and removes it.
pub struct MemCgroup {
    pub dir: PathBuf,
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn lists_memory(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

impl MemCgroup {
    /// A group named `PREFIX-PID-NANOS` limited to `limit` bytes (memory and swap).
    pub fn new(prefix: &str, limit: u64) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{prefix}-{}-{nanos}", std::process::id());
        let v2_root = Path::new("/sys/fs/cgroup");
        if lists_memory(&v2_root.join("cgroup.controllers")) {
            // The children of the root get the memory controller only when the root
            // delegates it.
            let subtree = v2_root.join("cgroup.subtree_control");
            if !lists_memory(&subtree) {
                write_file(&subtree, "+memory")?;
            }
            let cg = Self::make(v2_root.join(&name))?;
            write_file(&cg.dir.join("memory.max"), &limit.to_string())?;
            if cg.dir.join("memory.swap.max").exists() {
                write_file(&cg.dir.join("memory.swap.max"), "0")?;
            }
            return Ok(cg);
        }
        let v1_root = Path::new("/sys/fs/cgroup/memory");
        if !v1_root.join("memory.limit_in_bytes").exists() {
            bail!(
                "no memory cgroup controller: neither {} lists memory nor is v1's mounted at {}",
                v2_root.join("cgroup.controllers").display(),
                v1_root.display()
            );
        }
        let cg = Self::make(v1_root.join(&name))?;
        // memory first: memsw may never be below it.
        write_file(&cg.dir.join("memory.limit_in_bytes"), &limit.to_string())?;
        let memsw = cg.dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write_file(&memsw, &limit.to_string())?;
        }
        // A group whose OOM killer is disabled would hang its tasks instead of killing.
        let oom_control = cg.dir.join("memory.oom_control");
        let ctl = std::fs::read_to_string(&oom_control)
            .with_context(|| format!("reading {}", oom_control.display()))?;
        if ctl.lines().any(|l| l.trim() == "oom_kill_disable 1") {
            write_file(&oom_control, "0")?;
        }
        let ctl = std::fs::read_to_string(&oom_control).unwrap_or_default();
        if !ctl.lines().any(|l| l.trim() == "oom_kill_disable 0") {
            bail!(
                "the OOM killer stays disabled in {}: {ctl}",
                cg.dir.display()
            );
        }
        Ok(cg)
    }

    fn make(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        // Removed on drop from here on, an error below included.
        Ok(Self { dir })
    }

    /// For tests: a `redis-trace-test-*` group of [`MEMCG_LIMIT_BYTES`]. Panics if it
    /// cannot be made.
    pub fn create() -> Self {
        Self::new("redis-trace-test", MEMCG_LIMIT_BYTES).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Its `cgroup.procs`: writing a pid there moves that process in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Moves process `pid` into the group.
    pub fn add(&self, pid: u32) -> Result<()> {
        write_file(&self.procs(), &pid.to_string())
    }

    /// A wrapper for [`crate::RedisOptions::wrapper`] (`sh -c SCRIPT`): the shell moves
    /// itself into the group, then execs `redis-server` (its `$0`) with the arguments
    /// (`$@`), keeping its pid.
    pub fn wrapper_script(&self) -> String {
        format!("echo $$ > {} && exec \"$0\" \"$@\"", self.procs().display())
    }

    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.procs())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // rmdir fails while a process is in it (or until the memcg is released): retry
        // for at most 10 s.
        for _ in 0..500 {
            for pid in self.pids() {
                // SAFETY: kill(2) on a process in our own group (put there by its owner).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}
