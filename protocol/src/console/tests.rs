use std::boxed::Box;
use std::collections::BTreeSet;
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::limits::*;
use crate::npk::manifest::EnvVar;
use crate::npk::{ContentError, HeaderError, KeyId};
use crate::permissions::Permissions;
use crate::version::Version;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_bytes(len: usize, byte: u8) -> &'static [u8] {
    Box::leak(vec![byte; len].into_boxed_slice())
}

fn id(name: &'static str) -> PackageId<'static> {
    PackageId {
        name,
        version: Version::new(1, 2, 3),
    }
}

fn info(name: &'static str) -> PackageInfo<'static> {
    PackageInfo {
        package: id(name),
        repository: "system",
        mounted: true,
        container: None,
    }
}

fn request(request: Request<'static>) -> Message<'static> {
    Message::Request { id: 7, request }
}

fn reply(reply: Reply<'static>) -> Message<'static> {
    Message::Reply { id: 7, reply }
}

/// The name of the innermost variant, from exhaustive matches: appending a variant
/// anywhere breaks this until it gets a name, and `every_variant_is_covered` then asks
/// for a sample and a maximal instance of it.
fn variant(m: &Message<'_>) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::VersionMismatch(_) => "VersionMismatch",
        Message::Request { request, .. } => match request {
            Request::List { .. } => "List",
            Request::Inspect { .. } => "Inspect",
            Request::InstallBegin { .. } => "InstallBegin",
            Request::InstallChunk { .. } => "InstallChunk",
            Request::InstallEnd => "InstallEnd",
            Request::InstallAbort => "InstallAbort",
            Request::Uninstall { .. } => "Uninstall",
            Request::Mount(_) => "Mount",
            Request::Umount(_) => "Umount",
            Request::Shutdown => "Shutdown",
            Request::Subscribe => "Subscribe",
            Request::Unsubscribe => "Unsubscribe",
            Request::Start { .. } => "Start",
            Request::Stop { .. } => "Stop",
            Request::Kill { .. } => "Kill",
            Request::Logs { .. } => "Logs",
            Request::Repositories => "Repositories",
            Request::Install { .. } => "Install",
            Request::TailLogs { .. } => "TailLogs",
        },
        Message::Reply { reply, .. } => match reply {
            Reply::Ok => "Ok",
            Reply::Error(e) => match e {
                Error::PermissionDenied => "E.PermissionDenied",
                Error::ProtocolViolation(_) => "E.ProtocolViolation",
                Error::InvalidArgument => "E.InvalidArgument",
                Error::UnknownPackage => "E.UnknownPackage",
                Error::Ambiguous => "E.Ambiguous",
                Error::AlreadyInstalled => "E.AlreadyInstalled",
                Error::NoSuchRepository => "E.NoSuchRepository",
                Error::RepositoryFull => "E.RepositoryFull",
                Error::TooLarge => "E.TooLarge",
                Error::InstallTimeout => "E.InstallTimeout",
                Error::BadPackage(_) => "E.BadPackage",
                Error::Busy { .. } => "E.Busy",
                Error::AlreadyMounted => "E.AlreadyMounted",
                Error::NotMounted => "E.NotMounted",
                Error::DeviceMapperMissing => "E.DeviceMapperMissing",
                Error::Full(_) => "E.Full",
                Error::ShuttingDown => "E.ShuttingDown",
                Error::Io(_) => "E.Io",
                Error::AlreadyRunning => "E.AlreadyRunning",
                Error::NotRunning => "E.NotRunning",
                Error::IsResource => "E.IsResource",
                Error::ResourceMissing { .. } => "E.ResourceMissing",
                Error::BindSourceMissing { .. } => "E.BindSourceMissing",
                Error::NetnsMissing { .. } => "E.NetnsMissing",
                Error::CgroupUnavailable => "E.CgroupUnavailable",
                Error::Setup { .. } => "E.Setup",
                Error::Mount { .. } => "E.Mount",
            },
            Reply::Packages { .. } => "Packages",
            Reply::Inspected(_) => "Inspected",
            Reply::InstallAccepted => "InstallAccepted",
            Reply::InstallProgress { .. } => "InstallProgress",
            Reply::Installed(_) => "Installed",
            Reply::Log { .. } => "Log",
            Reply::LogEnd => "LogEnd",
            Reply::Stopped(_) => "Stopped",
            Reply::Repositories { .. } => "R.Repositories",
            Reply::Ended(_) => "Ended",
        },
        Message::Notification(n) => match n {
            Notification::Installed { .. } => "N.Installed",
            Notification::Uninstalled(_) => "N.Uninstalled",
            Notification::Mounted(_) => "N.Mounted",
            Notification::Umounted(_) => "N.Umounted",
            Notification::ShuttingDown => "N.ShuttingDown",
            Notification::Started { .. } => "N.Started",
            Notification::Exited { .. } => "N.Exited",
            Notification::OutOfMemory(_) => "N.OutOfMemory",
            Notification::GaveUp { .. } => "N.GaveUp",
        },
    }
}

const VARIANTS: usize = 3 + 19 + 1 + 27 + 10 + 9;

/// Every variant once, with ordinary values.
fn samples() -> Vec<Message<'static>> {
    let mut m = vec![
        Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "nanostar 0.1.0",
        }),
        Message::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            permissions: Permissions::ALL,
        }),
        Message::VersionMismatch(VersionMismatch {
            runtime: 1,
            oldest: 1,
        }),
        request(Request::List { after: None }),
        request(Request::List {
            after: Some(id("hello")),
        }),
        request(Request::Inspect {
            name: "hello",
            version: None,
            manifest_offset: 0,
        }),
        request(Request::InstallBegin {
            repository: "system",
            size: 16 << 20,
            fd: false,
        }),
        request(Request::InstallChunk {
            data: &[0, 1, 2, 0, 0, 255],
        }),
        request(Request::InstallEnd),
        request(Request::InstallAbort),
        request(Request::Uninstall {
            package: id("hello"),
            wipe: true,
        }),
        request(Request::Mount(id("hello"))),
        request(Request::Umount(id("hello"))),
        request(Request::Shutdown),
        request(Request::Subscribe),
        request(Request::Unsubscribe),
        request(Request::Start {
            name: "hello",
            version: Some(Version::new(1, 0, 0)),
            args: Some(heapless::Vec::from_slice(&["--verbose", ""]).unwrap()),
            env: heapless::Vec::from_slice(&[EnvVar {
                key: "RUST_LOG",
                value: "debug",
            }])
            .unwrap(),
        }),
        request(Request::Stop {
            name: "hello",
            version: None,
            timeout_ms: Some(1000),
        }),
        request(Request::Kill {
            name: "hello",
            version: None,
            signal: 15,
        }),
        request(Request::Logs {
            name: "hello",
            version: None,
            follow: true,
        }),
        request(Request::Repositories),
        request(Request::Install {
            repository: "default",
            size: 4096,
            fd: true,
            package: id("hello"),
            replace: true,
        }),
        request(Request::TailLogs {
            name: "hello",
            version: None,
            follow: false,
            lines: Some(10),
        }),
        reply(Reply::Ok),
        reply(Reply::Packages {
            packages: heapless::Vec::from_slice(&[info("a"), info("b")]).unwrap(),
            more: false,
        }),
        reply(Reply::Inspected(Inspected {
            package: info("hello"),
            size: 1 << 20,
            key: Some([1; 8]),
            manifest_len: 3,
            manifest_offset: 0,
            manifest: &[1, 2, 3],
        })),
        reply(Reply::InstallAccepted),
        reply(Reply::InstallProgress { received: 8192 }),
        reply(Reply::Installed(id("hello"))),
        reply(Reply::Log {
            dropped: 0,
            data: b"hello\n",
        }),
        reply(Reply::LogEnd),
        reply(Reply::Stopped(ExitStatus::Code(101))),
        reply(Reply::Repositories {
            repositories: heapless::Vec::from_slice(&[RepositoryInfo {
                name: "default",
                keys: heapless::Vec::from_slice(&[[3; 8]]).unwrap(),
                packages: 2,
            }])
            .unwrap(),
        }),
        reply(Reply::Ended(ExitStatus::Signal(15))),
        Message::Notification(Notification::Installed {
            package: id("hello"),
            repository: "system",
        }),
        Message::Notification(Notification::Uninstalled(id("hello"))),
        Message::Notification(Notification::Mounted(id("hello"))),
        Message::Notification(Notification::Umounted(id("hello"))),
        Message::Notification(Notification::ShuttingDown),
        Message::Notification(Notification::Started {
            package: id("hello"),
            pid: 42,
        }),
        Message::Notification(Notification::Exited {
            package: id("hello"),
            status: ExitStatus::Code(1),
        }),
        Message::Notification(Notification::Exited {
            package: id("hello"),
            status: ExitStatus::Signal(9),
        }),
        Message::Notification(Notification::OutOfMemory(id("hello"))),
        Message::Notification(Notification::GaveUp {
            package: id("hello"),
            restarts: 3,
            status: ExitStatus::Code(1),
        }),
    ];
    let errors = [
        Error::PermissionDenied,
        Error::ProtocolViolation(Violation::Undecodable),
        Error::ProtocolViolation(Violation::Fd),
        Error::InvalidArgument,
        Error::UnknownPackage,
        Error::Ambiguous,
        Error::AlreadyInstalled,
        Error::NoSuchRepository,
        Error::RepositoryFull,
        Error::TooLarge,
        Error::InstallTimeout,
        Error::BadPackage(PackageError::Signature),
        Error::BadPackage(PackageError::UnknownKey([7; 8])),
        Error::BadPackage(PackageError::ArchMismatch {
            package: 2,
            runtime: 3,
        }),
        Error::Busy { used_by: id("app") },
        Error::AlreadyMounted,
        Error::NotMounted,
        Error::DeviceMapperMissing,
        Error::Full(Table::Mounts),
        Error::ShuttingDown,
        Error::Io(5),
        Error::AlreadyRunning,
        Error::NotRunning,
        Error::IsResource,
        Error::ResourceMissing { name: "base" },
        Error::BindSourceMissing { path: "/srv/data" },
        Error::NetnsMissing { name: "lan" },
        Error::CgroupUnavailable,
        Error::Setup {
            step: SetupStep::Mount(3),
            errno: 2,
        },
        Error::Mount {
            step: MountStep::DmTableLoad,
            errno: 22,
        },
    ];
    m.extend(errors.into_iter().map(|e| reply(Reply::Error(e))));
    m
}

/// Every variant with every list at capacity, every string at its limit and every
/// integer at its longest varint.
fn maximal() -> Vec<Message<'static>> {
    let name = leak("n".repeat(MAX_NAME_LEN));
    let big = Version::new(u32::MAX, u32::MAX, u32::MAX);
    let pid = PackageId { name, version: big };
    let pinfo = PackageInfo {
        package: pid,
        repository: leak("r".repeat(MAX_NAME_LEN)),
        mounted: true,
        container: Some(ContainerInfo {
            state: ContainerState::Restarting,
            pid: u32::MAX,
            uptime_ms: u64::MAX,
            last_exit: Some(ExitStatus::Code(i32::MIN)),
            restarts: u32::MAX,
        }),
    };
    let chunk = leak_bytes(MAX_CHUNK_LEN, 0xAB);
    let req = |request| Message::Request {
        id: u32::MAX,
        request,
    };
    let rep = |reply| Message::Reply {
        id: u32::MAX,
        reply,
    };
    // 32 arguments and 32 variables using the whole override budget, most arguments
    // long enough for a 2-byte length.
    let arg = leak("a".repeat(128));
    let mut args = heapless::Vec::from_slice(&[arg; MAX_ARGS - 1]).unwrap();
    args.push(leak("a".repeat(42))).unwrap();
    let mut env = heapless::Vec::new();
    for i in 0..MAX_ENV {
        env.push(EnvVar {
            key: leak(std::format!("K{i}")),
            value: "",
        })
        .unwrap();
    }
    let mut m = vec![
        Message::Hello(Hello {
            protocol_version: u16::MAX,
            client: leak("c".repeat(MAX_CLIENT_NAME_LEN)),
        }),
        Message::Welcome(Welcome {
            protocol_version: u16::MAX,
            permissions: Permissions(u32::MAX),
        }),
        Message::VersionMismatch(VersionMismatch {
            runtime: u16::MAX,
            oldest: u16::MAX,
        }),
        req(Request::List { after: Some(pid) }),
        req(Request::Inspect {
            name,
            version: Some(big),
            manifest_offset: MAX_MANIFEST_LEN as u32,
        }),
        req(Request::InstallBegin {
            repository: name,
            size: u64::MAX,
            fd: true,
        }),
        req(Request::InstallChunk { data: chunk }),
        req(Request::InstallEnd),
        req(Request::InstallAbort),
        req(Request::Uninstall {
            package: pid,
            wipe: true,
        }),
        req(Request::Mount(pid)),
        req(Request::Umount(pid)),
        req(Request::Shutdown),
        req(Request::Subscribe),
        req(Request::Unsubscribe),
        req(Request::Start {
            name,
            version: Some(big),
            args: Some(args),
            env,
        }),
        req(Request::Stop {
            name,
            version: Some(big),
            timeout_ms: Some(u32::MAX),
        }),
        req(Request::Kill {
            name,
            version: Some(big),
            signal: u8::MAX,
        }),
        req(Request::Logs {
            name,
            version: Some(big),
            follow: true,
        }),
        req(Request::Repositories),
        req(Request::Install {
            repository: name,
            size: u64::MAX,
            fd: true,
            package: pid,
            replace: true,
        }),
        req(Request::TailLogs {
            name,
            version: Some(big),
            follow: true,
            lines: Some(u32::MAX),
        }),
        rep(Reply::Ok),
        rep(Reply::Packages {
            packages: heapless::Vec::from_slice(&[pinfo; MAX_LIST_PAGE]).unwrap(),
            more: true,
        }),
        rep(Reply::Inspected(Inspected {
            package: pinfo,
            size: u64::MAX,
            key: Some([0xFF; 8]),
            manifest_len: MAX_MANIFEST_LEN as u32,
            manifest_offset: (MAX_MANIFEST_LEN - MAX_CHUNK_LEN) as u32,
            manifest: chunk,
        })),
        rep(Reply::InstallAccepted),
        rep(Reply::InstallProgress { received: u64::MAX }),
        rep(Reply::Installed(pid)),
        rep(Reply::Log {
            dropped: u64::MAX,
            data: chunk,
        }),
        rep(Reply::LogEnd),
        rep(Reply::Stopped(ExitStatus::Signal(u8::MAX))),
        rep(Reply::Repositories {
            repositories: (0..MAX_REPOSITORIES)
                .map(|_| RepositoryInfo {
                    name,
                    keys: heapless::Vec::from_slice(&[[0xFF; 8]; MAX_REPOSITORY_KEYS]).unwrap(),
                    packages: u32::MAX,
                })
                .collect(),
        }),
        rep(Reply::Ended(ExitStatus::Code(i32::MIN))),
        Message::Notification(Notification::Installed {
            package: pid,
            repository: name,
        }),
        Message::Notification(Notification::Uninstalled(pid)),
        Message::Notification(Notification::Mounted(pid)),
        Message::Notification(Notification::Umounted(pid)),
        Message::Notification(Notification::ShuttingDown),
        Message::Notification(Notification::Started {
            package: pid,
            pid: u32::MAX,
        }),
        Message::Notification(Notification::Exited {
            package: pid,
            status: ExitStatus::Code(i32::MIN),
        }),
        Message::Notification(Notification::OutOfMemory(pid)),
        Message::Notification(Notification::GaveUp {
            package: pid,
            restarts: u32::MAX,
            status: ExitStatus::Code(i32::MIN),
        }),
    ];
    let errors = [
        Error::PermissionDenied,
        Error::ProtocolViolation(Violation::InstallInProgress),
        Error::InvalidArgument,
        Error::UnknownPackage,
        Error::Ambiguous,
        Error::AlreadyInstalled,
        Error::NoSuchRepository,
        Error::RepositoryFull,
        Error::TooLarge,
        Error::InstallTimeout,
        Error::BadPackage(PackageError::UnknownKey([0xFF; 8])),
        Error::BadPackage(PackageError::ArchMismatch {
            package: u16::MAX,
            runtime: u16::MAX,
        }),
        Error::Busy { used_by: pid },
        Error::AlreadyMounted,
        Error::NotMounted,
        Error::DeviceMapperMissing,
        Error::Full(Table::Subscribers),
        Error::ShuttingDown,
        Error::Io(u16::MAX),
        Error::AlreadyRunning,
        Error::NotRunning,
        Error::IsResource,
        Error::ResourceMissing { name: "base" },
        Error::BindSourceMissing { path: "/srv/data" },
        Error::NetnsMissing { name: "lan" },
        Error::CgroupUnavailable,
        Error::Setup {
            step: SetupStep::Mount(3),
            errno: 2,
        },
        Error::Mount {
            step: MountStep::DmRemove,
            errno: u16::MAX,
        },
    ];
    m.extend(errors.into_iter().map(|e| rep(Reply::Error(e))));
    m
}

fn payload_len(m: &Message<'_>) -> usize {
    postcard::to_allocvec(m).unwrap().len()
}

#[test]
fn every_variant_is_covered() {
    for (what, list) in [("samples", samples()), ("maximal", maximal())] {
        let seen: BTreeSet<_> = list.iter().map(variant).collect();
        assert_eq!(seen.len(), VARIANTS, "{what}: {seen:?}");
    }
}

#[test]
fn round_trip_every_message() {
    let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    for m in samples().into_iter().chain(maximal()) {
        let frame = m.encode(&mut wire).unwrap();
        assert_eq!(frame.last(), Some(&0));
        assert!(!frame[..frame.len() - 1].contains(&0));
        let mut input = frame;
        let payload = decoder.decode(&mut input).unwrap().unwrap();
        assert!(input.is_empty());
        assert_eq!(payload, postcard::to_allocvec(&m).unwrap().as_slice());
        assert_eq!(Message::decode(payload), Ok(m.clone()), "{}", variant(&m));
        // Both encoders agree on what the frame means.
        let mut again = [0u8; MAX_WIRE_FRAME_LEN];
        let frame2 = encode_frame(payload, &mut again).unwrap();
        let mut input = frame2;
        assert_eq!(
            decoder.decode(&mut input),
            Some(Ok(payload_of(&m).as_slice()))
        );
    }
}

fn payload_of(m: &Message<'_>) -> Vec<u8> {
    postcard::to_allocvec(m).unwrap()
}

#[test]
fn every_message_fits_a_frame_at_its_limits() {
    let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
    let mut largest = 0;
    for m in maximal() {
        let len = payload_len(&m);
        largest = largest.max(len);
        assert!(len <= MAX_FRAME_LEN, "{}: {len}", variant(&m));
        assert!(m.encode(&mut wire).unwrap().len() <= MAX_WIRE_FRAME_LEN);
        if let Message::Request {
            request: Request::Start { .. },
            ..
        } = m
        {
            // Its content is at most MAX_START_OVERRIDE_LEN bytes in at most
            // MAX_ARGS + 2 * MAX_ENV strings of at most 512 bytes, so each length prefix
            // is at most 2 bytes: adding all of them again bounds every override.
            assert!(len + 2 * (MAX_ARGS + 2 * MAX_ENV) <= MAX_FRAME_LEN);
        }
    }
    // The largest is a chunk-carrying message; the headroom left is for appended fields.
    assert!(
        largest > MAX_CHUNK_LEN && largest < MAX_CHUNK_LEN + 300,
        "{largest}"
    );
}

#[test]
fn over_the_limits_is_refused_both_ways() {
    let long = leak("n".repeat(MAX_NAME_LEN + 1));
    let chunk = leak_bytes(MAX_CHUNK_LEN + 1, 1);
    let cases = [
        (request(Request::Mount(id(long))), MessageError::TooLong),
        (request(Request::Mount(id(""))), MessageError::Empty),
        (request(Request::Mount(id("a/b"))), MessageError::Character),
        (
            request(Request::Mount(id(".hidden"))),
            MessageError::Character,
        ),
        (
            request(Request::InstallChunk { data: chunk }),
            MessageError::TooLong,
        ),
        (
            reply(Reply::Log {
                dropped: 0,
                data: chunk,
            }),
            MessageError::TooLong,
        ),
        (
            Message::Hello(Hello {
                protocol_version: 1,
                client: "tab\there",
            }),
            MessageError::Character,
        ),
        (
            request(Request::Inspect {
                name: "a",
                version: None,
                manifest_offset: MAX_MANIFEST_LEN as u32 + 1,
            }),
            MessageError::Range,
        ),
        (
            reply(Reply::Inspected(Inspected {
                package: info("a"),
                size: 0,
                key: None,
                manifest_len: 2,
                manifest_offset: 1,
                manifest: &[1, 2],
            })),
            MessageError::Range,
        ),
        (start(&["a\0b"], &[]), MessageError::Character),
        (
            start(&[], &[("NANOSTAR_NAME", "x")]),
            MessageError::Reserved,
        ),
        (
            start(&[], &[("A", "1"), ("A", "2")]),
            MessageError::Duplicate,
        ),
        (start(&[], &[("1A", "x")]), MessageError::Character),
        (start(&[], &[("", "x")]), MessageError::Empty),
        (
            start(&[leak("a".repeat(MAX_ARG_LEN + 1))], &[]),
            MessageError::TooLong,
        ),
        (
            start(&[leak("a".repeat(MAX_ARG_LEN)); 9], &[]),
            MessageError::TooLong,
        ),
    ];
    let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
    for (m, want) in cases {
        assert_eq!(
            m.encode(&mut wire),
            Err(EncodeError::Invalid(want)),
            "{m:?}"
        );
        // Bypass the encoder's check: the decoder must refuse the same bytes.
        let bytes = postcard::to_allocvec(&m).unwrap();
        assert_eq!(Message::decode(&bytes), Err(want), "{m:?}");
    }
}

fn start(args: &[&'static str], env: &[(&'static str, &'static str)]) -> Message<'static> {
    request(Request::Start {
        name: "app",
        version: None,
        args: Some(heapless::Vec::from_slice(args).unwrap()),
        env: env
            .iter()
            .map(|&(key, value)| EnvVar { key, value })
            .collect(),
    })
}

#[test]
fn list_over_its_bound_and_trailing_bytes_are_malformed() {
    // A page of MAX_LIST_PAGE + 1 entries, written by hand.
    let mut bytes = vec![4, 1, 2, (MAX_LIST_PAGE + 1) as u8];
    for _ in 0..=MAX_LIST_PAGE {
        bytes.extend(postcard::to_allocvec(&info("a")).unwrap());
    }
    bytes.push(0);
    assert_eq!(Message::decode(&bytes), Err(MessageError::Malformed));

    let mut ok = postcard::to_allocvec(&request(Request::Shutdown)).unwrap();
    assert!(Message::decode(&ok).is_ok());
    ok.push(0);
    assert_eq!(Message::decode(&ok), Err(MessageError::TrailingBytes));
    assert_eq!(Message::decode(&[]), Err(MessageError::Malformed));
    assert_eq!(Message::decode(&[9]), Err(MessageError::Malformed));
    // Invalid UTF-8 in a name.
    assert_eq!(
        Message::decode(&[3, 1, 7, 2, 0xC3, 0x28, 1, 0, 0]),
        Err(MessageError::Malformed)
    );
    // The encoder refuses a buffer too short, never writes past it.
    let mut tiny = [0u8; 3];
    assert_eq!(
        request(Request::Shutdown).encode(&mut tiny),
        Err(EncodeError::BufferFull)
    );
}

#[test]
fn permissions_by_request() {
    let by_name = |n| Permissions::from_name(n).unwrap();
    let want = [
        ("List", "list"),
        ("Inspect", "inspect"),
        ("InstallBegin", "install"),
        ("InstallChunk", "install"),
        ("InstallEnd", "install"),
        ("InstallAbort", "install"),
        ("Uninstall", "uninstall"),
        ("Mount", "mount"),
        ("Umount", "umount"),
        ("Shutdown", "shutdown"),
        ("Subscribe", "notifications"),
        ("Start", "start"),
        ("Stop", "stop"),
        ("Kill", "kill"),
        ("Logs", "logs"),
        ("Repositories", "list"),
        ("Install", "install"),
        ("TailLogs", "logs"),
    ];
    for m in samples() {
        let v = variant(&m);
        let p = m.permission();
        match want.iter().find(|(r, _)| *r == v) {
            Some((_, name)) => assert_eq!(p, by_name(name), "{v}"),
            None => assert_eq!(p, Permissions::NONE, "{v}"),
        }
    }
}

/// The bytes `docs/protocol.md` shows.
#[test]
fn documented_bytes() {
    let mut wire = [0u8; 64];
    let hello = Message::Hello(Hello {
        protocol_version: 1,
        client: "nanostar",
    });
    assert_eq!(
        payload_of(&hello),
        [
            0x00, 0x01, 0x08, b'n', b'a', b'n', b'o', b's', b't', b'a', b'r'
        ]
    );
    assert_eq!(
        hello.encode(&mut wire).unwrap(),
        [
            0x01, 0x0B, 0x01, 0x08, b'n', b'a', b'n', b'o', b's', b't', b'a', b'r', 0x00
        ]
    );
    let welcome = Message::Welcome(Welcome {
        protocol_version: 1,
        permissions: Permissions(0x0803),
    });
    assert_eq!(payload_of(&welcome), [0x01, 0x01, 0x83, 0x10]);
    assert_eq!(
        welcome.encode(&mut wire).unwrap(),
        [0x05, 0x01, 0x01, 0x83, 0x10, 0x00]
    );
    let refusal = Message::VersionMismatch(VersionMismatch {
        runtime: 1,
        oldest: 1,
    });
    assert_eq!(
        refusal.encode(&mut wire).unwrap(),
        [0x04, 0x02, 0x01, 0x01, 0x00]
    );
    let list = Message::Request {
        id: 1,
        request: Request::List { after: None },
    };
    assert_eq!(payload_of(&list), [0x03, 0x01, 0x00, 0x00]);
    assert_eq!(
        list.encode(&mut wire).unwrap(),
        [0x03, 0x03, 0x01, 0x01, 0x01, 0x00]
    );
    let page = Message::Reply {
        id: 1,
        reply: Reply::Packages {
            packages: heapless::Vec::from_slice(&[PackageInfo {
                package: PackageId {
                    name: "hello",
                    version: Version::new(0, 1, 0),
                },
                repository: "dev",
                mounted: true,
                container: None,
            }])
            .unwrap(),
            more: false,
        },
    };
    assert_eq!(
        payload_of(&page),
        [
            0x04, 0x01, 0x02, 0x01, 0x05, b'h', b'e', b'l', b'l', b'o', 0x00, 0x01, 0x00, 0x03,
            b'd', b'e', b'v', 0x01, 0x00, 0x00
        ]
    );
    assert_eq!(
        page.encode(&mut wire).unwrap(),
        [
            0x0B, 0x04, 0x01, 0x02, 0x01, 0x05, b'h', b'e', b'l', b'l', b'o', 0x02, 0x01, 0x06,
            0x03, b'd', b'e', b'v', 0x01, 0x01, 0x01, 0x00
        ]
    );
    let denied = Message::Reply {
        id: 2,
        reply: Reply::Error(Error::PermissionDenied),
    };
    assert_eq!(payload_of(&denied), [0x04, 0x02, 0x01, 0x00]);
    assert_eq!(
        denied.encode(&mut wire).unwrap(),
        [0x04, 0x04, 0x02, 0x01, 0x01, 0x00]
    );
}

#[test]
fn handshake_start_is_frozen() {
    // A Hello of a future version with more fields: the runtime still reads its version.
    let mut future = vec![0x00, 0x02, 0x03, b'c', b'l', b'i'];
    future.extend([0xAA, 0xBB]);
    assert_eq!(peek_hello_version(&future), Some(2));
    assert_eq!(Message::decode(&future), Err(MessageError::TrailingBytes));
    assert_eq!(
        peek_hello_version(&[0x00, 0xFF, 0xFF, 0x03]),
        Some(u16::MAX)
    );
    assert_eq!(peek_hello_version(&[0x00]), None);
    assert_eq!(peek_hello_version(&[0x03, 0x01]), None);
    assert_eq!(peek_hello_version(&[]), None);
    // Indices 0, 1, 2 are the handshake, forever.
    assert_eq!(payload_of(&samples()[0])[0], 0);
    assert_eq!(payload_of(&samples()[1])[0], 1);
    assert_eq!(payload_of(&samples()[2])[0], 2);

    // A request this version cannot decode still yields its id for the error reply.
    assert_eq!(peek_request_id(&[0x03, 0x80, 0x01, 0x7F]), Some(128));
    assert_eq!(peek_request_id(&[0x04, 0x01]), None);
    assert_eq!(peek_request_id(&[0x03]), None);
}

#[test]
fn package_errors_map_one_to_one() {
    assert_eq!(
        PackageError::from(HeaderError::UnknownKey(KeyId([3; 8]))),
        PackageError::UnknownKey([3; 8])
    );
    assert_eq!(
        PackageError::from(HeaderError::Version(9)),
        PackageError::Version(9)
    );
    assert_eq!(
        PackageError::from(ContentError::ManifestDigest),
        PackageError::ManifestDigest
    );
}

#[test]
fn wire_limit_covers_cobs_worst_case() {
    // No zero at all is COBS's worst case: one code byte per 254 data bytes.
    let payload = vec![0x55u8; MAX_FRAME_LEN];
    let mut wire = vec![0u8; MAX_WIRE_FRAME_LEN];
    let frame = encode_frame(&payload, &mut wire).unwrap();
    assert!(frame.len() <= MAX_WIRE_FRAME_LEN);
    assert_eq!(frame::max_wire_len(MAX_FRAME_LEN), MAX_WIRE_FRAME_LEN);
    let mut decoder = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    let mut input = frame;
    assert_eq!(decoder.decode(&mut input), Some(Ok(payload.as_slice())));
    for len in [0, 1, 253, 254, 255, 508, 509] {
        let payload = vec![1u8; len];
        let frame = encode_frame(&payload, &mut wire).unwrap();
        assert!(frame.len() <= frame::max_wire_len(len), "{len}");
        let mut input = frame;
        assert_eq!(decoder.decode(&mut input), Some(Ok(payload.as_slice())));
    }
}

#[test]
fn decoded_message_is_small_enough_for_the_stack() {
    // The runtime decodes one message at a time on its stack; keep it bounded.
    let size = core::mem::size_of::<Message<'_>>();
    assert!(size <= 3072, "{size}");
}

#[test]
fn an_older_client_gets_only_what_its_version_knows() {
    let ended = reply(Reply::Ended(ExitStatus::Code(0)));
    assert_eq!(ended.clone().for_version(1), Some(reply(Reply::LogEnd)));
    assert_eq!(ended.clone().for_version(2), Some(ended));
    let arch = reply(Reply::Error(Error::BadPackage(
        PackageError::ArchMismatch {
            package: 2,
            runtime: 1,
        },
    )));
    assert_eq!(
        arch.for_version(1),
        Some(reply(Reply::Error(Error::BadPackage(
            PackageError::WrongArch
        ))))
    );
    let gave_up = Message::Notification(Notification::GaveUp {
        package: id("x"),
        restarts: 1,
        status: ExitStatus::Code(1),
    });
    assert_eq!(gave_up.clone().for_version(1), None);
    assert_eq!(gave_up.clone().for_version(2), Some(gave_up));
    // A mount's step is new in version 3: older clients get the errno alone.
    let mount = reply(Reply::Error(Error::Mount {
        step: MountStep::LoopAttach,
        errno: 16,
    }));
    for older in [1, 2] {
        let io = reply(Reply::Error(Error::Io(16)));
        assert_eq!(mount.clone().for_version(older), Some(io));
    }
    assert_eq!(mount.clone().for_version(3), Some(mount));
    // `NotAFile` is new in version 4: older clients get EINVAL.
    let not_a_file = reply(Reply::Error(Error::BadPackage(PackageError::NotAFile)));
    for older in [1, 2, 3] {
        let io = reply(Reply::Error(Error::Io(22)));
        assert_eq!(not_a_file.clone().for_version(older), Some(io));
    }
    assert_eq!(not_a_file.clone().for_version(4), Some(not_a_file));
    // `LogReads` is new in version 5: older clients get EBUSY.
    let log_reads = reply(Reply::Error(Error::Full(Table::LogReads)));
    for older in [1, 2, 3, 4] {
        let io = reply(Reply::Error(Error::Io(16)));
        assert_eq!(log_reads.clone().for_version(older), Some(io));
    }
    assert_eq!(log_reads.clone().for_version(5), Some(log_reads));
    // Everything version 1 has passes unchanged.
    for m in samples() {
        let v1 = !matches!(
            variant(&m),
            "Repositories"
                | "R.Repositories"
                | "Install"
                | "TailLogs"
                | "Ended"
                | "N.GaveUp"
                | "E.Mount"
        ) && !matches!(
            m,
            Message::Reply {
                reply: Reply::Error(Error::BadPackage(PackageError::ArchMismatch { .. })),
                ..
            }
        );
        if v1 {
            assert_eq!(m.clone().for_version(1), Some(m.clone()));
        }
        if variant(&m) != "E.Mount" {
            assert_eq!(m.clone().for_version(2), Some(m));
        }
    }
}
