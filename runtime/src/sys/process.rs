//! Process creation and the calls a container's setup needs that rustix does not have (or
//! not in a form that fits): `clone3` (new namespaces, a pidfd, straight into a cgroup),
//! `close_range`, `seccomp`, `execve`, `exit_group` and `dup3` onto an unowned number; the
//! capability `prctl`s go through rustix. Without threads and without an allocator the
//! runtime may fork directly (docs/design.md, decision 2): the child gets a copy of the
//! whole process and nothing in it can be half-updated by another thread.

use linux_raw_sys::general as kernel;
use linux_raw_sys::general::clone_args;
use linux_raw_sys::ptrace::{sock_filter, sock_fprog};
use rustix::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

use super::nr;
use super::syscall::{raw4, result};

const SIGCHLD: u64 = kernel::SIGCHLD as u64;

/// Namespace and process flags of `clone3` (`CLONE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneFlags(pub u64);

impl CloneFlags {
    /// New mount namespace.
    pub const NEWNS: CloneFlags = CloneFlags(kernel::CLONE_NEWNS as u64);
    /// New UTS namespace (host name).
    pub const NEWUTS: CloneFlags = CloneFlags(kernel::CLONE_NEWUTS as u64);
    /// New System V IPC namespace.
    pub const NEWIPC: CloneFlags = CloneFlags(kernel::CLONE_NEWIPC as u64);
    /// New PID namespace: the child is its PID 1.
    pub const NEWPID: CloneFlags = CloneFlags(kernel::CLONE_NEWPID as u64);
    /// New network namespace.
    pub const NEWNET: CloneFlags = CloneFlags(kernel::CLONE_NEWNET as u64);
    /// New cgroup namespace: the child sees its cgroup as the root.
    pub const NEWCGROUP: CloneFlags = CloneFlags(kernel::CLONE_NEWCGROUP as u64);
    /// New user namespace (the runtime never asks for one; the probe checks that an app
    /// cannot either).
    pub const NEWUSER: CloneFlags = CloneFlags(kernel::CLONE_NEWUSER as u64);

    /// Both sets.
    pub const fn union(self, other: CloneFlags) -> CloneFlags {
        CloneFlags(self.0 | other.0)
    }
}

const CLONE_PIDFD: u64 = kernel::CLONE_PIDFD as u64;
const CLONE_INTO_CGROUP: u64 = kernel::CLONE_INTO_CGROUP;

/// `struct clone_args` (version 2, with `cgroup`) with every field 0: no flags, no
/// pointers, no exit signal.
const NO_CLONE_ARGS: clone_args = clone_args {
    flags: 0,
    pidfd: 0,
    child_tid: 0,
    parent_tid: 0,
    exit_signal: 0,
    stack: 0,
    stack_size: 0,
    tls: 0,
    set_tid: 0,
    set_tid_size: 0,
    cgroup: 0,
};

/// What the parent gets back from [`spawn`].
#[derive(Debug)]
pub struct Child {
    /// The child's pid, in the parent's PID namespace.
    pub pid: u32,
    /// A pidfd of the child: signals through it never reach a recycled pid.
    pub pidfd: OwnedFd,
}

/// Which side of a [`spawn`] this process is.
#[derive(Debug)]
pub enum Forked {
    /// The parent, with the child's pid and pidfd.
    Parent(Child),
    /// The child.
    Child,
}

/// `clone3(CLONE_PIDFD | flags [| CLONE_INTO_CGROUP], exit_signal = SIGCHLD)`: a copy of
/// this process (like `fork`) in new namespaces, optionally started inside the cgroup
/// whose directory is `cgroup`, so that no instant of it runs outside its limits.
pub fn spawn(flags: CloneFlags, cgroup: Option<&impl AsFd>) -> Result<Forked, Errno> {
    let mut pidfd: i32 = -1;
    let mut args = clone_args {
        flags: flags.0 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: SIGCHLD,
        ..NO_CLONE_ARGS
    };
    if let Some(dir) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_fd().as_raw_fd() as u64;
    }
    let r = clone3(&mut args)?;
    match r {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Child {
            pid: pid as u32,
            // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor that nothing
            // else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })),
    }
}

/// A plain `fork` (`clone3` with only `exit_signal = SIGCHLD`): `Some(pid)` in the parent,
/// `None` in the child. Where `clone3` fails with `ENOSYS` (the default seccomp profile
/// refuses it, as it cannot read its flags) it is `clone(SIGCHLD)`, as in glibc.
pub fn fork() -> Result<Option<u32>, Errno> {
    let mut args = clone_args {
        exit_signal: SIGCHLD,
        ..NO_CLONE_ARGS
    };
    match clone3(&mut args) {
        Ok(0) => Ok(None),
        Ok(pid) => Ok(Some(pid as u32)),
        Err(Errno::NOSYS) => clone(CloneFlags::default()),
        Err(e) => Err(e),
    }
}

/// `clone(flags | SIGCHLD, 0, 0, 0, 0)`: a fork (no new stack, so the child runs on its
/// copy of this one) in new namespaces through the older call, whose flags a seccomp
/// filter can read. `Some(pid)` in the parent, `None` in the child.
pub fn clone(flags: CloneFlags) -> Result<Option<u32>, Errno> {
    // SAFETY: the flags are argument 0 on every supported ABI; without CLONE_VM, CLONE_SETTLS
    // or any *_TID flag the kernel reads and writes no pointer and the zero arguments mean
    // "none", and the child runs on its own copy of this stack, so returning from here in
    // both processes is sound, as in `clone3`.
    let r = unsafe { raw4(nr::CLONE, (flags.0 | SIGCHLD) as usize, 0, 0, 0) };
    match result(r)? {
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// `clone3(args)`: the child's pid in the parent, 0 in the child.
fn clone3(args: &mut clone_args) -> Result<usize, Errno> {
    // SAFETY: clone3 reads `size` bytes of `args` and writes only where its pointers say
    // (the pidfd into the caller's local). Without CLONE_VM the child runs on its own copy
    // of this stack, so returning from here in both processes is sound (fork semantics);
    // the process has one thread, so no lock or buffer can be caught half-updated by the
    // copy.
    let r = unsafe {
        raw4(
            nr::CLONE3,
            args as *mut clone_args as usize,
            core::mem::size_of::<clone_args>(),
            0,
            0,
        )
    };
    result(r)
}

/// `close_range(first, u32::MAX, 0)`: closes every descriptor from `first` up, so nothing
/// of the runtime (its socket, its clients, other containers' pipes) stays open in a
/// container.
pub fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes three integers and touches only this process's fd table;
    // the caller owns no `OwnedFd` at or above `first` that it uses afterwards.
    let r = unsafe { raw4(nr::CLOSE_RANGE, first as usize, u32::MAX as usize, 0, 0) };
    result(r).map(drop)
}

const SECCOMP_SET_MODE_FILTER: usize = linux_raw_sys::ptrace::SECCOMP_SET_MODE_FILTER as usize;
// A package's filter is 8 bytes per instruction: one `struct sock_filter` each.
const _: () = assert!(core::mem::size_of::<sock_filter>() == 8);

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`: loads a classic BPF program, 8 bytes per
/// instruction, little endian as the package stores it (native on all three targets). Needs
/// `no_new_privs` (or `CAP_SYS_ADMIN`). Lasts across `execve` and cannot be removed.
pub fn load_seccomp(program: &[u8]) -> Result<(), Errno> {
    if program.is_empty()
        || !program.len().is_multiple_of(8)
        || program.len() / 8 > u16::MAX as usize
    {
        return Err(Errno::INVAL);
    }
    let prog = sock_fprog {
        len: (program.len() / 8) as u16,
        // Only the kernel reads through it (it copies the bytes, so their alignment does
        // not matter); the pointer is `*mut` in the C struct but nothing is written.
        filter: program.as_ptr().cast::<sock_filter>().cast_mut(),
    };
    // SAFETY: the kernel reads `prog` and `prog.len` instructions from `program`, both
    // valid for the call; it copies the program before returning.
    let r = unsafe {
        raw4(
            nr::SECCOMP,
            SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const sock_fprog as usize,
            0,
        )
    };
    result(r).map(drop)
}

/// `prctl(PR_CAPBSET_DROP, cap)`: the capability can never come back, not even through
/// a set-uid program. Needs `CAP_SETPCAP`, so it is done before the uid changes.
/// `Ok(false)` when this kernel does not know `cap` (so it is in no set either).
pub fn drop_bounding_capability(cap: u32) -> Result<bool, Errno> {
    // The kernel answers EINVAL for a number past its last capability; rustix's set has
    // 64 bits, and no kernel knows a capability that far.
    let Some(set) = capability(cap) else {
        return Ok(false);
    };
    match rustix::thread::remove_capability_from_bounding_set(set) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `prctl(PR_SET_KEEPCAPS, on)`: keep the permitted capabilities across the change from
/// uid 0 to the app's uid.
pub fn set_keep_capabilities(on: bool) -> Result<(), Errno> {
    rustix::thread::set_keep_capabilities(on)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`: a capability that survives
/// `execve` of an ordinary (not set-uid, no file capabilities) program by a non-root uid.
pub fn raise_ambient_capability(cap: u32) -> Result<(), Errno> {
    let set = capability(cap).ok_or(Errno::INVAL)?;
    rustix::thread::configure_capability_in_ambient_set(set, true)
}

/// Capability number `cap` as rustix's one-bit set; `None` past its 64 bits.
fn capability(cap: u32) -> Option<rustix::thread::CapabilitySet> {
    let bit = 1u64.checked_shl(cap)?;
    Some(rustix::thread::CapabilitySet::from_bits_retain(bit))
}

/// Most strings in argv (init and its arguments).
pub const MAX_EXEC_ARGS: usize = crate::limits::MAX_ARGS + 1;
/// Most environment entries: the manifest's, a start override's, the runtime's own
/// (`NANOSTAR_NAME`, `NANOSTAR_VERSION`) and the defaults (`PATH`, `HOME`).
pub const MAX_EXEC_ENV: usize = 2 * crate::limits::MAX_ENV + 4;

/// The strings of one `execve`, gathered without an allocator into a fixed buffer; the
/// pointer arrays are made on the stack by [`Exec::exec`] itself. The runtime fills it
/// before forking, so the container's side reads its own copy.
pub struct Exec {
    strings: [u8; crate::limits::EXEC_STRINGS_LEN],
    used: usize,
    args: heapless::Vec<u32, MAX_EXEC_ARGS>,
    env: heapless::Vec<u32, MAX_EXEC_ENV>,
}

impl Exec {
    /// Empty (all zeros, so it lives in `.bss`).
    pub const fn new() -> Exec {
        Exec {
            strings: [0; crate::limits::EXEC_STRINGS_LEN],
            used: 0,
            args: heapless::Vec::new(),
            env: heapless::Vec::new(),
        }
    }

    /// Forgets every string.
    pub fn clear(&mut self) {
        self.used = 0;
        self.args.clear();
        self.env.clear();
    }

    /// Stores the concatenation of `parts` and a NUL; its offset. `E2BIG` when full,
    /// `EINVAL` for a NUL inside.
    fn store(&mut self, parts: &[&[u8]]) -> Result<u32, Errno> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.used + len + 1 > self.strings.len() {
            return Err(Errno::TOOBIG);
        }
        let start = self.used;
        for part in parts {
            if part.contains(&0) {
                return Err(Errno::INVAL);
            }
            self.strings[self.used..self.used + part.len()].copy_from_slice(part);
            self.used += part.len();
        }
        self.strings[self.used] = 0;
        self.used += 1;
        Ok(start as u32)
    }

    /// Appends an argument (the first one is also the path `execve` runs).
    pub fn arg(&mut self, parts: &[&[u8]]) -> Result<(), Errno> {
        let at = self.store(parts)?;
        self.args.push(at).map_err(|_| Errno::TOOBIG)
    }

    /// Appends an environment entry, given as its pieces (`key`, `=`, `value`).
    pub fn env(&mut self, parts: &[&[u8]]) -> Result<(), Errno> {
        let at = self.store(parts)?;
        self.env.push(at).map_err(|_| Errno::TOOBIG)
    }

    /// `execve(argv[0], argv, envp)`: returns only if it fails.
    pub fn exec(&self) -> Errno {
        let Some(&path) = self.args.first() else {
            return Errno::INVAL;
        };
        let base = self.strings.as_ptr();
        let mut argv = [core::ptr::null::<u8>(); MAX_EXEC_ARGS + 1];
        let mut envp = [core::ptr::null::<u8>(); MAX_EXEC_ENV + 1];
        for (slot, &at) in argv.iter_mut().zip(self.args.iter()) {
            *slot = base.wrapping_add(at as usize);
        }
        for (slot, &at) in envp.iter_mut().zip(self.env.iter()) {
            *slot = base.wrapping_add(at as usize);
        }
        // SAFETY: every pointer points at a NUL-terminated string inside `strings`
        // (`store` wrote each one with its NUL), both arrays end with a null pointer (one
        // more slot than entries), and all of it outlives the call.
        let r = unsafe {
            raw4(
                nr::EXECVE,
                base.wrapping_add(path as usize) as usize,
                argv.as_ptr() as usize,
                envp.as_ptr() as usize,
                0,
            )
        };
        match result(r) {
            Err(e) => e,
            Ok(_) => Errno::INVAL,
        }
    }
}

impl Default for Exec {
    fn default() -> Self {
        Exec::new()
    }
}

/// `exit_group(code)`: ends this process at once, without unwinding or running anything
/// (a forked container process must never return into the runtime's code).
pub fn exit(code: i32) -> ! {
    super::syscall::exit_group(code)
}

/// A descriptor this process set up at a fixed number (a container's init keeps its
/// status pipe at 3) and keeps open until it exits or execs.
pub fn fixed_fd(raw: i32) -> rustix::fd::BorrowedFd<'static> {
    // SAFETY: callers name only descriptors they placed there and never close; a wrong
    // number is at worst EBADF from the next call, never another object's memory.
    unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) }
}

/// `dup3(fd, target, O_CLOEXEC)`: `fd` also at the number `target` (whatever was open
/// there is closed first), closed again on `execve`.
pub fn dup_to(fd: &impl AsFd, target: i32) -> Result<(), Errno> {
    const O_CLOEXEC: usize = kernel::O_CLOEXEC as usize;
    // SAFETY: dup3 takes three integers. The caller gives up whatever descriptor was at
    // `target`: it must not be owned by an `OwnedFd` that is used or dropped afterwards.
    let r = unsafe {
        raw4(
            nr::DUP3,
            fd.as_fd().as_raw_fd() as usize,
            target as usize,
            O_CLOEXEC,
            0,
        )
    };
    result(r).map(drop)
}
