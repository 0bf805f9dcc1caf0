//! Loading the eBPF object, configuring it for this kernel, and attaching its programs.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use redis_trace_ebpf::{Config, MAX_PORTS, MAX_PROC_NAMES, MAX_SCOPED_NETNS, RING_BYTES, counter};

use super::layout::{self, PROBES, Probe, ResetReasons};
use super::packets::{self, PACKETS_COST, PACKETS_PROBE};
use crate::kernel::tracefs;
use crate::schema::ProbeStatus;

/// The kernel programs, built by build.rs and embedded: one binary to copy to a host.
/// Aligned because the ELF parser reads it in place.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redis-trace"));

/// The name under which a missing socket namespace is reported in `probes_unavailable`.
pub const NETNS_PROBE: &str = "socket network namespace (BTF)";

/// What the loader needs from the caller.
pub struct Settings<'a> {
    pub ports: &'a [u16],
    pub proc_names: &'a [String],
    /// Trace only sockets in these network namespaces (`--pid`, `--netns`,
    /// `--container`); `None` traces every namespace.
    pub netns_scope: Option<&'a [u32]>,
}

/// The attached programs and the maps userspace reads. Dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub ring: RingBuf<MapData>,
    pub attached: Vec<String>,
    pub unavailable: Vec<ProbeStatus>,
    pub reasons: ResetReasons,
}

/// Where tracefs is, mounting it when the host has not (minimal hosts don't).
pub fn tracefs_root(notes: &mut Vec<String>) -> Result<PathBuf> {
    if let Some(root) = tracefs::find_root() {
        return Ok(root);
    }
    let target = Path::new("/sys/kernel/tracing");
    let mount = || -> std::io::Result<()> {
        let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
        let (src, dst, fstype) = (c("nodev")?, c("/sys/kernel/tracing")?, c("tracefs")?);
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    mount().with_context(|| {
        format!(
            "tracefs is not mounted and mounting it at {} failed; mount it by hand \
             (mount -t tracefs nodev {}) and run again",
            target.display(),
            target.display()
        )
    })?;
    notes.push(format!(
        "tracefs was not mounted: mounted it at {} (left mounted)",
        target.display()
    ));
    tracefs::find_root().context("tracefs mounted but its events directory is missing")
}

/// Probe ids (`oom:mark_victim,...`) to run without, as on a kernel that cannot run
/// them: how the scenario tests prove that a missing probe never becomes a wrong cause
/// on every kernel, and how an operator can check what a capture rests on.
pub const WITHOUT_PROBES: &str = "REDIS_TRACE_WITHOUT_PROBES";

/// Builds the configuration for this kernel from its format files. Probes whose format
/// is missing or unusable are returned as unavailable, with the reason.
pub fn configure(root: &Path) -> (Config, ResetReasons, Vec<(Probe, ProbeStatus)>) {
    let mut cfg = Config::EMPTY;
    let mut reasons = ResetReasons::default();
    let mut unavailable = Vec::new();
    let left_out = std::env::var(WITHOUT_PROBES).unwrap_or_default();
    for probe in PROBES {
        let dir = root.join("events").join(probe.category).join(probe.name);
        let result = if left_out.split(',').any(|p| p.trim() == probe.id()) {
            Err(anyhow::anyhow!(
                "left out by {WITHOUT_PROBES} (how the capture degrades on a kernel without it)"
            ))
        } else if dir.is_dir() {
            tracefs::read_format(root, probe.category, probe.name)
                .and_then(|f| layout::apply(&mut cfg, &probe, &f).map(|()| f))
        } else {
            Err(anyhow::anyhow!(
                "this kernel has no {} tracepoint ({} is missing)",
                probe.id(),
                dir.display()
            ))
        };
        match result {
            Ok(f) => {
                if probe.name == "tcp_send_reset" {
                    reasons = ResetReasons::from_format(&f);
                }
            }
            Err(e) => unavailable.push((
                probe,
                ProbeStatus {
                    probe: probe.id(),
                    why: Some(format!("{e:#}")),
                    cost: Some(probe.cost.to_string()),
                },
            )),
        }
    }
    if reasons.0.is_empty() {
        let missing_reason = !unavailable.iter().any(|(p, _)| p.name == "tcp_send_reset");
        if missing_reason {
            unavailable.push((
                PROBES[1],
                ProbeStatus {
                    probe: "tcp:tcp_send_reset reason".into(),
                    why: Some(
                        "this kernel's tcp_send_reset has no `reason` field (added in 6.10)".into(),
                    ),
                    cost: Some("rst_reason is null in every record".into()),
                },
            ));
        }
    }
    match super::btf::netns_offsets() {
        Ok(o) => {
            cfg.netns.skc_net = o.skc_net;
            cfg.netns.ns_inum = o.ns_inum;
        }
        // Not a tracepoint: reported like a missing field (never essential).
        Err(e) => unavailable.push((
            PROBES[1],
            ProbeStatus {
                probe: NETNS_PROBE.into(),
                why: Some(format!("{e:#}")),
                cost: Some(
                    "connections are not told apart by network namespace: two containers' \
                     servers on one port mix, and --pid/--netns/--container cannot scope"
                        .into(),
                ),
            },
        )),
    }
    cfg.task_reasons = reasons.task_mask();
    cfg.own_tgid = std::process::id();
    cfg.signal_mask = layout::signal_mask();
    // Wake userspace early only when the ring is an eighth full; otherwise it drains on
    // its own timer. A wakeup per record is what makes other tracers expensive.
    cfg.wakeup_bytes = u64::from(RING_BYTES / 8);
    (cfg, reasons, unavailable)
}

/// The oldest kernel the programs run on, for the messages: the BPF ring buffer
/// (`BPF_MAP_TYPE_RINGBUF`, every record goes through it) came in Linux 5.8. The rest is
/// older: tracepoint programs, `bpf_probe_read_kernel` (5.5), global data (5.2),
/// `sock:inet_sock_set_state` (4.16). docs/compatibility.md, "Kernels".
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// `major.minor` of a release string such as `5.10.0-35-amd64` or `4.18.0-553.el8_10.x86_64`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuses, before anything is loaded, a kernel without the BPF ring buffer. The
/// feature probe decides (vendor kernels such as RHEL 8's 4.18 backport it); where the
/// probe itself fails, the version does.
pub fn check_kernel(release: &str, ringbuf: Result<bool, String>) -> Result<()> {
    let (maj, min) = MIN_KERNEL;
    let old = release_version(release).is_some_and(|v| v < MIN_KERNEL);
    let missing = match ringbuf {
        Ok(has) => !has,
        Err(_) => old,
    };
    if missing {
        bail!(
            "this kernel ({release}) has no BPF ring buffer, which every redis-trace kernel \
             program writes its records to: Linux {maj}.{min} or later is needed (Debian 11's \
             5.10 and newer work; see docs/compatibility.md). Nothing was loaded"
        );
    }
    Ok(())
}

pub fn load(root: &Path, settings: &Settings<'_>) -> Result<Loaded> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    check_kernel(
        &release,
        aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| format!("{e:#}")),
    )?;
    if OBJECT.is_empty() {
        bail!(
            "this redis-trace binary was built without its eBPF programs (the eBPF toolchain \
             was missing at build time); run scripts/setup.sh, then rebuild with `cargo xtask build`"
        );
    }
    let (mut cfg, reasons, unavailable) = configure(root);
    if let Some(scope) = settings.netns_scope {
        if cfg.netns.skc_net == redis_trace_ebpf::ABSENT_OFFSET {
            bail!(
                "--pid, --netns and --container need each socket's network namespace, which \
                 this kernel does not give (no BTF at /sys/kernel/btf/vmlinux); trace by \
                 --port instead"
            );
        }
        if scope.len() > MAX_SCOPED_NETNS as usize {
            bail!("at most {MAX_SCOPED_NETNS} network namespaces can be traced at once");
        }
        cfg.netns.scoped = 1;
    }
    if let Some((p, st)) = unavailable.iter().find(|(p, _)| p.essential) {
        bail!(
            "this kernel cannot run the capture: {} is unusable ({}); without it there are {}",
            p.id(),
            st.why.as_deref().unwrap_or("unknown"),
            p.cost
        );
    }
    if settings.ports.len() > MAX_PORTS as usize {
        bail!("at most {MAX_PORTS} ports can be traced at once");
    }

    let mut ebpf = loader_without_kernel_btf()
        .btf(None)
        .override_global("CONFIG", &cfg, true)
        .load(OBJECT)
        .context(
            "loading the eBPF object into the kernel (are you root, with CAP_BPF and CAP_PERFMON?)",
        )?;

    {
        let mut bits: Array<_, u32> =
            Array::try_from(ebpf.map_mut("PORT_BITS").context("map PORT_BITS missing")?)?;
        for (i, w) in super::packets::port_bits(settings.ports)
            .into_iter()
            .enumerate()
        {
            if w != 0 {
                bits.set(i as u32, w, 0)
                    .context("filling the port filter")?;
            }
        }
        if let Some(scope) = settings.netns_scope {
            let mut allowed: HashMap<_, u32, u8> = HashMap::try_from(
                ebpf.map_mut("NETNS_SCOPE")
                    .context("map NETNS_SCOPE missing")?,
            )?;
            for &ns in scope {
                allowed
                    .insert(ns, 1, 0)
                    .context("filling the namespace scope")?;
            }
        }
        let mut names: Array<_, [u8; 16]> = Array::try_from(
            ebpf.map_mut("PROC_NAMES")
                .context("map PROC_NAMES missing")?,
        )?;
        for (i, name) in settings
            .proc_names
            .iter()
            .take(MAX_PROC_NAMES as usize)
            .enumerate()
        {
            // comm is at most 15 bytes plus NUL: the kernel truncates longer names.
            let mut raw = [0u8; 16];
            let bytes = name.as_bytes();
            let n = bytes.len().min(15);
            raw[..n].copy_from_slice(&bytes[..n]);
            names
                .set(i as u32, raw, 0)
                .context("filling process names")?;
        }
    }

    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)
        .context("opening the ring buffer")?;

    let mut attached = Vec::new();
    let mut unavailable: Vec<ProbeStatus> = unavailable.into_iter().map(|(_, s)| s).collect();
    let skipped: Vec<String> = unavailable.iter().map(|s| s.probe.clone()).collect();
    for probe in PROBES {
        if skipped.contains(&probe.id()) {
            continue;
        }
        match attach(&mut ebpf, &probe) {
            Ok(()) => attached.push(probe.id()),
            Err(e) if !probe.essential => unavailable.push(ProbeStatus {
                probe: probe.id(),
                why: Some(short_verifier_log(&format!("{e:#}"))),
                cost: Some(probe.cost.to_string()),
            }),
            Err(e) => return Err(e),
        }
    }
    // The packet programs: what arrived at each end of the connections that leave the
    // loopback (TTL, IP ID, the RST's and FIN's numbers). Never essential.
    let left_out = std::env::var(WITHOUT_PROBES).unwrap_or_default();
    let packets = if left_out.split(',').any(|p| p.trim() == PACKETS_PROBE) {
        Err(anyhow::anyhow!(
            "left out by {WITHOUT_PROBES} (how the capture degrades without it)"
        ))
    } else {
        let mut notes = Vec::new();
        let r = packets::attach(&mut ebpf, &mut notes);
        for n in &notes {
            crate::stderr::note(n);
        }
        r
    };
    match packets {
        Ok(()) => attached.push(PACKETS_PROBE.to_string()),
        Err(e) => unavailable.push(ProbeStatus {
            probe: PACKETS_PROBE.to_string(),
            why: Some(short_verifier_log(&format!("{e:#}"))),
            cost: Some(PACKETS_COST.to_string()),
        }),
    }
    crate::classify::set_missing_probes(unavailable.clone());
    Ok(Loaded {
        ebpf,
        ring,
        attached,
        unavailable,
        reasons,
    })
}

/// An `EbpfLoader` that has not parsed the kernel's BTF.
///
/// Workaround: aya 0.14's `EbpfLoader::new()` always parses /sys/kernel/btf/vmlinux
/// (5 MB: ~250 ms and ~14 MB of peak memory here) even when BTF relocations are then
/// turned off with `.btf(None)`, and these programs need none (Rust eBPF emits no CO-RE
/// relocations; layouts come from the format files). So a short-lived thread, in a mount
/// namespace of its own, hides that one file behind /dev/null while it builds the
/// loader. Nothing else is affected: the rest of the load runs on the caller's thread.
/// Where any step fails, the loader is built the ordinary, slower way.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    let hidden = std::thread::spawn(|| {
        let c = |s: &str| std::ffi::CString::new(s).ok();
        let (Some(root), Some(null), Some(vmlinux)) =
            (c("/"), c("/dev/null"), c("/sys/kernel/btf/vmlinux"))
        else {
            return None;
        };
        // SAFETY: plain syscalls on NUL-terminated strings that outlive them; they only
        // change this thread's own (new) mount namespace, which ends with the thread.
        let ok = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    null.as_ptr(),
                    vmlinux.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
        };
        ok.then(EbpfLoader::new)
    })
    .join()
    .ok()
    .flatten();
    hidden.unwrap_or_else(EbpfLoader::new)
}

/// A verifier refusal carries the verifier's whole log (hundreds of lines): keep the
/// sentence before it and the log's last lines, where the verifier says what it refused.
fn short_verifier_log(why: &str) -> String {
    const MARK: &str = "Verifier output:";
    let Some(at) = why.find(MARK) else {
        return why.to_string();
    };
    let log = &why[at + MARK.len()..];
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with(';')
                && !["verification time", "stack depth", "processed "]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .collect();
    let tail: Vec<&str> = lines.iter().rev().take(2).rev().copied().collect();
    format!("{} verifier: {}", why[..at].trim_end(), tail.join(" / "))
}

fn attach(ebpf: &mut Ebpf, probe: &Probe) -> Result<()> {
    let what = probe.id();
    let prog: &mut TracePoint = ebpf
        .program_mut(probe.program())
        .with_context(|| format!("program for {what} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program for {what} is not a tracepoint program"))?;
    prog.load().with_context(|| {
        format!("loading the program for {what} (the kernel's verifier refused it)")
    })?;
    prog.attach(probe.category, probe.name)
        .with_context(|| format!("attaching {what}"))?;
    Ok(())
}

/// Watches these processes' OOM kills, fatal signals and exit, whatever their name.
pub fn watch_pids(ebpf: &mut Ebpf, pids: &[u32]) -> Result<()> {
    let mut map: HashMap<_, u32, [u8; 16]> = HashMap::try_from(
        ebpf.map_mut("WATCHED_PIDS")
            .context("map WATCHED_PIDS missing")?,
    )?;
    if pids.len() > redis_trace_ebpf::MAX_WATCHED_PIDS as usize {
        crate::stderr::warn(&format!(
            "{} Redis processes found; the kernel watches the first {} \
             (OOM kills, signals and exits of the others are seen by name only)",
            pids.len(),
            redis_trace_ebpf::MAX_WATCHED_PIDS
        ));
    }
    for &pid in pids
        .iter()
        .take(redis_trace_ebpf::MAX_WATCHED_PIDS as usize)
    {
        // The process's name, for its exit record (the last thread out may be any).
        let mut raw = [0u8; 16];
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            let c = c.trim_end().as_bytes();
            let n = c.len().min(15);
            raw[..n].copy_from_slice(&c[..n]);
        }
        map.insert(pid, raw, 0).context("filling watched pids")?;
    }
    Ok(())
}

/// Sums of the per-CPU counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    pub ring_full: u64,
    pub conn_map_full: u64,
    pub own_socks_full: u64,
    pub flows_full: u64,
    pub read_failed: u64,
    pub hits: u64,
}

pub fn counters(ebpf: &Ebpf) -> Result<KernelCounters> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("COUNTERS").context("map COUNTERS missing")?)?;
    let sum = |i: u32| -> Result<u64> {
        Ok(map
            .get(&i, 0)
            .with_context(|| format!("reading counter {i}"))?
            .iter()
            .sum())
    };
    Ok(KernelCounters {
        ring_full: sum(counter::RING_FULL)?,
        conn_map_full: sum(counter::CONN_MAP_FULL)?,
        read_failed: sum(counter::READ_FAILED)?,
        hits: sum(counter::HITS)?,
        own_socks_full: sum(counter::OWN_SOCKS_FULL)?,
        flows_full: sum(counter::FLOWS_FULL)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions() {
        assert_eq!(release_version("5.10.0-35-amd64"), Some((5, 10)));
        assert_eq!(release_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(release_version("6.1.176"), Some((6, 1)));
        assert_eq!(release_version("garbage"), None);
    }

    #[test]
    fn a_kernel_without_the_ring_buffer_is_refused_clearly() {
        let err = check_kernel("4.19.0-27-amd64", Ok(false)).expect_err("no ring buffer");
        let text = format!("{err:#}");
        assert!(text.contains("4.19.0-27-amd64"), "{text}");
        assert!(text.contains("Linux 5.8 or later"), "{text}");
        // The probe decides: a vendor 4.18 with the ring buffer backported runs.
        assert!(check_kernel("4.18.0-553.el8_10.x86_64", Ok(true)).is_ok());
        // Where the probe fails, the version decides.
        assert!(check_kernel("5.4.0-1-amd64", Err("EPERM".into())).is_err());
        assert!(check_kernel("5.10.0-35-amd64", Err("EPERM".into())).is_ok());
        assert!(check_kernel("6.1.0-50-amd64", Ok(true)).is_ok());
    }

    #[test]
    fn a_verifier_log_is_cut_to_its_verdict() {
        let why = "loading the program for oom:mark_victim (the kernel's verifier refused it): \
                   the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier \
                   output: reg type unsupported for arg#0 function mark_victim#9\n0: R1=ctx() \
                   R10=fp0\n; #[tracepoint]\n214: (0f) r7 += r1\nmath between ctx pointer and \
                   register with unbounded min value is not allowed\nverification time 15289 \
                   usec\nstack depth 232+0\nprocessed 434 insns (limit 1000000)\n";
        let short = short_verifier_log(why);
        assert!(
            short.starts_with("loading the program for oom:mark_victim"),
            "{short}"
        );
        assert!(short.contains("math between ctx pointer"), "{short}");
        assert!(!short.contains("R10=fp0"), "{short}");
    }
}
