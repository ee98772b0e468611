//! The soak: several concurrent clients drive a live runtime with random install,
//! uninstall, start, stop, kill, logs (and follow), mount, umount, list and inspect
//! requests for a bounded time, then the runtime's descriptors, memory, loop devices,
//! mounts and cgroups are compared with what they were before (`nanostar-soak`,
//! docs/design.md "Tests, in layers").
//!
//! Every client owns two app packages (`sN-a`, which mounts the shared resource package
//! `soak-res`, and `sN-b`) and keeps a model of them: installed, mounted, running. Each
//! answer is checked against the model, so a reply that contradicts the state is caught,
//! not only a crash. A refusal the model predicts (`AlreadyInstalled`, `NotRunning`,
//! `Busy`, ...) is counted, not failed; so are refusals about the shared resource, whose
//! state other clients change. A lost connection, a malformed frame, a reply to nobody, no
//! reply within [`REPLY_TIMEOUT`], or an answer the model does not allow is a failure.
//!
//! Where: on this host ([`Target::Host`]: the runtime is started here, as root, in
//! private mount and PID namespaces), against a runtime that is already running
//! ([`Target::Attach`]), or on a QEMU board ([`Target::Board`]: the runtime is PID 1 and
//! every client is a session multiplexed over the one virtio console; the resources are
//! read inside the board by a measuring container, `soak-measure`, which bind-mounts the
//! board's `/proc` and cgroup directory read-only and holds `CAP_SYS_PTRACE` and
//! `CAP_DAC_READ_SEARCH` to read PID 1's descriptors and memory: privileges of the
//! measurement only, never of the packages under soak).
//!
//! The same seed gives every client the same sequence of choices; the interleaving of
//! the clients (and so which refusals happen) is up to the scheduler.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ed25519_compact::KeyPair;
use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, FrameDecoder, Hello, Message, Notification, PackageId,
    Reply, Request,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::Arch;
use nanostar_protocol::version::Version;

use crate::board::{Board, BootSpec, Hvc, Report, RunOptions};
use crate::manifest::SourceManifest;
use crate::package::{PackInput, pack};

/// How long any one reply may take before the soak calls it a failure: generous, for a
/// board emulated on a loaded 2-core machine.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a container may take to report its exit after a stop, kill or follow.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the runtime or the board may take to come up.
const SERVING_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest growth of the runtime's private dirty memory (and of its RSS) from before
/// to after the clients that still counts as "back where it started": pages of lazily
/// used tables and of the stack touched for the first time by a rare path.
pub const MEMORY_TOLERANCE_KB: u64 = 64;
/// What the warm-up has each app write, so its log ring (16 KiB in the runtime) has
/// wrapped before the first measurement: a ring's pages are touched only as output first
/// reaches them, which over a long soak looked like growth.
const RING_FILL_BYTES: &str = "65536";
/// The version of every package the soak makes.
const VERSION: Version = Version::new(1, 0, 0);
/// The shared resource package.
const RESOURCE: &str = "soak-res";
/// The board's measuring package.
const MEASURE: &str = "soak-measure";
/// The repository the soak installs into.
const REPOSITORY: &str = "default";

/// What to soak, for how long, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the clients run.
    pub duration: Duration,
    /// Concurrent clients (each with two packages of its own).
    pub clients: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// The probe (`tests/probe`) built for the runtime's architecture: every app.
    pub probe: PathBuf,
    /// Where the runtime is.
    pub target: Target,
    /// Print every failure as it happens (they are always in the summary).
    pub verbose: bool,
    /// Keep every frame sent and received, one file each, in `DIR/console_frame/` and
    /// `DIR/console_client/` (inputs for the fuzz corpus).
    pub capture: Option<PathBuf>,
}

/// Where the runtime under soak runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start this x86_64 device build here (as root), in private mount and PID
    /// namespaces, with a configuration of the soak's own in a temporary directory.
    Host {
        /// The `nanostar` binary.
        runtime: PathBuf,
    },
    /// A runtime that is already running and serving `socket`, pid `pid`. Its repository
    /// `default` must accept unsigned packages; loop devices are counted system-wide.
    Attach {
        /// Its console socket.
        socket: PathBuf,
        /// Its pid, for `/proc/PID`.
        pid: u32,
        /// Its cgroup directory, if it has one.
        cgroup: Option<PathBuf>,
    },
    /// Boot this QEMU board (a folder under `board/`) with `runtime` (the board's device
    /// build) as PID 1, and soak it over its virtio console.
    Board {
        /// The board's name.
        board: String,
        /// The board's `nanostar` binary.
        runtime: PathBuf,
    },
}

/// What a soak did and found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Operations by kind: (done as the model predicted, refused for a sound reason).
    pub operations: BTreeMap<&'static str, (u64, u64)>,
    /// The refusals by the runtime's error, as Debug text.
    pub refusals: BTreeMap<String, u64>,
    /// Failures, in the order they happened.
    pub failures: Vec<String>,
    /// The resources before the clients ran (after the warm-up).
    pub before: Option<Snapshot>,
    /// The resources after the clients ran and cleaned up; `None` if they could not be
    /// measured.
    pub after: Option<Snapshot>,
    /// Differences between the two that are beyond the tolerance.
    pub leaks: Vec<String>,
    /// How long the clients ran.
    pub elapsed: Duration,
    /// Notifications received, by kind.
    pub notifications: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// No failure and nothing left behind.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.leaks.is_empty() && self.after.is_some()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.operations.values().map(|(a, b)| a + b).sum();
        writeln!(
            f,
            "soak: {total} operations in {:.1} s ({:.1}/s)",
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64().max(0.001)
        )?;
        writeln!(f, "  {:<12} {:>8} {:>8}", "operation", "done", "refused")?;
        for (op, (done, refused)) in &self.operations {
            writeln!(f, "  {op:<12} {done:>8} {refused:>8}")?;
        }
        if !self.refusals.is_empty() {
            writeln!(f, "  refusals by reason:")?;
            for (why, n) in &self.refusals {
                writeln!(f, "    {n:>8}  {why}")?;
            }
        }
        if !self.notifications.is_empty() {
            let list: Vec<String> = self
                .notifications
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "  notifications: {}", list.join(", "))?;
        }
        if let (Some(b), Some(a)) = (&self.before, &self.after) {
            writeln!(f, "  {:<22} {:>10} {:>10}", "resource", "before", "after")?;
            let rows = [
                ("descriptors", b.fds.to_string(), a.fds.to_string()),
                (
                    "private dirty (KiB)",
                    b.private_dirty_kb.to_string(),
                    a.private_dirty_kb.to_string(),
                ),
                ("RSS (KiB)", b.rss_kb.to_string(), a.rss_kb.to_string()),
                (
                    "mounts",
                    b.mounts.len().to_string(),
                    a.mounts.len().to_string(),
                ),
                (
                    "loop devices",
                    b.loops.len().to_string(),
                    a.loops.len().to_string(),
                ),
                ("dm devices", b.dm.len().to_string(), a.dm.len().to_string()),
                (
                    "cgroups",
                    b.cgroups.len().to_string(),
                    a.cgroups.len().to_string(),
                ),
                (
                    "repository files",
                    b.files.len().to_string(),
                    a.files.len().to_string(),
                ),
            ];
            for (what, before, after) in rows {
                writeln!(f, "  {what:<22} {before:>10} {after:>10}")?;
            }
            writeln!(
                f,
                "  (memory within {MEMORY_TOLERANCE_KB} KiB, everything else exact)"
            )?;
        }
        for leak in &self.leaks {
            writeln!(f, "  LEFT BEHIND: {leak}")?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILURE: {failure}")?;
        }
        write!(
            f,
            "soak: {}",
            if self.passed() { "passed" } else { "FAILED" }
        )
    }
}

/// What the runtime holds, as far as the soak can see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Open descriptors.
    pub fds: u64,
    /// `Private_Dirty` of `/proc/PID/smaps_rollup`.
    pub private_dirty_kb: u64,
    /// `Rss` of the same.
    pub rss_kb: u64,
    /// Its mount table (mount point and file system type of each), sorted.
    pub mounts: Vec<String>,
    /// Attached loop devices (and their backing files where known), sorted.
    pub loops: Vec<String>,
    /// device-mapper devices, sorted.
    pub dm: Vec<String>,
    /// cgroups under its cgroup directory, sorted.
    pub cgroups: Vec<String>,
    /// Files in its repository directory (temporary files of installs included), sorted;
    /// empty where the soak cannot see them.
    pub files: Vec<String>,
}

impl Snapshot {
    /// What `after` holds that `self` did not (or lost), beyond the tolerance.
    fn leaks(&self, after: &Snapshot) -> Vec<String> {
        let mut leaks = Vec::new();
        if after.fds != self.fds {
            leaks.push(format!("descriptors {} -> {}", self.fds, after.fds));
        }
        for (what, b, a) in [
            (
                "private dirty memory",
                self.private_dirty_kb,
                after.private_dirty_kb,
            ),
            ("RSS", self.rss_kb, after.rss_kb),
        ] {
            if a > b + MEMORY_TOLERANCE_KB {
                leaks.push(format!("{what} {b} KiB -> {a} KiB"));
            }
        }
        for (what, b, a) in [
            ("mounts", &self.mounts, &after.mounts),
            ("loop devices", &self.loops, &after.loops),
            ("dm devices", &self.dm, &after.dm),
            ("cgroups", &self.cgroups, &after.cgroups),
            ("repository files", &self.files, &after.files),
        ] {
            if a != b {
                let added: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
                let gone: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
                leaks.push(format!("{what}: added {added:?}, gone {gone:?}"));
            }
        }
        leaks
    }
}

// ---- randomness ----------------------------------------------------------------------

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items` by weight.
    fn weighted<T: Copy>(&mut self, items: &[(T, u64)]) -> T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(total);
        for &(item, weight) in items {
            if pick < weight {
                return item;
            }
            pick -= weight;
        }
        items[items.len() - 1].0
    }
}

// ---- the link: one console connection shared by sessions --------------------------------

/// A failure of the link, for every session on it.
type Failure = String;

/// One console connection. Its reader thread routes each reply by id to the session
/// that asked, and records exits from the notifications; any session may write. On a
/// board every client shares one link (the one virtio console); on a host each has its
/// own.
struct Link {
    writer: Mutex<Box<dyn Write + Send>>,
    next_id: AtomicU32,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>,
    /// Exits by package name: how many, and the last status.
    exits: Mutex<HashMap<String, (u64, ExitStatus)>>,
    exit_seen: Condvar,
    /// Why the reader stopped, once it did.
    dead: Mutex<Option<Failure>>,
    /// One streamed install at a time on a connection (the protocol's rule).
    installing: Mutex<()>,
    /// One log read at a time on a connection (the protocol's rule: a second one is
    /// refused with `Full(LogReads)`).
    reading_log: Mutex<()>,
    /// Failures the reader found (frames nobody asked for, undecodable frames).
    failures: Mutex<Vec<Failure>>,
    notifications: Mutex<BTreeMap<&'static str, u64>>,
    capture: Option<Capture>,
    /// Set when the soak is over: the reader's end is then no failure.
    closing: AtomicBool,
}

/// Where captured frames go.
#[derive(Debug, Clone)]
struct Capture {
    dir: PathBuf,
    count: Arc<AtomicU32>,
}

impl Capture {
    /// Keeps a frame (COBS-encoded, with its delimiter) of one direction.
    fn keep(&self, direction: &str, wire: &[u8]) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(direction);
        let _ = std::fs::create_dir_all(&dir);
        // A leading byte for the fuzz targets' read size: the whole frame in one read.
        let mut data = vec![255u8];
        data.extend_from_slice(wire);
        let _ = std::fs::write(dir.join(format!("{n:06}")), data);
    }
}

impl Link {
    /// Does the handshake on `stream` (`device`: as on a console device, which outlives
    /// its connections) and starts the reader; subscribed to notifications.
    fn open(mut stream: UnixStream, device: bool, capture: Option<Capture>) -> Result<Arc<Link>> {
        let mut decoder = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
        let mut pending = Vec::new();
        let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
        if device {
            stream.write_all(&[0])?;
        }
        let hello = Message::Hello(Hello {
            protocol_version: nanostar_protocol::console::PROTOCOL_VERSION,
            client: "nanostar-soak",
        });
        stream.write_all(
            hello
                .encode(&mut wire)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        )?;
        // Skip frames meant for an earlier session on a device, up to the Welcome.
        loop {
            let frame =
                read_frame(&mut stream, &mut decoder, &mut pending).context("the handshake")?;
            match Message::decode(&frame) {
                Ok(Message::Welcome(_)) => break,
                _ if device => {}
                other => bail!("the handshake: {other:?}"),
            }
        }
        let writer: Box<dyn Write + Send> = Box::new(stream.try_clone()?);
        let link = Arc::new(Link {
            writer: Mutex::new(writer),
            next_id: AtomicU32::new(1),
            waiting: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
            exit_seen: Condvar::new(),
            dead: Mutex::new(None),
            installing: Mutex::new(()),
            reading_log: Mutex::new(()),
            failures: Mutex::new(Vec::new()),
            notifications: Mutex::new(BTreeMap::new()),
            capture,
            closing: AtomicBool::new(false),
        });
        let reader = link.clone();
        std::thread::spawn(move || reader.read_all(stream, decoder, pending));
        let reply = link.ask(Request::Subscribe).map_err(anyhow::Error::msg)?;
        ensure!(
            matches!(reply_of(&reply), Some(Reply::Ok)),
            "subscribe: {}",
            debug_reply(&reply)
        );
        Ok(link)
    }

    fn id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes one message.
    fn send(&self, message: &Message) -> Result<(), Failure> {
        let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
        let bytes = message
            .encode(&mut wire)
            .map_err(|e| format!("cannot encode {message:?}: {e:?}"))?;
        if let Some(c) = &self.capture {
            c.keep("console_frame", bytes);
        }
        self.writer
            .lock()
            .unwrap()
            .write_all(bytes)
            .map_err(|e| format!("connection lost while writing: {e}"))
    }

    /// Sends a request under a new id and returns the channel its replies come on.
    fn start(&self, request: Request) -> Result<(u32, mpsc::Receiver<Vec<u8>>), Failure> {
        let id = self.id();
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        if let Err(e) = self.send(&Message::Request { id, request }) {
            self.waiting.lock().unwrap().remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// The next reply frame on `rx` (install progress skipped).
    fn next(&self, id: u32, rx: &mpsc::Receiver<Vec<u8>>) -> Result<Vec<u8>, Failure> {
        loop {
            match rx.recv_timeout(REPLY_TIMEOUT) {
                Ok(frame) => {
                    if matches!(reply_of(&frame), Some(Reply::InstallProgress { .. })) {
                        continue;
                    }
                    return Ok(frame);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no reply to request {id} within {REPLY_TIMEOUT:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let why = self.dead.lock().unwrap().clone();
                    return Err(why.unwrap_or_else(|| "connection lost".into()));
                }
            }
        }
    }

    /// Forgets request `id`: no more replies are expected for it.
    fn done(&self, id: u32) {
        self.waiting.lock().unwrap().remove(&id);
    }

    /// One request, one reply (its frame).
    fn ask(&self, request: Request) -> Result<Vec<u8>, Failure> {
        let (id, rx) = self.start(request)?;
        let reply = self.next(id, &rx);
        self.done(id);
        reply
    }

    /// The number of exits of `name` seen so far.
    fn exits(&self, name: &str) -> u64 {
        self.exits.lock().unwrap().get(name).map_or(0, |e| e.0)
    }

    /// Waits until `name` has exited more than `seen` times; the last status.
    fn wait_exit(&self, name: &str, seen: u64) -> Result<ExitStatus, Failure> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut exits = self.exits.lock().unwrap();
        loop {
            if let Some(&(n, status)) = exits.get(name)
                && n > seen
            {
                return Ok(status);
            }
            if let Some(why) = self.dead.lock().unwrap().clone() {
                return Err(why);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("{name}: no exit notification within {EXIT_TIMEOUT:?}"))?;
            exits = self
                .exit_seen
                .wait_timeout(exits, left.min(Duration::from_millis(500)))
                .unwrap()
                .0;
        }
    }

    /// The reader thread: every frame to its waiter; exits and other notifications
    /// recorded.
    fn read_all<S: Read>(
        self: Arc<Link>,
        mut stream: S,
        mut decoder: FrameDecoder<Vec<u8>>,
        mut pending: Vec<u8>,
    ) {
        let why = loop {
            let frame = match read_frame(&mut stream, &mut decoder, &mut pending) {
                Ok(f) => f,
                Err(e) => break format!("connection lost: {e:#}"),
            };
            if let Some(c) = &self.capture {
                let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
                if let Some(w) = nanostar_protocol::console::encode_frame(&frame, &mut wire) {
                    c.keep("console_client", w);
                }
            }
            match Message::decode(&frame) {
                Ok(Message::Reply { id, .. }) => {
                    let waiting = self.waiting.lock().unwrap();
                    match waiting.get(&id) {
                        Some(tx) => {
                            let _ = tx.send(frame.clone());
                        }
                        None => self
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("a reply nobody asked for: {}", debug_reply(&frame))),
                    }
                }
                Ok(Message::Notification(n)) => {
                    let kind = notification_kind(&n);
                    *self.notifications.lock().unwrap().entry(kind).or_default() += 1;
                    if let Notification::Exited { package, status } = n {
                        let mut exits = self.exits.lock().unwrap();
                        let e = exits.entry(package.name.to_string()).or_insert((0, status));
                        *e = (e.0 + 1, status);
                        self.exit_seen.notify_all();
                    }
                    if matches!(n, Notification::ShuttingDown) {
                        self.closing.store(true, Ordering::Relaxed);
                    }
                }
                other => self
                    .failures
                    .lock()
                    .unwrap()
                    .push(format!("an unexpected frame {frame:02x?}: {other:?}")),
            }
        };
        if !self.closing.load(Ordering::Relaxed) {
            *self.dead.lock().unwrap() = Some(why);
        } else {
            *self.dead.lock().unwrap() = Some("the runtime shut down".into());
        }
        // Every waiter learns it from its closed channel.
        self.waiting.lock().unwrap().clear();
        self.exit_seen.notify_all();
    }
}

/// The next whole frame from `stream`; corrupt frames are an error (a runtime never
/// sends one).
fn read_frame<S: Read>(
    stream: &mut S,
    decoder: &mut FrameDecoder<Vec<u8>>,
    pending: &mut Vec<u8>,
) -> Result<Vec<u8>> {
    loop {
        // The decoder takes every byte it does not return a frame for.
        if !pending.is_empty() {
            let mut input = &pending[..];
            let frame = decoder.decode(&mut input).map(|r| r.map(|f| f.to_vec()));
            let used = pending.len() - input.len();
            pending.drain(..used);
            match frame {
                Some(Ok(frame)) => return Ok(frame),
                Some(Err(e)) => bail!("a corrupt frame from the runtime: {e:?}"),
                None => {}
            }
        }
        let mut buf = [0u8; 16384];
        match stream.read(&mut buf) {
            Ok(0) => bail!("closed by the runtime"),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The reply in a reply frame.
fn reply_of(frame: &[u8]) -> Option<Reply<'_>> {
    match Message::decode(frame) {
        Ok(Message::Reply { reply, .. }) => Some(reply),
        _ => None,
    }
}

fn debug_reply(frame: &[u8]) -> String {
    match Message::decode(frame) {
        Ok(Message::Reply { reply, .. }) => format!("{reply:?}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("an undecodable frame ({e:?}): {frame:02x?}"),
    }
}

fn notification_kind(n: &Notification) -> &'static str {
    match n {
        Notification::Installed { .. } => "installed",
        Notification::Uninstalled(_) => "uninstalled",
        Notification::Mounted(_) => "mounted",
        Notification::Umounted(_) => "umounted",
        Notification::ShuttingDown => "shutting-down",
        Notification::Started { .. } => "started",
        Notification::Exited { .. } => "exited",
        Notification::OutOfMemory(_) => "out-of-memory",
        Notification::GaveUp { .. } => "gave-up",
    }
}

// ---- one client ----------------------------------------------------------------------

/// What a client believes about one of its packages.
#[derive(Debug, Clone, Copy, Default)]
struct Model {
    installed: bool,
    mounted: bool,
    running: bool,
}

/// An operation a client can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Install,
    Uninstall,
    Start,
    Stop,
    Kill,
    Logs,
    Follow,
    Mount,
    Umount,
    List,
    Inspect,
    Resource,
    Repositories,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Install => "install",
            Op::Uninstall => "uninstall",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Kill => "kill",
            Op::Logs => "logs",
            Op::Follow => "logs-follow",
            Op::Mount => "mount",
            Op::Umount => "umount",
            Op::List => "list",
            Op::Inspect => "inspect",
            Op::Resource => "resource",
            Op::Repositories => "repositories",
        }
    }
}

/// How often each operation is chosen.
const WEIGHTS: &[(Op, u64)] = &[
    (Op::Install, 10),
    (Op::Uninstall, 6),
    (Op::Start, 12),
    (Op::Stop, 8),
    (Op::Kill, 6),
    (Op::Logs, 8),
    (Op::Follow, 4),
    (Op::Mount, 6),
    (Op::Umount, 6),
    (Op::List, 10),
    (Op::Inspect, 8),
    (Op::Resource, 4),
    (Op::Repositories, 2),
];

/// Signals `kill` sends; each ends the probe (default action), so its exit names it.
const SIGNALS: [u8; 4] = [1, 2, 9, 15];

/// The outcome of one operation.
enum Outcome {
    /// As the model predicted.
    Done,
    /// Refused for a sound reason (the error, as Debug text).
    Refused(String),
}

/// A client of the soak: its packages, their model, its counts.
struct Client {
    index: usize,
    link: Arc<Link>,
    rng: Rng,
    packages: Vec<(String, Arc<Vec<u8>>)>,
    models: Vec<Model>,
    counts: BTreeMap<&'static str, (u64, u64)>,
    refusals: BTreeMap<String, u64>,
    failures: Vec<String>,
    verbose: bool,
}

impl Client {
    fn run(mut self, until: Instant, stop: Arc<AtomicBool>) -> Client {
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let op = self.rng.weighted(WEIGHTS);
            let which = self.rng.below(self.packages.len() as u64) as usize;
            match self.op(op, which) {
                Ok(Outcome::Done) => self.counts.entry(op.name()).or_default().0 += 1,
                Ok(Outcome::Refused(why)) => {
                    self.counts.entry(op.name()).or_default().1 += 1;
                    *self.refusals.entry(why).or_default() += 1;
                }
                Err(failure) => {
                    let text = format!(
                        "client {} {} {}: {failure}",
                        self.index,
                        op.name(),
                        self.packages[which].0
                    );
                    if self.verbose {
                        eprintln!("soak: {text}");
                    }
                    self.failures.push(text);
                    if self.link.dead.lock().unwrap().is_some() {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    // The model may be wrong now: learn the truth before going on.
                    if let Err(e) = self.resync() {
                        self.failures.push(format!("client {}: {e}", self.index));
                        break;
                    }
                }
            }
        }
        self
    }

    fn name(&self, which: usize) -> &str {
        &self.packages[which].0
    }

    fn id(&self, which: usize) -> PackageId<'_> {
        PackageId {
            name: self.name(which),
            version: VERSION,
        }
    }

    /// Sets the model from `list` (after a failure).
    fn resync(&mut self) -> Result<(), Failure> {
        let listed = list_all(&self.link)?;
        for which in 0..self.packages.len() {
            let name = self.packages[which].0.clone();
            let m = &mut self.models[which];
            match listed.iter().find(|p| p.name == name) {
                Some(p) => {
                    m.installed = true;
                    m.mounted = p.mounted;
                    m.running = p.state.is_some_and(|s| s != ContainerState::Stopped);
                }
                None => *m = Model::default(),
            }
        }
        Ok(())
    }

    fn op(&mut self, op: Op, which: usize) -> Result<Outcome, Failure> {
        let m = self.models[which];
        let link = self.link.clone();
        match op {
            Op::Install => {
                let replace = self.rng.below(3) == 0;
                let npk = self.packages[which].1.clone();
                let reply = install(&link, self.id(which), &npk, replace)?;
                match reply_of(&reply) {
                    Some(Reply::Installed(p)) if !m.installed || replace && !m.running => {
                        expect(p == self.id(which), &reply)?;
                        self.models[which] = Model {
                            installed: true,
                            mounted: false,
                            running: false,
                        };
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::AlreadyInstalled)) if m.installed && !replace => {
                        refused(e)
                    }
                    Some(Reply::Error(e @ Error::AlreadyRunning)) if m.running && replace => {
                        refused(e)
                    }
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Uninstall => {
                let wipe = self.rng.below(2) == 0;
                let reply = link.ask(Request::Uninstall {
                    package: self.id(which),
                    wipe,
                })?;
                match reply_of(&reply) {
                    Some(Reply::Ok) if m.installed && !m.running => {
                        self.models[which] = Model::default();
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    Some(Reply::Error(e @ Error::Busy { used_by }))
                        if m.running && used_by.name == self.name(which) =>
                    {
                        refused(e)
                    }
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Start => {
                let reply = link.ask(Request::Start {
                    name: self.name(which),
                    version: None,
                    args: None,
                    env: heapless::Vec::new(),
                })?;
                match reply_of(&reply) {
                    Some(Reply::Ok) if m.installed && !m.running => {
                        self.models[which].running = true;
                        self.models[which].mounted = true;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    Some(Reply::Error(e @ Error::AlreadyRunning)) if m.running => refused(e),
                    Some(Reply::Error(e @ Error::Full(_))) if m.installed => refused(e),
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Stop => {
                let timeout_ms = [None, Some(0), Some(100), Some(2000)][self.rng.below(4) as usize];
                let seen = link.exits(self.name(which));
                let reply = link.ask(Request::Stop {
                    name: self.name(which),
                    version: None,
                    timeout_ms,
                })?;
                match reply_of(&reply) {
                    Some(Reply::Stopped(status)) if m.running => {
                        expect(
                            matches!(status, ExitStatus::Signal(15) | ExitStatus::Signal(9)),
                            &reply,
                        )?;
                        let noticed = link.wait_exit(self.name(which), seen)?;
                        expect(noticed == status, &reply)?;
                        self.models[which].running = false;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::NotRunning)) if !m.running => refused(e),
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    Some(Reply::Error(e @ Error::Full(_))) if m.running => refused(e),
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Kill => {
                let signal = SIGNALS[self.rng.below(SIGNALS.len() as u64) as usize];
                let seen = link.exits(self.name(which));
                let reply = link.ask(Request::Kill {
                    name: self.name(which),
                    version: None,
                    signal,
                })?;
                match reply_of(&reply) {
                    Some(Reply::Ok) if m.running => {
                        let status = link
                            .wait_exit(self.name(which), seen)
                            .map_err(|e| format!("after signal {signal}: {e}"))?;
                        expect(status == ExitStatus::Signal(signal), &reply)
                            .map_err(|e| format!("{e}; exit {status:?}"))?;
                        self.models[which].running = false;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::NotRunning)) if !m.running => refused(e),
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Logs => {
                let tail = self.rng.below(2) == 0;
                let name = self.name(which).to_string();
                let request = if tail {
                    Request::TailLogs {
                        name: &name,
                        version: None,
                        follow: false,
                        lines: Some(1 + self.rng.below(8) as u32),
                    }
                } else {
                    Request::Logs {
                        name: &name,
                        version: None,
                        follow: false,
                    }
                };
                match read_log(&link, request)? {
                    LogRead::End(_) => Ok(Outcome::Done),
                    LogRead::Refused(frame) => match reply_of(&frame) {
                        Some(Reply::Error(e @ (Error::UnknownPackage | Error::NotRunning))) => {
                            refused(e)
                        }
                        _ => contradiction(&m, &frame),
                    },
                    LogRead::Ended(_, status, frame) => Err(format!(
                        "a log without follow ended with {status:?}: {}",
                        debug_reply(&frame)
                    )),
                }
            }
            Op::Follow => self.follow(which),
            Op::Mount => {
                let reply = link.ask(Request::Mount(self.id(which)))?;
                match reply_of(&reply) {
                    Some(Reply::Ok) if m.installed && !m.mounted => {
                        self.models[which].mounted = true;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::AlreadyMounted)) if m.mounted => refused(e),
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Umount => {
                let reply = link.ask(Request::Umount(self.id(which)))?;
                match reply_of(&reply) {
                    Some(Reply::Ok) if m.mounted && !m.running => {
                        self.models[which].mounted = false;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::NotMounted)) if m.installed && !m.mounted => {
                        refused(e)
                    }
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    Some(Reply::Error(e @ Error::Busy { used_by }))
                        if m.running && used_by.name == self.name(which) =>
                    {
                        refused(e)
                    }
                    _ => contradiction(&m, &reply),
                }
            }
            Op::List => {
                let listed = list_all(&link)?;
                for (i, (name, _)) in self.packages.iter().enumerate() {
                    let m = self.models[i];
                    let found = listed.iter().find(|p| &p.name == name);
                    let state = found.and_then(|p| p.state);
                    let ok = match found {
                        None => !m.installed,
                        Some(p) => {
                            m.installed
                                && p.mounted == m.mounted
                                && (state == Some(ContainerState::Running)) == m.running
                        }
                    };
                    if !ok {
                        return Err(format!(
                            "list contradicts the model of {name} ({m:?}): {found:?}"
                        ));
                    }
                }
                if !listed.iter().any(|p| p.name == RESOURCE) {
                    return Err(format!("list lacks {RESOURCE}"));
                }
                Ok(Outcome::Done)
            }
            Op::Inspect => {
                let reply = link.ask(Request::Inspect {
                    name: self.name(which),
                    version: None,
                    manifest_offset: 0,
                })?;
                match reply_of(&reply) {
                    Some(Reply::Inspected(i)) if m.installed => {
                        let running = i
                            .package
                            .container
                            .is_some_and(|c| c.state == ContainerState::Running);
                        expect(
                            i.package.package == self.id(which)
                                && i.package.mounted == m.mounted
                                && running == m.running,
                            &reply,
                        )?;
                        Ok(Outcome::Done)
                    }
                    Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => refused(e),
                    _ => contradiction(&m, &reply),
                }
            }
            Op::Resource => {
                let package = PackageId {
                    name: RESOURCE,
                    version: VERSION,
                };
                let reply = if self.rng.below(2) == 0 {
                    link.ask(Request::Mount(package))?
                } else {
                    link.ask(Request::Umount(package))?
                };
                // Other clients' containers use it: any of these is sound.
                match reply_of(&reply) {
                    Some(Reply::Ok) => Ok(Outcome::Done),
                    Some(Reply::Error(
                        e @ (Error::AlreadyMounted | Error::NotMounted | Error::Busy { .. }),
                    )) => refused(e),
                    _ => Err(format!("{RESOURCE}: {}", debug_reply(&reply))),
                }
            }
            Op::Repositories => {
                let reply = link.ask(Request::Repositories)?;
                match reply_of(&reply) {
                    Some(Reply::Repositories { repositories })
                        if repositories.iter().any(|r| r.name == REPOSITORY) =>
                    {
                        Ok(Outcome::Done)
                    }
                    _ => Err(format!("repositories: {}", debug_reply(&reply))),
                }
            }
        }
    }

    /// Runs the app once to fill its log ring (warm-up; [`RING_FILL_BYTES`]).
    fn fill_log(&mut self, which: usize) -> Result<(), Failure> {
        let link = self.link.clone();
        let name = self.name(which).to_string();
        let seen = link.exits(&name);
        let mut args = heapless::Vec::new();
        for a in ["flood", RING_FILL_BYTES] {
            let _ = args.push(a);
        }
        let reply = link.ask(Request::Start {
            name: &name,
            version: None,
            args: Some(args),
            env: heapless::Vec::new(),
        })?;
        if !matches!(reply_of(&reply), Some(Reply::Ok)) {
            return Err(format!(
                "filling the log of {name}: {}",
                debug_reply(&reply)
            ));
        }
        self.models[which].mounted = true;
        match link.wait_exit(&name, seen)? {
            ExitStatus::Code(0) => Ok(()),
            other => Err(format!(
                "filling the log of {name}: it ended with {other:?}"
            )),
        }
    }

    /// Starts the app with a short life (a line, a pause, exit 7) and follows its log to
    /// the end; the end must say how it ended, and the log must hold its line.
    fn follow(&mut self, which: usize) -> Result<Outcome, Failure> {
        let m = self.models[which];
        let link = self.link.clone();
        let name = self.name(which).to_string();
        let seen = link.exits(&name);
        let mut args = heapless::Vec::new();
        for a in ["print", "followed", "sleep", "300", "exit", "7"] {
            let _ = args.push(a);
        }
        let reply = link.ask(Request::Start {
            name: &name,
            version: None,
            args: Some(args),
            env: heapless::Vec::new(),
        })?;
        match reply_of(&reply) {
            Some(Reply::Ok) if m.installed && !m.running => {
                self.models[which].mounted = true;
            }
            Some(Reply::Error(e @ Error::UnknownPackage)) if !m.installed => return refused(e),
            Some(Reply::Error(e @ Error::AlreadyRunning)) if m.running => return refused(e),
            Some(Reply::Error(e @ Error::Full(_))) if m.installed => return refused(e),
            _ => return contradiction(&m, &reply),
        }
        let read = read_log(
            &link,
            Request::TailLogs {
                name: &name,
                version: None,
                follow: true,
                lines: Some(16),
            },
        )?;
        let status = link.wait_exit(&name, seen)?;
        let data = match read {
            LogRead::Ended(data, ended, frame) => {
                expect(ended == ExitStatus::Code(7), &frame)?;
                data
            }
            // The app may have ended before the request arrived.
            LogRead::End(data) => data,
            LogRead::Refused(frame) => return Err(format!("follow: {}", debug_reply(&frame))),
        };
        if status != ExitStatus::Code(7) {
            return Err(format!(
                "the followed app ended with {status:?}, not code 7"
            ));
        }
        if !String::from_utf8_lossy(&data).contains("followed\n") {
            return Err(format!(
                "the followed log lacks the app's line: {:?}",
                String::from_utf8_lossy(&data)
            ));
        }
        Ok(Outcome::Done)
    }
}

/// A step of the warm-up.
#[derive(Debug, Clone, Copy)]
enum Warm {
    /// One of the soak's operations on the client's app `which`.
    Op(Op, usize),
    /// [`Client::fill_log`] of app `which`.
    FillLog(usize),
}

/// What reading a log gave.
enum LogRead {
    /// Its bytes, then `LogEnd`.
    End(Vec<u8>),
    /// Its bytes, then `Ended` with this status (its frame).
    Ended(Vec<u8>, ExitStatus, Vec<u8>),
    /// An error reply (its frame).
    Refused(Vec<u8>),
}

fn read_log(link: &Link, request: Request) -> Result<LogRead, Failure> {
    let _one = link.reading_log.lock().unwrap();
    let (id, rx) = link.start(request)?;
    let mut data = Vec::new();
    let result = loop {
        let frame = match link.next(id, &rx) {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        match reply_of(&frame) {
            Some(Reply::Log { data: piece, .. }) => data.extend_from_slice(piece),
            Some(Reply::LogEnd) => break Ok(LogRead::End(data)),
            Some(Reply::Ended(status)) => break Ok(LogRead::Ended(data, status, frame.clone())),
            Some(Reply::Error(_)) => break Ok(LogRead::Refused(frame.clone())),
            _ => break Err(format!("in a log: {}", debug_reply(&frame))),
        }
    };
    link.done(id);
    result
}

/// A package as `list` shows it.
#[derive(Debug)]
struct Listed {
    name: String,
    mounted: bool,
    state: Option<ContainerState>,
}

/// Every page of `list`.
fn list_all(link: &Link) -> Result<Vec<Listed>, Failure> {
    let mut all: Vec<Listed> = Vec::new();
    let mut after: Option<(String, Version)> = None;
    loop {
        let reply = link.ask(Request::List {
            after: after.as_ref().map(|(name, version)| PackageId {
                name,
                version: *version,
            }),
        })?;
        let Some(Reply::Packages { packages, more }) = reply_of(&reply) else {
            return Err(format!("list: {}", debug_reply(&reply)));
        };
        for p in &packages {
            all.push(Listed {
                name: p.package.name.to_string(),
                mounted: p.mounted,
                state: p.container.map(|c| c.state),
            });
        }
        match packages.last() {
            Some(last) if more => {
                after = Some((last.package.name.to_string(), last.package.version))
            }
            _ => return Ok(all),
        }
    }
}

/// Streams `npk` as `package` (`Install`, announced); the final reply's frame (the
/// refusal of the begin, if it was refused).
fn install(link: &Link, package: PackageId, npk: &[u8], replace: bool) -> Result<Vec<u8>, Failure> {
    let _one = link.installing.lock().unwrap();
    let (id, rx) = link.start(Request::Install {
        repository: REPOSITORY,
        size: npk.len() as u64,
        fd: false,
        package,
        replace,
    })?;
    let result = (|| {
        let first = link.next(id, &rx)?;
        if !matches!(reply_of(&first), Some(Reply::InstallAccepted)) {
            return Ok(first);
        }
        for data in npk.chunks(MAX_CHUNK_LEN) {
            link.send(&Message::Request {
                id,
                request: Request::InstallChunk { data },
            })?;
        }
        link.send(&Message::Request {
            id,
            request: Request::InstallEnd,
        })?;
        link.next(id, &rx)
    })();
    link.done(id);
    result
}

fn refused(e: Error) -> Result<Outcome, Failure> {
    Ok(Outcome::Refused(match e {
        // Which package uses it varies; the kind is what counts.
        Error::Busy { .. } => "Busy".into(),
        other => format!("{other:?}"),
    }))
}

fn expect(ok: bool, frame: &[u8]) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected {}", debug_reply(frame)))
    }
}

fn contradiction(m: &Model, frame: &[u8]) -> Result<Outcome, Failure> {
    Err(format!(
        "{} contradicts the model {m:?}",
        debug_reply(frame)
    ))
}

// ---- the packages --------------------------------------------------------------------

/// The soak's packages, packed once.
struct Packages {
    /// Client `i`'s two apps.
    apps: Vec<Vec<(String, Arc<Vec<u8>>)>>,
    resource: Vec<u8>,
    /// The board's measuring package.
    measure: Vec<u8>,
}

fn pack_toml(
    toml: &str,
    root: &Path,
    key: Option<&KeyPair>,
    arch: Option<Arch>,
) -> Result<Vec<u8>> {
    let manifest = SourceManifest::parse(toml)?;
    let packed = pack(
        &PackInput {
            manifest: &manifest,
            root,
            key,
            arch,
        },
        &mut |_| {},
    )?;
    Ok(packed.bytes)
}

impl Packages {
    fn make(options: &Options, work: &Path, key: Option<&KeyPair>) -> Result<Packages> {
        let probe_root = work.join("root-app");
        std::fs::create_dir_all(probe_root.join("bin"))?;
        std::fs::copy(&options.probe, probe_root.join("bin/probe"))
            .with_context(|| format!("cannot copy the probe {}", options.probe.display()))?;
        let mut apps = Vec::new();
        for c in 0..options.clients {
            let mut mine = Vec::new();
            for (suffix, extra) in [
                (
                    "a",
                    "[mounts.\"/res\"]\ntype = \"resource\"\nname = \"soak-res\"\nversion = \"1.0.0\"\ndir = \"/\"\n\
                     [mounts.\"/data\"]\ntype = \"persist\"\n[mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"64K\"\n",
                ),
                (
                    "b",
                    "[mounts.\"/proc\"]\ntype = \"proc\"\n[mounts.\"/dev\"]\ntype = \"dev\"\n",
                ),
            ] {
                let name = format!("s{c}-{suffix}");
                let toml = format!(
                    "name = \"{name}\"\nversion = \"{VERSION}\"\ninit = \"/bin/probe\"\n\
                     args = [\"print\", \"up\", \"pause\"]\nuid = {uid}\ngid = {uid}\n\
                     stop_timeout_ms = 2000\n{extra}",
                    uid = 2000 + c
                );
                let bytes = pack_toml(&toml, &probe_root, key, None)
                    .with_context(|| format!("packing {name}"))?;
                mine.push((name, Arc::new(bytes)));
            }
            apps.push(mine);
        }
        let res_root = work.join("root-res");
        std::fs::create_dir_all(&res_root)?;
        std::fs::write(res_root.join("motd"), "shared by the soak's apps\n")?;
        let resource = pack_toml(
            &format!("name = \"{RESOURCE}\"\nversion = \"{VERSION}\"\nuid = 1000\ngid = 1000\n"),
            &res_root,
            key,
            None,
        )?;
        let measure = pack_toml(
            &format!(
                "name = \"{MEASURE}\"\nversion = \"{VERSION}\"\ninit = \"/bin/probe\"\nuid = 1999\ngid = 1999\n\
                 capabilities = [\"CAP_SYS_PTRACE\", \"CAP_DAC_READ_SEARCH\"]\n\
                 [mounts.\"/host/proc\"]\ntype = \"bind\"\nhost = \"/proc\"\noptions = [\"nosuid\", \"nodev\", \"noexec\"]\n\
                 [mounts.\"/host/cgroup\"]\ntype = \"bind\"\nhost = \"/sys/fs/cgroup/nanostar\"\noptions = [\"nosuid\", \"nodev\", \"noexec\"]\n"
            ),
            &probe_root,
            key,
            None,
        )?;
        Ok(Packages {
            apps,
            resource,
            measure,
        })
    }
}

// ---- where the runtime runs ------------------------------------------------------------

/// How the soak reads the runtime's resources.
enum Probe {
    /// Directly from this host's `/proc` and `/sys`.
    Host {
        pid: u32,
        cgroup: Option<PathBuf>,
        /// Only loop devices backed by files under this directory count (`None`: all).
        loops_under: Option<PathBuf>,
        repository: Option<PathBuf>,
    },
    /// Through the measuring container on a board.
    Board,
}

impl Probe {
    fn snapshot(&self, link: &Link) -> Result<Snapshot> {
        match self {
            Probe::Host {
                pid,
                cgroup,
                loops_under,
                repository,
            } => host_snapshot(
                *pid,
                cgroup.as_deref(),
                loops_under.as_deref(),
                repository.as_deref(),
            ),
            Probe::Board => board_snapshot(link),
        }
    }
}

fn host_snapshot(
    pid: u32,
    cgroup: Option<&Path>,
    loops_under: Option<&Path>,
    repository: Option<&Path>,
) -> Result<Snapshot> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let fds = std::fs::read_dir(proc.join("fd"))
        .context("the runtime's descriptors")?
        .count() as u64;
    let (private_dirty_kb, rss_kb) =
        smaps_rollup(&std::fs::read_to_string(proc.join("smaps_rollup"))?);
    let mounts = mounts_of(&std::fs::read_to_string(proc.join("mountinfo"))?);
    let mut loops = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        else {
            continue;
        };
        let backing = backing.trim().to_string();
        if loops_under.is_none_or(|dir| Path::new(&backing).starts_with(dir)) {
            loops.push(format!("{name} {backing}"));
        }
    }
    loops.sort();
    let cgroups = match cgroup {
        Some(dir) => cgroups_under(dir)?,
        None => Vec::new(),
    };
    let files = match repository {
        Some(dir) => {
            let mut f: Vec<String> = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            f.sort();
            f
        }
        None => Vec::new(),
    };
    Ok(Snapshot {
        fds,
        private_dirty_kb,
        rss_kb,
        mounts,
        loops,
        dm: Vec::new(),
        cgroups,
        files,
    })
}

/// `Private_Dirty` and `Rss` in KiB from `smaps_rollup`.
fn smaps_rollup(text: &str) -> (u64, u64) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Private_Dirty:"), field("Rss:"))
}

/// Mount point and file system type of every line of a `mountinfo`, sorted.
fn mounts_of(mountinfo: &str) -> Vec<String> {
    let mut mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(format!("{} {}", fields.get(4)?, fields.get(dash + 1)?))
        })
        .collect();
    mounts.sort();
    mounts
}

fn cgroups_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the measuring container on the board and reads what it printed.
fn board_snapshot(link: &Link) -> Result<Snapshot> {
    let seen = link.exits(MEASURE);
    let marker = format!("measure-{seen}");
    let mut args: heapless::Vec<&str, { nanostar_protocol::limits::MAX_ARGS }> =
        heapless::Vec::new();
    for a in [
        "print",
        marker.as_str(),
        "ls",
        "/host/proc/1/fd",
        "print",
        "@smaps",
        "cat",
        "/host/proc/1/smaps_rollup",
        "print",
        "@mountinfo",
        "cat",
        "/host/proc/1/mountinfo",
        "print",
        "@partitions",
        "cat",
        "/host/proc/partitions",
        "print",
        "@cgroups",
        "ls",
        "/host/cgroup",
        "print",
        "@end",
    ] {
        let _ = args.push(a);
    }
    let reply = link
        .ask(Request::Start {
            name: MEASURE,
            version: None,
            args: Some(args),
            env: heapless::Vec::new(),
        })
        .map_err(anyhow::Error::msg)?;
    ensure!(
        matches!(reply_of(&reply), Some(Reply::Ok)),
        "start {MEASURE}: {}",
        debug_reply(&reply)
    );
    let status = link.wait_exit(MEASURE, seen).map_err(anyhow::Error::msg)?;
    let log = match read_log(
        link,
        Request::Logs {
            name: MEASURE,
            version: None,
            follow: false,
        },
    )
    .map_err(anyhow::Error::msg)?
    {
        LogRead::End(data) => String::from_utf8_lossy(&data).into_owned(),
        LogRead::Ended(..) | LogRead::Refused(_) => bail!("no log of {MEASURE}"),
    };
    ensure!(
        status == ExitStatus::Code(0),
        "{MEASURE} ended with {status:?}:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    let start = log
        .rfind(&format!("{marker}\n"))
        .with_context(|| format!("{marker} not in the log:\n{log}"))?;
    let text = &log[start..];
    ensure!(
        text.contains("@end\n"),
        "{MEASURE}'s report is cut short:\n{text}"
    );
    let section = |from: &str, to: &str| -> String {
        let a = text.find(from).map_or(0, |i| i + from.len());
        let b = text.find(to).unwrap_or(text.len());
        text.get(a..b).unwrap_or_default().to_string()
    };
    let fds = section(&format!("{marker}\n"), "@smaps\n")
        .lines()
        .filter(|l| l.starts_with("entry "))
        .count() as u64;
    let (private_dirty_kb, rss_kb) = smaps_rollup(&section("@smaps\n", "@mountinfo\n"));
    let mounts = mounts_of(&section("@mountinfo\n", "@partitions\n"));
    let mut loops = Vec::new();
    let mut dm = Vec::new();
    for line in section("@partitions\n", "@cgroups\n").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, _, blocks, name] = fields[..] {
            if name.starts_with("loop") && blocks != "0" {
                loops.push(name.to_string());
            } else if name.starts_with("dm-") {
                dm.push(name.to_string());
            }
        }
    }
    loops.sort();
    dm.sort();
    let mut cgroups: Vec<String> = section("@cgroups\n", "@end\n")
        .lines()
        .filter_map(|l| l.strip_prefix("entry "))
        .filter(|n| !n.starts_with("cgroup.") && !n.contains('.'))
        .map(str::to_string)
        .collect();
    cgroups.sort();
    Ok(Snapshot {
        fds,
        private_dirty_kb,
        rss_kb,
        mounts,
        loops,
        dm,
        cgroups,
        files: Vec::new(),
    })
}

/// A runtime the soak started on this host; killed when dropped.
struct HostRuntime {
    child: Child,
    dir: PathBuf,
}

impl HostRuntime {
    fn start(runtime: &Path, dir: &Path, clients: usize) -> Result<(HostRuntime, u32)> {
        for d in ["repo", "run", "data"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let cgroup =
            unified_cgroup().map(|u| u.join(format!("nanostar-soak-{}", std::process::id())));
        let cgroup_line = cgroup
            .as_ref()
            .map(|c| format!("cgroup = \"{}\"\n", c.display()))
            .unwrap_or_default();
        let config = format!(
            "run_dir = \"{0}/run\"\ndata_dir = \"{0}/data\"\nsocket = \"{0}/run/console\"\n{cgroup_line}\
             [limits]\nmax_clients = {1}\ninstall_timeout_ms = 30000\n\
             [repository.default]\ndir = \"{0}/repo\"\n[console]\nuid.0 = \"full\"\n",
            dir.display(),
            (clients + 2).min(16)
        );
        std::fs::write(dir.join("nanostar.conf"), config)?;
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .arg(runtime)
            .arg("run")
            .arg(dir.join("nanostar.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("unshare (util-linux)")?;
        let host = HostRuntime {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + SERVING_TIMEOUT;
        while UnixStream::connect(host.socket()).is_err() {
            ensure!(Instant::now() < deadline, "the runtime did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // `unshare --fork` runs the runtime as its only child.
        let children = format!("/proc/{0}/task/{0}/children", host.child.id());
        let pid = std::fs::read_to_string(&children)?
            .trim()
            .parse()
            .context("no runtime under unshare")?;
        Ok((host, pid))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/console")
    }
}

impl Drop for HostRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This host's cgroup v2 hierarchy, if it has one.
fn unified_cgroup() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            mountinfo
                .lines()
                .any(|l| l.contains(&format!(" {} ", p.display())) && l.contains(" - cgroup2 "))
        })
}

/// A board booted for the soak.
struct BoardRun {
    thread: Option<JoinHandle<Result<Report>>>,
    pid_file: PathBuf,
}

impl BoardRun {
    fn power_off(mut self, link: &Link) -> Result<Report> {
        link.closing.store(true, Ordering::Relaxed);
        let reply = link.ask(Request::Shutdown).map_err(anyhow::Error::msg)?;
        ensure!(
            matches!(reply_of(&reply), Some(Reply::Ok)),
            "shutdown: {}",
            debug_reply(&reply)
        );
        let thread = self.thread.take().unwrap();
        let report = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the board's thread panicked"))??;
        ensure!(
            report.transcript.contains(crate::board::POWER_OFF_MARKER),
            "no clean power-off: {}",
            report.outcome.describe()
        );
        Ok(report)
    }
}

impl Drop for BoardRun {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Some(pid) = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = thread.join();
        }
    }
}

/// The board's runtime configuration: a keyed repository (loop + dm-verity mounts), the
/// cgroup directory the measuring container reads.
const BOARD_CONFIG: &str = r#"run_dir = "/run/nanostar"
data_dir = "/data/nanostar/data"
socket = "/run/nanostar/console"
cgroup = "/sys/fs/cgroup/nanostar"
console_device = "/dev/hvc0"
data_device = "/dev/vda"
data_mount = "/data"
[limits]
install_timeout_ms = 60000
[repository.default]
dir = "/data/nanostar/repo"
keys = ["/etc/nanostar/soak.pub"]
[console]
uid.0 = "full"
"#;

/// Writes what the board's serial console prints to stderr with `verbose`, and keeps its
/// last lines for a failure.
struct SerialTail {
    verbose: bool,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl Write for SerialTail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.verbose {
            let _ = std::io::stderr().write_all(buf);
        }
        let mut tail = self.tail.lock().unwrap();
        tail.extend_from_slice(buf);
        let excess = tail.len().saturating_sub(64 * 1024);
        tail.drain(..excess);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- the whole soak ----------------------------------------------------------------------

/// Runs the soak and returns what it found; an error only when it could not run at all
/// (no runtime, no board, a package that does not pack).
pub fn run(options: &Options) -> Result<Summary> {
    ensure!(options.clients >= 1, "at least one client");
    let work = tempfile::Builder::new()
        .prefix("nssoak")
        .tempdir_in("/tmp")
        .context("a temporary directory")?;
    let capture = options.capture.as_ref().map(|dir| Capture {
        dir: dir.clone(),
        count: Arc::new(AtomicU32::new(0)),
    });
    match &options.target {
        Target::Host { runtime } => {
            let (host, pid) =
                HostRuntime::start(runtime, &work.path().join("rt"), options.clients)?;
            let socket = host.socket();
            let cgroup =
                unified_cgroup().map(|u| u.join(format!("nanostar-soak-{}", std::process::id())));
            let probe = Probe::Host {
                pid,
                cgroup: cgroup.clone(),
                loops_under: Some(work.path().to_path_buf()),
                repository: Some(work.path().join("rt/repo")),
            };
            let packages = Packages::make(options, work.path(), None)?;
            let connect = || -> Result<Arc<Link>> {
                Link::open(UnixStream::connect(&socket)?, false, capture.clone())
            };
            let summary = soak(options, &packages, &probe, &connect, false);
            drop(host);
            if let Some(c) = cgroup {
                let _ = std::fs::remove_dir(c);
            }
            summary
        }
        Target::Attach {
            socket,
            pid,
            cgroup,
        } => {
            let probe = Probe::Host {
                pid: *pid,
                cgroup: cgroup.clone(),
                loops_under: None,
                repository: None,
            };
            let packages = Packages::make(options, work.path(), None)?;
            let connect = || -> Result<Arc<Link>> {
                Link::open(UnixStream::connect(socket)?, false, capture.clone())
            };
            soak(options, &packages, &probe, &connect, false)
        }
        Target::Board { board, runtime } => {
            let board = Board::load(board)?;
            let (secret, public) = crate::keys::generate(&work.path().join("soak"))?;
            let key = crate::keys::read_secret(&secret)?;
            let packages = Packages::make(options, work.path(), Some(&key))?;
            let config = work.path().join("nanostar.conf");
            std::fs::write(&config, BOARD_CONFIG)?;
            let hvc = work.path().join("hvc");
            let mut spec = BootSpec::new(runtime);
            spec.files = vec![
                (config, "/etc/nanostar.conf".into()),
                (public, "/etc/nanostar/soak.pub".into()),
            ];
            spec.hvc = Hvc::Socket(hvc.clone());
            let mut prepared = board.prepare(&spec)?;
            let pid_file = work.path().join("qemu.pid");
            prepared.command.arg("-pidfile").arg(&pid_file);
            let mut run_options = RunOptions::new(options.duration + Duration::from_secs(1800));
            run_options.poweroff_ok = true;
            let tail = Arc::new(Mutex::new(Vec::new()));
            let serial = SerialTail {
                verbose: options.verbose,
                tail: tail.clone(),
            };
            let board_run = BoardRun {
                thread: Some(prepared.spawn(run_options, Box::new(serial))),
                pid_file,
            };
            let deadline = Instant::now() + SERVING_TIMEOUT;
            let serving = |t: &[u8]| {
                let t = String::from_utf8_lossy(t);
                t.contains("nanostar: serving the console on /dev/hvc0")
                    && t.contains(" packages on /run/nanostar/console")
            };
            while !serving(&tail.lock().unwrap()) {
                if Instant::now() > deadline
                    || board_run.thread.as_ref().is_none_or(|t| t.is_finished())
                {
                    bail!(
                        "the board's runtime did not come up; its console:\n{}",
                        String::from_utf8_lossy(&tail.lock().unwrap())
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let link = Link::open(UnixStream::connect(&hvc)?, true, capture.clone())?;
            let shared = link.clone();
            let connect = move || -> Result<Arc<Link>> { Ok(shared.clone()) };
            let measure = install(
                &link,
                PackageId {
                    name: MEASURE,
                    version: VERSION,
                },
                &packages.measure,
                false,
            )
            .map_err(anyhow::Error::msg)?;
            ensure!(
                matches!(reply_of(&measure), Some(Reply::Installed(_))),
                "install {MEASURE}: {}",
                debug_reply(&measure)
            );
            let mut summary = soak(options, &packages, &Probe::Board, &connect, true)?;
            match board_run.power_off(&link) {
                Ok(report) => {
                    if report.transcript.contains("Kernel panic") {
                        summary.failures.push("the board's kernel panicked".into());
                    }
                }
                Err(e) => summary.failures.push(format!(
                    "power-off: {e:#}; console:\n{}",
                    String::from_utf8_lossy(&tail.lock().unwrap())
                )),
            }
            Ok(summary)
        }
    }
}

/// The soak proper, wherever the runtime is: set up, measure, run the clients, clean up,
/// measure again.
fn soak(
    options: &Options,
    packages: &Packages,
    probe: &Probe,
    connect: &dyn Fn() -> Result<Arc<Link>>,
    board: bool,
) -> Result<Summary> {
    let admin = connect()?;
    let reply = install(
        &admin,
        PackageId {
            name: RESOURCE,
            version: VERSION,
        },
        &packages.resource,
        false,
    )
    .map_err(anyhow::Error::msg)?;
    ensure!(
        matches!(reply_of(&reply), Some(Reply::Installed(_))),
        "install {RESOURCE}: {}",
        debug_reply(&reply)
    );
    let links: Vec<Arc<Link>> = (0..options.clients)
        .map(|_| connect())
        .collect::<Result<_>>()?;
    let mut clients: Vec<Client> = links
        .iter()
        .enumerate()
        .map(|(i, link)| Client {
            index: i,
            link: link.clone(),
            rng: Rng::new(options.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            packages: packages.apps[i].clone(),
            models: vec![Model::default(); packages.apps[i].len()],
            counts: BTreeMap::new(),
            refusals: BTreeMap::new(),
            failures: Vec::new(),
            verbose: options.verbose,
        })
        .collect();
    // A warm-up round of every kind of work, so that the tables and buffers used only
    // once something happens are in use before the first measurement.
    // The logs are filled right after the installs, while nothing runs.
    let steps = [
        Warm::Op(Op::Install, 0),
        Warm::Op(Op::Install, 1),
        Warm::FillLog(0),
        Warm::FillLog(1),
        Warm::Op(Op::Start, 0),
        Warm::Op(Op::Start, 1),
        Warm::Op(Op::Logs, 0),
        Warm::Op(Op::List, 0),
        Warm::Op(Op::Stop, 0),
        Warm::Op(Op::Kill, 1),
        Warm::Op(Op::Follow, 0),
        Warm::Op(Op::Inspect, 1),
    ];
    for client in &mut clients {
        for step in steps {
            let (what, done) = match step {
                Warm::Op(op, which) => (
                    format!("{} {}", op.name(), client.name(which)),
                    client.op(op, which).map(|_| ()),
                ),
                Warm::FillLog(which) => ("fill-log".to_string(), client.fill_log(which)),
            };
            if let Err(e) = done {
                client
                    .failures
                    .push(format!("warm-up of client {}: {what}: {e}", client.index));
                client.resync().map_err(anyhow::Error::msg)?;
            }
        }
        cleanup(client).map_err(anyhow::Error::msg)?;
    }
    // The resource unmounted (the warm-up's starts mounted it), as it will be after.
    let resource = PackageId {
        name: RESOURCE,
        version: VERSION,
    };
    let _ = admin.ask(Request::Umount(resource));
    let mut summary = Summary {
        before: Some(probe.snapshot(&admin)?),
        ..Summary::default()
    };
    let started = Instant::now();
    let until = started + options.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<JoinHandle<Client>> = clients
        .into_iter()
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || c.run(until, stop))
        })
        .collect();
    let mut clients = Vec::new();
    for t in threads {
        clients.push(t.join().map_err(|_| anyhow::anyhow!("a client panicked"))?);
    }
    summary.elapsed = started.elapsed();
    for client in &mut clients {
        if let Err(e) = cleanup(client) {
            client
                .failures
                .push(format!("cleanup of client {}: {e}", client.index));
        }
    }
    let link_list: Vec<&Arc<Link>> = if board {
        vec![&admin]
    } else {
        std::iter::once(&admin).chain(links.iter()).collect()
    };
    for link in &link_list {
        summary
            .failures
            .extend(link.failures.lock().unwrap().drain(..));
        for (k, n) in link.notifications.lock().unwrap().iter() {
            *summary.notifications.entry(k).or_default() += n;
        }
    }
    for client in clients {
        for (op, (done, refused)) in client.counts {
            let e = summary.operations.entry(op).or_default();
            e.0 += done;
            e.1 += refused;
        }
        for (why, n) in client.refusals {
            *summary.refusals.entry(why).or_default() += n;
        }
        summary.failures.extend(client.failures);
    }
    // The resource unmounted, as before the clients ran.
    let package = PackageId {
        name: RESOURCE,
        version: VERSION,
    };
    let _ = admin.ask(Request::Umount(package));
    if admin.dead.lock().unwrap().is_none() {
        let after = probe.snapshot(&admin)?;
        summary.leaks = summary.before.as_ref().unwrap().leaks(&after);
        summary.after = Some(after);
    } else {
        summary
            .failures
            .push("the connection was lost: nothing measured after the soak".into());
    }
    let reply = admin.ask(Request::Uninstall {
        package,
        wipe: true,
    });
    if !matches!(reply.as_deref().ok().and_then(reply_of), Some(Reply::Ok)) {
        summary
            .failures
            .push(format!("uninstall {RESOURCE}: {reply:?}"));
    }
    Ok(summary)
}

/// Stops a client's containers and uninstalls its packages with their data.
fn cleanup(client: &mut Client) -> Result<(), Failure> {
    client.resync()?;
    for which in 0..client.packages.len() {
        let m = client.models[which];
        if m.running {
            let seen = client.link.exits(client.name(which));
            let reply = client.link.ask(Request::Stop {
                name: client.name(which),
                version: None,
                timeout_ms: Some(0),
            })?;
            if !matches!(reply_of(&reply), Some(Reply::Stopped(_))) {
                return Err(format!(
                    "stop {}: {}",
                    client.name(which),
                    debug_reply(&reply)
                ));
            }
            client.link.wait_exit(client.name(which), seen)?;
        }
        if m.installed {
            let reply = client.link.ask(Request::Uninstall {
                package: client.id(which),
                wipe: true,
            })?;
            if !matches!(reply_of(&reply), Some(Reply::Ok)) {
                return Err(format!(
                    "uninstall {}: {}",
                    client.name(which),
                    debug_reply(&reply)
                ));
            }
        } else {
            // Data kept by an earlier uninstall without --wipe: install and wipe it.
            let npk = client.packages[which].1.clone();
            let reply = install(&client.link, client.id(which), &npk, false)?;
            if !matches!(reply_of(&reply), Some(Reply::Installed(_))) {
                return Err(format!(
                    "install {}: {}",
                    client.name(which),
                    debug_reply(&reply)
                ));
            }
            let reply = client.link.ask(Request::Uninstall {
                package: client.id(which),
                wipe: true,
            })?;
            if !matches!(reply_of(&reply), Some(Reply::Ok)) {
                return Err(format!(
                    "uninstall {}: {}",
                    client.name(which),
                    debug_reply(&reply)
                ));
            }
        }
        client.models[which] = Model::default();
    }
    Ok(())
}

/// Parses `10m`, `30s`, `1h`, `500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration (e.g. 30s, 10m, 1h)"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("{text:?}: the unit is ms, s, m or h"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let picks = |seed| {
            let mut rng = Rng::new(seed);
            (0..64).map(|_| rng.weighted(WEIGHTS)).collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        // Every operation is chosen at some point.
        let many = {
            let mut rng = Rng::new(1);
            (0..10_000)
                .map(|_| rng.weighted(WEIGHTS))
                .collect::<Vec<_>>()
        };
        for (op, _) in WEIGHTS {
            assert!(many.contains(op), "{op:?} never chosen");
        }
    }

    #[test]
    fn snapshots_compare_exactly_except_memory() {
        let before = Snapshot {
            fds: 10,
            private_dirty_kb: 100,
            rss_kb: 200,
            mounts: vec!["/ ext4".into()],
            ..Snapshot::default()
        };
        let mut after = before.clone();
        after.private_dirty_kb += MEMORY_TOLERANCE_KB;
        assert!(before.leaks(&after).is_empty());
        after.private_dirty_kb += 1;
        after.fds += 1;
        after.mounts.push("/run/nanostar/mnt/x squashfs".into());
        let leaks = before.leaks(&after);
        assert_eq!(leaks.len(), 3, "{leaks:?}");
    }

    #[test]
    fn smaps_and_mountinfo_are_read() {
        let smaps = "00400000-7ffd [rollup]\nRss:                 812 kB\nPss:  1 kB\nPrivate_Dirty:       120 kB\n";
        assert_eq!(smaps_rollup(smaps), (120, 812));
        let mountinfo = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                         30 22 7:0 / /run/nanostar/mnt/a-1.0.0 ro - squashfs /dev/loop0 ro\n";
        assert_eq!(
            mounts_of(mountinfo),
            vec!["/ ext4", "/run/nanostar/mnt/a-1.0.0 squashfs"]
        );
    }
}
