//! Socket and directory helpers.
use std::io::{self, Read as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A new private directory `PREFIX-XXXXXX` (mkdtemp: a fresh name, mode 0700), never one
/// that someone else could have made in /tmp beforehand. The caller removes it.
pub fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    private_dir_in(&std::env::temp_dir(), prefix)
}

/// [`private_dir`] in `parent` (a chroot's /tmp, say).
pub(crate) fn private_dir_in(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    // tempfile's default is 0777 less the umask (0755 here), not mkdtemp's 0700.
    Ok(tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)?
        .keep())
}

/// Connects within 5 s; reads and writes then time out after 10 s.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads (and drops) whatever arrives until the peer's FIN (EOF) or RST, at most
/// `limit`; true when the connection was closed. Changes the read timeout.
pub fn wait_closed(s: &mut TcpStream, limit: Duration) -> bool {
    wait_closed_or(s, limit, || false)
}

/// [`wait_closed`], giving up early (false) as soon as `stop` says so (checked every
/// 100 ms): a Ctrl-C, say.
pub fn wait_closed_or(s: &mut TcpStream, limit: Duration, stop: impl Fn() -> bool) -> bool {
    if s.set_read_timeout(Some(Duration::from_millis(100)))
        .is_err()
    {
        // Not a socket we can wait on; do not block for good.
        return false;
    }
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < end && !stop() {
        match s.read(&mut buf) {
            // EOF: the peer's FIN arrived.
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // A reset: gone too.
            Err(_) => return true,
        }
    }
    false
}

/// Sets SO_LINGER {on, 0}: close() then aborts the connection with a RST.
pub fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we hold, with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_private_and_new() {
        use std::os::unix::fs::PermissionsExt as _;
        let a = private_dir("redis-lab-unit").expect("a private dir");
        let b = private_dir("redis-lab-unit").expect("another");
        let mode = std::fs::metadata(&a).expect("stat").permissions().mode() & 0o777;
        let _ = (std::fs::remove_dir(&a), std::fs::remove_dir(&b));
        assert_eq!(mode, 0o700);
        assert_ne!(a, b);
    }
}
