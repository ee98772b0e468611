//! `mount_setattr(2)`, the one call of the new mount API that rustix does not have: it
//! changes the flags of a mount given as a descriptor (a detached tree from `open_tree` or
//! `fsmount`), so a mount is made read-only before it is attached and never by path.

use linux_raw_sys::general::{self as kernel, mount_attr};
use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

use super::nr;
use super::syscall::{raw5, result};

/// The `MOUNT_ATTR_*` flags `mount_setattr` sets or clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountAttr(pub u64);

impl MountAttr {
    /// Read-only.
    pub const RDONLY: MountAttr = MountAttr(kernel::MOUNT_ATTR_RDONLY as u64);
    /// Set-user-id and file capabilities ignored.
    pub const NOSUID: MountAttr = MountAttr(kernel::MOUNT_ATTR_NOSUID as u64);
    /// Device files cannot be opened.
    pub const NODEV: MountAttr = MountAttr(kernel::MOUNT_ATTR_NODEV as u64);
    /// Nothing can be executed.
    pub const NOEXEC: MountAttr = MountAttr(kernel::MOUNT_ATTR_NOEXEC as u64);

    /// Both sets.
    pub const fn union(self, other: MountAttr) -> MountAttr {
        MountAttr(self.0 | other.0)
    }
}

/// `mount_setattr(mount, "", AT_EMPTY_PATH [| AT_RECURSIVE], {attr_set: set})`: sets
/// `set` on the mount `mount` (and with `recursive`, on every mount below it).
pub fn set_mount_attr(mount: impl AsFd, set: MountAttr, recursive: bool) -> Result<(), Errno> {
    let mut flags = kernel::AT_EMPTY_PATH;
    if recursive {
        flags |= kernel::AT_RECURSIVE;
    }
    let attr = mount_attr {
        attr_set: set.0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a valid empty C string, `attr` is a valid `struct mount_attr`
    // of the size passed; the kernel only reads both.
    let r = unsafe {
        raw5(
            nr::MOUNT_SETATTR,
            mount.as_fd().as_raw_fd() as usize,
            c"".as_ptr() as usize,
            flags as usize,
            &attr as *const mount_attr as usize,
            core::mem::size_of::<mount_attr>(),
        )
    };
    result(r).map(drop)
}
