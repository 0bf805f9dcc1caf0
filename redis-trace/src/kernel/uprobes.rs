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
//! `clientCommand` a CLIENT KILL, and so on; one frame further up names it when the
//! caller is a pass-through (Valkey 9's `freeClient` defers protected clients to
//! `freeClientAsync`). The ELF facts (symbols, stubs, versions, layouts) are in
//! [`super::redis_elf`]; the client's flags are read at the version's offset.
use std::path::Path;

use crate::schema::{EvidenceSource, RedisProbes};
use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use redis_trace_ebpf::redis_probes;

use super::redis_elf::{self, ServerId, ServerKind};
pub use super::redis_elf::{ClientLayout, Symbols};

/// The probed functions and the programs attached to them.
const PROBES: [(&str, &str); 2] = [
    ("freeClient", "redis_free_client"),
    ("freeClientAsync", "redis_free_client_async"),
];

/// The probed functions' names.
const PROBED: [&str; 2] = [PROBES[0].0, PROBES[1].0];

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
        ..RedisProbes::default()
    };
    let symbols = match Symbols::of_process(pid, &PROBED) {
        Ok(s) => s,
        Err(e) => {
            report.unavailable = Some(format!("{e:#}"));
            report.evidence_sources = evidence_sources(&report);
            return (report, None);
        }
    };
    let (report, attached) = attach_symbols(ebpf, pid, &exe, report, symbols);
    let mut report = report;
    report.evidence_sources = evidence_sources(&report);
    (report, attached)
}

/// What works as evidence on this server, from what the attach found.
fn evidence_sources(report: &RedisProbes) -> Vec<EvidenceSource> {
    let mut out = vec![
        EvidenceSource {
            source: "uprobes (freeClient, freeClientAsync)".into(),
            works: report.unavailable.is_none(),
            why_not: report.unavailable.clone(),
        },
        EvidenceSource {
            source: "client flags (client->flags)".into(),
            works: report.client_flags,
            why_not: (!report.client_flags).then(|| {
                report
                    .client_layout_missing
                    .clone()
                    .unwrap_or_else(|| "the uprobes are not attached".into())
            }),
        },
    ];
    let server = report.server.as_deref().and_then(ServerKind::from_name);
    if let (Some(server), Some(version)) = (server, report.version.clone()) {
        let v = ServerId { server, version };
        out.extend(
            redis_elf::version_sources(&v)
                .into_iter()
                .map(|(source, why)| EvidenceSource {
                    source: source.into(),
                    works: why.is_none(),
                    why_not: why,
                }),
        );
    }
    out
}

fn attach_symbols(
    ebpf: &mut Ebpf,
    pid: u32,
    exe: &str,
    mut report: RedisProbes,
    symbols: Symbols,
) -> (RedisProbes, Option<(Symbols, Vec<Link>)>) {
    let found = symbols.version.clone();
    report.version = found.as_ref().map(|v| v.version.clone());
    report.server = found.as_ref().map(|v| v.server.to_string());
    report.symbol_table = Some(
        if symbols.has_symtab {
            "dynsym and symtab"
        } else {
            "dynsym only"
        }
        .to_string(),
    );
    let missing: Vec<&str> = PROBED
        .iter()
        .copied()
        .filter(|f| !symbols.sites.iter().any(|s| s.function == *f))
        .collect();
    if !missing.is_empty() {
        report.unavailable = Some(format!(
            "{} has no symbol for {} (stripped, or not a Redis this tool knows): causes \
             rest on kernel, Redis and log evidence",
            report.exe,
            missing.join(", ")
        ));
        return (report, None);
    }
    let mut links = Vec::new();
    for site in &symbols.sites {
        let Some((_, program)) = PROBES.iter().find(|(f, _)| *f == site.function) else {
            continue;
        };
        match attach_one(ebpf, program, site.file_offset, exe, pid) {
            Ok(link) => links.push(link),
            Err(e) => {
                report.unavailable = Some(format!("attaching to {}: {e:#}", site.label));
                detach(ebpf, links);
                return (report, None);
            }
        }
        report.attached.push(site.label.clone());
    }
    if let Err(e) = enable(ebpf, pid, symbols.layout.as_ref()) {
        report.unavailable = Some(format!("{e:#}"));
        detach(ebpf, links);
        return (report, None);
    }
    report.client_flags = symbols.layout.is_some();
    report.client_layout = symbols.layout.as_ref().map(|l| l.source.clone());
    report.client_layout_missing = symbols.layout_missing.clone();
    (report, Some((symbols, links)))
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    file_offset: u64,
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
        .attach(
            UProbeAttachLocation::AbsoluteOffset(file_offset),
            Path::new(exe),
            UProbeScope::OneProcess(pid_nz),
        )
        .with_context(|| format!("uprobe at file offset {file_offset:#x} of {exe}"))?;
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

fn enable(ebpf: &mut Ebpf, pid: u32, layout: Option<&ClientLayout>) -> Result<()> {
    set_layout(ebpf, pid, layout)?;
    set_enabled(ebpf, true)
}

/// Where the uprobes read `pid`'s client flags (nowhere without a layout).
pub fn set_layout(ebpf: &mut Ebpf, pid: u32, layout: Option<&ClientLayout>) -> Result<()> {
    // Per process: two traced servers can be two versions.
    let mut offsets: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut("REDIS_FLAGS_OFFSET")
            .context("map REDIS_FLAGS_OFFSET missing")?,
    )?;
    match layout {
        Some(l) => offsets.insert(pid, u32::from(l.flags_offset), 0)?,
        None => {
            let _ = offsets.remove(&pid);
        }
    }
    Ok(())
}
