//! The runtime's side of containers: start, stop, kill, logs, and what happens when a
//! container's init reports or exits. Everything is driven by the event loop: a start
//! forks and returns at once, its reply goes out when init reports that the app runs;
//! a stop sends SIGTERM and replies when the container is gone, with SIGKILL when the
//! timeout passes first.

use core::fmt::Write as _;

use heapless::{String, Vec};
use nanostar_protocol::console::{
    ContainerInfo, ContainerState, Error, ExitStatus, Message, Notification, PackageError,
    PackageId, Reply, SetupStep, Table,
};
use nanostar_protocol::limits::{
    MAX_CHUNK_LEN, MAX_MOUNTS, MAX_NAME_LEN, MAX_NETNS_NAME_LEN, MAX_WIRE_FRAME_LEN,
};
use nanostar_protocol::npk::header::HEADER_LEN;
use nanostar_protocol::npk::manifest::{
    Autostart, EnvVar, Manifest, MountKind, Network, Output, RESERVED_ENV_PREFIX, RestartMode,
};
use nanostar_protocol::version::Version;
use rustix::event::{Timespec, epoll};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Signal;

use super::{MountEntry, Runtime, after_ms, io_error, is_before, now};
use crate::container::cgroup::{self, CgroupError};
use crate::container::init::{self, Launch};
use crate::container::logs::LogRing;
use crate::container::{REPORT_LEN, Report};
use crate::errln;
use crate::limits::{LOG_READ_SLICE, MAX_CONTAINERS, MAX_PATH_LEN};
use crate::repository::{Package, SCRATCH_LEN};
use crate::sys::process::{self, CloneFlags, Forked};

/// epoll data of container descriptors: this bit, the slot index, and which descriptor.
pub const TOKEN_CONTAINER: u64 = 1 << 40;
const KIND_STATUS: u64 = 0;
const KIND_STDOUT: u64 = 1;
const KIND_STDERR: u64 = 2;
const KIND_MEMORY_EVENTS: u64 = 3;
const KIND_EXEC: u64 = 4;
const KIND_BITS: u32 = 3;

fn token(index: usize, kind: u64) -> u64 {
    TOKEN_CONTAINER | (index as u64) << KIND_BITS | kind
}

/// A container's two report pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportPipe {
    /// From init.
    Status,
    /// From the app before its `execve`.
    Exec,
}

/// The app's environment where the manifest and the start request leave these unset:
/// the usual search path (as Docker and Podman set it) and `/` as the home directory.
pub const DEFAULT_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/"),
];

/// Stop requests that may wait for one container at once.
const MAX_STOP_WAITERS: usize = 4;

/// One container's log ring, which outlives the run so `logs` works after an exit.
pub struct LogSlot {
    ring: LogRing,
    /// Counts the containers the slot has held, so a log reader notices when its
    /// container's slot was given to another package.
    generation: u32,
}

/// The container table: the containers the runtime knows (each on a log slot, whose
/// index names its descriptors in epoll) and the log rings. All zeros, so it lives in
/// `.bss` and costs RAM only as it is used.
pub struct Containers {
    list: Vec<Container, MAX_CONTAINERS>,
    slots: [LogSlot; MAX_CONTAINERS],
}

impl Containers {
    /// Empty.
    pub const fn new() -> Containers {
        Containers {
            list: Vec::new(),
            slots: [const {
                LogSlot {
                    ring: LogRing::new(),
                    generation: 0,
                }
            }; MAX_CONTAINERS],
        }
    }

    fn at(&self, slot: usize) -> Option<&Container> {
        self.list.iter().find(|c| c.slot == slot)
    }

    fn at_mut(&mut self, slot: usize) -> Option<&mut Container> {
        self.list.iter_mut().find(|c| c.slot == slot)
    }

    fn iter(&self) -> impl Iterator<Item = &Container> {
        self.list.iter()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Container> {
        self.list.iter_mut()
    }

    /// The slot of the container called `name`.
    fn slot_of(&self, name: &str) -> Option<usize> {
        self.list.iter().find(|c| c.name == name).map(|c| c.slot)
    }
}

impl Default for Containers {
    fn default() -> Self {
        Containers::new()
    }
}

/// A request waiting for an answer: client token and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    client: u64,
    id: u32,
}

/// A container the runtime knows: running, or stopped with its last exit.
struct Container {
    /// Its log slot.
    slot: usize,
    name: String<MAX_NAME_LEN>,
    version: Version,
    state: ContainerState,
    /// Its init's pid (0 when not running).
    pid: u32,
    pidfd: Option<OwnedFd>,
    /// Init's report pipe (read end).
    status: Option<OwnedFd>,
    /// The exec pipe (read end): ends when the app's `execve` succeeded.
    exec_report: Option<OwnedFd>,
    /// stdout and stderr pipes (read ends), when they go to the log.
    outputs: [Option<OwnedFd>; 2],
    /// Whether each output is also copied to /dev/kmsg.
    kmsg: [bool; 2],
    /// Its cgroup's `memory.events`, watched for OOM kills, and the count reported so far.
    memory_events: Option<OwnedFd>,
    oom_kills: u64,
    started: Timespec,
    /// How init said the app ended.
    reported: Option<ExitStatus>,
    /// The setup step init said failed.
    failed: Option<(SetupStep, u16)>,
    last_exit: Option<ExitStatus>,
    /// Resource packages its mounts use.
    uses: Vec<(String<MAX_NAME_LEN>, Version), MAX_MOUNTS>,
    cgroup: bool,
    stop_timeout_ms: u32,
    /// SIGKILL when this passes (while stopping).
    kill_at: Option<Timespec>,
    /// Start again when this passes (restart policy).
    restart_at: Option<Timespec>,
    /// The start request waiting for "running".
    starter: Option<Waiter>,
    /// Stop requests waiting for the exit.
    stoppers: Vec<Waiter, MAX_STOP_WAITERS>,
    /// A stop was asked for: no restart.
    stop_requested: bool,
    restart: nanostar_protocol::npk::manifest::RestartPolicy,
    autostart: Autostart,
    restarts: u32,
}

impl Container {
    fn alive(&self) -> bool {
        self.pidfd.is_some()
    }
}

/// A client reading a container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogReader {
    id: u32,
    index: usize,
    generation: u32,
    cursor: u64,
    /// Where a plain `logs` ends; `None` follows.
    end: Option<u64>,
    /// How the followed container ended: sent as `Ended` once `end` is reached.
    ended: Option<ExitStatus>,
}

/// The arguments of a start.
pub struct StartRequest<'r> {
    /// Package name.
    pub name: &'r str,
    /// Version; `None`: newest.
    pub version: Option<Version>,
    /// Replaces the manifest's arguments.
    pub args: Option<&'r [&'r str]>,
    /// Added to (or replacing in) the manifest's environment.
    pub env: &'r [EnvVar<'r>],
}

/// Why a start failed, owning the names an error reply borrows (the manifest they come
/// from lives in the launch buffer only during the start).
pub enum StartFailure {
    /// An error without borrowed text.
    Error(Error<'static>),
    /// `Error::ResourceMissing`.
    ResourceMissing(String<MAX_NAME_LEN>),
    /// `Error::BindSourceMissing`.
    BindSourceMissing(String<MAX_PATH_LEN>),
    /// `Error::NetnsMissing`.
    NetnsMissing(String<MAX_NETNS_NAME_LEN>),
}

impl StartFailure {
    /// The error reply.
    pub fn error(&self) -> Error<'_> {
        match self {
            StartFailure::Error(e) => *e,
            StartFailure::ResourceMissing(name) => Error::ResourceMissing { name },
            StartFailure::BindSourceMissing(path) => Error::BindSourceMissing { path },
            StartFailure::NetnsMissing(name) => Error::NetnsMissing { name },
        }
    }
}

impl From<Error<'static>> for StartFailure {
    fn from(e: Error<'static>) -> Self {
        StartFailure::Error(e)
    }
}

/// A copy of `text` (cut at the capacity; the manifest's limits keep it shorter).
fn owned<const N: usize>(text: &str) -> String<N> {
    let mut s = String::new();
    for c in text.chars() {
        if s.push(c).is_err() {
            break;
        }
    }
    s
}

fn errno_of(e: Errno) -> u16 {
    e.raw_os_error() as u16
}

fn prepare_error(e: Errno) -> Error<'static> {
    Error::Setup {
        step: SetupStep::Prepare,
        errno: errno_of(e),
    }
}

impl<'c> Runtime<'c> {
    fn container_index(&self, name: &str) -> Option<usize> {
        self.containers.slot_of(name)
    }

    /// Whether any container still has a process.
    pub(super) fn containers_alive(&self) -> bool {
        self.containers.iter().any(Container::alive)
    }

    /// The container state `list` and `inspect` show for a package.
    pub(super) fn container_info(&self, name: &str, version: &Version) -> Option<ContainerInfo> {
        let c = self
            .containers
            .iter()
            .find(|c| c.name == name && c.version == *version)?;
        let alive = c.alive() && c.state != ContainerState::Starting;
        let uptime_ms = if alive {
            let n = now();
            ((n.tv_sec - c.started.tv_sec) * 1000 + (n.tv_nsec - c.started.tv_nsec) / 1_000_000)
                .max(0) as u64
        } else {
            0
        };
        Some(ContainerInfo {
            state: c.state,
            pid: if c.alive() { c.pid } else { 0 },
            uptime_ms,
            last_exit: c.last_exit,
            restarts: c.restarts,
        })
    }

    /// Who uses the package `name` `version`: a live container of it, or one mounting it
    /// as a resource.
    pub(super) fn user_of(&self, name: &str, version: &Version) -> Option<(&str, Version)> {
        self.containers
            .iter()
            .filter(|c| c.alive())
            .find(|c| {
                (c.name == name && c.version == *version)
                    || c.uses.iter().any(|(n, v)| n == name && v == version)
            })
            .map(|c| (c.name.as_str(), c.version))
    }

    /// A slot for a container called `name`: its own, a free one, or the one of the
    /// container stopped the longest (which is forgotten, with its log).
    fn slot_for(&mut self, name: &str) -> Option<usize> {
        if let Some(slot) = self.containers.slot_of(name) {
            return Some(slot);
        }
        let free = (0..MAX_CONTAINERS).find(|s| self.containers.at(*s).is_none());
        let slot = match free {
            Some(slot) => slot,
            None => {
                let oldest = self
                    .containers
                    .list
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.state == ContainerState::Stopped)
                    .min_by_key(|(_, c)| (c.started.tv_sec, c.started.tv_nsec))
                    .map(|(i, _)| i)?;
                self.containers.list.swap_remove(oldest).slot
            }
        };
        let log = &mut self.containers.slots[slot];
        log.ring.clear();
        log.generation = log.generation.wrapping_add(1);
        Some(slot)
    }

    /// `start`: replies now on failure, or when init reports.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    pub(super) fn start(&mut self, client: u64, id: u32, request: &StartRequest) {
        let waiter = Some(Waiter { client, id });
        if let Err(e) = self.start_container(request, waiter, 0) {
            self.reply(client, id, &Reply::Error(e.error()));
        }
    }

    /// Starts a container; on success the reply to `starter` comes from init's report.
    // No allocator to box the error in; it lives for one reply.
    #[allow(clippy::result_large_err)]
    fn start_container(
        &mut self,
        request: &StartRequest,
        starter: Option<Waiter>,
        restarts: u32,
    ) -> Result<(), StartFailure> {
        // The package's verified header, manifest and seccomp program are copied into the
        // launch buffer, taken out of `self` meanwhile, so the manifest can borrow from it
        // while resources are mounted (which reuses the scratch buffer).
        let launch = self
            .launch
            .take()
            .ok_or(StartFailure::Error(Error::Full(Table::Containers)))?;
        let result = self.start_with(launch, request, starter, restarts);
        self.launch = Some(launch);
        result
    }

    #[allow(clippy::result_large_err)]
    fn start_with(
        &mut self,
        launch: &mut [u8; SCRATCH_LEN],
        request: &StartRequest,
        starter: Option<Waiter>,
        restarts: u32,
    ) -> Result<(), StartFailure> {
        if let Some(i) = self.container_index(request.name) {
            let c = self.containers.at(i);
            if c.is_some_and(|c| c.alive()) {
                return Err(Error::AlreadyRunning.into());
            }
        }
        let p = self
            .find(request.name, request.version)
            .cloned()
            .ok_or(Error::UnknownPackage)?;
        let (_file, header) = self.open_verified(&p)?;
        let manifest_len = header.manifest_len as usize;
        let seccomp_len = header.seccomp_len as usize;
        let used = HEADER_LEN + manifest_len + seccomp_len;
        launch[..used].copy_from_slice(&self.scratch[..used]);
        let launch: &[u8] = launch;
        let manifest = Manifest::decode(&launch[HEADER_LEN..HEADER_LEN + manifest_len])
            .map_err(|_| Error::BadPackage(PackageError::Manifest))?;
        let seccomp = &launch[HEADER_LEN + manifest_len..used];
        let Some(init_path) = manifest.init else {
            return Err(Error::IsResource.into());
        };
        let index = self
            .slot_for(&p.name)
            .ok_or(Error::Full(Table::Containers))?;
        self.ensure_mounted(&p)?;
        let mut resources = [None; MAX_MOUNTS];
        let mut uses = Vec::new();
        for (i, mount) in manifest.mounts.iter().enumerate() {
            match mount.kind {
                MountKind::Resource {
                    name, ref version, ..
                } => {
                    let resource = self
                        .packages
                        .iter()
                        .filter(|r| r.name == name && version.matches(&r.version))
                        .max_by_key(|r| r.version)
                        .cloned()
                        .ok_or_else(|| StartFailure::ResourceMissing(owned(name)))?;
                    self.ensure_mounted(&resource)?;
                    resources[i] = Some(resource.version);
                    let _ = uses.push((resource.name.clone(), resource.version));
                }
                MountKind::Bind { host, .. } if rustix::fs::stat(host).is_err() => {
                    return Err(StartFailure::BindSourceMissing(owned(host)));
                }
                _ => {}
            }
        }
        let netns = match manifest.network {
            Network::Join(name) => {
                let mut path: String<{ MAX_PATH_LEN }> = String::new();
                let _ = write!(path, "/run/netns/{name}");
                Some(
                    rustix::fs::open(
                        path.as_str(),
                        OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|_| StartFailure::NetnsMissing(owned(name)))?,
                )
            }
            _ => None,
        };
        let mut persist: String<{ MAX_PATH_LEN }> = String::new();
        let has_persist = manifest
            .mounts
            .iter()
            .any(|m| matches!(m.kind, MountKind::Persist));
        if has_persist {
            write!(persist, "{}/{}", self.config.data_dir, p.name)
                .map_err(|_| prepare_error(Errno::NAMETOOLONG))?;
            make_persist_dir(&persist, manifest.uid, manifest.gid).map_err(prepare_error)?;
        }
        let limits = manifest.cgroups;
        let wants_limits = limits != Default::default();
        let cgroup_dir = match self.config.cgroup {
            Some(root) => Some(cgroup::create(root, &p.name, &limits).map_err(|e| match e {
                CgroupError::Unavailable => Error::CgroupUnavailable,
                CgroupError::Io(e) => prepare_error(e),
            })?),
            None if wants_limits => return Err(Error::CgroupUnavailable.into()),
            None => None,
        };
        let forked = self.fork_container(
            index,
            &p,
            &manifest,
            init_path,
            seccomp,
            request,
            &resources,
            has_persist.then_some(persist.as_str()),
            netns.as_ref(),
            cgroup_dir.as_ref(),
        );
        if let Err(e) = forked {
            if let (Some(_), Some(root)) = (&cgroup_dir, self.config.cgroup) {
                let _ = cgroup::remove(root, &p.name);
            }
            return Err(e.into());
        }
        let memory_events = cgroup_dir.as_ref().and_then(cgroup::open_events);
        if let Some(events) = &memory_events {
            let _ = epoll::add(
                &self.epoll,
                events,
                epoll::EventData::new_u64(token(index, KIND_MEMORY_EVENTS)),
                epoll::EventFlags::PRI,
            );
        }
        if let Some(c) = self.containers.at_mut(index) {
            c.memory_events = memory_events;
            c.uses = uses;
            c.cgroup = cgroup_dir.is_some();
            c.starter = starter;
            c.restarts = restarts;
        }
        Ok(())
    }

    /// Mounts a package's image unless it is mounted.
    fn ensure_mounted(&mut self, p: &Package) -> Result<(), Error<'static>> {
        if self.is_mounted(&p.name, &p.version) {
            return Ok(());
        }
        if self.mounts.is_full() {
            return Err(Error::Full(Table::Mounts));
        }
        let mounted = self.mount_package(p)?;
        // Cannot fail: checked for room above.
        let _ = self.mounts.push(MountEntry {
            name: p.name.clone(),
            version: p.version,
            mounted,
        });
        self.notify(Notification::Mounted(PackageId {
            name: &p.name,
            version: p.version,
        }));
        Ok(())
    }

    /// Pipes, argv and envp, the fork; records the new container in slot `index`.
    #[allow(clippy::too_many_arguments)]
    fn fork_container(
        &mut self,
        index: usize,
        p: &Package,
        manifest: &Manifest,
        init_path: &str,
        seccomp: &[u8],
        request: &StartRequest,
        resources: &[Option<Version>; MAX_MOUNTS],
        persist: Option<&str>,
        netns: Option<&OwnedFd>,
        cgroup_dir: Option<&OwnedFd>,
    ) -> Result<(), Error<'static>> {
        self.build_exec(p, manifest, init_path, request)
            .map_err(prepare_error)?;
        if self.null.is_none() {
            self.null = Some(
                rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .map_err(prepare_error)?,
            );
        }
        let pipe = || {
            let (read, write) = rustix::pipe::pipe_with(
                rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
            )?;
            // The container writes blocking; only the runtime's end must never block.
            rustix::fs::fcntl_setfl(&write, OFlags::empty())?;
            Ok::<_, Errno>((read, write))
        };
        let (status_read, status_write) = pipe().map_err(prepare_error)?;
        let (exec_read, exec_write) = pipe().map_err(prepare_error)?;
        let mut outputs: [Option<OwnedFd>; 2] = [None, None];
        let mut writers: [Option<OwnedFd>; 2] = [None, None];
        let io = manifest.io;
        for (i, output) in [io.stdout, io.stderr].iter().enumerate() {
            // One pipe when both streams go the same way, so the log keeps the order in
            // which the app wrote them.
            let shared = i == 1 && io.stdout == io.stderr;
            if *output != Output::Discard && !shared {
                let (read, write) = pipe().map_err(prepare_error)?;
                outputs[i] = Some(read);
                writers[i] = Some(write);
            }
        }
        let stderr_writer = if io.stderr != Output::Discard && io.stdout == io.stderr {
            0
        } else {
            1
        };
        let null = self
            .null
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or(prepare_error(Errno::BADF))?;
        let mut root: String<{ MAX_PATH_LEN }> = String::new();
        write!(root, "{}/mnt/{}-{}", self.config.run_dir, p.name, p.version)
            .map_err(|_| prepare_error(Errno::NAMETOOLONG))?;
        let mut flags = CloneFlags::NEWPID
            .union(CloneFlags::NEWNS)
            .union(CloneFlags::NEWIPC)
            .union(CloneFlags::NEWUTS);
        if manifest.network == Network::New {
            flags = flags.union(CloneFlags::NEWNET);
        }
        if cgroup_dir.is_some() {
            flags = flags.union(CloneFlags::NEWCGROUP);
        }
        let launch = Launch {
            manifest,
            seccomp,
            root: &root,
            run_dir: self.config.run_dir,
            persist,
            resources,
            exec: self.exec,
            status: status_write.as_fd(),
            exec_report: exec_write.as_fd(),
            stdout: writers[0].as_ref().map_or(null, |w| w.as_fd()),
            stderr: writers[stderr_writer].as_ref().map_or(null, |w| w.as_fd()),
            null,
            netns: netns.map(|f| f.as_fd()),
        };
        let child = match process::spawn(flags, cgroup_dir) {
            Ok(Forked::Child) => init::run(&launch),
            Ok(Forked::Parent(child)) => child,
            Err(e) => {
                return Err(Error::Setup {
                    step: SetupStep::Clone,
                    errno: errno_of(e),
                });
            }
        };
        drop(status_write);
        drop(exec_write);
        drop(writers);
        let epoll_fd = &self.epoll;
        let _ = epoll::add(
            epoll_fd,
            &status_read,
            epoll::EventData::new_u64(token(index, KIND_STATUS)),
            epoll::EventFlags::IN | epoll::EventFlags::HUP,
        );
        let _ = epoll::add(
            epoll_fd,
            &exec_read,
            epoll::EventData::new_u64(token(index, KIND_EXEC)),
            epoll::EventFlags::IN | epoll::EventFlags::HUP,
        );
        for (kind, output) in [(KIND_STDOUT, &outputs[0]), (KIND_STDERR, &outputs[1])] {
            if let Some(fd) = output {
                let _ = epoll::add(
                    epoll_fd,
                    fd,
                    epoll::EventData::new_u64(token(index, kind)),
                    epoll::EventFlags::IN | epoll::EventFlags::HUP,
                );
            }
        }
        let kmsg = [
            manifest.io.stdout == Output::Kmsg,
            manifest.io.stderr == Output::Kmsg,
        ];
        if kmsg.contains(&true) && self.kmsg.is_none() {
            self.kmsg = rustix::fs::open(
                c"/dev/kmsg",
                OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok();
        }
        let last_exit = self.containers.at(index).and_then(|c| c.last_exit);
        let container = Container {
            slot: index,
            name: p.name.clone(),
            version: p.version,
            state: ContainerState::Starting,
            pid: child.pid,
            pidfd: Some(child.pidfd),
            status: Some(status_read),
            exec_report: Some(exec_read),
            outputs,
            kmsg,
            memory_events: None,
            oom_kills: 0,
            started: now(),
            reported: None,
            failed: None,
            last_exit,
            uses: Vec::new(),
            cgroup: false,
            stop_timeout_ms: manifest.stop_timeout_ms,
            kill_at: None,
            restart_at: None,
            starter: None,
            stoppers: Vec::new(),
            stop_requested: false,
            restart: manifest.restart,
            autostart: manifest.autostart,
            restarts: 0,
        };
        match self.containers.at_mut(index) {
            Some(c) => *c = container,
            // Cannot fail: `slot_for` made room (a free slot means a free list entry).
            None => {
                let _ = self.containers.list.push(container);
            }
        }
        Ok(())
    }

    /// Fills `self.exec` with the app's argv and envp.
    fn build_exec(
        &mut self,
        p: &Package,
        manifest: &Manifest,
        init_path: &str,
        request: &StartRequest,
    ) -> Result<(), Errno> {
        let exec = &mut *self.exec;
        exec.clear();
        exec.arg(&[init_path.as_bytes()])?;
        match request.args {
            Some(args) => args.iter().try_for_each(|a| exec.arg(&[a.as_bytes()]))?,
            None => manifest
                .args
                .iter()
                .try_for_each(|a| exec.arg(&[a.as_bytes()]))?,
        }
        for var in manifest.env.iter() {
            if !request.env.iter().any(|o| o.key == var.key) {
                exec.env(&[var.key.as_bytes(), b"=", var.value.as_bytes()])?;
            }
        }
        for var in request.env {
            exec.env(&[var.key.as_bytes(), b"=", var.value.as_bytes()])?;
        }
        // What a program built for a normal distribution expects, unless the manifest or
        // the start request says otherwise (`docs/manifest.md`).
        for (key, value) in DEFAULT_ENV {
            let set = |k: &str| k == key;
            if !manifest.env.iter().any(|v| set(v.key)) && !request.env.iter().any(|v| set(v.key)) {
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

    /// `stop`: SIGTERM now, SIGKILL at the timeout; the reply comes with the exit.
    #[inline(never)]
    pub(super) fn stop(&mut self, client: u64, id: u32, name: &str, timeout_ms: Option<u32>) {
        let Some(index) = self.container_index(name) else {
            return self.reply(client, id, &Reply::Error(self.not_running(name)));
        };
        let Some(c) = self.containers.at_mut(index) else {
            return;
        };
        if c.state == ContainerState::Restarting {
            // Waiting to restart: stopping means not restarting.
            c.state = ContainerState::Stopped;
            c.restart_at = None;
            let status = c.last_exit.unwrap_or(ExitStatus::Code(0));
            return self.reply(client, id, &Reply::Stopped(status));
        }
        if !c.alive() {
            return self.reply(client, id, &Reply::Error(Error::NotRunning));
        }
        if c.stoppers.push(Waiter { client, id }).is_err() {
            return self.reply(client, id, &Reply::Error(Error::Full(Table::Containers)));
        }
        let timeout = timeout_ms.unwrap_or(c.stop_timeout_ms);
        begin_stop(c, timeout);
    }

    fn not_running(&self, name: &str) -> Error<'static> {
        if self.packages.iter().any(|p| p.name == name) {
            Error::NotRunning
        } else {
            Error::UnknownPackage
        }
    }

    /// Stops every container (shutdown), each with its own timeout.
    pub(super) fn stop_all(&mut self) {
        for c in self.containers.iter_mut() {
            {
                c.restart_at = None;
                if c.state == ContainerState::Restarting {
                    c.state = ContainerState::Stopped;
                }
                if c.alive() && c.state != ContainerState::Stopping {
                    let timeout = c.stop_timeout_ms;
                    begin_stop(c, timeout);
                }
            }
        }
    }

    /// `kill`: a signal to the container's app (through its init, which forwards it);
    /// SIGKILL ends the whole container at once.
    #[inline(never)]
    pub(super) fn kill(&mut self, client: u64, id: u32, name: &str, signal: u8) {
        let Some(signal) = Signal::from_named_raw(i32::from(signal)) else {
            return self.reply(client, id, &Reply::Error(Error::InvalidArgument));
        };
        let pidfd = self
            .container_index(name)
            .and_then(|i| self.containers.at(i))
            .and_then(|c| c.pidfd.as_ref());
        let Some(pidfd) = pidfd else {
            return self.reply(client, id, &Reply::Error(self.not_running(name)));
        };
        match rustix::process::pidfd_send_signal(pidfd, signal) {
            Ok(()) => self.reply(client, id, &Reply::Ok),
            Err(e) => self.reply(client, id, &Reply::Error(io_error(e))),
        }
    }

    /// `logs`: the ring's content (its last `lines` lines, or all), then `LogEnd`; with
    /// `follow`, new output as it comes until the container ends (then `Ended`). A
    /// follower of a container that is not running gets what there is and how it ended.
    #[inline(never)]
    pub(super) fn logs(
        &mut self,
        client: u64,
        id: u32,
        name: &str,
        follow: bool,
        lines: Option<u32>,
    ) {
        let Some(index) = self.container_index(name) else {
            if self.packages.iter().any(|p| p.name == name) {
                // Known but never started: an empty log.
                return self.reply(client, id, &Reply::LogEnd);
            }
            return self.reply(client, id, &Reply::Error(self.not_running(name)));
        };
        // A container waiting to restart comes back: following it goes on.
        let (runs, last_exit) = self.containers.at(index).map_or((false, None), |c| {
            (
                c.alive() || c.state == ContainerState::Restarting,
                c.last_exit,
            )
        });
        let slot = &self.containers.slots[index];
        let reader = LogReader {
            id,
            index,
            generation: slot.generation,
            cursor: match lines {
                Some(n) => slot.ring.tail(n),
                None => slot.ring.first(),
            },
            end: (!follow || !runs).then(|| slot.ring.end()),
            ended: if follow && !runs { last_exit } else { None },
        };
        if let Some(c) = self.client(client) {
            c.logs = Some(reader);
        }
    }

    /// The followers of container `index` stop at what its ring holds now and are told
    /// how it ended.
    fn end_followers(&mut self, index: usize, status: ExitStatus) {
        let end = self.containers.slots[index].ring.end();
        for c in self.clients.iter_mut() {
            if let Some(r) = c
                .logs
                .as_mut()
                .filter(|r| r.index == index && r.end.is_none())
            {
                r.end = Some(end);
                r.ended = Some(status);
            }
        }
    }

    /// Sends every log reader what it has not seen, as far as its queue has room: a slow
    /// reader waits (and may lose what the ring overwrote), it is never dropped for it.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    pub(super) fn pump_logs(&mut self) {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        for client in self.tokens() {
            while let Some(reader) = self.client_ref(client).and_then(|c| {
                let room = c.queue.len() + MAX_WIRE_FRAME_LEN <= c.queue.capacity();
                c.logs.filter(|_| room && !c.closing)
            }) {
                match encode_log_piece(&self.containers.slots[reader.index], &reader, &mut wire) {
                    Some((len, next)) => {
                        self.queue_raw(client, &wire[..len]);
                        if let Some(r) = self.client(client).and_then(|c| c.logs.as_mut()) {
                            r.cursor = next;
                        }
                    }
                    None => {
                        let slot = &self.containers.slots[reader.index];
                        let gone = slot.generation != reader.generation;
                        if gone || reader.end.is_some() {
                            if let Some(c) = self.client(client) {
                                c.logs = None;
                            }
                            let last = match reader.ended {
                                Some(status) if !gone => Reply::Ended(status),
                                _ => Reply::LogEnd,
                            };
                            self.reply(client, reader.id, &last);
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Whether a log reader could get more now: the loop must not sleep then.
    pub(super) fn logs_pending(&self) -> bool {
        self.clients.iter().any(|c| {
            let Some(r) = c.logs else {
                return false;
            };
            let room = c.queue.len() + MAX_WIRE_FRAME_LEN <= c.queue.capacity();
            let slot = &self.containers.slots[r.index];
            let more =
                r.end.is_some() || slot.generation != r.generation || slot.ring.end() > r.cursor;
            room && !c.closing && more
        })
    }

    /// Something happened on a container's descriptor.
    pub(super) fn container_event(&mut self, token: u64) {
        let index = ((token & !TOKEN_CONTAINER) >> KIND_BITS) as usize;
        if index >= MAX_CONTAINERS {
            return;
        }
        match token & ((1 << KIND_BITS) - 1) {
            KIND_STATUS => self.read_reports(index),
            KIND_STDOUT => self.read_output(index, 0, LOG_READ_SLICE),
            KIND_STDERR => self.read_output(index, 1, LOG_READ_SLICE),
            KIND_MEMORY_EVENTS => self.check_oom(index),
            KIND_EXEC => self.exec_event(index),
            _ => {}
        }
    }

    /// Moves up to `limit` bytes of a container's output into its ring (and /dev/kmsg).
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn read_output(&mut self, index: usize, stream: usize, limit: usize) {
        let mut buf = [0u8; LOG_READ_SLICE];
        let mut done = 0;
        while done < limit {
            let Containers { list, slots } = &mut *self.containers;
            let Some(c) = list.iter_mut().find(|c| c.slot == index) else {
                return;
            };
            let slot = &mut slots[index];
            let Some(fd) = c.outputs[stream].as_ref() else {
                return;
            };
            let want = (limit - done).min(buf.len());
            match rustix::io::read(fd, &mut buf[..want]) {
                Ok(0) => {
                    // Every writer is gone.
                    if let Some(fd) = c.outputs[stream].take() {
                        let _ = epoll::delete(&self.epoll, &fd);
                    }
                    return;
                }
                Ok(n) => {
                    slot.ring.push(&buf[..n]);
                    done += n;
                    if c.kmsg[stream] {
                        let name = c.name.clone();
                        self.copy_to_kmsg(&name, &buf[..n]);
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    /// One kernel log record per line, prefixed by the container's name.
    fn copy_to_kmsg(&self, name: &str, bytes: &[u8]) {
        let Some(kmsg) = self.kmsg.as_ref() else {
            return;
        };
        let mut record = [0u8; 512];
        let prefix = name.len() + 2;
        record[..name.len()].copy_from_slice(name.as_bytes());
        record[name.len()..prefix].copy_from_slice(b": ");
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let n = line.len().min(record.len() - prefix - 1);
            record[prefix..prefix + n].copy_from_slice(&line[..n]);
            // A record without its newline is held back as the start of a longer one.
            record[prefix + n] = b'\n';
            let _ = rustix::io::write(kmsg, &record[..prefix + n + 1]);
        }
    }

    /// The kernel changed the container's `memory.events`: an OOM kill is a notification
    /// (the container may well go on).
    fn check_oom(&mut self, index: usize) {
        let Some(c) = self.containers.at_mut(index) else {
            return;
        };
        let Some(events) = c.memory_events.as_ref() else {
            return;
        };
        let kills = cgroup::oom_kills(events);
        if kills <= c.oom_kills {
            return;
        }
        c.oom_kills = kills;
        let (name, version) = (c.name.clone(), c.version);
        self.notify(Notification::OutOfMemory(PackageId {
            name: &name,
            version,
        }));
    }

    /// Reads init's reports; at the pipe's end, init is gone: reap it.
    #[inline(never)]
    fn read_reports(&mut self, index: usize) {
        if self.drain_reports(index) {
            self.try_reap(index);
        }
    }

    /// Takes every report init has written; `true` once the pipe has ended (init is gone),
    /// which also closes it.
    fn drain_reports(&mut self, index: usize) -> bool {
        self.drain_pipe(index, ReportPipe::Status)
    }

    /// Takes every report waiting on one of a container's report pipes (init's failure
    /// or the app's end on the status pipe, the app's failure on the exec pipe); `true`
    /// once the pipe has ended, which also closes it.
    fn drain_pipe(&mut self, index: usize, pipe: ReportPipe) -> bool {
        loop {
            let Some(c) = self.containers.at_mut(index) else {
                return false;
            };
            let slot = match pipe {
                ReportPipe::Status => &mut c.status,
                ReportPipe::Exec => &mut c.exec_report,
            };
            let Some(fd) = slot.as_ref() else {
                return false;
            };
            let mut record = [0u8; REPORT_LEN];
            match rustix::io::read(fd, &mut record) {
                Ok(REPORT_LEN) => match Report::decode(&record) {
                    Some(Report::Failed(step, errno)) => c.failed = Some((step, errno)),
                    Some(Report::Exited(status)) => c.reported = Some(status),
                    None => {}
                },
                Ok(_) => {
                    if let Some(fd) = slot.take() {
                        let _ = epoll::delete(&self.epoll, &fd);
                    }
                    return true;
                }
                Err(Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// The exec pipe: the app's setup failed (a report), or it ended. It ends when the
    /// app's `execve` succeeded, or when init exits before forking the app, after writing
    /// its own failure to the status pipe: so that pipe is read before deciding.
    fn exec_event(&mut self, index: usize) {
        if !self.drain_pipe(index, ReportPipe::Exec) {
            return;
        }
        self.drain_reports(index);
        let starting = self
            .containers
            .at(index)
            .is_some_and(|c| c.failed.is_none() && c.state == ContainerState::Starting);
        if starting {
            self.running(index);
        }
    }

    /// The app runs (its `execve` succeeded): the start's reply and notification.
    fn running(&mut self, index: usize) {
        let Some(c) = self.containers.at_mut(index) else {
            return;
        };
        if c.state == ContainerState::Starting {
            c.state = ContainerState::Running;
        }
        c.started = now();
        let starter = c.starter.take();
        let (name, version, pid) = (c.name.clone(), c.version, c.pid);
        if let Some(w) = starter {
            self.reply(w.client, w.id, &Reply::Ok);
        }
        self.notify(Notification::Started {
            package: PackageId {
                name: &name,
                version,
            },
            pid,
        });
    }

    /// SIGCHLD: reap every exited child: containers' inits (then finish the container)
    /// and, as PID 1, orphans re-parented to the runtime.
    pub(super) fn reap_children(&mut self) {
        while let Ok(Some((pid, status))) =
            rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
        {
            let pid = pid.as_raw_nonzero().get() as u32;
            if let Some(index) = self.live_container_with_pid(pid) {
                self.finish(index, init::exit_status(status));
            }
        }
    }

    fn live_container_with_pid(&self, pid: u32) -> Option<usize> {
        self.containers
            .iter()
            .find(|c| c.alive() && c.pid == pid)
            .map(|c| c.slot)
    }

    /// If init of container `index` exited: collect it and finish the container.
    fn try_reap(&mut self, index: usize) {
        let Some(c) = self.containers.at(index).filter(|c| c.alive()) else {
            return;
        };
        let Some(pid) = rustix::process::Pid::from_raw(c.pid as i32) else {
            return;
        };
        if let Ok(Some((_, status))) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG)
        {
            self.finish(index, init::exit_status(status));
        }
    }

    /// The container's init is gone: drain its output, tell everyone how it ended,
    /// clean up, and restart it if its policy says so.
    #[inline(never)]
    fn finish(&mut self, index: usize, init_status: ExitStatus) {
        // The app's and init's last reports may still be in their pipes (SIGCHLD can
        // come first), and what is left in the output pipes (at most their capacity):
        // the last words count.
        // (An app that ran and ended before its exec pipe's end was read still counts as
        // started.)
        self.exec_event(index);
        self.drain_reports(index);
        for stream in 0..2 {
            self.read_output(index, stream, 1 << 20);
        }
        let root = self.config.cgroup;
        let shutting_down = self.shutdown;
        let Some(c) = self.containers.at_mut(index) else {
            return;
        };
        let pipes = c
            .outputs
            .iter_mut()
            .chain([&mut c.status, &mut c.exec_report]);
        for fd in pipes {
            if let Some(fd) = fd.take() {
                let _ = epoll::delete(&self.epoll, &fd);
            }
        }
        c.pidfd = None;
        c.kill_at = None;
        let (name, version) = (c.name.clone(), c.version);
        // An OOM kill the watch has not reported yet (the last one often ends the app).
        let oom = c
            .memory_events
            .as_ref()
            .is_some_and(|events| cgroup::oom_kills(events) > c.oom_kills);
        if let Some(events) = c.memory_events.take() {
            let _ = epoll::delete(&self.epoll, &events);
        }
        if c.cgroup {
            if let Some(root) = root {
                cgroup::kill(root, &name);
                let _ = cgroup::remove(root, &name);
            }
            c.cgroup = false;
        }
        c.uses.clear();
        let starter = c.starter.take();
        let stoppers = core::mem::take(&mut c.stoppers);
        if let (Some((step, errno)), Some(w)) = (c.failed.take(), starter) {
            // The app never ran: the start fails, and nothing "exited".
            c.state = ContainerState::Stopped;
            c.pid = 0;
            self.reply(w.client, w.id, &Reply::Error(Error::Setup { step, errno }));
            for w in stoppers {
                self.reply(w.client, w.id, &Reply::Error(Error::NotRunning));
            }
            return;
        }
        // init reports the app's end; without a report init itself was killed (SIGKILL
        // at a stop's timeout, or a kill), which ended the app the same way.
        let status = c.reported.take().unwrap_or(init_status);
        c.last_exit = Some(status);
        c.state = ContainerState::Stopped;
        c.pid = 0;
        let policy = if c.stop_requested || shutting_down {
            Restart::No
        } else {
            restart_decision(c, status)
        };
        let restart = policy == Restart::Yes;
        let restarts = c.restarts;
        if restart {
            let delay = backoff_ms(c);
            c.restarts += 1;
            c.state = ContainerState::Restarting;
            c.restart_at = Some(after_ms(delay));
        }
        let critical = c.autostart == Autostart::Critical && !c.stop_requested;
        if let Some(w) = starter {
            self.reply(
                w.client,
                w.id,
                &Reply::Error(Error::Setup {
                    step: SetupStep::Exec,
                    errno: errno_of(Errno::INTR),
                }),
            );
        }
        for w in stoppers {
            self.reply(w.client, w.id, &Reply::Stopped(status));
        }
        let package = PackageId {
            name: &name,
            version,
        };
        if oom {
            self.notify(Notification::OutOfMemory(package));
        }
        self.notify(Notification::Exited { package, status });
        if policy == Restart::GaveUp {
            self.notify(Notification::GaveUp {
                package,
                restarts,
                status,
            });
        }
        self.end_followers(index, status);
        if critical && !restart && !shutting_down {
            errln!("nanostar: critical container {name} ended; shutting down");
            self.shutdown = true;
        }
    }

    /// Timers: SIGKILL for stops past their timeout, restarts whose delay passed.
    #[inline(never)]
    pub(super) fn container_timers(&mut self) {
        let n = now();
        for index in 0..MAX_CONTAINERS {
            let root = self.config.cgroup;
            let Some(c) = self.containers.at_mut(index) else {
                continue;
            };
            if c.kill_at.is_some_and(|t| is_before(&t, &n)) {
                c.kill_at = None;
                if let Some(pidfd) = c.pidfd.as_ref() {
                    let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
                }
                if c.cgroup
                    && let Some(root) = root
                {
                    cgroup::kill(root, &c.name);
                }
            }
            if c.restart_at.is_some_and(|t| is_before(&t, &n)) && !self.shutdown {
                c.restart_at = None;
                let name = c.name.clone();
                let version = c.version;
                let restarts = c.restarts;
                let request = StartRequest {
                    name: &name,
                    version: Some(version),
                    args: None,
                    env: &[],
                };
                if let Err(e) = self.start_container(&request, None, restarts) {
                    errln!(
                        "nanostar: restart of {name} failed: {}",
                        crate::text::error_text(&e.error())
                    );
                    if let Some(c) = self.containers.at_mut(index) {
                        c.state = ContainerState::Stopped;
                    }
                }
            }
        }
    }

    /// The earliest container timer.
    pub(super) fn next_container_timer(&self) -> Option<Timespec> {
        self.containers
            .iter()
            .flat_map(|c| [c.kill_at, c.restart_at])
            .flatten()
            .min_by_key(|t| (t.tv_sec, t.tv_nsec))
    }

    /// Starts every package whose manifest says `autostart` (the newest version of each
    /// name); a failing relaxed one is reported, a failing critical one stops the runtime.
    #[inline(never)]
    pub(super) fn autostart(&mut self) {
        let mut names: Vec<(String<MAX_NAME_LEN>, Version), MAX_CONTAINERS> = Vec::new();
        for p in self.packages.iter() {
            let newest = self
                .packages
                .iter()
                .filter(|q| q.name == p.name)
                .all(|q| q.version <= p.version);
            if newest && !names.is_full() {
                let _ = names.push((p.name.clone(), p.version));
            }
        }
        for (name, version) in names {
            let Some(p) = self.packages.find(&name, &version).cloned() else {
                continue;
            };
            let mode = match self.open_verified(&p) {
                Ok((_, header)) => {
                    let len = header.manifest_len as usize;
                    Manifest::decode(&self.scratch[HEADER_LEN..HEADER_LEN + len])
                        .map(|m| m.autostart)
                        .unwrap_or(Autostart::None)
                }
                Err(_) => Autostart::None,
            };
            if mode == Autostart::None {
                continue;
            }
            let request = StartRequest {
                name: &name,
                version: Some(version),
                args: None,
                env: &[],
            };
            if let Err(e) = self.start_container(&request, None, 0) {
                errln!(
                    "nanostar: autostart of {name} {version} failed: {}",
                    crate::text::error_text(&e.error())
                );
                if mode == Autostart::Critical {
                    self.shutdown = true;
                }
            }
        }
    }
}

/// The reader's next piece of the slot's ring as a `Log` reply in `wire`: its length and
/// the reader's next cursor; `None` when there is nothing (more) for it.
fn encode_log_piece(slot: &LogSlot, reader: &LogReader, wire: &mut [u8]) -> Option<(usize, u64)> {
    if slot.generation != reader.generation {
        return None;
    }
    let limit = match reader.end {
        Some(end) => (end.saturating_sub(reader.cursor) as usize).min(MAX_CHUNK_LEN),
        None => MAX_CHUNK_LEN,
    };
    let piece = slot.ring.read(reader.cursor, limit).filter(|_| limit > 0)?;
    let message = Message::Reply {
        id: reader.id,
        reply: Reply::Log {
            dropped: piece.dropped,
            data: piece.data,
        },
    };
    let len = message.encode(wire).ok()?.len();
    Some((len, piece.next))
}

/// SIGTERM to the container's init (which forwards it to the app); SIGKILL after
/// `timeout_ms`.
fn begin_stop(c: &mut Container, timeout_ms: u32) {
    c.stop_requested = true;
    c.restart_at = None;
    if c.state != ContainerState::Stopping {
        c.state = ContainerState::Stopping;
        if let Some(pidfd) = c.pidfd.as_ref() {
            let _ = rustix::process::pidfd_send_signal(pidfd, Signal::TERM);
        }
        c.kill_at = Some(after_ms(timeout_ms));
    }
}

/// What the restart policy does after an exit the runtime did not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// The policy does not restart for this exit.
    No,
    /// Start it again after the back-off.
    Yes,
    /// The policy would, but its restarts are used up.
    GaveUp,
}

fn restart_decision(c: &Container, status: ExitStatus) -> Restart {
    let mode_says = match c.restart.mode {
        RestartMode::Never => false,
        RestartMode::OnFailure => status != ExitStatus::Code(0),
        RestartMode::Always => true,
    };
    match mode_says {
        false => Restart::No,
        true if c.restart.max_restarts.is_none_or(|max| c.restarts < max) => Restart::Yes,
        true => Restart::GaveUp,
    }
}

/// The delay before restart number `restarts + 1`: doubled each time, capped.
fn backoff_ms(c: &Container) -> u32 {
    let initial = c.restart.backoff_initial_ms;
    let doubled = initial.saturating_mul(1u32.checked_shl(c.restarts.min(31)).unwrap_or(u32::MAX));
    doubled.min(c.restart.backoff_max_ms.max(initial))
}

/// `DATA_DIR/NAME`, owned by the app's uid and gid, mode 0700; kept across updates.
fn make_persist_dir(path: &str, uid: u32, gid: u32) -> Result<(), Errno> {
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
