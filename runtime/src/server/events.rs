//! What happens when a container's descriptors speak: init's and the app's reports
//! (running, failed, ended), its output into the log ring (and `/dev/kmsg`), OOM kills,
//! the reap and the restart policy; and the log readers fed from the rings.

use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, Message, Notification, PackageId, Reply, SetupStep,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::manifest::Autostart;
use rustix::fd::OwnedFd;
use rustix::io::Errno;

use super::Runtime;
use super::errors::setup;
use super::poll::{self, Kind};
use crate::container::table::{LogReader, LogSlot, Restart, Slot};
use crate::container::{REPORT_LEN, Report, cgroup, init};
use crate::errln;
use crate::limits::{KMSG_RECORD_LEN, LOG_READ_SLICE, MAX_CONTAINERS};
use crate::time::{after_ms, now};

/// A container's two report pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportPipe {
    /// From init.
    Status,
    /// From the app before its `execve`.
    Exec,
}

impl<'c> Runtime<'c> {
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
