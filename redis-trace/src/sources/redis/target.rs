//! How to reach Redis: the URL, the password (from REDISCLI_AUTH or a file, never from
//! argv) and whether to speak TLS.
use std::path::Path;

use anyhow::{Context as _, bail};

use super::tls;

/// How to reach Redis. `url` like redis://[user@]host:port/ ; the password never comes from argv:
/// from REDISCLI_AUTH (env) or a password file (first line, trailing newline stripped).
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub password: Option<String>,
    /// Set to speak TLS: a `rediss://` URL, or any `--tls-*` option.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Connect from inside this network namespace (a server in a container or pod,
    /// reached on its own loopback); `None`: from redis-trace's own.
    pub netns: Option<std::sync::Arc<crate::sources::procinfo::NetnsHandle>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .field("netns", &self.netns.as_ref().map(|n| n.inode))
            .finish()
    }
}

impl Target {
    /// url default "redis://127.0.0.1:{port}/"; password: file if given (error naming the
    /// file if unreadable), else env REDISCLI_AUTH, else none. A URL that carries a password
    /// is rejected: passwords on the command line show in `ps`.
    pub fn new(
        url: Option<&str>,
        port: u16,
        password_file: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let env = std::env::var("REDISCLI_AUTH").ok();
        Target::with_env_password(url, port, password_file, env)
    }

    /// The same target without the password (for a server not trusted with it).
    fn without_password(self) -> Target {
        Target {
            password: None,
            ..self
        }
    }

    /// For a server that was discovered, not named by the operator: the password goes
    /// only to a real server (see [`crate::sources::procinfo::trusted_server`]; `pid` None: no
    /// process listens there). Otherwise it is left out, and stderr says why.
    pub fn for_discovered(self, port: u16, pid: Option<u32>) -> Target {
        if self.password.is_none() {
            return self;
        }
        let trusted = pid
            .ok_or_else(|| "no Redis server process listens there".to_string())
            .and_then(crate::sources::procinfo::trusted_server);
        match trusted {
            Ok(()) => self,
            Err(why) => {
                crate::stderr::warn(&format!(
                    "not sending the Redis password to port {port}: {why}; name it with \
                     --port {port} if it is the server you mean"
                ));
                self.without_password()
            }
        }
    }

    /// Connections made from inside `netns` (see [`Target::netns`]).
    pub fn in_netns(mut self, netns: Option<crate::sources::procinfo::NetnsHandle>) -> Target {
        self.netns = netns.map(std::sync::Arc::new);
        self
    }

    /// TLS with these settings: for a `rediss://` URL (with the host's trust store when
    /// no option says otherwise), or when any `--tls-*` option is given. The files are
    /// read now: a bad one is an error before anything connects.
    pub fn with_tls(mut self, tls: &tls::TlsSettings) -> anyhow::Result<Target> {
        if tls.any() || is_tls_url(&self.url) {
            self.tls = Some(tls.client_config()?);
        }
        Ok(self)
    }

    /// The TCP port the URL names, if any.
    pub fn url_port(url: &str) -> Option<u16> {
        redis::parse_redis_url(&plain_url(url.trim()))?.port()
    }

    fn with_env_password(
        url: Option<&str>,
        port: u16,
        password_file: Option<&Path>,
        env_password: Option<String>,
    ) -> anyhow::Result<Target> {
        let url = match url {
            Some(u) => u.trim().to_string(),
            None => format!("redis://127.0.0.1:{port}/"),
        };
        check_url(&url)?;
        let password = match password_file {
            Some(path) => Some(read_password_file(path)?),
            None => env_password.filter(|p| !p.is_empty()),
        };
        Ok(Target {
            url,
            password,
            tls: None,
            netns: None,
        })
    }

    pub(super) fn connection_info(
        &self,
    ) -> anyhow::Result<(redis::ConnectionInfo, Option<String>)> {
        check_url(&self.url)?;
        let parsed = redis::parse_redis_url(&plain_url(&self.url))
            .with_context(|| format!("{:?} is not a redis:// URL", self.url))?;
        let username = if parsed.scheme().ends_with("unix") {
            parsed
                .query_pairs()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.into_owned())
        } else {
            percent_decode(parsed.username())
        };
        let info = redis::IntoConnectionInfo::into_connection_info(parsed)
            .map_err(|e| anyhow::anyhow!("bad Redis URL {:?}: {e}", self.url))?;
        // Authenticate ourselves (see `Session::connect`), use database 0 (INFO, CONFIG GET
        // and CLIENT LIST do not depend on it: no SELECT), RESP2, and no CLIENT SETINFO:
        // nothing that changes the server's state, even our own connection's.
        let info =
            info.set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
        Ok((info, username.filter(|u| !u.is_empty())))
    }
}

/// `rediss://` (Redis) or `valkeys://` (Valkey): TLS.
fn is_tls_url(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    u.starts_with("rediss://") || u.starts_with("valkeys://")
}

/// The URL with a TLS scheme replaced by the plain one, for the redis crate's parser
/// (built without its TLS features: the TLS here is ours, see [`super::session`]).
fn plain_url(url: &str) -> String {
    let url = url.trim();
    for (tls, plain) in [("rediss://", "redis://"), ("valkeys://", "valkey://")] {
        // get(): a multi-byte character across the scheme's end is no TLS scheme.
        if let (Some(scheme), Some(rest)) = (url.get(..tls.len()), url.get(tls.len()..))
            && scheme.eq_ignore_ascii_case(tls)
        {
            return format!("{plain}{rest}");
        }
    }
    url.to_string()
}

fn check_url(url: &str) -> anyhow::Result<()> {
    let url = &plain_url(url);
    let parsed = redis::parse_redis_url(url).with_context(|| {
        format!("{url:?} is not a Redis URL (expected redis://[user@]host:port/ or unix:///path)")
    })?;
    let no_password = "do not put the password in the URL (it shows in `ps` and shell history): \
                       set REDISCLI_AUTH or use --password-file";
    if parsed.password().is_some() {
        bail!("the Redis URL contains a password: {no_password}");
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| k == "pass" || k == "password")
    {
        bail!("the Redis URL contains a password: {no_password}");
    }
    Ok(())
}

fn read_password_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    // Its first line is all we need: read at most 64 KiB of it, whatever the file is.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let first = text.split('\n').next().unwrap_or("");
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(first.to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_client_target_url_and_password() {
        let t = Target::with_env_password(None, 6380, None, None).unwrap();
        assert_eq!(t.url, "redis://127.0.0.1:6380/");
        assert_eq!(t.password, None);

        let err = Target::with_env_password(
            Some("redis://app:hunter2@127.0.0.1:6379/"),
            6379,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("REDISCLI_AUTH") && err.contains("--password-file"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = Target::with_env_password(Some("redis://:hunter2@127.0.0.1/"), 6379, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDISCLI_AUTH"), "{err}");
        assert!(
            Target::with_env_password(Some("unix:///run/redis.sock?pass=x"), 0, None, None)
                .is_err()
        );
        // TLS URLs are spoken (see redis_tls), with the same password rule.
        assert!(Target::with_env_password(Some("rediss://127.0.0.1/"), 0, None, None).is_ok());
        assert!(Target::with_env_password(Some("rediss://:pw@127.0.0.1/"), 0, None, None).is_err());
        assert_eq!(Target::url_port("rediss://127.0.0.1:6380/"), Some(6380));
        // A multi-byte character where the scheme ends: no panic.
        assert_eq!(plain_url("rediss:/é"), "rediss:/é");
        assert_eq!(plain_url("redis://é"), "redis://é");
        assert!(Target::with_env_password(Some("http://127.0.0.1/"), 0, None, None).is_err());

        let t = Target::with_env_password(
            Some("redis://app@127.0.0.1:7000/"),
            1,
            None,
            Some("envpw".into()),
        )
        .unwrap();
        assert_eq!(t.password.as_deref(), Some("envpw"));
        assert!(!format!("{t:?}").contains("envpw"));

        let dir = std::env::temp_dir().join(format!("redis-trace-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret pass\nsecond line\n").unwrap();
        let t = Target::with_env_password(None, 6379, Some(&file), Some("envpw".into())).unwrap();
        assert_eq!(t.password.as_deref(), Some("s3cret pass"));
        std::fs::write(&file, "crlf\r\n").unwrap();
        let t = Target::new(None, 6379, Some(&file)).unwrap();
        assert_eq!(t.password.as_deref(), Some("crlf"));
        let missing = dir.join("missing");
        let err = format!("{:#}", Target::new(None, 6379, Some(&missing)).unwrap_err());
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
