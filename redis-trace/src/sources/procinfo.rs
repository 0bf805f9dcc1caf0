//! Who owns which TCP socket: Redis listeners, pre-existing connections and process names,
//! read from /proc.
//!
//! The socket tables (/proc/net/tcp, /proc/net/tcp6) give each socket an inode number but no
//! process; the owner is found by reading the `/proc/<pid>/fd/*` links, which point to
//! `socket:[<inode>]`. Every public function reads the tables first, so that the fd scan only
//! has to remember the inodes it cares about, and then scans the fd directories once.
//!
//! /proc is a moving target: processes exit, fds close and pids are reused while we read.
//! Anything that fails for a single process or fd (gone, zombie, not ours to read) is skipped;
//! only a failure to read the socket tables themselves is an error.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::Process;

/// Process names whose servers are discovered and whose process events are reported.
pub const SERVER_NAMES: [&str; 2] = ["redis-server", "valkey-server"];

/// A process as seen in /proc at the time of the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The kernel's task name (/proc/<pid>/stat), at most 15 bytes.
    pub comm: String,
    /// The executable, when we may read /proc/<pid>/exe (not for kernel threads, nor for
    /// other users' processes when unprivileged).
    pub exe: Option<PathBuf>,
    /// The argument vector; empty for zombies and kernel threads. Servers that rewrite their
    /// process title (redis-server does) show the rewritten text here.
    pub cmdline: Vec<String>,
    /// Start time in clock ticks since boot; together with `pid` it identifies a process
    /// even if the pid is reused later.
    pub start_time_ticks: u64,
}

/// A TCP socket in LISTEN state (IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// `None` when no owner was found: the process is not ours to inspect, or exited meanwhile.
    pub process: Option<ProcessInfo>,
}

/// A non-listening TCP socket and the process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOwner {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub process: ProcessInfo,
}

/// TCP sockets in LISTEN state in the current network namespace, from /proc/net/tcp and
/// /proc/net/tcp6, each with the process that owns it (socket inode -> pid via
/// /proc/<pid>/fd/* links "socket:[inode]"), when found.
///
/// Sorted by port, then address.
pub fn tcp_listeners() -> anyhow::Result<Vec<Listener>> {
    let listening: Vec<TcpSocket> = tcp_sockets()?.into_iter().filter(|s| s.listening).collect();
    let wanted: HashSet<u64> = listening.iter().map(|s| s.inode).collect();
    let owners = socket_owners(&wanted, &all_pids()?);

    let mut infos = InfoCache::default();
    let mut listeners: Vec<Listener> = listening
        .iter()
        .map(|s| Listener {
            addr: s.local,
            process: owners
                .get(&s.inode)
                .and_then(|pids| pick_owner(pids, |pid| infos.get(pid))),
        })
        .collect();
    listeners.sort_by_key(|l| (l.addr.port(), l.addr));
    Ok(listeners)
}

/// The ports that running Redis-like servers listen on: processes whose comm (or argv[0]
/// basename) is one of `names` (e.g. ["redis-server", "valkey-server"]). Returns
/// (port, process) pairs, deduplicated by port, sorted by port.
///
/// A server listening on both 0.0.0.0 and [::] on one port yields one pair. If several
/// matching processes hold listeners on one port (SO_REUSEPORT, or a forked child that
/// inherited the socket), the earliest started one is reported.
pub fn redis_ports(names: &[&str]) -> anyhow::Result<Vec<(u16, ProcessInfo)>> {
    let servers: HashMap<u32, ProcessInfo> = processes_named(names)?
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
    if servers.is_empty() {
        return Ok(Vec::new());
    }

    let listening: Vec<TcpSocket> = tcp_sockets()?.into_iter().filter(|s| s.listening).collect();
    let wanted: HashSet<u64> = listening.iter().map(|s| s.inode).collect();
    // Only the servers' fd tables matter here, which is much cheaper than scanning every
    // process on the host.
    let pids: Vec<u32> = servers.keys().copied().collect();
    let owners = socket_owners(&wanted, &pids);

    let mut by_port: HashMap<u16, ProcessInfo> = HashMap::new();
    for socket in &listening {
        let Some(owner) = owners
            .get(&socket.inode)
            .and_then(|pids| pick_owner(pids, |pid| servers.get(&pid).cloned()))
        else {
            continue;
        };
        let port = socket.local.port();
        match by_port.get(&port) {
            Some(known) if start_order(known) <= start_order(&owner) => {}
            _ => {
                by_port.insert(port, owner);
            }
        }
    }

    let mut ports: Vec<(u16, ProcessInfo)> = by_port.into_iter().collect();
    ports.sort_by_key(|(port, _)| *port);
    Ok(ports)
}

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

/// Processes by name (same matching as [`redis_ports`]), for the pids to watch. Sorted by pid.
pub fn processes_named(names: &[&str]) -> anyhow::Result<Vec<ProcessInfo>> {
    Ok(all_pids()?
        .into_iter()
        .filter_map(read_process_info)
        .filter(|p| name_matches(p, names))
        .collect())
}

/// Established (and other non-LISTEN) TCP sockets with local or remote port in `ports`, with
/// their owning process, for connections already open when a capture starts.
///
/// Sockets without an owner are left out: TIME_WAIT sockets and connections still in a
/// listen queue (not accepted yet) have no file, and other users' processes may be
/// unreadable. Sorted by local then remote address.
pub fn connection_owners(ports: &[u16]) -> anyhow::Result<Vec<ConnOwner>> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let conns: Vec<TcpSocket> = tcp_sockets()?
        .into_iter()
        .filter(|s| {
            !s.listening && (ports.contains(&s.local.port()) || ports.contains(&s.remote.port()))
        })
        .collect();
    if conns.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u64> = conns.iter().map(|s| s.inode).collect();
    let owners = socket_owners(&wanted, &all_pids()?);

    let mut infos = InfoCache::default();
    let mut result: Vec<ConnOwner> = conns
        .iter()
        .filter_map(|s| {
            let pids = owners.get(&s.inode)?;
            let process = pick_owner(pids, |pid| infos.get(pid))?;
            Some(ConnOwner {
                local: s.local,
                remote: s.remote,
                process,
            })
        })
        .collect();
    result.sort_by_key(|c| (c.local, c.remote));
    Ok(result)
}

/// Escapes a process or client name for printing to a terminal: control chars (incl. ESC,
/// \r, \n, DEL, C1 controls) become \x1b-style escapes; backslash becomes \\; printable
/// Unicode stays.
///
/// Names come from other processes or from the network, so they must not be able to move
/// the cursor, rewrite earlier lines or change the terminal's state. For the same reason the
/// invisible bidirectional-text and line-separator characters, which can make a name display
/// as something else, become `\u{202e}`-style escapes.
pub fn escape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            // Unicode's control characters are exactly C0, DEL and C1: all below 0x100.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else if is_invisible_reordering(c) {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Format characters that reorder or break the displayed text (Trojan Source, CVE-2021-42574):
/// the Arabic letter mark, the left-to-right and right-to-left marks, the line and paragraph
/// separators, the bidi embeddings and overrides, and the bidi isolates.
fn is_invisible_reordering(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// The part of a /proc/net/tcp{,6} row that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub listening: bool,
    /// 0 when no file refers to the socket (TIME_WAIT, not yet accepted).
    pub inode: u64,
}

impl From<TcpNetEntry> for TcpSocket {
    fn from(e: TcpNetEntry) -> Self {
        TcpSocket {
            local: canonical(e.local_address),
            remote: canonical(e.remote_address),
            listening: matches!(e.state, TcpState::Listen),
            inode: e.inode,
        }
    }
}

/// Parses the text of /proc/net/tcp or /proc/net/tcp6: a header line, then one row per
/// socket (procfs's parser, with this host's byte order). A row that does not parse is an
/// error for the whole table, as it is for procfs.
pub fn parse_tcp_rows(text: &str) -> anyhow::Result<Vec<TcpSocket>> {
    use procfs::FromBufReadSI as _;
    let entries =
        procfs::net::TcpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info())?;
    Ok(entries.0.into_iter().map(TcpSocket::from).collect())
}

/// Both socket tables of the current network namespace.
fn tcp_sockets() -> anyhow::Result<Vec<TcpSocket>> {
    let text = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let mut sockets = parse_tcp_rows(&text).context("parsing /proc/net/tcp")?;
    match std::fs::read_to_string("/proc/net/tcp6") {
        Ok(text) => sockets.extend(parse_tcp_rows(&text).context("parsing /proc/net/tcp6")?),
        // The table does not exist when IPv6 is disabled on the host.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("reading /proc/net/tcp6"),
    }
    Ok(sockets)
}

/// IPv4 peers of a dual-stack IPv6 socket appear in tcp6 as ::ffff:a.b.c.d; report them as
/// the IPv4 addresses they are, so that one peer always has one spelling.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Pids of all processes (thread-group leaders; threads share their leader's fd table).
fn all_pids() -> anyhow::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .context("listing /proc")?
        // An entry that fails to read is a process that just exited.
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The pids holding each socket in `wanted`, from one pass over /proc/<pid>/fd for `pids`.
///
/// A socket can have several owners (inherited across fork, or passed over a unix socket).
fn socket_owners(wanted: &HashSet<u64>, pids: &[u32]) -> HashMap<u64, Vec<u32>> {
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    for &pid in pids {
        // Fails for exited processes and, when unprivileged, for other users' processes.
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // Fails when the fd was closed since the directory was listed.
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target) else {
                continue;
            };
            if wanted.contains(&inode) {
                let pids = owners.entry(inode).or_default();
                // The same socket on several fds (dup) of one process counts once.
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// The inode of a `/proc/<pid>/fd/<n>` link target of the form `socket:[12345]`.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Reads what we report about a process; `None` if it is gone or unreadable.
fn read_process_info(pid: u32) -> Option<ProcessInfo> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    // Read by hand rather than with procfs: its reader rejects non-UTF-8 arguments, and
    // one odd byte should not hide a process's command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| split_cmdline(&raw))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        comm: stat.comm,
        exe: process.exe().ok(),
        cmdline,
        start_time_ticks: stat.starttime,
    })
}

/// Splits the raw bytes of /proc/<pid>/cmdline (NUL-terminated arguments) into arguments.
///
/// Trailing NULs are dropped: a process that rewrote its title (redis-server) pads the old
/// argument area with them. This also drops genuinely empty trailing arguments, which cannot
/// be told apart; empty arguments elsewhere (`--save ''`) are kept.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Vec::new();
    }
    raw[..end]
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Process info looked up at most once per pid within one call.
#[derive(Default)]
struct InfoCache(HashMap<u32, Option<ProcessInfo>>);

impl InfoCache {
    fn get(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.0
            .entry(pid)
            .or_insert_with(|| read_process_info(pid))
            .clone()
    }
}

/// Of the processes sharing a socket, the one started first: usually the one that created
/// it, with the others being children that inherited it across fork.
fn pick_owner(
    pids: &[u32],
    mut info: impl FnMut(u32) -> Option<ProcessInfo>,
) -> Option<ProcessInfo> {
    pids.iter()
        .filter_map(|&pid| info(pid))
        .min_by_key(start_order)
}

fn start_order(p: &ProcessInfo) -> (u64, u32) {
    (p.start_time_ticks, p.pid)
}

/// The kernel keeps at most this many bytes of a task name (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// Whether the process is called one of `names`, by comm or by argv[0].
fn name_matches(p: &ProcessInfo, names: &[&str]) -> bool {
    let argv0 = p.cmdline.first().map(String::as_str).unwrap_or("");
    names
        .iter()
        .any(|name| comm_matches(&p.comm, name) || argv0_matches(argv0, name))
}

/// comm is truncated to 15 bytes, so a longer name matches its first 15 bytes.
fn comm_matches(comm: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    comm == name
        || (name.len() > COMM_MAX && Some(comm.as_bytes()) == name.as_bytes().get(..COMM_MAX))
}

/// argv[0] may be a path, and servers that set their title put more after a space
/// ("redis-server *:6379", "/usr/bin/redis-server 127.0.0.1:6379"). Split at the first space
/// before taking the basename, since the text after it can contain slashes (a unix socket
/// path); the whole argv[0] is tried too, for a path that itself contains a space.
fn argv0_matches(argv0: &str, name: &str) -> bool {
    if name.is_empty() || argv0.is_empty() {
        return false;
    }
    let program = argv0.split(' ').next().unwrap_or(argv0);
    basename(program) == name || basename(argv0) == name
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_reads_passwd() {
        assert_eq!(user_ids("root"), Some((0, 0)));
        assert_eq!(user_ids("no-such-user-here"), None);
    }
    use std::io::{Read as _, Write as _};
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn info(comm: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: comm.to_string(),
            exe: None,
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            start_time_ticks: 0,
        }
    }

    const REDIS: &[&str] = &["redis-server", "valkey-server"];

    #[test]
    fn escape_name_escapes_terminal_controls() {
        assert_eq!(escape_name("\x1b[2Jevil"), "\\x1b[2Jevil");
        assert_eq!(escape_name("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
        assert_eq!(escape_name("\0\x7f\u{9b}31m"), "\\x00\\x7f\\x9b31m");
        assert_eq!(escape_name("back\\slash"), "back\\\\slash");
        // An escaped name cannot be confused with one that literally contains "\x1b".
        assert_ne!(escape_name("\x1b"), escape_name("\\x1b"));
    }

    #[test]
    fn escape_name_keeps_printable_unicode() {
        assert_eq!(escape_name("redis-server *:6379"), "redis-server *:6379");
        assert_eq!(escape_name("клиент-名前-🦀"), "клиент-名前-🦀");
        assert_eq!(escape_name(""), "");
        // Zero-width joiner is part of emoji sequences, not a trick.
        assert_eq!(escape_name("👩\u{200d}💻"), "👩\u{200d}💻");
        assert_eq!(escape_name("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn socket_inode_parses_only_socket_links() {
        assert_eq!(socket_inode(Path::new("socket:[123456]")), Some(123456));
        assert_eq!(socket_inode(Path::new("socket:[]")), None);
        assert_eq!(socket_inode(Path::new("pipe:[123]")), None);
        assert_eq!(socket_inode(Path::new("/tmp/socket:[1]")), None);
        assert_eq!(socket_inode(Path::new("anon_inode:[eventpoll]")), None);
    }

    #[test]
    fn canonical_unmaps_ipv4_mapped_addresses() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:6379".parse().expect("literal");
        assert_eq!(
            canonical(mapped),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 6379))
        );
        let v6: SocketAddr = "[::1]:6379".parse().expect("literal");
        assert_eq!(canonical(v6), v6);
        let v4: SocketAddr = "10.0.0.1:1".parse().expect("literal");
        assert_eq!(canonical(v4), v4);
    }

    const NET_TCP: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/proc/net-tcp.txt"
    ));
    const NET_TCP6: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/proc/net-tcp6.txt"
    ));

    #[test]
    fn parse_tcp_rows_reads_real_tables() {
        let v4 = parse_tcp_rows(NET_TCP).expect("net/tcp parses");
        assert_eq!(v4.len(), 6);
        let listen: Vec<_> = v4.iter().filter(|s| s.listening).collect();
        assert_eq!(listen.len(), 2);
        assert_eq!(listen[1].local, "127.0.0.1:26390".parse().expect("literal"));
        assert_eq!(listen[1].inode, 15049);
        let est = &v4[2];
        assert!(!est.listening);
        assert_eq!(est.local, "127.0.0.1:26390".parse().expect("literal"));
        assert_eq!(est.remote, "127.0.0.1:43548".parse().expect("literal"));
        // TIME_WAIT: no file refers to the socket.
        assert_eq!(v4[4].inode, 0);

        let v6 = parse_tcp_rows(NET_TCP6).expect("net/tcp6 parses");
        assert_eq!(v6.len(), 3);
        assert!(v6[0].listening);
        assert_eq!(v6[0].local, "[::1]:26390".parse().expect("literal"));
        assert_eq!(v6[1].remote, "[::1]:26390".parse().expect("literal"));
    }

    #[test]
    fn parse_tcp_rows_rejects_bad_rows_without_panicking() {
        assert_eq!(parse_tcp_rows("").expect("empty"), Vec::new());
        assert_eq!(
            parse_tcp_rows("  sl  local_address\n").expect("header"),
            Vec::new()
        );
        for bad in [
            "h\n 0: 0100007F:6716\n",
            "h\n 0: 0100007F:6716 00000000:0000 FF 0:0 00:0 0 0 0 1\n",
            "h\n 0: 0100007G:6716 00000000:0000 0A 0:0 00:0 0 0 0 1\n",
            "h\n 0: 0100007F 00000000:0000 0A 0:0 00:0 0 0 0 1\n",
            "h\n 0: 0100007F:6716 00000000:0000 0A 0:0 00:0 0 0 0 x\n",
            "h\n 0: 0100007F:6716 00000000:0000 0A 0 00:0 0 0 0 1\n",
        ] {
            assert!(parse_tcp_rows(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_cmdline_handles_padding_and_empty_args() {
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"\0\0"), Vec::<String>::new());
        assert_eq!(
            split_cmdline(b"redis-server\0--save\0\0--port\x006380\0"),
            ["redis-server", "--save", "", "--port", "6380"]
        );
        assert_eq!(
            split_cmdline(b"redis-server *:6379\0\0\0\0\0"),
            ["redis-server *:6379"]
        );
        assert_eq!(split_cmdline(b"a\xffb\0"), ["a\u{fffd}b"]);
    }

    #[test]
    fn names_match_comm_and_argv0() {
        assert!(name_matches(&info("redis-server", &[]), REDIS));
        assert!(name_matches(
            &info("valkey-server", &["valkey-server *:6379"]),
            REDIS
        ));
        // Renamed main thread, but a recognisable argv[0].
        assert!(name_matches(
            &info("x", &["/usr/bin/redis-server 127.0.0.1:6379"]),
            REDIS
        ));
        assert!(name_matches(
            &info("x", &["redis-server unixsocket:/run/redis/r.sock"]),
            REDIS
        ));
        assert!(name_matches(
            &info("x", &["/opt/my redis/redis-server", "/etc/redis.conf"]),
            REDIS
        ));
        assert!(!name_matches(
            &info("redis-cli", &["redis-cli", "ping"]),
            REDIS
        ));
        assert!(!name_matches(&info("vim", &["vim", "redis-server"]), REDIS));
        assert!(!name_matches(&info("redis-server-x", &[]), REDIS));
        assert!(!name_matches(&info("", &[]), &[""]));
        // comm keeps 15 bytes of a longer name.
        assert!(name_matches(
            &info("keydb-server-ex", &[]),
            &["keydb-server-extra"]
        ));
    }

    fn own_pid() -> u32 {
        std::process::id()
    }

    #[test]
    fn finds_own_ipv4_listener_and_connection() -> anyhow::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;

        let found = tcp_listeners()?
            .into_iter()
            .find(|l| l.addr == addr)
            .with_context(|| format!("listener {addr} not in tcp_listeners()"))?;
        let owner = found.process.context("listener without owner")?;
        assert_eq!(owner.pid, own_pid());
        assert!(owner.start_time_ticks > 0);

        let client = TcpStream::connect(addr)?;
        let (server_side, _) = listener.accept()?;
        let client_addr = client.local_addr()?;

        let conns = connection_owners(&[addr.port()])?;
        let client_end = conns
            .iter()
            .find(|c| c.local == client_addr && c.remote == addr)
            .with_context(|| format!("client end missing from {conns:?}"))?;
        let server_end = conns
            .iter()
            .find(|c| c.local == addr && c.remote == client_addr)
            .with_context(|| format!("server end missing from {conns:?}"))?;
        assert_eq!(client_end.process.pid, own_pid());
        assert_eq!(server_end.process.pid, own_pid());
        // Listeners are not connections.
        assert!(!conns.iter().any(|c| c.remote.port() == 0));

        drop((client, server_side));
        Ok(())
    }

    #[test]
    fn finds_own_ipv6_listener() -> anyhow::Result<()> {
        let listener = match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(e) => {
                println!("skipped: cannot bind [::1] on this host: {e}");
                return Ok(());
            }
        };
        let addr = listener.local_addr()?;
        let found = tcp_listeners()?
            .into_iter()
            .find(|l| l.addr == addr)
            .with_context(|| format!("listener {addr} not in tcp_listeners()"))?;
        assert_eq!(found.process.map(|p| p.pid), Some(own_pid()));
        Ok(())
    }

    /// An IPv4 client of a dual-stack [::] listener is listed in tcp6 as ::ffff:127.0.0.1.
    #[test]
    fn ipv4_mapped_connection_is_reported_as_ipv4() -> anyhow::Result<()> {
        let listener = match TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) {
            Ok(l) => l,
            Err(e) => {
                println!("skipped: cannot bind [::] on this host: {e}");
                return Ok(());
            }
        };
        let port = listener.local_addr()?.port();
        let client = match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(c) => c,
            Err(e) => {
                println!("skipped: [::] listener is not dual-stack here: {e}");
                return Ok(());
            }
        };
        let (_server_side, _) = listener.accept()?;
        let client_addr = client.local_addr()?;

        let conns = connection_owners(&[port])?;
        let server_end = conns
            .iter()
            .find(|c| c.local.port() == port && c.remote == client_addr)
            .with_context(|| format!("server end missing from {conns:?}"))?;
        assert_eq!(
            server_end.local,
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        );
        assert_eq!(server_end.process.pid, own_pid());
        Ok(())
    }

    #[test]
    fn connection_owners_with_no_ports_is_empty() -> anyhow::Result<()> {
        assert!(connection_owners(&[])?.is_empty());
        Ok(())
    }

    /// Kills and reaps the child when the test ends, also when it panics.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn free_port() -> anyhow::Result<u16> {
        Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port())
    }

    /// Waits until the server answers PING on `port`, failing early if it exits.
    fn wait_for_redis(server: &mut KillOnDrop, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.0.try_wait()? {
                anyhow::bail!("redis-server exited early: {status}");
            }
            if let Ok(mut conn) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                conn.set_read_timeout(Some(Duration::from_secs(2)))?;
                conn.write_all(b"PING\r\n")?;
                let mut reply = [0u8; 7];
                conn.read_exact(&mut reply)?;
                anyhow::ensure!(&reply == b"+PONG\r\n", "unexpected reply {reply:?}");
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn redis_ports_finds_a_running_redis_server() -> anyhow::Result<()> {
        let binary = Path::new("/usr/bin/redis-server");
        if !binary.exists() {
            println!("skipped: {} is not installed", binary.display());
            return Ok(());
        }
        let port = free_port()?;
        let mut server = KillOnDrop(
            Command::new(binary)
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server")?,
        );
        wait_for_redis(&mut server, port)?;
        let pid = server.0.id();

        let ports = redis_ports(REDIS)?;
        let (_, process) = ports
            .iter()
            .find(|(p, _)| *p == port)
            .with_context(|| format!("port {port} not in {ports:?}"))?;
        assert_eq!(process.pid, pid);
        assert_eq!(process.comm, "redis-server");
        assert!(ports.windows(2).all(|w| w[0].0 < w[1].0), "{ports:?}");

        let named = processes_named(REDIS)?;
        assert!(named.iter().any(|p| p.pid == pid), "{named:?}");
        Ok(())
    }
}
