//! Uprobes on redis-server: which Redis code path freed each client.
//!
//! From the kernel alone an idle timeout and a CLIENT KILL are the same FIN from
//! redis-server. Redis decides inside its own code, and the builds distributions ship
//! export those functions (`nm -D`). Two entry probes, no return probes, and nothing on
//! per-command paths:
//! - `freeClient(c)`: Redis frees a client now (its socket is closed within);
//! - `freeClientAsync(c)`: Redis decided to free it later (networking.c: output buffer
//!   limit, query buffer limit, close after reply).
//!
//! The caller of each (the return address at entry) names the decision: a
//! `freeClient` called from `clientsCronHandleTimeout` is an idle timeout, from
//! `clientCommand` a CLIENT KILL, and so on. No struct layout is needed for that; only
//! the client's flags (pub/sub, protocol error) are read, at an offset known per version.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::schema::RedisProbes;
use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::Array,
    programs::{
        UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use redis_trace_ebpf::{ABSENT, redis_probes};

/// The probed functions and the programs attached to them.
const PROBES: [(&str, &str); 2] = [
    ("freeClient", "redis_free_client"),
    ("freeClientAsync", "redis_free_client_async"),
];

/// The largest executable read for its symbols (a Redis build with DWARF is ~100 MiB).
const MAX_EXE_BYTES: u64 = 256 << 20;

/// Function address ranges of a running redis-server, to name return addresses.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// (start, end, name), sorted by start, in the process's address space.
    funcs: Vec<(u64, u64, String)>,
    /// The server and version its ELF names.
    pub version: Option<ServerVersion>,
}

impl Symbols {
    /// Reads the exported functions of `pid`'s executable and where it is mapped.
    pub fn of_process(pid: u32) -> Result<Self> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // Whoever started the process chose its file: bound what is read into memory.
        let size = std::fs::metadata(&exe)
            .with_context(|| format!("stat of {}", exe.display()))?
            .len();
        if size > MAX_EXE_BYTES {
            bail!(
                "{} is {} MiB, more than any Redis build: not read",
                exe.display(),
                size >> 20
            );
        }
        let data = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
        let file = object::File::parse(&*data).context("parsing redis-server's ELF")?;
        let first_load = file.segments().map(|s| s.address()).min().unwrap_or(0);
        let real = std::fs::read_link(&exe).unwrap_or_default();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading /proc/{pid}/maps"))?;
        // The mapping of the file's start: the load base.
        let start = maps
            .lines()
            .filter(|l| l.ends_with(&*real.to_string_lossy()))
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let range = f.next()?;
                let _perms = f.next()?;
                let offset = u64::from_str_radix(f.next()?, 16).ok()?;
                (offset == 0)
                    .then(|| range.split('-').next())
                    .flatten()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
            })
            .context("the executable's mapping is not in /proc/PID/maps")?;
        let bias = start.wrapping_sub(first_load & !0xfff);
        let mut funcs: Vec<(u64, u64, String)> = file
            .dynamic_symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let a = bias.wrapping_add(s.address());
                Some((a, a + s.size(), s.name().ok()?.to_string()))
            })
            .collect();
        funcs.sort();
        Ok(Self {
            funcs,
            version: elf_version(&file),
        })
    }

    #[cfg(test)]
    pub fn from_list(mut funcs: Vec<(u64, u64, String)>) -> Self {
        funcs.sort();
        Self {
            funcs,
            version: None,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.funcs.iter().any(|(_, _, n)| n == name)
    }

    /// The function containing `addr`.
    pub fn name(&self, addr: u64) -> Option<&str> {
        let i = self.funcs.partition_point(|(s, _, _)| *s <= addr);
        let (s, e, n) = self.funcs.get(i.checked_sub(1)?)?;
        (*s <= addr && addr < *e).then_some(n.as_str())
    }
}

/// Which server a binary is and its version, read from the ELF's read-only data.
///
/// The traced program is never run to ask it (`--version` would execute, as root, a
/// binary any local user may have started). Redis keeps its version as a literal
/// (`REDIS_VERSION`, version.h) beside the `since` versions of its command table, all
/// lower: the highest `x.y.z` literal is the server's own. A Valkey binary names itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// "redis" or "valkey".
    pub server: &'static str,
    pub version: String,
}

/// Reads [`ServerVersion`] from an ELF image (None when it is not a Redis this tool
/// recognises, or has no version literal).
pub fn elf_version(file: &object::File<'_>) -> Option<ServerVersion> {
    use object::ObjectSection as _;
    let rodata = file.section_by_name(".rodata")?.data().ok()?;
    let mut redis = false;
    let mut valkey = false;
    let mut best: Option<(Vec<u32>, &[u8])> = None;
    for s in rodata.split(|b| *b == 0) {
        valkey = valkey || s.windows(6).any(|w| w.eq_ignore_ascii_case(b"valkey"));
        redis = redis || s.starts_with(b"Redis server v=");
        let Some(parts) = version_parts(s) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| parts > *b) {
            best = Some((parts, s));
        }
    }
    let server = match (valkey, redis) {
        (true, _) => "valkey",
        (false, true) => "redis",
        (false, false) => return None,
    };
    let (_, text) = best?;
    Some(ServerVersion {
        server,
        version: String::from_utf8_lossy(text).into_owned(),
    })
}

/// `x.y.z` with 1 to 3 digits each, as numbers.
fn version_parts(s: &[u8]) -> Option<Vec<u32>> {
    if s.len() > 11 {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    parts
        .iter()
        .map(|p| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect()
}

/// Offset of `flags` in `struct client`: Redis 7.0 to 7.4 begin it with `uint64_t id;
/// uint64_t flags;` (server.h). Other versions and forks: unknown, not read.
pub fn client_flags_offset(v: &ServerVersion) -> Option<u16> {
    let major_minor: Vec<u32> = v
        .version
        .split('.')
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    match (v.server, major_minor.as_slice()) {
        ("redis", [7, 0 | 2 | 4]) => Some(8),
        _ => None,
    }
}

/// Attaches the uprobes to `pid`'s executable, scoped to that process.
pub fn attach(ebpf: &mut Ebpf, pid: u32) -> (RedisProbes, Option<(Symbols, Vec<Link>)>) {
    let exe = format!("/proc/{pid}/exe");
    let mut report = RedisProbes {
        pid,
        exe: std::fs::read_link(&exe)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| exe.clone()),
        version: None,
        server: None,
        attached: Vec::new(),
        unavailable: None,
        client_flags: false,
    };
    let symbols = match Symbols::of_process(pid) {
        Ok(s) => s,
        Err(e) => {
            report.unavailable = Some(format!("{e:#}"));
            return (report, None);
        }
    };
    let missing: Vec<&str> = PROBES
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| !symbols.has(f))
        .collect();
    if !missing.is_empty() {
        report.unavailable = Some(format!(
            "{} does not export {} (stripped of its dynamic symbols, or not a Redis this \
             tool knows): causes rest on kernel, Redis and log evidence",
            report.exe,
            missing.join(", ")
        ));
        return (report, None);
    }
    let found = symbols.version.clone();
    report.version = found.as_ref().map(|v| v.version.clone());
    report.server = found.as_ref().map(|v| v.server.to_string());
    let offset = found.as_ref().and_then(client_flags_offset);
    let mut links = Vec::new();
    for (func, program) in PROBES {
        match attach_one(ebpf, program, func, &exe, pid) {
            Ok(link) => links.push(link),
            Err(e) => {
                report.unavailable = Some(format!("attaching to {func}: {e:#}"));
                detach(ebpf, links);
                return (report, None);
            }
        }
        report.attached.push(func.to_string());
    }
    if let Err(e) = enable(ebpf, offset) {
        report.unavailable = Some(format!("{e:#}"));
        detach(ebpf, links);
        return (report, None);
    }
    report.client_flags = offset.is_some();
    (report, Some((symbols, links)))
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    func: &str,
    exe: &str,
    pid: u32,
) -> Result<Link> {
    let prog: &mut UProbe = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("loading {program}"))?;
    }
    let Some(pid_nz) = std::num::NonZeroU32::new(pid) else {
        bail!("pid 0");
    };
    let id = prog
        .attach(func, Path::new(exe), UProbeScope::OneProcess(pid_nz))
        .with_context(|| format!("uprobe on {func} in {exe}"))?;
    Ok((program, id))
}

/// One attached uprobe: its program and link.
pub type Link = (&'static str, UProbeLinkId);

/// Detaches `links` (the Redis keeps running, unprobed).
pub fn detach(ebpf: &mut Ebpf, links: Vec<Link>) {
    for (program, id) in links {
        if let Some(prog) = ebpf.program_mut(program)
            && let Ok(prog) = <&mut UProbe>::try_from(prog)
        {
            let _ = prog.detach(id);
        }
    }
}

/// Turns the kernel side's use of the uprobes on or off (the FIN path's lookup).
pub fn set_enabled(ebpf: &mut Ebpf, on: bool) -> Result<()> {
    let mut cfg: Array<_, u32> = Array::try_from(
        ebpf.map_mut("REDIS_PROBES")
            .context("map REDIS_PROBES missing")?,
    )?;
    cfg.set(redis_probes::ENABLED, u32::from(on), 0)?;
    Ok(())
}

fn enable(ebpf: &mut Ebpf, flags_offset: Option<u16>) -> Result<()> {
    let mut cfg: Array<_, u32> = Array::try_from(
        ebpf.map_mut("REDIS_PROBES")
            .context("map REDIS_PROBES missing")?,
    )?;
    cfg.set(redis_probes::ENABLED, 1, 0)?;
    // Version-specific, so it is the same for every traced Redis or not used.
    cfg.set(
        redis_probes::FLAGS_OFFSET,
        u32::from(flags_offset.unwrap_or(ABSENT)),
        0,
    )?;
    Ok(())
}

/// Redis 7 client flags worth naming (server.h).
pub fn describe_flags(flags: u64) -> BTreeMap<&'static str, bool> {
    let mut m = BTreeMap::new();
    m.insert("replica", flags & 1 != 0);
    m.insert("master", flags & (1 << 1) != 0);
    m.insert("close_after_reply", flags & (1 << 6) != 0);
    m.insert("pubsub", flags & (1 << 18) != 0);
    m.insert("protocol_error", flags & (1 << 39) != 0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_inside_functions_only() {
        let s = Symbols::from_list(vec![
            (0x1000, 0x1100, "freeClient".into()),
            (0x2000, 0x2400, "clientsCronHandleTimeout".into()),
        ]);
        assert_eq!(s.name(0x2010), Some("clientsCronHandleTimeout"));
        assert_eq!(s.name(0x1000), Some("freeClient"));
        assert_eq!(s.name(0x1100), None);
        assert_eq!(s.name(0x500), None);
        assert!(s.has("freeClient"));
    }

    #[test]
    fn client_flags_only_for_known_layouts() {
        let v = |server, version: &str| ServerVersion {
            server,
            version: version.into(),
        };
        assert_eq!(client_flags_offset(&v("redis", "7.0.15")), Some(8));
        assert_eq!(client_flags_offset(&v("redis", "6.2.14")), None);
        assert_eq!(client_flags_offset(&v("valkey", "8.0.1")), None);
        assert_eq!(client_flags_offset(&v("valkey", "7.2.4")), None);
        assert_eq!(client_flags_offset(&v("redis", "garbage")), None);
    }

    #[test]
    fn version_parts_are_strict() {
        assert_eq!(version_parts(b"7.0.15"), Some(vec![7, 0, 15]));
        assert_eq!(version_parts(b"7.0"), None);
        assert_eq!(version_parts(b"7.0.1a"), None);
        assert_eq!(version_parts(b"1.2.3.4"), None);
        assert_eq!(version_parts(b"7..1"), None);
    }

    #[test]
    fn flags_are_decoded() {
        let f = describe_flags((1 << 18) | (1 << 39));
        assert!(f["pubsub"] && f["protocol_error"] && !f["replica"]);
    }

    #[test]
    fn symbols_of_the_installed_redis_server() {
        // A real redis-server exports the probed functions (scripts/setup.sh installs it).
        let data = std::fs::read("/usr/bin/redis-server").expect("redis-server installed");
        let file = object::File::parse(&*data).expect("ELF");
        let names: Vec<String> = file
            .dynamic_symbols()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        for f in [
            "freeClient",
            "freeClientAsync",
            "clientsCronHandleTimeout",
            "clientCommand",
        ] {
            assert!(names.iter().any(|n| n == f), "{f} not exported");
        }
    }
}
