//! Shared by the integration tests of the runtime (`runtime/tests`) and of the tools
//! (`tools/tests`), behind the `testing` feature: the workspace, device builds of its
//! programs, and one client of the console protocol ([`Console`]) over any byte stream (a
//! unix socket to the runtime's console, or a board's virtio console wired to one).
//!
//! Everything here panics on failure, as a test wants.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nanostar_protocol::console::{
    ContainerState, FrameDecoder, Hello, Message, PackageInfo, Reply, Request,
};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::Arch;
use nanostar_protocol::npk::manifest::EnvVar;

use crate::manifest::SourceManifest;
use crate::package::{PackInput, Packed, pack};

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `bin` of `package` for `target` (release) into `target/device-tests`, its own
/// target directory, so this works while the outer `cargo test` holds the workspace's
/// lock; returns the binary's path.
pub fn device_build(package: &str, bin: &str, target: &str) -> PathBuf {
    let target_dir = workspace().join("target/device-tests");
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--release", "-p", package, "--bin", bin])
        .args(["--target", target])
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building {bin} for {target} failed (is the target installed? `rustup target add {target}`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(target).join("release").join(bin)
}

/// Whether this process runs as root (real uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Packs the manifest TOML `toml` with the files under `root`, signed with `key` if
/// given, for `arch` (`None`: the init's own); fails with the manifest's error.
pub fn pack_toml(
    toml: &str,
    root: &Path,
    key: Option<&ed25519_compact::KeyPair>,
    arch: Option<Arch>,
) -> Packed {
    let source = SourceManifest::parse(toml).unwrap_or_else(|e| panic!("{e:#}\n{toml}"));
    pack(
        &PackInput {
            manifest: &source,
            root,
            key,
            arch,
        },
        &mut |_| {},
    )
    .unwrap()
}

/// A package made by hand, as a packer other than `npk` could make it: `npk`'s bytes with
/// the manifest changed by `change` and the seccomp program replaced by `seccomp`, the
/// header's digests, lengths and offsets made to match and signed again with `key`; the
/// image and hash tree are kept. `padding` is written into the first byte after the
/// program (0 leaves the padding as the format wants it).
pub fn repack(
    npk: &[u8],
    change: impl FnOnce(&mut nanostar_protocol::npk::Manifest),
    seccomp: &[u8],
    padding: u8,
    key: Option<&ed25519_compact::KeyPair>,
) -> Vec<u8> {
    use nanostar_protocol::limits::MAX_MANIFEST_LEN;
    use nanostar_protocol::npk::header::{HEADER_LEN, sha256};
    use nanostar_protocol::npk::{HeaderFields, Manifest, UnverifiedHeader};
    let old = *UnverifiedHeader::new(npk)
        .unwrap()
        .accept_unsigned()
        .unwrap();
    let mut manifest = Manifest::decode(&npk[HEADER_LEN..][..old.manifest_len as usize]).unwrap();
    change(&mut manifest);
    let mut buf = vec![0u8; MAX_MANIFEST_LEN];
    let manifest = manifest.encode(&mut buf).unwrap();
    let mut h = old;
    h.manifest_len = manifest.len() as u32;
    h.manifest_sha256 = sha256(manifest);
    h.seccomp_len = seccomp.len() as u32;
    h.seccomp_sha256 = sha256(seccomp);
    h.image_offset = HeaderFields::image_offset_for(h.manifest_len, h.seccomp_len);
    h.verity.hash_offset = h.image_offset + h.image_size;
    let signature = key.map(|pair| {
        let sig = pair.sk.sign(h.encode_signed(), None);
        (nanostar_protocol::npk::PublicKey(*pair.pk).id(), *sig)
    });
    let mut bytes = h.encode(signature).to_vec();
    bytes.extend_from_slice(manifest);
    bytes.extend_from_slice(seccomp);
    assert!(
        padding == 0 || bytes.len() < h.image_offset as usize,
        "no padding to change"
    );
    bytes.push(padding);
    bytes.resize(h.image_offset as usize, 0);
    bytes.extend_from_slice(&npk[old.image_offset as usize..]);
    bytes
}

/// The seccomp program of an NPK (`npk`'s bytes).
pub fn seccomp_of(npk: &[u8]) -> Vec<u8> {
    use nanostar_protocol::npk::UnverifiedHeader;
    let h = *UnverifiedHeader::new(npk)
        .unwrap()
        .accept_unsigned()
        .unwrap();
    npk[h.seccomp_offset() as usize..][..h.seccomp_len as usize].to_vec()
}

/// The id of a key, as the runtime names it (`UnknownKey`, `Inspect`'s `key`).
pub fn key_id(pair: &ed25519_compact::KeyPair) -> [u8; 8] {
    nanostar_protocol::npk::PublicKey(*pair.pk).id().0
}

/// `Exited { package: .., status: Code(0) }` (a notification's Debug text) → `Code(0)`.
pub fn exit_of(notification: &str) -> String {
    let at = notification.find("status: ").unwrap() + "status: ".len();
    notification[at..].trim_end_matches(" }").to_string()
}

/// A package as `list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub mounted: bool,
    /// `None` when no container of it ran since the runtime started.
    pub state: Option<ContainerState>,
    /// The last exit as Debug text, "-" when there was none.
    pub last_exit: String,
}

impl From<&PackageInfo<'_>> for Listed {
    fn from(p: &PackageInfo) -> Listed {
        Listed {
            name: p.package.name.to_string(),
            mounted: p.mounted,
            state: p.container.map(|c| c.state),
            last_exit: p
                .container
                .and_then(|c| c.last_exit)
                .map_or("-".into(), |e| format!("{e:?}")),
        }
    }
}

/// One connection to the runtime's console, speaking its protocol as the `nanostar`
/// client does: frames ([`Message`], COBS), the handshake, requests and their replies,
/// notifications.
///
/// Two layers: the raw one ([`send`](Console::send), [`read_frame`](Console::read_frame),
/// [`ask`](Console::ask), the `stream` itself) for frames and ids of the test's choosing,
/// and numbered requests ([`request`](Console::request) and the calls built on it) that
/// keep every notification seen on the way in [`seen`](Console::seen).
pub struct Console<S = UnixStream> {
    /// The transport; a test may write to it directly (bytes the client would never send).
    pub stream: S,
    /// The name sent in the `Hello`.
    client: String,
    /// Bytes read but not yet decoded.
    pending: Vec<u8>,
    decoder: FrameDecoder<Vec<u8>>,
    next_id: u32,
    /// Notifications seen while waiting for replies, as Debug text.
    pub seen: Vec<String>,
}

impl Console<UnixStream> {
    /// Connects to the unix socket at `path`; reads and writes time out after `timeout`.
    /// No handshake yet.
    pub fn connect(path: &Path, timeout: Duration, client: &str) -> Console<UnixStream> {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_write_timeout(Some(timeout)).unwrap();
        Console::new(stream, client)
    }
}

impl<S: Read + Write> Console<S> {
    /// A client on `stream` that says it is `client`; no handshake yet.
    pub fn new(stream: S, client: &str) -> Console<S> {
        Console {
            stream,
            client: client.into(),
            pending: Vec::new(),
            decoder: FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]),
            next_id: 1,
            seen: Vec::new(),
        }
    }

    // ---- frames ----

    /// Sends one message.
    pub fn send(&mut self, m: &Message) {
        let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
        let bytes = m.encode(&mut wire).unwrap();
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, COBS-decoded (corrupt ones are skipped); empty when the connection
    /// closed or nothing came within the read timeout.
    pub fn read_frame(&mut self) -> Vec<u8> {
        self.next_frame().unwrap_or_default()
    }

    /// The next frame, COBS-decoded; panics when the connection closed or nothing came
    /// within the read timeout.
    pub fn frame(&mut self) -> Vec<u8> {
        self.next_frame().unwrap_or_else(|e| panic!("{e}"))
    }

    fn next_frame(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(frame) = self.pending_frame() {
                return Ok(frame);
            }
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the console connection closed".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("no message from the runtime: {e}")),
            }
        }
    }

    /// A frame from the bytes already read, if they hold a whole one.
    fn pending_frame(&mut self) -> Option<Vec<u8>> {
        while !self.pending.is_empty() {
            let mut input = &self.pending[..];
            let frame = self
                .decoder
                .decode(&mut input)
                .map(|r| r.map(|f| f.to_vec()));
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            match frame {
                Some(Ok(frame)) => return Some(frame),
                Some(Err(_)) => {}
                None => return None,
            }
        }
        None
    }

    /// The Debug text of the next message; empty when none came or it does not decode.
    pub fn answer(&mut self) -> String {
        Message::decode(&self.read_frame())
            .map(|m| format!("{m:?}"))
            .unwrap_or_default()
    }

    /// Sends a request with the test's own `id` and returns the Debug text of the next
    /// message (whatever it is).
    pub fn ask(&mut self, id: u32, request: Request) -> String {
        self.send(&Message::Request { id, request });
        self.answer()
    }

    // ---- the handshake ----

    /// `Hello`; the next frame must be the `Welcome`.
    pub fn hello(&mut self) {
        self.send_hello();
        let reply = self.read_frame();
        assert!(
            matches!(Message::decode(&reply), Ok(Message::Welcome(_))),
            "{reply:?}"
        );
    }

    /// The handshake on a console device, which outlives its connections: a lone 0x00
    /// ends whatever a previous connection left half-sent, the `Hello` starts a new
    /// session, and frames still on their way to a previous connection are skipped up to
    /// the `Welcome`.
    pub fn hello_on_device(&mut self) {
        self.stream.write_all(&[0]).unwrap();
        self.send_hello();
        loop {
            let frame = self.frame();
            if let Ok(Message::Welcome(_)) = Message::decode(&frame) {
                break;
            }
        }
    }

    fn send_hello(&mut self) {
        let client = self.client.clone();
        self.send(&Message::Hello(Hello {
            protocol_version: nanostar_protocol::console::PROTOCOL_VERSION,
            client: &client,
        }));
    }

    /// Subscribes to notifications.
    pub fn subscribe(&mut self) {
        assert_eq!(self.request(Request::Subscribe), "Ok");
    }

    // ---- numbered requests ----

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a request (with the next id) and returns its reply as Debug text.
    pub fn request(&mut self, request: Request) -> String {
        let id = self.id();
        self.send(&Message::Request { id, request });
        self.reply(id)
    }

    /// The reply to `id` as Debug text; notifications on the way are kept in `seen`,
    /// install progress is skipped, anything else fails.
    pub fn reply(&mut self, id: u32) -> String {
        loop {
            let frame = self.frame();
            match Message::decode(&frame) {
                Ok(Message::Reply {
                    reply: Reply::InstallProgress { .. },
                    ..
                }) => {}
                Ok(Message::Reply { id: got, reply }) if got == id => return format!("{reply:?}"),
                Ok(Message::Notification(n)) => self.seen.push(format!("{n:?}")),
                other => panic!("waiting for the reply to {id}: unexpected {other:?}"),
            }
        }
    }

    /// Streams an NPK in chunks into the repository `default` (as `nanostar install
    /// --stream`); the reply as Debug text (the refusal of the begin, if it was refused).
    pub fn install(&mut self, npk: &[u8]) -> String {
        let id = self.begin_install(npk);
        if id == 0 {
            return self.seen.pop().unwrap();
        }
        for chunk in npk.chunks(MAX_CHUNK_LEN) {
            self.chunk(id, chunk);
        }
        self.send(&Message::Request {
            id,
            request: Request::InstallEnd,
        });
        self.reply(id)
    }

    /// `InstallBegin` into `default`; its id once accepted, or 0 with the refusal pushed
    /// to `seen`.
    pub fn begin_install(&mut self, npk: &[u8]) -> u32 {
        let reply = self.request(Request::InstallBegin {
            repository: "default",
            size: npk.len() as u64,
            fd: false,
        });
        if reply == "InstallAccepted" {
            self.next_id - 1
        } else {
            self.seen.push(reply);
            0
        }
    }

    /// One `InstallChunk` of the install `id`.
    pub fn chunk(&mut self, id: u32, data: &[u8]) {
        self.send(&Message::Request {
            id,
            request: Request::InstallChunk { data },
        });
    }

    /// Every installed package (one page of them).
    pub fn list(&mut self) -> Vec<Listed> {
        let id = self.id();
        self.send(&Message::Request {
            id,
            request: Request::List { after: None },
        });
        loop {
            let frame = self.frame();
            match Message::decode(&frame) {
                Ok(Message::Reply {
                    id: got,
                    reply: Reply::Packages { packages, more },
                }) if got == id => {
                    assert!(!more, "more than one page");
                    return packages.iter().map(Listed::from).collect();
                }
                Ok(Message::Reply { id: got, reply }) if got == id => panic!("list: {reply:?}"),
                Ok(Message::Notification(n)) => self.seen.push(format!("{n:?}")),
                other => panic!("waiting for the list: unexpected {other:?}"),
            }
        }
    }

    /// The package `name` as listed; fails if it is not.
    pub fn listed(&mut self, name: &str) -> Listed {
        let list = self.list();
        list.iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {list:?}"))
            .clone()
    }

    /// Starts `name` with `args` instead of the manifest's arguments; the reply as Debug
    /// text.
    pub fn start(&mut self, name: &str, args: &[&str]) -> String {
        self.start_env(name, args, &[])
    }

    /// [`Console::start`] with `env` added to the environment.
    pub fn start_env(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        self.start_request(name, Some(args), env)
    }

    /// Starts `name` with `args`, or the manifest's arguments with `None`.
    pub fn start_with(&mut self, name: &str, args: Option<&[&str]>) -> String {
        self.start_request(name, args, &[])
    }

    fn start_request(&mut self, name: &str, args: Option<&[&str]>, env: &[(&str, &str)]) -> String {
        self.request(Request::Start {
            name,
            version: None,
            args: args.map(|a| heapless::Vec::from_slice(a).unwrap()),
            env: env
                .iter()
                .map(|(key, value)| EnvVar { key, value })
                .collect(),
        })
    }

    /// Stops `name`; the reply as Debug text. The `Exited` notification that comes with
    /// a stop is consumed (and must agree with the reply).
    pub fn stop(&mut self, name: &str, timeout_ms: Option<u32>) -> String {
        let reply = self.request(Request::Stop {
            name,
            version: None,
            timeout_ms,
        });
        if let Some(status) = reply.strip_prefix("Stopped(") {
            assert_eq!(format!("{})", self.wait_exit(name)), status);
        }
        reply
    }

    /// Waits for the `Exited` notification of `name` (or takes it from `seen`); its
    /// status as Debug text. Other notifications are kept in `seen`.
    pub fn wait_exit(&mut self, name: &str) -> String {
        loop {
            if let Some(i) = self.seen.iter().position(|n| is_exit_of(n, name)) {
                return exit_of(&self.seen.remove(i));
            }
            let frame = self.frame();
            match Message::decode(&frame) {
                Ok(Message::Notification(n)) => self.seen.push(format!("{n:?}")),
                other => panic!("waiting for {name} to exit: unexpected {other:?}"),
            }
        }
    }

    /// All of `name`'s log (without following): the bytes lost to the ring, and the
    /// bytes.
    pub fn logs_raw(&mut self, name: &str) -> (u64, Vec<u8>) {
        let id = self.id();
        self.send(&Message::Request {
            id,
            request: Request::Logs {
                name,
                version: None,
                follow: false,
            },
        });
        let (mut dropped, mut data) = (0, Vec::new());
        loop {
            let frame = self.frame();
            match Message::decode(&frame) {
                Ok(Message::Reply {
                    id: got,
                    reply:
                        Reply::Log {
                            dropped: d,
                            data: bytes,
                        },
                }) if got == id => {
                    dropped += d;
                    data.extend_from_slice(bytes);
                }
                Ok(Message::Reply {
                    id: got,
                    reply: Reply::LogEnd,
                }) if got == id => return (dropped, data),
                Ok(Message::Reply { id: got, reply }) if got == id => panic!("logs: {reply:?}"),
                Ok(Message::Notification(n)) => self.seen.push(format!("{n:?}")),
                other => panic!("waiting for the log: unexpected {other:?}"),
            }
        }
    }

    /// All of `name`'s log (without following), as text.
    pub fn logs(&mut self, name: &str) -> String {
        String::from_utf8_lossy(&self.logs_raw(name).1).into_owned()
    }

    /// Polls `name`'s log until it contains `text` (for up to 30 s); the log.
    pub fn wait_for_log(&mut self, name: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.logs(name);
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "{text:?} never came:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `name` with `args` and waits for its end: its exit status and the output of
    /// this run.
    pub fn run(&mut self, name: &str, args: &[&str]) -> (String, String) {
        self.run_with(name, Some(args))
    }

    /// [`Console::run`] with the manifest's arguments for `None`.
    pub fn run_with(&mut self, name: &str, args: Option<&[&str]>) -> (String, String) {
        let before = self.logs_raw(name).1.len();
        assert_eq!(self.start_with(name, args), "Ok", "start {name} {args:?}");
        let status = self.wait_exit(name);
        let log = self.logs_raw(name).1;
        (
            status,
            String::from_utf8_lossy(&log[before.min(log.len())..]).into_owned(),
        )
    }
}

/// Whether `notification` (Debug text) is the `Exited` of package `name`.
fn is_exit_of(notification: &str, name: &str) -> bool {
    notification.starts_with("Exited") && notification.contains(&format!("name: \"{name}\""))
}
