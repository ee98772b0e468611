//! The console client inside the `nanostar` binary: a blocking connection that sends one
//! request at a time and reads replies (and notifications) as frames; and the words for
//! people of what the runtime answers (errors, exits, signals, container states).

use crate::text::error_text;
use core::fmt;
use core::mem::MaybeUninit;
use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, FrameDecoder, Hello, Message, MessageError,
    PROTOCOL_VERSION, PackageError, Reply, Request, SetupStep, Table,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::permissions::Permissions;
use nanostar_protocol::version::Version;

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::io::{Errno, IoSlice};
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Why the client could not talk to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// Connecting to the socket failed (is the runtime running? is the path right?).
    Connect(Errno),
    /// Reading or writing failed.
    Io(Errno),
    /// The runtime closed the connection.
    Closed,
    /// The runtime closed the connection during the handshake without a word.
    Handshake,
    /// The runtime's client table is full: it refused the connection.
    Full,
    /// The runtime speaks protocol versions `oldest..=newest`, not ours.
    Version {
        /// Oldest version the runtime accepts.
        oldest: u16,
        /// Newest version the runtime speaks.
        newest: u16,
    },
    /// The runtime sent something this client cannot decode.
    Protocol,
}

/// A connection after the handshake.
pub struct Connection {
    fd: OwnedFd,
    decoder: FrameDecoder<[u8; MAX_FRAME_LEN]>,
    input: [u8; 4096],
    input_start: usize,
    input_end: usize,
    /// The last frame read, and its length.
    frame: [u8; MAX_FRAME_LEN],
    frame_len: usize,
    next_id: u32,
    /// What this peer may do.
    pub permissions: Permissions,
}

impl Connection {
    /// Connects to the runtime's socket at `path` and does the handshake.
    pub fn connect(path: &str) -> Result<Connection, ClientError> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(ClientError::Connect)?;
        let addr = SocketAddrUnix::new(path).map_err(ClientError::Connect)?;
        rustix::net::connect(&fd, &addr).map_err(ClientError::Connect)?;
        let mut c = Connection {
            fd,
            decoder: FrameDecoder::new([0; MAX_FRAME_LEN]),
            input: [0; 4096],
            input_start: 0,
            input_end: 0,
            frame: [0; MAX_FRAME_LEN],
            frame_len: 0,
            next_id: 1,
            permissions: Permissions::NONE,
        };
        // A runtime with a full client table answers `Full(Clients)` and closes, maybe
        // before the hello is sent: what it said is read either way.
        let _ = c.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "nanostar",
        }));
        let permissions = match c.receive() {
            Ok(Message::Welcome(w)) => w.permissions,
            Ok(Message::VersionMismatch(m)) => {
                return Err(ClientError::Version {
                    oldest: m.oldest,
                    newest: m.runtime,
                });
            }
            Ok(Message::Reply {
                reply: Reply::Error(Error::Full(Table::Clients)),
                ..
            }) => return Err(ClientError::Full),
            Ok(_) => return Err(ClientError::Protocol),
            Err(ClientError::Closed | ClientError::Io(_)) => return Err(ClientError::Handshake),
            Err(e) => return Err(e),
        };
        c.permissions = permissions;
        Ok(c)
    }

    /// Sends a request and returns its id.
    pub fn request(&mut self, request: Request) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Request { id, request })?;
        Ok(id)
    }

    /// Sends another message under an existing request id (install chunks).
    pub fn request_as(&mut self, id: u32, request: Request) -> Result<(), ClientError> {
        self.send(&Message::Request { id, request })
    }

    /// Sends a request with a file descriptor attached (`SCM_RIGHTS`), for an install of a
    /// local file; returns its id.
    pub fn request_with_fd(
        &mut self,
        request: Request,
        fd: BorrowedFd<'_>,
    ) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let bytes = (Message::Request { id, request })
            .encode(&mut wire)
            .map_err(|_| ClientError::Protocol)?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        // The descriptor travels with the first byte; the rest follows as usual.
        let sent = loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        };
        let mut rest = &bytes[sent..];
        while !rest.is_empty() {
            match rustix::net::send(&self.fd, rest, SendFlags::NOSIGNAL) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(id)
    }

    fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let mut bytes = message
            .encode(&mut wire)
            .map_err(|_| ClientError::Protocol)?;
        while !bytes.is_empty() {
            match rustix::net::send(&self.fd, bytes, SendFlags::NOSIGNAL) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads the next message (blocking); it borrows the connection's frame buffer.
    pub fn receive(&mut self) -> Result<Message<'_>, ClientError> {
        let len = self.next_frame()?;
        Message::decode(&self.frame[..len]).map_err(|_| ClientError::Protocol)
    }

    /// Reads until the reply to request `id` (or one about the connection, id 0),
    /// skipping notifications and other replies.
    pub fn reply(&mut self, id: u32) -> Result<Reply<'_>, ClientError> {
        loop {
            let len = self.next_frame()?;
            match Message::decode(&self.frame[..len]) {
                Ok(Message::Reply { id: got, .. }) if got == id || got == 0 => break,
                Ok(Message::Notification(_) | Message::Reply { .. }) => {}
                _ => return Err(ClientError::Protocol),
            }
        }
        // Decoded again: the borrow of the frame cannot leave the loop.
        match self.receive_again() {
            Ok(Message::Reply { reply, .. }) => Ok(reply),
            _ => Err(ClientError::Protocol),
        }
    }

    fn receive_again(&self) -> Result<Message<'_>, MessageError> {
        Message::decode(&self.frame[..self.frame_len])
    }

    /// Reads the next frame into `self.frame`; its length.
    fn next_frame(&mut self) -> Result<usize, ClientError> {
        loop {
            if self.input_start == self.input_end {
                let n = loop {
                    match rustix::io::read(&self.fd, &mut self.input) {
                        Ok(0) => return Err(ClientError::Closed),
                        Ok(n) => break n,
                        Err(Errno::INTR) => {}
                        Err(e) => return Err(ClientError::Io(e)),
                    }
                };
                self.input_start = 0;
                self.input_end = n;
            }
            let mut input = &self.input[self.input_start..self.input_end];
            let before = input.len();
            let decoded = self.decoder.decode(&mut input);
            self.input_start += before - input.len();
            match decoded {
                None => continue,
                Some(Err(_)) => return Err(ClientError::Protocol),
                Some(Ok(f)) => {
                    let len = f.len();
                    self.frame[..len].copy_from_slice(f);
                    self.frame_len = len;
                    return Ok(len);
                }
            }
        }
    }
}

/// What a request was about, as the client asked for it, so that a refusal names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The command (`start`).
    pub command: &'a str,
    /// The package's name, if the request names one.
    pub name: Option<&'a str>,
    /// Its version, if given (or read from the file).
    pub version: Option<Version>,
    /// The repository of an install.
    pub repository: &'a str,
    /// The file of an install.
    pub file: Option<&'a str>,
}

/// The package of a subject: `hello 1.0.0`, `hello`, the file, or `the package`.
struct Pkg<'a>(&'a Subject<'a>);

impl fmt::Display for Pkg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.name, self.0.version) {
            (Some(name), Some(v)) => write!(f, "{name} {v}"),
            (Some(name), None) => f.write_str(name),
            (None, _) => f.write_str(self.0.file.unwrap_or("the package")),
        }
    }
}

/// An error reply in words that name what it is about (the package, the file, the
/// repository), with its details: `errln!("nanostar: {}", Refusal(&e, &subject))`.
pub struct Refusal<'a>(pub &'a Error<'a>, pub &'a Subject<'a>);

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.1;
        let p = Pkg(s);
        let repo = s.repository;
        // Most are a sentence around the package.
        let (before, after) = match self.0 {
            Error::UnknownPackage => ("no package ", " is installed"),
            Error::Ambiguous => ("several versions of ", " are installed; give the VERSION"),
            Error::AlreadyInstalled => ("", " is installed already (--replace replaces it)"),
            Error::AlreadyMounted if s.command == "mount" => ("", " is mounted already"),
            Error::AlreadyMounted => ("", " is mounted (umount it first)"),
            Error::NotMounted => ("", " is not mounted"),
            Error::AlreadyRunning => ("", " is running already"),
            Error::NotRunning => ("", " is not running"),
            Error::IsResource => ("", " is a resource package (no init): it cannot start"),
            Error::RepositoryFull => ("no space left in the repository for ", ""),
            Error::TooLarge => ("", " is larger than the repository accepts"),
            Error::PermissionDenied => {
                return write!(
                    f,
                    "permission denied: the runtime's console rules do not allow you to {}",
                    s.command
                );
            }
            Error::NoSuchRepository => return write!(f, "no such repository \"{repo}\""),
            Error::BadPackage(e) => return write!(f, "refused {p}: {}", BadText(*e, repo)),
            Error::Busy { used_by } => {
                return write!(
                    f,
                    "{p} is in use by {} {} (stop it first)",
                    used_by.name, used_by.version
                );
            }
            Error::ResourceMissing { name } => {
                return write!(
                    f,
                    "{p} mounts resource {name}, which no installed package provides"
                );
            }
            Error::BindSourceMissing { path } => {
                return write!(
                    f,
                    "the host path {path} of a bind mount of {p} does not exist"
                );
            }
            Error::NetnsMissing { name } => {
                return write!(
                    f,
                    "the network namespace {name} of {p} is not in /run/netns"
                );
            }
            Error::Io(errno) => {
                return write!(
                    f,
                    "{} {p}: a system call failed in the runtime: {}",
                    s.command,
                    ErrnoText(*errno)
                );
            }
            Error::Setup { step, errno } => {
                write!(
                    f,
                    "{p}: the container's setup failed at {}: {}",
                    StepText(*step),
                    ErrnoText(*errno)
                )?;
                if *step == SetupStep::Exec && *errno == Errno::NOENT.raw_os_error() as u16 {
                    f.write_str(" (not in the image, or its interpreter is missing?)")?;
                }
                return Ok(());
            }
            e if s.name.is_some() => {
                return write!(f, "{} {p}: {}", s.command, error_text(e));
            }
            e => return f.write_str(error_text(e)),
        };
        write!(f, "{before}{p}{after}")
    }
}

/// Why a package is refused, for people (after `refused FILE: `).
struct BadText<'a>(PackageError, &'a str);

impl fmt::Display for BadText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `repository signed`, or `the repository` when the request named none.
        let (the, repo) = match self.1 {
            "" => ("the repository", ""),
            repo => ("repository ", repo),
        };
        let text = match self.0 {
            PackageError::Unsigned => {
                return write!(
                    f,
                    "it is not signed, and {the}{repo} takes signed packages only"
                );
            }
            PackageError::UnknownKey(id) => {
                return write!(
                    f,
                    "it is signed by key {}, which {the}{repo} does not trust",
                    Hex(&id)
                );
            }
            PackageError::ArchMismatch { package, runtime } => {
                return write!(
                    f,
                    "the package is for {}, this runtime runs on {}",
                    ArchText(package),
                    ArchText(runtime)
                );
            }
            PackageError::Arch(code) => {
                return write!(f, "unknown architecture {}", ArchText(code));
            }
            PackageError::Version(v) => {
                return write!(f, "NPK format version {v} is not supported by this runtime");
            }
            PackageError::Signature => "its signature does not match (altered or corrupt)",
            PackageError::WrongArch => "it is built for another architecture",
            PackageError::Magic => "it is not an NPK (bad magic)",
            PackageError::NotAsAnnounced => {
                "the runtime read another package than the file's manifest names (did the file \
                 change during the install?)"
            }
            e => {
                return write!(
                    f,
                    "it is malformed or corrupt ({}; npk verify says more)",
                    package_error_code(e)
                );
            }
        };
        f.write_str(text)
    }
}

/// An architecture code for people: `aarch64`, or `code 9` when unknown.
struct ArchText(u16);

impl fmt::Display for ArchText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match nanostar_protocol::npk::Arch::from_code(self.0) {
            Some(a) => f.write_str(a.name()),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// Bytes as lower-case hex (key ids).
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The stable machine-readable codes of `--json` errors, one per [`Error`] variant, by
/// wire index (`{"ok":false,"code":"unknown-package","message":"..."}`):
///
/// | code | error |
/// |---|---|
/// | `permission-denied` | `PermissionDenied` |
/// | `protocol-violation` | `ProtocolViolation` (`reason`: the violation) |
/// | `invalid-argument` | `InvalidArgument` |
/// | `unknown-package` | `UnknownPackage` |
/// | `ambiguous` | `Ambiguous` |
/// | `already-installed` | `AlreadyInstalled` |
/// | `no-such-repository` | `NoSuchRepository` |
/// | `repository-full` | `RepositoryFull` |
/// | `too-large` | `TooLarge` |
/// | `install-timeout` | `InstallTimeout` |
/// | `bad-package` | `BadPackage` (`reason`: [`package_error_code`]: `unsigned`, `unknown-key`, …) |
/// | `busy` | `Busy` |
/// | `already-mounted` | `AlreadyMounted` |
/// | `not-mounted` | `NotMounted` |
/// | `device-mapper-missing` | `DeviceMapperMissing` |
/// | `full` | `Full` (`reason`: the table: `clients`, `packages`, `mounts`, `containers`, `installs`, `subscribers`) |
/// | `shutting-down` | `ShuttingDown` |
/// | `io` | `Io` |
/// | `already-running` | `AlreadyRunning` |
/// | `not-running` | `NotRunning` |
/// | `is-resource` | `IsResource` |
/// | `resource-missing` | `ResourceMissing` |
/// | `bind-source-missing` | `BindSourceMissing` |
/// | `netns-missing` | `NetnsMissing` |
/// | `cgroup-unavailable` | `CgroupUnavailable` |
/// | `setup` | `Setup` |
///
/// The client's own failures: `usage` (exit 2), `unreachable` (no runtime at the socket,
/// or the connection broke; exit 3), `version-mismatch` (exit 3), `unexpected-reply` (the
/// runtime sent something this client does not understand; exit 3), `file` (a local file
/// cannot be read; exit 1). A file that is no NPK is `bad-package` (`magic` or
/// `truncated`) and a runtime whose client table is full `full` (`clients`), both exit 1.
pub fn error_code(e: &Error) -> (&'static str, Option<&'static str>) {
    let (index, reason) = match e {
        Error::PermissionDenied => (0, None),
        Error::ProtocolViolation(v) => (1, Some(word(VIOLATION_CODES, *v as usize))),
        Error::InvalidArgument => (2, None),
        Error::UnknownPackage => (3, None),
        Error::Ambiguous => (4, None),
        Error::AlreadyInstalled => (5, None),
        Error::NoSuchRepository => (6, None),
        Error::RepositoryFull => (7, None),
        Error::TooLarge => (8, None),
        Error::InstallTimeout => (9, None),
        Error::BadPackage(p) => (10, Some(package_error_code(*p))),
        Error::Busy { .. } => (11, None),
        Error::AlreadyMounted => (12, None),
        Error::NotMounted => (13, None),
        Error::DeviceMapperMissing => (14, None),
        Error::Full(t) => (15, Some(word(TABLE_CODES, *t as usize))),
        Error::ShuttingDown => (16, None),
        Error::Io(_) => (17, None),
        Error::AlreadyRunning => (18, None),
        Error::NotRunning => (19, None),
        Error::IsResource => (20, None),
        Error::ResourceMissing { .. } => (21, None),
        Error::BindSourceMissing { .. } => (22, None),
        Error::NetnsMissing { .. } => (23, None),
        Error::CgroupUnavailable => (24, None),
        Error::Setup { .. } => (25, None),
    };
    (word(ERROR_CODES, index), reason)
}

/// The codes of [`error_code`], by wire index of [`Error`].
const ERROR_CODES: &str = "permission-denied protocol-violation invalid-argument \
    unknown-package ambiguous already-installed no-such-repository repository-full too-large \
    install-timeout bad-package busy already-mounted not-mounted device-mapper-missing full \
    shutting-down io already-running not-running is-resource resource-missing \
    bind-source-missing netns-missing cgroup-unavailable setup";

/// The `reason` of `full`: the table, by wire index of [`Table`].
const TABLE_CODES: &str = "clients packages mounts containers installs subscribers";

/// The `reason` of `protocol-violation`, by wire index of [`Violation`].
const VIOLATION_CODES: &str =
    "undecodable frame-too-long no-hello unexpected no-install install-in-progress install-size fd";

/// The `reason` of `bad-package`, by wire index of [`PackageError`].
const PACKAGE_ERROR_CODES: &str = "truncated magic version unsigned unknown-key signature \
    reserved arch manifest-length seccomp-length image-offset image-size verity-algorithm \
    block-size data-blocks hash-offset hash-size salt file-length content-length \
    manifest-digest manifest seccomp-digest seccomp wrong-arch arch-mismatch not-as-announced";

/// The `index`-th word of `words`.
fn word(words: &'static str, index: usize) -> &'static str {
    words
        .split(' ')
        .filter(|w| !w.is_empty())
        .nth(index)
        .unwrap_or("")
}

/// The `reason` of `bad-package`, also said in the message of a malformed package.
pub fn package_error_code(e: PackageError) -> &'static str {
    let index = match e {
        PackageError::Truncated => 0,
        PackageError::Magic => 1,
        PackageError::Version(_) => 2,
        PackageError::Unsigned => 3,
        PackageError::UnknownKey(_) => 4,
        PackageError::Signature => 5,
        PackageError::Reserved => 6,
        PackageError::Arch(_) => 7,
        PackageError::ManifestLength => 8,
        PackageError::SeccompLength => 9,
        PackageError::ImageOffset => 10,
        PackageError::ImageSize => 11,
        PackageError::VerityAlgorithm => 12,
        PackageError::BlockSize => 13,
        PackageError::DataBlocks => 14,
        PackageError::HashOffset => 15,
        PackageError::HashSize => 16,
        PackageError::Salt => 17,
        PackageError::FileLength => 18,
        PackageError::ContentLength => 19,
        PackageError::ManifestDigest => 20,
        PackageError::Manifest => 21,
        PackageError::SeccompDigest => 22,
        PackageError::Seccomp => 23,
        PackageError::WrongArch => 24,
        PackageError::ArchMismatch { .. } => 25,
        PackageError::NotAsAnnounced => 26,
    };
    word(PACKAGE_ERROR_CODES, index)
}

/// A setup step (`Error::Setup`) for people. Mount and rlimit numbers count from 1, in the
/// manifest's order (mount points sorted by path).
pub struct StepText(pub SetupStep);

impl fmt::Display for StepText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            SetupStep::Mount(i) => return write!(f, "mount #{}", u16::from(i) + 1),
            SetupStep::Rlimit(i) => return write!(f, "rlimit #{}", u16::from(i) + 1),
            SetupStep::Prepare => "preparation (pipes, cgroup, data directory)",
            SetupStep::Clone => "the clone of the container's init",
            SetupStep::Network => "joining the network namespace",
            SetupStep::Hostname => "setting the host name",
            SetupStep::PivotRoot => "pivot_root",
            SetupStep::Fork => "the fork of the app",
            SetupStep::Stdio => "the app's standard descriptors",
            SetupStep::Capabilities => "setting capabilities",
            SetupStep::Groups => "setgroups",
            SetupStep::Gid => "setresgid (the manifest's gid)",
            SetupStep::Uid => "setresuid (the manifest's uid)",
            SetupStep::NoNewPrivs => "no_new_privs",
            SetupStep::Seccomp => "loading the seccomp filter",
            SetupStep::Exec => "exec of init",
        };
        f.write_str(text)
    }
}

/// An errno from the runtime (`Error::Io`, `Error::Setup`) for people.
pub struct ErrnoText(pub u16);

impl fmt::Display for ErrnoText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errno values are 1..=4095; anything else from the runtime is shown as a number.
        if !(1..=4095).contains(&self.0) {
            return write!(f, "errno {}", self.0);
        }
        let text = match Errno::from_raw_os_error(i32::from(self.0)) {
            Errno::NOEXEC => "exec format error (built for another architecture?)",
            Errno::TOOBIG => "argument list too long",
            Errno::NOSYS => "not supported by the kernel",
            Errno::NODEV => "no such device (a kernel feature missing?)",
            Errno::AGAIN => "resource temporarily unavailable",
            Errno::TXTBSY => "text file busy",
            Errno::SRCH => "no such process",
            e => crate::fs::errno_text(e),
        };
        // `errno_text`'s text for the numbers it does not know (4095 is no errno): the
        // number says more.
        if text == crate::fs::errno_text(Errno::from_raw_os_error(4095)) {
            write!(f, "errno {}", self.0)
        } else {
            f.write_str(text)
        }
    }
}

/// Signal names without `SIG`, by number - 1 (the generic Linux numbering: x86_64, arm,
/// aarch64).
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// The name of signal `n` without `SIG` (`15` → `TERM`); `None` for real-time and unknown
/// numbers.
pub fn signal_name(n: u8) -> Option<&'static str> {
    SIGNALS.get(usize::from(n).checked_sub(1)?).copied()
}

/// A signal as a number (`9`, 1..=64) or a name with or without `SIG`, in any case
/// (`TERM`, `sigkill`).
pub fn parse_signal(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = match s.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("SIG") => &s[3..],
        _ => s,
    };
    let index = SIGNALS.iter().position(|n| n.eq_ignore_ascii_case(name))?;
    Some(index as u8 + 1)
}

/// A signal for people: `15 (SIGTERM)`, or just the number when it has no name.
pub struct SignalText(pub u8);

impl fmt::Display for SignalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match signal_name(self.0) {
            Some(name) => write!(f, "{} (SIG{name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// How an app ended, short: `code 0`, `signal 15 (SIGTERM)`.
pub struct ExitText(pub ExitStatus);

impl fmt::Display for ExitText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitStatus::Code(code) => write!(f, "code {code}"),
            ExitStatus::Signal(n) => write!(f, "signal {}", SignalText(n)),
        }
    }
}

/// How an app ended, as words after `prefix` for an exit code: with `"exited with code "`
/// `exited with code 0`; a signal is always `killed by signal 9 (SIGKILL)`.
pub struct ExitSentence(pub ExitStatus, pub &'static str);

impl fmt::Display for ExitSentence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitStatus::Code(code) => write!(f, "{}{code}", self.1),
            ExitStatus::Signal(n) => write!(f, "killed by signal {}", SignalText(n)),
        }
    }
}

/// The signal names `kill` takes, for a usage error: `HUP INT ... SYS`.
pub struct SignalNames;

impl fmt::Display for SignalNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in SIGNALS.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// A container state as `list` shows it.
pub fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Stopped => "stopped",
        ContainerState::Starting => "starting",
        ContainerState::Running => "running",
        ContainerState::Stopping => "stopping",
        ContainerState::Restarting => "restarting",
    }
}

/// A duration in milliseconds, short, in its two largest units: `12s`, `3m04s`, `2h05m`,
/// `3d07h`.
pub struct Uptime(pub u64);

impl fmt::Display for Uptime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        let (m, h, d) = (s / 60, s / 3600, s / 86_400);
        if d > 0 {
            write!(f, "{d}d{:02}h", h % 24)
        } else if h > 0 {
            write!(f, "{h}h{:02}m", m % 60)
        } else if m > 0 {
            write!(f, "{m}m{:02}s", s % 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanostar_protocol::console::{PackageId, Violation};
    use nanostar_protocol::version::Version;

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
        assert_eq!(seen.len(), 26);
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
}
