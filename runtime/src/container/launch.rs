//! The runtime's side of a start (docs/design.md, decision 10): from a [`Prepared`]
//! container (its verified manifest, mounted root and resolved resources) to a running
//! init: argv and envp, the report and output pipes, the persistent data directory, and
//! `clone3` into new namespaces. [`super::init`] is the other side of the fork.
//!
//! Nothing here knows the poll set or the clients: [`Launcher::spawn`] returns the
//! descriptors, and the server watches them.

use core::fmt::Write as _;

use heapless::String;
use nanostar_protocol::console::SetupStep;
use nanostar_protocol::npk::manifest::{
    EnvVar, Manifest, MountKind, Network, Output, RESERVED_ENV_PREFIX,
};
use nanostar_protocol::version::Version;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::init::{self, Launch};
use crate::layout;
use crate::limits::{MAX_MOUNTS, SCRATCH_LEN};
use crate::sys::process::{self, CloneFlags, Exec, Forked};

/// The app's environment where the manifest and the start request leave these unset:
/// the usual search path (as Docker and Podman set it) and `/` as the home directory.
pub const DEFAULT_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/"),
];

/// Where a start failed on the runtime's side, and the errno.
pub type LaunchError = (SetupStep, Errno);

/// Everything a start decided before the fork.
pub struct Prepared<'a> {
    /// The package's name.
    pub name: &'a str,
    /// The package's version.
    pub version: Version,
    /// Its verified manifest.
    pub manifest: &'a Manifest<'a>,
    /// The manifest's `init`.
    pub init: &'a str,
    /// Its verified seccomp program (empty: none).
    pub seccomp: &'a [u8],
    /// Arguments replacing the manifest's.
    pub args: Option<&'a [&'a str]>,
    /// Variables added to (or replacing in) the manifest's environment.
    pub env: &'a [EnvVar<'a>],
    /// The mounted version of each resource mount, by mount index.
    pub resources: &'a [Option<Version>; MAX_MOUNTS],
    /// `DATA_DIR/NAME`, made by [`make_persist_dir`], when it has a persist mount.
    pub persist: Option<&'a str>,
    /// The network namespace to join.
    pub netns: Option<&'a OwnedFd>,
    /// Its cgroup directory, which `clone3` puts init into.
    pub cgroup: Option<&'a OwnedFd>,
}

/// A forked container init and the runtime's ends of its pipes.
pub struct Spawned {
    /// Init's pid.
    pub pid: u32,
    /// Init's pidfd.
    pub pidfd: OwnedFd,
    /// Init's report pipe.
    pub status: OwnedFd,
    /// The app's exec pipe: ends when its `execve` succeeded.
    pub exec_report: OwnedFd,
    /// stdout and stderr pipes, when they go to the log.
    pub outputs: [Option<OwnedFd>; 2],
}

/// The parent side's own resources: the exec strings and `/dev/null`.
pub struct Launcher<'c> {
    exec: &'c mut Exec,
    /// `/dev/null`, the apps' stdin (opened at the first start).
    null: Option<OwnedFd>,
}

/// A copy of a verified manifest and seccomp program, for the length of one start.
pub struct Kept<'b> {
    /// The manifest's bytes.
    pub manifest: &'b [u8],
    /// The seccomp program's bytes.
    pub seccomp: &'b [u8],
}

/// Copies a start's manifest and seccomp program into `buffer` (both come from one
/// verification, so they fit).
pub fn keep<'b>(buffer: &'b mut [u8; SCRATCH_LEN], manifest: &[u8], seccomp: &[u8]) -> Kept<'b> {
    let (m, rest) = buffer.split_at_mut(manifest.len());
    m.copy_from_slice(manifest);
    rest[..seccomp.len()].copy_from_slice(seccomp);
    let buffer: &'b [u8] = buffer;
    let (m, rest) = buffer.split_at(manifest.len());
    Kept {
        manifest: m,
        seccomp: &rest[..seccomp.len()],
    }
}

impl<'c> Launcher<'c> {
    /// A launcher writing argv and envp into `exec`.
    pub fn new(exec: &'c mut Exec) -> Launcher<'c> {
        Launcher { exec, null: None }
    }

    /// Pipes, argv and envp, and the fork of the container's init.
    #[inline(never)]
    pub fn spawn(&mut self, run_dir: &str, p: &Prepared) -> Result<Spawned, LaunchError> {
        let prepare = |e| (SetupStep::Prepare, e);
        build_exec(self.exec, p).map_err(prepare)?;
        if self.null.is_none() {
            let null =
                rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
            self.null = Some(null.map_err(prepare)?);
        }
        let null = self
            .null
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or(prepare(Errno::BADF))?;
        let (status_read, status_write) = pipe().map_err(prepare)?;
        let (exec_read, exec_write) = pipe().map_err(prepare)?;
        let mut outputs: [Option<OwnedFd>; 2] = [None, None];
        let mut writers: [Option<OwnedFd>; 2] = [None, None];
        let io = p.manifest.io;
        for (i, output) in [io.stdout, io.stderr].iter().enumerate() {
            // One pipe when both streams go the same way, so the log keeps the order in
            // which the app wrote them.
            let shared = i == 1 && io.stdout == io.stderr;
            if *output != Output::Discard && !shared {
                let (read, write) = pipe().map_err(prepare)?;
                outputs[i] = Some(read);
                writers[i] = Some(write);
            }
        }
        let shares_stdout = io.stderr != Output::Discard && io.stdout == io.stderr;
        let stderr_writer = if shares_stdout { 0 } else { 1 };
        let root: layout::Path =
            layout::mount_point(run_dir, p.name, &p.version).map_err(prepare)?;
        let mut flags = CloneFlags::NEWPID
            .union(CloneFlags::NEWNS)
            .union(CloneFlags::NEWIPC)
            .union(CloneFlags::NEWUTS);
        if p.manifest.network == Network::New {
            flags = flags.union(CloneFlags::NEWNET);
        }
        if p.cgroup.is_some() {
            flags = flags.union(CloneFlags::NEWCGROUP);
        }
        let launch = Launch {
            manifest: p.manifest,
            seccomp: p.seccomp,
            root: root.as_str(),
            run_dir,
            persist: p.persist,
            resources: p.resources,
            exec: self.exec,
            status: status_write.as_fd(),
            exec_report: exec_write.as_fd(),
            stdout: writers[0].as_ref().map_or(null, |w| w.as_fd()),
            stderr: writers[stderr_writer].as_ref().map_or(null, |w| w.as_fd()),
            null,
            netns: p.netns.map(|f| f.as_fd()),
        };
        let child = match process::spawn(flags, p.cgroup) {
            Ok(Forked::Child) => init::run(&launch),
            Ok(Forked::Parent(child)) => child,
            Err(e) => return Err((SetupStep::Clone, e)),
        };
        Ok(Spawned {
            pid: child.pid,
            pidfd: child.pidfd,
            status: status_read,
            exec_report: exec_read,
            outputs,
        })
    }
}

/// A pipe whose runtime end (read) never blocks; the container writes blocking.
fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
    let (read, write) = rustix::pipe::pipe_with(flags)?;
    rustix::fs::fcntl_setfl(&write, OFlags::empty())?;
    Ok((read, write))
}

/// Fills `exec` with the app's argv and envp.
fn build_exec(exec: &mut Exec, p: &Prepared) -> Result<(), Errno> {
    exec.clear();
    exec.arg(&[p.init.as_bytes()])?;
    match p.args {
        Some(args) => args.iter().try_for_each(|a| exec.arg(&[a.as_bytes()]))?,
        None => p
            .manifest
            .args
            .iter()
            .try_for_each(|a| exec.arg(&[a.as_bytes()]))?,
    }
    for var in p.manifest.env.iter() {
        if !p.env.iter().any(|o| o.key == var.key) {
            exec.env(&[var.key.as_bytes(), b"=", var.value.as_bytes()])?;
        }
    }
    for var in p.env {
        exec.env(&[var.key.as_bytes(), b"=", var.value.as_bytes()])?;
    }
    // What a program built for a normal distribution expects, unless the manifest or
    // the start request says otherwise (`docs/manifest.md`).
    for (key, value) in DEFAULT_ENV {
        let set = |k: &str| k == key;
        if !p.manifest.env.iter().any(|v| set(v.key)) && !p.env.iter().any(|v| set(v.key)) {
            exec.env(&[key.as_bytes(), b"=", value.as_bytes()])?;
        }
    }
    let mut version: String<40> = String::new();
    let _ = write!(version, "{}", p.version);
    let prefix = RESERVED_ENV_PREFIX.as_bytes();
    exec.env(&[prefix, b"NAME=", p.name.as_bytes()])?;
    exec.env(&[prefix, b"VERSION=", version.as_bytes()])?;
    Ok(())
}

/// Whether the manifest mounts the package's persistent data.
pub fn has_persist(manifest: &Manifest) -> bool {
    manifest
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Persist))
}

/// `DATA_DIR/NAME`, owned by the app's uid and gid, mode 0700; kept across updates.
pub fn make_persist_dir(path: &str, uid: u32, gid: u32) -> Result<(), Errno> {
    if let Some((parent, _)) = path.rsplit_once('/') {
        crate::fs::create_dirs(parent)?;
    }
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )?;
    rustix::fs::chmod(path, Mode::from_raw_mode(0o700))
}
