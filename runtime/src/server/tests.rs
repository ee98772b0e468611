//! The handlers, driven through the dispatcher in this process: a `Runtime` over a
//! temp-dir store and tables the test lends, a client on one end of a socket pair, the
//! test on the other. No device build, no root (nothing here mounts or starts).

use std::boxed::Box;
use std::format;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::string::{String as StdString, ToString};
use std::vec::Vec as StdVec;

use nanostar_protocol::console::{
    Error, FrameDecoder, Hello, Message, Notification, PROTOCOL_VERSION, PackageId, Request,
    Violation,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::npk::Arch;
use nanostar_protocol::version::Version;
use nanostar_tools::manifest::SourceManifest;
use nanostar_tools::package::{PackInput, pack};

use super::*;
use crate::config;

/// A runtime over a temp dir, with its tables leaked (a test runs once).
struct Fixture {
    dir: tempfile::TempDir,
    runtime: Runtime<'static>,
}

/// One end of a socket pair that the runtime serves as a client.
struct Peer {
    stream: UnixStream,
    token: clients::Token,
}

/// An NPK of package `name` 1.0.0 (an app unless `resource`).
fn npk(name: &str) -> StdVec<u8> {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello.txt"), b"hello\n").unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/app\"\nuid = 1000\ngid = 1000\n"
    );
    let manifest = SourceManifest::parse(&toml).unwrap();
    let input = PackInput {
        manifest: &manifest,
        root: root.path(),
        key: None,
        arch: Arch::native(),
    };
    pack(&input, &mut |_| {}).unwrap().bytes
}

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

impl Fixture {
    /// A runtime with one repository holding `packages`; console rules `console`.
    fn new(packages: &[&str], console: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
        std::fs::create_dir_all(path("repo")).unwrap();
        for name in packages {
            std::fs::write(path(&format!("repo/{name}.npk")), npk(name)).unwrap();
        }
        let text = format!(
            "run_dir = \"{}\"\ndata_dir = \"{}\"\nsocket = \"{}\"\n\
             [repository.default]\ndir = \"{}\"\n[console]\n{console}\n",
            path("run"),
            path("data"),
            path("run/console"),
            path("repo"),
        );
        let text: &'static str = Box::leak(text.into_boxed_str());
        let config = leak(config::parse(text).unwrap());
        let tables = Tables {
            scratch: leak([0; SCRATCH_LEN]),
            clients: leak(Vec::new()),
            packages: leak(Packages::new()),
            containers: leak(Table::new()),
            exec: leak(Exec::new()),
            launch: leak([0; SCRATCH_LEN]),
        };
        let mut runtime = Runtime::new(config, tables).unwrap();
        runtime.store.scan();
        Fixture { dir, runtime }
    }

    /// A client with `uid` after its handshake.
    fn connect(&mut self, uid: u32) -> Peer {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let fd = rustix::fd::OwnedFd::from(theirs);
        let token = self
            .runtime
            .clients
            .add(fd, uid, uid, &self.runtime.poll)
            .unwrap();
        let mut peer = Peer {
            stream: ours,
            token,
        };
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "handler test",
        });
        let welcome = self.exchange(&mut peer, &hello);
        assert!(welcome.starts_with("Welcome"), "{welcome}");
        peer
    }

    /// Sends `message`, lets the runtime handle it, returns the frames it answered.
    fn send(&mut self, peer: &mut Peer, message: &Message) -> StdVec<StdString> {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        peer.stream
            .write_all(message.encode(&mut wire).unwrap())
            .unwrap();
        self.runtime.read_client(peer.token);
        self.runtime.clients.flush(peer.token);
        let mut bytes = StdVec::new();
        peer.stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8192];
        while let Ok(n) = peer.stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
        let mut input = &bytes[..];
        let mut frames = StdVec::new();
        while let Some(frame) = decoder.decode(&mut input) {
            let message = Message::decode(frame.unwrap()).unwrap();
            frames.push(format!("{message:?}"));
        }
        frames
    }

    /// Sends `message` and returns the one frame answered.
    fn exchange(&mut self, peer: &mut Peer, message: &Message) -> StdString {
        let mut frames = self.send(peer, message);
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.remove(0)
    }

    /// Request `request` as id 1; the one frame answered.
    fn request(&mut self, peer: &mut Peer, request: Request) -> StdString {
        self.exchange(peer, &Message::Request { id: 1, request })
    }

    fn repo_files(&self) -> StdVec<StdString> {
        let mut files: StdVec<_> = std::fs::read_dir(self.dir.path().join("repo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    }
}

fn package(name: &str) -> PackageId<'_> {
    PackageId {
        name,
        version: Version::new(1, 0, 0),
    }
}

#[test]
fn list_pages_the_scanned_packages_in_order() {
    let mut f = Fixture::new(&["b", "a", "c"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let reply = f.request(&mut peer, Request::List { after: None });
    let (a, b, c) = (
        reply.find("name: \"a\"").unwrap(),
        reply.find("name: \"b\"").unwrap(),
        reply.find("name: \"c\"").unwrap(),
    );
    assert!(a < b && b < c, "{reply}");
    assert!(reply.contains("repository: \"default\""), "{reply}");
    assert!(
        reply.contains("mounted: false") && reply.contains("more: false"),
        "{reply}"
    );
    let after_b = f.request(
        &mut peer,
        Request::List {
            after: Some(package("b")),
        },
    );
    assert!(
        !after_b.contains("\"a\"") && after_b.contains("name: \"c\""),
        "{after_b}"
    );
}

#[test]
fn inspect_verifies_again_and_sends_the_manifest_piece() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let inspected = f.request(
        &mut peer,
        Request::Inspect {
            name: "app",
            version: None,
            manifest_offset: 0,
        },
    );
    assert!(
        inspected.starts_with("Reply { id: 1, reply: Inspected"),
        "{inspected}"
    );
    assert!(inspected.contains("name: \"app\"") && inspected.contains("key: None"));
    // The file changed behind the runtime's back: inspect verifies it again.
    let file = f.dir.path().join("repo/app.npk");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[nanostar_protocol::npk::header::HEADER_LEN + 2] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let refused = f.request(
        &mut peer,
        Request::Inspect {
            name: "app",
            version: None,
            manifest_offset: 0,
        },
    );
    assert!(refused.contains("BadPackage"), "{refused}");
    let unknown = f.request(
        &mut peer,
        Request::Inspect {
            name: "nope",
            version: None,
            manifest_offset: 0,
        },
    );
    assert!(unknown.contains("UnknownPackage"), "{unknown}");
}

#[test]
fn permissions_are_checked_before_any_handler() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"\nuid.1000 = [\"list\"]");
    let mut reader = f.connect(1000);
    assert!(
        f.request(&mut reader, Request::List { after: None })
            .contains("Packages")
    );
    let uninstall = Request::Uninstall {
        package: package("app"),
        wipe: false,
    };
    let denied = f.request(&mut reader, uninstall);
    assert!(denied.contains("PermissionDenied"), "{denied}");
    assert_eq!(f.repo_files(), ["app.npk"]);
}

#[test]
fn uninstall_answers_the_requester_before_the_subscribers_hear_of_it() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    assert!(f.request(&mut peer, Request::Subscribe).contains("Ok"));
    let uninstall = Message::Request {
        id: 2,
        request: Request::Uninstall {
            package: package("app"),
            wipe: false,
        },
    };
    let frames = f.send(&mut peer, &uninstall);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], "Reply { id: 2, reply: Ok }");
    let uninstalled = Message::Notification(Notification::Uninstalled(package("app")));
    assert_eq!(frames[1], format!("{uninstalled:?}"));
    assert!(f.repo_files().is_empty());
    let again = f.send(&mut peer, &uninstall);
    assert!(again[0].contains("UnknownPackage"), "{again:?}");
}

#[test]
fn a_streamed_install_lands_once_and_a_duplicate_is_refused() {
    let mut f = Fixture::new(&[], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let bytes = npk("fresh");
    let begin = |size| Request::InstallBegin {
        repository: "default",
        size,
        fd: false,
    };
    assert!(
        f.request(&mut peer, begin(bytes.len() as u64))
            .contains("InstallAccepted")
    );
    for chunk in bytes.chunks(MAX_CHUNK) {
        let sent = f.send(
            &mut peer,
            &Message::Request {
                id: 1,
                request: Request::InstallChunk { data: chunk },
            },
        );
        assert!(sent.is_empty(), "a chunk has no reply: {sent:?}");
    }
    let installed = f.request(&mut peer, Request::InstallEnd);
    assert!(
        installed.contains("Installed") && installed.contains("\"fresh\""),
        "{installed}"
    );
    assert_eq!(f.repo_files().len(), 1);
    let announced = Request::Install {
        repository: "default",
        size: bytes.len() as u64,
        fd: false,
        package: package("fresh"),
        replace: false,
    };
    let refused = f.request(&mut peer, announced);
    assert!(refused.contains("AlreadyInstalled"), "{refused}");
    let nowhere = Request::InstallBegin {
        repository: "elsewhere",
        size: 10,
        fd: false,
    };
    assert!(f.request(&mut peer, nowhere).contains("NoSuchRepository"));
    // An end without a begin breaks the protocol, and the connection closes after it.
    let violation = f.request(&mut peer, Request::InstallEnd);
    let want = format!("{:?}", Error::ProtocolViolation(Violation::NoInstall));
    assert!(violation.contains(&want), "{violation}");
    assert!(f.runtime.clients.get_ref(peer.token).unwrap().closing);
}

/// Chunks small enough for one frame.
const MAX_CHUNK: usize = nanostar_protocol::limits::MAX_CHUNK_LEN;

#[test]
fn container_requests_name_what_is_missing() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let stop = |name| Request::Stop {
        name,
        version: None,
        timeout_ms: None,
    };
    assert!(f.request(&mut peer, stop("app")).contains("NotRunning"));
    assert!(
        f.request(&mut peer, stop("ghost"))
            .contains("UnknownPackage")
    );
    let logs = |name| Request::Logs {
        name,
        version: None,
        follow: false,
    };
    // Known but never started: an empty log.
    assert_eq!(
        f.request(&mut peer, logs("app")),
        "Reply { id: 1, reply: LogEnd }"
    );
    assert!(
        f.request(&mut peer, logs("ghost"))
            .contains("UnknownPackage")
    );
    let kill = Request::Kill {
        name: "app",
        version: None,
        signal: 200,
    };
    assert!(f.request(&mut peer, kill).contains("InvalidArgument"));
    let start = Request::Start {
        name: "ghost",
        version: None,
        args: None,
        env: Vec::new(),
    };
    assert!(f.request(&mut peer, start).contains("UnknownPackage"));
    assert!(!f.runtime.containers.table.any_alive());
}

#[test]
fn garbage_is_a_violation_and_shutdown_refuses_new_work() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    peer.stream.write_all(&[0x42, 0x17, 0x00]).unwrap();
    f.runtime.read_client(peer.token);
    assert!(f.runtime.clients.get_ref(peer.token).unwrap().closing);
    let mut other = f.connect(0);
    assert_eq!(
        f.request(&mut other, Request::Shutdown),
        "Reply { id: 1, reply: Ok }"
    );
    let late = f.request(&mut other, Request::List { after: None });
    assert!(late.contains("ShuttingDown"), "{late}");
}

#[test]
fn a_stop_timeout_above_the_configured_bound_is_refused_first() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let stop = |name, timeout_ms| Request::Stop {
        name,
        version: None,
        timeout_ms: Some(timeout_ms),
    };
    let max = f.runtime.config.limits.max_stop_timeout_ms;
    assert_eq!(max, config::DEFAULT_MAX_STOP_TIMEOUT_MS);
    // The 49 days, and one above the bound: refused before any lookup.
    for timeout in [u32::MAX, max + 1] {
        let refused = f.request(&mut peer, stop("app", timeout));
        assert!(refused.contains("InvalidArgument"), "{refused}");
        let refused = f.request(&mut peer, stop("ghost", timeout));
        assert!(refused.contains("InvalidArgument"), "{refused}");
    }
    let at_the_bound = f.request(&mut peer, stop("app", max));
    assert!(at_the_bound.contains("NotRunning"), "{at_the_bound}");
}

#[test]
fn a_shutdown_still_serves_stop_and_kill() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    assert_eq!(
        f.request(&mut peer, Request::Shutdown),
        "Reply { id: 1, reply: Ok }"
    );
    // They reach their handlers (nothing runs here), where other requests are refused.
    let kill = Request::Kill {
        name: "app",
        version: None,
        signal: 19,
    };
    let killed = f.request(&mut peer, kill);
    assert!(killed.contains("NotRunning"), "{killed}");
    let stop = Request::Stop {
        name: "app",
        version: None,
        timeout_ms: None,
    };
    let stopped = f.request(&mut peer, stop);
    assert!(stopped.contains("NotRunning"), "{stopped}");
    let start = Request::Start {
        name: "app",
        version: None,
        args: None,
        env: Vec::new(),
    };
    let refused = f.request(&mut peer, start);
    assert!(refused.contains("ShuttingDown"), "{refused}");
}
