//! `getsockopt(SO_PEERCRED)` into the kernel's plain `struct ucred`: rustix's `UCred`
//! holds a non-zero `Pid`, but the kernel reports pid 0 for a peer outside the runtime's
//! PID namespace (a client on the host talking to a runtime in a namespace), which must
//! not fail the connection.

use linux_raw_sys::net::ucred;
use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

const SOL_SOCKET: usize = linux_raw_sys::net::SOL_SOCKET as usize;
const SO_PEERCRED: usize = linux_raw_sys::net::SO_PEERCRED as usize;

/// `getsockopt(socket, SOL_SOCKET, SO_PEERCRED)`: the uid and gid of the process at the
/// other end of a unix socket.
pub fn peer_credentials(socket: impl AsFd) -> Result<(u32, u32), Errno> {
    let mut cred = ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = core::mem::size_of::<ucred>() as u32;
    let fd = socket.as_fd().as_raw_fd() as usize;
    // SAFETY: `cred` and `len` are valid for the kernel to write; `len` says how much.
    let r = unsafe {
        super::syscall::raw5(
            super::nr::GETSOCKOPT,
            fd,
            SOL_SOCKET,
            SO_PEERCRED,
            &mut cred as *mut ucred as usize,
            &mut len as *mut u32 as usize,
        )
    };
    super::syscall::result(r)?;
    Ok((cred.uid, cred.gid))
}
