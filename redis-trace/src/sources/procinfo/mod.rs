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
//!
//! - `sockets`: the socket tables and their owners (listeners, Redis's ports, the
//!   connections open when a capture starts);
//! - `process`: what a process is called and runs ([`ProcessInfo`]), found by name;
//! - `netns`, `container`: which network namespace and container a process is in;
//! - `trust`: whether a discovered server may be given the password ([`trusted_server`]).
pub mod container;
pub mod netns;
mod process;
mod sockets;
mod trust;

pub use container::{Container, Runtime, container_of};
pub use netns::{NetnsHandle, netns_of_path, netns_of_pid, own_netns};
pub use process::{ProcessInfo, all_pids, host_pid, ns_pids, processes_named};
pub use sockets::{
    ConnOwner, Listener, RedisServer, TcpSocket, connection_owners, connection_owners_in,
    parse_tcp_rows, redis_ports, redis_servers, tcp_listeners,
};
pub use trust::{trusted_server, user_ids};

/// Process names whose servers are discovered and whose process events are reported.
pub const SERVER_NAMES: [&str; 2] = ["redis-server", "valkey-server"];
