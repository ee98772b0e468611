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
use crate::limits::INSTALL_PUMP_SLICE;

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

/// An NPK of package `name` 1.0.0, an app.
fn npk(name: &str) -> StdVec<u8> {
    npk_holding(name, b"hello\n")
}

/// An NPK of package `name` 1.0.0 whose image holds `data` in a file.
fn npk_holding(name: &str, data: &[u8]) -> StdVec<u8> {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello.txt"), data).unwrap();
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
        Fixture::configured(packages, console, "")
    }

    /// As [`Fixture::new`], with `limits` in the configuration's `[limits]`.
    fn configured(packages: &[&str], console: &str, limits: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
        std::fs::create_dir_all(path("repo")).unwrap();
        for name in packages {
            std::fs::write(path(&format!("repo/{name}.npk")), npk(name)).unwrap();
        }
        let text = format!(
            "run_dir = \"{}\"\ndata_dir = \"{}\"\nsocket = \"{}\"\n[limits]\n{limits}\n\
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

    /// A connection of a peer with `uid` that has not said anything yet.
    fn silent(&mut self, uid: u32) -> Peer {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let fd = rustix::fd::OwnedFd::from(theirs);
        let token = self
            .runtime
            .clients
            .add(fd, uid, uid, &self.runtime.poll)
            .unwrap();
        Peer {
            stream: ours,
            token,
        }
    }

    /// A client with `uid` after its handshake.
    fn connect(&mut self, uid: u32) -> Peer {
        let mut peer = self.silent(uid);
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
        self.send_bytes(peer, &encoded(message))
    }

    /// Sends `bytes`, lets the runtime read once, returns the frames it answered.
    fn send_bytes(&mut self, peer: &mut Peer, bytes: &[u8]) -> StdVec<StdString> {
        peer.stream.write_all(bytes).unwrap();
        self.runtime.read_client(peer.token);
        self.answered(peer)
    }

    /// The frames the runtime has queued for `peer`, written and read back.
    fn answered(&mut self, peer: &mut Peer) -> StdVec<StdString> {
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

/// `message` as a frame on the wire.
fn encoded(message: &Message) -> StdVec<u8> {
    let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
    message.encode(&mut wire).unwrap().to_vec()
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
    let ended = f.send(&mut peer, &install_end());
    assert!(ended.is_empty(), "answered once synced: {ended:?}");
    let (installed, _) = f.sync_upload(&mut peer);
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
    // An end without a begin breaks the protocol; the connection serves on.
    let violation = f.request(&mut peer, Request::InstallEnd);
    let want = format!("{:?}", Error::ProtocolViolation(Violation::NoInstall));
    assert!(violation.contains(&want), "{violation}");
    assert!(!f.runtime.clients.get_ref(peer.token).unwrap().closing);
}

/// Chunks small enough for one frame.
const MAX_CHUNK: usize = nanostar_protocol::limits::MAX_CHUNK_LEN;

fn install_end() -> Message<'static> {
    Message::Request {
        id: 1,
        request: Request::InstallEnd,
    }
}

/// `len` bytes no compressor shrinks (xorshift), so the package is about as large.
fn noise(len: usize) -> StdVec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Fixture {
    /// Begins a streamed install of `bytes` as request 1 and sends every chunk, not the
    /// end.
    fn stream(&mut self, peer: &mut Peer, bytes: &[u8]) {
        let begin = Request::InstallBegin {
            repository: "default",
            size: bytes.len() as u64,
            fd: false,
        };
        assert!(self.request(peer, begin).contains("InstallAccepted"));
        for chunk in bytes.chunks(MAX_CHUNK) {
            let chunk = Message::Request {
                id: 1,
                request: Request::InstallChunk { data: chunk },
            };
            let sent = self.send(peer, &chunk);
            assert!(sent.is_empty(), "a chunk has no reply: {sent:?}");
        }
    }

    /// Runs the install pump, a loop turn at a time, until `peer` is answered; the
    /// answer and the turns it took.
    fn sync_upload(&mut self, peer: &mut Peer) -> (StdString, usize) {
        for turn in 1..=1000 {
            self.runtime.pump_uploads();
            let mut frames = self.answered(peer);
            if !frames.is_empty() {
                assert_eq!(frames.len(), 1, "{frames:?}");
                return (frames.remove(0), turn);
            }
        }
        panic!("no answer in 1000 turns");
    }
}

#[test]
fn an_install_is_synced_a_slice_per_turn_while_others_are_served() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut installer = f.connect(0);
    let mut lister = f.connect(0);
    let bytes = npk_holding("big", &noise(3 * INSTALL_PUMP_SLICE + 12345));
    let slices = bytes.len().div_ceil(INSTALL_PUMP_SLICE);
    assert!(slices >= 4, "{slices}");
    f.stream(&mut installer, &bytes);
    // Every byte is in, none answered: the end waits for the writeback, not the loop.
    let ended = f.send(&mut installer, &install_end());
    assert!(ended.is_empty(), "answered before it was synced: {ended:?}");
    f.runtime.pump_uploads();
    assert!(f.answered(&mut installer).is_empty(), "one slice, not all");
    assert_eq!(f.repo_files(), [".tmp-1", "app.npk"]);
    // Mid-sync, another client is served.
    let list = f.request(&mut lister, Request::List { after: None });
    assert!(
        list.contains("Packages") && list.contains("\"app\"") && !list.contains("\"big\""),
        "{list}"
    );
    assert!(f.answered(&mut installer).is_empty());
    let (installed, turns) = f.sync_upload(&mut installer);
    assert!(installed.contains("Installed"), "{installed}");
    // A slice per turn: `slices` turns in all, the first one above.
    assert_eq!(turns + 1, slices, "{installed}");
    assert_eq!(f.repo_files(), ["app.npk", "big-1.0.0.npk"]);
    let list = f.request(&mut lister, Request::List { after: None });
    assert!(list.contains("\"big\""), "{list}");
}

#[test]
fn an_install_aborted_timed_out_or_left_while_syncing_leaves_nothing() {
    let mut f = Fixture::configured(&[], "uid.0 = \"full\"", "install_timeout_ms = 1");
    let bytes = npk_holding("big", &noise(2 * INSTALL_PUMP_SLICE));
    let syncing = |f: &mut Fixture| {
        let mut peer = f.connect(0);
        f.stream(&mut peer, &bytes);
        assert!(f.send(&mut peer, &install_end()).is_empty());
        f.runtime.pump_uploads();
        assert!(f.answered(&mut peer).is_empty(), "still syncing");
        assert_eq!(f.repo_files().len(), 1, "{:?}", f.repo_files());
        assert!(f.repo_files()[0].starts_with(".tmp-"));
        peer
    };
    // Aborted.
    let mut peer = syncing(&mut f);
    let abort = f.request(&mut peer, Request::InstallAbort);
    assert!(abort.contains("Ok"), "{abort}");
    assert!(f.repo_files().is_empty(), "{:?}", f.repo_files());
    f.runtime.pump_uploads();
    assert!(f.answered(&mut peer).is_empty(), "no install to answer");
    // Timed out: each synced slice renews the deadline, a turn without one lets it pass.
    let mut peer = syncing(&mut f);
    std::thread::sleep(std::time::Duration::from_millis(5));
    f.runtime.expire_uploads();
    let frames = f.answered(&mut peer);
    assert!(
        frames.len() == 1 && frames[0].contains("InstallTimeout"),
        "{frames:?}"
    );
    assert!(f.repo_files().is_empty(), "{:?}", f.repo_files());
    // Its client gone.
    let peer = syncing(&mut f);
    drop(peer.stream);
    f.runtime.read_client(peer.token);
    f.runtime.clients.settle_all(&f.runtime.poll);
    assert!(f.runtime.clients.get_ref(peer.token).is_none());
    assert!(f.repo_files().is_empty(), "{:?}", f.repo_files());
}

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

/// `ProtocolViolation(why)` as `Debug` text.
fn violation(why: Violation) -> StdString {
    format!("{:?}", Error::ProtocolViolation(why))
}

#[test]
fn violations_3_to_7_are_answered_and_the_connection_serves_on() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut peer = f.connect(0);
    let list = Message::Request {
        id: 9,
        request: Request::List { after: None },
    };
    let serves_on = |f: &mut Fixture, peer: &mut Peer| {
        let frames = f.send(peer, &list);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(
            frames[0].starts_with("Reply { id: 9, reply: Packages"),
            "{frames:?}"
        );
        assert!(!f.runtime.clients.get_ref(peer.token).unwrap().closing);
    };
    // 3: a second Hello.
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "again",
    });
    let answer = f.exchange(&mut peer, &hello);
    assert!(
        answer.contains(&violation(Violation::Unexpected)),
        "{answer}"
    );
    serves_on(&mut f, &mut peer);
    // 4: a chunk of no install.
    let stray = Message::Request {
        id: 5,
        request: Request::InstallChunk { data: b"x" },
    };
    let answer = f.exchange(&mut peer, &stray);
    assert!(
        answer.contains(&violation(Violation::NoInstall)),
        "{answer}"
    );
    serves_on(&mut f, &mut peer);
    // 5: a second install while one runs.
    let begin = |id| Message::Request {
        id,
        request: Request::InstallBegin {
            repository: "default",
            size: 10,
            fd: false,
        },
    };
    assert!(f.exchange(&mut peer, &begin(1)).contains("InstallAccepted"));
    let answer = f.exchange(&mut peer, &begin(2));
    assert!(
        answer.starts_with("Reply { id: 2")
            && answer.contains(&violation(Violation::InstallInProgress)),
        "{answer}"
    );
    serves_on(&mut f, &mut peer);
    // 6: more bytes than announced. That answer ends the install: what the client sent
    // for it meanwhile is dropped without a reply.
    let chunk = |data| Message::Request {
        id: 1,
        request: Request::InstallChunk { data },
    };
    let answer = f.exchange(&mut peer, &chunk(&[7; 20]));
    assert!(
        answer.contains(&violation(Violation::InstallSize)),
        "{answer}"
    );
    assert!(f.send(&mut peer, &chunk(&[7; 5])).is_empty());
    let end = Message::Request {
        id: 1,
        request: Request::InstallEnd,
    };
    assert!(f.send(&mut peer, &end).is_empty());
    assert!(f.repo_files().iter().all(|f| !f.starts_with(".tmp")));
    serves_on(&mut f, &mut peer);
    // 7: an install by descriptor without one.
    let by_fd = Message::Request {
        id: 3,
        request: Request::InstallBegin {
            repository: "default",
            size: 10,
            fd: true,
        },
    };
    let answer = f.exchange(&mut peer, &by_fd);
    assert!(answer.contains(&violation(Violation::Fd)), "{answer}");
    serves_on(&mut f, &mut peer);
}

#[test]
fn after_a_closing_violation_nothing_of_the_same_read_is_served() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let list = encoded(&Message::Request {
        id: 2,
        request: Request::List { after: None },
    });
    // Undecodable, then a request in the same write.
    let mut peer = f.connect(0);
    let mut bytes = std::vec![0x42, 0x17, 0x00];
    bytes.extend_from_slice(&list);
    let frames = f.send_bytes(&mut peer, &bytes);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].contains(&violation(Violation::Undecodable)),
        "{frames:?}"
    );
    assert!(f.runtime.clients.get_ref(peer.token).unwrap().closing);
    // No Hello first, then a request.
    let mut early = f.silent(0);
    let frames = f.send_bytes(&mut early, &list);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].contains(&violation(Violation::NoHello)),
        "{frames:?}"
    );
    // A frame too long, then a request.
    let mut long = f.connect(0);
    let mut bytes = std::vec![0xFF; MAX_WIRE_FRAME_LEN + 300];
    bytes.push(0);
    bytes.extend_from_slice(&list);
    let frames = f.send_bytes(&mut long, &bytes);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].contains(&violation(Violation::FrameTooLong)),
        "{frames:?}"
    );
}

#[test]
fn a_flooding_client_waits_for_its_next_turn_while_others_are_served() {
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let mut flooder = f.connect(0);
    let mut other = f.connect(0);
    // 60 KB of empty frames, then a request: several turns' reads.
    let mut bytes = std::vec![0u8; 60_000];
    bytes.extend_from_slice(&encoded(&Message::Request {
        id: 4,
        request: Request::List { after: None },
    }));
    flooder.stream.set_nonblocking(false).unwrap();
    flooder.stream.write_all(&bytes).unwrap();
    f.runtime.read_client(flooder.token);
    assert!(
        f.answered(&mut flooder).is_empty(),
        "one turn read the whole flood"
    );
    let answer = f.request(&mut other, Request::List { after: None });
    assert!(
        answer.starts_with("Reply { id: 1, reply: Packages"),
        "{answer}"
    );
    // The rest comes turn by turn.
    let per_turn = crate::limits::CLIENT_READ_LEN * crate::limits::CLIENT_READS_PER_TURN;
    let mut turns = 1;
    let frames = loop {
        f.runtime.read_client(flooder.token);
        turns += 1;
        let frames = f.answered(&mut flooder);
        if !frames.is_empty() || turns > bytes.len() / per_turn + 2 {
            break frames;
        }
    };
    assert_eq!(turns, bytes.len().div_ceil(per_turn), "{frames:?}");
    assert!(
        frames[0].starts_with("Reply { id: 4, reply: Packages"),
        "{frames:?}"
    );
}

/// A console socket in the fixture's directory, to connect newcomers to.
fn listener(f: &Fixture) -> (std::path::PathBuf, rustix::fd::OwnedFd) {
    let path = f.dir.path().join("listen");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    (path, rustix::fd::OwnedFd::from(listener))
}

/// Reads what `stream` has been sent until it closes (or 5 s pass); whether it closed,
/// and the frames.
fn drain(stream: &mut UnixStream) -> (bool, StdVec<StdString>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut bytes = StdVec::new();
    let closed = loop {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            // Closed with something of ours unread.
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    let mut input = &bytes[..];
    let mut frames = StdVec::new();
    while let Some(frame) = decoder.decode(&mut input) {
        frames.push(format!("{:?}", Message::decode(frame.unwrap()).unwrap()));
    }
    (closed, frames)
}

#[test]
fn a_full_table_gives_a_newcomer_the_slot_of_a_silent_peer() {
    // max_clients is 8 by default.
    let mut f = Fixture::new(&["app"], "uid.0 = \"full\"");
    let (path, socket) = listener(&f);
    // The oldest connection: a client whose Hello has arrived but was not read yet. It
    // keeps its slot.
    let mut unread = f.silent(0);
    let hello = encoded(&Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "newcomer",
    }));
    unread.stream.write_all(&hello).unwrap();
    let mut silent: StdVec<Peer> = (0..6).map(|_| f.silent(0)).collect();
    // A peer that may do nothing goes after every silent one.
    let mut powerless = f.connect(1000);
    assert_eq!(f.runtime.clients.count(), 8);
    let newcomer = |f: &mut Fixture| {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(&hello).unwrap();
        f.runtime.accept_clients(&socket);
        for token in f.runtime.clients.tokens() {
            f.runtime.read_client(token);
        }
        f.runtime.clients.settle_all(&f.runtime.poll);
        stream
    };
    let mut newcomers = StdVec::new();
    for oldest in &mut silent {
        newcomers.push(newcomer(&mut f));
        // The oldest silent peer made room.
        let (closed, frames) = drain(&mut oldest.stream);
        assert!(closed && frames.is_empty(), "{frames:?}");
        assert_eq!(f.runtime.clients.count(), 8);
    }
    assert!(f.runtime.clients.get_ref(unread.token).is_some());
    assert!(f.answered(&mut unread)[0].starts_with("Welcome"));
    newcomers.push(newcomer(&mut f));
    assert!(f.runtime.clients.get_ref(powerless.token).is_none());
    assert!(drain(&mut powerless.stream).0);
    // Every slot serves a peer that may do something: the next one is refused.
    let mut refused = newcomer(&mut f);
    let (closed, frames) = drain(&mut refused);
    assert!(closed, "{frames:?}");
    assert_eq!(
        frames,
        [format!(
            "{:?}",
            Message::Reply {
                id: 0,
                reply: nanostar_protocol::console::Reply::Error(Error::Full(
                    nanostar_protocol::console::Table::Clients
                )),
            }
        )]
    );
    for stream in &mut newcomers {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap();
        let frame = FrameDecoder::new([0u8; MAX_FRAME_LEN])
            .decode(&mut &buf[..n])
            .unwrap()
            .unwrap()
            .to_vec();
        assert!(matches!(Message::decode(&frame), Ok(Message::Welcome(_))));
    }
}

#[test]
fn silent_and_idle_connections_are_closed_and_waiting_ones_are_not() {
    let mut f = Fixture::configured(
        &["app"],
        "uid.0 = \"full\"",
        "hello_timeout_ms = 20\nidle_timeout_ms = 50",
    );
    let mut silent = f.silent(0);
    let mut idle = f.connect(0);
    let mut subscriber = f.connect(0);
    assert!(
        f.request(&mut subscriber, Request::Subscribe)
            .contains("Ok")
    );
    let gone = |f: &Fixture, peer: &Peer| f.runtime.clients.get_ref(peer.token).is_none();
    let until = |f: &mut Fixture, done: &dyn Fn(&Fixture) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done(f) {
            assert!(std::time::Instant::now() < deadline, "not closed in 10 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
            f.runtime.expire_clients();
            f.runtime.clients.settle_all(&f.runtime.poll);
        }
    };
    until(&mut f, &|f| gone(f, &silent) && gone(f, &idle));
    let (closed, frames) = drain(&mut silent.stream);
    assert!(closed, "{frames:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].contains(&violation(Violation::NoHello)),
        "{frames:?}"
    );
    assert_eq!(drain(&mut idle.stream), (true, StdVec::new()));
    // The subscriber waits for notifications: it stays, and is idle once it stops.
    assert!(!gone(&f, &subscriber));
    let next = f.runtime.clients.next_deadline(&f.runtime.config.limits);
    assert!(next.is_none(), "{next:?}");
    assert!(
        f.request(&mut subscriber, Request::Unsubscribe)
            .contains("Ok")
    );
    until(&mut f, &|f| gone(f, &subscriber));
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
