//! Installing a package into a repository so that a power cut at any moment leaves either
//! the old state or the new one (docs/design.md, decision 14):
//!
//! 1. the bytes go into `.tmp-N` in the repository directory (removed at start-up if the
//!    runtime died meanwhile), never past the announced size or the repository's limit;
//!    each `INSTALL_PUMP_SLICE` written starts its own writeback (`sync_file_range`
//!    `WRITE`, which does not wait);
//! 2. [`Install::sync_slice`], once per loop turn, waits until the next slice is on the
//!    device, so no turn waits for more than about one slice of writeback (a review
//!    measured a 60 MB install's `fsync`, all in one turn, holding `list` for ~160 ms);
//! 3. `fsync` of the file, which is still what makes it durable (`sync_file_range` writes
//!    neither metadata nor the disk's cache) but has little data left to write, then the
//!    same verification as at start-up (signature, length, digests) on what is on disk;
//! 4. `renameat2(RENAME_NOREPLACE)` to `NAME-VERSION.npk`, then `fsync` of the directory.
//!    A replacing install (`install --replace`) renames over the old file instead, so a
//!    power cut leaves the old package or the new one, never neither.
//!
//! An [`Install`] that is dropped before [`Install::finish`] (client gone, timeout,
//! error) removes its temporary file.

use core::ffi::CStr;
use core::fmt::Write as _;

use heapless::String;
use nanostar_protocol::npk::PublicKey;
use nanostar_protocol::version::Version;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::repository::{
    self, NPK_EXTENSION, Package, Packages, Rejection, SCRATCH_LEN, TEMP_PREFIX,
};

use crate::limits::{INSTALL_COPY_LEN, INSTALL_PUMP_SLICE, MAX_FILE_NAME_LEN};
use crate::sys::writeback::{Writeback, sync_file_range};

/// Why an install failed. Nothing is left behind in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// The announced size is above the repository's limit.
    TooLarge,
    /// More bytes arrived than were announced.
    Overrun,
    /// Fewer bytes arrived than were announced.
    Incomplete,
    /// The package failed verification, or is a duplicate, or the table is full.
    Rejected(Rejection),
    /// A file operation failed (disk full, read-only file system, ...).
    Io(Errno),
}

/// The package a client said it is installing (`Request::Install`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its version.
    pub version: Version,
    /// Whether it replaces an installed package of that name and version in the same
    /// repository (which the caller made sure nothing uses).
    pub replace: bool,
}

/// An install in progress.
pub struct Install {
    dir: OwnedFd,
    tmp: Option<OwnedFd>,
    tmp_name: String<32>,
    repository: u8,
    expected: u64,
    written: u64,
    /// Bytes whose writeback was started (`written` at the last start).
    started: u64,
    /// Bytes known to be on the device (`sync_slice` waited for them).
    synced: u64,
}

impl Install {
    /// Starts an install of `size` bytes into the repository directory `dir`; `serial`
    /// makes the temporary name unique among concurrent installs.
    pub fn begin(
        dir: &CStr,
        repository: u8,
        size: u64,
        limit: u64,
        serial: u32,
    ) -> Result<Install, InstallError> {
        if size > limit {
            return Err(InstallError::TooLarge);
        }
        let dir = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(InstallError::Io)?;
        let mut tmp_name = String::new();
        // Cannot overflow: the prefix and a u32 fit in 32 bytes.
        let _ = write!(tmp_name, "{TEMP_PREFIX}{serial}");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let tmp = rustix::fs::openat(&dir, tmp_name.as_str(), flags, Mode::from_raw_mode(0o644))
            .map_err(InstallError::Io)?;
        Ok(Install {
            dir,
            tmp: Some(tmp),
            tmp_name,
            repository,
            expected: size,
            written: 0,
            started: 0,
            synced: 0,
        })
    }

    /// The index of the repository it goes into.
    pub fn repository(&self) -> u8 {
        self.repository
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes announced.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Whether every byte is in and on the device, so [`Install::finish`] waits for
    /// little more than metadata.
    pub fn synced(&self) -> bool {
        self.synced == self.expected
    }

    /// Appends a chunk.
    pub fn write(&mut self, mut chunk: &[u8]) -> Result<(), InstallError> {
        if self.written + chunk.len() as u64 > self.expected {
            return Err(InstallError::Overrun);
        }
        let tmp = self.tmp.as_ref().ok_or(InstallError::Io(Errno::BADF))?;
        while !chunk.is_empty() {
            match rustix::io::write(tmp, chunk) {
                Ok(n) => {
                    chunk = &chunk[n..];
                    self.written += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(InstallError::Io(e)),
            }
        }
        self.start_writeback()
    }

    /// Starts the writeback of what was written since the last start, once that is a
    /// slice or the whole file is in: the disk works while the loop serves others, and
    /// [`Install::sync_slice`] finds little left to wait for.
    fn start_writeback(&mut self) -> Result<(), InstallError> {
        let pending = self.written - self.started;
        let whole = self.written == self.expected;
        if pending == 0 || (pending < INSTALL_PUMP_SLICE as u64 && !whole) {
            return Ok(());
        }
        let tmp = self.tmp.as_ref().ok_or(InstallError::Io(Errno::BADF))?;
        sync_file_range(tmp, self.started, pending, Writeback::Start).map_err(InstallError::Io)?;
        self.started = self.written;
        Ok(())
    }

    /// Waits until the next `INSTALL_PUMP_SLICE` of the complete file is on the device
    /// (one per loop turn); returns whether the whole file is.
    pub fn sync_slice(&mut self) -> Result<bool, InstallError> {
        if self.written != self.expected {
            return Err(InstallError::Incomplete);
        }
        let len = (self.expected - self.synced).min(INSTALL_PUMP_SLICE as u64);
        if len > 0 {
            let tmp = self.tmp.as_ref().ok_or(InstallError::Io(Errno::BADF))?;
            sync_file_range(tmp, self.synced, len, Writeback::Wait).map_err(InstallError::Io)?;
            self.synced += len;
        }
        Ok(self.synced())
    }

    /// Copies up to `max` more bytes from `source` (a package passed as a descriptor),
    /// reading it from where the install stands; returns the bytes copied. The kernel copies
    /// (`copy_file_range`) where it can; otherwise a small buffer does.
    pub fn copy_from(&mut self, source: &impl AsFd, max: usize) -> Result<u64, InstallError> {
        let want = (self.expected - self.written).min(max as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let tmp = self.tmp.as_ref().ok_or(InstallError::Io(Errno::BADF))?;
        let mut offset = self.written;
        match rustix::fs::copy_file_range(source, Some(&mut offset), tmp, None, want) {
            // The source ended before the announced size.
            Ok(0) => Err(InstallError::Incomplete),
            Ok(n) => {
                self.written += n as u64;
                self.start_writeback().map(|()| n as u64)
            }
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                let mut buf = [0u8; INSTALL_COPY_LEN];
                let len = want.min(INSTALL_COPY_LEN);
                match rustix::io::pread(source, &mut buf[..len], self.written) {
                    Ok(0) => Err(InstallError::Incomplete),
                    Ok(n) => self.write(&buf[..n]).map(|()| n as u64),
                    Err(e) => Err(InstallError::Io(e)),
                }
            }
            Err(e) => Err(InstallError::Io(e)),
        }
    }

    /// Makes the package durable (`fsync`: all of it unless [`Install::sync_slice`] wrote
    /// the data out before), verifies it, renames it into place, and adds it to
    /// `table`. With `announced`, the package must be the announced one; a replacing
    /// install takes the place of the installed package of that name and version.
    pub fn finish<'t>(
        mut self,
        keys: &[PublicKey],
        table: &'t mut Packages,
        scratch: &mut [u8; SCRATCH_LEN],
        announced: Option<Announced>,
    ) -> Result<&'t Package, InstallError> {
        if self.written != self.expected {
            return Err(InstallError::Incomplete);
        }
        let tmp = self.tmp.take().ok_or(InstallError::Io(Errno::BADF))?;
        rustix::fs::fsync(&tmp).map_err(InstallError::Io)?;
        drop(tmp);
        // Verify what is on disk, through a fresh read-only descriptor.
        let file = rustix::fs::openat(
            &self.dir,
            self.tmp_name.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(InstallError::Io)?;
        let examined = repository::examine(&file, keys, scratch).map_err(InstallError::Rejected)?;
        if announced.is_some_and(|a| a.name != examined.name || a.version != examined.version) {
            return Err(InstallError::Rejected(Rejection::NotAsAnnounced));
        }
        let replace = announced.is_some_and(|a| a.replace);
        // The file a replacing install supersedes (its name may differ from ours when
        // it was put into the repository by hand).
        let replaced = match table.find(examined.name, &examined.version) {
            Some(old) if replace && old.repository == self.repository => Some(old.file.clone()),
            Some(_) => return Err(InstallError::Rejected(Rejection::Duplicate)),
            None => None,
        };
        let mut name: String<MAX_FILE_NAME_LEN> = String::new();
        write!(
            name,
            "{}-{}{NPK_EXTENSION}",
            examined.name, examined.version
        )
        .map_err(|_| InstallError::Rejected(Rejection::FileName))?;
        let package = Package {
            name: String::try_from(examined.name)
                .map_err(|_| InstallError::Rejected(Rejection::FileName))?,
            version: examined.version,
            repository: self.repository,
            file: name.clone(),
            size: examined.size,
        };
        // Over the old file only when replacing it; otherwise a file of that name that the
        // table does not know (it failed verification at start-up) is not ours to remove.
        let flags = if replaced.as_deref() == Some(name.as_str()) {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(
            &self.dir,
            self.tmp_name.as_str(),
            &self.dir,
            name.as_str(),
            flags,
        )
        .map_err(|e| match e {
            Errno::EXIST => InstallError::Rejected(Rejection::Duplicate),
            other => InstallError::Io(other),
        })?;
        self.tmp_name.clear();
        if let Some(old) = replaced
            .as_ref()
            .filter(|old| old.as_str() != name.as_str())
        {
            // Both files hold the package now; the old name goes once the new one is
            // durable, so a power cut in between leaves a duplicate the next start-up
            // reports and skips, never no package.
            if let Err(e) = rustix::fs::fsync(&self.dir) {
                let _ = rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
                return Err(InstallError::Io(e));
            }
            let _ = rustix::fs::unlinkat(&self.dir, old.as_str(), AtFlags::empty());
        }
        let synced = rustix::fs::fsync(&self.dir);
        if replaced.is_some() {
            // The old file is gone either way: the table lists what the name now holds.
            table.remove(&package.name, &package.version);
        } else if let Err(e) = synced {
            // The rename may not survive a power cut: undo it rather than list a package
            // that could vanish.
            let _ = rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
            return Err(InstallError::Io(e));
        }
        let inserted = table.insert(package).map_err(|why| {
            let _ = rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
            InstallError::Rejected(why)
        })?;
        synced.map_err(InstallError::Io)?;
        Ok(inserted)
    }
}

impl Drop for Install {
    /// An unfinished install leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp_name.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp_name.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests;
