//! Process creation and the calls a container's setup needs that rustix does not have:
//! `clone3` (new namespaces, a pidfd, straight into a cgroup), `close_range`, and
//! `seccomp`. Without threads and without an allocator the runtime may fork directly
//! (docs/design.md, decision 2): the child gets a copy of the whole process and nothing in it
//! can be half-updated by another thread.

use rustix::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

use super::syscall::{raw4, result};

/// `clone3`, `close_range`: the same number on x86_64, arm and aarch64 (the unified table
/// starts at 424).
const CLONE3: usize = 435;
const CLOSE_RANGE: usize = 436;
#[cfg(target_arch = "x86_64")]
const SECCOMP: usize = 317;
#[cfg(target_arch = "aarch64")]
const SECCOMP: usize = 277;
#[cfg(target_arch = "arm")]
const SECCOMP: usize = 383;

const SIGCHLD: u64 = 17;

/// Namespace and process flags of `clone3` (`CLONE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneFlags(pub u64);

impl CloneFlags {
    /// New mount namespace.
    pub const NEWNS: CloneFlags = CloneFlags(0x0002_0000);
    /// New UTS namespace (host name).
    pub const NEWUTS: CloneFlags = CloneFlags(0x0400_0000);
    /// New System V IPC namespace.
    pub const NEWIPC: CloneFlags = CloneFlags(0x0800_0000);
    /// New PID namespace: the child is its PID 1.
    pub const NEWPID: CloneFlags = CloneFlags(0x2000_0000);
    /// New network namespace.
    pub const NEWNET: CloneFlags = CloneFlags(0x4000_0000);
    /// New cgroup namespace: the child sees its cgroup as the root.
    pub const NEWCGROUP: CloneFlags = CloneFlags(0x0200_0000);

    /// Both sets.
    pub const fn union(self, other: CloneFlags) -> CloneFlags {
        CloneFlags(self.0 | other.0)
    }
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (version 2, with `cgroup`): every field is 64 bits on every
/// architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

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
    let mut args = CloneArgs {
        flags: flags.0 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: SIGCHLD,
        ..CloneArgs::default()
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
/// `None` in the child.
pub fn fork() -> Result<Option<u32>, Errno> {
    let mut args = CloneArgs {
        exit_signal: SIGCHLD,
        ..CloneArgs::default()
    };
    match clone3(&mut args)? {
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// `clone3(args)`: the child's pid in the parent, 0 in the child.
fn clone3(args: &mut CloneArgs) -> Result<usize, Errno> {
    // SAFETY: clone3 reads `size` bytes of `args` and writes only where its pointers say
    // (the pidfd into the caller's local). Without CLONE_VM the child runs on its own copy
    // of this stack, so returning from here in both processes is sound (fork semantics);
    // the process has one thread, so no lock or buffer can be caught half-updated by the
    // copy.
    let r = unsafe {
        raw4(
            CLONE3,
            args as *mut CloneArgs as usize,
            core::mem::size_of::<CloneArgs>(),
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
    let r = unsafe { raw4(CLOSE_RANGE, first as usize, u32::MAX as usize, 0, 0) };
    result(r).map(drop)
}

/// `struct sock_fprog`: the instruction count and a pointer to the instructions.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

const SECCOMP_SET_MODE_FILTER: usize = 1;

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
    let prog = SockFprog {
        len: (program.len() / 8) as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: the kernel reads `prog` and `prog.len` instructions from `program`, both
    // valid for the call; it copies the program before returning.
    let r = unsafe {
        raw4(
            SECCOMP,
            SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const SockFprog as usize,
            0,
        )
    };
    result(r).map(drop)
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const EXECVE: usize = 59;
    pub const PRCTL: usize = 157;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const EXECVE: usize = 221;
    pub const PRCTL: usize = 167;
}
#[cfg(target_arch = "arm")]
mod nr {
    pub const EXECVE: usize = 11;
    pub const PRCTL: usize = 172;
}

const PR_SET_KEEPCAPS: usize = 8;
const PR_CAPBSET_DROP: usize = 24;
const PR_CAP_AMBIENT: usize = 47;
const PR_CAP_AMBIENT_RAISE: usize = 2;

/// `prctl(option, arg2, arg3, arg4, arg5)` for the options that take only integers.
fn prctl_int(option: usize, arg2: usize, arg3: usize) -> Result<(), Errno> {
    // SAFETY: the options used here (KEEPCAPS, CAPBSET_DROP, CAP_AMBIENT) take integers
    // only; nothing is read or written through a pointer.
    let r = unsafe { super::syscall::raw5(nr::PRCTL, option, arg2, arg3, 0, 0) };
    result(r).map(drop)
}

/// `prctl(PR_CAPBSET_DROP, cap)`: the capability can never come back, not even through
/// a set-uid program. Needs `CAP_SETPCAP`, so it is done before the uid changes.
/// `Ok(false)` when this kernel does not know `cap` (so it is in no set either).
pub fn drop_bounding_capability(cap: u32) -> Result<bool, Errno> {
    match prctl_int(PR_CAPBSET_DROP, cap as usize, 0) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `prctl(PR_SET_KEEPCAPS, on)`: keep the permitted capabilities across the change from
/// uid 0 to the app's uid.
pub fn set_keep_capabilities(on: bool) -> Result<(), Errno> {
    prctl_int(PR_SET_KEEPCAPS, usize::from(on), 0)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`: a capability that survives
/// `execve` of an ordinary (not set-uid, no file capabilities) program by a non-root uid.
pub fn raise_ambient_capability(cap: u32) -> Result<(), Errno> {
    prctl_int(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as usize)
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
    #[cfg(target_arch = "x86_64")]
    const EXIT_GROUP: usize = 231;
    #[cfg(target_arch = "aarch64")]
    const EXIT_GROUP: usize = 94;
    #[cfg(target_arch = "arm")]
    const EXIT_GROUP: usize = 248;
    // SAFETY: exit_group takes one integer and does not return.
    unsafe { raw4(EXIT_GROUP, code as usize, 0, 0, 0) };
    // exit_group cannot fail; this only satisfies the type.
    #[allow(clippy::empty_loop)]
    loop {}
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
    #[cfg(target_arch = "x86_64")]
    const DUP3: usize = 292;
    #[cfg(target_arch = "aarch64")]
    const DUP3: usize = 24;
    #[cfg(target_arch = "arm")]
    const DUP3: usize = 358;
    const O_CLOEXEC: usize = 0o2000000;
    // SAFETY: dup3 takes three integers. The caller gives up whatever descriptor was at
    // `target`: it must not be owned by an `OwnedFd` that is used or dropped afterwards.
    let r = unsafe {
        raw4(
            DUP3,
            fd.as_fd().as_raw_fd() as usize,
            target as usize,
            O_CLOEXEC,
            0,
        )
    };
    result(r).map(drop)
}
