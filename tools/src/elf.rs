//! Just enough of ELF for `npk pack` to check a package root: the class, byte order and
//! machine of a file, its program interpreter (`PT_INTERP`) and, from its dynamic section,
//! the libraries it needs (`DT_NEEDED`) and where it asks to find them (`DT_RUNPATH`,
//! `DT_RPATH`).
//!
//! Package roots come from anywhere, so every read is bounded and checked against the
//! file's size: a truncated or hostile file gives an [`ElfError`], never a panic or a huge
//! allocation. Only the parts named above are read, not the whole file.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;

use nanostar_protocol::npk::Arch;

/// `e_type` of a fixed-address executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a position-independent executable or shared library.
pub const ET_DYN: u16 = 3;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// `e_phnum` saying the real count is elsewhere (section 0); no program we run needs it.
const PN_XNUM: u16 = 0xffff;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// Larger program header tables or dynamic sections than these are not real programs.
const MAX_TABLE: u64 = 1 << 20;
/// Paths and names longer than the kernel's PATH_MAX are refused.
const MAX_STRING: u64 = 4096;

/// 32- or 64-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

/// Byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

/// Why a file could not be read as ELF. The caller names the file.
#[derive(Debug)]
pub enum ElfError {
    /// No ELF magic: not an ELF file at all.
    NotElf,
    /// `EI_CLASS` is neither 32- nor 64-bit.
    Class(u8),
    /// `EI_DATA` is neither little nor big endian.
    Endian(u8),
    /// The named part (plural words) lies partly or wholly past the end of the file.
    Truncated(&'static str),
    /// A field holds something no linker writes.
    Malformed(&'static str),
    /// Reading the file failed.
    Io(io::Error),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => f.write_str("not an ELF file"),
            ElfError::Class(c) => write!(f, "broken ELF file: unknown class {c}"),
            ElfError::Endian(d) => write!(f, "broken ELF file: unknown byte order {d}"),
            ElfError::Truncated(what) => {
                write!(f, "truncated or broken ELF file ({what} past its end)")
            }
            ElfError::Malformed(what) => write!(f, "broken ELF file: {what}"),
            ElfError::Io(e) => write!(f, "cannot read it ({e})"),
        }
    }
}

impl std::error::Error for ElfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ElfError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Bytes to parse: a file (read piecewise, never whole) or a slice.
pub trait Source {
    /// Total length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; the parser checks bounds first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let part = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

impl Source for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

/// The ELF header fields `npk` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 32- or 64-bit.
    pub class: Class,
    /// Byte order.
    pub endian: Endian,
    /// `e_type`: [`ET_EXEC`], [`ET_DYN`], or something that does not run.
    pub kind: u16,
    /// `e_machine`.
    pub machine: u16,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

impl Header {
    /// Parses the ELF header at the start of `head` (64 bytes are always enough).
    pub fn parse(head: &[u8]) -> Result<Header, ElfError> {
        if head.len() < 4 || head[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let class = match head.get(4) {
            Some(1) => Class::Elf32,
            Some(2) => Class::Elf64,
            Some(&c) => return Err(ElfError::Class(c)),
            None => return Err(ElfError::Truncated("header fields")),
        };
        let endian = match head.get(5) {
            Some(1) => Endian::Little,
            Some(2) => Endian::Big,
            Some(&d) => return Err(ElfError::Endian(d)),
            None => return Err(ElfError::Truncated("header fields")),
        };
        let len = match class {
            Class::Elf32 => 52,
            Class::Elf64 => 64,
        };
        let head = head
            .get(..len)
            .ok_or(ElfError::Truncated("header fields"))?;
        let r = Reader { class, endian };
        let (phoff, phentsize, phnum) = match class {
            Class::Elf32 => (r.u32(head, 28), r.u16(head, 42), r.u16(head, 44)),
            Class::Elf64 => (r.u64(head, 32), r.u16(head, 54), r.u16(head, 56)),
        };
        Ok(Header {
            class,
            endian,
            kind: r.u16(head, 16),
            machine: r.u16(head, 18),
            phoff,
            phentsize,
            phnum,
        })
    }

    /// `true` for the types the kernel executes (and the dynamic linker loads).
    pub fn is_program(&self) -> bool {
        self.kind == ET_EXEC || self.kind == ET_DYN
    }

    /// The package architecture this code runs on, if nanostar knows it.
    pub fn arch(&self) -> Option<Arch> {
        Arch::ALL.into_iter().find(|&a| self.runs_on(a))
    }

    /// `true` if this code runs on `arch`: class, byte order and machine all match.
    pub fn runs_on(&self, arch: Arch) -> bool {
        let want = match arch {
            Arch::Any => return false,
            Arch::X86_64 | Arch::Aarch64 => (Class::Elf64, Endian::Little),
            Arch::Arm => (Class::Elf32, Endian::Little),
        };
        arch.elf_machine() == Some(self.machine) && (self.class, self.endian) == want
    }

    /// What this code is for, in words: "x86_64", "32-bit x86", "big-endian arm", ...
    pub fn arch_name(&self) -> String {
        if let Some(arch) = self.arch() {
            return arch.name().into();
        }
        let bits = match self.class {
            Class::Elf32 => 32,
            Class::Elf64 => 64,
        };
        let name = match self.machine {
            3 => "x86".to_string(),
            8 => "mips".into(),
            20 => "powerpc".into(),
            21 => "powerpc64".into(),
            22 => "s390".into(),
            40 => "arm".into(),
            62 if bits == 32 => return "x32 (32-bit x86_64)".into(),
            62 => "x86_64".into(),
            183 => "aarch64".into(),
            243 => "riscv".into(),
            258 => "loongarch".into(),
            m => return format!("ELF machine {m} ({bits}-bit)"),
        };
        let order = match self.endian {
            Endian::Little => "",
            Endian::Big => "big-endian ",
        };
        format!("{order}{bits}-bit {name}")
    }
}

/// An ELF file's header and what it asks of the dynamic linker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// The header.
    pub header: Header,
    /// `PT_INTERP`: the program interpreter (dynamic linker), for dynamically linked
    /// programs. Static programs, static-pie ones included, have none.
    pub interp: Option<OsString>,
    /// `DT_NEEDED`: library names, in order.
    pub needed: Vec<OsString>,
    /// `DT_RPATH`, joined with `:` if there are several.
    pub rpath: Option<OsString>,
    /// `DT_RUNPATH`, joined with `:` if there are several.
    pub runpath: Option<OsString>,
}

impl Elf {
    /// Reads the header, program headers, interpreter and dynamic section of `src`.
    pub fn read<S: Source + ?Sized>(src: &S) -> Result<Elf, ElfError> {
        let size = src.size().map_err(ElfError::Io)?;
        let mut head = [0u8; 64];
        let head_len = size.min(64) as usize;
        read_part(src, size, &mut head[..head_len], 0, "header fields")?;
        let header = Header::parse(&head[..head_len])?;
        let r = Reader {
            class: header.class,
            endian: header.endian,
        };
        let segments = program_headers(src, size, &header, r)?;
        let mut elf = Elf {
            header,
            interp: None,
            needed: Vec::new(),
            rpath: None,
            runpath: None,
        };
        if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
            if interp.filesz > MAX_STRING {
                return Err(ElfError::Malformed(
                    "the interpreter path is longer than 4096 bytes",
                ));
            }
            let mut buf = vec![0u8; interp.filesz as usize];
            read_part(src, size, &mut buf, interp.offset, "interpreter path")?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            buf.truncate(end);
            if buf.is_empty() {
                return Err(ElfError::Malformed("the interpreter path is empty"));
            }
            elf.interp = Some(OsString::from_vec(buf));
        }
        if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
            read_dynamic(src, size, r, dynamic, &segments, &mut elf)?;
        }
        Ok(elf)
    }
}

/// Reads `buf.len()` bytes at `offset` after checking they lie inside the file.
fn read_part<S: Source + ?Sized>(
    src: &S,
    size: u64,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<(), ElfError> {
    match offset.checked_add(buf.len() as u64) {
        Some(end) if end <= size => src.read_at(buf, offset).map_err(ElfError::Io),
        _ => Err(ElfError::Truncated(what)),
    }
}

/// Decodes integers in the file's class and byte order. Callers slice exactly.
#[derive(Clone, Copy)]
struct Reader {
    class: Class,
    endian: Endian,
}

impl Reader {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        match self.endian {
            Endian::Little => u16::from_le_bytes(v),
            Endian::Big => u16::from_be_bytes(v),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u64 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        u64::from(match self.endian {
            Endian::Little => u32::from_le_bytes(v),
            Endian::Big => u32::from_be_bytes(v),
        })
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        match self.endian {
            Endian::Little => u64::from_le_bytes(v),
            Endian::Big => u64::from_be_bytes(v),
        }
    }

    /// A word: 4 bytes in ELF32, 8 in ELF64.
    fn word(self, b: &[u8], at: usize) -> u64 {
        match self.class {
            Class::Elf32 => self.u32(b, at),
            Class::Elf64 => self.u64(b, at),
        }
    }
}

/// The program header fields used here.
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn program_headers<S: Source + ?Sized>(
    src: &S,
    size: u64,
    h: &Header,
    r: Reader,
) -> Result<Vec<Segment>, ElfError> {
    if h.phnum == 0 {
        return Ok(Vec::new());
    }
    if h.phnum == PN_XNUM {
        return Err(ElfError::Malformed(
            "more than 65534 program headers (PN_XNUM)",
        ));
    }
    let min = match h.class {
        Class::Elf32 => 32,
        Class::Elf64 => 56,
    };
    if usize::from(h.phentsize) < min {
        return Err(ElfError::Malformed("program header entries are too small"));
    }
    let table = u64::from(h.phnum) * u64::from(h.phentsize);
    if table > MAX_TABLE {
        return Err(ElfError::Malformed(
            "the program header table is over 1 MiB",
        ));
    }
    let mut buf = vec![0u8; table as usize];
    read_part(src, size, &mut buf, h.phoff, "program headers")?;
    Ok(buf
        .chunks_exact(usize::from(h.phentsize))
        .map(|p| {
            let kind = r.u32(p, 0) as u32;
            match h.class {
                Class::Elf32 => Segment {
                    kind,
                    offset: r.u32(p, 4),
                    vaddr: r.u32(p, 8),
                    filesz: r.u32(p, 16),
                },
                Class::Elf64 => Segment {
                    kind,
                    offset: r.u64(p, 8),
                    vaddr: r.u64(p, 16),
                    filesz: r.u64(p, 32),
                },
            }
        })
        .collect())
}

fn read_dynamic<S: Source + ?Sized>(
    src: &S,
    size: u64,
    r: Reader,
    dynamic: &Segment,
    segments: &[Segment],
    elf: &mut Elf,
) -> Result<(), ElfError> {
    if dynamic.filesz > MAX_TABLE {
        return Err(ElfError::Malformed("the dynamic section is over 1 MiB"));
    }
    let mut buf = vec![0u8; dynamic.filesz as usize];
    read_part(src, size, &mut buf, dynamic.offset, "dynamic section")?;
    let entry = match r.class {
        Class::Elf32 => 8,
        Class::Elf64 => 16,
    };
    let (mut strtab, mut strsz) = (None, None);
    let (mut needed, mut rpath, mut runpath) = (Vec::new(), Vec::new(), Vec::new());
    for e in buf.chunks_exact(entry) {
        let (tag, val) = (r.word(e, 0), r.word(e, entry / 2));
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_RPATH => rpath.push(val),
            DT_RUNPATH => runpath.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            _ => {}
        }
    }
    if needed.is_empty() && rpath.is_empty() && runpath.is_empty() {
        return Ok(());
    }
    let addr = strtab.ok_or(ElfError::Malformed(
        "the dynamic section names libraries but has no string table",
    ))?;
    // The dynamic section holds the string table's address; the file offset is found
    // through the loaded segment that maps it.
    let table = segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find_map(|s| {
            let inside = addr.checked_sub(s.vaddr).filter(|&d| d < s.filesz)?;
            Some((s.offset.checked_add(inside)?, s.filesz - inside))
        })
        .ok_or(ElfError::Malformed(
            "the dynamic string table is not in a loaded segment",
        ))?;
    let (offset, in_segment) = table;
    let limit = strsz.map_or(in_segment, |sz| sz.min(in_segment));
    let string = |at: u64| read_string(src, size, offset, limit, at);
    elf.needed = needed.into_iter().map(string).collect::<Result<_, _>>()?;
    let joined = |list: Vec<u64>| -> Result<Option<OsString>, ElfError> {
        let mut parts = Vec::new();
        for at in list {
            parts.push(string(at)?.into_vec());
        }
        Ok((!parts.is_empty()).then(|| OsString::from_vec(parts.join(&b':'))))
    };
    elf.rpath = joined(rpath)?;
    elf.runpath = joined(runpath)?;
    Ok(())
}

/// The NUL-terminated string at `at` in the string table at file offset `table`, of
/// `limit` bytes.
fn read_string<S: Source + ?Sized>(
    src: &S,
    size: u64,
    table: u64,
    limit: u64,
    at: u64,
) -> Result<OsString, ElfError> {
    if at >= limit {
        return Err(ElfError::Malformed(
            "a library name lies outside the string table",
        ));
    }
    let start = table
        .checked_add(at)
        .filter(|&s| s < size)
        .ok_or(ElfError::Truncated("dynamic string table"))?;
    let len = (limit - at).min(MAX_STRING + 1).min(size - start);
    let mut buf = vec![0u8; len as usize];
    read_part(src, size, &mut buf, start, "dynamic string table")?;
    let end = buf.iter().position(|&b| b == 0).ok_or(ElfError::Malformed(
        "a library name is unterminated or longer than 4096 bytes",
    ))?;
    buf.truncate(end);
    Ok(OsString::from_vec(buf))
}

/// Builds small ELF files for tests: a header, one loaded segment over the whole file,
/// and optionally an interpreter and a dynamic section.
#[cfg(test)]
pub(crate) mod synth {
    use super::{Class, Endian};

    /// What to put in the file.
    pub struct Spec<'a> {
        pub class: Class,
        pub endian: Endian,
        pub machine: u16,
        pub kind: u16,
        pub interp: Option<&'a str>,
        pub needed: &'a [&'a str],
        pub runpath: Option<&'a str>,
        pub rpath: Option<&'a str>,
    }

    impl Spec<'static> {
        /// A static x86_64 executable.
        pub fn x86_64() -> Spec<'static> {
            Spec {
                class: Class::Elf64,
                endian: Endian::Little,
                machine: 62,
                kind: super::ET_EXEC,
                interp: None,
                needed: &[],
                runpath: None,
                rpath: None,
            }
        }

        /// A static 32-bit little-endian ARM executable.
        pub fn arm() -> Spec<'static> {
            Spec {
                class: Class::Elf32,
                machine: 40,
                ..Spec::x86_64()
            }
        }
    }

    /// Load address of the one PT_LOAD segment, which maps the file from offset 0.
    pub const BASE: u64 = 0x40_0000;

    struct W {
        bytes: Vec<u8>,
        class: Class,
        endian: Endian,
    }

    impl W {
        fn put(&mut self, at: usize, v: u64, len: usize) {
            let b = match self.endian {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            };
            let b = match self.endian {
                Endian::Little => &b[..len],
                Endian::Big => &b[8 - len..],
            };
            self.bytes[at..at + len].copy_from_slice(b);
        }

        fn word(&mut self, at: usize, v: u64) {
            let len = self.word_len();
            self.put(at, v, len);
        }

        fn word_len(&self) -> usize {
            match self.class {
                Class::Elf32 => 4,
                Class::Elf64 => 8,
            }
        }
    }

    /// The file's bytes.
    pub fn build(s: &Spec) -> Vec<u8> {
        let (ehsize, phentsize) = match s.class {
            Class::Elf32 => (52, 32),
            Class::Elf64 => (64, 56),
        };
        let dynamic = !s.needed.is_empty() || s.runpath.is_some() || s.rpath.is_some();
        let phnum = 1 + usize::from(s.interp.is_some()) + usize::from(dynamic);
        let mut w = W {
            bytes: vec![0u8; ehsize + phnum * phentsize],
            class: s.class,
            endian: s.endian,
        };
        // Strings: the interpreter, then the string table.
        let interp_at = w.bytes.len();
        if let Some(i) = s.interp {
            w.bytes.extend_from_slice(i.as_bytes());
            w.bytes.push(0);
        }
        let strtab_at = w.bytes.len();
        let mut strings = vec![0u8];
        let mut add = |text: &str| {
            let at = strings.len() as u64;
            strings.extend_from_slice(text.as_bytes());
            strings.push(0);
            at
        };
        let mut entries: Vec<(u64, u64)> = s.needed.iter().map(|n| (1, add(n))).collect();
        if let Some(p) = s.runpath {
            entries.push((29, add(p)));
        }
        if let Some(p) = s.rpath {
            entries.push((15, add(p)));
        }
        entries.push((5, BASE + strtab_at as u64));
        entries.push((10, strings.len() as u64));
        entries.push((0, 0));
        w.bytes.extend_from_slice(&strings);
        while !w.bytes.len().is_multiple_of(8) {
            w.bytes.push(0);
        }
        let dynamic_at = w.bytes.len();
        let wl = w.word_len();
        if dynamic {
            w.bytes.resize(dynamic_at + entries.len() * 2 * wl, 0);
            for (i, (tag, val)) in entries.iter().enumerate() {
                w.word(dynamic_at + i * 2 * wl, *tag);
                w.word(dynamic_at + i * 2 * wl + wl, *val);
            }
        }
        let total = w.bytes.len() as u64;

        w.bytes[..4].copy_from_slice(b"\x7fELF");
        w.bytes[4] = match s.class {
            Class::Elf32 => 1,
            Class::Elf64 => 2,
        };
        w.bytes[5] = match s.endian {
            Endian::Little => 1,
            Endian::Big => 2,
        };
        w.bytes[6] = 1;
        w.put(16, u64::from(s.kind), 2);
        w.put(18, u64::from(s.machine), 2);
        w.put(20, 1, 4);
        let (phoff_at, ehsize_at) = match s.class {
            Class::Elf32 => (28, 40),
            Class::Elf64 => (32, 52),
        };
        w.word(24, BASE);
        w.word(phoff_at, ehsize as u64);
        w.put(ehsize_at, ehsize as u64, 2);
        w.put(ehsize_at + 2, phentsize as u64, 2);
        w.put(ehsize_at + 4, phnum as u64, 2);

        let mut ph = ehsize;
        let mut segment = |w: &mut W, kind: u64, offset: u64, size: u64| {
            w.put(ph, kind, 4);
            match s.class {
                Class::Elf32 => {
                    w.put(ph + 4, offset, 4);
                    w.put(ph + 8, BASE + offset, 4);
                    w.put(ph + 12, BASE + offset, 4);
                    w.put(ph + 16, size, 4);
                    w.put(ph + 20, size, 4);
                }
                Class::Elf64 => {
                    w.put(ph + 8, offset, 8);
                    w.put(ph + 16, BASE + offset, 8);
                    w.put(ph + 24, BASE + offset, 8);
                    w.put(ph + 32, size, 8);
                    w.put(ph + 40, size, 8);
                }
            }
            ph += phentsize;
        };
        segment(&mut w, 1, 0, total);
        if let Some(i) = s.interp {
            segment(&mut w, 3, interp_at as u64, i.len() as u64 + 1);
        }
        if dynamic {
            segment(
                &mut w,
                2,
                dynamic_at as u64,
                (entries.len() * 2 * wl) as u64,
            );
        }
        w.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::synth::{Spec, build};
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn synthetic_files_in_every_class_and_byte_order() {
        for class in [Class::Elf32, Class::Elf64] {
            for endian in [Endian::Little, Endian::Big] {
                let spec = Spec {
                    class,
                    endian,
                    machine: 40,
                    kind: ET_DYN,
                    interp: Some("/lib/ld-linux-armhf.so.3"),
                    needed: &["libc.so.6", "libm.so.6"],
                    runpath: Some("$ORIGIN/../lib"),
                    rpath: Some("/opt/a:/opt/b"),
                };
                let bytes = build(&spec);
                let elf = Elf::read(bytes.as_slice()).unwrap();
                assert_eq!((elf.header.class, elf.header.endian), (class, endian));
                assert_eq!(elf.header.machine, 40);
                assert!(elf.header.is_program());
                assert_eq!(elf.interp, Some(os("/lib/ld-linux-armhf.so.3")));
                assert_eq!(elf.needed, [os("libc.so.6"), os("libm.so.6")]);
                assert_eq!(elf.runpath, Some(os("$ORIGIN/../lib")));
                assert_eq!(elf.rpath, Some(os("/opt/a:/opt/b")));
                let arm = class == Class::Elf32 && endian == Endian::Little;
                assert_eq!(elf.header.runs_on(Arch::Arm), arm);
                assert_eq!(elf.header.arch(), arm.then_some(Arch::Arm));
            }
        }
    }

    #[test]
    fn static_programs_have_no_interpreter_or_libraries() {
        let elf = Elf::read(build(&Spec::x86_64()).as_slice()).unwrap();
        assert_eq!(elf.header.arch(), Some(Arch::X86_64));
        assert!(elf.interp.is_none() && elf.needed.is_empty() && elf.runpath.is_none());
    }

    #[test]
    fn architecture_names() {
        let name = |class, endian, machine| {
            let mut h = Header::parse(&build(&Spec::x86_64())).unwrap();
            (h.class, h.endian, h.machine) = (class, endian, machine);
            h.arch_name()
        };
        assert_eq!(name(Class::Elf64, Endian::Little, 62), "x86_64");
        assert_eq!(name(Class::Elf64, Endian::Little, 183), "aarch64");
        assert_eq!(name(Class::Elf32, Endian::Little, 40), "arm");
        assert_eq!(name(Class::Elf32, Endian::Big, 40), "big-endian 32-bit arm");
        assert_eq!(name(Class::Elf32, Endian::Little, 3), "32-bit x86");
        assert_eq!(
            name(Class::Elf32, Endian::Little, 62),
            "x32 (32-bit x86_64)"
        );
        assert_eq!(
            name(Class::Elf64, Endian::Big, 9999),
            "ELF machine 9999 (64-bit)"
        );
        assert!(
            !Header::parse(&build(&Spec::x86_64()))
                .unwrap()
                .runs_on(Arch::Any)
        );
    }

    #[test]
    fn host_binaries() {
        // Debian's /bin/ls: dynamic, glibc.
        let ls = Elf::read(&File::open("/bin/ls").unwrap()).unwrap();
        assert_eq!(ls.header.arch(), Some(Arch::X86_64));
        assert!(ls.header.is_program());
        assert_eq!(ls.interp, Some(os("/lib64/ld-linux-x86-64.so.2")));
        assert!(ls.needed.contains(&os("libc.so.6")), "{:?}", ls.needed);
        // glibc's ldconfig is static-pie: a dynamic section but no interpreter or libraries.
        let path = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("ldconfig, a static program on glibc systems");
        let ldconfig = Elf::read(&File::open(path).unwrap()).unwrap();
        assert_eq!(ldconfig.header.arch(), Some(Arch::X86_64));
        assert!(ldconfig.interp.is_none() && ldconfig.needed.is_empty());
        // A shared library: no interpreter, needs the dynamic linker by name.
        let libc = Elf::read(&File::open("/lib/x86_64-linux-gnu/libc.so.6").unwrap()).unwrap();
        assert_eq!(libc.header.kind, ET_DYN);
        assert!(
            libc.needed
                .iter()
                .any(|n| n.to_string_lossy().starts_with("ld-linux"))
        );
    }

    #[test]
    fn not_elf_and_wrong_idents() {
        for bytes in [&b""[..], b"\x7fEL", b"#!/bin/sh\n", b"\x7fELX\x02\x01"] {
            assert!(
                matches!(Elf::read(bytes), Err(ElfError::NotElf)),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            Elf::read(&b"\x7fELF"[..]),
            Err(ElfError::Truncated(_))
        ));
        assert!(matches!(
            Elf::read(&b"\x7fELF\x03\x01"[..]),
            Err(ElfError::Class(3))
        ));
        assert!(matches!(
            Elf::read(&b"\x7fELF\x01\x07"[..]),
            Err(ElfError::Endian(7))
        ));
    }

    /// Every prefix of a dynamic file, and every single-byte corruption of it, gives an
    /// answer or an error, never a panic.
    #[test]
    fn truncated_and_corrupted_files_do_not_panic() {
        for class in [Class::Elf32, Class::Elf64] {
            let good = build(&Spec {
                class,
                interp: Some("/lib/ld.so"),
                needed: &["liba.so", "libb.so"],
                runpath: Some("/x"),
                ..Spec::x86_64()
            });
            for len in 0..good.len() {
                assert!(Elf::read(&good[..len]).is_err(), "{len} bytes accepted");
            }
            for at in 0..good.len() {
                for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[at] = value;
                    let _ = Elf::read(bad.as_slice());
                }
            }
        }
    }

    /// Write a little-endian word into a synthetic ELF64.
    fn poke(bytes: &mut [u8], at: usize, v: u64, len: usize) {
        bytes[at..at + len].copy_from_slice(&v.to_le_bytes()[..len]);
    }

    #[test]
    fn hostile_sizes_and_offsets_are_refused() {
        let spec = Spec {
            interp: Some("/lib/ld.so"),
            needed: &["liba.so"],
            ..Spec::x86_64()
        };
        let good = build(&spec);
        let e = |bytes: &[u8]| Elf::read(bytes).unwrap_err().to_string();
        // Program headers far away, too many, too small, or PN_XNUM.
        let mut b = good.clone();
        poke(&mut b, 32, u64::MAX - 8, 8);
        assert!(e(&b).contains("program headers past its end"), "{}", e(&b));
        let mut b = good.clone();
        poke(&mut b, 56, 0xffff, 2);
        assert!(e(&b).contains("PN_XNUM"));
        let mut b = good.clone();
        poke(&mut b, 54, 8, 2);
        assert!(e(&b).contains("too small"));
        let mut b = good.clone();
        poke(&mut b, 54, 0xfff0, 2);
        poke(&mut b, 56, 0xfff0, 2);
        assert!(e(&b).contains("over 1 MiB"));
        // Second program header is PT_INTERP: a huge size, then an offset past the end.
        let interp = 64 + 56;
        let mut b = good.clone();
        poke(&mut b, interp + 32, 1 << 40, 8);
        assert!(e(&b).contains("longer than 4096"));
        let mut b = good.clone();
        poke(&mut b, interp + 8, u64::MAX, 8);
        assert!(e(&b).contains("interpreter path past its end"));
        // Third is PT_DYNAMIC: a huge size, then a string table address nothing maps.
        let dynamic = 64 + 2 * 56;
        let mut b = good.clone();
        poke(&mut b, dynamic + 32, 1 << 40, 8);
        assert!(e(&b).contains("dynamic section is over"));
        let dyn_off = u64::from_le_bytes(b[dynamic + 8..dynamic + 16].try_into().unwrap());
        let mut b = good.clone();
        // Entry 1 is DT_STRTAB (after one DT_NEEDED).
        poke(&mut b, dyn_off as usize + 16 + 8, 0x10, 8);
        assert!(e(&b).contains("not in a loaded segment"), "{}", e(&b));
        // A DT_NEEDED offset beyond DT_STRSZ.
        let mut b = good.clone();
        poke(&mut b, dyn_off as usize + 8, 1 << 20, 8);
        assert!(e(&b).contains("outside the string table"));
    }

    #[test]
    fn a_file_is_read_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        let bytes = build(&Spec {
            needed: &["libz.so.1"],
            ..Spec::arm()
        });
        std::fs::write(&path, &bytes).unwrap();
        let elf = Elf::read(&File::open(&path).unwrap()).unwrap();
        assert_eq!(elf, Elf::read(bytes.as_slice()).unwrap());
        assert_eq!(elf.needed, [os("libz.so.1")]);
    }
}
