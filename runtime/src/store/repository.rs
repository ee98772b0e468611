//! Repositories: directories of NPK files, checked at start-up into a fixed table.
//!
//! Every package is verified before it is listed: its header's signature against the
//! repository's keys (or accepted unchecked in a repository without keys), its length, and
//! the digests of its manifest and seccomp program. A broken, partial, unsigned or foreign
//! file is reported and skipped, never fatal; leftovers of interrupted installs (`.tmp-*`)
//! are removed.

use core::ffi::CStr;
use core::fmt;
use core::mem::MaybeUninit;

use heapless::{String, Vec};
use nanostar_protocol::npk::header::HEADER_LEN;
use nanostar_protocol::npk::{
    Arch, ContentError, HeaderError, PublicKey, UnverifiedHeader, VerifiedHeader,
};
use nanostar_protocol::version::Version;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

pub use crate::limits::SCRATCH_LEN;
use crate::limits::{MAX_FILE_NAME_LEN, MAX_NAME_LEN, MAX_PACKAGES};

/// Prefix of files an install writes before they are verified and renamed.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Extension of package files.
pub const NPK_EXTENSION: &str = ".npk";

/// One verified package in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Name from the manifest.
    pub name: String<MAX_NAME_LEN>,
    /// Version from the manifest.
    pub version: Version,
    /// Index of its repository in the configuration.
    pub repository: u8,
    /// File name inside the repository directory.
    pub file: String<MAX_FILE_NAME_LEN>,
    /// File size in bytes.
    pub size: u64,
}

/// Why a file in a repository was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Reading it failed.
    Io(Errno),
    /// Its header is malformed, unsigned where keys are required, signed by an unknown key,
    /// or its signature or length does not match.
    Header(HeaderError),
    /// Its manifest or seccomp program does not match the signed digests or does not decode.
    Content(ContentError),
    /// Another file already holds this name and version.
    Duplicate,
    /// The package table is full.
    TableFull,
    /// The file name is longer than the table stores.
    FileName,
    /// The package is built for this architecture, not the runtime's.
    WrongArch(Arch),
    /// The package is not the one its install announced.
    NotAsAnnounced,
    /// The entry is not a regular file (a symlink, FIFO, socket, device or directory).
    NotAFile,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Io(e) => f.write_str(crate::fs::errno_text(*e)),
            Rejection::Header(HeaderError::Truncated) => f.write_str("shorter than an NPK header"),
            Rejection::Header(HeaderError::Magic) => f.write_str("not an NPK file"),
            Rejection::Header(HeaderError::Version(v)) => {
                write!(f, "NPK format version {v} is not supported")
            }
            Rejection::Header(HeaderError::Unsigned) => {
                f.write_str("not signed, but the repository requires a signature")
            }
            Rejection::Header(HeaderError::UnknownKey(_)) => {
                f.write_str("signed by a key the repository does not trust")
            }
            Rejection::Header(HeaderError::Signature) => {
                f.write_str("the signature does not match: altered or corrupt")
            }
            Rejection::Header(HeaderError::FileLength) => {
                f.write_str("the file length differs from its header: truncated or extended")
            }
            Rejection::Header(_) => f.write_str(
                "inconsistent header: corrupt or altered (`npk verify` says which field)",
            ),
            Rejection::Content(ContentError::ManifestDigest) => {
                f.write_str("the manifest does not match its signed digest")
            }
            Rejection::Content(ContentError::SeccompDigest) => {
                f.write_str("the seccomp program does not match its signed digest")
            }
            Rejection::Content(ContentError::SeccompMissing) => f.write_str(
                "no seccomp program, but the manifest does not choose `unconfined` (repack it \
                 with a current npk)",
            ),
            Rejection::Content(ContentError::SeccompUnexpected) => f.write_str(
                "a seccomp program, but the manifest chose no filter or the package is a resource",
            ),
            Rejection::Content(ContentError::Padding) => {
                f.write_str("the padding before the image is not zero: altered")
            }
            Rejection::Content(_) => f.write_str(
                "the manifest or seccomp program does not decode (`npk inspect` says why)",
            ),
            Rejection::Duplicate => f.write_str("another file holds the same name and version"),
            Rejection::TableFull => f.write_str("too many packages: the package table is full"),
            Rejection::FileName => f.write_str("file name too long"),
            Rejection::WrongArch(arch) => write!(
                f,
                "built for {}, but this runtime runs on {}",
                arch.name(),
                Arch::native().map_or("another architecture", Arch::name)
            ),
            Rejection::NotAsAnnounced => {
                f.write_str("not the package (name and version) its install announced")
            }
            Rejection::NotAFile => f.write_str(
                "not a regular file (a symlink, FIFO, socket, device or directory is never read)",
            ),
        }
    }
}

/// What a scan did with one directory entry, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEvent<'a> {
    /// A package was verified and added.
    Added(&'a Package),
    /// A file was skipped.
    Skipped {
        /// Its name.
        file: &'a str,
        /// Why.
        why: Rejection,
    },
    /// A leftover temporary file was removed.
    RemovedTemp(&'a str),
}

/// The packages of every repository, in a fixed table.
#[derive(Debug, Default)]
pub struct Packages {
    entries: Vec<Package, MAX_PACKAGES>,
}

impl Packages {
    /// An empty table.
    pub const fn new() -> Packages {
        Packages {
            entries: Vec::new(),
        }
    }

    /// All packages, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Package> {
        self.entries.iter()
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when no package is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The package with this name and version.
    pub fn find(&self, name: &str, version: &Version) -> Option<&Package> {
        self.entries
            .iter()
            .find(|p| p.name == name && p.version == *version)
    }

    /// Removes the package with this name and version; `false` if there was none.
    pub fn remove(&mut self, name: &str, version: &Version) -> bool {
        match self
            .entries
            .iter()
            .position(|p| p.name == name && p.version == *version)
        {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Adds a package; refuses a second one with the same name and version.
    pub fn insert(&mut self, package: Package) -> Result<&Package, Rejection> {
        if self.find(&package.name, &package.version).is_some() {
            return Err(Rejection::Duplicate);
        }
        self.entries
            .push(package)
            .map_err(|_| Rejection::TableFull)?;
        self.entries.last().ok_or(Rejection::TableFull)
    }
}

/// Opens the package file `name` in `dir` (or a path, with `rustix::fs::CWD`) for
/// [`examine`]. A repository is a directory someone else may write to, so nothing in it
/// is trusted before it is checked: the entry must be a regular file before it is opened
/// (opening a FIFO blocks, opening a device can start it), the open follows no symlink at
/// the last component and cannot block, and the descriptor is checked again (the entry
/// may have been swapped in between).
pub fn open_package(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Rejection> {
    let before =
        rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(Rejection::Io)?;
    if FileType::from_raw_mode(before.st_mode) != FileType::RegularFile {
        return Err(Rejection::NotAFile);
    }
    let flags =
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // O_NOFOLLOW's answer for a symlink swapped in after the check.
        Err(Errno::LOOP) => return Err(Rejection::NotAFile),
        Err(e) => return Err(Rejection::Io(e)),
    };
    let after = rustix::fs::fstat(&fd).map_err(Rejection::Io)?;
    if FileType::from_raw_mode(after.st_mode) != FileType::RegularFile {
        return Err(Rejection::NotAFile);
    }
    Ok(fd)
}

/// What [`examine`] learnt from a verified file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Examined<'s> {
    /// The trusted header.
    pub header: VerifiedHeader,
    /// Name from the manifest (borrowed from the scratch buffer).
    pub name: &'s str,
    /// Version from the manifest.
    pub version: Version,
    /// File size.
    pub size: u64,
}

/// Verifies the package file `fd`: header (signature against `keys`, or unchecked when
/// `keys` is empty), architecture (this runtime's or none), file length, manifest and
/// seccomp digests, zero padding, a program unless the manifest chose none. Reads at most
/// [`SCRATCH_LEN`] bytes; never the image.
pub fn examine<'s>(
    fd: impl AsFd,
    keys: &[PublicKey],
    scratch: &'s mut [u8; SCRATCH_LEN],
) -> Result<Examined<'s>, Rejection> {
    let size = rustix::fs::fstat(&fd).map_err(Rejection::Io)?.st_size as u64;
    let (head, rest) = scratch.split_at_mut(HEADER_LEN);
    // A short file is judged by the header parser: "not an NPK" or "truncated".
    let got = read_at(&fd, head, 0)?;
    let unverified = UnverifiedHeader::new(&head[..got]).map_err(Rejection::Header)?;
    let header = if keys.is_empty() {
        unverified.accept_unsigned()
    } else {
        unverified.verify(keys)
    }
    .map_err(Rejection::Header)?;
    // Known only once the header is trusted; a package this runtime cannot run is
    // refused here rather than dying with SIGSYS or ENOEXEC at its first start.
    if !header.arch.runs_here() {
        return Err(Rejection::WrongArch(header.arch));
    }
    header.check_file_len(size).map_err(Rejection::Header)?;
    // Manifest, seccomp program and the padding up to the image in one read: every byte
    // of them is checked (digests, zero padding), and the program must be there unless
    // the manifest chose no filter.
    let contents = &mut rest[..header.contents_len()];
    read_exact_at(&fd, contents, HEADER_LEN as u64)?;
    let manifest = header
        .contents(contents)
        .map_err(Rejection::Content)?
        .manifest;
    Ok(Examined {
        header,
        name: manifest.name,
        version: manifest.version,
        size,
    })
}

/// `pread(2)` until `buf` is full or the file ends; returns the bytes read.
fn read_at(fd: &impl AsFd, buf: &mut [u8], mut offset: u64) -> Result<usize, Rejection> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(Rejection::Io(e)),
        }
    }
    Ok(done)
}

/// [`read_at`] where a short read means the file is shorter than its header says.
fn read_exact_at(fd: &impl AsFd, buf: &mut [u8], offset: u64) -> Result<(), Rejection> {
    match read_at(fd, buf, offset)? {
        n if n == buf.len() => Ok(()),
        _ => Err(Rejection::Header(HeaderError::FileLength)),
    }
}

/// Whether a scan removes the leftovers of interrupted installs (at start-up) or only
/// looks (`check-config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Remove `.tmp-*` files.
    Remove,
    /// Leave them.
    Keep,
}

/// Scans the repository directory `dir`: verifies every `*.npk` into `table`, handles
/// `.tmp-*` leftovers as `leftovers` says, skips everything else silently, and tells
/// `report` about each package and problem. Fails only if the directory cannot be read.
pub fn scan(
    repository: u8,
    dir: &CStr,
    keys: &[PublicKey],
    leftovers: Leftovers,
    table: &mut Packages,
    scratch: &mut [u8; SCRATCH_LEN],
    report: &mut dyn FnMut(ScanEvent),
) -> Result<(), Errno> {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = rustix::fs::RawDir::new(&dirfd, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            // An install that never finished: nothing refers to it.
            if leftovers == Leftovers::Remove
                && rustix::fs::unlinkat(&dirfd, entry.file_name(), AtFlags::empty()).is_ok()
            {
                report(ScanEvent::RemovedTemp(name));
            }
            continue;
        }
        if !name.ends_with(NPK_EXTENSION) {
            continue;
        }
        match add(
            repository,
            &dirfd,
            entry.file_name(),
            name,
            keys,
            table,
            scratch,
        ) {
            Ok(package) => report(ScanEvent::Added(package)),
            Err(why) => report(ScanEvent::Skipped { file: name, why }),
        }
    }
    Ok(())
}

fn add<'t>(
    repository: u8,
    dirfd: &OwnedFd,
    c_name: &CStr,
    name: &str,
    keys: &[PublicKey],
    table: &'t mut Packages,
    scratch: &mut [u8; SCRATCH_LEN],
) -> Result<&'t Package, Rejection> {
    let file = String::try_from(name).map_err(|_| Rejection::FileName)?;
    let fd = open_package(dirfd, c_name)?;
    let examined = examine(&fd, keys, scratch)?;
    // The manifest validated the name's length, so this cannot fail.
    let package_name =
        String::try_from(examined.name).map_err(|_| Rejection::Content(ContentError::Length))?;
    table.insert(Package {
        name: package_name,
        version: examined.version,
        repository,
        file,
        size: examined.size,
    })
}

#[cfg(test)]
mod tests;
