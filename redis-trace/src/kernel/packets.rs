//! The packet programs (`packet_in`, `packet_out`: `cgroup_skb` ingress and egress) on
//! the root of the cgroup v2 hierarchy, where they see every local socket's packets.
//!
//! They are attached through a BPF link (every kernel the capture runs on has them,
//! 5.7+): a link is always one attachment among several, as with `BPF_F_ALLOW_MULTI`, so
//! other programs on the root (systemd's IP accounting, ...) keep running, and closing
//! the link (drop) detaches ours. (The kernel refuses any flag on a cgroup link, which
//! is why the mode passed is aya's `Single`: no flags.) Where no cgroup2 hierarchy is mounted (a pure cgroup v1 host), one is mounted
//! at a private directory just long enough to attach: the hierarchy exists in the kernel
//! whether mounted or not, and the links hold on to its root.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use redis_trace_ebpf::PORT_BIT_WORDS;

/// The name under which the packet programs are reported in `probes_attached` and
/// `probes_unavailable`, and left out with `REDIS_TRACE_WITHOUT_PROBES`.
pub const PACKETS_PROBE: &str = "cgroup_skb:packets";

/// What their absence costs.
pub const PACKETS_COST: &str = "a RST from a remote address is not checked against the \
    peer's own packets (TTL, IP ID): it stays `peer_reset`, and no path finding says that \
    a device in the path dropped an idle flow";

/// The bitmap the packet programs filter on: bit `port % 32` of word `port / 32`.
pub fn port_bits(ports: &[u16]) -> Vec<u32> {
    let mut words = vec![0u32; PORT_BIT_WORDS as usize];
    for &p in ports {
        words[usize::from(p) / 32] |= 1 << (p % 32);
    }
    words
}

/// The mount point of the cgroup2 hierarchy's root in this mount namespace, from
/// /proc/self/mountinfo text: a `cgroup2` mount whose root is `/` (a bind mount of a
/// sub-cgroup would see only that subtree).
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    use procfs::FromBufRead as _;
    let infos = procfs::process::MountInfos::from_buf_read(mountinfo.as_bytes()).ok()?;
    infos
        .into_iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == "/")
        .map(|m| m.mount_point)
}

/// A cgroup2 hierarchy mounted by the capture itself: unmounted and removed on drop.
struct OwnMount {
    path: PathBuf,
}

impl Drop for OwnMount {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 on a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn mount_cgroup2(at: &Path) -> Result<OwnMount> {
    std::fs::create_dir(at).with_context(|| format!("creating {}", at.display()))?;
    let guard = OwnMount {
        path: at.to_path_buf(),
    };
    let c = |s: &[u8]| std::ffi::CString::new(s).context("a path with a NUL byte");
    let (src, dst, fstype) = (
        c(b"cgroup2")?,
        c(at.as_os_str().as_encoded_bytes())?,
        c(b"cgroup2")?,
    );
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a cgroup2 hierarchy at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(guard)
}

/// Attaches both programs (the loader filled the port bitmap). `notes` says what was
/// done to the host on the way.
pub fn attach(ebpf: &mut Ebpf, notes: &mut Vec<String>) -> Result<()> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let (root, own) = match cgroup2_root(&mountinfo) {
        Some(r) => (r, None),
        None => {
            let at = PathBuf::from(format!("/run/redis-trace-cgroup2.{}", std::process::id()));
            let m = mount_cgroup2(&at)?;
            notes.push(format!(
                "no cgroup2 hierarchy was mounted: mounted one at {} to attach the packet \
                 programs, and unmounted it",
                at.display()
            ));
            (at, Some(m))
        }
    };
    let dir = std::fs::File::open(&root)
        .with_context(|| format!("opening the cgroup2 root {}", root.display()))?;
    for (name, kind) in [
        ("packet_in", CgroupSkbAttachType::Ingress),
        ("packet_out", CgroupSkbAttachType::Egress),
    ] {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {name} is not a cgroup_skb program"))?;
        prog.load()
            .with_context(|| format!("loading {name} (the kernel's verifier refused it)"))?;
        prog.attach(&dir, kind, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name} to {}", root.display()))?;
    }
    drop(own);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bitmap() {
        let w = port_bits(&[0, 31, 32, 6379, 65535]);
        assert_eq!(w.len(), 2048);
        assert_eq!(w[0], 1 | 1 << 31);
        assert_eq!(w[1], 1);
        assert_eq!(w[6379 / 32], 1 << (6379 % 32));
        assert_eq!(w[2047], 1 << 31);
        assert_eq!(w.iter().map(|x| x.count_ones()).sum::<u32>(), 5);
    }

    #[test]
    fn finds_the_cgroup2_root_on_hybrid_unified_and_v1_hosts() {
        // This project's machine kind: v1 controllers, cgroup2 at .../unified.
        let hybrid = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // Debian 12 and later: the unified hierarchy at /sys/fs/cgroup; a container's
        // bind mount of its own sub-cgroup is not the root.
        let unified = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
99 30 0:26 /system.slice/docker-abc.scope /mnt/cg rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_root(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let sub_only = "99 30 0:26 /kubepods.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(sub_only), None);
        // Pure v1: none, so the capture mounts one.
        let v1 =
            "27 25 0:25 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_root(v1), None);
        assert_eq!(cgroup2_root("garbage"), None);
    }
}
