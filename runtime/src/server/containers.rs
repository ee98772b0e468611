//! The container requests and events: start, stop, kill, logs, and what happens when a
//! container's init reports or exits. A start reads top to bottom: the store opens and
//! verifies the package once and mounts it from that descriptor, the launcher forks,
//! and the reply goes out when the app's `execve` succeeded. A stop sends SIGTERM and
//! replies when the container is gone, with SIGKILL when the timeout passes first.

use heapless::{String, Vec};
use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, Message, Notification, PackageError, PackageId, Reply,
    SetupStep, Table as TableName,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_MOUNTS, MAX_NAME_LEN, MAX_WIRE_FRAME_LEN};
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
use crate::container::table::{Container, LogReader, LogSlot, Restart, Slot, Waiter};
use crate::container::{REPORT_LEN, Report, cgroup, init};
use crate::errln;
use crate::layout;
use crate::limits::{KMSG_RECORD_LEN, LOG_READ_SLICE, MAX_CONTAINERS};
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

/// A container's two report pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportPipe {
    /// From init.
    Status,
    /// From the app before its `execve`.
    Exec,
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
            stop_timeout_ms: manifest.stop_timeout_ms,
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

    /// `stop`: SIGTERM now, SIGKILL at the timeout; the reply comes with the exit.
    #[inline(never)]
    pub(super) fn stop(
        &mut self,
        waiter: Waiter,
        name: &str,
        timeout: Option<u32>,
    ) -> Answer<'static> {
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
        let timeout = timeout.unwrap_or(c.stop_timeout_ms);
        c.begin_stop(timeout);
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

    /// `kill`: a signal to the container's app (through its init, which forwards it);
    /// SIGKILL ends the whole container at once.
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
        match rustix::process::pidfd_send_signal(pidfd, signal) {
            Ok(()) => Answer::Now(Reply::Ok),
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

    /// The followers of container `slot` stop at what its ring holds now and are told
    /// how it ended.
    fn end_followers(&mut self, slot: Slot, status: ExitStatus) {
        let end = self.containers.table.log(slot).ring.end();
        for c in self.clients.iter_mut() {
            if let Some(r) = c
                .logs
                .as_mut()
                .filter(|r| r.slot == slot && r.end.is_none())
            {
                r.end = Some(end);
                r.ended = Some(status);
            }
        }
    }

    /// Sends every log reader what it has not seen, as far as its queue has room: a slow
    /// reader waits (and may lose what the ring overwrote), it is never dropped for it.
    #[inline(never)]
    pub(super) fn pump_logs(&mut self) {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let table = &*self.containers.table;
        for client in self.clients.iter_mut() {
            while let Some(reader) = client.logs.filter(|_| client.has_room() && !client.closing) {
                let log = table.log(reader.slot);
                if let Some((len, next)) = encode_log_piece(log, &reader, &mut wire) {
                    client.queue(&wire[..len]);
                    if let Some(r) = client.logs.as_mut() {
                        r.cursor = next;
                    }
                    continue;
                }
                let gone = log.generation != reader.generation;
                if gone || reader.end.is_some() {
                    client.logs = None;
                    let last = match reader.ended {
                        Some(status) if !gone => Reply::Ended(status),
                        _ => Reply::LogEnd,
                    };
                    client.reply(reader.id, last);
                }
                break;
            }
        }
    }

    /// Whether a log reader could get more now: the loop must not sleep then.
    pub(super) fn logs_pending(&self) -> bool {
        self.clients.iter().any(|c| {
            let Some(r) = c.logs else {
                return false;
            };
            let log = self.containers.table.log(r.slot);
            let more =
                r.end.is_some() || log.generation != r.generation || log.ring.end() > r.cursor;
            c.has_room() && !c.closing && more
        })
    }

    /// Something happened on a container's descriptor.
    pub(super) fn container_event(&mut self, token: u64) {
        let Some((slot, kind)) = poll::container_of(token).filter(|(s, _)| *s < MAX_CONTAINERS)
        else {
            return;
        };
        match kind {
            Kind::Status => {
                if self.drain_pipe(slot, ReportPipe::Status) {
                    // Init is gone.
                    self.try_reap(slot);
                }
            }
            Kind::Stdout => self.read_output(slot, 0, LOG_READ_SLICE),
            Kind::Stderr => self.read_output(slot, 1, LOG_READ_SLICE),
            Kind::MemoryEvents => self.check_oom(slot),
            Kind::Exec => self.exec_event(slot),
        }
    }

    /// Moves up to `limit` bytes of a container's output into its ring (and /dev/kmsg).
    #[inline(never)]
    fn read_output(&mut self, slot: Slot, stream: usize, limit: usize) {
        let mut buf = [0u8; LOG_READ_SLICE];
        let mut done = 0;
        while done < limit {
            let Some((c, log)) = self.containers.table.with_log(slot) else {
                return;
            };
            let Some(fd) = c.outputs[stream].as_ref() else {
                return;
            };
            let want = (limit - done).min(buf.len());
            match rustix::io::read(fd, &mut buf[..want]) {
                Ok(0) => {
                    // Every writer is gone.
                    if let Some(fd) = c.outputs[stream].take() {
                        self.poll.delete(&fd);
                    }
                    return;
                }
                Ok(n) => {
                    log.ring.push(&buf[..n]);
                    done += n;
                    if c.kmsg[stream]
                        && let Some(kmsg) = self.containers.kmsg.as_ref()
                    {
                        copy_to_kmsg(kmsg, &c.name, &buf[..n]);
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    /// The kernel changed the container's `memory.events`: an OOM kill is a notification
    /// (the container may well go on).
    fn check_oom(&mut self, slot: Slot) {
        let Some(c) = self.containers.table.at_mut(slot) else {
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
        self.clients.notify(Notification::OutOfMemory(PackageId {
            name: &c.name,
            version: c.version,
        }));
    }

    /// Takes every report waiting on one of a container's report pipes (init's failure
    /// or the app's end on the status pipe, the app's failure on the exec pipe); `true`
    /// once the pipe has ended, which also closes it.
    fn drain_pipe(&mut self, slot: Slot, pipe: ReportPipe) -> bool {
        let Some(c) = self.containers.table.at_mut(slot) else {
            return false;
        };
        loop {
            let fd = match pipe {
                ReportPipe::Status => &mut c.status,
                ReportPipe::Exec => &mut c.exec_report,
            };
            let Some(open) = fd.as_ref() else {
                return false;
            };
            let mut record = [0u8; REPORT_LEN];
            match rustix::io::read(open, &mut record) {
                Ok(REPORT_LEN) => match Report::decode(&record) {
                    Some(Report::Failed(step, errno)) => c.failed = Some((step, errno)),
                    Some(Report::Exited(status)) => c.reported = Some(status),
                    None => {}
                },
                Ok(_) => {
                    if let Some(fd) = fd.take() {
                        self.poll.delete(&fd);
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
    fn exec_event(&mut self, slot: Slot) {
        if !self.drain_pipe(slot, ReportPipe::Exec) {
            return;
        }
        self.drain_pipe(slot, ReportPipe::Status);
        let Some(c) = self.containers.table.at_mut(slot) else {
            return;
        };
        if c.failed.is_some() || c.state != ContainerState::Starting {
            return;
        }
        // The app runs: the start's reply and notification.
        c.state = ContainerState::Running;
        c.started = now();
        if let Some(w) = c.starter.take() {
            self.clients.reply(w.client, w.id, Reply::Ok);
        }
        self.clients.notify(Notification::Started {
            package: PackageId {
                name: &c.name,
                version: c.version,
            },
            pid: c.pid,
        });
    }

    /// SIGCHLD: reap every exited child: containers' inits (then finish the container)
    /// and, as PID 1, orphans re-parented to the runtime.
    pub(super) fn reap_children(&mut self) {
        while let Ok(Some((pid, status))) =
            rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
        {
            let pid = pid.as_raw_nonzero().get() as u32;
            if let Some(slot) = self.containers.table.live_with_pid(pid) {
                self.finish(slot, init::exit_status(status));
            }
        }
    }

    /// If init of container `slot` exited: collect it and finish the container.
    fn try_reap(&mut self, slot: Slot) {
        let Some(c) = self.containers.table.at(slot).filter(|c| c.alive()) else {
            return;
        };
        let Some(pid) = rustix::process::Pid::from_raw(c.pid as i32) else {
            return;
        };
        if let Ok(Some((_, status))) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG)
        {
            self.finish(slot, init::exit_status(status));
        }
    }

    /// The container's init is gone: drain its output, tell everyone how it ended,
    /// clean up, and restart it if its policy says so.
    #[inline(never)]
    fn finish(&mut self, slot: Slot, init_status: ExitStatus) {
        // The app's and init's last reports may still be in their pipes (SIGCHLD can
        // come first), and what is left in the output pipes (at most their capacity):
        // the last words count. (An app that ran and ended before its exec pipe's end
        // was read still counts as started.)
        self.exec_event(slot);
        self.drain_pipe(slot, ReportPipe::Status);
        for stream in 0..2 {
            self.read_output(slot, stream, 1 << 20);
        }
        let root = self.config.cgroup;
        let shutting_down = self.shutdown;
        let Some(c) = self.containers.table.at_mut(slot) else {
            return;
        };
        let pipes = c
            .outputs
            .iter_mut()
            .chain([&mut c.status, &mut c.exec_report]);
        for fd in pipes {
            if let Some(fd) = fd.take() {
                self.poll.delete(&fd);
            }
        }
        c.pidfd = None;
        c.kill_at = None;
        // An OOM kill the watch has not reported yet (the last one often ends the app).
        let oom = c
            .memory_events
            .as_ref()
            .is_some_and(|events| cgroup::oom_kills(events) > c.oom_kills);
        if let Some(events) = c.memory_events.take() {
            self.poll.delete(&events);
        }
        if c.cgroup {
            if let Some(root) = root {
                cgroup::kill(root, &c.name);
                let _ = cgroup::remove(root, &c.name);
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
            self.clients
                .reply(w.client, w.id, Reply::Error(Error::Setup { step, errno }));
            for w in stoppers {
                self.clients
                    .reply(w.client, w.id, Reply::Error(Error::NotRunning));
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
            c.restart_decision(status)
        };
        let restart = policy == Restart::Yes;
        let restarts = c.restarts;
        if restart {
            let delay = c.backoff_ms();
            c.restarts += 1;
            c.state = ContainerState::Restarting;
            c.restart_at = Some(after_ms(delay));
        }
        let critical = c.autostart == Autostart::Critical && !c.stop_requested;
        if let Some(w) = starter {
            let interrupted = setup(SetupStep::Exec, Errno::INTR);
            self.clients
                .reply(w.client, w.id, Reply::Error(interrupted));
        }
        for w in stoppers {
            self.clients.reply(w.client, w.id, Reply::Stopped(status));
        }
        let package = PackageId {
            name: &c.name,
            version: c.version,
        };
        if oom {
            self.clients.notify(Notification::OutOfMemory(package));
        }
        self.clients
            .notify(Notification::Exited { package, status });
        if policy == Restart::GaveUp {
            self.clients.notify(Notification::GaveUp {
                package,
                restarts,
                status,
            });
        }
        if critical && !restart && !shutting_down {
            errln!(
                "nanostar: critical container {} ended; shutting down",
                c.name
            );
            self.shutdown = true;
        }
        self.end_followers(slot, status);
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

/// One kernel log record per line, prefixed by the container's name.
fn copy_to_kmsg(kmsg: &OwnedFd, name: &str, bytes: &[u8]) {
    let mut record = [0u8; KMSG_RECORD_LEN];
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

/// The reader's next piece of the log as a `Log` reply in `wire`: its length and the
/// reader's next cursor; `None` when there is nothing (more) for it.
fn encode_log_piece(log: &LogSlot, reader: &LogReader, wire: &mut [u8]) -> Option<(usize, u64)> {
    if log.generation != reader.generation {
        return None;
    }
    let limit = match reader.end {
        Some(end) => (end.saturating_sub(reader.cursor) as usize).min(MAX_CHUNK_LEN),
        None => MAX_CHUNK_LEN,
    };
    let piece = log.ring.read(reader.cursor, limit).filter(|_| limit > 0)?;
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
