//! A running container's app, found from the runtime's side, for the one signal init
//! cannot forward. Init blocks every signal and forwards what its signalfd reads, but
//! SIGSTOP can be neither blocked nor read: sent to init, it would stop init itself,
//! which then neither reaps nor forwards nor reports, while the app runs on. So the
//! runtime sends SIGSTOP to the app. (SIGKILL to init is what it should be: the kernel
//! then kills everything in the container's PID namespace.)
//!
//! The app is init's child with pid 2 in the container's PID namespace: init's first
//! and only fork (orphans re-parented to init have other numbers, and init ends with the
//! app, so no other process gets pid 2 while init lives). It is found in `/proc` by the
//! `PPid` and `NSpid` lines of each process's `status`, numbered in the PID namespace of
//! that `/proc`, which need not be the runtime's (a runtime started in a new PID
//! namespace under the host's `/proc`): init's own pid there comes from its pidfd's
//! `fdinfo`. The signal goes to the `/proc/PID` directory whose `status` was read
//! (`pidfd_send_signal` takes such a descriptor), so a pid reused after the check is
//! never hit.
//!
//! Scanning `/proc` reads one small file per process: on a device with a few dozen
//! processes well under a millisecond, and only for a `kill NAME STOP`.

use core::fmt::Write as _;
use core::mem::MaybeUninit;

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Signal;

use crate::layout::CPath;
use crate::limits::PROC_STATUS_READ_LEN;

/// The app's pid in its container's PID namespace (init is 1).
const APP_PID_IN_CONTAINER: u32 = 2;

/// Sends `signal` to the app of the container whose init has the pidfd `init`;
/// `Errno::SRCH` when it has no app (not forked yet, or ended).
#[inline(never)] // Its buffers are on the stack only for a `kill NAME STOP`.
pub fn signal_app(init: &OwnedFd, signal: Signal) -> Result<(), Errno> {
    let (init_pid, depth) = init_in_proc(init)?;
    let proc = rustix::fs::open(
        c"/proc",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut entries = rustix::fs::RawDir::new(&proc, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes().is_empty() || !name.to_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        // Gone since the listing, or not ours to read: not the app.
        let Ok(dir) = rustix::fs::openat(
            &proc,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if is_app(&dir, init_pid, depth) {
            return rustix::process::pidfd_send_signal(&dir, signal);
        }
    }
    Err(Errno::SRCH)
}

/// Init's pid in the PID namespace of `/proc`, and the number of namespaces from that
/// one down to the container's (the fields of its `NSpid`), from the `fdinfo` of its
/// pidfd.
fn init_in_proc(init: &OwnedFd) -> Result<(u32, usize), Errno> {
    let mut path: CPath<48> = CPath::default();
    write!(path, "/proc/self/fdinfo/{}", init.as_fd().as_raw_fd())
        .map_err(|_| Errno::NAMETOOLONG)?;
    let mut text = [0u8; 512];
    let text = read_start(path.c_str()?, None, &mut text)?;
    // `Pid` is 0 when init is not visible in that `/proc`, -1 once it is gone.
    let (pid, depth) = pid_fields(text, b"NSpid:").ok_or(Errno::SRCH)?;
    let pid = pid.ok_or(Errno::SRCH)?;
    Ok((pid, depth))
}

/// Whether the process of the `/proc/PID` directory `dir` is init's child with the
/// app's pid in init's namespace.
fn is_app(dir: &OwnedFd, init_pid: u32, depth: usize) -> bool {
    let mut text = [0u8; PROC_STATUS_READ_LEN];
    let Ok(text) = read_start(c"status", Some(dir), &mut text) else {
        return false;
    };
    let parent = pid_fields(text, b"PPid:").and_then(|(pid, _)| pid);
    let in_container = last_field(text, b"NSpid:", depth);
    parent == Some(init_pid) && in_container == Some(APP_PID_IN_CONTAINER)
}

/// The first bytes of the file at `path` (relative to `dir`, if given) that fit `buf`.
fn read_start<'b>(
    path: &core::ffi::CStr,
    dir: Option<&OwnedFd>,
    buf: &'b mut [u8],
) -> Result<&'b [u8], Errno> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match dir {
        Some(dir) => rustix::fs::openat(dir, path, flags, Mode::empty())?,
        None => rustix::fs::open(path, flags, Mode::empty())?,
    };
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..len])
}

/// The line of `text` that starts with `key`, after the key.
fn line<'t>(text: &'t [u8], key: &[u8]) -> Option<&'t [u8]> {
    text.split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(key))
}

/// The whitespace-separated numbers of a line (a negative one is `None`).
fn numbers(line: &[u8]) -> impl Iterator<Item = Option<u32>> + '_ {
    line.split(|b| *b == b'\t' || *b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| core::str::from_utf8(w).ok().and_then(|w| w.parse().ok()))
}

/// The first number of the line `key` (`None` inside when it is not a positive pid),
/// and how many numbers it has.
fn pid_fields(text: &[u8], key: &[u8]) -> Option<(Option<u32>, usize)> {
    let line = line(text, key)?;
    let first = numbers(line).next()?.filter(|&pid| pid > 0);
    Some((first, numbers(line).count()))
}

/// The last number of the line `key` if it has exactly `count` numbers.
fn last_field(text: &[u8], key: &[u8], count: usize) -> Option<u32> {
    let line = line(text, key)?;
    if numbers(line).count() != count {
        return None;
    }
    numbers(line).last()?
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Name:\tprobe\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Ngid:\t0\nPid:\t4242\nPPid:\t4241\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n\
        NStgid:\t4242\t7\t2\nNSpid:\t4242\t7\t2\nNSpgid:\t1\t0\t0\n";

    #[test]
    fn status_lines_give_parent_and_pid_in_each_namespace() {
        assert_eq!(pid_fields(STATUS, b"PPid:"), Some((Some(4241), 1)));
        assert_eq!(pid_fields(STATUS, b"NSpid:"), Some((Some(4242), 3)));
        assert_eq!(last_field(STATUS, b"NSpid:", 3), Some(2));
        // In a deeper namespace than init's: not init's child in its namespace.
        assert_eq!(last_field(STATUS, b"NSpid:", 2), None);
        assert_eq!(pid_fields(STATUS, b"Missing:"), None);
        // A pidfd of a process that is gone, or not visible in this /proc.
        assert_eq!(
            pid_fields(b"Pid:\t-1\nNSpid:\t-1\n", b"NSpid:"),
            Some((None, 1))
        );
        assert_eq!(
            pid_fields(b"Pid:\t0\nNSpid:\t0\n", b"NSpid:"),
            Some((None, 1))
        );
    }

    #[test]
    fn this_process_is_found_through_its_own_pidfd() {
        let me = rustix::process::getpid();
        let pidfd = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty())
            .expect("pidfd_open");
        let (pid, depth) = init_in_proc(&pidfd).unwrap();
        assert!(depth >= 1);
        // This process's number in /proc is its own (the test runs in /proc's namespace)
        // whenever /proc/self names it.
        let own: u32 = std::fs::read_link("/proc/self")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pid, own);
    }
}
