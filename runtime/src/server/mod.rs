//! The runtime's one event loop (docs/design.md, decision 2): the console socket and its
//! clients (and the console device, when configured), signals through a `signalfd`
//! (SIGCHLD reaps containers), containers' report and output pipes, install deadlines and
//! container timers, on one epoll set. Nothing blocks: every descriptor is non-blocking,
//! an install is written chunk by chunk as frames arrive, a container start forks and
//! returns (its reply goes out when the container's init reports), and a client that does
//! not read its replies is dropped rather than allowed to stall the loop or grow memory.
//!
//! The state has one owner per concern, each a field of [`Runtime`] that the others do
//! not reach into:
//! - [`clients`]: connections, their queues, replies and notifications (the outbox);
//! - the package store ([`crate::store`]): repositories, installs, mounts;
//! - the containers ([`crate::container`]): the table, the launcher, the logs;
//! - [`poll`]: the epoll set and what its tokens mean.
//!
//! [`dispatch`] decodes a request, checks its permission and calls one handler
//! ([`packages`], [`containers`]), which returns its [`dispatch::Answer`]: a reply now, or
//! later through a waiter that a container event ([`events`]) answers. [`errors`] is the
//! one conversion to the wire's errors.
//!
//! Handlers and other functions with large stack buffers are `#[inline(never)]`: inlined
//! into the loop, their buffers would be part of the loop's frame and stack-probed (made
//! resident) at start-up even when the handler never runs; apart, a buffer costs RAM only
//! while its function runs (docs/design.md, "Budgets": idle RSS).

// No allocator to box a large error or reply in: a `Refusal` or an `Answer` lives on
// the stack for one reply, moved once.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod clients;
pub mod containers;
pub mod dispatch;
pub mod errors;
pub mod events;
pub mod packages;
pub mod poll;

use core::fmt::Write as _;
use core::mem::MaybeUninit;

use heapless::{String, Vec};
use nanostar_protocol::console::Notification;
use rustix::event::{Timespec, epoll};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::config::Config;
use crate::container::Containers;
use crate::container::cgroup;
use crate::container::launch::Launcher;
use crate::container::table::Table;
use crate::limits::{
    LISTEN_BACKLOG, MAX_CLIENTS, POLL_EVENTS, SCRATCH_LEN, SHUTDOWN_KILL_GRACE_MS,
};
use crate::store::Store;
use crate::store::repository::Packages;
use crate::sys::once::TakeOnce;
use crate::sys::process::Exec;
use crate::sys::signals::{self, SignalSet};
use crate::{errln, fs, layout, time};
use clients::{Client, Clients};
use poll::Poll;

use linux_raw_sys::general::{SIGCHLD, SIGINT, SIGTERM};

/// The runtime's tables: static, so they cost no stack and no resident memory until used
/// (`sys::once`). `run` takes them, so it runs once per process.
static SCRATCH: TakeOnce<[u8; SCRATCH_LEN]> = TakeOnce::new([0; SCRATCH_LEN]);
static CLIENTS: TakeOnce<Vec<Client, MAX_CLIENTS>> = TakeOnce::new(Vec::new());
static PACKAGES: TakeOnce<Packages> = TakeOnce::new(Packages::new());
static CONTAINERS: TakeOnce<Table> = TakeOnce::new(Table::new());
static EXEC: TakeOnce<Exec> = TakeOnce::new(Exec::new());
static LAUNCH: TakeOnce<[u8; SCRATCH_LEN]> = TakeOnce::new([0; SCRATCH_LEN]);

/// Why the runtime could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// A key file named in the configuration cannot be read.
    Key(usize),
    /// A directory of the configuration cannot be created.
    Directory(Errno),
    /// The console socket cannot be set up.
    Socket(Errno),
    /// epoll or the signalfd cannot be set up.
    Setup(Errno),
    /// Another runtime (this pid, 0 if unknown) holds the run directory's lock.
    AlreadyRunning(u32),
    /// The run directory's lock file cannot be opened or locked.
    Lock(Errno),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Key(repo) => write!(
                f,
                "a key file of repository #{} cannot be read (run check-config)",
                repo + 1
            ),
            StartError::Directory(e) => write!(
                f,
                "cannot create a directory of the configuration: {}",
                fs::errno_text(*e)
            ),
            StartError::Socket(e) => write!(
                f,
                "cannot set up the console socket: {}",
                fs::errno_text(*e)
            ),
            StartError::Setup(e) => {
                write!(f, "cannot set up the event loop: {}", fs::errno_text(*e))
            }
            StartError::AlreadyRunning(0) => f.write_str(
                "another runtime already uses this run directory (its lock file is held)",
            ),
            StartError::AlreadyRunning(pid) => write!(
                f,
                "another runtime (pid {pid}) already uses this run directory; stop it first"
            ),
            StartError::Lock(e) => write!(
                f,
                "cannot lock the run directory ({}): {}",
                layout::LOCK_FILE,
                fs::errno_text(*e)
            ),
        }
    }
}

/// The runtime's tables, lent to it: [`run`] takes the static ones (once per process);
/// the handler tests lend their own.
pub struct Tables<'c> {
    scratch: &'c mut [u8; SCRATCH_LEN],
    clients: &'c mut Vec<Client, MAX_CLIENTS>,
    packages: &'c mut Packages,
    containers: &'c mut Table,
    exec: &'c mut Exec,
    launch: &'c mut [u8; SCRATCH_LEN],
}

impl Tables<'static> {
    /// The static tables; `None` if they were taken before.
    fn take_static() -> Option<Tables<'static>> {
        Some(Tables {
            scratch: SCRATCH.take()?,
            clients: CLIENTS.take()?,
            packages: PACKAGES.take()?,
            containers: CONTAINERS.take()?,
            exec: EXEC.take()?,
            launch: LAUNCH.take()?,
        })
    }
}

/// The runtime's state: one owner per concern (see the module's documentation).
pub struct Runtime<'c> {
    config: &'c Config<'c>,
    clients: Clients<'c>,
    store: Store<'c>,
    containers: Containers<'c>,
    poll: Poll,
    /// A shutdown was asked for (signal, request, a critical container's end).
    shutdown: bool,
    /// Once the shutdown stopped every container: when it stops waiting for them, a
    /// grace after their SIGKILL at the end of `shutdown_timeout_ms`.
    give_up_at: Option<Timespec>,
    /// The run directory's lock, held (`flock`) for the runtime's life.
    _lock: OwnedFd,
}

/// Runs the runtime with `config` until SIGTERM, SIGINT or a shutdown request; returns
/// after everything is unmounted.
pub fn run(config: &Config) -> Result<(), StartError> {
    let signal_set = SignalSet::of(&[SIGTERM, SIGINT, SIGCHLD]);
    signals::block(signal_set).map_err(StartError::Setup)?;
    let signal_fd = signals::signalfd(signal_set).map_err(StartError::Setup)?;
    let tables = Tables::take_static().ok_or(StartError::Setup(Errno::BUSY))?;
    let mut runtime = Runtime::new(config, tables)?;
    runtime.store.scan();
    let listener = listen(config.socket)?;
    let readable = epoll::EventFlags::IN;
    let poll = &runtime.poll;
    poll.add(&listener, poll::LISTENER, readable)
        .map_err(StartError::Setup)?;
    poll.add(&signal_fd, poll::SIGNALS, readable)
        .map_err(StartError::Setup)?;
    if let Some(device) = config.console_device {
        runtime.clients.add_device(device, &runtime.poll);
    }
    errln!(
        "nanostar: serving {} packages on {}",
        runtime.store.packages().len(),
        config.socket
    );
    runtime.autostart();
    while !runtime.shutdown || runtime.containers.table.any_alive() {
        if runtime.shutdown && runtime.give_up_at.is_none() {
            runtime.stop_all();
        }
        if runtime.gave_up() {
            break;
        }
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); POLL_EVENTS];
        let timeout = runtime.next_timeout();
        let ready = match runtime.poll.wait(&mut events, timeout.as_ref()) {
            Ok(ready) => ready,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(StartError::Setup(e)),
        };
        for event in ready.iter() {
            match event.data.u64() {
                poll::LISTENER => runtime.accept_clients(&listener),
                poll::SIGNALS => runtime.read_signals(&signal_fd),
                token if token & poll::CONTAINER != 0 => runtime.container_event(token),
                token => runtime.client_event(token, event.flags),
            }
        }
        runtime.pump_uploads();
        runtime.expire_uploads();
        runtime.expire_clients();
        runtime.container_timers();
        runtime.pump_logs();
        runtime.clients.settle_all(&runtime.poll);
    }
    runtime.clients.notify(Notification::ShuttingDown);
    runtime.clients.flush_all();
    runtime.store.unmount_all();
    let _ = rustix::fs::unlink(config.socket);
    errln!("nanostar: shut down");
    Ok(())
}

/// Binds the console socket, replacing a stale one left by a runtime that died.
fn listen(path: &str) -> Result<OwnedFd, StartError> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(StartError::Socket)?;
    let addr = SocketAddrUnix::new(path).map_err(StartError::Socket)?;
    match rustix::fs::unlink(path) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(StartError::Socket(e)),
    }
    rustix::net::bind(&socket, &addr).map_err(StartError::Socket)?;
    // Anyone may connect; what a peer may do depends on its credentials (SO_PEERCRED).
    rustix::fs::chmod(path, Mode::from_raw_mode(0o666)).map_err(StartError::Socket)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG).map_err(StartError::Socket)?;
    Ok(socket)
}

/// Takes `RUN_DIR/lock` (`flock(LOCK_EX | LOCK_NB)`) and writes this runtime's pid into
/// it; a runtime that holds it already is named by the pid it wrote. The kernel drops
/// the lock when the runtime dies, however it dies.
fn lock_run_dir(run_dir: &str) -> Result<OwnedFd, StartError> {
    let mut path = layout::lock_file(run_dir).map_err(StartError::Lock)?;
    let fd = rustix::fs::open(
        path.c_str().map_err(StartError::Lock)?,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(StartError::Lock)?;
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let mut text = [0u8; 16];
            let n = rustix::io::pread(&fd, &mut text, 0).unwrap_or(0);
            let pid = core::str::from_utf8(&text[..n])
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            return Err(StartError::AlreadyRunning(pid));
        }
        Err(e) => return Err(StartError::Lock(e)),
    }
    let mut pid: String<12> = String::new();
    let _ = writeln!(pid, "{}", rustix::process::getpid().as_raw_nonzero());
    rustix::fs::ftruncate(&fd, 0).map_err(StartError::Lock)?;
    rustix::io::pwrite(&fd, pid.as_bytes(), 0).map_err(StartError::Lock)?;
    Ok(fd)
}

impl<'c> Runtime<'c> {
    /// A runtime over lent tables: reads the keys, makes the directories and takes the
    /// run directory's lock.
    fn new(config: &'c Config<'c>, tables: Tables<'c>) -> Result<Runtime<'c>, StartError> {
        let Tables {
            scratch,
            clients,
            packages,
            containers: table,
            exec,
            launch: buffer,
        } = tables;
        let store = Store::new(config, packages, scratch).map_err(StartError::Key)?;
        fs::create_dirs(config.run_dir).map_err(StartError::Directory)?;
        // Before anything of the run directory, the socket or a repository is touched.
        let lock = lock_run_dir(config.run_dir)?;
        for dir in [config.data_dir]
            .into_iter()
            .chain(config.repositories.iter().map(|r| r.dir))
        {
            fs::create_dirs(dir).map_err(StartError::Directory)?;
        }
        if let Some(root) = config.cgroup
            && let Err(e) = cgroup::prepare_root(root)
        {
            errln!(
                "nanostar: cgroup {root}: {} (containers with cgroup limits will not start)",
                fs::errno_text(e)
            );
        }
        Ok(Runtime {
            config,
            clients: Clients::new(clients),
            store,
            containers: Containers {
                table,
                launcher: Launcher::new(exec),
                buffer,
                kmsg: None,
            },
            poll: Poll::new().map_err(StartError::Setup)?,
            shutdown: false,
            give_up_at: None,
            _lock: lock,
        })
    }

    /// The shutdown's stop of every container: each gets SIGTERM and its own stop
    /// timeout, but SIGKILL at the end of `shutdown_timeout_ms` at the latest, whatever
    /// stops are pending; after that the shutdown waits [`SHUTDOWN_KILL_GRACE_MS`] for
    /// them, no longer.
    fn stop_all(&mut self) {
        let limits = &self.config.limits;
        let kill_by = time::after_ms(limits.shutdown_timeout_ms);
        self.containers.table.stop_all(kill_by);
        let give_up = limits
            .shutdown_timeout_ms
            .saturating_add(SHUTDOWN_KILL_GRACE_MS);
        self.give_up_at = Some(time::after_ms(give_up));
    }

    /// Whether the shutdown goes on without the containers that outlived their SIGKILL
    /// (stuck in the kernel); says so.
    fn gave_up(&self) -> bool {
        let Some(at) = self.give_up_at else {
            return false;
        };
        if !time::is_before(&at, &time::now()) {
            return false;
        }
        for c in self.containers.table.alive() {
            errln!(
                "nanostar: {} (pid {}) did not end after SIGKILL; shutting down without it",
                c.name,
                c.pid
            );
        }
        true
    }

    /// How long the loop may sleep: not at all while an install is being copied or a
    /// log reader can get more; else until the earliest deadline or timer.
    fn next_timeout(&self) -> Option<Timespec> {
        if self.pumping() || self.logs_pending() {
            return Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
        }
        let deadlines = self
            .clients
            .iter()
            .filter_map(|c| c.upload.as_ref().map(|u| u.deadline))
            .fold(None, |a, b| time::earliest(a, Some(b)));
        let deadlines = time::earliest(deadlines, self.clients.next_deadline(&self.config.limits));
        let timers = time::earliest(self.containers.table.next_timer(), self.give_up_at);
        let earliest = time::earliest(deadlines, timers)?;
        Some(time::until(&earliest))
    }

    fn read_signals(&mut self, fd: &OwnedFd) {
        while let Ok(Some(signal)) = signals::read_signal(fd) {
            if signal == SIGTERM || signal == SIGINT {
                self.shutdown = true;
            } else if signal == SIGCHLD {
                self.reap_children();
            }
        }
    }

    fn client_event(&mut self, token: clients::Token, flags: epoll::EventFlags) {
        if flags.contains(epoll::EventFlags::OUT) {
            self.clients.flush(token);
        }
        let input = epoll::EventFlags::IN
            | epoll::EventFlags::HUP
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ERR;
        if flags.intersects(input) {
            self.read_client(token);
        }
        self.clients.settle(token, &self.poll);
    }
}

#[cfg(test)]
mod tests;
