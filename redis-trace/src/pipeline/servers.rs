//! Which Redis servers a capture traces: found in every network namespace of the host,
//! limited by `--pid`, `--netns` or `--container`, and named by (namespace, port).
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::schema::{PortSource, ProcessRef, TracedPort};
use crate::sources::procinfo::{self, RedisServer, SERVER_NAMES};

/// What the operator limited the capture to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One server process.
    Pid(u32),
    /// One network namespace, by a path to its namespace file.
    Netns(PathBuf),
    /// The network namespace(s) of one container, by id or id prefix.
    Container(String),
}

/// A scope resolved against the host: the namespaces to trace, and for `--pid` the one
/// process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub netns: Vec<u32>,
    pub pid: Option<u32>,
}

impl Resolved {
    fn includes(&self, s: &RedisServer) -> bool {
        s.netns.is_some_and(|n| self.netns.contains(&n))
            && self.pid.is_none_or(|p| p == s.process.pid)
    }
}

/// Every Redis-like server running on the host, in any namespace.
pub fn discover() -> Vec<RedisServer> {
    procinfo::redis_servers(&SERVER_NAMES).unwrap_or_default()
}

/// The namespaces a scope names, with what to do when it names none.
pub fn resolve(scope: &Scope, found: &[RedisServer]) -> Result<Resolved> {
    match scope {
        Scope::Pid(pid) => {
            let Some(s) = found.iter().find(|s| s.process.pid == *pid) else {
                bail!(
                    "pid {pid} is not a running redis-server or valkey-server that listens on \
                     a TCP port; give the server's main pid (pidof redis-server), or --port"
                );
            };
            let Some(ns) = s.netns else {
                bail!("cannot read the network namespace of pid {pid} (/proc/{pid}/ns/net)");
            };
            Ok(Resolved {
                netns: vec![ns],
                pid: Some(*pid),
            })
        }
        Scope::Netns(path) => Ok(Resolved {
            netns: vec![procinfo::netns_of_path(path)?],
            pid: None,
        }),
        Scope::Container(id) => {
            // Any of the container's processes names its namespace: a pod's Redis may
            // share it with a sidecar, and the container may run no Redis yet.
            let mut netns: Vec<u32> = procinfo::all_pids()
                .unwrap_or_default()
                .into_iter()
                .filter(|pid| procinfo::container_of(*pid).is_some_and(|c| c.matches(id)))
                .filter_map(procinfo::netns_of_pid)
                .collect();
            netns.sort_unstable();
            netns.dedup();
            if netns.is_empty() {
                bail!(
                    "no process here runs in a container whose id starts with {:?} (as its \
                     cgroup names it); `docker ps --no-trunc` or `crictl ps` show the ids",
                    crate::output::escape_name(id)
                );
            }
            Ok(Resolved { netns, pid: None })
        }
    }
}

/// The servers to trace and how they were chosen. With ports named, every server in
/// scope listening on one of them, and a port where none listens is traced anyway; else
/// every port of every server in scope.
pub fn choose(
    ports: &[u16],
    scope: Option<&Resolved>,
    found: &[RedisServer],
) -> Result<(Vec<TracedPort>, PortSource)> {
    let in_scope: Vec<&RedisServer> = found
        .iter()
        .filter(|s| scope.is_none_or(|r| r.includes(s)))
        .collect();
    let entry = |port: u16, s: &RedisServer| TracedPort {
        port,
        process: Some(ProcessRef {
            pid: s.process.pid,
            comm: s.process.comm.clone(),
        }),
        netns: s.netns,
        container: s.container.clone(),
    };
    if !ports.is_empty() {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let mut traced = Vec::new();
        for port in ports {
            let here: Vec<TracedPort> = in_scope
                .iter()
                .filter(|s| s.ports().contains(&port))
                .map(|s| entry(port, s))
                .collect();
            if here.is_empty() {
                traced.push(TracedPort {
                    port,
                    netns: scope.and_then(|r| (r.netns.len() == 1).then(|| r.netns[0])),
                    ..TracedPort::default()
                });
            } else {
                traced.extend(here);
            }
        }
        return Ok((traced, PortSource::CommandLine));
    }
    let traced: Vec<TracedPort> = in_scope
        .iter()
        .flat_map(|s| s.ports().into_iter().map(move |p| entry(p, s)))
        .collect();
    if traced.is_empty() {
        match scope {
            Some(_) => bail!(
                "no running redis-server or valkey-server listens on a TCP port in the chosen \
                 scope; name the ports to trace there with --port"
            ),
            None => bail!(
                "no running redis-server or valkey-server listens on a TCP port here; \
                 start one, or name the ports to trace with --port"
            ),
        }
    }
    Ok((traced, PortSource::Discovered))
}

/// The port numbers the kernel filters on: each once.
pub fn port_numbers(traced: &[TracedPort]) -> Vec<u16> {
    let mut p: Vec<u16> = traced.iter().map(|t| t.port).collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// The address to reach a server on from inside its own namespace: its loopback when it
/// listens on a wildcard or loopback address, else the first address it listens on.
pub fn local_address(listeners: &[SocketAddr], port: u16) -> String {
    let on_port: Vec<&SocketAddr> = listeners.iter().filter(|a| a.port() == port).collect();
    let any = |f: fn(&SocketAddr) -> bool| on_port.iter().any(|a| f(a));
    if any(|a| a.ip().is_unspecified() || a.ip() == std::net::Ipv4Addr::LOCALHOST) {
        format!("127.0.0.1:{port}")
    } else if any(|a| a.ip() == std::net::Ipv6Addr::LOCALHOST) {
        format!("[::1]:{port}")
    } else {
        on_port
            .first()
            .map_or_else(|| format!("127.0.0.1:{port}"), |a| a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::procinfo::ProcessInfo;

    fn server(pid: u32, netns: u32, addrs: &[&str]) -> RedisServer {
        RedisServer {
            process: ProcessInfo {
                pid,
                comm: "redis-server".into(),
                exe: None,
                cmdline: Vec::new(),
                start_time_ticks: u64::from(pid),
            },
            netns: Some(netns),
            container: None,
            listeners: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
        }
    }

    #[test]
    fn two_namespaces_on_one_port_are_two_servers() {
        let found = [
            server(10, 1, &["127.0.0.1:6379"]),
            server(20, 2, &["127.0.0.1:6379", "127.0.0.1:6380"]),
        ];
        let (t, src) = choose(&[], None, &found).expect("servers");
        assert_eq!(src, PortSource::Discovered);
        let got: Vec<(u16, Option<u32>, Option<u32>)> = t
            .iter()
            .map(|t| (t.port, t.netns, t.process.as_ref().map(|p| p.pid)))
            .collect();
        assert_eq!(
            got,
            [
                (6379, Some(1), Some(10)),
                (6379, Some(2), Some(20)),
                (6380, Some(2), Some(20))
            ]
        );
        assert_eq!(port_numbers(&t), [6379, 6380]);
    }

    #[test]
    fn a_scope_keeps_its_servers_and_named_ports_keep_working() {
        let found = [
            server(10, 1, &["0.0.0.0:6379"]),
            server(20, 2, &["[::]:6379"]),
        ];
        let only2 = Resolved {
            netns: vec![2],
            pid: None,
        };
        let (t, _) = choose(&[], Some(&only2), &found).expect("servers");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].netns, Some(2));
        let pid10 = Resolved {
            netns: vec![1],
            pid: Some(10),
        };
        let (t, src) = choose(&[6379, 7000], Some(&pid10), &found).expect("servers");
        assert_eq!(src, PortSource::CommandLine);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].process.as_ref().map(|p| p.pid), Some(10));
        // A named port where nothing listens is traced, in the scope's namespace.
        assert_eq!(
            (t[1].port, t[1].netns, t[1].process.is_none()),
            (7000, Some(1), true)
        );
        let none = Resolved {
            netns: vec![3],
            pid: None,
        };
        let e = choose(&[], Some(&none), &found).expect_err("nothing in scope");
        assert!(format!("{e:#}").contains("--port"), "{e:#}");
    }

    #[test]
    fn the_local_address_follows_what_the_server_listens_on() {
        let a = |s: &[&str]| -> Vec<SocketAddr> {
            s.iter().map(|x| x.parse().expect("addr")).collect()
        };
        assert_eq!(local_address(&a(&["0.0.0.0:6379"]), 6379), "127.0.0.1:6379");
        assert_eq!(local_address(&a(&["[::]:6379"]), 6379), "127.0.0.1:6379");
        assert_eq!(local_address(&a(&["[::1]:6379"]), 6379), "[::1]:6379");
        assert_eq!(
            local_address(&a(&["10.9.0.2:6379", "10.9.0.2:7000"]), 6379),
            "10.9.0.2:6379"
        );
        assert_eq!(local_address(&[], 6379), "127.0.0.1:6379");
    }
}
