//! What redis-server's own ELF says, read from the file, never by running it: its
//! functions (to name return addresses), which server and version it is, where to put
//! the uprobes, and the layout of its `struct client` flags.
//!
//! Distribution builds differ: Debian's Redis 7.0 exports every function in `.dynsym`;
//! LTO builds (Valkey 8.0 in bookworm-backports, Redis 8.2) split functions into local
//! parts (`freeClient.part.0`, `...isra.0`, `.cold`) that only `.symtab` names, or
//! export a short stub that jumps to a part no symbol names at all.
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

pub use crate::sources::redis::{ServerId, ServerKind};

/// The largest executable read for its symbols (a Redis build with DWARF is ~100 MiB).
const MAX_EXE_BYTES: u64 = 256 << 20;

/// The exported stub of a split function is a few instructions; anything longer is the
/// function itself.
const MAX_STUB_BYTES: u64 = 64;

/// One function of the binary.
#[derive(Debug, Clone)]
struct Func {
    /// Address range in the process.
    start: u64,
    end: u64,
    /// The function's C name: its symbol without the compiler's suffixes.
    name: String,
    /// Whether it opens with `push rbp; mov rbp, rsp`, so that while it runs the word
    /// above its saved frame pointer is its own return address.
    frame_pointer: bool,
}

/// Where one probed function can be entered: the exported symbol, each local part the
/// compiler split off, and the target of an exported stub's tail jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSite {
    /// The C function ("freeClient").
    pub function: &'static str,
    /// What this entry is, for the capture's report ("freeClient.part.0", "freeClient
    /// (jump target of its exported stub)").
    pub label: String,
    /// Offset in the executable file, where the uprobe goes.
    pub file_offset: u64,
}

/// Function address ranges of a running redis-server, and what its ELF says.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Sorted by start, in the process's address space.
    funcs: Vec<Func>,
    /// The server and version its ELF names.
    pub version: Option<ServerId>,
    /// Where the probed functions can be entered.
    pub sites: Vec<ProbeSite>,
    /// The binary has a `.symtab` (local functions are named).
    pub has_symtab: bool,
    /// Layout of `client->flags`, from DWARF or the per-version table.
    pub layout: Option<ClientLayout>,
    /// Why no layout, when there is none.
    pub layout_missing: Option<String>,
    /// Whether INFO's version was compared with this one already.
    pub version_checked: bool,
}

/// The function's C name: `freeClient.part.0` → `freeClient`, `foo.isra.0.cold` →
/// `foo`. C names hold no dot; every compiler suffix starts with one.
pub fn base_name(symbol: &str) -> &str {
    symbol.split('.').next().unwrap_or(symbol)
}

impl Symbols {
    /// Reads `pid`'s executable through `/proc/PID/exe` (a containerised or chrooted
    /// Redis's binary is not at the host path of the same name) and where it is mapped.
    pub fn of_process(pid: u32, probed: &[&'static str]) -> Result<Self> {
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
        let real = std::fs::read_link(&exe).unwrap_or_default();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading /proc/{pid}/maps"))?;
        let start = load_start(&maps, &real.to_string_lossy())
            .context("the executable's mapping is not in /proc/PID/maps")?;
        let first_load = file.segments().map(|s| s.address()).min().unwrap_or(0);
        let bias = start.wrapping_sub(first_load & !0xfff);
        Ok(Self::of_file(&file, bias, probed))
    }

    /// Reads an ELF mapped `bias` above its link addresses.
    pub fn of_file(file: &object::File<'_>, bias: u64, probed: &[&'static str]) -> Self {
        let has_symtab = file.symbols().next().is_some();
        // (link address, size, symbol name), from both tables, each address once.
        let mut raw: Vec<(u64, u64, String)> = file
            .dynamic_symbols()
            .chain(file.symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        raw.sort();
        raw.dedup_by(|a, b| a.0 == b.0);
        let funcs: Vec<Func> = raw
            .iter()
            .map(|(addr, size, sym)| Func {
                start: bias.wrapping_add(*addr),
                end: bias.wrapping_add(*addr).wrapping_add(*size),
                name: base_name(sym).to_string(),
                frame_pointer: code(file, *addr, 8).is_some_and(opens_frame),
            })
            .collect();
        let sites = probed
            .iter()
            .flat_map(|f| probe_sites(file, &raw, f))
            .collect();
        let version = elf_version(file);
        let (layout, layout_missing) = match &version {
            Some(v) => match dwarf::client_layout(file, v) {
                Some(l) => (Some(l), None),
                None => match ClientLayout::of_version(v) {
                    Ok(l) => (Some(l), None),
                    Err(why) => (None, Some(why)),
                },
            },
            None => (
                None,
                Some("the binary names no Redis or Valkey version".into()),
            ),
        };
        Self {
            funcs,
            version,
            sites,
            has_symtab,
            layout,
            layout_missing,
            version_checked: false,
        }
    }

    #[cfg(test)]
    pub fn from_list(funcs: Vec<(u64, u64, String)>) -> Self {
        Self::from_list_fp(
            funcs
                .iter()
                .map(|(s, e, n)| (*s, *e, n.as_str(), false))
                .collect(),
        )
    }

    /// For tests: functions as (start, end, symbol, keeps a frame pointer).
    #[cfg(test)]
    pub fn from_list_fp(funcs: Vec<(u64, u64, &str, bool)>) -> Self {
        let mut funcs: Vec<Func> = funcs
            .into_iter()
            .map(|(start, end, name, frame_pointer)| Func {
                start,
                end,
                name: base_name(name).to_string(),
                frame_pointer,
            })
            .collect();
        funcs.sort_by_key(|f| f.start);
        Self {
            funcs,
            ..Self::default()
        }
    }

    fn func(&self, addr: u64) -> Option<&Func> {
        let i = self.funcs.partition_point(|f| f.start <= addr);
        let f = self.funcs.get(i.checked_sub(1)?)?;
        (f.start <= addr && addr < f.end).then_some(f)
    }

    /// The function containing `addr`, by its C name.
    pub fn name(&self, addr: u64) -> Option<&str> {
        self.func(addr).map(|f| f.name.as_str())
    }

    /// Whether the function containing `addr` keeps a frame pointer, so that the word
    /// the probe read one frame up is its caller's address.
    pub fn keeps_frame_pointer(&self, addr: u64) -> bool {
        self.func(addr).is_some_and(|f| f.frame_pointer)
    }

    pub fn has(&self, name: &str) -> bool {
        self.funcs.iter().any(|f| f.name == name)
    }
}

/// The start of the executable's first mapping (file offset 0) in `/proc/PID/maps`.
fn load_start(maps: &str, path: &str) -> Option<u64> {
    maps.lines()
        .filter(|l| !path.is_empty() && l.ends_with(path))
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
}

/// `len` bytes of code at link address `addr`.
fn code<'a>(file: &'a object::File<'_>, addr: u64, len: u64) -> Option<&'a [u8]> {
    file.sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .find_map(|s| s.data_range(addr, len).ok().flatten())
}

/// `push rbp; mov rbp, rsp`, after an optional `endbr64`.
fn opens_frame(code: &[u8]) -> bool {
    let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
    code.starts_with(&[0x55, 0x48, 0x89, 0xe5])
}

/// The file offset of link address `addr`, through the section that holds it.
fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.sections().find_map(|s| {
        let (off, size) = s.file_range()?;
        let start = s.address();
        (start <= addr && addr < start.checked_add(size)?).then(|| addr - start + off)
    })
}

/// Where `function` can be entered: every symbol of that C name, and where a short
/// exported stub jumps to code no symbol names (an LTO split whose body is local and
/// stripped: Valkey 8.0's `freeClient` tests two flags, then jumps either to
/// `freeClientAsync` or to its unnamed body).
fn probe_sites(
    file: &object::File<'_>,
    raw: &[(u64, u64, String)],
    function: &'static str,
) -> Vec<ProbeSite> {
    let mut sites: Vec<(u64, String)> = raw
        .iter()
        .filter(|(_, _, sym)| base_name(sym) == function)
        .map(|(addr, _, sym)| (*addr, sym.clone()))
        .collect();
    let stubs: Vec<(u64, u64)> = raw
        .iter()
        .filter(|(_, size, sym)| sym == function && *size <= MAX_STUB_BYTES)
        .map(|(addr, size, _)| (*addr, *size))
        .collect();
    for (addr, size) in stubs {
        for target in jumps_out(file, addr, size) {
            let named = raw.iter().any(|(a, _, _)| *a == target);
            if !named && !sites.iter().any(|(a, _)| *a == target) {
                sites.push((
                    target,
                    format!("{function} (the body its exported stub jumps to)"),
                ));
            }
        }
    }
    sites
        .into_iter()
        .filter_map(|(addr, label)| {
            Some(ProbeSite {
                function,
                label,
                file_offset: file_offset(file, addr)?,
            })
        })
        .collect()
}

/// Targets of the unconditional near jumps in the `size` bytes at `addr` that leave
/// them, when they land in this binary's code.
fn jumps_out(file: &object::File<'_>, addr: u64, size: u64) -> Vec<u64> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
    let Some(bytes) = code(file, addr, size) else {
        return Vec::new();
    };
    let mut decoder = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            break;
        }
        if insn.mnemonic() == Mnemonic::Jmp && insn.op0_kind() == OpKind::NearBranch64 {
            let target = insn.near_branch_target();
            let inside = target >= addr && target < addr + size;
            if !inside && code(file, target, 1).is_some() {
                out.push(target);
            }
        }
    }
    out
}

/// Which server a binary is and its version, read from the ELF's read-only data.
///
/// The traced program is never run to ask it (`--version` would execute, as root, a
/// binary any local user may have started). Redis keeps its version as a literal
/// (`REDIS_VERSION`, version.h) beside the `since` versions of its command table, all
/// lower: the highest `x.y.z` literal is the server's own. A Valkey binary names itself.
/// None when it is not a Redis this tool recognises, or has no version literal.
///
/// Besides the server's own version and its commands' `since` versions, `.rodata` can
/// hold the compiler's version (Redis 8's INFO `gcc_version`, "14.2.0"): a version counts
/// first when another literal shares its major (the `since` of its own commands), or
/// when it is an `x.0.0` (whose `since` literal is the same string, merged).
pub fn elf_version(file: &object::File<'_>) -> Option<ServerId> {
    let rodata = file.section_by_name(".rodata")?.data().ok()?;
    version_of_strings(rodata.split(|b| *b == 0))
}

/// [`elf_version`] on the NUL-separated strings of `.rodata`.
fn version_of_strings<'a>(strings: impl Iterator<Item = &'a [u8]>) -> Option<ServerId> {
    let mut redis = false;
    let mut valkey = false;
    let mut found: Vec<(Vec<u32>, &[u8])> = Vec::new();
    for s in strings {
        valkey = valkey || s.windows(6).any(|w| w.eq_ignore_ascii_case(b"valkey"));
        redis = redis
            || s.starts_with(b"Redis server v=")
            || s.windows(14).any(|w| w == b"redis_version:");
        if let Some(parts) = version_parts(s) {
            found.push((parts, s));
        }
    }
    let server = match (valkey, redis) {
        (true, _) => ServerKind::Valkey,
        (false, true) => ServerKind::Redis,
        (false, false) => return None,
    };
    let accompanied = |v: &[u32]| {
        v[1] == 0 && v[2] == 0 || found.iter().any(|(o, _)| o[0] == v[0] && o.as_slice() != v)
    };
    // Redis 6.0 has no `since` literals: then its one version stands alone.
    let (_, text) = found
        .iter()
        .max_by_key(|(v, _)| (accompanied(v), v.clone()))?;
    Some(ServerId {
        server,
        version: String::from_utf8_lossy(text).into_owned(),
    })
}

/// The version-dependent sources of evidence: INFO counters and client eviction
/// (`None` for the ones this version has, else why not).
pub fn version_sources(v: &ServerId) -> Vec<(&'static str, Option<String>)> {
    let name = format!("{} {}", v.server, v.version);
    let counters = v.at_least(ServerKind::Redis, 7, 4) || v.at_least(ServerKind::Valkey, 8, 0);
    let eviction = v.at_least(ServerKind::Redis, 7, 0) || v.server == ServerKind::Valkey;
    vec![
        (
            "INFO client_output_buffer_limit_disconnections, client_query_buffer_limit_disconnections",
            (!counters).then(|| {
                format!(
                    "{name} has no such counters (Redis 7.4, Valkey 8.0 added them): \
                         buffer-limit closes rest on the uprobes and the log"
                )
            }),
        ),
        (
            "INFO evicted_clients (maxmemory-clients)",
            (!eviction).then(|| format!("{name} has no client eviction (Redis 7.0 added it)")),
        ),
    ]
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

/// Where `client->flags` is and what its bits mean, for one server version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLayout {
    /// Byte offset of the 64-bit flags word in `struct client`.
    pub flags_offset: u16,
    pub bits: FlagBits,
    /// Where the layout comes from ("the per-version table: Redis 7.0").
    pub source: String,
    /// Read from the binary's own DWARF (not the table): no other version's word replaces it.
    pub from_dwarf: bool,
}

/// Bit numbers of the flags this tool names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagBits {
    pub master: u8,
    pub replica: u8,
    pub monitor: u8,
    pub close_after_reply: u8,
    pub close_asap: u8,
    pub pubsub: u8,
    pub protected: u8,
    /// Redis 6.0 has no protocol-error flag.
    pub protocol_error: Option<u8>,
}

/// Redis 6.0 to 8.x and Valkey 7.2 (`#define CLIENT_*` in server.h).
const REDIS_BITS: FlagBits = FlagBits {
    replica: 0,
    master: 1,
    monitor: 2,
    close_after_reply: 6,
    close_asap: 10,
    pubsub: 18,
    protected: 28,
    protocol_error: Some(39),
};

/// Valkey 8.x (`struct ClientFlags`, one-bit fields: primary first, then replica).
const VALKEY_8_BITS: FlagBits = FlagBits {
    master: 0,
    replica: 1,
    monitor: 2,
    close_after_reply: 6,
    close_asap: 10,
    pubsub: 18,
    protected: 30,
    protocol_error: Some(41),
};

/// Valkey 9.x: one more flag before `protected`.
const VALKEY_9_BITS: FlagBits = FlagBits {
    protected: 31,
    protocol_error: Some(42),
    ..VALKEY_8_BITS
};

impl ClientLayout {
    /// The layout of a version this tool knows; otherwise why not.
    pub fn of_version(v: &ServerId) -> Result<Self, String> {
        let Some((major, minor)) = v.major_minor() else {
            return Err(format!("version {:?} does not parse", v.version));
        };
        let table = |flags_offset: u16, bits: FlagBits| ClientLayout {
            flags_offset,
            bits,
            source: format!("the per-version table ({} {major}.{minor})", v.server),
            from_dwarf: false,
        };
        use ServerKind::{Redis, Valkey};
        match (v.server, major, minor) {
            // Offsets from each version's server.h (`offsetof` on x86_64), checked against
            // the shipped binaries' own flag tests (docs/compatibility.md).
            (Redis, 6, 0) => Ok(table(184, REDIS_BITS)),
            (Redis, 6, 2) => Ok(table(216, REDIS_BITS)),
            // From 7.0 `uint64_t id; uint64_t flags;` open the struct.
            (Redis, 7 | 8, _) | (Valkey, 7, 2) => Ok(table(8, REDIS_BITS)),
            (Valkey, 8, 0) => Ok(table(8, VALKEY_8_BITS)),
            // 8.1 reordered the struct (valkey#1405).
            (Valkey, 8, 1) => Ok(table(272, VALKEY_8_BITS)),
            (Valkey, 9, _) => Ok(table(328, VALKEY_9_BITS)),
            _ => Err(format!(
                "{} {} is not in this tool's table of client layouts and its binary has no \
                 DWARF that gives one: client flags are not read",
                v.server, v.version
            )),
        }
    }

    /// The names of the flags set in `flags`.
    pub fn flag_names(&self, flags: u64) -> Vec<&'static str> {
        let b = self.bits;
        let set = |bit: u8| flags & (1u64 << (bit & 63)) != 0;
        [
            ("master", Some(b.master)),
            ("replica", Some(b.replica)),
            ("monitor", Some(b.monitor)),
            ("close_after_reply", Some(b.close_after_reply)),
            ("close_asap", Some(b.close_asap)),
            ("pubsub", Some(b.pubsub)),
            ("protected", Some(b.protected)),
            ("protocol_error", b.protocol_error),
        ]
        .into_iter()
        .filter_map(|(name, bit)| bit.filter(|b| set(*b)).map(|_| name))
        .collect()
    }
}

/// The `struct client` layout from the binary's own DWARF, when it has some: the flags
/// word's offset, and for Valkey's bitfield flags each bit by name. Redis's bits are
/// `#define`s, which DWARF does not keep: they come from the table.
mod dwarf {
    use std::borrow::Cow;

    use gimli::{AttributeValue, DW_AT_data_bit_offset, DW_AT_data_member_location};
    use gimli::{DW_AT_declaration, DW_AT_name, DW_AT_type, DW_TAG_structure_type};
    use object::{Object as _, ObjectSection as _};

    use super::{ClientLayout, FlagBits, REDIS_BITS, ServerId, ServerKind};

    type Reader<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;
    type Dwarf<'a> = gimli::Dwarf<Reader<'a>>;
    type Unit<'a> = gimli::Unit<Reader<'a>>;
    type Entry<'a, 'u> = gimli::DebuggingInformationEntry<'u, 'u, Reader<'a>>;

    pub(super) fn client_layout(file: &object::File<'_>, v: &ServerId) -> Option<ClientLayout> {
        file.section_by_name(".debug_info")?;
        let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
            Ok(file
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
                .unwrap_or(Cow::Borrowed(&[])))
        };
        let sections = gimli::DwarfSections::load(load).ok()?;
        let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            if let Some(fields) = client_struct(&dwarf, &unit) {
                return layout(&fields, v);
            }
        }
        None
    }

    fn name(dwarf: &Dwarf<'_>, unit: &Unit<'_>, e: &Entry<'_, '_>) -> Option<String> {
        let a = e.attr_value(DW_AT_name).ok()??;
        let s = dwarf.attr_string(unit, a).ok()?;
        Some(s.to_string_lossy().into_owned())
    }

    fn udata(e: &Entry<'_, '_>, at: gimli::DwAt) -> Option<u64> {
        e.attr(at).ok()??.udata_value()
    }

    /// One member of a struct or union: its name, byte or bit offset, and for the
    /// members that matter (anonymous ones, Valkey's `flag`) the members of its type.
    struct Member {
        name: Option<String>,
        byte: Option<u64>,
        bit: Option<u64>,
        nested: Option<Vec<Member>>,
    }

    /// The members of the type `e` refers to, through typedefs and qualifiers.
    fn members_of_type(
        dwarf: &Dwarf<'_>,
        unit: &Unit<'_>,
        e: &Entry<'_, '_>,
    ) -> Option<Vec<Member>> {
        let AttributeValue::UnitRef(mut at) = e.attr_value(DW_AT_type).ok()?? else {
            return None;
        };
        for _ in 0..4 {
            let mut tree = unit.entries_tree(Some(at)).ok()?;
            let root = tree.root().ok()?;
            if root.entry().has_children() {
                return members(dwarf, unit, root);
            }
            let AttributeValue::UnitRef(next) = root.entry().attr_value(DW_AT_type).ok()?? else {
                return None;
            };
            at = next;
        }
        None
    }

    fn members(
        dwarf: &Dwarf<'_>,
        unit: &Unit<'_>,
        node: gimli::EntriesTreeNode<'_, '_, '_, Reader<'_>>,
    ) -> Option<Vec<Member>> {
        let mut out = Vec::new();
        let mut children = node.children();
        while let Ok(Some(child)) = children.next() {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_member {
                continue;
            }
            let n = name(dwarf, unit, e);
            let nested = match n.as_deref() {
                None | Some("flag") => members_of_type(dwarf, unit, e),
                _ => None,
            };
            out.push(Member {
                name: n,
                byte: udata(e, DW_AT_data_member_location),
                bit: udata(e, DW_AT_data_bit_offset),
                nested,
            });
        }
        Some(out)
    }

    /// The members of `struct client`, if this unit defines it.
    fn client_struct(dwarf: &Dwarf<'_>, unit: &Unit<'_>) -> Option<Vec<Member>> {
        let mut cursor = unit.entries();
        while let Ok(Some((_, e))) = cursor.next_dfs() {
            if e.tag() != DW_TAG_structure_type
                || e.attr(DW_AT_declaration).ok().flatten().is_some()
                || name(dwarf, unit, e).as_deref() != Some("client")
            {
                continue;
            }
            let offset = e.offset();
            let mut tree = unit.entries_tree(Some(offset)).ok()?;
            return members(dwarf, unit, tree.root().ok()?);
        }
        None
    }

    fn layout(fields: &[Member], v: &ServerId) -> Option<ClientLayout> {
        let source = format!("the binary's DWARF ({} {})", v.server, v.version);
        // Redis, Valkey 7.2: `uint64_t flags;` with `#define` bits.
        if let Some(m) = fields.iter().find(|m| m.name.as_deref() == Some("flags")) {
            if v.server != ServerKind::Redis && v.major_minor() != Some((7, 2)) {
                return None;
            }
            return Some(ClientLayout {
                flags_offset: u16::try_from(m.byte?).ok()?,
                bits: REDIS_BITS,
                source: format!("{source}, with Redis's flag bits"),
                from_dwarf: true,
            });
        }
        // Valkey 8+: `union { uint64_t raw_flag; struct ClientFlags flag; };`.
        let union = fields.iter().find(|m| {
            m.name.is_none()
                && m.nested
                    .as_ref()
                    .is_some_and(|n| n.iter().any(|f| f.name.as_deref() == Some("raw_flag")))
        })?;
        let inner = union.nested.as_ref()?;
        let named = inner
            .iter()
            .find(|f| f.name.as_deref() == Some("flag"))?
            .nested
            .as_ref()?;
        let bit = |n: &str| -> Option<u8> {
            named
                .iter()
                .find(|f| f.name.as_deref() == Some(n))
                .and_then(|f| f.bit)
                .and_then(|b| u8::try_from(b).ok())
                .filter(|b| *b < 64)
        };
        Some(ClientLayout {
            flags_offset: u16::try_from(union.byte?).ok()?,
            bits: FlagBits {
                master: bit("primary")?,
                replica: bit("replica")?,
                monitor: bit("monitor")?,
                close_after_reply: bit("close_after_reply")?,
                close_asap: bit("close_asap")?,
                pubsub: bit("pubsub")?,
                protected: bit("protected")?,
                protocol_error: bit("protocol_error"),
            },
            source,
            from_dwarf: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_inside_functions_only() {
        let s = Symbols::from_list(vec![
            (0x1000, 0x1100, "freeClient".into()),
            (0x2000, 0x2400, "clientsCronHandleTimeout.isra.0".into()),
        ]);
        assert_eq!(s.name(0x2010), Some("clientsCronHandleTimeout"));
        assert_eq!(s.name(0x1000), Some("freeClient"));
        assert_eq!(s.name(0x1100), None);
        assert_eq!(s.name(0x500), None);
        assert!(s.has("freeClient"));
    }

    #[test]
    fn compiler_suffixes_are_stripped() {
        for (sym, base) in [
            ("freeClient.part.0", "freeClient"),
            (
                "closeClientOnOutputBufferLimitReached.part.0",
                "closeClientOnOutputBufferLimitReached",
            ),
            ("readQueryFromClient.cold", "readQueryFromClient"),
            ("evictClients.constprop.0.isra.0", "evictClients"),
            ("clientCommand.lto_priv.0", "clientCommand"),
            ("freeClient", "freeClient"),
        ] {
            assert_eq!(base_name(sym), base, "{sym}");
        }
    }

    #[test]
    fn frame_pointer_prologues() {
        assert!(opens_frame(&[0x55, 0x48, 0x89, 0xe5, 0x41, 0x57]));
        assert!(opens_frame(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5
        ]));
        // push r15 first (no frame pointer), or push rbp without mov rbp, rsp.
        assert!(!opens_frame(&[0x41, 0x57, 0x55, 0x48, 0x89, 0xe5]));
        assert!(!opens_frame(&[0x55, 0x53, 0x48, 0x83, 0xec, 0x08]));
    }

    #[test]
    fn client_layouts_only_for_known_versions() {
        let v = |server, version: &str| ServerId {
            server,
            version: version.into(),
        };
        let off = |s, ver| {
            ClientLayout::of_version(&v(s, ver))
                .ok()
                .map(|l| l.flags_offset)
        };
        assert_eq!(off(ServerKind::Redis, "7.0.15"), Some(8));
        assert_eq!(off(ServerKind::Redis, "8.2.3"), Some(8));
        assert_eq!(off(ServerKind::Valkey, "8.0.1"), Some(8));
        assert_eq!(off(ServerKind::Redis, "garbage"), None);
        assert_eq!(off(ServerKind::Redis, "5.0.14"), None);
    }

    #[test]
    fn flags_are_named_by_the_versions_bits() {
        let l = ClientLayout::of_version(&ServerId {
            server: ServerKind::Redis,
            version: "7.0.15".into(),
        })
        .expect("known");
        assert_eq!(
            l.flag_names((1 << 18) | (1 << 39)),
            vec!["pubsub", "protocol_error"]
        );
        // MONITOR sets the replica bit too (Redis's own rule).
        assert_eq!(l.flag_names(0b101), vec!["replica", "monitor"]);
    }

    #[test]
    fn versions_of_each_servers_literals() {
        let v = |strings: &[&str]| {
            version_of_strings(strings.iter().map(|s| s.as_bytes()))
                .map(|v| format!("{} {}", v.server, v.version))
        };
        // Redis 8: the compiler's version beside the server's (INFO gcc_version).
        assert_eq!(
            v(&["redis_version:%s", "7.4.0", "8.0.0", "8.0.2", "14.2.0"]).as_deref(),
            Some("redis 8.0.2")
        );
        // Redis 6.0: no `since` literals, one version alone.
        assert_eq!(
            v(&["Redis server v=%s sha=%s:%d", "6.0.16"]).as_deref(),
            Some("redis 6.0.16")
        );
        // Valkey 7.2: "Server v=%s" names no product, its log lines do; its own version
        // beats the 7.2.4 it reports as redis_version.
        assert_eq!(
            v(&[
                "Server v=%s sha=%s:%d",
                "Valkey version=%s, bits=%d",
                "7.2.4",
                "7.2.7",
                "7.0.0"
            ])
            .as_deref(),
            Some("valkey 7.2.7")
        );
        // An x.0.0 release: its `since` literal is the same string.
        assert_eq!(
            v(&["redis_version:%s", "7.4.0", "8.0.0", "14.2.0"]).as_deref(),
            Some("redis 8.0.0")
        );
        // A development build: a version no table knows, so no layout is guessed.
        let dev = version_of_strings(
            ["valkey", "255.255.255", "8.1.0"]
                .iter()
                .map(|s| s.as_bytes()),
        )
        .expect("a version");
        assert_eq!(dev.version, "255.255.255");
        assert!(ClientLayout::of_version(&dev).is_err());
        assert_eq!(v(&["nginx", "1.2.3"]), None);
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
    fn the_installed_redis_server_has_probe_sites_and_a_layout() {
        // A real redis-server (scripts/setup.sh installs Debian's 7.0.15).
        let data = std::fs::read("/usr/bin/redis-server").expect("redis-server installed");
        let file = object::File::parse(&*data).expect("ELF");
        let s = Symbols::of_file(&file, 0, &["freeClient", "freeClientAsync"]);
        let v = s.version.clone().expect("a version");
        assert_eq!(v.server, ServerKind::Redis);
        for f in ["freeClient", "freeClientAsync"] {
            assert!(
                s.sites.iter().any(|p| p.function == f),
                "{f}: {:?}",
                s.sites
            );
        }
        for f in ["clientsCronHandleTimeout", "clientCommand"] {
            assert!(s.has(f), "{f} not named");
        }
        assert!(s.layout.is_some(), "{:?}", s.layout_missing);
    }
}
