//! `probe`: the test container program. Integration tests put it into container packages
//! as the app and run it, so they assert on what the container really sees.
//!
//! Its arguments are commands, run left to right (`probe print hello report exit 3`); see
//! [`command`] for the list. The whole command line is checked before anything runs: an
//! unknown command or a missing or malformed argument prints a usage line to stderr and
//! exits 2. A command that fails prints `error COMMAND ARG ERRNO` to stderr and exits 3.
//! After the last command the probe exits 0. Every output line is written as soon as it is
//! complete.
//!
//! Like the runtime it is `no_std`, without libc and without an allocator on device
//! targets: the runtime library provides `_start`, the panic handler (`panicked: ...`,
//! exit 101) and the memory functions; this binary only defines `nanostar_main`. Host
//! builds are an ordinary std program around the same code.
#![cfg_attr(nanostar_device, no_std)]
#![cfg_attr(nanostar_device, no_main)]
#![deny(unsafe_code)]

mod command;
mod files;
mod line;
mod report;

use rustix::io::Errno;

use command::{Command, Namespace};
use line::Line;

/// Called by the runtime library's `_start` (`nanostar::sys::entry`).
#[cfg(nanostar_device)]
#[allow(unsafe_code)] // `no_mangle` only: the library's `_start` calls this symbol.
#[unsafe(no_mangle)]
fn nanostar_main() -> u8 {
    run()
}

#[cfg(not(nanostar_device))]
fn main() {
    std::process::exit(i32::from(run()))
}

/// Exit code for a bad command line.
const EXIT_USAGE: u8 = 2;
/// Exit code for a command that failed.
const EXIT_FAILED: u8 = 3;

/// Checks the whole command line, then runs the commands; returns the exit code.
fn run() -> u8 {
    let mut args = nanostar::sys::args();
    while let Some(parsed) = command::next(&mut args) {
        if let Err(bad) = parsed {
            let problem: &[u8] = if bad.missing_argument {
                b"probe: missing argument for "
            } else {
                b"probe: unknown command or bad argument: "
            };
            Line::err().bytes(problem).bytes(bad.word).end();
            Line::err().bytes(command::USAGE).end();
            return EXIT_USAGE;
        }
    }
    let mut args = nanostar::sys::args();
    while let Some(Ok(step)) = command::next(&mut args) {
        match execute(&step.command) {
            Ok(Flow::Next) => {}
            Ok(Flow::Exit(code)) => return code,
            Err(errno) => {
                Line::err()
                    .bytes(b"error ")
                    .bytes(step.command.name())
                    .bytes(b" ")
                    .bytes(step.arg)
                    .fmt(format_args!(" {}", errno.raw_os_error()))
                    .end();
                return EXIT_FAILED;
            }
        }
    }
    0
}

/// What happens after a command.
enum Flow {
    /// Run the next command.
    Next,
    /// Exit with this code now.
    Exit(u8),
}

fn execute(command: &Command) -> Result<Flow, Errno> {
    match *command {
        Command::Print(text) => Line::out().bytes(text).end(),
        Command::Eprint(text) => Line::err().bytes(text).end(),
        Command::Exit(code) => return Ok(Flow::Exit(code)),
        Command::Crash => panic!("probe: crash requested"),
        Command::KillSelf(signal) => {
            let signal = rustix::process::Signal::from_named_raw(signal).ok_or(Errno::INVAL)?;
            rustix::process::kill_process(rustix::process::getpid(), signal)?;
            // Still here: the signal is blocked, ignored, or we are a PID namespace's init.
            sleep_forever()
        }
        Command::Sleep(ms) => sleep_ms(ms)?,
        Command::Pause => sleep_forever(),
        Command::BlockTerm => {
            const SIGTERM: u32 = 15;
            nanostar::sys::signals::block(nanostar::sys::signals::SignalSet::of(&[SIGTERM]))?
        }
        Command::Cat(path) => files::cat(path)?,
        Command::Read(path) => {
            let len = files::read(path)?;
            Line::out()
                .bytes(b"read ")
                .bytes(path)
                .fmt(format_args!(" {len}"))
                .end()
        }
        Command::Write(path, text) => files::write(path, text)?,
        Command::Touch(path) => files::touch(path)?,
        Command::Mkdir(path) => files::mkdir(path)?,
        Command::Ls(path) => files::ls(path)?,
        Command::Stat(path) => files::stat(path)?,
        Command::Flood(bytes) => flood(bytes)?,
        Command::Spawn => match nanostar::sys::process::fork()? {
            Some(pid) => Line::out().fmt(format_args!("spawned {pid}")).end(),
            None => sleep_forever(),
        },
        Command::Clone(ns) => clone_and_say(command, ns, false)?,
        Command::Clone3(ns) => clone_and_say(command, ns, true)?,
        Command::Report => report::report(),
    }
    Ok(Flow::Next)
}

/// Forks through `clone` (or `clone3`) into `ns`; the child exits at once and is reaped.
/// Prints `NAME NS ok` or `NAME NS errno N`: a refused call is this command's answer, not
/// its failure (only a failed wait is).
fn clone_and_say(command: &Command, ns: Namespace, clone3: bool) -> Result<(), Errno> {
    use nanostar::sys::process::{self, CloneFlags, Forked};
    let flags = match ns {
        Namespace::None => CloneFlags::default(),
        Namespace::User => CloneFlags::NEWUSER,
    };
    let forked = if clone3 {
        process::spawn(flags, None::<&rustix::fd::OwnedFd>).map(|forked| match forked {
            Forked::Parent(child) => Some(child.pid),
            Forked::Child => None,
        })
    } else {
        process::clone(flags)
    };
    let mut line = Line::out();
    line.bytes(command.name()).bytes(b" ").bytes(ns.word());
    match forked {
        Ok(None) => process::exit(0),
        Ok(Some(pid)) => {
            let pid = rustix::process::Pid::from_raw(pid as i32).ok_or(Errno::SRCH)?;
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())?;
            line.bytes(b" ok").end();
        }
        Err(errno) => line
            .fmt(format_args!(" errno {}", errno.raw_os_error()))
            .end(),
    }
    Ok(())
}

/// Sleeps `ms` milliseconds, resuming after interruptions.
fn sleep_ms(ms: u64) -> Result<(), Errno> {
    let mut request = rustix::time::Timespec {
        tv_sec: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits every architecture's `c_long`.
        tv_nsec: ((ms % 1000) * 1_000_000).try_into().unwrap_or(0),
    };
    loop {
        match rustix::thread::nanosleep(&request) {
            rustix::thread::NanosleepRelativeResult::Ok => return Ok(()),
            rustix::thread::NanosleepRelativeResult::Interrupted(left) => request = left,
            rustix::thread::NanosleepRelativeResult::Err(e) => return Err(e),
        }
    }
}

/// Waits for signals forever (until one ends the process).
fn sleep_forever() -> ! {
    loop {
        rustix::event::pause();
    }
}

/// Writes `bytes` bytes of a repeating text line to stdout in 4 KiB writes.
fn flood(bytes: u64) -> Result<(), Errno> {
    const LINE: &[u8] = b"flood 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    let mut buf = [0u8; 4096];
    for (b, pattern) in buf.iter_mut().zip(LINE.iter().cycle()) {
        *b = *pattern;
    }
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        nanostar::sys::write_all(nanostar::sys::StdFd::Out, &buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}
