//! Network namespaces: which one a process or a path is, and entering one on a thread.
//!
//! A namespace is named by its inode number (`ls -i /proc/PID/ns/net`, `ip netns
//! identify`), the same number the kernel programs read from each socket
//! (`net->ns.inum`). It fits in 32 bits: the kernel allocates it as an `unsigned int`.
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, bail};

/// `statfs` magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The network namespace of process `pid`, from the link `/proc/PID/ns/net`
/// (`net:[4026531840]`); `None` when the process is gone or not ours to read.
pub fn netns_of_pid(pid: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    parse_ns_link(link.to_str()?)
}

/// This process's own network namespace.
pub fn own_netns() -> Option<u32> {
    let link = std::fs::read_link("/proc/self/ns/net").ok()?;
    parse_ns_link(link.to_str()?)
}

/// `net:[4026531840]` -> 4026531840.
pub fn parse_ns_link(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The network namespace a path names: `/run/netns/NAME` (as `ip netns add` makes),
/// `/proc/PID/ns/net`, or a container runtime's bind mount of either. Refuses a path
/// that is not a namespace file, with what to give instead.
pub fn netns_of_path(path: &Path) -> anyhow::Result<u32> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a valid fd and a buffer of the right type and size.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), fs.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs of {}", path.display()));
    }
    // SAFETY: fstatfs succeeded, so the struct is initialised.
    let fs = unsafe { fs.assume_init() };
    // `f_type` is an i64 with glibc and an unsigned long with musl (the static build).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let f_type = fs.f_type as i64;
    if f_type != NSFS_MAGIC {
        bail!(
            "{} is not a namespace file; give /run/netns/NAME (ip netns) or /proc/PID/ns/net",
            path.display()
        );
    }
    let ino = file.metadata()?.ino();
    let ns = u32::try_from(ino).with_context(|| format!("namespace inode {ino} out of range"))?;
    // A namespace file of another type (mnt, pid, ...) is nsfs too: check it is a net one.
    // SAFETY: ioctl NS_GET_NSTYPE takes no argument and returns the CLONE_NEW* flag.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind >= 0 && kind != libc::CLONE_NEWNET {
        bail!(
            "{} is a namespace file, but not a network namespace's",
            path.display()
        );
    }
    Ok(ns)
}

/// `_IO(0xb7, 0x3)` (linux/nsfs.h).
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// An open handle on a process's network namespace, taken when the server was found:
/// the namespace stays the same even if the pid is reused.
#[derive(Debug)]
pub struct NetnsHandle {
    file: File,
    pub inode: u32,
    /// Whose namespace it is (for messages).
    pub pid: u32,
}

impl NetnsHandle {
    /// Opens `/proc/PID/ns/net` and checks that it is still namespace `expected`.
    pub fn open(pid: u32, expected: u32) -> anyhow::Result<NetnsHandle> {
        let path = format!("/proc/{pid}/ns/net");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let ino = file.metadata()?.ino();
        if ino != u64::from(expected) {
            bail!("pid {pid} is no longer in network namespace {expected}");
        }
        Ok(NetnsHandle {
            file,
            inode: expected,
            pid,
        })
    }

    /// Moves the calling thread (only it: a network namespace is per thread) into the
    /// namespace. For a thread of its own, such as a Redis poller's.
    pub fn enter_on_this_thread(&self) -> anyhow::Result<()> {
        // SAFETY: a valid namespace fd; CLONE_NEWNET changes only this thread's namespace.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "cannot enter the network namespace {} of pid {}",
                    self.inode, self.pid
                )
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[99999999999]"), None);
        assert_eq!(parse_ns_link("net:[]"), None);
    }

    #[test]
    fn own_namespace_by_pid_and_by_path_agree() {
        let own = own_netns().expect("own namespace");
        assert_eq!(netns_of_pid(std::process::id()), Some(own));
        assert_eq!(
            netns_of_path(Path::new("/proc/self/ns/net")).expect("a netns file"),
            own
        );
        let e = netns_of_path(Path::new("/proc/self/ns/mnt")).expect_err("not a net ns");
        assert!(
            format!("{e:#}").contains("not a network namespace"),
            "{e:#}"
        );
        let e = netns_of_path(Path::new("/etc/hostname")).expect_err("not nsfs");
        assert!(format!("{e:#}").contains("/run/netns/NAME"), "{e:#}");
    }
}
