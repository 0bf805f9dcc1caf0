//! One read-only connection to Redis: [`Session`] connects (2 s timeouts), authenticates
//! and asks INFO, CONFIG GET and CLIENT LIST, every reply read through a byte budget
//! ([`MAX_REPLY`]); its errors say what to do about them.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::parse::{ClientEntry, RedisConfig, parse_client_list, parse_config, parse_info};
use super::target::Target;
use super::tls;

/// Timeout for connecting and for each read and write on the socket.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The CONFIG parameters [`Session::config`] reads.
const CONFIG_PARAMS: [&str; 9] = [
    "timeout",
    "tcp-keepalive",
    "client-output-buffer-limit",
    "client-query-buffer-limit",
    "maxmemory",
    "maxmemory-policy",
    "maxmemory-clients",
    "logfile",
    "loglevel",
];
/// The INFO sections a snapshot reads (several sections in one call: Redis 7.0+).
const INFO_SECTIONS: [&str; 6] = [
    "server",
    "clients",
    "stats",
    "memory",
    "replication",
    "commandstats",
];
const PERMISSION_HINT: &str = "the Redis user lacks permission for INFO/CONFIG GET/CLIENT LIST: \
                               grant +info +config|get +client|list";
/// One look at Redis.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the INFO reply arrived.
    pub taken_at: Instant,
    /// INFO server clients stats memory replication commandstats, flattened.
    pub info: HashMap<String, String>,
    /// None when CLIENT LIST was skipped this round or refused.
    pub clients: Option<Vec<ClientEntry>>,
    pub client_list_duration: Option<Duration>,
    /// `timeout` as CONFIG GET gave it right after INFO: an operator's `CONFIG SET
    /// timeout` frees every idle client within a second, and the capture must know the
    /// new value at once (None when refused).
    pub timeout: Option<u64>,
}

/// The largest reply read from Redis. A real INFO is a few KB; CLIENT LIST is ~300 bytes
/// a client, so this holds ~200,000 clients. A longer reply is an error (the session is
/// dropped) rather than memory a hostile or broken server can make us allocate.
pub const MAX_REPLY: u64 = 64 << 20;

/// A byte stream to Redis: TCP or a unix socket.
enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// A connection whose every reply is read through a byte budget ([`MAX_REPLY`]): the
/// redis crate encodes the commands and parses the replies, this owns the socket. It
/// sends nothing of its own (no HELLO, CLIENT SETINFO or SELECT).
struct CappedConnection {
    stream: Stream,
    parser: redis::Parser,
    limit: u64,
    open: bool,
    /// The first byte the server sent: a TLS record (0x15 alert, 0x16 handshake) on a
    /// plain connection means the port speaks TLS.
    first_byte: Option<u8>,
    tls: bool,
    /// host and port of a plain TCP connection (to probe for TLS when it fails).
    tcp: Option<(String, u16)>,
}

impl CappedConnection {
    fn connect(
        addr: &redis::ConnectionAddr,
        limit: u64,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    ) -> redis::RedisResult<Self> {
        let stream = match addr {
            redis::ConnectionAddr::Tcp(host, port) => {
                let mut last = None;
                let mut found = None;
                for a in std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))? {
                    match std::net::TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = match (found, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(e.into()),
                    (None, None) => return Err(config_error("no address for the Redis host", "")),
                };
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                match tls {
                    None => Stream::Tcp(s),
                    Some(config) => {
                        let name = tls::server_name(host)
                            .map_err(|e| config_error("TLS server name", &format!("{e:#}")))?;
                        let conn = rustls::ClientConnection::new(config.clone(), name)
                            .map_err(|e| config_error("TLS", &e.to_string()))?;
                        let mut stream = rustls::StreamOwned::new(conn, s);
                        // The handshake now, so that its failure says so (not a read error).
                        while stream.conn.is_handshaking() {
                            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                                return Err(redis::RedisError::from((
                                    redis::ErrorKind::Io,
                                    "the TLS handshake failed",
                                    e.to_string(),
                                )));
                            }
                        }
                        Stream::Tls(Box::new(stream))
                    }
                }
            }
            redis::ConnectionAddr::Unix(path) => {
                if tls.is_some() {
                    return Err(config_error("TLS over a unix socket is not supported", ""));
                }
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Stream::Unix(s)
            }
            _ => return Err(config_error("TLS is not supported", "")),
        };
        Ok(Self {
            tcp: match (addr, &stream) {
                (redis::ConnectionAddr::Tcp(h, p), Stream::Tcp(_)) => Some((h.clone(), *p)),
                _ => None,
            },
            tls: matches!(stream, Stream::Tls(_)),
            stream,
            parser: redis::Parser::new(),
            limit,
            open: true,
            first_byte: None,
        })
    }

    fn read_reply(&mut self) -> redis::RedisResult<redis::Value> {
        use std::io::Read as _;
        let mut first = FirstByte {
            inner: &mut self.stream,
            first: &mut self.first_byte,
        };
        let mut budget = (&mut first).take(self.limit);
        let parsed = self.parser.parse_value(&mut budget);
        let exhausted = budget.limit() == 0;
        match parsed {
            Ok(v) => Ok(v),
            Err(e) => {
                // A failed parse leaves the stream mid-reply: this connection is done.
                self.open = false;
                // A TLS port answers a plain command with a TLS record, or (Redis)
                // drops it without a byte: then ask it for a TLS handshake to be sure.
                let tls_port = !self.tls
                    && match self.first_byte {
                        Some(b) => matches!(b, 0x15 | 0x16),
                        None => self
                            .tcp
                            .as_ref()
                            .is_some_and(|(h, p)| tls::speaks_tls(h, *p, IO_TIMEOUT)),
                    };
                if tls_port {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        TLS_PORT,
                        "a plain command got no Redis reply, and the port answers TLS".to_string(),
                    )))
                } else if exhausted {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "Redis's reply is larger than redis-trace reads",
                        format!("over {} MiB", self.limit >> 20),
                    )))
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// A connection that cannot be made as configured (`detail` may be empty).
fn config_error(what: &'static str, detail: &str) -> redis::RedisError {
    if detail.is_empty() {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, what))
    } else {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            what,
            detail.to_string(),
        ))
    }
}

/// What a plain connection to a TLS port gets told.
const TLS_PORT: &str = "this Redis port speaks TLS: use --redis-url rediss://HOST:PORT/ with \
                        --tls-ca FILE (and --tls-cert FILE --tls-key FILE if it wants client \
                        certificates), or --tls-insecure";

/// Remembers the first byte read through it.
struct FirstByte<'a> {
    inner: &'a mut Stream,
    first: &'a mut Option<u8>,
}

impl std::io::Read for FirstByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.first.is_none() && n > 0 {
            *self.first = Some(buf[0]);
        }
        Ok(n)
    }
}

impl redis::ConnectionLike for CappedConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        use std::io::Write as _;
        if let Err(e) = self.stream.write_all(cmd) {
            self.open = false;
            return Err(e.into());
        }
        loop {
            match self.read_reply()? {
                // RESP3 pushes are not ours to answer (we speak RESP2; skip them anyway).
                redis::Value::Push { .. } => continue,
                v => return Ok(v),
            }
        }
    }

    fn req_packed_commands(
        &mut self,
        _cmd: &[u8],
        _offset: usize,
        _count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "redis-trace sends one command at a time",
        )))
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

/// A connected, authenticated connection to Redis that only reads.
pub struct Session {
    conn: CappedConnection,
    /// host:port (or socket path), for messages.
    addr: String,
    /// Redis before 7.0 takes one INFO section per call: then `INFO all`.
    info_all: bool,
}

impl Session {
    /// Connects (2 s timeout), authenticates with `AUTH [user] password` when a password is
    /// given, and checks that this user may run INFO, CONFIG GET and CLIENT LIST (with
    /// `CLIENT LIST ID 0`, which costs O(1)).
    pub fn connect(t: &Target) -> anyhow::Result<Session> {
        let (info, username) = t.connection_info()?;
        let addr = info.addr().to_string();
        let conn = CappedConnection::connect(info.addr(), MAX_REPLY, t.tls.as_ref())
            .map_err(|e| explain(&addr, "connect", e))?;
        let mut s = Session {
            conn,
            addr,
            info_all: false,
        };
        match (&t.password, &username) {
            (Some(pw), user) => s.auth(user.as_deref(), pw)?,
            (None, Some(user)) => bail!(
                "the Redis URL names user {user:?} but no password was given: set REDISCLI_AUTH \
                 or use --password-file"
            ),
            (None, None) => {}
        }
        let _: Vec<u8> = s.query(redis::cmd("INFO").arg("server"), "INFO")?;
        let _: Vec<Vec<u8>> =
            s.query(redis::cmd("CONFIG").arg("GET").arg("timeout"), "CONFIG GET")?;
        // CLIENT LIST ID (Redis 6.2+) with an id no client has: the ACL check without the
        // O(clients) walk. An older Redis answers a syntax error, which says nothing about
        // permission: only NOPERM counts here.
        match s.query::<Vec<u8>>(
            redis::cmd("CLIENT").arg("LIST").arg("ID").arg(0),
            "CLIENT LIST",
        ) {
            Ok(_) => {}
            Err(e) if is_server_error(&e) && !is_permission_error(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(s)
    }

    fn auth(&mut self, user: Option<&str>, password: &str) -> anyhow::Result<()> {
        let mut cmd = redis::cmd("AUTH");
        if let Some(user) = user {
            cmd.arg(user);
        }
        cmd.arg(password);
        match cmd.query::<redis::Value>(&mut self.conn) {
            Ok(_) => Ok(()),
            Err(e) => {
                let detail = e.detail().unwrap_or("").to_ascii_lowercase();
                // A password given to a Redis that has none: redis-cli warns and goes on; so
                // do we (the connection is as usable as without AUTH).
                if user.is_none() && detail.contains("without any password configured") {
                    return Ok(());
                }
                if e.code() == Some("WRONGPASS")
                    || detail.contains("invalid password")
                    || detail.contains("invalid username-password")
                {
                    bail!("Redis rejected the credentials (WRONGPASS)");
                }
                if user.is_some() && detail.contains("wrong number of arguments") {
                    bail!(
                        "Redis at {} has no ACL users (before 6.0): leave the user out of the URL",
                        self.addr
                    );
                }
                Err(explain(&self.addr, "AUTH", e))
            }
        }
    }

    fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        what: &str,
    ) -> anyhow::Result<T> {
        cmd.query(&mut self.conn)
            .map_err(|e| explain(&self.addr, what, e))
    }

    /// CONFIG GET, one parameter per call; parameters unknown to this Redis are left out.
    pub fn config(&mut self) -> anyhow::Result<RedisConfig> {
        let mut pairs = Vec::new();
        for param in CONFIG_PARAMS {
            pairs.extend(self.config_get(param)?);
        }
        Ok(parse_config(&pairs))
    }

    /// One `CONFIG GET param`: its (name, value) pairs.
    fn config_get(&mut self, param: &str) -> anyhow::Result<Vec<(String, String)>> {
        let reply: Vec<Vec<u8>> =
            self.query(redis::cmd("CONFIG").arg("GET").arg(param), "CONFIG GET")?;
        Ok(reply
            .chunks_exact(2)
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv[0]).into_owned(),
                    String::from_utf8_lossy(&kv[1]).into_owned(),
                )
            })
            .collect())
    }

    /// INFO (the sections in [`INFO_SECTIONS`]), then CLIENT LIST when `with_clients`. A
    /// CLIENT LIST refused by ACL gives `clients: None`; any other failure is an error, after
    /// which this session should be dropped.
    pub fn snapshot(&mut self, with_clients: bool) -> anyhow::Result<Snapshot> {
        let info_text = self.info()?;
        let taken_at = Instant::now();
        let info = parse_info(&info_text);
        let (clients, client_list_duration) = if with_clients {
            let start = Instant::now();
            match self.query::<Vec<u8>>(redis::cmd("CLIENT").arg("LIST"), "CLIENT LIST") {
                Ok(text) => {
                    let took = start.elapsed();
                    (
                        Some(parse_client_list(&String::from_utf8_lossy(&text))),
                        Some(took),
                    )
                }
                Err(e) if is_permission_error(&e) => (None, None),
                Err(e) => return Err(e),
            }
        } else {
            (None, None)
        };
        // One CONFIG GET per poll: O(1) on Redis's main thread.
        let timeout = match self.config_get("timeout") {
            Ok(pairs) => parse_config(&pairs).timeout,
            Err(e) if is_permission_error(&e) => None,
            Err(e) => return Err(e),
        };
        Ok(Snapshot {
            taken_at,
            info,
            clients,
            client_list_duration,
            timeout,
        })
    }

    fn info(&mut self) -> anyhow::Result<String> {
        if !self.info_all {
            let mut cmd = redis::cmd("INFO");
            for section in INFO_SECTIONS {
                cmd.arg(section);
            }
            match self.query::<Vec<u8>>(&cmd, "INFO") {
                Ok(text) => return Ok(String::from_utf8_lossy(&text).into_owned()),
                // Before 7.0: "ERR syntax error" for more than one section.
                Err(e) if is_server_error(&e) && !is_permission_error(&e) => self.info_all = true,
                Err(e) => return Err(e),
            }
        }
        let text: Vec<u8> = self.query(redis::cmd("INFO").arg("all"), "INFO")?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// An explained Redis error. `code` (NOPERM, NOAUTH, ERR, ...) is set when Redis answered
/// with an error reply: the connection is fine, the command was refused.
#[derive(Debug)]
struct Explained {
    msg: String,
    code: Option<String>,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Explained {}

fn reply_code(e: &anyhow::Error) -> Option<&str> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Explained>())
        .and_then(|r| r.code.as_deref())
}

fn is_server_error(e: &anyhow::Error) -> bool {
    reply_code(e).is_some()
}

fn is_permission_error(e: &anyhow::Error) -> bool {
    reply_code(e) == Some("NOPERM")
}

/// A redis error -> an error that says what to do about it.
fn explain(addr: &str, what: &str, e: redis::RedisError) -> anyhow::Error {
    let detail = e.detail().unwrap_or("").to_string();
    let code = e.code().map(str::to_string);
    let msg = if e.is_connection_refusal() {
        format!("Redis at {addr} refused the connection (is it running?)")
    } else if e.is_timeout() {
        format!(
            "Redis at {addr} did not answer {what} within {} s",
            IO_TIMEOUT.as_secs()
        )
    } else if code.as_deref() == Some("NOAUTH") {
        "Redis requires a password: set REDISCLI_AUTH or use --password-file".to_string()
    } else if code.as_deref() == Some("WRONGPASS")
        || e.kind() == redis::ErrorKind::AuthenticationFailed
    {
        "Redis rejected the credentials (WRONGPASS)".to_string()
    } else if code.as_deref() == Some("NOPERM") {
        format!("{PERMISSION_HINT} ({what} refused: {detail})")
    } else if e.is_connection_dropped() || e.is_io_error() {
        format!("Redis at {addr} closed the connection during {what}: {e}")
    } else {
        format!("Redis at {addr}: {what} failed: {e}")
    };
    anyhow::Error::new(Explained { msg, code })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::redis::Poller;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A "Redis" on loopback (a thread of this test) that answers with an endless bulk
    /// string: the reply is cut at the cap and the connection given up, not buffered.
    #[test]
    fn replies_longer_than_the_cap_are_refused() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"$1000000000\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded: at most 64 MiB, and it stops when the client hangs up.
            for _ in 0..1024 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let mut conn = CappedConnection::connect(
            &redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
            1 << 20,
            None,
        )
        .expect("connect");
        let err = redis::cmd("INFO")
            .query::<Vec<u8>>(&mut conn)
            .expect_err("a 1 GB reply must not be read");
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(!redis::ConnectionLike::is_open(&conn));
        drop(conn);
        let _ = server.join();
    }

    fn free_port() -> u16 {
        redis_lab::free_port().expect("a free loopback port")
    }

    fn err_text(r: anyhow::Result<Session>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn redis_client_refused_connection() {
        let port = free_port();
        let t = Target::new(None, port, None).unwrap();
        let err = err_text(Session::connect(&t));
        assert!(
            err.contains(&format!(
                "Redis at 127.0.0.1:{port} refused the connection (is it running?)"
            )),
            "{err}"
        );
    }

    #[test]
    fn redis_client_hung_server_times_out() {
        // Accepts connections (the kernel's backlog) but never answers.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = hung.local_addr().expect("addr").port();
        let t = Target::new(None, port, None).unwrap();
        let started = Instant::now();
        let err = err_text(Session::connect(&t));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("did not answer"), "{err}");

        let p = Poller::start(
            t,
            Duration::from_millis(100),
            Arc::new(AtomicBool::new(true)),
        );
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        p.stop();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
