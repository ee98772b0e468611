//! The runtime's one event loop (docs/design.md, decision 2): the console socket and its clients
//! (and the console device, when configured), signals through a `signalfd` (SIGCHLD reaps
//! containers), containers' report and output pipes, install deadlines and container
//! timers, on one epoll set. Nothing blocks: every descriptor is non-blocking, an install
//! is written chunk by chunk as frames arrive, a container start forks and returns (its
//! reply goes out when the container's init reports), and a client that does not read its
//! replies is dropped rather than allowed to stall the loop or grow memory.
//!
//! `containers` holds the container requests and events.

use core::ffi::CStr;
use core::fmt::Write as _;
use core::mem::MaybeUninit;

use heapless::{String, Vec};
use nanostar_protocol::console::{
    Error, FrameDecoder, FrameError, Inspected, Message, Notification, OLDEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION, PackageError, PackageId, PackageInfo, Reply, RepositoryInfo, Request, Table,
    VersionMismatch, Violation, Welcome, peek_hello_version, peek_request_id,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_LIST_PAGE, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::PublicKey;
use nanostar_protocol::permissions::Permissions;
use nanostar_protocol::version::Version;
use rustix::event::{Timespec, epoll};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::io::IoSliceMut;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use rustix::time::ClockId;

mod containers;

use crate::config::Config;
use crate::container::cgroup;
use crate::install::{Install, InstallError};
use crate::limits::{
    MAX_CLIENTS, MAX_PATH_LEN, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS, OUTPUT_QUEUE_LEN,
};
use crate::mount::{self, MountError, MountSpec, Mounted, Verity};
use crate::repository::{self, Leftovers, Package, Packages, Rejection, SCRATCH_LEN, ScanEvent};
use crate::sys::once::TakeOnce;
use crate::sys::process::Exec;
use crate::sys::signals::{self, SignalSet};
use crate::{errln, fs};
use containers::{Containers, LogReader, StartRequest, TOKEN_CONTAINER};

const SIGINT: u32 = 2;
const SIGTERM: u32 = 15;
const SIGCHLD: u32 = 17;
/// epoll data of the listening socket and the signalfd; clients use their slot index.
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_SIGNALS: u64 = u64::MAX - 1;
/// Events handled per `epoll_wait`.
const EVENTS: usize = 16;
/// Bytes of a passed package copied per loop turn: the loop stays responsive.
const PUMP_SLICE: usize = 1 << 20;
/// Bytes read from a client at once.
const READ_LEN: usize = 4096;
/// The lock file in the run directory: one runtime per run directory, so a second one
/// never takes over the live one's socket, repositories or mounts.
const LOCK_FILE: &str = "lock";

/// The verification buffer, the client table and the package table: static, so they cost no stack and no
/// resident memory until used (`sys::once`). `run` takes them, so it runs once per process.
static SCRATCH: TakeOnce<[u8; SCRATCH_LEN]> = TakeOnce::new([0; SCRATCH_LEN]);
static CLIENTS: TakeOnce<Vec<Client, MAX_CLIENTS>> = TakeOnce::new(Vec::new());
static PACKAGES: TakeOnce<Packages> = TakeOnce::new(Packages::new());
static CONTAINERS: TakeOnce<Containers> = TakeOnce::new(Containers::new());
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
                "cannot lock the run directory ({LOCK_FILE}): {}",
                fs::errno_text(*e)
            ),
        }
    }
}

/// A package whose image is mounted.
struct MountEntry {
    name: String<{ crate::limits::MAX_NAME_LEN }>,
    version: Version,
    mounted: Mounted,
}

/// An install in progress on a connection.
struct Upload {
    id: u32,
    install: Install,
    /// The package as a passed descriptor, copied a slice per loop turn; `None` when the
    /// client streams chunks.
    source: Option<OwnedFd>,
    repository: u8,
    deadline: Timespec,
    /// The package the client announced (`Request::Install`) and whether it replaces
    /// the installed one.
    announced: Option<(String<{ crate::limits::MAX_NAME_LEN }>, Version, bool)>,
}

/// One console connection.
struct Client {
    /// epoll data of its socket.
    token: u64,
    fd: OwnedFd,
    uid: u32,
    gid: u32,
    /// `None` until the handshake.
    permissions: Option<Permissions>,
    /// The protocol version the handshake agreed on: what it sends is in that version.
    version: u16,
    decoder: FrameDecoder<[u8; MAX_FRAME_LEN]>,
    /// Encoded frames not yet written.
    queue: Vec<u8, OUTPUT_QUEUE_LEN>,
    subscribed: bool,
    upload: Option<Upload>,
    /// A descriptor the client passed (`SCM_RIGHTS`) for its next install.
    passed_fd: Option<OwnedFd>,
    /// Close once the queue is written.
    closing: bool,
    /// The container log this client reads.
    logs: Option<LogReader>,
    /// The console device (`console_device`), not a socket: read and written as a
    /// byte stream, never closed; a `Hello` on it starts a new session.
    device: bool,
}

impl Client {
    /// A connection before its handshake.
    fn new(token: u64, fd: OwnedFd, uid: u32, gid: u32, device: bool) -> Client {
        Client {
            token,
            fd,
            uid,
            gid,
            permissions: None,
            version: PROTOCOL_VERSION,
            decoder: FrameDecoder::new([0; MAX_FRAME_LEN]),
            queue: Vec::new(),
            subscribed: false,
            upload: None,
            passed_fd: None,
            closing: false,
            logs: None,
            device,
        }
    }

    /// Forgets the session on the console device: handshake, subscription, install,
    /// log reader, queued output.
    fn reset_session(&mut self) {
        self.permissions = None;
        self.subscribed = false;
        self.upload = None;
        self.logs = None;
        self.queue.clear();
        self.closing = false;
        self.decoder = FrameDecoder::new([0; MAX_FRAME_LEN]);
    }
}

/// The runtime's state.
pub struct Runtime<'c> {
    config: &'c Config<'c>,
    keys: Vec<Vec<PublicKey, MAX_REPOSITORY_KEYS>, MAX_REPOSITORIES>,
    packages: &'c mut Packages,
    mounts: Vec<MountEntry, { crate::limits::MAX_MOUNTS_TOTAL }>,
    /// Connected clients; each is found by its epoll token, so removing one moves no other.
    clients: &'c mut Vec<Client, MAX_CLIENTS>,
    next_token: u64,
    scratch: &'c mut [u8; SCRATCH_LEN],
    install_serial: u32,
    shutdown: bool,
    /// Containers and their log rings.
    containers: &'c mut Containers,
    /// argv and envp of the next container's app.
    exec: &'c mut Exec,
    /// A starting container's package header, manifest and seccomp program (taken out
    /// while a start uses it).
    launch: Option<&'c mut [u8; SCRATCH_LEN]>,
    /// A second descriptor of the loop's epoll set, for container pipes registered by
    /// request handlers.
    epoll: OwnedFd,
    /// /dev/null, containers' stdin (opened at the first start).
    null: Option<OwnedFd>,
    /// /dev/kmsg, for containers that copy their output there (opened when needed).
    kmsg: Option<OwnedFd>,
    /// `stop_all` ran for the shutdown.
    stopping_all: bool,
    /// The run directory's lock, held (`flock`) for the runtime's life.
    _lock: OwnedFd,
}

/// Runs the runtime with `config` until SIGTERM, SIGINT or a shutdown request; returns
/// after everything is unmounted.
pub fn run(config: &Config) -> Result<(), StartError> {
    let signal_set = SignalSet::of(&[SIGTERM, SIGINT, SIGCHLD]);
    signals::block(signal_set).map_err(StartError::Setup)?;
    let signal_fd = signals::signalfd(signal_set).map_err(StartError::Setup)?;
    let tables = Tables {
        scratch: SCRATCH.take(),
        clients: CLIENTS.take(),
        packages: PACKAGES.take(),
        containers: CONTAINERS.take(),
        exec: EXEC.take(),
        launch: LAUNCH.take(),
    };
    let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(StartError::Setup)?;
    let epoll_copy = rustix::io::fcntl_dupfd_cloexec(&epoll_fd, 0).map_err(StartError::Setup)?;
    let mut runtime = Runtime::new(config, tables, epoll_copy)?;
    runtime.scan_repositories();
    let listener = listen(config.socket)?;
    let readable = epoll::EventFlags::IN;
    epoll::add(
        &epoll_fd,
        &listener,
        epoll::EventData::new_u64(TOKEN_LISTENER),
        readable,
    )
    .map_err(StartError::Setup)?;
    epoll::add(
        &epoll_fd,
        &signal_fd,
        epoll::EventData::new_u64(TOKEN_SIGNALS),
        readable,
    )
    .map_err(StartError::Setup)?;
    if let Some(device) = config.console_device {
        runtime.add_device(device, &epoll_fd);
    }
    errln!(
        "nanostar: serving {} packages on {}",
        runtime.packages.len(),
        config.socket
    );
    runtime.autostart();
    while !runtime.shutdown || runtime.containers_alive() {
        if runtime.shutdown && !runtime.stopping_all {
            runtime.stopping_all = true;
            runtime.stop_all();
        }
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); EVENTS];
        let timeout = runtime.next_timeout();
        let (ready, _) = match epoll::wait(&epoll_fd, &mut events, timeout.as_ref()) {
            Ok(r) => r,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(StartError::Setup(e)),
        };
        for event in ready.iter() {
            match event.data.u64() {
                TOKEN_LISTENER => runtime.accept(&listener, &epoll_fd),
                TOKEN_SIGNALS => runtime.read_signals(&signal_fd),
                token if token & TOKEN_CONTAINER != 0 => runtime.container_event(token),
                token => runtime.client_event(token, event.flags, &epoll_fd),
            }
        }
        runtime.pump_uploads(&epoll_fd);
        runtime.expire_uploads(&epoll_fd);
        runtime.container_timers();
        runtime.pump_logs();
        runtime.settle_all(&epoll_fd);
    }
    runtime.notify(Notification::ShuttingDown);
    runtime.flush_all();
    runtime.unmount_all();
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
    rustix::net::listen(&socket, 16).map_err(StartError::Socket)?;
    Ok(socket)
}

/// Takes `RUN_DIR/lock` (`flock(LOCK_EX | LOCK_NB)`) and writes this runtime's pid into
/// it; a runtime that holds it already is named by the pid it wrote. The kernel drops
/// the lock when the runtime dies, however it dies.
fn lock_run_dir(run_dir: &str) -> Result<OwnedFd, StartError> {
    let mut path = [0u8; MAX_PATH_LEN + 1];
    let path = join(run_dir, LOCK_FILE, &mut path).ok_or(StartError::Lock(Errno::NAMETOOLONG))?;
    let fd = rustix::fs::open(
        path,
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

fn now() -> Timespec {
    rustix::time::clock_gettime(ClockId::Monotonic)
}

fn after_ms(ms: u32) -> Timespec {
    let t = now();
    let total_ns = t.tv_nsec + i64::from(ms % 1000) * 1_000_000;
    Timespec {
        tv_sec: t.tv_sec + i64::from(ms / 1000) + total_ns / 1_000_000_000,
        tv_nsec: (total_ns % 1_000_000_000) as _,
    }
}

fn is_before(a: &Timespec, b: &Timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

/// The runtime's static tables, each taken once (`None`: taken before, so `run` runs
/// once per process).
struct Tables {
    scratch: Option<&'static mut [u8; SCRATCH_LEN]>,
    clients: Option<&'static mut Vec<Client, MAX_CLIENTS>>,
    packages: Option<&'static mut Packages>,
    containers: Option<&'static mut Containers>,
    exec: Option<&'static mut Exec>,
    launch: Option<&'static mut [u8; SCRATCH_LEN]>,
}

impl<'c> Runtime<'c> {
    fn new(
        config: &'c Config<'c>,
        tables: Tables,
        epoll: OwnedFd,
    ) -> Result<Runtime<'c>, StartError> {
        let (
            Some(scratch),
            Some(clients),
            Some(packages),
            Some(containers),
            Some(exec),
            Some(launch),
        ) = (
            tables.scratch,
            tables.clients,
            tables.packages,
            tables.containers,
            tables.exec,
            tables.launch,
        )
        else {
            return Err(StartError::Setup(Errno::BUSY));
        };
        let mut keys = Vec::new();
        for (index, repo) in config.repositories.iter().enumerate() {
            let mut repo_keys = Vec::new();
            for key in &repo.keys {
                let k = fs::read_public_key(key.as_bytes()).map_err(|_| StartError::Key(index))?;
                // Cannot overflow: the configuration bounds keys by the same constant.
                let _ = repo_keys.push(k);
            }
            let _ = keys.push(repo_keys);
        }
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
            keys,
            packages,
            mounts: Vec::new(),
            clients,
            next_token: 0,
            scratch,
            install_serial: 0,
            shutdown: false,
            containers,
            exec,
            launch: Some(launch),
            epoll,
            null: None,
            kmsg: None,
            stopping_all: false,
            _lock: lock,
        })
    }

    /// Verifies every repository into the package table; problems are logged and skipped.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn scan_repositories(&mut self) {
        for (index, repo) in self.config.repositories.iter().enumerate() {
            let mut path = [0u8; MAX_PATH_LEN + 1];
            let Ok(dir) = fs::c_path(repo.dir, &mut path) else {
                continue;
            };
            let keys = &self.keys[index];
            let report = &mut |event: ScanEvent| match event {
                ScanEvent::Added(_) => {}
                ScanEvent::Skipped { file, why } => {
                    errln!("nanostar: repository {}: {file}: skipped: {why}", repo.name)
                }
                ScanEvent::RemovedTemp(file) => {
                    errln!(
                        "nanostar: repository {}: removed {file} (an install that did not finish)",
                        repo.name
                    )
                }
            };
            if let Err(e) = repository::scan(
                index as u8,
                dir,
                keys,
                Leftovers::Remove,
                self.packages,
                self.scratch,
                report,
            ) {
                errln!("nanostar: repository {}: {}", repo.name, fs::errno_text(e));
            }
        }
    }

    fn next_timeout(&self) -> Option<Timespec> {
        if self.pumping() || self.logs_pending() {
            return Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
        }
        let earliest = self
            .clients
            .iter()
            .filter_map(|c| c.upload.as_ref().map(|u| u.deadline))
            .chain(self.next_container_timer())
            .min_by(|a, b| (a.tv_sec, a.tv_nsec).cmp(&(b.tv_sec, b.tv_nsec)))?;
        let n = now();
        let ns = (earliest.tv_sec - n.tv_sec) * 1_000_000_000 + (earliest.tv_nsec - n.tv_nsec);
        let ns = ns.max(0);
        Some(Timespec {
            tv_sec: ns / 1_000_000_000,
            tv_nsec: (ns % 1_000_000_000) as _,
        })
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

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn accept(&mut self, listener: &OwnedFd, epoll_fd: &OwnedFd) {
        loop {
            let fd = match rustix::net::accept_with(
                listener,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::INTR) => continue,
                Err(_) => return,
            };
            let limit = usize::from(self.config.limits.max_clients).min(MAX_CLIENTS);
            if self.clients.len() >= limit {
                refuse_full(&fd);
                continue;
            }
            let Ok((uid, gid)) = crate::sys::peer::peer_credentials(&fd) else {
                continue;
            };
            let slot = self.new_token();
            let data = epoll::EventData::new_u64(slot);
            if epoll::add(
                epoll_fd,
                &fd,
                data,
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            )
            .is_err()
            {
                continue;
            }
            // Cannot fail: checked for room above.
            let _ = self.clients.push(Client::new(slot, fd, uid, gid, false));
        }
    }

    /// Serves the console protocol on a serial or virtio console device too, as a
    /// client with the permissions of uid 0 that is never closed.
    #[inline(never)]
    fn add_device(&mut self, path: &str, epoll_fd: &OwnedFd) {
        let opened = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                errln!("nanostar: console device {path}: {}", fs::errno_text(e));
                return;
            }
        };
        // Raw: no echo, no line editing, no translation of the protocol's bytes.
        if let Ok(mut termios) = rustix::termios::tcgetattr(&fd) {
            termios.make_raw();
            let _ =
                rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &termios);
        }
        let token = self.new_token();
        let added = epoll::add(
            epoll_fd,
            &fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        );
        if added.is_err() || self.clients.is_full() {
            errln!("nanostar: console device {path}: cannot serve it");
            return;
        }
        let _ = self.clients.push(Client::new(token, fd, 0, 0, true));
        errln!("nanostar: serving the console on {path}");
    }

    /// An epoll token for a new connection: below the listener's and the signalfd's (and
    /// the containers' bit), never reused in practice.
    fn new_token(&mut self) -> u64 {
        self.next_token = (self.next_token + 1) % TOKEN_CONTAINER;
        self.next_token
    }

    fn client(&mut self, token: u64) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.token == token)
    }

    fn client_ref(&self, token: u64) -> Option<&Client> {
        self.clients.iter().find(|c| c.token == token)
    }

    fn remove_client(&mut self, token: u64) {
        if let Some(i) = self.clients.iter().position(|c| c.token == token) {
            self.clients.swap_remove(i);
        }
    }

    fn tokens(&self) -> Vec<u64, MAX_CLIENTS> {
        self.clients.iter().map(|c| c.token).collect()
    }

    fn client_event(&mut self, slot: u64, flags: epoll::EventFlags, epoll_fd: &OwnedFd) {
        if flags.contains(epoll::EventFlags::OUT) {
            self.flush(slot);
        }
        if flags.intersects(
            epoll::EventFlags::IN
                | epoll::EventFlags::HUP
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ERR,
        ) {
            self.read_client(slot);
        }
        self.settle(slot, epoll_fd);
    }

    /// Reads what the client sent and handles every complete frame.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn read_client(&mut self, slot: u64) {
        let mut bytes = [0u8; READ_LEN];
        let mut frame = [0u8; MAX_FRAME_LEN];
        loop {
            let Some(client) = self.client(slot) else {
                return;
            };
            let n = match receive(client, &mut bytes) {
                Ok(0) => {
                    client.closing = true;
                    client.queue.clear();
                    return;
                }
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    client.closing = true;
                    client.queue.clear();
                    return;
                }
            };
            let mut input = &bytes[..n];
            loop {
                let Some(client) = self.client(slot) else {
                    return;
                };
                let len = match client.decoder.decode(&mut input) {
                    None => break,
                    Some(Ok(f)) => {
                        frame[..f.len()].copy_from_slice(f);
                        f.len()
                    }
                    Some(Err(e)) => {
                        let why = match e {
                            FrameError::TooLong => Violation::FrameTooLong,
                            FrameError::Corrupt => Violation::Undecodable,
                        };
                        self.violation(slot, 0, why);
                        continue;
                    }
                };
                self.handle_frame(slot, &frame[..len]);
            }
        }
    }

    /// Answers a protocol violation; the connection closes after the reply.
    fn violation(&mut self, slot: u64, id: u32, why: Violation) {
        self.reply(slot, id, &Reply::Error(Error::ProtocolViolation(why)));
        if let Some(c) = self.client(slot) {
            c.closing = true;
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn handle_frame(&mut self, slot: u64, frame: &[u8]) {
        let new_session = self.client_ref(slot).is_some_and(|c| {
            c.device && c.permissions.is_some() && peek_hello_version(frame).is_some()
        });
        if new_session {
            // A new host session on the console device.
            if let Some(c) = self.client(slot) {
                c.reset_session();
            }
            return self.handshake(slot, frame);
        }
        let Some(client) = self.client_ref(slot) else {
            return;
        };
        if client.permissions.is_none() {
            return self.handshake(slot, frame);
        }
        let permissions = client.permissions.unwrap_or(Permissions::NONE);
        let message = match Message::decode(frame) {
            Ok(m) => m,
            Err(_) => {
                return self.violation(
                    slot,
                    peek_request_id(frame).unwrap_or(0),
                    Violation::Undecodable,
                );
            }
        };
        let Message::Request { id, request } = message else {
            return self.violation(slot, 0, Violation::Unexpected);
        };
        if !permissions.contains(request.permission()) {
            return self.reply(slot, id, &Reply::Error(Error::PermissionDenied));
        }
        if self.shutdown {
            return self.reply(slot, id, &Reply::Error(Error::ShuttingDown));
        }
        match request {
            Request::List { after } => self.list(slot, id, after),
            Request::Inspect {
                name,
                version,
                manifest_offset,
            } => self.inspect(slot, id, name, version, manifest_offset),
            Request::InstallBegin {
                repository,
                size,
                fd,
            } => self.install_begin(slot, id, repository, size, fd, None),
            Request::Install {
                repository,
                size,
                fd,
                package,
                replace,
            } => self.install_begin(slot, id, repository, size, fd, Some((package, replace))),
            Request::Repositories => self.repositories(slot, id),
            Request::InstallChunk { data } => self.install_chunk(slot, id, data),
            Request::InstallEnd => self.install_end(slot, id),
            Request::InstallAbort => self.install_abort(slot, id),
            Request::Uninstall { package, wipe } => self.uninstall(slot, id, package, wipe),
            Request::Mount(package) => self.mount(slot, id, package),
            Request::Umount(package) => self.umount(slot, id, package),
            Request::Shutdown => {
                self.shutdown = true;
                self.reply(slot, id, &Reply::Ok);
            }
            Request::Subscribe | Request::Unsubscribe => {
                if let Some(c) = self.client(slot) {
                    c.subscribed = matches!(request, Request::Subscribe);
                }
                self.reply(slot, id, &Reply::Ok);
            }
            Request::Start {
                name,
                version,
                args,
                env,
            } => {
                let request = StartRequest {
                    name,
                    version,
                    args: args.as_deref(),
                    env: &env,
                };
                self.start(slot, id, &request)
            }
            Request::Stop {
                name, timeout_ms, ..
            } => self.stop(slot, id, name, timeout_ms),
            Request::Kill { name, signal, .. } => self.kill(slot, id, name, signal),
            Request::Logs { name, follow, .. } => self.logs(slot, id, name, follow, None),
            Request::TailLogs {
                name,
                follow,
                lines,
                ..
            } => self.logs(slot, id, name, follow, lines),
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn handshake(&mut self, slot: u64, frame: &[u8]) {
        let Some(version) = peek_hello_version(frame) else {
            return self.violation(slot, 0, Violation::NoHello);
        };
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            let refusal = Message::VersionMismatch(VersionMismatch {
                runtime: PROTOCOL_VERSION,
                oldest: OLDEST_PROTOCOL_VERSION,
            });
            self.send(slot, &refusal);
            if let Some(c) = self.client(slot) {
                c.closing = true;
            }
            return;
        }
        if !matches!(Message::decode(frame), Ok(Message::Hello(_))) {
            return self.violation(slot, 0, Violation::Undecodable);
        }
        let config = self.config;
        let Some(client) = self.client(slot) else {
            return;
        };
        let permissions = config.permissions(client.uid, client.gid);
        client.permissions = Some(permissions);
        client.version = version;
        self.send(
            slot,
            &Message::Welcome(Welcome {
                protocol_version: version,
                permissions,
            }),
        );
    }

    fn reply(&mut self, slot: u64, id: u32, reply: &Reply) {
        self.send(
            slot,
            &Message::Reply {
                id,
                reply: reply.clone(),
            },
        );
    }

    /// Queues a message for a client, in the client's protocol version; a client whose
    /// queue is full is dropped.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn send(&mut self, slot: u64, message: &Message) {
        let Some(version) = self.client_ref(slot).map(|c| c.version) else {
            return;
        };
        let Some(message) = message.clone().for_version(version) else {
            return;
        };
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let Ok(bytes) = message.encode(&mut wire) else {
            return;
        };
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.queue.extend_from_slice(bytes).is_err() {
            // It does not read its replies: it may not hold the runtime's memory.
            client.closing = true;
            client.queue.clear();
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn notify(&mut self, notification: Notification) {
        for slot in self.tokens() {
            if self.client_ref(slot).is_some_and(|c| c.subscribed) {
                self.send(slot, &Message::Notification(notification));
            }
        }
    }

    /// Writes as much of the client's queue as the socket takes.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn flush(&mut self, slot: u64) {
        let Some(client) = self.client(slot) else {
            return;
        };
        while !client.queue.is_empty() {
            let sent = if client.device {
                rustix::io::write(&client.fd, &client.queue)
            } else {
                rustix::net::send(
                    &client.fd,
                    &client.queue,
                    SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
                )
            };
            match sent {
                Ok(n) => {
                    let rest = client.queue.len() - n;
                    client.queue.copy_within(n.., 0);
                    client.queue.truncate(rest);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    client.queue.clear();
                    client.closing = true;
                    return;
                }
            }
        }
    }

    fn flush_all(&mut self) {
        for slot in self.tokens() {
            self.flush(slot);
        }
    }

    /// Settles every client with something to write or to close: replies and
    /// notifications caused by other events (a container's report, another client).
    fn settle_all(&mut self, epoll_fd: &OwnedFd) {
        for slot in self.tokens() {
            if self
                .client_ref(slot)
                .is_some_and(|c| c.closing || !c.queue.is_empty())
            {
                self.settle(slot, epoll_fd);
            }
        }
    }

    /// After handling a client's events: write its replies, then close it or wait for
    /// the socket to drain.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn settle(&mut self, slot: u64, epoll_fd: &OwnedFd) {
        self.flush(slot);
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.closing && client.queue.is_empty() {
            if client.device {
                // The link stays; whoever is at its other end starts again with a Hello.
                client.reset_session();
            } else {
                let _ = epoll::delete(epoll_fd, &client.fd);
                // Dropping the client drops its install, which removes the temporary file.
                self.remove_client(slot);
                return;
            }
        }
        let mut flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        if !client.queue.is_empty() {
            flags |= epoll::EventFlags::OUT;
        }
        let _ = epoll::modify(epoll_fd, &client.fd, epoll::EventData::new_u64(slot), flags);
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn expire_uploads(&mut self, epoll_fd: &OwnedFd) {
        let n = now();
        for slot in self.tokens() {
            let expired = self
                .client_ref(slot)
                .and_then(|c| c.upload.as_ref())
                .filter(|u| is_before(&u.deadline, &n))
                .map(|u| u.id);
            if let Some(id) = expired {
                if let Some(c) = self.client(slot) {
                    c.upload = None;
                }
                self.reply(slot, id, &Reply::Error(Error::InstallTimeout));
                self.settle(slot, epoll_fd);
            }
        }
    }

    fn repository_name(&self, index: u8) -> &'c str {
        self.config
            .repositories
            .get(usize::from(index))
            .map(|r| r.name)
            .unwrap_or("")
    }

    fn is_mounted(&self, name: &str, version: &Version) -> bool {
        self.mounts
            .iter()
            .any(|m| m.name == name && m.version == *version)
    }

    fn info<'p>(&self, p: &'p Package) -> PackageInfo<'p>
    where
        'c: 'p,
    {
        PackageInfo {
            package: PackageId {
                name: &p.name,
                version: p.version,
            },
            repository: self.repository_name(p.repository),
            mounted: self.is_mounted(&p.name, &p.version),
            container: self.container_info(&p.name, &p.version),
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn list(&mut self, slot: u64, id: u32, after: Option<PackageId>) {
        fn key(p: &Package) -> (&str, Version) {
            (p.name.as_str(), p.version)
        }
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let encoded = {
            // (name, version) order, so paging is stable while packages come and go.
            let mut page: Vec<&Package, MAX_LIST_PAGE> = Vec::new();
            let mut more = false;
            let mut cursor = after.map(|a| (a.name, a.version));
            while let Some(next) = self
                .packages
                .iter()
                .filter(|p| cursor.is_none_or(|c| key(p) > c))
                .min_by_key(|p| key(p))
            {
                if page.push(next).is_err() {
                    more = true;
                    break;
                }
                cursor = Some(key(next));
            }
            let packages = page.iter().map(|p| self.info(p)).collect();
            (Message::Reply {
                id,
                reply: Reply::Packages { packages, more },
            })
            .encode(&mut wire)
            .map(|b| b.len())
        };
        if let Ok(len) = encoded {
            self.queue_raw(slot, &wire[..len]);
        }
    }

    fn queue_raw(&mut self, slot: u64, bytes: &[u8]) {
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.queue.extend_from_slice(bytes).is_err() {
            client.closing = true;
            client.queue.clear();
        }
    }

    /// The package called `name` (at `version`, or the newest).
    fn find(&self, name: &str, version: Option<Version>) -> Option<&Package> {
        match version {
            Some(v) => self.packages.find(name, &v),
            None => self
                .packages
                .iter()
                .filter(|p| p.name == name)
                .max_by_key(|p| p.version),
        }
    }

    /// `REPOSITORY_DIR/FILE` of a package.
    fn package_path<'b>(
        &self,
        p: &Package,
        buf: &'b mut [u8; MAX_PATH_LEN + 1],
    ) -> Result<&'b CStr, Error<'static>> {
        let repo = self
            .config
            .repositories
            .get(usize::from(p.repository))
            .ok_or(Error::NoSuchRepository)?;
        join(repo.dir, &p.file, buf).ok_or(Error::Io(Errno::NAMETOOLONG.raw_os_error() as u16))
    }

    /// Opens a package's file and verifies it again (the file may have changed since
    /// start-up); returns the descriptor with the examined header in `self.scratch`.
    fn open_verified(
        &mut self,
        p: &Package,
    ) -> Result<(OwnedFd, nanostar_protocol::npk::VerifiedHeader), Error<'static>> {
        let mut path = [0u8; MAX_PATH_LEN + 1];
        let file = self.package_path(p, &mut path)?;
        let fd = rustix::fs::open(file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io_error)?;
        let keys = &self.keys[usize::from(p.repository)];
        let examined = repository::examine(&fd, keys, self.scratch).map_err(rejected)?;
        Ok((fd, examined.header))
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn inspect(&mut self, slot: u64, id: u32, name: &str, version: Option<Version>, offset: u32) {
        let Some(p) = self.find(name, version).cloned() else {
            return self.reply(slot, id, &Reply::Error(Error::UnknownPackage));
        };
        let header = match self.open_verified(&p) {
            Ok((_, header)) => header,
            Err(e) => return self.reply(slot, id, &Reply::Error(e)),
        };
        let manifest_len = header.manifest_len as usize;
        let start = (offset as usize).min(manifest_len);
        let end = (start + MAX_CHUNK_LEN).min(manifest_len);
        // The signer's key id also where the repository does not check signatures.
        let key = header.signer().map(|k| k.0);
        // `examine` left the manifest right after the header in the scratch buffer.
        let base = nanostar_protocol::npk::header::HEADER_LEN;
        let manifest = &self.scratch[base + start..base + end];
        let inspected = Inspected {
            package: PackageInfo {
                package: PackageId {
                    name: &p.name,
                    version: p.version,
                },
                repository: self.repository_name(p.repository),
                mounted: self.is_mounted(&p.name, &p.version),
                container: self.container_info(&p.name, &p.version),
            },
            size: p.size,
            key,
            manifest_len: header.manifest_len,
            manifest_offset: start as u32,
            manifest,
        };
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let encoded = (Message::Reply {
            id,
            reply: Reply::Inspected(inspected),
        })
        .encode(&mut wire)
        .map(|b| b.len());
        if let Ok(len) = encoded {
            self.queue_raw(slot, &wire[..len]);
        }
    }

    /// Starts an install (`InstallBegin`, or `Install` with the package it announces,
    /// refused at once when it is installed already or cannot be replaced).
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn install_begin(
        &mut self,
        slot: u64,
        id: u32,
        repository: &str,
        size: u64,
        fd: bool,
        announced: Option<(PackageId, bool)>,
    ) {
        let source = match self.client(slot).map(|c| c.passed_fd.take()) {
            Some(Some(passed)) if fd => Some(passed),
            Some(None) if !fd => None,
            // Announced without a descriptor, or a descriptor nobody announced.
            _ => return self.violation(slot, id, Violation::Fd),
        };
        if source
            .as_ref()
            .is_some_and(|f| rustix::fs::fstat(f).map(|st| st.st_size as u64) != Ok(size))
        {
            return self.violation(slot, id, Violation::InstallSize);
        }
        if self.client_ref(slot).is_some_and(|c| c.upload.is_some()) {
            return self.violation(slot, id, Violation::InstallInProgress);
        }
        let Some((index, repo)) = self
            .config
            .repositories
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == repository)
        else {
            return self.reply(slot, id, &Reply::Error(Error::NoSuchRepository));
        };
        if let Some((package, replace)) = announced
            && let Err(e) = self.may_install(package, replace, index as u8)
        {
            return self.reply_error_owned(slot, id, e);
        }
        let mut path = [0u8; MAX_PATH_LEN + 1];
        let Ok(dir) = fs::c_path(repo.dir, &mut path) else {
            return self.reply(slot, id, &Reply::Error(Error::NoSuchRepository));
        };
        self.install_serial = self.install_serial.wrapping_add(1);
        match Install::begin(
            dir,
            index as u8,
            size,
            repo.max_install_size,
            self.install_serial,
        ) {
            Ok(install) => {
                let deadline = after_ms(self.config.limits.install_timeout_ms);
                let streamed = source.is_none();
                let announced = announced.and_then(|(p, replace)| {
                    Some((String::try_from(p.name).ok()?, p.version, replace))
                });
                if let Some(c) = self.client(slot) {
                    c.upload = Some(Upload {
                        id,
                        install,
                        source,
                        repository: index as u8,
                        deadline,
                        announced,
                    });
                }
                // A passed package gets one reply, the result, when `pump_uploads` is done.
                if streamed {
                    self.reply(slot, id, &Reply::InstallAccepted);
                }
            }
            Err(e) => self.reply(slot, id, &Reply::Error(install_error(e))),
        }
    }

    /// Whether `package` may be installed into repository `repository`: not installed
    /// yet, or (`replace`) installed there and used by no container, in which case its
    /// image is unmounted now so the new file can take its place.
    fn may_install(
        &mut self,
        package: PackageId,
        replace: bool,
        repository: u8,
    ) -> Result<(), OwnedError> {
        let Some(old) = self.packages.find(package.name, &package.version) else {
            return Ok(());
        };
        if !replace || old.repository != repository {
            return Err(OwnedError::Plain(Error::AlreadyInstalled));
        }
        if let Some((name, version)) = self.user_of(package.name, &package.version) {
            return Err(if name == package.name && version == package.version {
                OwnedError::Plain(Error::AlreadyRunning)
            } else {
                OwnedError::busy(name, version)
            });
        }
        self.unmount_if_mounted(package.name, &package.version)
            .map_err(OwnedError::Plain)
    }

    /// Unmounts a package's image if it is mounted (nothing may use it), and tells the
    /// subscribers.
    fn unmount_if_mounted(&mut self, name: &str, version: &Version) -> Result<(), Error<'static>> {
        let Some(index) = self
            .mounts
            .iter()
            .position(|m| m.name == name && m.version == *version)
        else {
            return Ok(());
        };
        let entry = self.mounts.swap_remove(index);
        if let Err(e) = self.unmount_entry(&entry) {
            // Still mounted: keep it in the table.
            let _ = self.mounts.push(entry);
            return Err(e);
        }
        self.notify(Notification::Umounted(PackageId {
            name: &entry.name,
            version: entry.version,
        }));
        Ok(())
    }

    /// Sends an error whose text the reply borrows from an owned copy.
    fn reply_error_owned(&mut self, slot: u64, id: u32, e: OwnedError) {
        let error = match &e {
            OwnedError::Plain(e) => *e,
            OwnedError::Busy(name, version) => Error::Busy {
                used_by: PackageId {
                    name,
                    version: *version,
                },
            },
        };
        self.reply(slot, id, &Reply::Error(error));
    }

    /// `repositories`: every configured repository, its keys and how many packages it has.
    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn repositories(&mut self, slot: u64, id: u32) {
        let mut repositories = Vec::new();
        for (index, repo) in self.config.repositories.iter().enumerate() {
            let packages = self
                .packages
                .iter()
                .filter(|p| usize::from(p.repository) == index)
                .count() as u32;
            let keys = self.keys[index].iter().map(|k| k.id().0).collect();
            // Cannot overflow: the configuration holds at most as many repositories.
            let _ = repositories.push(RepositoryInfo {
                name: repo.name,
                keys,
                packages,
            });
        }
        self.reply(slot, id, &Reply::Repositories { repositories });
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn install_chunk(&mut self, slot: u64, id: u32, data: &[u8]) {
        let timeout = self.config.limits.install_timeout_ms;
        let Some(client) = self.client(slot) else {
            return;
        };
        let Some(upload) = client.upload.as_mut().filter(|u| u.id == id) else {
            return self.violation(slot, id, Violation::NoInstall);
        };
        upload.deadline = after_ms(timeout);
        if let Err(e) = upload.install.write(data) {
            client.upload = None;
            match e {
                InstallError::Overrun => self.violation(slot, id, Violation::InstallSize),
                other => self.reply(slot, id, &Reply::Error(install_error(other))),
            }
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn install_end(&mut self, slot: u64, id: u32) {
        let Some(client) = self.client(slot) else {
            return;
        };
        let Some(upload) = client.upload.take_if(|u| u.id == id) else {
            return self.violation(slot, id, Violation::NoInstall);
        };
        if upload.install.written() != upload.install.expected() || upload.source.is_some() {
            return self.violation(slot, id, Violation::InstallSize);
        }
        self.finish_upload(slot, upload);
    }

    /// Verifies and installs a complete upload, and answers its request.
    fn finish_upload(&mut self, slot: u64, upload: Upload) {
        let id = upload.id;
        let announced =
            upload
                .announced
                .as_ref()
                .map(|(name, version, replace)| crate::install::Announced {
                    name,
                    version: *version,
                    replace: *replace,
                });
        // Things may have changed while the bytes came: check the replaced package again.
        if let Some(a) = announced.filter(|a| a.replace) {
            let package = PackageId {
                name: a.name,
                version: a.version,
            };
            if let Err(e) = self.may_install(package, true, upload.repository) {
                return self.reply_error_owned(slot, id, e);
            }
        }
        let keys = &self.keys[usize::from(upload.repository)];
        let result = upload
            .install
            .finish(keys, self.packages, self.scratch, announced)
            .map(|p| (p.name.clone(), p.version, p.repository));
        match result {
            Ok((name, version, repository)) => {
                let package = PackageId {
                    name: &name,
                    version,
                };
                self.reply(slot, id, &Reply::Installed(package));
                self.notify(Notification::Installed {
                    package,
                    repository: self.repository_name(repository),
                });
            }
            Err(e) => self.reply(slot, id, &Reply::Error(install_error(e))),
        }
    }

    /// Copies the next slice of every passed package, so a large install shares the loop
    /// with everyone else; finishes those that are complete.
    fn pump_uploads(&mut self, epoll_fd: &OwnedFd) {
        let timeout = self.config.limits.install_timeout_ms;
        for slot in self.tokens() {
            let Some(client) = self.client(slot) else {
                continue;
            };
            let Some(upload) = client.upload.as_mut() else {
                continue;
            };
            let Some(source) = upload.source.as_ref() else {
                continue;
            };
            match upload.install.copy_from(source, PUMP_SLICE) {
                Ok(_) if upload.install.written() < upload.install.expected() => {
                    upload.deadline = after_ms(timeout);
                    continue;
                }
                Ok(_) => {
                    if let Some(done) = client.upload.take() {
                        self.finish_upload(slot, done);
                    }
                }
                Err(e) => {
                    let id = upload.id;
                    client.upload = None;
                    self.reply(slot, id, &Reply::Error(install_error(e)));
                }
            }
            self.settle(slot, epoll_fd);
        }
    }

    fn pumping(&self) -> bool {
        self.clients
            .iter()
            .any(|c| c.upload.as_ref().is_some_and(|u| u.source.is_some()))
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn install_abort(&mut self, slot: u64, id: u32) {
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.upload.take_if(|u| u.id == id).is_none() {
            return self.violation(slot, id, Violation::NoInstall);
        }
        self.reply(slot, id, &Reply::Ok);
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn uninstall(&mut self, slot: u64, id: u32, package: PackageId, wipe: bool) {
        let Some(p) = self.packages.find(package.name, &package.version).cloned() else {
            return self.reply(slot, id, &Reply::Error(Error::UnknownPackage));
        };
        // A stopped package is unmounted on the way out; one in use is refused, naming
        // its user.
        if let Some((name, version)) = self.user_of(&p.name, &p.version) {
            let busy = OwnedError::busy(name, version);
            return self.reply_error_owned(slot, id, busy);
        }
        if let Err(e) = self.unmount_if_mounted(&p.name, &p.version) {
            return self.reply(slot, id, &Reply::Error(e));
        }
        let repo = self.config.repositories.get(usize::from(p.repository));
        let mut path = [0u8; MAX_PATH_LEN + 1];
        let result = repo.ok_or(Errno::NOENT).and_then(|r| {
            let dir = fs::c_path(r.dir, &mut path).map_err(|_| Errno::NAMETOOLONG)?;
            let dirfd = rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::unlinkat(&dirfd, p.file.as_str(), rustix::fs::AtFlags::empty())?;
            rustix::fs::fsync(&dirfd)
        });
        if let Err(e) = result {
            return self.reply(slot, id, &Reply::Error(io_error(e)));
        }
        self.packages.remove(&p.name, &p.version);
        if wipe {
            // Persistent data belongs to the name, not the version: wiped only when asked.
            if let Err(e) = fs::remove_tree(self.config.data_dir, &p.name) {
                return self.reply(slot, id, &Reply::Error(io_error(e)));
            }
        }
        self.reply(slot, id, &Reply::Ok);
        self.notify(Notification::Uninstalled(PackageId {
            name: &p.name,
            version: p.version,
        }));
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn mount(&mut self, slot: u64, id: u32, package: PackageId) {
        let Some(p) = self.packages.find(package.name, &package.version).cloned() else {
            return self.reply(slot, id, &Reply::Error(Error::UnknownPackage));
        };
        if self.is_mounted(&p.name, &p.version) {
            return self.reply(slot, id, &Reply::Error(Error::AlreadyMounted));
        }
        if self.mounts.is_full() {
            return self.reply(slot, id, &Reply::Error(Error::Full(Table::Mounts)));
        }
        match self.mount_package(&p) {
            Ok(mounted) => {
                // Cannot fail: checked for room above.
                let _ = self.mounts.push(MountEntry {
                    name: p.name.clone(),
                    version: p.version,
                    mounted,
                });
                self.reply(slot, id, &Reply::Ok);
                self.notify(Notification::Mounted(PackageId {
                    name: &p.name,
                    version: p.version,
                }));
            }
            Err(e) => self.reply(slot, id, &Reply::Error(e)),
        }
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn mount_package(&mut self, p: &Package) -> Result<Mounted, Error<'static>> {
        let (_fd, header) = self.open_verified(p)?;
        let signed = !self.keys[usize::from(p.repository)].is_empty();
        let mut npk = [0u8; MAX_PATH_LEN + 1];
        let npk = self.package_path(p, &mut npk)?;
        let mut target = [0u8; MAX_PATH_LEN + 1];
        let target = mount_point(self.config.run_dir, p, &mut target)
            .ok_or(Error::Io(Errno::NAMETOOLONG.raw_os_error() as u16))?;
        let target_str = target
            .to_str()
            .map_err(|_| Error::Io(Errno::INVAL.raw_os_error() as u16))?;
        fs::create_dirs(target_str).map_err(io_error)?;
        let mut node_dir = [0u8; MAX_PATH_LEN + 1];
        let node_dir = fs::c_path(self.config.run_dir, &mut node_dir)
            .map_err(|_| Error::Io(Errno::NAMETOOLONG.raw_os_error() as u16))?;
        let mut dm_name: String<64> = String::new();
        let _ = write!(dm_name, "nanostar-{}-{}", p.name, p.version);
        let spec = MountSpec {
            npk,
            image_offset: header.image_offset,
            image_size: header.image_size,
            verity: signed.then(|| Verity::from(&header.verity)),
            target,
            dm_name: &dm_name,
            node_dir,
        };
        mount::mount(&spec).map_err(|e| match e {
            MountError::DeviceMapperMissing => Error::DeviceMapperMissing,
            MountError::Npk(errno)
            | MountError::Mount(errno)
            | MountError::LoopAttach(errno)
            | MountError::LoopControl(errno) => io_error(errno),
            MountError::DeviceMapper { errno, .. } | MountError::Umount(errno) => io_error(errno),
            _ => Error::Io(Errno::INVAL.raw_os_error() as u16),
        })
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn umount(&mut self, slot: u64, id: u32, package: PackageId) {
        if let Some((name, version)) = self.user_of(package.name, &package.version) {
            let busy = OwnedError::busy(name, version);
            return self.reply_error_owned(slot, id, busy);
        }
        let Some(index) = self
            .mounts
            .iter()
            .position(|m| m.name == package.name && m.version == package.version)
        else {
            let known = self.packages.find(package.name, &package.version).is_some();
            let e = if known {
                Error::NotMounted
            } else {
                Error::UnknownPackage
            };
            return self.reply(slot, id, &Reply::Error(e));
        };
        let entry = self.mounts.swap_remove(index);
        if let Err(e) = self.unmount_entry(&entry) {
            // Still mounted: keep it in the table.
            let _ = self.mounts.push(entry);
            return self.reply(slot, id, &Reply::Error(e));
        }
        self.reply(slot, id, &Reply::Ok);
        self.notify(Notification::Umounted(PackageId {
            name: &entry.name,
            version: entry.version,
        }));
    }

    #[inline(never)] // Its buffers are stack-probed only when it runs (idle RSS).
    fn unmount_entry(&self, entry: &MountEntry) -> Result<(), Error<'static>> {
        let p = Package {
            name: entry.name.clone(),
            version: entry.version,
            repository: 0,
            file: String::new(),
            size: 0,
        };
        let mut target = [0u8; MAX_PATH_LEN + 1];
        let target = mount_point(self.config.run_dir, &p, &mut target)
            .ok_or(Error::Io(Errno::NAMETOOLONG.raw_os_error() as u16))?;
        mount::umount(target, &entry.mounted).map_err(|e| match e {
            MountError::Umount(errno) | MountError::DeviceMapper { errno, .. } => io_error(errno),
            _ => Error::Io(Errno::INVAL.raw_os_error() as u16),
        })?;
        let _ = rustix::fs::rmdir(target);
        Ok(())
    }

    fn unmount_all(&mut self) {
        while let Some(entry) = self.mounts.pop() {
            if let Err(e) = self.unmount_entry(&entry) {
                errln!(
                    "nanostar: cannot unmount {} {}: {}",
                    entry.name,
                    entry.version,
                    crate::text::error_text(&e)
                );
            }
        }
    }
}

/// `recvmsg(2)` of the next bytes from a client, keeping the first descriptor it passes
/// (`SCM_RIGHTS`, for an install) and closing any others.
fn receive(client: &mut Client, bytes: &mut [u8]) -> Result<usize, Errno> {
    if client.device {
        return rustix::io::read(&client.fd, bytes);
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(bytes)];
    let received = rustix::net::recvmsg(
        &client.fd,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                if client.passed_fd.is_none() {
                    client.passed_fd = Some(fd);
                }
            }
        }
    }
    Ok(received.bytes)
}

/// Tells a client that could not be taken why, without blocking (best effort).
fn refuse_full(fd: &OwnedFd) {
    let mut wire = [0u8; 64];
    let message = Message::Reply {
        id: 0,
        reply: Reply::Error(Error::Full(Table::Clients)),
    };
    if let Ok(bytes) = message.encode(&mut wire) {
        let _ = rustix::net::send(fd, bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT);
    }
}

/// `dir/file` as a C string in `buf`.
fn join<'b>(dir: &str, file: &str, buf: &'b mut [u8; MAX_PATH_LEN + 1]) -> Option<&'b CStr> {
    let len = dir.len() + 1 + file.len();
    if len > MAX_PATH_LEN {
        return None;
    }
    buf[..dir.len()].copy_from_slice(dir.as_bytes());
    buf[dir.len()] = b'/';
    buf[dir.len() + 1..len].copy_from_slice(file.as_bytes());
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}

/// `RUN_DIR/mnt/NAME-VERSION`: where a package's image is mounted.
fn mount_point<'b>(
    run_dir: &str,
    p: &Package,
    buf: &'b mut [u8; MAX_PATH_LEN + 1],
) -> Option<&'b CStr> {
    let mut name: String<{ MAX_PATH_LEN }> = String::new();
    write!(name, "mnt/{}-{}", p.name, p.version).ok()?;
    join(run_dir, &name, buf)
}

/// An error reply whose borrowed text is owned here, for as long as the reply is built.
enum OwnedError {
    /// Borrows nothing.
    Plain(Error<'static>),
    /// `Error::Busy` naming the user.
    Busy(String<{ crate::limits::MAX_NAME_LEN }>, Version),
}

impl OwnedError {
    /// `Busy` naming the package `name` `version` as the user.
    fn busy(name: &str, version: Version) -> OwnedError {
        let mut user = String::new();
        // Cannot overflow: package names fit.
        let _ = user.push_str(name);
        OwnedError::Busy(user, version)
    }
}

fn io_error(e: Errno) -> Error<'static> {
    Error::Io(e.raw_os_error() as u16)
}

fn rejected(r: Rejection) -> Error<'static> {
    match r {
        Rejection::Io(e) => io_error(e),
        Rejection::Header(h) => Error::BadPackage(PackageError::from(h)),
        Rejection::Content(c) => Error::BadPackage(PackageError::from(c)),
        Rejection::Duplicate => Error::AlreadyInstalled,
        Rejection::TableFull => Error::Full(Table::Packages),
        Rejection::FileName => Error::Io(Errno::NAMETOOLONG.raw_os_error() as u16),
        Rejection::WrongArch(arch) => Error::BadPackage(PackageError::ArchMismatch {
            package: arch.code(),
            runtime: nanostar_protocol::npk::Arch::native().map_or(u16::MAX, |a| a.code()),
        }),
        Rejection::NotAsAnnounced => Error::BadPackage(PackageError::NotAsAnnounced),
    }
}

fn install_error(e: InstallError) -> Error<'static> {
    match e {
        InstallError::TooLarge => Error::TooLarge,
        InstallError::Overrun | InstallError::Incomplete => {
            Error::ProtocolViolation(Violation::InstallSize)
        }
        InstallError::Rejected(r) => rejected(r),
        InstallError::Io(Errno::NOSPC) => Error::RepositoryFull,
        InstallError::Io(e) => io_error(e),
    }
}
