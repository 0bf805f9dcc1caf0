//! Other Redis and Valkey builds than the host's, as `cargo xtask builds` fetched them
//! (target/redis-builds/builds.json), so a test can run the same incident on each.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// Which server a build is: Valkey words some log lines differently ("primary").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One build: an entry of builds.json. Start it with
/// `Redis::options().build(&b).start()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// `valkey-8.0.1`: the server and its version, unique in a manifest.
    pub name: String,
    pub server: ServerKind,
    /// What `INFO server` says (`valkey_version`, else `redis_version`).
    pub version: String,
    /// The server binary as the server process sees it: inside `root` when there is
    /// one.
    pub binary: PathBuf,
    /// A root directory (absolute host path) the server runs chrooted in: a build that
    /// needs another Debian release's libc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// A directory (host path) for the server's `LD_LIBRARY_PATH`: libraries of another
    /// release extracted beside the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lib_path: Option<PathBuf>,
    /// Where it came from: `Debian bookworm-backports valkey-tools 8.0.1+dfsg1-1~bpo12+1`.
    pub source: String,
}

/// The host's redis-server version on this project's machines (Debian 12).
pub const HOST_VERSION: &str = "7.0.15";

impl Build {
    /// The host's own redis-server (Debian bookworm's package, scripts/setup.sh installs
    /// it).
    pub fn host() -> Build {
        Build {
            name: format!("redis-{HOST_VERSION}"),
            server: ServerKind::Redis,
            version: HOST_VERSION.into(),
            binary: "/usr/bin/redis-server".into(),
            root: None,
            lib_path: None,
            source: format!("Debian bookworm redis-server {HOST_VERSION} (the host's)"),
        }
    }

    /// Where `cargo xtask builds` writes the manifest: target/redis-builds/builds.json
    /// of this workspace.
    pub fn default_manifest() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/redis-builds/builds.json")
    }

    /// Every build of a manifest. Names must be unique; a rooted build's binary must be
    /// absolute (it is looked up inside the root).
    pub fn load_all(path: impl AsRef<Path>) -> Result<Vec<Build>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the build manifest {} (run `cargo xtask builds` to make it)",
                path.display()
            )
        })?;
        Self::parse_all(&text).with_context(|| format!("in {}", path.display()))
    }

    /// [`Build::load_all`] on the manifest's text.
    pub fn parse_all(text: &str) -> Result<Vec<Build>> {
        let builds: Vec<Build> =
            serde_json::from_str(text).context("parsing the build manifest (a JSON list)")?;
        for (i, b) in builds.iter().enumerate() {
            if builds[..i].iter().any(|o| o.name == b.name) {
                bail!("build {} is listed twice", b.name);
            }
            if let Some(root) = &b.root {
                if !root.is_absolute() || !b.binary.is_absolute() {
                    bail!(
                        "build {}: a root ({}) and its binary ({}) must be absolute paths",
                        b.name,
                        root.display(),
                        b.binary.display()
                    );
                }
            }
        }
        Ok(builds)
    }

    /// The binary as a host path (under the root when there is one): for `readelf`,
    /// symbols, uprobes.
    pub fn host_binary(&self) -> PathBuf {
        match &self.root {
            Some(root) => root.join(self.binary.strip_prefix("/").unwrap_or(&self.binary)),
            None => self.binary.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[
      {"name": "redis-6.0.16", "server": "redis", "version": "6.0.16",
       "binary": "/b/redis-6.0.16/usr/bin/redis-server",
       "lib_path": "/b/redis-6.0.16/usr/lib/x86_64-linux-gnu",
       "source": "Debian bullseye redis-tools 5:6.0.16-1+deb11u2"},
      {"name": "valkey-8.1.1", "server": "valkey", "version": "8.1.1",
       "binary": "/usr/bin/valkey-server", "root": "/b/trixie",
       "source": "Debian trixie valkey-server 8.1.1+dfsg1-3+deb13u3"}
    ]"#;

    #[test]
    fn manifest_parses() {
        let builds = Build::parse_all(MANIFEST).unwrap();
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0].server, ServerKind::Redis);
        assert_eq!(builds[0].root, None);
        assert_eq!(
            builds[0].lib_path.as_deref(),
            Some(Path::new("/b/redis-6.0.16/usr/lib/x86_64-linux-gnu"))
        );
        assert_eq!(builds[1].server, ServerKind::Valkey);
        assert_eq!(builds[1].root.as_deref(), Some(Path::new("/b/trixie")));
        assert_eq!(
            builds[1].host_binary(),
            PathBuf::from("/b/trixie/usr/bin/valkey-server")
        );
        assert_eq!(builds[0].host_binary(), builds[0].binary);
    }

    #[test]
    fn manifest_round_trips() {
        let builds = Build::parse_all(MANIFEST).unwrap();
        let text = serde_json::to_string_pretty(&builds).unwrap();
        assert!(!text.contains("\"root\": null"), "{text}");
        assert_eq!(Build::parse_all(&text).unwrap(), builds);
    }

    #[test]
    fn manifest_errors_say_what() {
        let dup = r#"[{"name":"a","server":"redis","version":"1","binary":"x","source":"s"},
                      {"name":"a","server":"redis","version":"1","binary":"x","source":"s"}]"#;
        let e = format!("{:#}", Build::parse_all(dup).unwrap_err());
        assert!(e.contains("listed twice"), "{e}");
        let rel = r#"[{"name":"a","server":"redis","version":"1","binary":"usr/bin/x",
                       "root":"/r","source":"s"}]"#;
        let e = format!("{:#}", Build::parse_all(rel).unwrap_err());
        assert!(e.contains("absolute"), "{e}");
        let kind = r#"[{"name":"a","server":"keydb","version":"1","binary":"x","source":"s"}]"#;
        assert!(Build::parse_all(kind).is_err());
        let e = format!(
            "{:#}",
            Build::load_all("/nonexistent/builds.json").unwrap_err()
        );
        assert!(e.contains("cargo xtask builds"), "{e}");
    }

    #[test]
    fn host_build() {
        let h = Build::host();
        assert_eq!(h.name, "redis-7.0.15");
        assert_eq!(h.binary, PathBuf::from("/usr/bin/redis-server"));
        assert!(h.root.is_none() && h.lib_path.is_none());
    }
}
