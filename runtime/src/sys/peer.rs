//! `getsockopt(SO_PEERCRED)` into a plain struct: rustix's `UCred` holds a non-zero `Pid`,
//! but the kernel reports pid 0 for a peer outside the runtime's PID namespace (a client
//! on the host talking to a runtime in a namespace), which must not fail the connection.

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

#[cfg(target_arch = "x86_64")]
const GETSOCKOPT: usize = 55;
#[cfg(target_arch = "aarch64")]
const GETSOCKOPT: usize = 209;
#[cfg(target_arch = "arm")]
const GETSOCKOPT: usize = 295;
const SOL_SOCKET: usize = 1;
const SO_PEERCRED: usize = 17;

/// `struct ucred` (linux/socket.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Ucred {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// The uid and gid of the process at the other end of a unix socket.
pub fn peer_credentials(socket: impl AsFd) -> Result<(u32, u32), Errno> {
    let mut cred = Ucred::default();
    let mut len = core::mem::size_of::<Ucred>() as u32;
    let fd = socket.as_fd().as_raw_fd() as usize;
    // SAFETY: `cred` and `len` are valid for the kernel to write; `len` says how much.
    let r = unsafe {
        super::syscall::raw5(
            GETSOCKOPT,
            fd,
            SOL_SOCKET,
            SO_PEERCRED,
            &mut cred as *mut Ucred as usize,
            &mut len as *mut u32 as usize,
        )
    };
    super::syscall::result(r)?;
    Ok((cred.uid, cred.gid))
}
