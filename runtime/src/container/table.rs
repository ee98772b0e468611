//! The container table: every container the runtime knows (running, or stopped with its
//! last exit and its log), on a slot whose index names its descriptors in the poll set.
//! All zeros, so it lives in `.bss` and costs RAM only as it is used. Pure state: the
//! server registers descriptors and answers clients; the table decides slots, stops,
//! restarts and timers.

use heapless::{String, Vec};
use nanostar_protocol::console::{ContainerInfo, ContainerState, ExitStatus, SetupStep};
use nanostar_protocol::npk::manifest::{Autostart, RestartMode, RestartPolicy};
use nanostar_protocol::version::Version;
use rustix::event::Timespec;
use rustix::fd::OwnedFd;
use rustix::process::Signal;

use super::logs::LogRing;
use crate::limits::{MAX_CONTAINERS, MAX_MOUNTS, MAX_NAME_LEN, MAX_STOP_WAITERS};
use crate::time::{after_ms, earliest, is_before, ms_since};

/// A container's place in the table (and in the poll set's tokens).
pub type Slot = usize;

/// A request waiting for an answer: client token and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// The client's token.
    pub client: u64,
    /// The request's id.
    pub id: u32,
}

/// One container's log ring, which outlives the run so `logs` works after an exit.
pub struct LogSlot {
    /// The output.
    pub ring: LogRing,
    /// Counts the containers the slot has held, so a log reader notices when its
    /// container's slot was given to another package.
    pub generation: u32,
}

/// A client reading a container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogReader {
    /// The `logs` request's id.
    pub id: u32,
    /// The container's slot.
    pub slot: Slot,
    /// The slot's generation when the reader began.
    pub generation: u32,
    /// The next byte to send.
    pub cursor: u64,
    /// Where a plain `logs` ends; `None` follows.
    pub end: Option<u64>,
    /// How the followed container ended: sent as `Ended` once `end` is reached.
    pub ended: Option<ExitStatus>,
}

/// A container the runtime knows: running, or stopped with its last exit.
pub struct Container {
    /// Its slot.
    pub slot: Slot,
    /// Its package's name.
    pub name: String<MAX_NAME_LEN>,
    /// Its package's version.
    pub version: Version,
    /// Where it is in its life.
    pub state: ContainerState,
    /// Its init's pid (0 when not running).
    pub pid: u32,
    /// Its init's pidfd: present while init lives.
    pub pidfd: Option<OwnedFd>,
    /// Init's report pipe (read end).
    pub status: Option<OwnedFd>,
    /// The exec pipe (read end): ends when the app's `execve` succeeded.
    pub exec_report: Option<OwnedFd>,
    /// stdout and stderr pipes (read ends), when they go to the log.
    pub outputs: [Option<OwnedFd>; 2],
    /// Whether each output is also copied to /dev/kmsg.
    pub kmsg: [bool; 2],
    /// Its cgroup's `memory.events`, watched for OOM kills.
    pub memory_events: Option<OwnedFd>,
    /// OOM kills reported so far.
    pub oom_kills: u64,
    /// When it started (when its app began to run, once it runs).
    pub started: Timespec,
    /// How init said the app ended.
    pub reported: Option<ExitStatus>,
    /// The setup step init said failed.
    pub failed: Option<(SetupStep, u16)>,
    /// How its last run ended.
    pub last_exit: Option<ExitStatus>,
    /// Resource packages its mounts use.
    pub uses: Vec<(String<MAX_NAME_LEN>, Version), MAX_MOUNTS>,
    /// It has a cgroup of its own.
    pub cgroup: bool,
    /// The manifest's stop timeout, at most the configuration's `max_stop_timeout_ms`.
    pub stop_timeout_ms: u32,
    /// SIGKILL when this passes (while stopping).
    pub kill_at: Option<Timespec>,
    /// Start again when this passes (restart policy).
    pub restart_at: Option<Timespec>,
    /// The start request waiting for "running".
    pub starter: Option<Waiter>,
    /// Stop requests waiting for the exit.
    pub stoppers: Vec<Waiter, MAX_STOP_WAITERS>,
    /// A stop was asked for: no restart.
    pub stop_requested: bool,
    /// The manifest's restart policy.
    pub restart: RestartPolicy,
    /// The manifest's autostart mode.
    pub autostart: Autostart,
    /// Restarts so far in this series.
    pub restarts: u32,
}

impl Container {
    /// Whether its init still lives.
    pub fn alive(&self) -> bool {
        self.pidfd.is_some()
    }

    /// SIGTERM to the container's init (which forwards it to the app), once, and
    /// SIGCONT after it: an app stopped by `kill NAME STOP` acts on a SIGTERM only once
    /// it runs again (the kernel just queues it), so without SIGCONT a stopped app
    /// would always wait for the SIGKILL. SIGKILL at `deadline` (see
    /// [`Table::due_kills`]). A container already stopping keeps the
    /// earlier of its deadline and this one: a later stop may hasten the kill, never
    /// postpone it, so no stop can hold a container longer than the shortest one asked.
    /// (Once the SIGKILL went out there is no deadline left, and a later stop arms
    /// another: a second SIGKILL to a dying init does nothing.)
    pub fn begin_stop(&mut self, deadline: Timespec) {
        self.stop_requested = true;
        self.restart_at = None;
        if self.state != ContainerState::Stopping {
            self.state = ContainerState::Stopping;
            if let Some(pidfd) = self.pidfd.as_ref() {
                let _ = rustix::process::pidfd_send_signal(pidfd, Signal::TERM);
                let _ = rustix::process::pidfd_send_signal(pidfd, Signal::CONT);
            }
            self.kill_at = Some(deadline);
        } else {
            self.kill_at = earliest(self.kill_at, Some(deadline));
        }
    }

    /// What the restart policy does after an exit the runtime did not ask for.
    pub fn restart_decision(&self, status: ExitStatus) -> Restart {
        let mode_says = match self.restart.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => status != ExitStatus::Code(0),
            RestartMode::Always => true,
        };
        let left = self
            .restart
            .max_restarts
            .is_none_or(|max| self.restarts < max);
        match (mode_says, left) {
            (false, _) => Restart::No,
            (true, true) => Restart::Yes,
            (true, false) => Restart::GaveUp,
        }
    }

    /// The delay before restart number `restarts + 1`: doubled each time, capped.
    pub fn backoff_ms(&self) -> u32 {
        let initial = self.restart.backoff_initial_ms;
        let factor = 1u32.checked_shl(self.restarts.min(31)).unwrap_or(u32::MAX);
        initial
            .saturating_mul(factor)
            .min(self.restart.backoff_max_ms.max(initial))
    }

    /// What `list` and `inspect` show.
    pub fn info(&self) -> ContainerInfo {
        let runs = self.alive() && self.state != ContainerState::Starting;
        ContainerInfo {
            state: self.state,
            pid: if self.alive() { self.pid } else { 0 },
            uptime_ms: if runs { ms_since(&self.started) } else { 0 },
            last_exit: self.last_exit,
            restarts: self.restarts,
        }
    }
}

/// What the restart policy does after an exit the runtime did not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The policy does not restart for this exit.
    No,
    /// Start it again after the back-off.
    Yes,
    /// The policy would, but its restarts are used up.
    GaveUp,
}

/// The container table and the log rings.
pub struct Table {
    list: Vec<Container, MAX_CONTAINERS>,
    logs: [LogSlot; MAX_CONTAINERS],
}

impl Table {
    /// Empty.
    pub const fn new() -> Table {
        Table {
            list: Vec::new(),
            logs: [const {
                LogSlot {
                    ring: LogRing::new(),
                    generation: 0,
                }
            }; MAX_CONTAINERS],
        }
    }

    /// The container on `slot`.
    pub fn at(&self, slot: Slot) -> Option<&Container> {
        self.list.iter().find(|c| c.slot == slot)
    }

    /// The container on `slot`, to change.
    pub fn at_mut(&mut self, slot: Slot) -> Option<&mut Container> {
        self.list.iter_mut().find(|c| c.slot == slot)
    }

    /// The container on `slot` and its log, to change both.
    pub fn with_log(&mut self, slot: Slot) -> Option<(&mut Container, &mut LogSlot)> {
        let c = self.list.iter_mut().find(|c| c.slot == slot)?;
        Some((c, self.logs.get_mut(slot)?))
    }

    /// The log of `slot`.
    pub fn log(&self, slot: Slot) -> &LogSlot {
        &self.logs[slot]
    }

    /// The slot of the container called `name`.
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.list.iter().find(|c| c.name == name).map(|c| c.slot)
    }

    /// The container of package `name` `version`.
    pub fn of_package(&self, name: &str, version: &Version) -> Option<&Container> {
        self.list
            .iter()
            .find(|c| c.name == name && c.version == *version)
    }

    /// The live container whose init has `pid`.
    pub fn live_with_pid(&self, pid: u32) -> Option<Slot> {
        self.list
            .iter()
            .find(|c| c.alive() && c.pid == pid)
            .map(|c| c.slot)
    }

    /// Whether any container still has a process.
    pub fn any_alive(&self) -> bool {
        self.list.iter().any(Container::alive)
    }

    /// The containers that still have a process.
    pub fn alive(&self) -> impl Iterator<Item = &Container> {
        self.list.iter().filter(|c| c.alive())
    }

    /// Who uses the package `name` `version`: a live container of it, or one mounting it
    /// as a resource.
    pub fn user_of(&self, name: &str, version: &Version) -> Option<(&str, Version)> {
        self.list
            .iter()
            .filter(|c| c.alive())
            .find(|c| {
                (c.name == name && c.version == *version)
                    || c.uses.iter().any(|(n, v)| n == name && v == version)
            })
            .map(|c| (c.name.as_str(), c.version))
    }

    /// A slot for a container called `name`: its own, a free one, or the one of the
    /// container stopped the longest (which is forgotten, with its log). Its log starts
    /// empty, under a new generation.
    pub fn slot_for(&mut self, name: &str) -> Option<Slot> {
        if let Some(slot) = self.slot_of(name) {
            return Some(slot);
        }
        let free = (0..MAX_CONTAINERS).find(|s| self.at(*s).is_none());
        let slot = match free {
            Some(slot) => slot,
            None => {
                let oldest = self
                    .list
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.state == ContainerState::Stopped)
                    .min_by_key(|(_, c)| (c.started.tv_sec, c.started.tv_nsec))
                    .map(|(i, _)| i)?;
                self.list.swap_remove(oldest).slot
            }
        };
        let log = &mut self.logs[slot];
        log.ring.clear();
        log.generation = log.generation.wrapping_add(1);
        Some(slot)
    }

    /// Puts `container` on its slot (from [`Table::slot_for`]), replacing what was there.
    pub fn put(&mut self, container: Container) {
        match self.at_mut(container.slot) {
            Some(c) => *c = container,
            // Cannot fail: `slot_for` made room (a free slot means a free list entry).
            None => {
                let _ = self.list.push(container);
            }
        }
    }

    /// Stops every container (shutdown), each with its own timeout but SIGKILL at
    /// `kill_by` at the latest, also for those a stop request is stopping already; none
    /// restarts.
    pub fn stop_all(&mut self, kill_by: Timespec) {
        for c in self.list.iter_mut() {
            c.restart_at = None;
            if c.state == ContainerState::Restarting {
                c.state = ContainerState::Stopped;
            }
            if c.alive() {
                let own = after_ms(c.stop_timeout_ms);
                c.begin_stop(if is_before(&kill_by, &own) {
                    kill_by
                } else {
                    own
                });
            }
        }
    }

    /// The earliest container timer.
    pub fn next_timer(&self) -> Option<Timespec> {
        self.list
            .iter()
            .flat_map(|c| [c.kill_at, c.restart_at])
            .fold(None, earliest)
    }

    /// Sends SIGKILL to the containers whose stop timed out before `now`; returns their
    /// slots, for the cgroup kill (the caller knows the cgroup root).
    pub fn due_kills(&mut self, now: &Timespec) -> Vec<Slot, MAX_CONTAINERS> {
        let mut due = Vec::new();
        for c in self.list.iter_mut() {
            if c.kill_at.is_some_and(|t| is_before(&t, now)) {
                c.kill_at = None;
                if let Some(pidfd) = c.pidfd.as_ref() {
                    let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
                }
                // Cannot overflow: one per container.
                let _ = due.push(c.slot);
            }
        }
        due
    }

    /// The containers whose restart delay passed before `now` (their timer is cleared).
    pub fn due_restarts(&mut self, now: &Timespec) -> Vec<Slot, MAX_CONTAINERS> {
        let mut due = Vec::new();
        for c in self.list.iter_mut() {
            if c.restart_at.is_some_and(|t| is_before(&t, now)) {
                c.restart_at = None;
                let _ = due.push(c.slot);
            }
        }
        due
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container on `slot` as a start leaves it once the app runs, with the manifest's
    /// timeout `stop_timeout_ms`; without an init (see `with_pidfd`).
    fn running(slot: Slot, stop_timeout_ms: u32) -> Container {
        Container {
            slot,
            name: String::try_from("app").unwrap(),
            version: Version::new(1, 0, 0),
            state: ContainerState::Running,
            pid: 0,
            pidfd: None,
            status: None,
            exec_report: None,
            outputs: [None, None],
            kmsg: [false; 2],
            memory_events: None,
            oom_kills: 0,
            started: crate::time::now(),
            reported: None,
            failed: None,
            last_exit: None,
            uses: Vec::new(),
            cgroup: false,
            stop_timeout_ms,
            kill_at: None,
            restart_at: None,
            starter: None,
            stoppers: Vec::new(),
            stop_requested: false,
            restart: RestartPolicy::default(),
            autostart: Autostart::None,
            restarts: 0,
        }
    }

    /// `c` with the pidfd of `child` as its init's: `alive()` needs one, and the stops
    /// signal it.
    fn with_pidfd(mut c: Container, child: &std::process::Child) -> Container {
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        c.pidfd =
            Some(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap());
        c
    }

    #[test]
    fn a_later_stop_hastens_the_kill_and_never_postpones_it() {
        let mut c = running(0, 5_000);
        c.begin_stop(after_ms(600_000));
        assert_eq!(c.state, ContainerState::Stopping);
        let first = c.kill_at.unwrap();
        // Shorter: the kill moves up.
        let shorter = after_ms(200);
        c.begin_stop(shorter);
        assert_eq!(c.kill_at, Some(shorter));
        assert!(is_before(&c.kill_at.unwrap(), &first));
        // Longer: it stays.
        c.begin_stop(after_ms(600_000));
        assert_eq!(c.kill_at, Some(shorter));
        assert!(c.stop_requested);
    }

    #[test]
    fn shutdown_kills_by_its_deadline_whatever_stops_are_pending() {
        // `sleep` stands in for inits: the table sends SIGTERM to a container it starts
        // stopping, which ends them.
        let mut children: std::vec::Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("600")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut table = Table::new();
        // Slot 0: being stopped by a request with a long timeout; slot 1: running with
        // a long manifest timeout; slot 2: running with a short one.
        for (slot, timeout) in [(0, 600_000), (1, 600_000), (2, 100)] {
            let c = with_pidfd(running(slot, timeout), &children[slot]);
            table.put(c);
        }
        table.at_mut(0).unwrap().begin_stop(after_ms(600_000));
        let kill_by = after_ms(1_000);
        table.stop_all(kill_by);
        let kill_at = |t: &Table, slot| t.at(slot).unwrap().kill_at.unwrap();
        assert_eq!(kill_at(&table, 0), kill_by);
        assert_eq!(kill_at(&table, 1), kill_by);
        assert!(is_before(&kill_at(&table, 2), &kill_by));
        assert!(
            table
                .list
                .iter()
                .all(|c| c.state == ContainerState::Stopping)
        );
        assert_eq!(table.next_timer(), Some(kill_at(&table, 2)));
        // Past the deadline every one of them is killed.
        let later = after_ms(2_000);
        assert_eq!(table.due_kills(&later).as_slice(), [0, 1, 2]);
        for child in &mut children {
            let status = child.wait().unwrap();
            assert!(!status.success());
        }
    }
}
