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
pub fn create_private(path: &Path) -> Result<File> {
    persist(new_private_beside(path)?, path)
}

/// Writes `bytes` to a new 0600 file beside `path` and renames it over `path` once
/// complete: readers never see half a report, and nothing at `path` is followed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
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
