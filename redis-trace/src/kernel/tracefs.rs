//! Reading tracepoint `format` files from tracefs.
//!
//! Tracepoint record layouts change between kernels (e.g. `tcp:tcp_send_reset` lost
//! `sport`/`dport` and gained `reason` in 6.10), so offsets are taken from the running
//! kernel's format file instead of being hard-coded.

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};

/// One parsed tracepoint format file (/sys/kernel/tracing/events/<cat>/<name>/format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name with any array suffix stripped ("__u8 saddr[28]" -> "saddr").
    pub name: String,
    /// Declared C type without the name, e.g. "const void *" or "__data_loc char[]".
    pub c_type: String,
    pub offset: u16,
    pub size: u16,
    pub signed: bool,
    /// Element count of a fixed array; None for scalars and `__data_loc` strings.
    pub array_len: Option<u32>,
    /// The field holds a u32 (length << 16 | offset) pointing at dynamic data.
    pub data_loc: bool,
}

/// Parses the text of a tracefs format file.
pub fn parse_format(text: &str) -> Result<Format> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    let mut print_fmt = String::new();

    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("format line {}: {line:?}", idx + 1);
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = Some(rest.trim().parse::<u32>().with_context(at)?);
        } else if let Some(rest) = line.strip_prefix("field:") {
            fields.push(parse_field(rest).with_context(at)?);
        } else if let Some(rest) = line.strip_prefix("print fmt:") {
            print_fmt = rest.trim().to_string();
        }
        // Anything else ("format:", blank lines) carries no layout information.
    }

    let name = name.ok_or_else(|| anyhow!("format has no `name:` line"))?;
    if fields.is_empty() {
        bail!("format for {name} has no `field:` lines");
    }
    Ok(Format {
        name,
        id,
        fields,
        print_fmt,
    })
}

/// Parses what follows `field:`, e.g. `__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;`.
fn parse_field(rest: &str) -> Result<Field> {
    let mut parts = rest.split(';').map(str::trim).filter(|p| !p.is_empty());
    let decl = parts.next().ok_or_else(|| anyhow!("empty field"))?;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| anyhow!("expected key:value, got {part:?}"))?;
        let value = value.trim();
        match key.trim() {
            "offset" => offset = Some(value.parse::<u16>().context("bad offset")?),
            "size" => size = Some(value.parse::<u16>().context("bad size")?),
            "signed" => signed = value == "1",
            _ => {} // Unknown attributes are ignored so newer kernels still parse.
        }
    }
    let offset = offset.ok_or_else(|| anyhow!("field has no offset"))?;
    let size = size.ok_or_else(|| anyhow!("field has no size"))?;

    // Split "<type> <name>[<len>]". The name is the last word before a trailing
    // "[...]"; "__data_loc char[] comm" has its brackets in the type instead.
    let (head, bracket) = match decl
        .strip_suffix(']')
        .and_then(|d| d.rfind('[').map(|i| (d, i)))
    {
        Some((d, open)) => (&d[..open], Some(&d[open + 1..])),
        None => (decl, None),
    };
    let head = head.trim_end();
    // The separator may be a multi-byte space (U+00A0, U+3000): split after its last byte.
    let (split, sep) = head
        .char_indices()
        .rfind(|&(_, c)| c.is_whitespace() || c == '*')
        .ok_or_else(|| anyhow!("cannot split type and name in {decl:?}"))?;
    let after = split + sep.len_utf8();
    let name = head[after..].to_string();
    let c_type = head[..after].trim().to_string();
    if name.is_empty() || c_type.is_empty() {
        bail!("cannot split type and name in {decl:?}");
    }

    let array_len = bracket.and_then(|len| match len.trim().parse::<u32>() {
        Ok(n) => Some(n),
        // Older kernels print the unexpanded length ("saddr[sizeof(struct
        // sockaddr_in6)]"); for byte arrays the size is the element count.
        Err(_) if is_byte_type(&c_type) => Some(u32::from(size)),
        Err(_) => None,
    });
    Ok(Field {
        data_loc: c_type.starts_with("__data_loc"),
        name,
        c_type,
        offset,
        size,
        signed,
        array_len,
    })
}

fn is_byte_type(c_type: &str) -> bool {
    matches!(
        c_type,
        "__u8" | "u8" | "__s8" | "s8" | "char" | "unsigned char" | "signed char"
    )
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The event's own fields, without the `common_*` header every record starts with
    /// (some kernels add more than the usual four, so match on the prefix).
    pub fn own_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .iter()
            .filter(|f| !f.name.starts_with("common_"))
    }

    /// (number, name) pairs of the `__print_symbolic(REC-><field>, ...)` table in
    /// `print_fmt`, in order. Entries whose key is a C identifier rather than a number
    /// (the kernel left an enum unresolved) are skipped, so this can be `Some(empty)`.
    pub fn symbolic(&self, field: &str) -> Option<Vec<(i64, String)>> {
        let needle = "__print_symbolic(";
        let mut rest = self.print_fmt.as_str();
        while let Some(pos) = rest.find(needle) {
            rest = &rest[pos + needle.len()..];
            let Some(after) = rest.trim_start().strip_prefix("REC->") else {
                continue;
            };
            let Some(after) = after.strip_prefix(field) else {
                continue;
            };
            // Require the argument to end here, so "state" does not match "state2".
            if let Some(table) = after.trim_start().strip_prefix(',') {
                return Some(parse_symbol_table(table));
            }
        }
        None
    }
}

/// Parses `{ 0, "A" }, { 1, "B" })...` up to the closing parenthesis.
fn parse_symbol_table(mut s: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        let Some(entry) = s.strip_prefix('{') else {
            return out; // ')' or anything unexpected ends the table.
        };
        let Some((key, after_key)) = entry.split_once(',') else {
            return out;
        };
        let Some((label, after_label)) = parse_c_string(after_key.trim_start()) else {
            return out;
        };
        let Some(close) = after_label.find('}') else {
            return out;
        };
        if let Some(n) = parse_c_number(key.trim()) {
            out.push((n, label));
        }
        s = after_label[close + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Reads a double-quoted C string at the start of `s`; returns it and the remainder.
fn parse_c_string(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            _ => out.push(c),
        }
    }
    None
}

/// Decimal, 0x-hex, optionally negative. Values above i64::MAX (e.g. flag masks)
/// keep their bit pattern.
fn parse_c_number(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d.trim_start()),
        None => (false, s),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    } as i64;
    Some(if neg { value.wrapping_neg() } else { value })
}

/// Root of tracefs: first of "/sys/kernel/tracing", "/sys/kernel/debug/tracing" whose
/// "events" dir exists.
pub fn find_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| root.join("events").is_dir())
}

/// Reads and parses <root>/events/<category>/<name>/format.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading tracepoint format {}", path.display()))?;
    parse_format(&text).with_context(|| format!("parsing tracepoint format {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($path:literal) => {
            parse_format(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/formats/",
                $path
            )))
            .expect($path)
        };
    }

    fn field<'a>(f: &'a Format, name: &str) -> &'a Field {
        f.field(name)
            .unwrap_or_else(|| panic!("{} has no field {name}", f.name))
    }

    fn own_names(f: &Format) -> Vec<&str> {
        f.own_fields().map(|x| x.name.as_str()).collect()
    }

    #[test]
    fn send_reset_6_18_has_reason_and_sockaddrs() {
        let f = fixture!("6.18/tcp__tcp_send_reset.format");
        assert_eq!(f.name, "tcp_send_reset");
        assert_eq!(f.id, Some(2280));
        assert_eq!(
            own_names(&f),
            ["skbaddr", "skaddr", "state", "reason", "saddr", "daddr"]
        );
        assert_eq!(f.fields.len(), 10);
        let reason = field(&f, "reason");
        assert_eq!(
            (
                reason.c_type.as_str(),
                reason.offset,
                reason.size,
                reason.signed
            ),
            ("enum sk_rst_reason", 28, 4, false)
        );
        let saddr = field(&f, "saddr");
        assert_eq!(
            (saddr.c_type.as_str(), saddr.offset, saddr.size),
            ("__u8", 32, 28)
        );
        assert_eq!(saddr.array_len, Some(28));
        assert_eq!(field(&f, "daddr").offset, 60);
        let skb = field(&f, "skbaddr");
        assert_eq!(
            (skb.c_type.as_str(), skb.offset, skb.size),
            ("const void *", 8, 8)
        );
        assert_eq!(skb.array_len, None);
        assert!(field(&f, "state").signed);
        assert!(f.field("sport").is_none());
        assert!(f.field("family").is_none());
    }

    #[test]
    fn send_reset_6_18_symbolic_tables() {
        let f = fixture!("6.18/tcp__tcp_send_reset.format");
        let reasons = f.symbolic("reason").expect("reason table");
        assert_eq!(reasons.len(), 26);
        assert_eq!(reasons[0], (0, "NOT_SPECIFIED".to_string()));
        assert!(reasons.contains(&(11, "TCP_ABORT_ON_CLOSE".to_string())));
        assert!(reasons.contains(&(14, "TCP_STATE".to_string())));
        assert_eq!(reasons[25], (25, "MAX".to_string()));
        // 6.18 leaves the TCP state enum unresolved ({ TCP_ESTABLISHED, "..." }).
        assert_eq!(f.symbolic("state"), Some(vec![]));
        assert_eq!(f.symbolic("skbaddr"), None);
        assert_eq!(f.symbolic("reaso"), None);
    }

    #[test]
    fn send_reset_pre_6_10_has_ports_and_no_reason() {
        let f = fixture!("5.15/tcp__tcp_send_reset.format");
        assert_eq!(
            own_names(&f),
            [
                "skbaddr", "skaddr", "state", "sport", "dport", "family", "saddr", "daddr",
                "saddr_v6", "daddr_v6"
            ]
        );
        assert!(f.field("reason").is_none());
        assert_eq!(
            (field(&f, "state").offset, field(&f, "state").size),
            (24, 4)
        );
        assert_eq!(
            (field(&f, "sport").offset, field(&f, "sport").size),
            (28, 2)
        );
        assert_eq!(field(&f, "dport").offset, 30);
        assert_eq!(field(&f, "family").offset, 32);
        let saddr = field(&f, "saddr");
        assert_eq!(
            (saddr.offset, saddr.size, saddr.array_len),
            (34, 4, Some(4))
        );
        assert_eq!(field(&f, "daddr_v6").offset, 58);
        assert_eq!(
            f.symbolic("family"),
            Some(vec![(2, "AF_INET".into()), (10, "AF_INET6".into())])
        );
    }

    #[test]
    fn receive_reset_with_and_without_family() {
        let new = fixture!("6.18/tcp__tcp_receive_reset.format");
        assert_eq!(field(&new, "family").offset, 20);
        assert_eq!(field(&new, "saddr").offset, 22);
        let cookie = field(&new, "sock_cookie");
        assert_eq!((cookie.offset, cookie.size), (64, 8));
        assert_eq!(
            new.symbolic("family"),
            Some(vec![(2, "AF_INET".into()), (10, "AF_INET6".into())])
        );

        let old = fixture!("4.19/tcp__tcp_receive_reset.format");
        assert_eq!(old.id, Some(1133));
        assert!(old.field("family").is_none());
        assert_eq!(field(&old, "sport").offset, 16);
        assert_eq!(field(&old, "saddr").offset, 20);
        assert_eq!(field(&old, "daddr_v6").offset, 44);
        assert_eq!(field(&old, "sock_cookie").offset, 64);
        assert_eq!(old.symbolic("family"), None);

        let destroy = fixture!("6.18/tcp__tcp_destroy_sock.format");
        assert_eq!(own_names(&destroy), own_names(&new));
    }

    #[test]
    fn inet_sock_set_state_5_4_vs_6_18() {
        let new = fixture!("6.18/sock__inet_sock_set_state.format");
        let proto = field(&new, "protocol");
        assert_eq!(
            (proto.c_type.as_str(), proto.offset, proto.size),
            ("__u16", 30, 2)
        );
        assert_eq!(field(&new, "saddr").offset, 32);
        let states = new.symbolic("newstate").expect("newstate table");
        assert_eq!(states.len(), 12);
        assert!(states.contains(&(7, "TCP_CLOSE".to_string())));
        assert!(
            new.symbolic("protocol")
                .expect("protocol")
                .contains(&(262, "IPPROTO_MPTCP".into()))
        );
        // "REC->state" must not match "REC->oldstate"/"REC->newstate".
        assert_eq!(new.symbolic("state"), None);

        // 5.4 (published dump, space-indented): protocol was a __u8, shifting saddr.
        let old = fixture!("5.4/sock__inet_sock_set_state.format");
        assert_eq!(old.id, Some(1384));
        let proto = field(&old, "protocol");
        assert_eq!(
            (proto.c_type.as_str(), proto.offset, proto.size),
            ("__u8", 30, 1)
        );
        assert_eq!(field(&old, "saddr").offset, 31);
        assert_eq!(field(&old, "daddr_v6").offset, 55);
        assert_eq!(field(&old, "oldstate").offset, 16);
        let protos = old.symbolic("protocol").expect("protocol");
        assert_eq!(
            protos,
            [
                (6, "IPPROTO_TCP".into()),
                (33, "IPPROTO_DCCP".into()),
                (132, "IPPROTO_SCTP".into())
            ]
        );
    }

    #[test]
    fn other_6_18_events() {
        let oom = fixture!("6.18/oom__mark_victim.format");
        let comm = field(&oom, "comm");
        assert!(comm.data_loc);
        assert_eq!(comm.c_type, "__data_loc char[]");
        assert_eq!((comm.offset, comm.size, comm.array_len), (12, 4, None));
        let adj = field(&oom, "oom_score_adj");
        assert_eq!(
            (adj.c_type.as_str(), adj.offset, adj.size, adj.signed),
            ("short", 64, 2, true)
        );
        assert!(!field(&oom, "pid").data_loc);

        let sig = fixture!("6.18/signal__signal_generate.format");
        let comm = field(&sig, "comm");
        assert_eq!(
            (comm.c_type.as_str(), comm.offset, comm.array_len),
            ("char", 20, Some(16))
        );
        assert!(!comm.data_loc);
        assert_eq!(field(&sig, "result").offset, 44);

        let exit = fixture!("6.18/sched__sched_process_exit.format");
        assert_eq!(field(&exit, "group_dead").c_type, "bool");
        assert_eq!(field(&exit, "pid").offset, 24);

        let err = fixture!("6.18/sock__inet_sk_error_report.format");
        assert!(field(&err, "error").signed);
        assert_eq!(field(&err, "sport").offset, 12);
    }

    #[test]
    fn common_fields_are_kept_but_not_own() {
        let f = fixture!("6.18/oom__mark_victim.format");
        assert_eq!(field(&f, "common_pid").offset, 4);
        assert!(f.own_fields().all(|x| !x.name.starts_with("common_")));
        assert_eq!(f.own_fields().count(), f.fields.len() - 4);
    }

    #[test]
    fn multibyte_space_before_a_field_name_does_not_panic() {
        // Found by the tracefs_format fuzz target (minimized: "field:i\u{a0}a;offset:1;
        // size:2"): a no-break space (2 bytes in UTF-8) before the name was sliced through.
        assert!(
            parse_format("field:i\u{a0}a;offset:1;size:2").is_err(),
            "no name: line"
        );
        let f = parse_format(
            "name: x\nformat:\n\tfield:int\u{a0}x;\toffset:0;\tsize:4;\tsigned:1;\n\
             \tfield:char *\u{3000}y;\toffset:4;\tsize:8;\tsigned:0;\n",
        )
        .expect("parse");
        assert_eq!(field(&f, "x").c_type, "int");
        assert_eq!(field(&f, "y").c_type, "char *");
        assert!(parse_format("name: x\n\tfield:\u{3000}x;\toffset:0;\tsize:4;\n").is_err());
    }

    #[test]
    fn unexpanded_array_length() {
        // Old kernels print the array length expression unexpanded.
        let f = parse_format(
            "name: tcp_bad_csum\nformat:\n\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:16;\tsize:28;\tsigned:0;\n",
        )
        .expect("parse");
        let saddr = field(&f, "saddr");
        assert_eq!((saddr.c_type.as_str(), saddr.array_len), ("__u8", Some(28)));
        assert_eq!(f.id, None);
        assert_eq!(f.print_fmt, "");
    }

    #[test]
    fn symbolic_number_forms() {
        let f = Format {
            name: "x".into(),
            id: None,
            fields: vec![],
            print_fmt: r#""%s", __print_symbolic(REC->v, { -1, "NEG" }, { 0x10, "HEX" }, { FOO, "SKIP" }, { 3, "A}\"B" }, {0xffffffffffffffff,"ALL"})"#
                .into(),
        };
        assert_eq!(
            f.symbolic("v"),
            Some(vec![
                (-1, "NEG".into()),
                (16, "HEX".into()),
                (3, "A}\"B".into()),
                (-1, "ALL".into()),
            ])
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let err = parse_format("name: x\nformat:\n\tfield:int a;\tsize:4;\tsigned:1;\n")
            .expect_err("missing offset");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("line 3") && msg.contains("field:int a;"),
            "{msg}"
        );
        assert!(msg.contains("no offset"), "{msg}");

        assert!(parse_format("name: x\nID: abc\n\tfield:int a;\toffset:8;\tsize:4;\n").is_err());
        assert!(parse_format("name: x\n\tfield:int a;\toffset:x;\tsize:4;\n").is_err());
        assert!(parse_format("\tfield:int a;\toffset:8;\tsize:4;\n").is_err());
        assert!(parse_format("name: x\nformat:\n").is_err());
        assert!(parse_format("name: x\n\tfield:a;\toffset:8;\tsize:4;\n").is_err());
    }

    /// Needs root and tracefs: `cargo test -p redis-trace tracefs -- --ignored`.
    #[test]
    #[ignore]
    fn parses_every_format_on_this_host() {
        let root = find_root().expect("tracefs not mounted");
        let mut count = 0;
        for cat in std::fs::read_dir(root.join("events")).expect("events") {
            let cat = cat.expect("entry").path();
            for event in std::fs::read_dir(&cat).into_iter().flatten().flatten() {
                let format = event.path().join("format");
                if let Ok(text) = std::fs::read_to_string(&format) {
                    parse_format(&text).unwrap_or_else(|e| panic!("{}: {e:#}", format.display()));
                    count += 1;
                }
            }
        }
        assert!(count > 100, "only {count} formats found");
    }

    #[test]
    fn read_format_from_a_tree() {
        let root = std::env::temp_dir().join(format!("redis-trace-tracefs-{}", std::process::id()));
        let dir = root.join("events/tcp/tcp_send_reset");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("format"),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/formats/6.18/tcp__tcp_send_reset.format"
            )),
        )
        .expect("write");
        let ok = read_format(&root, "tcp", "tcp_send_reset");
        let missing = read_format(&root, "tcp", "tcp_nope");
        std::fs::remove_dir_all(&root).expect("cleanup");

        assert_eq!(
            ok.expect("read").field("reason").map(|f| f.offset),
            Some(28)
        );
        let msg = format!("{:#}", missing.expect_err("missing"));
        assert!(msg.contains("events/tcp/tcp_nope/format"), "{msg}");
    }
}
