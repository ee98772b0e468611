//! `sync_file_range(2)`, which rustix does not have: it starts or waits for the writeback
//! of part of a file, so an install's data reaches the disk a slice per loop turn instead
//! of all at once in one `fsync` (docs/design.md, decision 14). It neither writes metadata
//! nor flushes the disk's cache: durability still takes the `fsync` after it.

use linux_raw_sys::general as kernel;
use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

/// How far `sync_file_range` goes for a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// `SYNC_FILE_RANGE_WRITE`: starts writing the dirty pages out and returns (it blocks
    /// only if the device's request queue is full).
    Start,
    /// `WAIT_BEFORE | WRITE | WAIT_AFTER`: returns when every page of the range that was
    /// dirty or under writeback at the call is on the device.
    Wait,
}

/// `sync_file_range(file, offset, len, flags)` (`sync_file_range2` on arm, the same
/// call with its arguments in another order).
pub fn sync_file_range(
    file: impl AsFd,
    offset: u64,
    len: u64,
    how: Writeback,
) -> Result<(), Errno> {
    let flags = match how {
        Writeback::Start => kernel::SYNC_FILE_RANGE_WRITE,
        Writeback::Wait => {
            kernel::SYNC_FILE_RANGE_WAIT_BEFORE
                | kernel::SYNC_FILE_RANGE_WRITE
                | kernel::SYNC_FILE_RANGE_WAIT_AFTER
        }
    } as usize;
    let fd = file.as_fd().as_raw_fd() as usize;
    // SAFETY: all arguments are integers; the kernel reads no memory of ours.
    #[cfg(not(target_arch = "arm"))]
    let r = unsafe {
        super::syscall::raw4(
            super::nr::SYNC_FILE_RANGE,
            fd,
            offset as usize,
            len as usize,
            flags,
        )
    };
    // SAFETY: as above; each 64-bit argument is split into its low and high words, in
    // that order on little-endian arm.
    #[cfg(target_arch = "arm")]
    let r = unsafe {
        super::syscall::raw6(
            super::nr::SYNC_FILE_RANGE2,
            fd,
            flags,
            offset as u32 as usize,
            (offset >> 32) as usize,
            len as u32 as usize,
            (len >> 32) as usize,
        )
    };
    super::syscall::result(r).map(drop)
}
