//! Words for people about what the runtime answers: the short text of an error reply
//! ([`error_text`]), which the runtime's own log lines and the client both use, so neither
//! imports the other; and the client's longer sentences, which name what a refusal is about
//! ([`Refusal`]), and its words for setup steps, errnos, signals, exits, container states
//! and uptimes. [`error_code`] gives the stable codes of `--json` errors (in `codes`).

use core::fmt;

use nanostar_protocol::console::{
    ContainerState, Error, ExitStatus, MountStep, PackageError, SetupStep, Table, Violation,
};
use nanostar_protocol::version::Version;
use rustix::io::Errno;

mod codes;
#[cfg(test)]
mod tests;

pub use codes::{error_code, package_error_code};

/// A short explanation of an error reply, for people, without the error's details (the
/// runtime's own log lines use it). [`Refusal`] says it with the details and names what
/// it is about.
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
        Error::BadPackage(PackageError::WrongArch | PackageError::ArchMismatch { .. }) => {
            "refused: the package is built for another architecture than this device's"
        }
        Error::BadPackage(PackageError::NotAsAnnounced) => {
            "refused: the package is not the one its install announced"
        }
        Error::BadPackage(PackageError::NotAFile) => {
            "refused: the package's repository entry is not a regular file (a symlink, FIFO, \
             device or directory); replace it with the package file"
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
        Error::Full(Table::LogReads) => {
            "this connection reads a log already (one at a time; open another connection)"
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
        Error::Mount { .. } => "mounting the package's image failed",
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
            Error::Mount { step, errno } => {
                return write!(
                    f,
                    "{} {p}: mounting its image failed at {}: {}",
                    s.command,
                    MountStepText(*step),
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
            PackageError::Seccomp => {
                "its seccomp program is malformed, or missing although its manifest does not \
                 choose `unconfined` (packed by an npk from before filters were the default?), \
                 or present although it chose no filter; npk verify says which"
            }
            PackageError::NotAsAnnounced => {
                "the runtime read another package than the file's manifest names (did the file \
                 change during the install?)"
            }
            PackageError::NotAFile => "its repository entry is not a regular file",
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

/// A step of mounting an image (`Error::Mount`) for people.
pub struct MountStepText(pub MountStep);

impl fmt::Display for MountStepText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            MountStep::Geometry => "checking the image's size and verity parameters",
            MountStep::LoopControl => "getting a free loop device (/dev/loop-control)",
            MountStep::LoopAttach => "attaching the loop device",
            MountStep::DmControl => "opening /dev/mapper/control",
            MountStep::DmVersion => "DM_VERSION",
            MountStep::DmCreate => "DM_DEV_CREATE of the verity device",
            MountStep::DmTableLoad => "DM_TABLE_LOAD of the verity table",
            MountStep::DmResume => "DM_DEV_SUSPEND (resume) of the verity device",
            MountStep::DmNode => "the verity device's block node",
            MountStep::Mount => "mounting the squashfs image",
            MountStep::Umount => "unmounting the image",
            MountStep::DmRemove => "DM_DEV_REMOVE of the verity device",
        })
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
