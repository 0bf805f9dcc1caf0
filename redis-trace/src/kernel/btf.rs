//! The few struct offsets the programs need from this kernel's BTF
//! (/sys/kernel/btf/vmlinux): where a socket's network namespace number is.
//!
//! A full BTF parser (aya's) costs ~250 ms and ~14 MB for a 5 MB file; three offsets do
//! not need it. This reads the file in one streaming pass over the string section (to
//! learn which string offsets spell the names we want) and one over the type section,
//! keeping nothing but the members of three structs. The format is the kernel's
//! (Documentation/bpf/btf.rst); every length and offset in it is checked, so a damaged
//! file gives an error, never a panic or a wrong offset.
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};

/// Where the namespace number is, in bytes: `skc_net` within `struct sock` (its
/// `struct sock_common` comes first), and `ns.inum` within `struct net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsOffsets {
    pub skc_net: u32,
    pub ns_inum: u32,
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// The offsets from the running kernel's BTF.
pub fn netns_offsets() -> Result<NetnsOffsets> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "opening {} (this kernel was built without CONFIG_DEBUG_INFO_BTF)",
            path.display()
        )
    })?;
    netns_offsets_in(file).with_context(|| format!("reading {}", path.display()))
}

/// The offsets from a BTF blob.
pub fn netns_offsets_in(mut file: impl Read + Seek) -> Result<NetnsOffsets> {
    let mut hdr = [0u8; 24];
    file.read_exact(&mut hdr).context("BTF header")?;
    let u16_at = |o: usize| u16::from_le_bytes([hdr[o], hdr[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
    ensure!(u16_at(0) == MAGIC, "not BTF (or not little-endian)");
    let hdr_len = u64::from(u32_at(4));
    let (type_off, type_len) = (u64::from(u32_at(8)), u64::from(u32_at(12)));
    let (str_off, str_len) = (u64::from(u32_at(16)), u64::from(u32_at(20)));
    ensure!(hdr_len >= 24, "BTF header of {hdr_len} bytes");

    // Pass 1: which string offsets read as each wanted name (a name can also be the
    // tail of a longer string: `net` inside `skc_net`): every `name\0` in the section.
    const NAMES: [&str; 6] = ["sock_common", "skc_net", "net", "ns", "ns_common", "inum"];
    let needles: Vec<Vec<u8>> = NAMES
        .iter()
        .map(|n| [n.as_bytes(), b"\0"].concat())
        .collect();
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needles.iter().map(memchr::memmem::Finder::new).collect();
    let mut at: [HashSet<u32>; 6] = Default::default();
    file.seek(SeekFrom::Start(hdr_len + str_off))?;
    let mut strings = Chunks::new((&mut file).take(str_len));
    // Each chunk starts with the tail of the one before, so a name across the seam is
    // found once, in the chunk where it ends.
    const KEEP: usize = 16;
    let mut base: u64 = 0;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = strings.next_chunk()? {
        let mut window = std::mem::take(&mut tail);
        let carried = window.len();
        window.extend_from_slice(chunk);
        for (i, f) in finders.iter().enumerate() {
            for pos in f.find_iter(&window) {
                // Only matches that end in the new bytes: the others were found before.
                if pos + needles[i].len() > carried {
                    let off = base + pos as u64 - carried as u64;
                    at[i].insert(u32::try_from(off).context("string offset out of range")?);
                }
            }
        }
        base += (window.len() - carried) as u64;
        tail = window[window.len().saturating_sub(KEEP)..].to_vec();
    }
    let is = |name_off: u32, i: usize| at[i].contains(&name_off);

    // Pass 2: the members of the three structs.
    file.seek(SeekFrom::Start(hdr_len + type_off))?;
    let mut types = Chunks::new((&mut file).take(type_len));
    let le = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let (mut skc_net, mut ns, mut inum) = (None, None, None);
    let mut read: u64 = 0;
    while read < type_len {
        let head = types.take(12)?;
        let (name_off, info) = (le(head, 0), le(head, 4));
        read += 12;
        let kind = (info >> 24) & 0x1f;
        let vlen = u64::from(info & 0xffff);
        let kind_flag = info >> 31 == 1;
        let extra = match kind {
            1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
            3 => 12,                   // ARRAY
            4 | 5 | 15 => 12 * vlen,   // STRUCT, UNION, DATASEC
            6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
            19 => 12 * vlen,           // ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
            k => bail!("unknown BTF kind {k}"),
        };
        read += extra;
        ensure!(read <= type_len, "type section overruns its length");
        let wanted = if kind == KIND_STRUCT {
            [0, 2, 4].into_iter().find(|&i| is(name_off, i))
        } else {
            None
        };
        let Some(which) = wanted else {
            types.skip(extra as usize)?;
            continue;
        };
        let members = types.take(extra as usize)?;
        for m in members.chunks_exact(12) {
            let (m_name, m_off) = (le(m, 0), le(m, 8));
            // With kind_flag the low 24 bits are the bit offset.
            let bits = if kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            if bits % 8 != 0 {
                continue;
            }
            let bytes = bits / 8;
            match which {
                0 if is(m_name, 1) => skc_net = Some(bytes),
                2 if is(m_name, 3) => ns = Some(bytes),
                4 if is(m_name, 5) => inum = Some(bytes),
                _ => {}
            }
        }
    }
    let missing = |what: &str| format!("this kernel's BTF has no {what}");
    let skc_net = skc_net.with_context(|| missing("struct sock_common.skc_net"))?;
    let ns = ns.with_context(|| missing("struct net.ns"))?;
    let inum = inum.with_context(|| missing("struct ns_common.inum"))?;
    Ok(NetnsOffsets {
        skc_net,
        ns_inum: ns.checked_add(inum).context("offset overflow")?,
    })
}

/// A reader in 256 KiB chunks: records are parsed in place, and the 5 MB file is never
/// held whole.
struct Chunks<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> Chunks<R> {
    const SIZE: usize = 256 * 1024;

    fn new(r: R) -> Self {
        Self {
            r,
            buf: vec![0; Self::SIZE],
            start: 0,
            end: 0,
        }
    }

    /// The next bytes as they come (for the string scan); `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        let n = self.r.read(&mut self.buf)?;
        Ok((n > 0).then(|| &self.buf[..n]))
    }

    /// Makes at least `n` bytes available from `start`.
    fn fill(&mut self, n: usize) -> Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        while self.end < n {
            let got = self.r.read(&mut self.buf[self.end..])?;
            ensure!(got > 0, "truncated type section");
            self.end += got;
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        self.fill(n)?;
        let s = self.start;
        self.start += n;
        Ok(&self.buf[s..s + n])
    }

    fn skip(&mut self, mut n: usize) -> Result<()> {
        while n > 0 {
            let step = n.min(Self::SIZE);
            self.fill(step)?;
            self.start += step;
            n -= step;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A BTF blob made of the given types (each: name, kind, vlen, members as
    /// (name, bit offset)) over the given strings.
    /// A type: its name, kind and members as (name, bit offset).
    type Ty<'a> = (&'a str, u32, &'a [(&'a str, u32)]);

    fn blob(types: &[Ty<'_>]) -> Vec<u8> {
        let mut strs: Vec<u8> = vec![0];
        let name = |s: &str, strs: &mut Vec<u8>| -> u32 {
            let o = strs.len() as u32;
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
            o
        };
        let mut ty: Vec<u8> = Vec::new();
        let push = |v: &mut Vec<u8>, w: u32| v.extend_from_slice(&w.to_le_bytes());
        // An INT first, so that kinds with extra data are skipped correctly.
        push(&mut ty, name("int", &mut strs));
        push(&mut ty, 1 << 24);
        push(&mut ty, 4);
        push(&mut ty, 32);
        for (n, kind, members) in types {
            push(&mut ty, name(n, &mut strs));
            push(&mut ty, (kind << 24) | members.len() as u32);
            push(&mut ty, 8);
            for (m, off) in *members {
                push(&mut ty, name(m, &mut strs));
                push(&mut ty, 1);
                push(&mut ty, *off);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        push(&mut out, 24);
        push(&mut out, 0);
        push(&mut out, ty.len() as u32);
        push(&mut out, ty.len() as u32);
        push(&mut out, strs.len() as u32);
        out.extend_from_slice(&ty);
        out.extend_from_slice(&strs);
        out
    }

    #[test]
    fn finds_the_three_members() {
        let b = blob(&[
            ("net", 7, &[]), // a FWD of the same name is not the struct
            ("sock_common", 4, &[("skc_daddr", 0), ("skc_net", 48 * 8)]),
            (
                "ns_common",
                4,
                &[("stashed", 0), ("ops", 64), ("inum", 128)],
            ),
            ("net", 4, &[("passive", 0), ("ns", 120 * 8)]),
        ]);
        let o = netns_offsets_in(Cursor::new(b)).expect("offsets");
        assert_eq!(
            o,
            NetnsOffsets {
                skc_net: 48,
                ns_inum: 136
            }
        );
    }

    #[test]
    fn a_name_across_the_seam_of_two_chunks_is_found() {
        // The string section: "\0int\0", a long name, "\0", then "sock_common\0"
        // straddling the first chunk's end (5 bytes before it, 7 after).
        let long = "a".repeat(Chunks::<&[u8]>::SIZE - 5 - 1 - 5);
        let b = blob(&[
            (long.as_str(), 7, &[]),
            ("sock_common", 4, &[("skc_net", 48 * 8)]),
            ("ns_common", 4, &[("inum", 128)]),
            ("net", 4, &[("ns", 120 * 8)]),
        ]);
        let o = netns_offsets_in(Cursor::new(b)).expect("offsets");
        assert_eq!((o.skc_net, o.ns_inum), (48, 136));
    }

    #[test]
    fn a_missing_member_or_a_damaged_blob_is_an_error() {
        let b = blob(&[
            ("sock_common", 4, &[("skc_net", 48 * 8)]),
            ("net", 4, &[("ns", 8)]),
        ]);
        let e = netns_offsets_in(Cursor::new(b)).expect_err("no ns_common");
        assert!(format!("{e:#}").contains("ns_common.inum"), "{e:#}");
        let mut b = blob(&[("sock_common", 4, &[("skc_net", 48 * 8)])]);
        b[0] = 0;
        assert!(netns_offsets_in(Cursor::new(b)).is_err());
        let b = blob(&[("sock_common", 4, &[("skc_net", 48 * 8)])]);
        for cut in [3, 20, 30, 50] {
            assert!(netns_offsets_in(Cursor::new(b[..cut].to_vec())).is_err());
        }
    }

    #[test]
    fn this_kernels_btf_gives_offsets() {
        // Every kernel this tool supports has BTF; a machine without it fails loudly.
        let o = netns_offsets().expect("/sys/kernel/btf/vmlinux gives the offsets");
        assert!(o.skc_net > 0 && o.skc_net < 256, "{o:?}");
        assert!(o.ns_inum < 4096, "{o:?}");
    }
}
