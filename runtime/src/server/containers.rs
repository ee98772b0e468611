//! The container requests and events: start, stop, kill, logs, and what happens when a
//! container's init reports or exits. A start reads top to bottom: the store opens and
//! verifies the package once and mounts it from that descriptor, the launcher forks,
//! and the reply goes out when the app's `execve` succeeded. A stop sends SIGTERM and
//! replies when the container is gone, with SIGKILL when the timeout passes first.

use heapless::{String, Vec};
use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, Notification, PackageError, PackageId, Reply, SetupStep,
    Table as TableName,
};
use nanostar_protocol::limits::{MAX_MOUNTS, MAX_NAME_LEN};
use nanostar_protocol::npk::manifest::{Autostart, EnvVar, Manifest, MountKind, Network, Output};
use nanostar_protocol::version::Version;
use rustix::event::epoll;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Signal;

use super::Runtime;
use super::clients::Clients;
use super::dispatch::Answer;
use super::errors::{Refusal, io_error, owned, setup};
use super::poll::{self, Kind};
use crate::container::launch::{self, Prepared};
use crate::container::table::{Container, LogReader, Waiter};
use crate::container::{app, cgroup};
use crate::errln;
use crate::layout;
use crate::limits::MAX_CONTAINERS;
use crate::store::{Opened, Store};
use crate::time::{after_ms, now};

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

/// Mounts an opened package unless it is mounted, and tells the subscribers.
fn ensure_mounted(
    store: &mut Store,
    clients: &mut Clients,
    opened: &Opened,
) -> Result<(), Refusal> {
    if store.ensure_mounted(opened)? {
        clients.notify(Notification::Mounted(PackageId {
            name: &opened.package.name,
            version: opened.package.version,
        }));
    }
    Ok(())
}

/// Resource packages a start mounted: the version of each resource mount, by index, and
/// the packages, which may not be unmounted while the container runs.
type Resources = (
    [Option<Version>; MAX_MOUNTS],
    Vec<(String<MAX_NAME_LEN>, Version), MAX_MOUNTS>,
);

/// Resolves and mounts the newest matching version of each resource mount; checks bind
/// sources.
fn mount_resources(
    store: &mut Store,
    clients: &mut Clients,
    manifest: &Manifest,
) -> Result<Resources, Refusal> {
    let mut versions = [None; MAX_MOUNTS];
    let mut uses = Vec::new();
    for (i, mount) in manifest.mounts.iter().enumerate() {
        match mount.kind {
            MountKind::Resource {
                name, ref version, ..
            } => {
                let resource = store
                    .newest_matching(name, |v| version.matches(v))
                    .cloned()
                    .ok_or_else(|| Refusal::ResourceMissing(owned(name)))?;
                if !store.is_mounted(&resource.name, &resource.version) {
                    let opened = store.open_verified(&resource)?;
                    ensure_mounted(store, clients, &opened)?;
                }
                versions[i] = Some(resource.version);
                let _ = uses.push((resource.name, resource.version));
            }
            MountKind::Bind { host, .. } if rustix::fs::stat(host).is_err() => {
                return Err(Refusal::BindSourceMissing(owned(host)));
            }
            _ => {}
        }
    }
    Ok((versions, uses))
}

/// The named network namespace a manifest joins.
fn open_netns(manifest: &Manifest) -> Result<Option<OwnedFd>, Refusal> {
    let Network::Join(name) = manifest.network else {
        return Ok(None);
    };
    let missing = || Refusal::NetnsMissing(owned(name));
    let mut path = layout::netns(name).map_err(|_| missing())?;
    let path = path.c_str().map_err(|_| missing())?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty())
        .map(Some)
        .map_err(|_| missing())
}

impl<'c> Runtime<'c> {
    /// Starts a container; on success the reply to `starter` comes when the app runs.
    #[inline(never)]
    pub(super) fn start(
        &mut self,
        request: &StartRequest,
        starter: Option<Waiter>,
        restarts: u32,
    ) -> Result<(), Refusal> {
        let table = &mut *self.containers.table;
        if let Some(slot) = table.slot_of(request.name)
            && table.at(slot).is_some_and(Container::alive)
        {
            return Err(Error::AlreadyRunning.into());
        }
        let store = &mut self.store;
        let p = store
            .find(request.name, request.version)
            .cloned()
            .ok_or(Error::UnknownPackage)?;
        // The one open and verification of this start; the image is mounted from it.
        let opened = store.open_verified(&p)?;
        // Kept apart: the store's buffer is reused when resources are verified.
        let (manifest, seccomp) = store.verified_parts(&opened);
        let kept = launch::keep(self.containers.buffer, manifest, seccomp);
        let manifest = Manifest::decode(kept.manifest)
            .map_err(|_| Error::BadPackage(PackageError::Manifest))?;
        let init = manifest.init.ok_or(Error::IsResource)?;
        let slot = table
            .slot_for(&p.name)
            .ok_or(Error::Full(TableName::Containers))?;
        ensure_mounted(store, &mut self.clients, &opened)?;
        drop(opened);
        let (resources, uses) = mount_resources(store, &mut self.clients, &manifest)?;
        let netns = open_netns(&manifest)?;
        let persist = match launch::has_persist(&manifest) {
            true => {
                let path = layout::persist_dir(self.config.data_dir, &p.name)
                    .map_err(|e| setup(SetupStep::Prepare, e))?;
                launch::make_persist_dir(path.as_str(), manifest.uid, manifest.gid)
                    .map_err(|e| setup(SetupStep::Prepare, e))?;
                Some(path)
            }
            false => None,
        };
        let cgroup_dir = match self.config.cgroup {
            Some(root) => Some(cgroup::create(root, &p.name, &manifest.cgroups)?),
            None if manifest.cgroups != Default::default() => {
                return Err(Error::CgroupUnavailable.into());
            }
            None => None,
        };
        let prepared = Prepared {
            name: &p.name,
            version: p.version,
            manifest: &manifest,
            init,
            seccomp: kept.seccomp,
            args: request.args,
            env: request.env,
            resources: &resources,
            persist: persist.as_ref().map(|p| p.as_str()),
            netns: netns.as_ref(),
            cgroup: cgroup_dir.as_ref(),
        };
        let spawned = match self
            .containers
            .launcher
            .spawn(self.config.run_dir, &prepared)
        {
            Ok(spawned) => spawned,
            Err(e) => {
                if let (Some(_), Some(root)) = (&cgroup_dir, self.config.cgroup) {
                    let _ = cgroup::remove(root, &p.name);
                }
                return Err(e.into());
            }
        };
        let poll = &self.poll;
        poll.watch_pipe(&spawned.status, slot, Kind::Status);
        poll.watch_pipe(&spawned.exec_report, slot, Kind::Exec);
        for (kind, output) in [
            (Kind::Stdout, &spawned.outputs[0]),
            (Kind::Stderr, &spawned.outputs[1]),
        ] {
            if let Some(fd) = output {
                poll.watch_pipe(fd, slot, kind);
            }
        }
        let memory_events = cgroup_dir.as_ref().and_then(cgroup::open_events);
        if let Some(events) = &memory_events {
            let token = poll::container_token(slot, Kind::MemoryEvents);
            let _ = poll.add(events, token, epoll::EventFlags::PRI);
        }
        let kmsg = [
            manifest.io.stdout == Output::Kmsg,
            manifest.io.stderr == Output::Kmsg,
        ];
        if kmsg.contains(&true) && self.containers.kmsg.is_none() {
            let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
            self.containers.kmsg = rustix::fs::open(c"/dev/kmsg", flags, Mode::empty()).ok();
        }
        let last_exit = table.at(slot).and_then(|c| c.last_exit);
        table.put(Container {
            slot,
            name: p.name,
            version: p.version,
            state: ContainerState::Starting,
            pid: spawned.pid,
            pidfd: Some(spawned.pidfd),
            status: Some(spawned.status),
            exec_report: Some(spawned.exec_report),
            outputs: spawned.outputs,
            kmsg,
            memory_events,
            oom_kills: 0,
            started: now(),
            reported: None,
            failed: None,
            last_exit,
            uses,
            cgroup: cgroup_dir.is_some(),
            // The integrator's bound wins over the package's wish (docs/config.md).
            stop_timeout_ms: manifest
                .stop_timeout_ms
                .min(self.config.limits.max_stop_timeout_ms),
            kill_at: None,
            restart_at: None,
            starter,
            stoppers: Vec::new(),
            stop_requested: false,
            restart: manifest.restart,
            autostart: manifest.autostart,
            restarts,
        });
        Ok(())
    }

    /// `stop`: SIGTERM now, SIGKILL at the timeout (or at an earlier stop's); the reply
    /// comes with the exit, to every stopper. A timeout above `max_stop_timeout_ms` is
    /// refused rather than cut: the client learns at once that its app would not get
    /// the time it asked for (docs/protocol.md).
    #[inline(never)]
    pub(super) fn stop(
        &mut self,
        waiter: Waiter,
        name: &str,
        timeout: Option<u32>,
    ) -> Answer<'static> {
        if timeout.is_some_and(|ms| ms > self.config.limits.max_stop_timeout_ms) {
            return Answer::Now(Reply::Error(Error::InvalidArgument));
        }
        let table = &mut *self.containers.table;
        let Some(c) = table.slot_of(name).and_then(|slot| table.at_mut(slot)) else {
            return Answer::Now(Reply::Error(self.not_running(name)));
        };
        if c.state == ContainerState::Restarting {
            // Waiting to restart: stopping means not restarting.
            c.state = ContainerState::Stopped;
            c.restart_at = None;
            let status = c.last_exit.unwrap_or(ExitStatus::Code(0));
            return Answer::Now(Reply::Stopped(status));
        }
        if !c.alive() {
            return Answer::Now(Reply::Error(Error::NotRunning));
        }
        if c.stoppers.push(waiter).is_err() {
            return Answer::Now(Reply::Error(Error::Full(TableName::Containers)));
        }
        c.begin_stop(after_ms(timeout.unwrap_or(c.stop_timeout_ms)));
        Answer::Later
    }

    /// Why there is no container `name` to act on.
    fn not_running(&self, name: &str) -> Error<'static> {
        if self.store.knows(name) {
            Error::NotRunning
        } else {
            Error::UnknownPackage
        }
    }

    /// `kill`: a signal to the container's app, through its init, which forwards it;
    /// SIGKILL ends the whole container at once. SIGSTOP goes to the app itself: init
    /// can neither block nor forward it, and a stopped init would no longer reap,
    /// forward or report (`container::app`).
    #[inline(never)]
    pub(super) fn kill(&mut self, name: &str, signal: u8) -> Answer<'static> {
        let Some(signal) = Signal::from_named_raw(i32::from(signal)) else {
            return Answer::Now(Reply::Error(Error::InvalidArgument));
        };
        let table = &*self.containers.table;
        let pidfd = table
            .slot_of(name)
            .and_then(|slot| table.at(slot))
            .and_then(|c| c.pidfd.as_ref());
        let Some(pidfd) = pidfd else {
            return Answer::Now(Reply::Error(self.not_running(name)));
        };
        let sent = match signal {
            Signal::STOP => app::signal_app(pidfd, signal),
            _ => rustix::process::pidfd_send_signal(pidfd, signal),
        };
        match sent {
            Ok(()) => Answer::Now(Reply::Ok),
            // No app (not forked yet, or it just ended).
            Err(Errno::SRCH) => Answer::Now(Reply::Error(Error::NotRunning)),
            Err(e) => Answer::Now(Reply::Error(io_error(e))),
        }
    }

    /// `logs`: the ring's content (its last `lines` lines, or all), then `LogEnd`; with
    /// `follow`, new output as it comes until the container ends (then `Ended`). A
    /// follower of a container that is not running gets what there is and how it ended.
    #[inline(never)]
    pub(super) fn logs(
        &mut self,
        id: u32,
        name: &str,
        follow: bool,
        lines: Option<u32>,
    ) -> Answer<'static> {
        let table = &*self.containers.table;
        let Some(slot) = table.slot_of(name) else {
            if self.store.knows(name) {
                // Known but never started: an empty log.
                return Answer::Now(Reply::LogEnd);
            }
            return Answer::Now(Reply::Error(self.not_running(name)));
        };
        // A container waiting to restart comes back: following it goes on.
        let (runs, last_exit) = table.at(slot).map_or((false, None), |c| {
            let runs = c.alive() || c.state == ContainerState::Restarting;
            (runs, c.last_exit)
        });
        let log = table.log(slot);
        Answer::Follow(LogReader {
            id,
            slot,
            generation: log.generation,
            cursor: match lines {
                Some(n) => log.ring.tail(n),
                None => log.ring.first(),
            },
            end: (!follow || !runs).then(|| log.ring.end()),
            ended: if follow && !runs { last_exit } else { None },
        })
    }

    /// Timers: SIGKILL for stops past their timeout, restarts whose delay passed.
    #[inline(never)]
    pub(super) fn container_timers(&mut self) {
        let n = now();
        let table = &mut *self.containers.table;
        for slot in table.due_kills(&n) {
            if let (Some(c), Some(root)) = (table.at(slot), self.config.cgroup)
                && c.cgroup
            {
                cgroup::kill(root, &c.name);
            }
        }
        if self.shutdown {
            return;
        }
        for slot in table.due_restarts(&n) {
            let Some(c) = self.containers.table.at(slot) else {
                continue;
            };
            let (name, version, restarts) = (c.name.clone(), c.version, c.restarts);
            let request = StartRequest {
                name: &name,
                version: Some(version),
                args: None,
                env: &[],
            };
            if let Err(e) = self.start(&request, None, restarts) {
                errln!(
                    "nanostar: restart of {name} failed: {}",
                    crate::text::error_text(&e.error())
                );
                if let Some(c) = self.containers.table.at_mut(slot) {
                    c.state = ContainerState::Stopped;
                }
            }
        }
    }

    /// Starts every package whose manifest says `autostart` (the newest version of each
    /// name); a failing relaxed one is reported, a failing critical one stops the runtime.
    #[inline(never)]
    pub(super) fn autostart(&mut self) {
        let mut names: Vec<(String<MAX_NAME_LEN>, Version), MAX_CONTAINERS> = Vec::new();
        let packages = self.store.packages();
        for p in packages.iter() {
            let newest = packages
                .iter()
                .filter(|q| q.name == p.name)
                .all(|q| q.version <= p.version);
            if newest && !names.is_full() {
                let _ = names.push((p.name.clone(), p.version));
            }
        }
        for (name, version) in names {
            let Some(p) = self.store.find(&name, Some(version)).cloned() else {
                continue;
            };
            let mode = match self.store.open_verified(&p) {
                Ok(opened) => self
                    .store
                    .manifest(&opened)
                    .map_or(Autostart::None, |m| m.autostart),
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
            if let Err(e) = self.start(&request, None, 0) {
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
