//! Turns this kernel's tracepoint format files into the offsets the kernel programs read
//! (`redis_trace_ebpf::Config`). Field offsets move between kernel versions and fields
//! come and go (`tcp_send_reset` gained `reason` and sockaddr-shaped addresses in 6.10),
//! so nothing here is hard-coded: a probe whose fields are missing is reported as
//! unavailable, with what that costs, and the capture runs with the rest.
use anyhow::{Context as _, Result, bail};
use redis_trace_ebpf::{
    ABSENT, AddrLayout, Config, ErrorReportLayout, ExitLayout, OomLayout, ResetLayout,
    SetStateLayout, SignalLayout,
};

use crate::kernel::tracefs::Format;

/// One tracepoint the capture uses.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub category: &'static str,
    pub name: &'static str,
    /// What the capture loses without it, in an operator's words.
    pub cost: &'static str,
    /// Whether the capture is pointless without it.
    pub essential: bool,
}

impl Probe {
    /// The program in the eBPF object: named after the tracepoint.
    pub fn program(&self) -> &'static str {
        self.name
    }

    pub fn id(&self) -> String {
        format!("{}:{}", self.category, self.name)
    }
}

pub const PROBES: [Probe; 7] = [
    Probe {
        category: "sock",
        name: "inet_sock_set_state",
        cost: "no connection records at all",
        essential: true,
    },
    Probe {
        category: "tcp",
        name: "tcp_send_reset",
        cost: "no reset reasons, and aborts cannot be told from timeouts (their task is not named)",
        essential: false,
    },
    Probe {
        category: "tcp",
        name: "tcp_receive_reset",
        cost: "a received RST is not seen: such connections look like plain aborts of the other end",
        essential: false,
    },
    Probe {
        category: "sock",
        name: "inet_sk_error_report",
        cost: "retransmission and keepalive timeouts are not told apart from aborts",
        essential: false,
    },
    Probe {
        category: "oom",
        name: "mark_victim",
        cost: "no records of OOM kills",
        essential: false,
    },
    Probe {
        category: "signal",
        name: "signal_generate",
        cost: "no records of fatal signals sent to Redis, nor of who sent them",
        essential: false,
    },
    Probe {
        category: "sched",
        name: "sched_process_exit",
        cost: "no records of Redis exiting",
        essential: false,
    },
];

/// Fatal signals worth a record: SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGABRT, SIGBUS,
/// SIGFPE, SIGKILL, SIGSEGV, SIGTERM, SIGXCPU, SIGXFSZ, SIGSYS.
pub const FATAL_SIGNALS: [i32; 13] = [1, 2, 3, 4, 6, 7, 8, 9, 11, 15, 24, 25, 31];

/// Reset reasons only ever sent from the closing task's own context (close() with unread
/// data, tcp_disconnect() with data queued): `current` then names who reset.
/// TCP_STATE is not here: the FIN_WAIT2 timer sends it too (tcp_keepalive_timer).
const TASK_REASONS: [&str; 2] = ["TCP_ABORT_ON_CLOSE", "TCP_DISCONNECT_WITH_DATA"];

/// The offset of a field whose size is one of `sizes`; an error names what is wrong.
fn offset(f: &Format, name: &str, sizes: &[u16]) -> Result<u16> {
    let field = f
        .field(name)
        .with_context(|| format!("{} has no field `{name}`", f.name))?;
    if !sizes.contains(&field.size) {
        bail!(
            "{}: field `{name}` is {} bytes, expected {:?}",
            f.name,
            field.size,
            sizes
        );
    }
    Ok(field.offset)
}

/// Like [`offset`], but a missing field is [`ABSENT`] rather than an error.
fn optional(f: &Format, name: &str, sizes: &[u16]) -> Result<u16> {
    if f.field(name).is_none() {
        return Ok(ABSENT);
    }
    offset(f, name, sizes)
}

fn addr_layout(f: &Format) -> Result<AddrLayout> {
    let mut l = AddrLayout::ABSENT;
    if f.field("sport").is_some() {
        l.sport = offset(f, "sport", &[2])?;
        l.dport = offset(f, "dport", &[2])?;
        // 5.10's tcp_send_reset/tcp_receive_reset have no `family`: the kernel side
        // then tells it from `saddr_v6`, which holds an IPv4 address v4-mapped.
        l.family = optional(f, "family", &[2])?;
        l.saddr = offset(f, "saddr", &[4])?;
        l.daddr = offset(f, "daddr", &[4])?;
        l.saddr_v6 = offset(f, "saddr_v6", &[16])?;
        l.daddr_v6 = offset(f, "daddr_v6", &[16])?;
    } else {
        // Since 6.10, tcp_send_reset stores struct sockaddr_in/in6 in 28-byte buffers.
        l.sockaddr_src = offset(f, "saddr", &[28])?;
        l.sockaddr_dst = offset(f, "daddr", &[28])?;
    }
    Ok(l)
}

pub fn set_state(f: &Format) -> Result<SetStateLayout> {
    Ok(SetStateLayout {
        oldstate: offset(f, "oldstate", &[4])?,
        newstate: offset(f, "newstate", &[4])?,
        protocol: offset(f, "protocol", &[1, 2])?,
        protocol_size: f.field("protocol").map_or(2, |p| p.size),
        skaddr: optional(f, "skaddr", &[8])?,
        _pad: 0,
        addr: addr_layout(f)?,
    })
}

pub fn reset(f: &Format) -> Result<ResetLayout> {
    Ok(ResetLayout {
        state: optional(f, "state", &[4])?,
        reason: optional(f, "reason", &[4])?,
        skaddr: optional(f, "skaddr", &[8])?,
        _pad: 0,
        addr: addr_layout(f)?,
    })
}

pub fn error_report(f: &Format) -> Result<ErrorReportLayout> {
    Ok(ErrorReportLayout {
        error: offset(f, "error", &[4])?,
        protocol: offset(f, "protocol", &[2])?,
        addr: addr_layout(f)?,
    })
}

pub fn oom(f: &Format) -> Result<OomLayout> {
    let comm = f.field("comm");
    let comm_loc = match comm {
        Some(c) if c.data_loc && c.size == 4 => c.offset,
        _ => ABSENT,
    };
    Ok(OomLayout {
        pid: offset(f, "pid", &[4])?,
        comm_loc,
        total_vm: optional(f, "total_vm", &[8])?,
        anon_rss: optional(f, "anon_rss", &[8])?,
        file_rss: optional(f, "file_rss", &[8])?,
        shmem_rss: optional(f, "shmem_rss", &[8])?,
        uid: optional(f, "uid", &[4])?,
        pgtables: optional(f, "pgtables", &[8])?,
        oom_score_adj: optional(f, "oom_score_adj", &[2])?,
        _pad: 0,
    })
}

pub fn signal(f: &Format) -> Result<SignalLayout> {
    Ok(SignalLayout {
        sig: offset(f, "sig", &[4])?,
        code: optional(f, "code", &[4])?,
        comm: offset(f, "comm", &[16])?,
        pid: offset(f, "pid", &[4])?,
        result: optional(f, "result", &[4])?,
        _pad: 0,
    })
}

pub fn exit(f: &Format) -> Result<ExitLayout> {
    Ok(ExitLayout {
        comm: offset(f, "comm", &[16])?,
        pid: offset(f, "pid", &[4])?,
        group_dead: optional(f, "group_dead", &[1])?,
        _pad: 0,
    })
}

/// Reset reason names, indexed by number, from `tcp_send_reset`'s print format.
#[derive(Debug, Clone, Default)]
pub struct ResetReasons(pub Vec<(u32, String)>);

impl ResetReasons {
    pub fn from_format(f: &Format) -> Self {
        let pairs = f.symbolic("reason").unwrap_or_default();
        Self(
            pairs
                .into_iter()
                .filter_map(|(n, name)| u32::try_from(n).ok().map(|n| (n, name)))
                .collect(),
        )
    }

    pub fn name(&self, n: u32) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    /// Bit n set for each reason n that only the closing task sends.
    pub fn task_mask(&self) -> u64 {
        self.0
            .iter()
            .filter(|(n, name)| *n < 64 && TASK_REASONS.contains(&name.as_str()))
            .fold(0, |m, (n, _)| m | (1u64 << n))
    }
}

/// Fills `cfg` with the layout of one probe.
pub fn apply(cfg: &mut Config, probe: &Probe, f: &Format) -> Result<()> {
    match probe.name {
        "inet_sock_set_state" => cfg.set_state = set_state(f)?,
        "tcp_send_reset" => cfg.send_reset = reset(f)?,
        "tcp_receive_reset" => cfg.receive_reset = reset(f)?,
        "inet_sk_error_report" => cfg.error_report = error_report(f)?,
        "mark_victim" => cfg.oom = oom(f)?,
        "signal_generate" => cfg.signal = signal(f)?,
        "sched_process_exit" => cfg.exit = exit(f)?,
        other => bail!("no layout for probe {other}"),
    }
    Ok(())
}

pub fn signal_mask() -> u64 {
    FATAL_SIGNALS.iter().fold(0, |m, s| m | (1u64 << s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::tracefs::parse_format;

    fn fixture(path: &str) -> Format {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats/");
        let text = std::fs::read_to_string(format!("{dir}{path}"))
            .unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        parse_format(&text).unwrap_or_else(|e| panic!("fixture {path}: {e:#}"))
    }

    #[test]
    fn send_reset_6_18_uses_sockaddr_buffers_and_has_reasons() {
        let f = fixture("6.18/tcp__tcp_send_reset.format");
        let l = reset(&f).expect("layout");
        assert_eq!(l.reason, 28);
        assert_eq!(l.state, 24);
        assert_eq!(l.addr.sockaddr_src, 32);
        assert_eq!(l.addr.sockaddr_dst, 60);
        assert_eq!(l.addr.sport, ABSENT);
        let reasons = ResetReasons::from_format(&f);
        assert_eq!(reasons.name(11), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(reasons.name(14), Some("TCP_STATE"));
        assert_eq!(reasons.task_mask(), (1 << 11) | (1 << 16));
    }

    #[test]
    fn set_state_6_18() {
        let f = fixture("6.18/sock__inet_sock_set_state.format");
        let l = set_state(&f).expect("layout");
        assert_eq!((l.oldstate, l.newstate, l.protocol), (16, 20, 30));
        assert_eq!((l.addr.sport, l.addr.dport, l.addr.family), (24, 26, 28));
        assert_eq!(
            (l.addr.saddr, l.addr.saddr_v6, l.addr.daddr_v6),
            (32, 40, 56)
        );
    }

    #[test]
    fn send_reset_before_6_10_has_split_fields_and_no_reason() {
        let f = fixture("5.15/tcp__tcp_send_reset.format");
        let l = reset(&f).expect("layout");
        assert_eq!(l.reason, ABSENT);
        assert_eq!(l.addr.sockaddr_src, ABSENT);
        assert_ne!(l.addr.sport, ABSENT);
        assert_ne!(l.addr.saddr_v6, ABSENT);
        assert_eq!(ResetReasons::from_format(&f).task_mask(), 0);
    }

    #[test]
    fn set_state_5_4_has_a_one_byte_protocol() {
        let l = set_state(&fixture("5.4/sock__inet_sock_set_state.format")).expect("layout");
        assert_eq!((l.protocol, l.protocol_size), (30, 1));
        assert_eq!(l.addr.saddr, 31);
    }

    #[test]
    fn receive_reset_without_family_reads_the_v6_addresses() {
        // 4.19 to 5.10: ports and both address shapes, no `family` (the kernel side
        // tells the family from saddr_v6, v4-mapped for IPv4).
        for path in [
            "4.19/tcp__tcp_receive_reset.format",
            "5.10/tcp__tcp_receive_reset.format",
            "5.10/tcp__tcp_send_reset.format",
        ] {
            let l = reset(&fixture(path)).unwrap_or_else(|e| panic!("{path}: {e:#}"));
            assert_eq!(l.addr.family, ABSENT, "{path}");
            assert_ne!(l.addr.saddr_v6, ABSENT, "{path}");
            assert_ne!(l.addr.sport, ABSENT, "{path}");
            assert_eq!(l.reason, ABSENT, "{path}");
        }
    }

    #[test]
    fn wrong_field_size_is_refused() {
        let text = "name: inet_sock_set_state\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int oldstate;\toffset:16;\tsize:8;\tsigned:1;\n\nprint fmt: \"\"\n";
        let f = parse_format(text).expect("parse");
        let err = set_state(&f).expect_err("size 8 must be refused");
        assert!(format!("{err:#}").contains("oldstate"), "{err:#}");
    }

    #[test]
    fn oom_6_1_has_the_backported_fields_and_5_10_only_the_pid() {
        // Debian 12's 6.1.176 carries 6.8's extended mark_victim (comm, rss, ...): the
        // program that reads its comm must pass 6.1's verifier (process.rs).
        let o = oom(&fixture("6.1/oom__mark_victim.format")).expect("oom 6.1");
        assert_eq!((o.pid, o.comm_loc, o.oom_score_adj), (8, 12, 64));
        let o = oom(&fixture("5.10/oom__mark_victim.format")).expect("oom 5.10");
        assert_eq!(o.pid, 8);
        assert_eq!((o.comm_loc, o.total_vm, o.uid), (ABSENT, ABSENT, ABSENT));
    }

    #[test]
    fn set_state_5_10_has_family() {
        let l = set_state(&fixture("5.10/sock__inet_sock_set_state.format")).expect("layout");
        assert_ne!(l.addr.family, ABSENT);
        assert_eq!(l.addr.sockaddr_src, ABSENT);
    }

    #[test]
    fn oom_and_signal_and_exit_6_18() {
        let o = oom(&fixture("6.18/oom__mark_victim.format")).expect("oom");
        assert_eq!((o.pid, o.comm_loc, o.oom_score_adj), (8, 12, 64));
        let s = signal(&fixture("6.18/signal__signal_generate.format")).expect("signal");
        assert_eq!(
            (s.sig, s.code, s.comm, s.pid, s.result),
            (8, 16, 20, 36, 44)
        );
        let e = exit(&fixture("6.18/sched__sched_process_exit.format")).expect("exit");
        assert_eq!((e.comm, e.pid, e.group_dead), (8, 24, 32));
    }
}
