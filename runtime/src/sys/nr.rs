//! The numbers of the system calls `sys` makes itself (the ones rustix does not have), all
//! in one place. They come from linux-raw-sys, which has each architecture's table, so
//! none is written here by hand.

use linux_raw_sys::general as nr;

/// `clone(2)`, where `clone3` is refused (seccomp filters that cannot read its flags).
pub const CLONE: usize = nr::__NR_clone as usize;
/// `clone3(2)`.
pub const CLONE3: usize = nr::__NR_clone3 as usize;
/// `close_range(2)`.
pub const CLOSE_RANGE: usize = nr::__NR_close_range as usize;
/// `dup3(2)`.
pub const DUP3: usize = nr::__NR_dup3 as usize;
/// `execve(2)`.
pub const EXECVE: usize = nr::__NR_execve as usize;
/// `exit_group(2)`.
pub const EXIT_GROUP: usize = nr::__NR_exit_group as usize;
/// `getsockopt(2)`.
pub const GETSOCKOPT: usize = nr::__NR_getsockopt as usize;
/// `mount_setattr(2)`.
pub const MOUNT_SETATTR: usize = nr::__NR_mount_setattr as usize;
/// `rt_sigprocmask(2)`.
pub const RT_SIGPROCMASK: usize = nr::__NR_rt_sigprocmask as usize;
/// `seccomp(2)`.
pub const SECCOMP: usize = nr::__NR_seccomp as usize;
/// `signalfd4(2)`.
pub const SIGNALFD4: usize = nr::__NR_signalfd4 as usize;
/// `sync_file_range(2)`.
#[cfg(not(target_arch = "arm"))]
pub const SYNC_FILE_RANGE: usize = nr::__NR_sync_file_range as usize;
/// `sync_file_range2(2)`: arm's `sync_file_range`, the flags second so that the 64-bit
/// offset and length each fall on an even register pair (EABI).
#[cfg(target_arch = "arm")]
pub const SYNC_FILE_RANGE2: usize = nr::__NR_sync_file_range2 as usize;
/// `tgkill(2)`, for the signal tests.
#[cfg(test)]
pub const TGKILL: usize = nr::__NR_tgkill as usize;
