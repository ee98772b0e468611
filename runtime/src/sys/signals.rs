//! Signals as file descriptors: block them, then read them from a `signalfd` in the event
//! loop (docs/design.md, decision 2). rustix has neither call, so both are raw syscalls here.

use rustix::fd::{AsFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

/// The kernel's signal set for these calls: one bit per signal, 64 signals on all three
/// architectures (`_NSIG` = 64, so `sigsetsize` = 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalSet(u64);

impl SignalSet {
    /// The set of `signals` (numbers 1..=64).
    pub fn of(signals: &[u32]) -> SignalSet {
        SignalSet(
            signals
                .iter()
                .filter(|s| (1..=64).contains(*s))
                .fold(0, |acc, s| acc | 1 << (s - 1)),
        )
    }
}

impl SignalSet {
    /// Every signal.
    pub const ALL: SignalSet = SignalSet(u64::MAX);
    /// No signal.
    pub const NONE: SignalSet = SignalSet(0);
}

// signalfd.h: SFD_NONBLOCK and SFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC.
const SFD_NONBLOCK: usize = linux_raw_sys::general::O_NONBLOCK as usize;
const SFD_CLOEXEC: usize = linux_raw_sys::general::O_CLOEXEC as usize;
/// `sizeof(struct signalfd_siginfo)` (linux-raw-sys does not have the struct).
const SIGINFO_LEN: usize = 128;
/// Bytes of the kernel's signal set: `_NSIG` bits, which [`SignalSet`] holds.
const SIGSET_LEN: usize = core::mem::size_of::<u64>();
const _: () = assert!(linux_raw_sys::general::_NSIG as usize == 8 * SIGSET_LEN);

/// `rt_sigprocmask(SIG_BLOCK, set)`: the signals in `set` stay pending instead of being
/// delivered, so a `signalfd` can read them.
pub fn block(set: SignalSet) -> Result<(), Errno> {
    sigprocmask(linux_raw_sys::general::SIG_BLOCK, set)
}

/// `rt_sigprocmask(SIG_SETMASK, set)`: exactly the signals in `set` are blocked. A child
/// about to `execve` unblocks everything, since the mask survives the exec.
pub fn set_mask(set: SignalSet) -> Result<(), Errno> {
    sigprocmask(linux_raw_sys::general::SIG_SETMASK, set)
}

/// `rt_sigprocmask(how, set, NULL)`: changes the blocked signals, without reading the old
/// mask.
fn sigprocmask(how: u32, set: SignalSet) -> Result<(), Errno> {
    // SAFETY: the kernel reads `SIGSET_LEN` bytes from a valid pointer to `set.0`; the
    // old-set pointer is null, so nothing is written.
    let r = unsafe {
        super::syscall::raw4(
            super::nr::RT_SIGPROCMASK,
            how as usize,
            &set.0 as *const u64 as usize,
            0,
            SIGSET_LEN,
        )
    };
    super::syscall::result(r).map(drop)
}

/// `signalfd4(-1, set, SFD_NONBLOCK | SFD_CLOEXEC)`: a descriptor that becomes readable
/// when a signal of `set` is pending.
pub fn signalfd(set: SignalSet) -> Result<OwnedFd, Errno> {
    let minus_one = usize::MAX; // -1: make a new descriptor.
    // SAFETY: the kernel reads `SIGSET_LEN` bytes from a valid pointer to `set.0`.
    let r = unsafe {
        super::syscall::raw4(
            super::nr::SIGNALFD4,
            minus_one,
            &set.0 as *const u64 as usize,
            SIGSET_LEN,
            SFD_NONBLOCK | SFD_CLOEXEC,
        )
    };
    let fd = super::syscall::result(r)?;
    // SAFETY: on success signalfd4 returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `read(fd, struct signalfd_siginfo)`: the next pending signal's number from a
/// `signalfd`; `None` when none is pending.
pub fn read_signal(fd: impl AsFd) -> Result<Option<u32>, Errno> {
    let mut info = [0u8; SIGINFO_LEN];
    match rustix::io::read(fd, &mut info) {
        // ssi_signo is the first field: a u32 in native byte order.
        Ok(SIGINFO_LEN) => Ok(Some(u32::from_ne_bytes([
            info[0], info[1], info[2], info[3],
        ]))),
        Ok(_) => Err(Errno::IO),
        Err(Errno::AGAIN) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tgkill(2)`: a signal for this thread only, so the test harness's other threads
    /// never see it.
    fn signal_this_thread(signal: u32) {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as usize;
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as usize;
        // SAFETY: tgkill takes three integers.
        let r = unsafe {
            super::super::syscall::raw4(super::super::nr::TGKILL, pid, tid, signal as usize, 0)
        };
        assert_eq!(super::super::syscall::result(r), Ok(0));
    }

    #[test]
    fn a_blocked_signal_is_read_from_the_signalfd() {
        const SIGUSR2: u32 = linux_raw_sys::general::SIGUSR2;
        let set = SignalSet::of(&[SIGUSR2]);
        block(set).unwrap();
        let fd = signalfd(set).unwrap();
        assert_eq!(read_signal(&fd), Ok(None), "nothing pending yet");
        signal_this_thread(SIGUSR2);
        assert_eq!(read_signal(&fd), Ok(Some(SIGUSR2)));
        assert_eq!(read_signal(&fd), Ok(None));
    }

    #[test]
    fn sets_and_errors() {
        assert_eq!(
            SignalSet::of(&[1, 15, 64, 0, 65]),
            SignalSet(1 | 1 << 14 | 1 << 63)
        );
        assert_eq!(super::super::syscall::result(-2), Err(Errno::NOENT));
        assert_eq!(super::super::syscall::result(5), Ok(5));
    }
}
