//! Whether a discovered server may be given the operator's Redis password: its owner and
//! its executable's, from /proc and /etc/passwd.
use procfs::process::Process;

/// Users a packaged Redis or Valkey runs as (Debian, RPM and the official images).
const SERVICE_USERS: [&str; 2] = ["redis", "valkey"];

/// Whether the server process `pid` may be given the operator's Redis password when it
/// was only *discovered* (not named with --port or --redis-url): it must run as root or
/// as a Redis service user, from an executable owned by one of those and writable by
/// no one else. Any local user can start a program called `redis-server` on a free
/// port; that one gets no password. Err says why not, for the operator.
pub fn trusted_server(pid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let service_uids = service_uids();
    let trusted_uid = |uid: u32| uid == 0 || service_uids.contains(&uid);
    let status = Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|e| format!("cannot read the owner of pid {pid}: {e}"))?;
    // Real, effective, saved and file-system uid: each must be trusted.
    let uids = [status.ruid, status.euid, status.suid, status.fuid];
    if let Some(uid) = uids.iter().find(|u| !trusted_uid(**u)) {
        return Err(format!(
            "pid {pid} runs as uid {uid}, neither root nor a Redis service user"
        ));
    }
    // The file that runs (/proc/PID/exe resolves to it, even if renamed or deleted).
    let meta = std::fs::metadata(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("cannot stat the executable of pid {pid}: {e}"))?;
    if !trusted_uid(meta.uid()) {
        return Err(format!(
            "the executable of pid {pid} is owned by uid {}, neither root nor a Redis service user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the executable of pid {pid} is writable by other users (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The uids of [`SERVICE_USERS`] in /etc/passwd.
fn service_uids() -> Vec<u32> {
    SERVICE_USERS
        .iter()
        .filter_map(|u| user_ids(u).map(|(uid, _)| uid))
        .collect()
}

/// The uid and gid of user `name` in /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_reads_passwd() {
        assert_eq!(user_ids("root"), Some((0, 0)));
        assert_eq!(user_ids("no-such-user-here"), None);
    }
}
