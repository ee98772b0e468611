//! The container's side of the fork: init (PID 1 of the new PID namespace) and the app.
//!
//! Init runs runtime code, never execs, and has no allocator to worry about: everything
//! it needs was prepared by the runtime before the fork ([`Launch`]) and is read from its
//! own copy of the runtime's memory. Its steps: take its descriptors, die with the
//! runtime, join or keep the network namespace, set the host name, mount, `pivot_root`
//! and detach the old root, turn non-dumpable, fork the app, keep only `CAP_KILL`, then
//! reap and forward signals until the app ends, and report how it ended.
//!
//! The app's steps before `execve`: standard descriptors, rlimits (while still root, so
//! a hard limit may be raised), the capability bounding set, groups, gid, uid, the kept
//! capabilities, `no_new_privs`, the signal mask, seccomp last.
//!
//! Nothing here returns: every path ends in `exit`, so no runtime code runs twice.

use linux_raw_sys::general::SIGCHLD;
use nanostar_protocol::console::{ExitStatus, SetupStep};
use nanostar_protocol::npk::manifest::{Manifest, Network, RlimitResource};
use nanostar_protocol::version::Version;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::process::{Pid, Signal, WaitOptions};

use super::{Report, mounts};
use crate::limits::MAX_MOUNTS;
use crate::sys::process::{self, Exec, fixed_fd};
use crate::sys::signals::{self, SignalSet};

/// Where init keeps its descriptors after closing everything of the runtime's.
const STATUS_FD: i32 = 3;
const STDOUT_FD: i32 = 4;
const STDERR_FD: i32 = 5;
const NULL_FD: i32 = 6;
const NETNS_FD: i32 = 7;
const EXEC_REPORT_FD: i32 = 8;
/// Descriptors are first copied at or above this, out of the way of 3..=8.
const HIGH_FD: i32 = 16;

/// The command line (and thread name) of a container's init, as the container sees it.
pub const INIT_NAME: &core::ffi::CStr = c"init";
/// The app's exit code when its setup fails before `execve` (the shell's "cannot run").
const APP_SETUP_FAILED: i32 = 127;

/// Everything the container's side needs, prepared by the runtime before the fork.
pub struct Launch<'a> {
    /// The package's manifest.
    pub manifest: &'a Manifest<'a>,
    /// The package's seccomp program (empty: none).
    pub seccomp: &'a [u8],
    /// Where the package's image is mounted: the container's root.
    pub root: &'a str,
    /// The runtime's state directory (resource images are under `RUN_DIR/mnt`).
    pub run_dir: &'a str,
    /// The persistent data directory of the package (`DATA_DIR/NAME`), if it has one.
    pub persist: Option<&'a str>,
    /// The resolved version of each resource mount, by mount index.
    pub resources: &'a [Option<Version>; MAX_MOUNTS],
    /// argv and envp of the app.
    pub exec: &'a Exec,
    /// Status pipe (write end) to the runtime.
    pub status: BorrowedFd<'a>,
    /// The exec pipe (write end), straight from the app to the runtime: it ends without a
    /// report when the app's `execve` succeeded (close-on-exec), or carries the report of
    /// why the app's setup failed. The runtime learns "running" without waiting for init.
    pub exec_report: BorrowedFd<'a>,
    /// The app's stdout and stderr (pipes to the runtime, or /dev/null).
    pub stdout: BorrowedFd<'a>,
    /// See `stdout`.
    pub stderr: BorrowedFd<'a>,
    /// An open /dev/null, the app's stdin.
    pub null: BorrowedFd<'a>,
    /// The network namespace to join (`Network::Join`).
    pub netns: Option<BorrowedFd<'a>>,
}

/// Runs the container's init; never returns.
pub fn run(launch: &Launch) -> ! {
    if take_descriptors(launch).is_err() {
        // No status pipe to report on: the runtime sees init exit with 1 and no report.
        process::exit(1);
    }
    match setup(launch) {
        Ok(app) => supervise(app),
        Err((step, errno)) => {
            report(Report::Failed(step, errno.raw_os_error() as u16));
            process::exit(1)
        }
    }
}

fn report(r: Report) {
    let _ = write_all(fixed_fd(STATUS_FD), &r.encode());
}

fn write_all(fd: BorrowedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves the descriptors init needs to 3..=8 and closes every other one of the
/// runtime's (its socket, its clients, other containers' pipes).
fn take_descriptors(launch: &Launch) -> Result<(), Errno> {
    let wanted = [
        (Some(launch.status), STATUS_FD),
        (Some(launch.stdout), STDOUT_FD),
        (Some(launch.stderr), STDERR_FD),
        (Some(launch.null), NULL_FD),
        (launch.netns, NETNS_FD),
        (Some(launch.exec_report), EXEC_REPORT_FD),
    ];
    // First above everything, so moving one into place never closes another.
    let mut high = [None, None, None, None, None, None];
    for (slot, (fd, _)) in high.iter_mut().zip(wanted.iter()) {
        if let Some(fd) = fd {
            *slot = Some(rustix::io::fcntl_dupfd_cloexec(fd, HIGH_FD)?);
        }
    }
    for (fd, (_, target)) in high.iter().zip(wanted.iter()) {
        if let Some(fd) = fd {
            process::dup_to(fd, *target)?;
        }
    }
    // The `high` copies are closed by this too; they are never dropped (init never
    // returns), so nothing closes their numbers twice.
    core::mem::forget(high);
    process::close_from(EXEC_REPORT_FD as u32 + 1)?;
    // Nor does init keep the runtime's own standard streams (the board's console).
    let null = fixed_fd(NULL_FD);
    rustix::stdio::dup2_stdin(null)?;
    rustix::stdio::dup2_stdout(null)?;
    rustix::stdio::dup2_stderr(null)
}

type Failure = (SetupStep, Errno);

fn at(step: SetupStep) -> impl Fn(Errno) -> Failure {
    move |e| (step, e)
}

/// Everything up to the app's start; returns the app's pid.
fn setup(launch: &Launch) -> Result<Pid, Failure> {
    let m = launch.manifest;
    // Die with the runtime: a container never outlives the process that can stop it.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(at(SetupStep::Prepare))?;
    // A runtime that died before that took effect sent no signal. Then the status pipe has
    // no reader left (init closed its own copy of the read end in `take_descriptors`), so
    // no container outlives its runtime even when the runtime dies right after the fork.
    if runtime_gone() {
        process::exit(1);
    }
    signals::set_mask(SignalSet::ALL).map_err(at(SetupStep::Prepare))?;
    rustix::process::umask(Mode::empty());
    if let Network::Join(_) = m.network {
        rustix::thread::move_into_link_name_space(
            fixed_fd(NETNS_FD),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(at(SetupStep::Network))?;
    }
    rustix::system::sethostname(m.name.as_bytes()).map_err(at(SetupStep::Hostname))?;
    // Nothing mounted from here on may propagate back to the runtime's namespace.
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at(SetupStep::PivotRoot))?;
    let root = mounts::open_root(launch.root).map_err(at(SetupStep::PivotRoot))?;
    for (index, mount) in m.mounts.iter().enumerate() {
        mounts::mount_one(launch, &root, index, &mount.kind, mount.target)
            .map_err(at(SetupStep::Mount(index as u8)))?;
    }
    pivot(&root).map_err(at(SetupStep::PivotRoot))?;
    drop(root);
    // `/proc/1/exe` of a non-dumpable init cannot be opened by the container (an escape
    // found in Northstar's audit).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(at(SetupStep::Prepare))?;
    // What the container's `ps` shows as its PID 1: a fixed name, not the host's command
    // line (which names the runtime's configuration).
    crate::sys::set_process_name(INIT_NAME).map_err(at(SetupStep::Prepare))?;
    let app = start_app(launch)?;
    keep_only_kill().map_err(at(SetupStep::Prepare))?;
    Ok(app)
}

/// Once the app is forked (it took its own copy of init's privileges to drop), init needs
/// only `CAP_KILL`, to forward signals to an app of another uid: every other capability
/// goes, from every set and the bounding set, so an app that gets hold of init (an app
/// allowed `CAP_SYS_PTRACE` can attach to it) gains no privilege through it.
fn keep_only_kill() -> Result<(), Errno> {
    for cap in 0..64u32 {
        if cap != linux_raw_sys::general::CAP_KILL && !process::drop_bounding_capability(cap)? {
            break;
        }
    }
    let kill = rustix::thread::CapabilitySet::KILL;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: kill,
            permitted: kill,
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
}

/// Whether the runtime is gone: `poll` reports `POLLERR` on a pipe's write end once
/// every read end is closed, and the runtime holds the only one.
fn runtime_gone() -> bool {
    let status = fixed_fd(STATUS_FD);
    let mut fds = [PollFd::new(&status, PollFlags::OUT)];
    match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())) {
        Ok(_) => fds[0].revents().contains(PollFlags::ERR),
        Err(_) => true,
    }
}

/// Makes `root` the root and detaches the old one, so nothing of the runtime's file
/// system stays reachable.
fn pivot(root: &OwnedFd) -> Result<(), Errno> {
    rustix::process::fchdir(root)?;
    // `pivot_root(".", ".")` stacks the old root on the new one; unmounting "." then
    // removes it without needing a directory for it inside the image.
    rustix::process::pivot_root(c".", c".")?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH)?;
    rustix::process::chdir(c"/")
}

/// Forks the app. Whether its `execve` succeeded goes from the app to the runtime
/// directly, through the exec pipe: init only lets go of its copy.
fn start_app(launch: &Launch) -> Result<Pid, Failure> {
    let Some(pid) = process::fork().map_err(at(SetupStep::Fork))? else {
        let (step, errno) = match app(launch) {
            Err(failure) => failure,
            Ok(never) => match never {},
        };
        let _ = write_all(
            fixed_fd(EXEC_REPORT_FD),
            &Report::Failed(step, errno.raw_os_error() as u16).encode(),
        );
        process::exit(APP_SETUP_FAILED);
    };
    // The pipe must end with the app's `execve`, not with init.
    process::close_from(EXEC_REPORT_FD as u32).map_err(at(SetupStep::Fork))?;
    Pid::from_raw(pid as i32).ok_or((SetupStep::Fork, Errno::SRCH))
}

/// The app's side: returns only with the step that failed.
fn app(launch: &Launch) -> Result<core::convert::Infallible, Failure> {
    let m = launch.manifest;
    let stdio = at(SetupStep::Stdio);
    rustix::stdio::dup2_stdin(fixed_fd(NULL_FD)).map_err(&stdio)?;
    rustix::stdio::dup2_stdout(fixed_fd(STDOUT_FD)).map_err(&stdio)?;
    rustix::stdio::dup2_stderr(fixed_fd(STDERR_FD)).map_err(&stdio)?;
    // Init's own descriptors (3..=8, the exec pipe among them) are close-on-exec: the
    // app starts with 0, 1 and 2 only.
    for (index, limit) in m.rlimits.iter().enumerate() {
        let resource = rlimit_resource(limit.resource);
        let value = rustix::process::Rlimit {
            current: limit.soft,
            maximum: limit.hard,
        };
        rustix::process::setrlimit(resource, value).map_err(at(SetupStep::Rlimit(index as u8)))?;
    }
    let caps = m.capabilities.0;
    let capabilities = at(SetupStep::Capabilities);
    for cap in 0..64u32 {
        if caps & (1 << cap) == 0
            && !process::drop_bounding_capability(cap).map_err(&capabilities)?
        {
            // Capabilities are numbered without gaps: past the kernel's last one, done.
            break;
        }
    }
    process::set_keep_capabilities(caps != 0).map_err(&capabilities)?;
    let mut groups = [rustix::process::Gid::ROOT; crate::limits::MAX_SUPPL_GROUPS];
    for (slot, gid) in groups.iter_mut().zip(m.suppl_groups.iter()) {
        *slot = rustix::process::Gid::from_raw(*gid);
    }
    rustix::thread::set_thread_groups(&groups[..m.suppl_groups.len()])
        .map_err(at(SetupStep::Groups))?;
    let gid = rustix::process::Gid::from_raw(m.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(at(SetupStep::Gid))?;
    let uid = rustix::process::Uid::from_raw(m.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(at(SetupStep::Uid))?;
    if caps != 0 {
        let set = rustix::thread::CapabilitySet::from_bits_retain(caps);
        rustix::thread::set_capabilities(
            None,
            rustix::thread::CapabilitySets {
                effective: set,
                permitted: set,
                inheritable: set,
            },
        )
        .map_err(&capabilities)?;
        for cap in 0..64u32 {
            if caps & (1 << cap) != 0 {
                process::raise_ambient_capability(cap).map_err(&capabilities)?;
            }
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(at(SetupStep::NoNewPrivs))?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    signals::set_mask(SignalSet::NONE).map_err(at(SetupStep::Prepare))?;
    if !launch.seccomp.is_empty() {
        process::load_seccomp(launch.seccomp).map_err(at(SetupStep::Seccomp))?;
    }
    Err((SetupStep::Exec, launch.exec.exec()))
}

/// The `setrlimit` resource of a manifest's rlimit (the same numbering on every target).
pub fn rlimit_resource(resource: RlimitResource) -> rustix::process::Resource {
    use rustix::process::Resource as R;
    match resource {
        RlimitResource::Cpu => R::Cpu,
        RlimitResource::Fsize => R::Fsize,
        RlimitResource::Data => R::Data,
        RlimitResource::Stack => R::Stack,
        RlimitResource::Core => R::Core,
        RlimitResource::Rss => R::Rss,
        RlimitResource::Nproc => R::Nproc,
        RlimitResource::Nofile => R::Nofile,
        RlimitResource::Memlock => R::Memlock,
        RlimitResource::As => R::As,
        RlimitResource::Locks => R::Locks,
        RlimitResource::Sigpending => R::Sigpending,
        RlimitResource::Msgqueue => R::Msgqueue,
        RlimitResource::Nice => R::Nice,
        RlimitResource::Rtprio => R::Rtprio,
        RlimitResource::Rttime => R::Rttime,
    }
}

/// Init's life after the app started: reap every child (orphans are re-parented to
/// init), forward every signal to the app, and when the app ends report how and exit,
/// which makes the kernel kill whatever is left in the namespace.
fn supervise(app: Pid) -> ! {
    let signal_fd = match signals::signalfd(SignalSet::ALL) {
        Ok(fd) => fd,
        // Without a signalfd init can still wait; signals are then not forwarded.
        Err(_) => wait_only(app),
    };
    loop {
        let mut fds = [PollFd::new(&signal_fd, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, None);
        while let Ok(Some(signal)) = signals::read_signal(&signal_fd) {
            if signal == SIGCHLD {
                if let Some(status) = reap(app) {
                    report(Report::Exited(status));
                    process::exit(0);
                }
            } else if let Some(signal) = Signal::from_named_raw(signal as i32) {
                let _ = rustix::process::kill_process(app, signal);
            }
        }
    }
}

/// Reaps every exited child; the app's status once it is among them.
fn reap(app: Pid) -> Option<ExitStatus> {
    let mut app_status = None;
    while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
        if pid == app {
            app_status = Some(exit_status(status));
        }
    }
    app_status
}

fn wait_only(app: Pid) -> ! {
    loop {
        match rustix::process::waitpid(None, WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == app => {
                report(Report::Exited(exit_status(status)));
                process::exit(0);
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => process::exit(1),
        }
    }
}

/// A wait status as the protocol says it.
pub fn exit_status(status: rustix::process::WaitStatus) -> ExitStatus {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal as u8),
        (None, None) => ExitStatus::Code(-1),
    }
}
