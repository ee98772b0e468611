//! The console client inside the `nanostar` binary: a blocking connection that sends one
//! request at a time and reads replies (and notifications) as frames; and the words for
//! people of what the runtime answers (errors, exits, signals, container states).

use core::fmt;
use core::mem::MaybeUninit;
use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, FrameDecoder, Hello, Message, PROTOCOL_VERSION,
    PackageError, Reply, Request, SetupStep, Table, Violation,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::permissions::Permissions;

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
    /// Reading or writing failed, or the runtime closed the connection.
    Io(Errno),
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
            next_id: 1,
            permissions: Permissions::NONE,
        };
        c.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "nanostar",
        }))?;
        let mut frame = [0u8; MAX_FRAME_LEN];
        match c.receive(&mut frame)? {
            Message::Welcome(w) => c.permissions = w.permissions,
            Message::VersionMismatch(m) => {
                return Err(ClientError::Version {
                    oldest: m.oldest,
                    newest: m.runtime,
                });
            }
            _ => return Err(ClientError::Protocol),
        }
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

    /// Reads the next message into `frame` (blocking).
    pub fn receive<'f>(
        &mut self,
        frame: &'f mut [u8; MAX_FRAME_LEN],
    ) -> Result<Message<'f>, ClientError> {
        loop {
            if self.input_start == self.input_end {
                let n = loop {
                    match rustix::io::read(&self.fd, &mut self.input) {
                        Ok(0) => return Err(ClientError::Io(Errno::CONNRESET)),
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
                    frame[..len].copy_from_slice(f);
                    return Message::decode(&frame[..len]).map_err(|_| ClientError::Protocol);
                }
            }
        }
    }
}

/// A short explanation of an error reply, for people, without the error's details (the
/// runtime's own log lines use it). [`Explain`] says the same with the details.
pub fn error_text(e: &Error) -> &'static str {
    match e {
        Error::PermissionDenied => {
            "permission denied: the runtime's configuration does not allow this for your user"
        }
        Error::ProtocolViolation(Violation::InstallSize) => {
            "the install sent a different number of bytes than announced"
        }
        Error::ProtocolViolation(_) => "protocol violation",
        Error::InvalidArgument => "invalid argument",
        Error::UnknownPackage => "no such package installed (see `nanostar list`)",
        Error::Ambiguous => "several versions are installed; give the version",
        Error::AlreadyInstalled => "this name and version is installed already",
        Error::NoSuchRepository => "no such repository (see the runtime's configuration)",
        Error::RepositoryFull => "no space left in the repository",
        Error::TooLarge => "the package is larger than the repository accepts",
        Error::InstallTimeout => "the install stalled and was aborted",
        Error::BadPackage(PackageError::Unsigned) => {
            "refused: the package is not signed and the repository requires it"
        }
        Error::BadPackage(PackageError::UnknownKey(_)) => {
            "refused: signed by a key the repository does not trust"
        }
        Error::BadPackage(PackageError::Signature) => {
            "refused: the signature does not match (altered or corrupt)"
        }
        Error::BadPackage(PackageError::WrongArch) => {
            "refused: the package is built for another architecture than this device's"
        }
        Error::BadPackage(_) => {
            "refused: the package is malformed or corrupt (check it with `npk verify`)"
        }
        Error::Busy { .. } => "the package is in use by another one (stop it first)",
        Error::AlreadyMounted => "the package is mounted (unmount it first)",
        Error::NotMounted => "the package is not mounted",
        Error::DeviceMapperMissing => {
            "the kernel has no device-mapper, which this repository's verity needs"
        }
        Error::Full(Table::Clients) => "the runtime serves too many clients; try again",
        Error::Full(Table::Packages) => "the runtime's package table is full (uninstall a package)",
        Error::Full(Table::Mounts) => "the runtime's mount table is full (unmount a package)",
        Error::Full(Table::Containers) => {
            "the runtime's container table is full (stop or remove a container)"
        }
        Error::Full(Table::Installs) => "too many installs are in progress; try again",
        Error::Full(Table::Subscribers) => {
            "too many clients follow notifications or logs; try again"
        }
        Error::ShuttingDown => "the runtime is shutting down",
        Error::Io(_) => "a system call failed in the runtime",
        Error::AlreadyRunning => "the container is running already",
        Error::NotRunning => "the container is not running",
        Error::IsResource => "a resource package cannot be started",
        Error::ResourceMissing { .. } => {
            "no installed package provides a resource the manifest mounts (install it)"
        }
        Error::BindSourceMissing { .. } => "the host path of a bind mount does not exist",
        Error::NetnsMissing { .. } => {
            "the network namespace to join does not exist under /run/netns"
        }
        Error::CgroupUnavailable => {
            "the manifest sets cgroup limits but the runtime has no cgroup directory \
             (`cgroup` in its configuration) or the kernel lacks the controller"
        }
        Error::Setup { .. } => "the container's setup failed",
    }
}

/// Turns an error reply into its text (used with `Reply::Error`).
pub fn reply_error(reply: &Reply) -> Option<&'static str> {
    match reply {
        Reply::Error(e) => Some(error_text(e)),
        _ => None,
    }
}

/// An error reply explained for people, with its details (the package in the way, the
/// missing path, the failing setup step and errno): `errln!("nanostar: {}", Explain(&e))`.
pub struct Explain<'a>(pub &'a Error<'a>);

impl fmt::Display for Explain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Busy { used_by } => write!(
                f,
                "the package is in use by {} {} (stop it first)",
                used_by.name, used_by.version
            ),
            Error::Io(errno) => write!(
                f,
                "a system call failed in the runtime: {}",
                ErrnoText(*errno)
            ),
            Error::BadPackage(PackageError::Version(v)) => write!(
                f,
                "refused: NPK format version {v} is not supported by this runtime"
            ),
            Error::ResourceMissing { name } => write!(
                f,
                "no installed package provides the resource {name} the manifest mounts \
                 (install it)"
            ),
            Error::BindSourceMissing { path } => {
                write!(f, "the host path {path} of a bind mount does not exist")
            }
            Error::NetnsMissing { name } => write!(
                f,
                "the network namespace {name} does not exist under /run/netns"
            ),
            Error::Setup { step, errno } => {
                write!(
                    f,
                    "the container's setup failed at {}: {}",
                    StepText(*step),
                    ErrnoText(*errno)
                )?;
                if *step == SetupStep::Exec && *errno == Errno::NOENT.raw_os_error() as u16 {
                    f.write_str(" (not in the image, or its interpreter is missing?)")?;
                }
                Ok(())
            }
            e => f.write_str(error_text(e)),
        }
    }
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

/// How an app ended, as a sentence: `exited with code 0`, `killed by signal 9 (SIGKILL)`.
pub struct ExitSentence(pub ExitStatus);

impl fmt::Display for ExitSentence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(n) => write!(f, "killed by signal {}", SignalText(n)),
        }
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
    use nanostar_protocol::console::PackageId;
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
            text(ExitSentence(ExitStatus::Code(3))),
            "exited with code 3"
        );
        assert_eq!(
            text(ExitSentence(ExitStatus::Signal(9))),
            "killed by signal 9 (SIGKILL)"
        );
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

    #[test]
    fn errors_explained_with_their_details() {
        let busy = Error::Busy {
            used_by: PackageId {
                name: "app",
                version: Version::new(1, 2, 3),
            },
        };
        assert_eq!(
            text(Explain(&busy)),
            "the package is in use by app 1.2.3 (stop it first)"
        );
        assert_eq!(
            text(Explain(&Error::ResourceMissing { name: "fonts" })),
            "no installed package provides the resource fonts the manifest mounts (install it)"
        );
        assert_eq!(
            text(Explain(&Error::BindSourceMissing { path: "/srv/data" })),
            "the host path /srv/data of a bind mount does not exist"
        );
        assert_eq!(
            text(Explain(&Error::NetnsMissing { name: "lan" })),
            "the network namespace lan does not exist under /run/netns"
        );
        assert_eq!(
            text(Explain(&Error::Setup {
                step: SetupStep::Mount(2),
                errno: 13,
            })),
            "the container's setup failed at mount #3: permission denied"
        );
        assert_eq!(
            text(Explain(&Error::Setup {
                step: SetupStep::Exec,
                errno: 2,
            })),
            "the container's setup failed at exec of init: no such file or directory \
             (not in the image, or its interpreter is missing?)"
        );
        assert_eq!(
            text(Explain(&Error::Setup {
                step: SetupStep::Exec,
                errno: 8,
            })),
            "the container's setup failed at exec of init: exec format error \
             (built for another architecture?)"
        );
        assert_eq!(
            text(Explain(&Error::Io(28))),
            "a system call failed in the runtime: no space left on device"
        );
        // A number without a text of its own is shown as the number.
        assert_eq!(
            text(Explain(&Error::Io(71))),
            "a system call failed in the runtime: errno 71"
        );
        assert_eq!(text(ErrnoText(0)), "errno 0");
        assert_eq!(text(ErrnoText(4096)), "errno 4096");
        assert_eq!(text(ErrnoText(u16::MAX)), "errno 65535");
        assert_eq!(text(ErrnoText(2)), "no such file or directory");
        assert_eq!(
            text(Explain(&Error::Full(Table::Containers))),
            "the runtime's container table is full (stop or remove a container)"
        );
        assert_eq!(
            text(Explain(&Error::CgroupUnavailable)),
            error_text(&Error::CgroupUnavailable)
        );
        assert!(text(Explain(&Error::CgroupUnavailable)).contains("`cgroup` in its configuration"));
        assert_eq!(text(StepText(SetupStep::Rlimit(0))), "rlimit #1");
        assert_eq!(text(StepText(SetupStep::Mount(255))), "mount #256");
    }
}
