//! A container's cgroup v2 directory (docs/design.md, decision 12): `ROOT/NAME`, made before
//! the container starts (which is cloned straight into it), with the manifest's limits
//! written first; `cgroup.kill` ends everything in it at once, and it is removed when the
//! container is gone.

use core::fmt::Write as _;

use heapless::String;
use nanostar_protocol::npk::manifest::Cgroups;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::limits::MAX_PATH_LEN;

/// The controllers the runtime hands down to its containers' cgroups.
const CONTROLLERS: &str = "+memory +pids +cpu";

fn open_dir(path: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn write_file(dir: &impl AsFd, file: &str, text: &str) -> Result<(), Errno> {
    let fd = rustix::fs::openat(dir, file, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::io::write(&fd, text.as_bytes()).map(drop)
}

/// Creates the runtime's cgroup `root` if needed and enables the controllers for its
/// children, in `root`'s parent too. Best effort: a controller the kernel lacks makes
/// only the limits that need it fail, at start of a container that asks for them.
pub fn prepare_root(root: &str) -> Result<(), Errno> {
    match rustix::fs::mkdir(root, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    if let Some((parent, _)) = root.rsplit_once('/')
        && let Ok(dir) = open_dir(if parent.is_empty() { "/" } else { parent })
    {
        let _ = write_file(&dir, "cgroup.subtree_control", CONTROLLERS);
    }
    let dir = open_dir(root)?;
    let _ = write_file(&dir, "cgroup.subtree_control", CONTROLLERS);
    Ok(())
}

fn path(root: &str, name: &str) -> Result<String<{ MAX_PATH_LEN * 2 }>, Errno> {
    let mut p = String::new();
    write!(p, "{root}/{name}").map_err(|_| Errno::NAMETOOLONG)?;
    Ok(p)
}

/// Why a container's cgroup cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupError {
    /// A limit's file does not exist: the kernel lacks its controller or it is not
    /// enabled for the runtime's cgroup.
    Unavailable,
    /// Any other failure.
    Io(Errno),
}

/// Makes `ROOT/NAME` (emptying a leftover of an earlier container of that name) with
/// `limits`, and returns the directory for `CLONE_INTO_CGROUP`.
pub fn create(root: &str, name: &str, limits: &Cgroups) -> Result<OwnedFd, CgroupError> {
    let p = path(root, name).map_err(CgroupError::Io)?;
    match rustix::fs::mkdir(p.as_str(), Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        Err(Errno::EXIST) => kill(root, name),
        Err(e) => return Err(CgroupError::Io(e)),
    }
    let dir = open_dir(&p).map_err(CgroupError::Io)?;
    let mut text: String<48> = String::new();
    let set = |file: &str, text: &str| match write_file(&dir, file, text) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT | Errno::ACCESS) => Err(CgroupError::Unavailable),
        Err(e) => Err(CgroupError::Io(e)),
    };
    let max = |v: Option<u64>, text: &mut String<48>| {
        text.clear();
        match v {
            Some(v) => write!(text, "{v}"),
            None => write!(text, "max"),
        }
    };
    // Every file is written, so a leftover directory loses the old container's limits.
    let wants_memory = limits.memory_max.is_some() || limits.memory_high.is_some();
    if wants_memory || has_file(&dir, "memory.max") {
        let _ = max(limits.memory_max, &mut text);
        set("memory.max", &text)?;
        let _ = max(limits.memory_high, &mut text);
        set("memory.high", &text)?;
    }
    if limits.pids_max.is_some() || has_file(&dir, "pids.max") {
        let _ = max(limits.pids_max.map(u64::from), &mut text);
        set("pids.max", &text)?;
    }
    let wants_cpu = limits.cpu_max.is_some() || limits.cpu_weight.is_some();
    if wants_cpu || has_file(&dir, "cpu.max") {
        text.clear();
        let _ = match limits.cpu_max {
            Some(c) => write!(text, "{} {}", c.quota_us, c.period_us),
            None => write!(text, "max 100000"),
        };
        set("cpu.max", &text)?;
        text.clear();
        let _ = write!(text, "{}", limits.cpu_weight.unwrap_or(100));
        set("cpu.weight", &text)?;
    }
    Ok(dir)
}

fn has_file(dir: &impl AsFd, file: &str) -> bool {
    rustix::fs::accessat(
        dir,
        file,
        rustix::fs::Access::EXISTS,
        rustix::fs::AtFlags::empty(),
    )
    .is_ok()
}

/// `cgroup.kill`: SIGKILL to every process in `ROOT/NAME` (kernels before 5.14 lack the
/// file; the PID namespace's end kills them there).
pub fn kill(root: &str, name: &str) {
    if let Ok(p) = path(root, name)
        && let Ok(dir) = open_dir(&p)
    {
        let _ = write_file(&dir, "cgroup.kill", "1");
    }
}

/// Removes `ROOT/NAME` (once empty; the kernel refuses while a process is in it).
pub fn remove(root: &str, name: &str) -> Result<(), Errno> {
    let p = path(root, name)?;
    match rustix::fs::rmdir(p.as_str()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `ROOT/NAME/memory.events`, opened for watching: the kernel marks it with `EPOLLPRI`
/// whenever a count in it changes. `None` without the memory controller.
pub fn open_events(dir: &impl AsFd) -> Option<OwnedFd> {
    rustix::fs::openat(
        dir,
        "memory.events",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// The `oom_kill` count in a `memory.events` file; 0 when unknown.
pub fn oom_kills(events: &impl AsFd) -> u64 {
    let mut buf = [0u8; 256];
    let Ok(n) = rustix::io::pread(events, &mut buf, 0) else {
        return 0;
    };
    core::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}
