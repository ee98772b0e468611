//! The only module with `unsafe`: the process entry point, the memory functions a program
//! without libc must provide, raw syscalls rustix does not expose, and the panic handler.
//! Every `unsafe` block says why it is sound.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod dm;
#[cfg(nanostar_device)]
mod entry;
pub mod loopdev;
#[cfg(nanostar_device)]
mod mem;
pub mod mount;
mod nr;
pub mod once;
pub mod peer;
pub mod process;
pub mod signals;
mod syscall;
pub mod writeback;

/// The program's arguments (argv[1..]) as bytes.
#[cfg(nanostar_device)]
pub fn args() -> impl Iterator<Item = &'static [u8]> {
    entry::args()
}

/// The program's arguments (argv[1..]) as bytes: host builds take them from std, leaked
/// once so they live as long as the device's (which sit on the initial stack).
#[cfg(not(nanostar_device))]
pub fn args() -> impl Iterator<Item = &'static [u8]> {
    use std::os::unix::ffi::OsStringExt;
    std::env::args_os().skip(1).map(|a| &*a.into_vec().leak())
}

/// Makes what `ps` shows for this process `name`: its command line
/// (`/proc/self/cmdline`, the kernel's argument area overwritten in place; no capability
/// needed) and its thread name (`prctl(PR_SET_NAME)`). A container's init is a copy of the
/// runtime: without this the container's `ps` shows the host's command line and
/// configuration path as its PID 1. Host builds (tests only) set the thread name only.
pub fn set_process_name(name: &core::ffi::CStr) -> rustix::io::Result<()> {
    #[cfg(nanostar_device)]
    entry::hide_command_line(name);
    rustix::thread::set_name(name)
}

/// The environment (`KEY=value` byte strings).
#[cfg(nanostar_device)]
pub fn env() -> impl Iterator<Item = &'static [u8]> {
    entry::env()
}

/// The environment (`KEY=value` byte strings), taken from std on host builds.
#[cfg(not(nanostar_device))]
pub fn env() -> impl Iterator<Item = &'static [u8]> {
    use std::os::unix::ffi::OsStringExt;
    std::env::vars_os().map(|(k, v)| {
        let mut entry = k.into_vec();
        entry.push(b'=');
        entry.extend(v.into_vec());
        &*entry.leak()
    })
}

/// The standard streams the runtime writes text to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdFd {
    /// fd 1.
    Out,
    /// fd 2.
    Err,
}

/// `write(2)` until all of `bytes` is written to a standard stream (retrying on EINTR).
pub fn write_all(fd: StdFd, mut bytes: &[u8]) -> rustix::io::Result<()> {
    let raw = match fd {
        StdFd::Out => 1,
        StdFd::Err => 2,
    };
    // SAFETY: fds 1 and 2 are open for the whole life of the process (the kernel or the
    // parent sets them up; as PID 1 the runtime opens /dev/console on them first).
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) };
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(rustix::io::Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
