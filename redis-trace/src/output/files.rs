//! Output files, created safely on a shared host: owner-only, never through a symlink.
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Creates an output file readable by its owner only (captures hold client addresses and
/// process names), safely on a shared host: a new file is made with `O_CREAT|O_EXCL`
/// (which never follows a symlink) and mode 0600 in the target's directory, then renamed
/// over `path`. Whatever was at `path` (a symlink planted by another user, a file they
/// own) is replaced, never followed, truncated or reused.
///
/// A character device at `path` (`/dev/null`, a terminal) is written to as it is: it is
/// not a file to replace. A FIFO, socket, block device or directory is refused.
pub fn create_private(path: &Path) -> Result<File> {
    if let Some(device) = existing_device(path)? {
        return Ok(device);
    }
    persist(new_private_beside(path)?, path)
}

/// What is at `path` when it is not a file to replace: a character device (`/dev/null`, a
/// terminal), or, in a directory only root or we can write to, a FIFO or a symlink such
/// as `/dev/stdout` (followed: it is not another user's plant). Opened for writing as it
/// is, never created or truncated. `None` when `path` is absent, a regular file, or a
/// symlink in a directory others may write to (those are replaced). Anything else there
/// is an error.
fn existing_device(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    let kind = meta.file_type();
    let trusted = trusted_dir(path);
    // A symlink is followed only where no one else can have planted it and it leads to a
    // device or FIFO (`/dev/stdout` to a pipe or terminal), or in /dev and /proc, which
    // must never be written over (`/dev/stdout` to a redirected file). Elsewhere it is
    // replaced.
    let follow_link = kind.is_symlink()
        && (system_dir(path)
            || (trusted
                && std::fs::metadata(path)
                    .is_ok_and(|m| m.file_type().is_char_device() || m.file_type().is_fifo())));
    let what = if kind.is_file() || (kind.is_symlink() && !follow_link) {
        return Ok(None);
    } else if kind.is_char_device() || follow_link || (kind.is_fifo() && trusted) {
        let follow = if follow_link { 0 } else { libc::O_NOFOLLOW };
        // O_NONBLOCK: a FIFO without a reader fails at once instead of hanging.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(follow | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let now = file.metadata()?.file_type();
        if now.is_char_device() || now.is_fifo() || (follow_link && now.is_file()) {
            use std::os::fd::AsRawFd as _;
            // SAFETY: fcntl on an fd we own; clears O_NONBLOCK for ordinary writes.
            unsafe {
                let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                }
            }
            return Ok(Some(file));
        }
        "not a device, FIFO or file"
    } else if kind.is_fifo() {
        "a FIFO in a directory other users may write to"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    anyhow::bail!(
        "not writing {}: it is {what}; give the path of a file, or - for stdout",
        path.display()
    )
}

/// Whether `path` is in /dev or /proc: the system's, never to be replaced.
fn system_dir(path: &Path) -> bool {
    path.parent()
        .is_some_and(|d| d.starts_with("/dev") || d.starts_with("/proc"))
}

/// Whether `path`'s directory can be written only by root or by us: what is in it was
/// not planted by another user.
fn trusted_dir(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(dir).is_ok_and(|m| (m.uid() == 0 || m.uid() == me) && m.mode() & 0o022 == 0)
}

/// Writes `bytes` to a new 0600 file beside `path` and renames it over `path` once
/// complete: readers never see half a report, and nothing at `path` is followed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(mut device) = existing_device(path)? {
        return device
            .write_all(bytes)
            .with_context(|| format!("writing {}", path.display()));
    }
    let mut tmp = new_private_beside(path)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    persist(tmp, path).map(drop)?;
    Ok(())
}

/// Renames the private temporary file over `path`.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<File> {
    tmp.persist(path).map_err(|e| {
        anyhow::Error::new(e.error).context(format!(
            "cannot write {}: choose a path in a writable directory (not a directory's name)",
            path.display()
        ))
    })
}

/// A new, empty 0600 file in `path`'s directory, removed again if it is not persisted.
fn new_private_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {}: choose a path in a writable directory",
                path.display()
            )
        })?;
    // The umask cannot widen 0600, but make sure of the mode whatever it is.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    #[test]
    fn a_character_device_is_written_to_not_replaced() {
        let null = Path::new("/dev/null");
        let mut f = create_private(null).expect("/dev/null opens");
        f.write_all(b"{}\n").expect("writes");
        write_private(null, b"report").expect("writes");
        let kind = std::fs::symlink_metadata(null).expect("stat").file_type();
        assert!(kind.is_char_device(), "/dev/null must stay the device");
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_and_left_as_it_was() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // In a directory other users may write to (as /tmp), a FIFO may be a plant.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("mode");
        let fifo = shared.join("out.jsonl");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = create_private(&fifo).expect_err("a FIFO is refused");
        assert!(format!("{e:#}").contains("a FIFO"), "{e:#}");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .expect("stat")
                .file_type()
                .is_fifo()
        );
        let e = write_private(dir.path(), b"x").expect_err("a directory is refused");
        assert!(format!("{e:#}").contains("directory"), "{e:#}");
    }

    #[test]
    fn a_symlink_in_a_shared_directory_is_replaced_and_in_a_private_one_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("target");
        // A directory other users may write to (as /tmp): the link is replaced.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("mode");
        let link = shared.join("out");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        write_private(&link, b"new").expect("written");
        assert!(std::fs::symlink_metadata(&link).expect("stat").is_file());
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep");
        // A private directory: a link to a file is still replaced, one to a device
        // followed.
        let private = dir.path().join("private");
        std::fs::create_dir(&private).expect("dir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let to_file = private.join("out");
        std::os::unix::fs::symlink(&target, &to_file).expect("link");
        write_private(&to_file, b"new").expect("written");
        assert!(std::fs::symlink_metadata(&to_file).expect("stat").is_file());
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep");
        let null = private.join("null");
        std::os::unix::fs::symlink("/dev/null", &null).expect("link");
        create_private(&null)
            .expect("opens")
            .write_all(b"x")
            .expect("writes");
        assert!(
            std::fs::symlink_metadata(&null)
                .expect("stat")
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::symlink_metadata("/dev/null")
                .expect("stat")
                .file_type()
                .is_char_device()
        );
        // /dev/stdout (a symlink in /dev) is written through, never replaced.
        create_private(Path::new("/dev/stdout")).expect("opens");
        assert!(
            std::fs::symlink_metadata("/dev/stdout")
                .expect("stat")
                .file_type()
                .is_symlink()
        );
    }
}
