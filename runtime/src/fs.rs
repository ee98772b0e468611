//! Reading whole small files (configuration, key files) into caller-owned buffers.

use core::ffi::CStr;
use core::fmt;

use nanostar_protocol::npk::PublicKey;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::layout::Path;

/// Why a file could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileError {
    /// A system call failed.
    Io(Errno),
    /// The file is larger than the buffer it is read into.
    TooLarge,
    /// A key file that holds no key.
    NotAKey,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io(e) => f.write_str(errno_text(*e)),
            FileError::TooLarge => f.write_str("file too large"),
            FileError::NotAKey => {
                f.write_str("not a public key (expected `npk keygen` output or 32 raw bytes)")
            }
        }
    }
}

/// Reads the file at `path` into `buf`; fails if it does not fit.
pub fn read_to_buf<'b>(path: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], FileError> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(FileError::Io)?;
    let mut len = 0;
    loop {
        let Some(free) = buf.get_mut(len..).filter(|f| !f.is_empty()) else {
            // Full: one more byte means the file is larger than the buffer.
            let mut probe = [0u8; 1];
            return match rustix::io::read(&fd, &mut probe) {
                Ok(0) => Ok(&buf[..len]),
                Ok(_) => Err(FileError::TooLarge),
                Err(e) => Err(FileError::Io(e)),
            };
        };
        match rustix::io::read(&fd, free) {
            Ok(0) => return Ok(&buf[..len]),
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(FileError::Io(e)),
        }
    }
}

/// Reads a public key file (our text form or raw 32 bytes).
pub fn read_public_key(path: &[u8]) -> Result<PublicKey, FileError> {
    let mut buf = [0u8; 128];
    let bytes = read_to_buf(path, &mut buf)?;
    PublicKey::from_file_bytes(bytes).map_err(|_| FileError::NotAKey)
}

/// Words for the errors a person is likely to meet when pointing the runtime at files
/// (rustix without std only prints numbers).
pub fn errno_text(e: Errno) -> &'static str {
    match e {
        Errno::NOENT => "no such file or directory",
        Errno::ACCESS => "permission denied",
        Errno::PERM => "operation not permitted",
        Errno::ISDIR => "is a directory",
        Errno::NOTDIR => "a path component is not a directory",
        Errno::LOOP => "too many symbolic links",
        Errno::NAMETOOLONG => "path too long",
        Errno::IO => "input/output error",
        Errno::NOMEM => "out of memory",
        Errno::NOSPC => "no space left on device",
        Errno::ROFS => "read-only file system",
        Errno::EXIST => "already exists",
        Errno::BUSY => "device or resource busy",
        Errno::INVAL => "invalid argument",
        Errno::MFILE | Errno::NFILE => "too many open files",
        _ => "system error",
    }
}

/// Removes `parent/name` and everything below it, without following symbolic links
/// (`uninstall --wipe` of a package's data directory). A missing entry is not an error.
pub fn remove_tree(parent: &str, name: &str) -> Result<(), Errno> {
    let mut dir = Path::of(&[parent])?;
    let parent_fd = rustix::fs::open(
        dir.c_str()?,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut name = Path::of(&[name])?;
    remove_at(&parent_fd, name.c_str()?, 0)
}

fn remove_at(dir: &impl rustix::fd::AsFd, name: &CStr, depth: usize) -> Result<(), Errno> {
    use rustix::fs::AtFlags;
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    if depth >= crate::limits::MAX_TREE_DEPTH {
        return Err(Errno::LOOP);
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [core::mem::MaybeUninit::<u8>::uninit(); 1024];
    let mut entries = rustix::fs::RawDir::new(&sub, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let child = entry.file_name();
        if child != c"." && child != c".." {
            remove_at(&sub, child, depth + 1)?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// `mkdir -p` for an absolute path.
pub fn create_dirs(path: &str) -> Result<(), Errno> {
    for (i, _) in path
        .match_indices('/')
        .skip(1)
        .chain(core::iter::once((path.len(), "")))
    {
        let mut dir = Path::of(&[&path[..i]])?;
        match rustix::fs::mkdir(dir.c_str()?, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
