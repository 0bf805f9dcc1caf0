//! Parsers of Redis's own replies: CLIENT LIST, INFO and CONFIG GET. Tolerant of what
//! another Redis or Valkey version prints, and of a hostile server: nothing here panics.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// One line of CLIENT LIST.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientEntry {
    pub id: u64,
    pub addr: Option<SocketAddr>,
    pub laddr: Option<SocketAddr>,
    pub name: String,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
    pub flags: String,
    pub age: u64,
    pub idle: u64,
    pub omem: u64,
    pub tot_mem: Option<u64>,
    pub qbuf: u64,
    pub cmd: String,
    pub user: Option<String>,
    pub sub: u64,
    pub psub: u64,
    /// `io-thread=`: the I/O thread serving the client (Redis 8.x; 0 = the main thread).
    pub io_thread: Option<u32>,
    /// `tot-net-in=` / `tot-net-out=`: bytes read from / written to the client over its
    /// life (Valkey 8+, Redis 8.2+).
    pub tot_net_in: Option<u64>,
    pub tot_net_out: Option<u64>,
    /// `tot-cmds=`: commands the client ran (Valkey 8+, Redis 8.2+).
    pub tot_cmds: Option<u64>,
}

/// Parses CLIENT LIST output. Tolerant: unknown fields are ignored, lines without a numeric
/// `id=` are skipped, a numeric field that does not parse reads as 0. Addresses as Redis
/// prints them: `127.0.0.1:6379`, `[::1]:6379` (anetFormatAddr), or a bare `::1:6379`;
/// a Unix socket client (`/path:0`) has no `addr`.
pub fn parse_client_list(text: &str) -> Vec<ClientEntry> {
    text.lines().filter_map(parse_client_line).collect()
}

fn parse_client_line(line: &str) -> Option<ClientEntry> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let num = |v: &str| v.parse::<u64>().unwrap_or(0);
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let mut entry = ClientEntry::default();
    let mut id = None;
    for field in line.split(' ') {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "id" => id = value.parse::<u64>().ok(),
            "addr" => entry.addr = parse_redis_addr(value),
            "laddr" => entry.laddr = parse_redis_addr(value),
            "name" => entry.name = value.to_string(),
            "lib-name" => entry.lib_name = opt(value),
            "lib-ver" => entry.lib_ver = opt(value),
            "flags" => entry.flags = value.to_string(),
            "age" => entry.age = num(value),
            "idle" => entry.idle = num(value),
            "omem" => entry.omem = num(value),
            "tot-mem" => entry.tot_mem = value.parse().ok(),
            "qbuf" => entry.qbuf = num(value),
            "cmd" => entry.cmd = value.to_string(),
            "user" => entry.user = opt(value),
            "sub" => entry.sub = num(value),
            "psub" => entry.psub = num(value),
            "io-thread" => entry.io_thread = value.parse().ok(),
            "tot-net-in" => entry.tot_net_in = value.parse().ok(),
            "tot-net-out" => entry.tot_net_out = value.parse().ok(),
            "tot-cmds" => entry.tot_cmds = value.parse().ok(),
            _ => {}
        }
    }
    entry.id = id?;
    Some(entry)
}

/// `127.0.0.1:6379`, `[::1]:6379` or `::1:6379` -> a socket address; anything else -> None.
fn parse_redis_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

/// INFO text -> key/value map (all sections flattened; "# Section" lines skipped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Which server answered INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Redis,
    Valkey,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Redis => "redis",
            ServerKind::Valkey => "valkey",
        }
    }

    /// The kind a record names ("redis", "valkey").
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "redis" => Some(ServerKind::Redis),
            "valkey" => Some(ServerKind::Valkey),
            _ => None,
        }
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server and its own version, from INFO. Valkey reports `redis_version:7.2.4` (the
/// Redis version it is compatible with) and its real one in `valkey_version`, with
/// `server_name:valkey`: those come first, `redis_version` only for Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerId {
    pub server: ServerKind,
    pub version: String,
}

impl ServerId {
    /// (major, minor), when the version parses.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let mut parts = self.version.split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    }

    /// Whether this is `server` at `major.minor` or later.
    pub fn at_least(&self, server: ServerKind, major: u32, minor: u32) -> bool {
        self.server == server && self.major_minor().is_some_and(|v| v >= (major, minor))
    }

    /// `None` when INFO has no version this parser trusts.
    pub fn from_info(info: &HashMap<String, String>) -> Option<Self> {
        let field = |k: &str| info.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let valkey = field("server_name").is_some_and(|n| n.eq_ignore_ascii_case("valkey"));
        let (server, version) = match field("valkey_version") {
            Some(v) => (ServerKind::Valkey, v),
            // A Valkey without valkey_version (none is known) still says what it is.
            None if valkey => (ServerKind::Valkey, field("redis_version")?),
            None => (ServerKind::Redis, field("redis_version")?),
        };
        // The server's words: a version is short and plain ("7.0.15", "255.255.255").
        let plain = version.len() <= 32
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
        plain.then(|| ServerId {
            server,
            version: version.to_string(),
        })
    }
}

/// The INFO counters of client closes. Each is `None` where this version has no such
/// counter (`evicted_clients` before 7.0, the buffer-limit ones before Redis 7.4 and
/// Valkey 8.0): absent is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InfoCounters {
    pub evicted_clients: Option<u64>,
    pub client_output_buffer_limit_disconnections: Option<u64>,
    pub client_query_buffer_limit_disconnections: Option<u64>,
}

impl InfoCounters {
    pub fn from_info(info: &HashMap<String, String>) -> Self {
        let num = |k: &str| info.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        InfoCounters {
            evicted_clients: num("evicted_clients"),
            client_output_buffer_limit_disconnections: num(
                "client_output_buffer_limit_disconnections",
            ),
            client_query_buffer_limit_disconnections: num(
                "client_query_buffer_limit_disconnections",
            ),
        }
    }
}

/// One class of client-output-buffer-limit, in bytes and seconds (0 = no limit).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BufferLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

/// What CONFIG GET says about the settings that close or refuse connections.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedisConfig {
    pub timeout: Option<u64>,
    pub tcp_keepalive: Option<u64>,
    pub cobl_normal: Option<BufferLimit>,
    pub cobl_replica: Option<BufferLimit>,
    pub cobl_pubsub: Option<BufferLimit>,
    pub query_buffer_limit: Option<u64>,
    pub maxmemory: Option<u64>,
    pub maxmemory_policy: Option<String>,
    /// "0", bytes, or a percentage of maxmemory like "10%".
    pub maxmemory_clients: Option<String>,
    /// "" means standard output.
    pub logfile: Option<String>,
    pub loglevel: Option<String>,
    /// Every pair CONFIG GET returned, as returned.
    pub raw: Vec<(String, String)>,
}

impl RedisConfig {
    /// The `client-output-buffer-limit` of a client class, when CONFIG GET gave it.
    pub fn limit_for(&self, class: crate::schema::ClientClass) -> Option<&BufferLimit> {
        use crate::schema::ClientClass;
        match class {
            ClientClass::Normal => self.cobl_normal.as_ref(),
            ClientClass::Pubsub => self.cobl_pubsub.as_ref(),
            ClientClass::Replica => self.cobl_replica.as_ref(),
        }
    }
}

/// The largest value of an `int` config in Redis (INT_MAX).
const REDIS_INT_MAX: u64 = i32::MAX as u64;

/// Parses CONFIG GET pairs. Memory values go through [`memtoull`]; a value that does not
/// parse leaves its field `None` (it is still in `raw`).
pub fn parse_config(pairs: &[(String, String)]) -> RedisConfig {
    let mut cfg = RedisConfig {
        raw: pairs.to_vec(),
        ..RedisConfig::default()
    };
    for (name, value) in pairs {
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            // Both are ints in 0..=INT_MAX in Redis (config.c); anything else is not a
            // value this Redis can have, and is not used.
            "timeout" => cfg.timeout = value.parse().ok().filter(|v| *v <= REDIS_INT_MAX),
            "tcp-keepalive" => {
                cfg.tcp_keepalive = value.parse().ok().filter(|v| *v <= REDIS_INT_MAX)
            }
            "client-output-buffer-limit" => {
                let mut tokens = value.split_whitespace();
                while let (Some(class), Some(hard), Some(soft), Some(secs)) =
                    (tokens.next(), tokens.next(), tokens.next(), tokens.next())
                {
                    let limit = match (memtoull(hard), memtoull(soft), secs.parse::<u64>()) {
                        (Some(hard), Some(soft), Ok(soft_seconds)) => BufferLimit {
                            hard,
                            soft,
                            soft_seconds,
                        },
                        _ => continue,
                    };
                    match class.to_ascii_lowercase().as_str() {
                        "normal" => cfg.cobl_normal = Some(limit),
                        "slave" | "replica" => cfg.cobl_replica = Some(limit),
                        "pubsub" => cfg.cobl_pubsub = Some(limit),
                        _ => {}
                    }
                }
            }
            "client-query-buffer-limit" => cfg.query_buffer_limit = memtoull(value),
            "maxmemory" => cfg.maxmemory = memtoull(value),
            "maxmemory-policy" => cfg.maxmemory_policy = Some(value.to_string()),
            "maxmemory-clients" => cfg.maxmemory_clients = Some(value.to_string()),
            "logfile" => cfg.logfile = Some(value.to_string()),
            "loglevel" => cfg.loglevel = Some(value.to_string()),
            _ => {}
        }
    }
    cfg
}

/// Redis's memtoull: digits then an optional unit, case-insensitive: b, k=1000, kb=1024,
/// m=1000², mb=1024², g=1000³, gb=1024³.
fn memtoull(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis/");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}{name}"))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    // ---- parsing, on output captured from redis-server 7.0.15 -------------------------
    //
    // The fixtures were captured from a redis-server 7.0.15 started with
    // `--bind 127.0.0.1 ::1 --client-output-buffer-limit "replica 256mb 64mb 60"
    //  --client-query-buffer-limit 32mb --maxmemory 1gb --maxmemory-clients 10%
    //  --maxmemory-policy allkeys-lru --tcp-keepalive 300`, with a replica attached, a client
    // named billing-worker-1, a SUBSCRIBE + PSUBSCRIBE client and two clients over ::1:
    // `redis-cli CLIENT LIST`, `redis-cli INFO server clients stats memory replication
    // commandstats` (CRLF kept) and `redis-cli CONFIG GET <param>` per parameter.

    #[test]
    fn redis_client_parse_client_list_fixture() {
        let clients = parse_client_list(&fixture("client-list-7.0.15.txt"));
        assert_eq!(clients.len(), 6);
        let by_id = |id| clients.iter().find(|c| c.id == id).expect("client id");

        let replica = by_id(30);
        assert_eq!(replica.flags, "S");
        assert_eq!(replica.cmd, "psync");
        assert_eq!(replica.addr, Some("127.0.0.1:49876".parse().unwrap()));
        assert_eq!(replica.laddr, Some("127.0.0.1:26399".parse().unwrap()));

        let named = by_id(31);
        assert_eq!(named.name, "billing-worker-1");
        assert_eq!(named.cmd, "ping");
        assert_eq!(named.user.as_deref(), Some("default"));
        assert_eq!(named.tot_mem, Some(22272));
        assert_eq!((named.age, named.idle), (2, 2));
        assert_eq!(named.lib_name, None);

        let sub = by_id(32);
        assert_eq!(sub.flags, "P");
        assert_eq!((sub.sub, sub.psub), (1, 1));
        assert_eq!(sub.cmd, "psubscribe");
        assert_eq!(sub.name, "");

        let v6 = by_id(33);
        assert_eq!(v6.name, "v6-client");
        assert_eq!(v6.addr, Some("[::1]:59806".parse().unwrap()));
        assert_eq!(v6.laddr, Some("[::1]:26399".parse().unwrap()));

        let me = by_id(35);
        assert_eq!(me.cmd, "client|list");
        assert_eq!((me.qbuf, me.omem), (26, 0));
    }

    #[test]
    fn redis_client_parse_client_list_tolerant() {
        // Redis 7.2+ fields (lib-name, lib-ver), a bare IPv6 address, a Unix socket client,
        // a line without an id, garbage, an unknown field and a bad number.
        let text = "id=5 addr=::1:40000 laddr=::1:6379 fd=8 name=x age=1 idle=0 flags=N \
                    db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 omem=12 tot-mem=1800 cmd=get \
                    user=app redir=-1 resp=3 lib-name=redis-py lib-ver=5.0.1 newfield=7\r\n\
                    id=6 addr=/run/redis.sock:0 laddr=/run/redis.sock:0 name= lib-name= lib-ver= age=zz\n\
                    addr=127.0.0.1:1 name=noid\n\
                    total garbage\n\
                    \n\
                    id=abc addr=127.0.0.1:2\n";
        let clients = parse_client_list(text);
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0].addr, Some("[::1]:40000".parse().unwrap()));
        assert_eq!(clients[0].laddr, Some("[::1]:6379".parse().unwrap()));
        assert_eq!(clients[0].lib_name.as_deref(), Some("redis-py"));
        assert_eq!(clients[0].lib_ver.as_deref(), Some("5.0.1"));
        assert_eq!(clients[0].omem, 12);
        assert_eq!(clients[1].id, 6);
        assert_eq!(clients[1].addr, None);
        assert_eq!(clients[1].lib_name, None);
        assert_eq!(clients[1].age, 0);
        assert_eq!(clients[1].tot_mem, None);
        assert_eq!(clients[1].user, None);
    }

    #[test]
    fn redis_client_parse_info_fixture() {
        let info = parse_info(&fixture("info-7.0.15.txt"));
        assert_eq!(
            info.get("redis_version").map(String::as_str),
            Some("7.0.15")
        );
        assert_eq!(info.get("connected_clients").map(String::as_str), Some("5"));
        assert_eq!(
            info.get("maxmemory").map(String::as_str),
            Some("1073741824")
        );
        assert_eq!(info.get("role").map(String::as_str), Some("master"));
        assert_eq!(
            info.get("slave0").map(String::as_str),
            Some("ip=127.0.0.1,port=26400,state=wait_bgsave,offset=0,lag=0")
        );
        assert_eq!(info.get("config_file").map(String::as_str), Some(""));
        assert!(
            info.get("cmdstat_client|list")
                .is_some_and(|v| v.starts_with("calls="))
        );
        assert!(
            info.keys()
                .all(|k| !k.starts_with('#') && !k.contains('\r'))
        );
        assert!(info.values().all(|v| !v.contains('\r')));
        assert!(!info.contains_key("Server"));
    }

    fn pairs_from_redis_cli(text: &str) -> Vec<(String, String)> {
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks_exact(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    #[test]
    fn redis_client_parse_config_fixture() {
        let pairs = pairs_from_redis_cli(&fixture("config-get-7.0.15.txt"));
        assert_eq!(pairs.len(), 9);
        let cfg = parse_config(&pairs);
        assert_eq!(cfg.timeout, Some(0));
        assert_eq!(cfg.tcp_keepalive, Some(300));
        assert_eq!(
            cfg.cobl_normal,
            Some(BufferLimit {
                hard: 0,
                soft: 0,
                soft_seconds: 0
            })
        );
        // Redis 7.0 prints the replica class as "slave".
        assert_eq!(
            cfg.cobl_replica,
            Some(BufferLimit {
                hard: 256 << 20,
                soft: 64 << 20,
                soft_seconds: 60
            })
        );
        assert_eq!(
            cfg.cobl_pubsub,
            Some(BufferLimit {
                hard: 32 << 20,
                soft: 8 << 20,
                soft_seconds: 60
            })
        );
        assert_eq!(cfg.query_buffer_limit, Some(32 << 20));
        assert_eq!(cfg.maxmemory, Some(1 << 30));
        assert_eq!(cfg.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(cfg.maxmemory_clients.as_deref(), Some("10%"));
        assert_eq!(cfg.logfile.as_deref(), Some("/tmp/fx/redis.log"));
        assert_eq!(cfg.loglevel.as_deref(), Some("notice"));
        assert_eq!(cfg.raw, pairs);
    }

    // ---- one set per build (tests/fixtures/redis/README.md) ----------------------------

    /// What each build's INFO, CLIENT LIST and CONFIG GET fixtures say, read by hand.
    struct Build {
        name: &'static str,
        server: ServerKind,
        version: &'static str,
        redis_version: &'static str,
        counters: InfoCounters,
        config_pairs: usize,
        maxmemory_clients: Option<&'static str>,
        /// CLIENT LIST ids: control, replica, billing-worker-1, the subscriber.
        ids: [u64; 4],
        io_thread: Option<u32>,
        /// tot-net-in and tot-cmds of the control client (the one running CLIENT LIST).
        control_net_in: Option<u64>,
        control_cmds: Option<u64>,
        /// Whether CLIENT LIST has `laddr=` (Redis 6.2+).
        laddr: bool,
    }

    const fn counters(evicted: Option<u64>, obl: Option<u64>, qbl: Option<u64>) -> InfoCounters {
        InfoCounters {
            evicted_clients: evicted,
            client_output_buffer_limit_disconnections: obl,
            client_query_buffer_limit_disconnections: qbl,
        }
    }

    fn check_build(b: &Build) {
        let n = b.name;
        let info = parse_info(&fixture(&format!("info-{n}.txt")));
        assert_eq!(
            info.get("redis_version").map(String::as_str),
            Some(b.redis_version),
            "{n}"
        );
        let valkey = b.server == ServerKind::Valkey;
        assert_eq!(
            info.get("server_name").map(String::as_str),
            valkey.then_some("valkey"),
            "{n}"
        );
        assert_eq!(
            info.get("valkey_version").map(String::as_str),
            valkey.then_some(b.version),
            "{n}"
        );
        assert_eq!(
            ServerId::from_info(&info),
            Some(ServerId {
                server: b.server,
                version: b.version.to_string()
            }),
            "{n}"
        );
        assert_eq!(InfoCounters::from_info(&info), b.counters, "{n}");

        let clients = parse_client_list(&fixture(&format!("client-list-{n}.txt")));
        let ids: Vec<u64> = clients.iter().map(|c| c.id).collect();
        assert_eq!(ids, b.ids, "{n}");
        let [control, replica, named, sub] = [0, 1, 2, 3].map(|i| &clients[i]);
        assert_eq!(
            (control.name.as_str(), control.flags.as_str()),
            ("control", if b.version == "6.0.16" { "N" } else { "e" }),
            "{n}"
        );
        assert_eq!(
            control.cmd,
            if b.version == "6.0.16" {
                "client"
            } else {
                "client|list"
            },
            "{n}"
        );
        assert_eq!(
            (control.tot_net_in, control.tot_cmds),
            (b.control_net_in, b.control_cmds),
            "{n}"
        );
        assert_eq!(replica.flags, "S", "{n}");
        assert_eq!(
            (named.name.as_str(), named.cmd.as_str()),
            ("billing-worker-1", "ping"),
            "{n}"
        );
        assert_eq!((sub.flags.as_str(), sub.sub, sub.psub), ("P", 1, 1), "{n}");
        for c in &clients {
            assert!(c.addr.is_some_and(|a| a.ip().is_loopback()), "{n}");
            assert_eq!(c.laddr.is_some(), b.laddr, "{n}");
            assert_eq!(c.io_thread, b.io_thread, "{n}");
            assert_eq!(c.tot_net_in.is_some(), b.control_net_in.is_some(), "{n}");
            assert_eq!(c.tot_net_out.is_some(), b.control_net_in.is_some(), "{n}");
            // `lib-name=` empty (7.2+) or absent: no library.
            assert_eq!(
                (c.lib_name.as_deref(), c.lib_ver.as_deref()),
                (None, None),
                "{n}"
            );
            assert_eq!(c.user.as_deref(), Some("default"), "{n}");
        }

        let pairs = pairs_from_redis_cli(&fixture(&format!("config-get-{n}.txt")));
        assert_eq!(pairs.len(), b.config_pairs, "{n}");
        let cfg = parse_config(&pairs);
        // Every version prints the replica class as "slave" (getClientTypeName).
        let cobl = cfg
            .raw
            .iter()
            .find(|(k, _)| k == "client-output-buffer-limit");
        assert_eq!(
            cobl.map(|(_, v)| v.as_str()),
            Some("normal 0 0 0 slave 262144 131072 1 pubsub 65536 32768 60"),
            "{n}"
        );
        let limit = |hard, soft, soft_seconds| {
            Some(BufferLimit {
                hard,
                soft,
                soft_seconds,
            })
        };
        assert_eq!(cfg.cobl_normal, limit(0, 0, 0), "{n}");
        assert_eq!(cfg.cobl_replica, limit(256 << 10, 128 << 10, 1), "{n}");
        assert_eq!(cfg.cobl_pubsub, limit(64 << 10, 32 << 10, 60), "{n}");
        assert_eq!(cfg.maxmemory_clients.as_deref(), b.maxmemory_clients, "{n}");
        assert_eq!(cfg.timeout, Some(0), "{n}");
        assert_eq!(cfg.query_buffer_limit, Some(1 << 30), "{n}");
        assert_eq!(cfg.loglevel.as_deref(), Some("verbose"), "{n}");
        let logfile = cfg.logfile.as_deref().unwrap_or("");
        assert!(
            logfile.starts_with("/tmp/rlog-primary-") && logfile.ends_with("/redis.log"),
            "{n}: {logfile}"
        );
    }

    #[test]
    fn redis_view_fixture_redis_6_0_16() {
        check_build(&Build {
            name: "redis-6.0.16",
            server: ServerKind::Redis,
            version: "6.0.16",
            redis_version: "6.0.16",
            counters: counters(None, None, None),
            config_pairs: 151,
            maxmemory_clients: None,
            ids: [5, 15, 16, 17],
            io_thread: None,
            control_net_in: None,
            control_cmds: None,
            laddr: false,
        });
    }

    #[test]
    fn redis_view_fixture_redis_7_0_15() {
        check_build(&Build {
            name: "redis-7.0.15",
            server: ServerKind::Redis,
            version: "7.0.15",
            redis_version: "7.0.15",
            counters: counters(Some(1), None, None),
            config_pairs: 192,
            maxmemory_clients: Some("0"),
            ids: [4, 14, 15, 16],
            io_thread: None,
            control_net_in: None,
            control_cmds: None,
            laddr: true,
        });
    }

    #[test]
    fn redis_view_fixture_redis_8_0_2() {
        check_build(&Build {
            name: "redis-8.0.2",
            server: ServerKind::Redis,
            version: "8.0.2",
            redis_version: "8.0.2",
            counters: counters(Some(1), Some(2), Some(1)),
            config_pairs: 203,
            maxmemory_clients: Some("0"),
            ids: [5, 15, 17, 18],
            io_thread: Some(0),
            control_net_in: None,
            control_cmds: None,
            laddr: true,
        });
    }

    #[test]
    fn redis_view_fixture_redis_8_2_3() {
        check_build(&Build {
            name: "redis-8.2.3",
            server: ServerKind::Redis,
            version: "8.2.3",
            redis_version: "8.2.3",
            counters: counters(Some(1), Some(2), Some(1)),
            config_pairs: 205,
            maxmemory_clients: Some("0"),
            ids: [5, 15, 17, 18],
            io_thread: Some(0),
            control_net_in: Some(5_064_363),
            control_cmds: Some(424),
            laddr: true,
        });
    }

    #[test]
    fn redis_view_fixture_valkey_8_0_1() {
        check_build(&Build {
            name: "valkey-8.0.1",
            server: ServerKind::Valkey,
            version: "8.0.1",
            redis_version: "7.2.4",
            counters: counters(Some(1), Some(2), Some(1)),
            config_pairs: 214,
            maxmemory_clients: Some("0"),
            ids: [4, 14, 15, 16],
            io_thread: None,
            control_net_in: Some(5_064_363),
            control_cmds: Some(424),
            laddr: true,
        });
    }

    #[test]
    fn redis_view_fixture_valkey_8_1_1() {
        check_build(&Build {
            name: "valkey-8.1.1",
            server: ServerKind::Valkey,
            version: "8.1.1",
            redis_version: "7.2.4",
            counters: counters(Some(1), Some(2), Some(1)),
            config_pairs: 227,
            maxmemory_clients: Some("0"),
            ids: [3, 13, 14, 15],
            io_thread: None,
            control_net_in: Some(5_064_363),
            control_cmds: Some(424),
            laddr: true,
        });
    }

    #[test]
    fn redis_view_fixture_valkey_9_1_2() {
        check_build(&Build {
            name: "valkey-9.1.2",
            server: ServerKind::Valkey,
            version: "9.1.2",
            redis_version: "7.2.4",
            counters: counters(Some(1), Some(2), Some(1)),
            config_pairs: 237,
            maxmemory_clients: Some("0"),
            ids: [4, 14, 15, 16],
            io_thread: None,
            control_net_in: Some(5_064_395),
            control_cmds: Some(425),
            laddr: true,
        });
    }

    #[test]
    fn redis_server_id_from_info() {
        let info = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let id = |pairs: &[(&str, &str)]| ServerId::from_info(&info(pairs));
        let redis = |v: &str| {
            Some(ServerId {
                server: ServerKind::Redis,
                version: v.into(),
            })
        };
        let valkey = |v: &str| {
            Some(ServerId {
                server: ServerKind::Valkey,
                version: v.into(),
            })
        };
        assert_eq!(id(&[("redis_version", "7.4.1")]), redis("7.4.1"));
        assert_eq!(
            id(&[("redis_version", "255.255.255")]),
            redis("255.255.255")
        );
        // Valkey 7.2: server_name and valkey_version too.
        assert_eq!(
            id(&[
                ("redis_version", "7.2.4"),
                ("server_name", "valkey"),
                ("valkey_version", "7.2.7")
            ]),
            valkey("7.2.7")
        );
        assert_eq!(
            id(&[("redis_version", "7.2.4"), ("valkey_version", "8.0.1")]),
            valkey("8.0.1")
        );
        assert_eq!(
            id(&[("redis_version", "7.2.4"), ("server_name", "valkey")]),
            valkey("7.2.4")
        );
        assert_eq!(
            id(&[("redis_version", "7.2.4"), ("valkey_version", "")]),
            redis("7.2.4")
        );
        // Nothing, or not a version.
        assert_eq!(id(&[]), None);
        assert_eq!(id(&[("redis_version", "")]), None);
        assert_eq!(id(&[("redis_version", "7.0\u{1b}[2J")]), None);
        assert_eq!(id(&[("redis_version", "7.0 15")]), None);
        assert_eq!(id(&[("redis_version", &"9".repeat(33))]), None);
        assert_eq!(ServerKind::Valkey.as_str(), "valkey");
        assert_eq!(ServerKind::Redis.as_str(), "redis");
        // A counter that does not parse is absent, not 0.
        let c = InfoCounters::from_info(&info(&[
            ("evicted_clients", "x"),
            ("client_output_buffer_limit_disconnections", " 3 "),
        ]));
        assert_eq!(c, counters(None, Some(3), None));
    }

    #[test]
    fn config_values_outside_redis_range_are_not_used() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        for huge in [
            "18446744073709551615",
            "2147483648",
            "99999999999999999999999",
        ] {
            let cfg = parse_config(&[p("timeout", huge), p("tcp-keepalive", huge)]);
            assert_eq!((cfg.timeout, cfg.tcp_keepalive), (None, None), "{huge}");
        }
        let cfg = parse_config(&[p("timeout", "2147483647")]);
        assert_eq!(cfg.timeout, Some(2_147_483_647));
    }

    #[test]
    fn redis_client_parse_config_units() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cfg = parse_config(&[
            p(
                "client-output-buffer-limit",
                "normal 0 0 0 replica 256MB 64mb 60 pubsub 32m 8k 60",
            ),
            p("client-query-buffer-limit", "1gb"),
            p("maxmemory", "64kb"),
            p("maxmemory-clients", "0"),
            p("logfile", ""),
            p("timeout", "not-a-number"),
        ]);
        assert_eq!(
            cfg.cobl_replica,
            Some(BufferLimit {
                hard: 256 * 1024 * 1024,
                soft: 64 * 1024 * 1024,
                soft_seconds: 60
            })
        );
        assert_eq!(
            cfg.cobl_pubsub,
            Some(BufferLimit {
                hard: 32_000_000,
                soft: 8_000,
                soft_seconds: 60
            })
        );
        assert_eq!(cfg.query_buffer_limit, Some(1 << 30));
        assert_eq!(cfg.maxmemory, Some(65536));
        assert_eq!(cfg.maxmemory_clients.as_deref(), Some("0"));
        assert_eq!(cfg.logfile.as_deref(), Some(""));
        assert_eq!(cfg.timeout, None);
        assert_eq!(cfg.tcp_keepalive, None);

        assert_eq!(memtoull("8388608"), Some(8388608));
        assert_eq!(memtoull("1g"), Some(1_000_000_000));
        assert_eq!(memtoull("2GB"), Some(2 << 30));
        assert_eq!(memtoull("5b"), Some(5));
        assert_eq!(memtoull("-1"), None);
        assert_eq!(memtoull("10%"), None);
        assert_eq!(memtoull("99999999999999gb"), None);
    }
}
