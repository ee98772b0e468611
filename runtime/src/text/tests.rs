//! Tests of the words for people and the `--json` error codes.

use super::*;
use nanostar_protocol::console::{FrameDecoder, Message, PackageId, Reply, Violation};
use nanostar_protocol::limits::MAX_FRAME_LEN;

fn text(d: impl fmt::Display) -> std::string::String {
    std::format!("{d}")
}

#[test]
fn signals_by_number_and_name() {
    assert_eq!(parse_signal("9"), Some(9));
    assert_eq!(parse_signal("64"), Some(64));
    assert_eq!(parse_signal("0"), None);
    assert_eq!(parse_signal("65"), None);
    assert_eq!(parse_signal("-1"), None);
    assert_eq!(parse_signal("TERM"), Some(15));
    assert_eq!(parse_signal("SIGTERM"), Some(15));
    assert_eq!(parse_signal("sigkill"), Some(9));
    assert_eq!(parse_signal("Hup"), Some(1));
    assert_eq!(parse_signal("SYS"), Some(31));
    assert_eq!(parse_signal("SIG"), None);
    assert_eq!(parse_signal("SIGSIGTERM"), None);
    assert_eq!(parse_signal("TERMS"), None);
    assert_eq!(parse_signal(""), None);
    assert_eq!(parse_signal("é"), None);
    for n in 1..=31 {
        let name = signal_name(n).unwrap();
        assert_eq!(parse_signal(name), Some(n));
        assert_eq!(parse_signal(&std::format!("SIG{name}")), Some(n));
    }
    // The common ones, against the kernel's numbers on our targets.
    let expected = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
    ];
    for (name, n) in expected {
        assert_eq!(signal_name(n), Some(name));
    }
    assert_eq!(signal_name(0), None);
    assert_eq!(signal_name(34), None);
}

#[test]
fn exits_and_signals_for_people() {
    assert_eq!(text(ExitText(ExitStatus::Code(0))), "code 0");
    assert_eq!(text(ExitText(ExitStatus::Code(-1))), "code -1");
    assert_eq!(
        text(ExitText(ExitStatus::Signal(15))),
        "signal 15 (SIGTERM)"
    );
    assert_eq!(text(ExitText(ExitStatus::Signal(40))), "signal 40");
    assert_eq!(
        text(ExitSentence(ExitStatus::Code(3), "exited with code ")),
        "exited with code 3"
    );
    assert_eq!(
        text(ExitSentence(ExitStatus::Code(0), "exit code ")),
        "exit code 0"
    );
    assert_eq!(
        text(ExitSentence(ExitStatus::Signal(9), "code ")),
        "killed by signal 9 (SIGKILL)"
    );
    let names = text(SignalNames);
    assert!(
        names.starts_with("HUP INT QUIT") && names.ends_with("PWR SYS"),
        "{names}"
    );
    assert_eq!(names.split(' ').count(), 31);
}

#[test]
fn uptime_in_two_units() {
    assert_eq!(text(Uptime(0)), "0s");
    assert_eq!(text(Uptime(999)), "0s");
    assert_eq!(text(Uptime(12_000)), "12s");
    assert_eq!(text(Uptime(59_999)), "59s");
    assert_eq!(text(Uptime(60_000)), "1m00s");
    assert_eq!(text(Uptime(184_000)), "3m04s");
    assert_eq!(text(Uptime(3_599_000)), "59m59s");
    assert_eq!(text(Uptime(3_600_000)), "1h00m");
    assert_eq!(text(Uptime((2 * 3600 + 5 * 60 + 7) * 1000)), "2h05m");
    assert_eq!(text(Uptime(86_400_000)), "1d00h");
    assert_eq!(text(Uptime((3 * 86_400 + 7 * 3600) * 1000)), "3d07h");
    assert_eq!(text(Uptime(u64::MAX)), "213503982334d14h");
}

fn subject<'a>(command: &'a str, name: &'a str, version: Option<Version>) -> Subject<'a> {
    Subject {
        command,
        name: Some(name),
        version,
        repository: "signed",
        file: None,
    }
}

#[test]
fn refusals_name_what_they_are_about() {
    let v = Some(Version::new(0, 1, 0));
    let refusal = |e: &Error, s: &Subject| text(Refusal(e, s));
    let hello = subject("inspect", "hello", v);
    let bare = subject("start", "hello", None);
    assert_eq!(
        refusal(&Error::UnknownPackage, &hello),
        "no package hello 0.1.0 is installed"
    );
    assert_eq!(
        refusal(&Error::UnknownPackage, &bare),
        "no package hello is installed"
    );
    assert_eq!(
        refusal(&Error::Ambiguous, &bare),
        "several versions of hello are installed; give the VERSION"
    );
    assert_eq!(
        refusal(&Error::AlreadyRunning, &bare),
        "hello is running already"
    );
    assert_eq!(refusal(&Error::NotRunning, &bare), "hello is not running");
    assert_eq!(
        refusal(&Error::AlreadyMounted, &subject("mount", "hello", v)),
        "hello 0.1.0 is mounted already"
    );
    assert_eq!(
        refusal(&Error::AlreadyMounted, &subject("uninstall", "hello", v)),
        "hello 0.1.0 is mounted (umount it first)"
    );
    assert_eq!(
        refusal(&Error::NotMounted, &hello),
        "hello 0.1.0 is not mounted"
    );
    assert_eq!(
        refusal(&Error::AlreadyInstalled, &hello),
        "hello 0.1.0 is installed already (--replace replaces it)"
    );
    let busy = Error::Busy {
        used_by: PackageId {
            name: "app",
            version: Version::new(1, 2, 3),
        },
    };
    assert_eq!(
        refusal(&busy, &subject("umount", "fonts", v)),
        "fonts 0.1.0 is in use by app 1.2.3 (stop it first)"
    );
    assert_eq!(
        refusal(&Error::NoSuchRepository, &hello),
        "no such repository \"signed\""
    );
    assert_eq!(
        refusal(&Error::PermissionDenied, &hello),
        "permission denied: the runtime's console rules do not allow you to inspect"
    );
    // An install the client could not name is about the file.
    let file = Subject {
        command: "install",
        name: None,
        version: None,
        repository: "signed",
        file: Some("x.npk"),
    };
    assert_eq!(
        refusal(&Error::BadPackage(PackageError::Unsigned), &file),
        "refused x.npk: it is not signed, and repository signed takes signed packages only"
    );
    assert_eq!(
        refusal(
            &Error::BadPackage(PackageError::UnknownKey([1, 2, 3, 4, 0xa5, 0xff, 0, 9])),
            &subject("install", "hello", v)
        ),
        "refused hello 0.1.0: it is signed by key 01020304a5ff0009, which repository \
         signed does not trust"
    );
    assert_eq!(
        refusal(
            &Error::BadPackage(PackageError::ArchMismatch {
                package: 2,
                runtime: 1
            }),
            &file
        ),
        "refused x.npk: the package is for aarch64, this runtime runs on x86_64"
    );
    assert_eq!(
        refusal(&Error::BadPackage(PackageError::Arch(9)), &file),
        "refused x.npk: unknown architecture code 9"
    );
    assert_eq!(
        refusal(&Error::BadPackage(PackageError::HashSize), &file),
        "refused x.npk: it is malformed or corrupt (hash-size; npk verify says more)"
    );
    assert_eq!(
        refusal(&Error::BadPackage(PackageError::Seccomp), &file),
        "refused x.npk: its seccomp program is malformed, or missing although its manifest \
         does not choose `unconfined` (packed by an npk from before filters were the \
         default?), or present although it chose no filter; npk verify says which"
    );
    assert_eq!(
        refusal(&Error::ResourceMissing { name: "fonts" }, &bare),
        "hello mounts resource fonts, which no installed package provides"
    );
    assert_eq!(
        refusal(&Error::BindSourceMissing { path: "/srv/data" }, &bare),
        "the host path /srv/data of a bind mount of hello does not exist"
    );
    assert_eq!(
        refusal(&Error::NetnsMissing { name: "lan" }, &bare),
        "the network namespace lan of hello is not in /run/netns"
    );
    assert_eq!(
        refusal(
            &Error::Setup {
                step: SetupStep::Mount(2),
                errno: 13,
            },
            &bare
        ),
        "hello: the container's setup failed at mount #3: permission denied"
    );
    assert_eq!(
        refusal(
            &Error::Setup {
                step: SetupStep::Exec,
                errno: 2,
            },
            &bare
        ),
        "hello: the container's setup failed at exec of init: no such file or directory \
         (not in the image, or its interpreter is missing?)"
    );
    assert_eq!(
        refusal(
            &Error::Mount {
                step: MountStep::DmTableLoad,
                errno: 22,
            },
            &subject("start", "hello", v)
        ),
        "start hello 0.1.0: mounting its image failed at DM_TABLE_LOAD of the verity table: \
         invalid argument"
    );
    assert_eq!(
        refusal(&Error::Io(28), &subject("mount", "hello", v)),
        "mount hello 0.1.0: a system call failed in the runtime: no space left on device"
    );
    assert!(
        refusal(&Error::DeviceMapperMissing, &subject("mount", "good", v))
            .starts_with("mount good 0.1.0: the kernel has no device-mapper")
    );
    // Without a package, the plain text.
    let list = Subject {
        command: "list",
        ..Subject::default()
    };
    assert_eq!(
        refusal(&Error::ShuttingDown, &list),
        "the runtime is shutting down"
    );
    // A number without a text of its own is shown as the number.
    assert_eq!(text(ErrnoText(71)), "errno 71");
    assert_eq!(text(ErrnoText(0)), "errno 0");
    assert_eq!(text(ErrnoText(4096)), "errno 4096");
    assert_eq!(text(ErrnoText(u16::MAX)), "errno 65535");
    assert_eq!(text(ErrnoText(2)), "no such file or directory");
    assert_eq!(text(StepText(SetupStep::Rlimit(0))), "rlimit #1");
    assert_eq!(text(StepText(SetupStep::Mount(255))), "mount #256");
}

/// Every error variant, in wire order.
fn every_error() -> std::vec::Vec<Error<'static>> {
    let p = PackageId {
        name: "a",
        version: Version::new(1, 0, 0),
    };
    std::vec![
        Error::PermissionDenied,
        Error::ProtocolViolation(Violation::Fd),
        Error::InvalidArgument,
        Error::UnknownPackage,
        Error::Ambiguous,
        Error::AlreadyInstalled,
        Error::NoSuchRepository,
        Error::RepositoryFull,
        Error::TooLarge,
        Error::InstallTimeout,
        Error::BadPackage(PackageError::Magic),
        Error::Busy { used_by: p },
        Error::AlreadyMounted,
        Error::NotMounted,
        Error::DeviceMapperMissing,
        Error::Full(Table::Subscribers),
        Error::ShuttingDown,
        Error::Io(5),
        Error::AlreadyRunning,
        Error::NotRunning,
        Error::IsResource,
        Error::ResourceMissing { name: "r" },
        Error::BindSourceMissing { path: "/p" },
        Error::NetnsMissing { name: "n" },
        Error::CgroupUnavailable,
        Error::Setup {
            step: SetupStep::Exec,
            errno: 2,
        },
        Error::Mount {
            step: MountStep::LoopAttach,
            errno: 16,
        },
    ]
}

/// The message bytes of a reply carrying `e`: `04 01 01 INDEX ...`.
fn wire(e: Error) -> std::vec::Vec<u8> {
    let mut out = [0u8; 128];
    let frame = (Message::Reply {
        id: 1,
        reply: Reply::Error(e),
    })
    .encode(&mut out)
    .unwrap()
    .to_vec();
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    let mut input = &frame[..];
    decoder.decode(&mut input).unwrap().unwrap().to_vec()
}

#[test]
fn json_codes_are_one_per_error_in_wire_order() {
    let mut seen = std::vec::Vec::new();
    for (index, e) in every_error().into_iter().enumerate() {
        let bytes = wire(e);
        assert_eq!(
            usize::from(bytes[3]),
            index,
            "{e:?} is not at its wire index"
        );
        let (code, _) = error_code(&e);
        assert!(!code.is_empty(), "{e:?}");
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{code}"
        );
        assert!(!seen.contains(&code), "{code} twice");
        seen.push(code);
    }
    assert_eq!(seen.len(), 27);
    let table_load = Error::Mount {
        step: MountStep::DmTableLoad,
        errno: 22,
    };
    assert_eq!(error_code(&table_load), ("mount", Some("dm-table-load")));
    assert_eq!(
        error_code(&Error::UnknownPackage),
        ("unknown-package", None)
    );
    assert_eq!(
        error_code(&Error::Setup {
            step: SetupStep::Exec,
            errno: 2
        })
        .0,
        "setup"
    );
    assert_eq!(
        error_code(&Error::Full(Table::Clients)),
        ("full", Some("clients"))
    );
    assert_eq!(
        error_code(&Error::ProtocolViolation(Violation::InstallSize)),
        ("protocol-violation", Some("install-size"))
    );
    // Package errors: one reason each, in wire order.
    let packages = [
        PackageError::Truncated,
        PackageError::Magic,
        PackageError::Version(2),
        PackageError::Unsigned,
        PackageError::UnknownKey([0; 8]),
        PackageError::Signature,
        PackageError::Reserved,
        PackageError::Arch(9),
        PackageError::ManifestLength,
        PackageError::SeccompLength,
        PackageError::ImageOffset,
        PackageError::ImageSize,
        PackageError::VerityAlgorithm,
        PackageError::BlockSize,
        PackageError::DataBlocks,
        PackageError::HashOffset,
        PackageError::HashSize,
        PackageError::Salt,
        PackageError::FileLength,
        PackageError::ContentLength,
        PackageError::ManifestDigest,
        PackageError::Manifest,
        PackageError::SeccompDigest,
        PackageError::Seccomp,
        PackageError::WrongArch,
        PackageError::ArchMismatch {
            package: 2,
            runtime: 1,
        },
        PackageError::NotAsAnnounced,
        PackageError::NotAFile,
    ];
    let mut reasons = std::vec::Vec::new();
    for (index, p) in packages.into_iter().enumerate() {
        assert_eq!(usize::from(wire(Error::BadPackage(p))[4]), index, "{p:?}");
        let (code, reason) = error_code(&Error::BadPackage(p));
        assert_eq!(code, "bad-package");
        let reason = reason.unwrap();
        assert!(!reason.is_empty() && !reasons.contains(&reason), "{p:?}");
        reasons.push(reason);
    }
    assert_eq!(
        package_error_code(PackageError::UnknownKey([0; 8])),
        "unknown-key"
    );
    assert_eq!(
        package_error_code(PackageError::NotAsAnnounced),
        "not-as-announced"
    );
    for (index, t) in [
        Table::Clients,
        Table::Packages,
        Table::Mounts,
        Table::Containers,
        Table::Installs,
        Table::Subscribers,
        Table::LogReads,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(usize::from(wire(Error::Full(t))[4]), index);
        assert!(!error_code(&Error::Full(t)).1.unwrap().is_empty());
    }
    for (index, v) in [
        Violation::Undecodable,
        Violation::FrameTooLong,
        Violation::NoHello,
        Violation::Unexpected,
        Violation::NoInstall,
        Violation::InstallInProgress,
        Violation::InstallSize,
        Violation::Fd,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(usize::from(wire(Error::ProtocolViolation(v))[4]), index);
        assert!(
            !error_code(&Error::ProtocolViolation(v))
                .1
                .unwrap()
                .is_empty()
        );
    }
}
