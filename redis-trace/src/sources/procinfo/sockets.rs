//! The TCP socket tables (/proc/net/tcp, /proc/net/tcp6) and who holds each socket
//! (the `/proc/<pid>/fd/*` links `socket:[<inode>]`).
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use procfs::net::{TcpNetEntry, TcpState};

use super::container::{Container, container_of};
use super::netns::netns_of_pid;
use super::process::{InfoCache, ProcessInfo, all_pids, processes_named};

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
    /// The network namespace of the socket table it was read from (`None`: ours, unread).
    pub netns: Option<u32>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub process: ProcessInfo,
}

/// A running Redis-like server: its process, network namespace, container and the
/// addresses it listens on there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisServer {
    pub process: ProcessInfo,
    /// `None` when /proc/PID/ns/net could not be read.
    pub netns: Option<u32>,
    pub container: Option<Container>,
    /// Its listening addresses, sorted by port then address.
    pub listeners: Vec<SocketAddr>,
}

impl RedisServer {
    /// Its listening ports, each once, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.listeners.iter().map(|a| a.port()).collect();
        p.dedup();
        p
    }
}

/// Every running process named one of `names` that listens on a TCP port, in whatever
/// network namespace: each one's own socket tables (/proc/PID/net/tcp{,6} show the
/// namespace of PID) are read once per namespace, and its fds name its listeners.
/// Sorted by namespace, then port, then pid. A server whose tables or fds cannot be
/// read is left out.
///
/// Of several processes sharing one listening socket (a forked child that inherited
/// it), the earliest started is kept.
pub fn redis_servers(names: &[&str]) -> anyhow::Result<Vec<RedisServer>> {
    let candidates = processes_named(names)?;
    let mut tables: HashMap<Option<u32>, Vec<TcpSocket>> = HashMap::new();
    let mut servers: Vec<RedisServer> = Vec::new();
    let mut claimed: HashSet<u64> = HashSet::new();
    let mut by_age = candidates;
    by_age.sort_by_key(start_order);
    for p in by_age {
        let netns = netns_of_pid(p.pid);
        if let std::collections::hash_map::Entry::Vacant(v) = tables.entry(netns) {
            match tcp_sockets_in(Some(p.pid)) {
                Ok(t) => {
                    v.insert(t.into_iter().filter(|s| s.listening).collect());
                }
                Err(_) => continue,
            }
        }
        let listening = tables.get(&netns).map(Vec::as_slice).unwrap_or_default();
        let wanted: HashSet<u64> = listening.iter().map(|s| s.inode).collect();
        let owned = socket_owners(&wanted, &[p.pid]);
        let mut listeners: Vec<SocketAddr> = listening
            .iter()
            .filter(|s| owned.contains_key(&s.inode) && claimed.insert(s.inode))
            .map(|s| s.local)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        listeners.sort_by_key(|a| (a.port(), *a));
        servers.push(RedisServer {
            container: container_of(p.pid),
            process: p,
            netns,
            listeners,
        });
    }
    servers.sort_by_key(|s| {
        (
            s.netns,
            s.listeners.first().map(|a| a.port()),
            s.process.pid,
        )
    });
    Ok(servers)
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

/// Established (and other non-LISTEN) TCP sockets with local or remote port in `ports`, with
/// their owning process, for connections already open when a capture starts.
///
/// Sockets without an owner are left out: TIME_WAIT sockets and connections still in a
/// listen queue (not accepted yet) have no file, and other users' processes may be
/// unreadable. Sorted by local then remote address.
pub fn connection_owners(ports: &[u16]) -> anyhow::Result<Vec<ConnOwner>> {
    connection_owners_in(&[], ports)
}

/// [`connection_owners`] in our own namespace and in each `(namespace, pid)`'s (read
/// through that pid's socket tables), each owner tagged with its namespace.
pub fn connection_owners_in(
    namespaces: &[(u32, u32)],
    ports: &[u16],
) -> anyhow::Result<Vec<ConnOwner>> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let own = netns_of_pid(std::process::id());
    let mut tables: Vec<(Option<u32>, Vec<TcpSocket>)> = vec![(own, tcp_sockets()?)];
    for &(ns, pid) in namespaces {
        if tables.iter().any(|(n, _)| *n == Some(ns)) {
            continue;
        }
        // A server that exited meanwhile takes its namespace's table with it.
        if let Ok(t) = tcp_sockets_in(Some(pid)) {
            tables.push((Some(ns), t));
        }
    }
    let conns: Vec<(Option<u32>, TcpSocket)> = tables
        .into_iter()
        .flat_map(|(ns, t)| t.into_iter().map(move |s| (ns, s)))
        .filter(|(_, s)| {
            !s.listening && (ports.contains(&s.local.port()) || ports.contains(&s.remote.port()))
        })
        .collect();
    if conns.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u64> = conns.iter().map(|(_, s)| s.inode).collect();
    let owners = socket_owners(&wanted, &all_pids()?);

    let mut infos = InfoCache::default();
    let mut result: Vec<ConnOwner> = conns
        .iter()
        .filter_map(|(netns, s)| {
            let pids = owners.get(&s.inode)?;
            let process = pick_owner(pids, |pid| infos.get(pid))?;
            Some(ConnOwner {
                netns: *netns,
                local: s.local,
                remote: s.remote,
                process,
            })
        })
        .collect();
    result.sort_by_key(|c| (c.local, c.remote));
    Ok(result)
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
    tcp_sockets_in(None)
}

/// Both socket tables of process `pid`'s network namespace (ours for `None`).
fn tcp_sockets_in(pid: Option<u32>) -> anyhow::Result<Vec<TcpSocket>> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/net"),
        None => "/proc/net".to_string(),
    };
    let v4 = format!("{dir}/tcp");
    let text = std::fs::read_to_string(&v4).with_context(|| format!("reading {v4}"))?;
    let mut sockets = parse_tcp_rows(&text).with_context(|| format!("parsing {v4}"))?;
    let v6 = format!("{dir}/tcp6");
    match std::fs::read_to_string(&v6) {
        Ok(text) => sockets.extend(parse_tcp_rows(&text).with_context(|| format!("parsing {v6}"))?),
        // The table does not exist when IPv6 is disabled on the host.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {v6}")),
    }
    Ok(sockets)
}

/// IPv4 peers of a dual-stack IPv6 socket appear in tcp6 as ::ffff:a.b.c.d; report them as
/// the IPv4 addresses they are, so that one peer always has one spelling.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};

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
}
