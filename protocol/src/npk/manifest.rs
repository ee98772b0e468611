//! The manifest: what a package is and how its container runs.
//!
//! Users write it as TOML on the host (`tools`); a package stores it as postcard, and the
//! device decodes it with [`Manifest::decode`], borrowing every string from the caller's
//! buffer. [`Manifest::validate`] is the one set of rules both sides apply, so a manifest
//! that packs is a manifest that loads.
//!
//! Wire compatibility: postcard encodes struct fields in order and enum variants by index,
//! so fields and variants are append-only and a change of shape is a new format version.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::capabilities::Capabilities;
use crate::limits::*;
use crate::permissions::Permissions;
use crate::version::{Version, VersionReq};

/// Environment variables with this prefix are set by the runtime (name, version) and may
/// not be set by a manifest.
pub const RESERVED_ENV_PREFIX: &str = "NANOSTAR_";

/// Default grace period between SIGTERM and SIGKILL when a container is stopped.
pub const DEFAULT_STOP_TIMEOUT_MS: u32 = 5_000;
/// Longest grace period a manifest may ask for.
pub const MAX_STOP_TIMEOUT_MS: u32 = 600_000;

/// A package's manifest, borrowing its strings from the encoded bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest<'a> {
    /// Package name, `[A-Za-z0-9._-]`, not starting with `.` or `-`.
    pub name: &'a str,
    /// Package version.
    pub version: Version,
    /// Absolute path of the program to run inside the container. `None` makes this a
    /// resource package: files for other containers to mount, never run.
    #[serde(borrow)]
    pub init: Option<&'a str>,
    /// Arguments after `init` (argv[1..]).
    #[serde(borrow)]
    pub args: Vec<&'a str, MAX_ARGS>,
    /// Environment of the app, besides the runtime's reserved `NANOSTAR_*` variables.
    #[serde(borrow)]
    pub env: Vec<EnvVar<'a>, MAX_ENV>,
    /// User the app runs as, and owner of every file in the image. Never 0.
    pub uid: u32,
    /// Group the app runs as, and group of every file in the image. Never 0.
    pub gid: u32,
    /// Supplementary groups, numeric (the device has no group database). Never 0.
    pub suppl_groups: Vec<u32, MAX_SUPPL_GROUPS>,
    /// What is mounted where inside the container, besides the package's own root.
    #[serde(borrow)]
    pub mounts: Vec<Mount<'a>, MAX_MOUNTS>,
    /// Whether the runtime starts the container at boot, and what a failure means.
    pub autostart: Autostart,
    /// What the runtime does when the app exits.
    pub restart: RestartPolicy,
    /// Grace period between SIGTERM and SIGKILL when the container is stopped.
    pub stop_timeout_ms: u32,
    /// cgroup v2 limits.
    pub cgroups: Cgroups,
    /// Which network namespace the container is in.
    #[serde(borrow)]
    pub network: Network<'a>,
    /// Capabilities the app keeps; every other one is dropped.
    pub capabilities: Capabilities,
    /// Resource limits, at most one per resource.
    pub rlimits: Vec<Rlimit, MAX_RLIMITS>,
    /// The seccomp policy as written. The package carries it compiled (see
    /// [`super::seccomp`]); this copy is for `inspect`, and says whether the package must
    /// carry a program at all ([`Manifest::wants_seccomp_program`]). `None` (no `[seccomp]`
    /// table) means the default profile; no filter is only ever an explicit
    /// [`SeccompProfile::Unconfined`].
    #[serde(borrow)]
    pub seccomp: Option<Seccomp<'a>>,
    /// Where the app's stdout and stderr go.
    pub io: Io,
    /// Console permissions of the socket handed to the container; empty = no console.
    pub console: Permissions,
    /// Opaque user data (TOML text on the host), returned by `inspect`, ignored otherwise.
    #[serde(borrow)]
    pub custom: Option<&'a str>,
}

/// One `KEY=value` environment entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar<'a> {
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    pub key: &'a str,
    /// Any text without NUL.
    pub value: &'a str,
}

/// A mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount<'a> {
    /// Absolute, normalized path inside the container; the packer creates it in the image.
    pub target: &'a str,
    /// What is mounted there.
    #[serde(borrow)]
    pub kind: MountKind<'a>,
}

/// The kinds of mount a manifest may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind<'a> {
    /// A host path bound into the container; read-only unless `flags` has `RW`. A missing
    /// host path is an error at start.
    Bind {
        /// Absolute, normalized path on the host.
        host: &'a str,
        /// Mount flags.
        flags: MountFlags,
    },
    /// The package's persistent data directory (one per package name, kept across
    /// updates, wiped on request), read-write, nosuid, nodev, noexec.
    Persist,
    /// A fresh tmpfs of at most `size` bytes, nosuid, nodev, noexec.
    Tmpfs {
        /// Size limit in bytes.
        size: u64,
    },
    /// procfs of the container's PID namespace, read-only.
    Proc,
    /// sysfs, read-only.
    Sysfs,
    /// A minimal /dev (null, zero, full, random, urandom, tty, fd links).
    Dev,
    /// A directory of a resource package, read-only; the newest installed version that
    /// matches `version` wins.
    Resource {
        /// Name of the resource package.
        name: &'a str,
        /// Acceptable versions.
        version: VersionReq,
        /// Absolute directory inside the resource package to mount.
        dir: &'a str,
        /// Mount flags (`RW` and `REC` are refused: resources are read-only and flat).
        flags: MountFlags,
    },
}

/// Flags of bind and resource mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MountFlags(pub u8);

impl MountFlags {
    /// Writable (bind mounts are read-only without it).
    pub const RW: MountFlags = MountFlags(1);
    /// `MS_NOSUID`.
    pub const NOSUID: MountFlags = MountFlags(2);
    /// `MS_NODEV`.
    pub const NODEV: MountFlags = MountFlags(4);
    /// `MS_NOEXEC`.
    pub const NOEXEC: MountFlags = MountFlags(8);
    /// `MS_REC`: bind the mounts below the host path too.
    pub const REC: MountFlags = MountFlags(16);
    /// Flag names by bit position, as written in the TOML `options` list.
    pub const NAMES: [&'static str; 5] = ["rw", "nosuid", "nodev", "noexec", "rec"];

    /// `true` if every flag of `other` is set.
    pub const fn contains(self, other: MountFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    pub const fn union(self, other: MountFlags) -> MountFlags {
        MountFlags(self.0 | other.0)
    }

    /// The flag with this name, alone.
    pub fn from_name(name: &str) -> Option<MountFlags> {
        crate::names::bit_of(&Self::NAMES, name).map(|b| MountFlags(1 << b))
    }

    /// The names of the set flags.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        crate::names::names_of(&Self::NAMES, u64::from(self.0))
    }

    const fn is_known(self) -> bool {
        self.0 & !(crate::names::known_mask(Self::NAMES.len()) as u8) == 0
    }
}

/// Whether and how a container starts at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Autostart {
    /// Only on request.
    #[default]
    None,
    /// At boot; a failure to start is reported and ignored.
    Relaxed,
    /// At boot; a failure to start, or an exit, shuts the runtime down.
    Critical,
}

/// When an exited app is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartMode {
    /// Never.
    #[default]
    Never,
    /// After an exit with a non-zero code or a signal.
    OnFailure,
    /// After every exit that was not requested.
    Always,
}

/// Restart policy with capped exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// Give up after this many restarts in a row; `None` = never give up.
    pub max_restarts: Option<u32>,
    /// Delay before the first restart; doubled after each one.
    pub backoff_initial_ms: u32,
    /// Cap of the delay.
    pub backoff_max_ms: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::Never,
            max_restarts: None,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
        }
    }
}

/// cgroup v2 limits; `None` leaves the parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cgroups {
    /// `memory.max` in bytes: the hard limit (OOM kill above it).
    pub memory_max: Option<u64>,
    /// `memory.high` in bytes: throttling starts above it.
    pub memory_high: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<u32>,
    /// `cpu.max`: quota per period.
    pub cpu_max: Option<CpuMax>,
    /// `cpu.weight`, 1..=10000 (100 is the kernel's default).
    pub cpu_weight: Option<u16>,
}

/// `cpu.max`: at most `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    /// Microseconds of CPU per period, at least 1000.
    pub quota_us: u32,
    /// Period in microseconds, 1000..=1_000_000.
    pub period_us: u32,
}

/// The network namespace of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network<'a> {
    /// A new, empty namespace (loopback only).
    #[default]
    New,
    /// The runtime's own namespace.
    Host,
    /// The named namespace under `/run/netns`.
    Join(&'a str),
}

/// Resources of `setrlimit`, in kernel numbering (the same on x86_64, arm and aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum RlimitResource {
    Cpu = 0,
    Fsize = 1,
    Data = 2,
    Stack = 3,
    Core = 4,
    Rss = 5,
    Nproc = 6,
    Nofile = 7,
    Memlock = 8,
    As = 9,
    Locks = 10,
    Sigpending = 11,
    Msgqueue = 12,
    Nice = 13,
    Rtprio = 14,
    Rttime = 15,
}

impl RlimitResource {
    /// All resources, by kernel number.
    pub const ALL: [RlimitResource; 16] = [
        Self::Cpu,
        Self::Fsize,
        Self::Data,
        Self::Stack,
        Self::Core,
        Self::Rss,
        Self::Nproc,
        Self::Nofile,
        Self::Memlock,
        Self::As,
        Self::Locks,
        Self::Sigpending,
        Self::Msgqueue,
        Self::Nice,
        Self::Rtprio,
        Self::Rttime,
    ];
    /// TOML names, by kernel number.
    pub const NAMES: [&'static str; 16] = [
        "cpu",
        "fsize",
        "data",
        "stack",
        "core",
        "rss",
        "nproc",
        "nofile",
        "memlock",
        "as",
        "locks",
        "sigpending",
        "msgqueue",
        "nice",
        "rtprio",
        "rttime",
    ];

    /// The kernel's `RLIMIT_*` number.
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// The TOML name.
    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The resource with this TOML name.
    pub fn from_name(name: &str) -> Option<RlimitResource> {
        crate::names::bit_of(&Self::NAMES, name).map(|i| Self::ALL[i as usize])
    }
}

/// One resource limit; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: RlimitResource,
    /// Soft limit.
    pub soft: Option<u64>,
    /// Hard limit.
    pub hard: Option<u64>,
}

/// The base set of syscalls a seccomp policy starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// Only the allow list (and `execve`).
    None,
    /// A default set for ordinary unprivileged programs, plus the allow list.
    Default,
    /// No filter at all: the package carries no program. Appended rather than given to
    /// `None`, whose meaning ("only the allow list") existing manifests rely on; it takes
    /// no allow list, since nothing is filtered.
    Unconfined,
}

/// A seccomp policy as written in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp<'a> {
    /// Base set.
    pub profile: SeccompProfile,
    /// Further allowed syscalls.
    #[serde(borrow)]
    pub allow: Vec<SyscallRule<'a>, MAX_SECCOMP_RULES>,
}

/// One allowed syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallRule<'a> {
    /// Syscall name as the kernel's tables spell it (`getrandom`, `ARM_set_tls`).
    pub name: &'a str,
    /// Allowed only when this argument matches; `None` = any arguments.
    pub args: Option<ArgRule>,
}

/// A condition on one syscall argument: equal to one of `values`, or with no bit set
/// outside `mask`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgRule {
    /// Argument index, 0..=5.
    pub index: u8,
    /// Allowed values.
    pub values: Vec<u64, MAX_SECCOMP_ARG_VALUES>,
    /// Allowed bits.
    pub mask: Option<u64>,
}

/// Where one output stream of the app goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Output {
    /// Into the container's log ring in the runtime (`nanostar logs`).
    #[default]
    Log,
    /// Nowhere (`/dev/null`).
    Discard,
    /// Into the log ring and a copy to the kernel log (`/dev/kmsg`).
    Kmsg,
}

/// Where the app's stdout and stderr go. stdin is always `/dev/null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Io {
    /// stdout.
    pub stdout: Output,
    /// stderr.
    pub stderr: Output,
}

/// The part of a manifest a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    /// The encoding as a whole (not postcard, or bytes after the manifest).
    Encoding,
    Name,
    Version,
    Init,
    /// `args[i]`.
    Arg(usize),
    /// `env[i]`.
    Env(usize),
    Uid,
    Gid,
    /// `suppl_groups[i]`.
    SupplGroup(usize),
    /// `mounts[i]`.
    Mount(usize),
    Autostart,
    Restart,
    StopTimeout,
    Cgroups,
    Network,
    Capabilities,
    /// `rlimits[i]`.
    Rlimit(usize),
    /// `seccomp.allow[i]`, or the policy as a whole for `None`.
    Seccomp(Option<usize>),
    Io,
    Console,
    Custom,
}

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not a valid encoding (postcard error, bad UTF-8, list over its bound).
    Malformed,
    /// Bytes follow the manifest's encoding.
    TrailingBytes,
    /// Must not be empty.
    Empty,
    /// Longer than its limit in [`crate::limits`].
    TooLong,
    /// Contains a character not allowed here (or NUL).
    Character,
    /// A path that is not absolute.
    NotAbsolute,
    /// A path with `.`, `..`, `//` or a trailing `/` (or `/` itself where that is not allowed).
    NotNormalized,
    /// Root (0) is not allowed.
    Root,
    /// The same entry twice.
    Duplicate,
    /// A reserved name (`NANOSTAR_*` variables).
    Reserved,
    /// A mount inside another mount of the same manifest.
    Nested,
    /// A number out of its range, or limits that contradict each other.
    Range,
    /// A flag or bit this version does not know, or that is not allowed here.
    Flag,
    /// A resource package (no `init`) sets something only a running container uses.
    NotForResource,
}

/// A manifest that breaks a rule: which field, and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestError {
    /// Where.
    pub field: Field,
    /// What.
    pub problem: Problem,
}

fn err(field: Field, problem: Problem) -> ManifestError {
    ManifestError { field, problem }
}

impl<'a> Manifest<'a> {
    /// Decodes and validates a manifest; every string borrows from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Manifest<'a>, ManifestError> {
        let (manifest, rest) = postcard::take_from_bytes::<Manifest<'a>>(bytes)
            .map_err(|_| err(Field::Encoding, Problem::Malformed))?;
        if !rest.is_empty() {
            return Err(err(Field::Encoding, Problem::TrailingBytes));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Validates and encodes into `buf`, returning the used part.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], ManifestError> {
        self.validate()?;
        let used =
            postcard::to_slice(self, buf).map_err(|_| err(Field::Encoding, Problem::TooLong))?;
        if used.len() > MAX_MANIFEST_LEN {
            return Err(err(Field::Encoding, Problem::TooLong));
        }
        Ok(used)
    }

    /// `true` for a resource package (no `init`).
    pub fn is_resource(&self) -> bool {
        self.init.is_none()
    }

    /// `true` when the package must carry a seccomp program: every app, unless its
    /// manifest chose [`SeccompProfile::Unconfined`]. No `[seccomp]` table means the
    /// default profile, so leaving the table out never means "no filter". A resource never
    /// runs and carries none.
    pub fn wants_seccomp_program(&self) -> bool {
        !self.is_resource()
            && self
                .seccomp
                .as_ref()
                .is_none_or(|s| s.profile != SeccompProfile::Unconfined)
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name(self.name).map_err(|p| err(Field::Name, p))?;
        if let Some(init) = self.init {
            check_path(init).map_err(|p| err(Field::Init, p))?;
        }
        for (i, arg) in self.args.iter().enumerate() {
            check_text(arg, MAX_ARG_LEN, true).map_err(|p| err(Field::Arg(i), p))?;
        }
        self.check_env()?;
        check_id(self.uid).map_err(|p| err(Field::Uid, p))?;
        check_id(self.gid).map_err(|p| err(Field::Gid, p))?;
        for (i, g) in self.suppl_groups.iter().enumerate() {
            check_id(*g).map_err(|p| err(Field::SupplGroup(i), p))?;
            if self.suppl_groups[..i].contains(g) {
                return Err(err(Field::SupplGroup(i), Problem::Duplicate));
            }
        }
        self.check_mounts()?;
        check_restart(&self.restart).map_err(|p| err(Field::Restart, p))?;
        if self.stop_timeout_ms == 0 || self.stop_timeout_ms > MAX_STOP_TIMEOUT_MS {
            return Err(err(Field::StopTimeout, Problem::Range));
        }
        check_cgroups(&self.cgroups).map_err(|p| err(Field::Cgroups, p))?;
        if let Network::Join(ns) = self.network {
            check_file_name(ns, MAX_NETNS_NAME_LEN).map_err(|p| err(Field::Network, p))?;
        }
        if !self.capabilities.is_known() {
            return Err(err(Field::Capabilities, Problem::Flag));
        }
        self.check_rlimits()?;
        if let Some(seccomp) = &self.seccomp {
            check_seccomp(seccomp)?;
        }
        if !self.console.is_known() {
            return Err(err(Field::Console, Problem::Flag));
        }
        if let Some(custom) = self.custom {
            check_text(custom, MAX_CUSTOM_LEN, true).map_err(|p| err(Field::Custom, p))?;
        }
        if self.is_resource() {
            self.check_resource_only()?;
        }
        Ok(())
    }

    fn check_env(&self) -> Result<(), ManifestError> {
        for (i, var) in self.env.iter().enumerate() {
            let e = |p| err(Field::Env(i), p);
            check_env_key(var.key).map_err(e)?;
            check_text(var.value, MAX_ENV_VALUE_LEN, true).map_err(e)?;
            if self.env[..i].iter().any(|v| v.key == var.key) {
                return Err(e(Problem::Duplicate));
            }
        }
        Ok(())
    }

    fn check_mounts(&self) -> Result<(), ManifestError> {
        for (i, mount) in self.mounts.iter().enumerate() {
            let e = |p| err(Field::Mount(i), p);
            check_path(mount.target).map_err(e)?;
            if mount.target == "/" {
                return Err(e(Problem::NotNormalized));
            }
            check_mount_kind(&mount.kind).map_err(e)?;
            for earlier in &self.mounts[..i] {
                if earlier.target == mount.target {
                    return Err(e(Problem::Duplicate));
                }
                if is_ancestor(earlier.target, mount.target)
                    || is_ancestor(mount.target, earlier.target)
                {
                    return Err(e(Problem::Nested));
                }
                let singleton = matches!(
                    mount.kind,
                    MountKind::Persist | MountKind::Proc | MountKind::Sysfs | MountKind::Dev
                );
                if singleton
                    && core::mem::discriminant(&earlier.kind)
                        == core::mem::discriminant(&mount.kind)
                {
                    return Err(e(Problem::Duplicate));
                }
            }
        }
        Ok(())
    }

    fn check_rlimits(&self) -> Result<(), ManifestError> {
        for (i, limit) in self.rlimits.iter().enumerate() {
            let e = |p| err(Field::Rlimit(i), p);
            if self.rlimits[..i]
                .iter()
                .any(|l| l.resource == limit.resource)
            {
                return Err(e(Problem::Duplicate));
            }
            if let (Some(soft), Some(hard)) = (limit.soft, limit.hard)
                && soft > hard
            {
                return Err(e(Problem::Range));
            }
            if limit.soft.is_none() && limit.hard.is_some() {
                // An unlimited soft limit above a finite hard limit is refused by setrlimit.
                return Err(e(Problem::Range));
            }
        }
        Ok(())
    }

    /// A resource package is only files: anything that configures a running container is
    /// a mistake the user should hear about.
    fn check_resource_only(&self) -> Result<(), ManifestError> {
        let defaults = [
            (Field::Arg(0), self.args.is_empty()),
            (Field::Env(0), self.env.is_empty()),
            (Field::SupplGroup(0), self.suppl_groups.is_empty()),
            (Field::Mount(0), self.mounts.is_empty()),
            (Field::Autostart, self.autostart == Autostart::None),
            (Field::Restart, self.restart == RestartPolicy::default()),
            (
                Field::StopTimeout,
                self.stop_timeout_ms == DEFAULT_STOP_TIMEOUT_MS,
            ),
            (Field::Cgroups, self.cgroups == Cgroups::default()),
            (Field::Network, self.network == Network::New),
            (Field::Capabilities, self.capabilities == Capabilities::NONE),
            (Field::Rlimit(0), self.rlimits.is_empty()),
            (Field::Seccomp(None), self.seccomp.is_none()),
            (Field::Io, self.io == Io::default()),
            (Field::Console, self.console == Permissions::NONE),
        ];
        match defaults.into_iter().find(|(_, is_default)| !is_default) {
            Some((field, _)) => Err(err(field, Problem::NotForResource)),
            None => Ok(()),
        }
    }
}

fn check_text(s: &str, max: usize, allow_empty: bool) -> Result<(), Problem> {
    if s.is_empty() && !allow_empty {
        return Err(Problem::Empty);
    }
    if s.len() > max {
        return Err(Problem::TooLong);
    }
    if s.bytes().any(|b| b == 0) {
        return Err(Problem::Character);
    }
    Ok(())
}

/// Package names end up in file names, device-mapper names and directory names.
pub fn check_name(name: &str) -> Result<(), Problem> {
    check_text(name, MAX_NAME_LEN, false)?;
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !name.bytes().all(ok) || name.starts_with('.') || name.starts_with('-') {
        return Err(Problem::Character);
    }
    Ok(())
}

/// Absolute, normalized paths: no `.` or `..` components, no `//`, no trailing `/`.
pub fn check_path(path: &str) -> Result<(), Problem> {
    check_text(path, MAX_PATH_LEN, false)?;
    if !path.starts_with('/') {
        return Err(Problem::NotAbsolute);
    }
    if path == "/" {
        return Ok(());
    }
    if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Problem::NotNormalized);
    }
    Ok(())
}

fn check_file_name(name: &str, max: usize) -> Result<(), Problem> {
    check_text(name, max, false)?;
    if name.contains('/') || name == "." || name == ".." {
        return Err(Problem::Character);
    }
    Ok(())
}

fn check_env_key(key: &str) -> Result<(), Problem> {
    check_text(key, MAX_ENV_KEY_LEN, false)?;
    let first_ok = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Problem::Character);
    }
    if key.starts_with(RESERVED_ENV_PREFIX) {
        return Err(Problem::Reserved);
    }
    Ok(())
}

/// uid and gid 0 are root; `u32::MAX` is "no change" to `setresuid`.
fn check_id(id: u32) -> Result<(), Problem> {
    match id {
        0 => Err(Problem::Root),
        u32::MAX => Err(Problem::Range),
        _ => Ok(()),
    }
}

/// `true` if `dir` is a strict ancestor of `path` (both normalized and absolute).
fn is_ancestor(dir: &str, path: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn check_mount_kind(kind: &MountKind<'_>) -> Result<(), Problem> {
    match kind {
        MountKind::Bind { host, flags } => {
            check_path(host)?;
            if !flags.is_known() {
                return Err(Problem::Flag);
            }
        }
        MountKind::Tmpfs { size } if *size == 0 => return Err(Problem::Range),
        MountKind::Resource {
            name,
            version,
            dir,
            flags,
        } => {
            check_name(name)?;
            if !version.is_valid() {
                return Err(Problem::Malformed);
            }
            check_path(dir)?;
            if !flags.is_known()
                || flags.contains(MountFlags::RW)
                || flags.contains(MountFlags::REC)
            {
                return Err(Problem::Flag);
            }
        }
        MountKind::Persist
        | MountKind::Tmpfs { .. }
        | MountKind::Proc
        | MountKind::Sysfs
        | MountKind::Dev => {}
    }
    Ok(())
}

fn check_restart(r: &RestartPolicy) -> Result<(), Problem> {
    if r.backoff_initial_ms == 0 || r.backoff_initial_ms > r.backoff_max_ms {
        return Err(Problem::Range);
    }
    Ok(())
}

/// Kernel bounds of cgroup v2: `cpu.max` period 1 ms..1 s and quota at least 1 ms;
/// `cpu.weight` 1..=10000; a memory limit below one page cannot hold a process.
fn check_cgroups(c: &Cgroups) -> Result<(), Problem> {
    const PAGE: u64 = 4096;
    let too_small = |v: Option<u64>| v.is_some_and(|v| v < PAGE);
    if too_small(c.memory_max) || too_small(c.memory_high) {
        return Err(Problem::Range);
    }
    if let (Some(high), Some(max)) = (c.memory_high, c.memory_max)
        && high > max
    {
        return Err(Problem::Range);
    }
    if c.pids_max == Some(0) {
        return Err(Problem::Range);
    }
    if let Some(cpu) = c.cpu_max
        && (cpu.quota_us < 1000 || !(1000..=1_000_000).contains(&cpu.period_us))
    {
        return Err(Problem::Range);
    }
    if c.cpu_weight.is_some_and(|w| !(1..=10_000).contains(&w)) {
        return Err(Problem::Range);
    }
    Ok(())
}

fn check_seccomp(s: &Seccomp<'_>) -> Result<(), ManifestError> {
    if s.profile == SeccompProfile::Unconfined && !s.allow.is_empty() {
        // Allowing calls when nothing is denied says something the package would not do.
        return Err(err(Field::Seccomp(None), Problem::Flag));
    }
    for (i, rule) in s.allow.iter().enumerate() {
        let e = |p| err(Field::Seccomp(Some(i)), p);
        check_text(rule.name, MAX_SYSCALL_NAME_LEN, false).map_err(e)?;
        if !rule
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(e(Problem::Character));
        }
        if let Some(args) = &rule.args {
            if args.index > 5 {
                return Err(e(Problem::Range));
            }
            if args.values.is_empty() && args.mask.is_none() {
                return Err(e(Problem::Empty));
            }
        }
        // The same name twice is only meaningful with different argument rules.
        if s.allow[..i].iter().any(|r| r == rule) {
            return Err(e(Problem::Duplicate));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest that uses every field, valid.
    pub(crate) fn full() -> Manifest<'static> {
        let mut m = minimal();
        m.args = Vec::from_slice(&["--verbose", "two words", ""]).unwrap();
        m.env = Vec::from_slice(&[
            EnvVar {
                key: "LANG",
                value: "C",
            },
            EnvVar {
                key: "_X1",
                value: "",
            },
        ])
        .unwrap();
        m.suppl_groups = Vec::from_slice(&[20, 1001]).unwrap();
        let mounts = [
            Mount {
                target: "/lib",
                kind: MountKind::Bind {
                    host: "/lib",
                    flags: MountFlags::NOSUID,
                },
            },
            Mount {
                target: "/data",
                kind: MountKind::Persist,
            },
            Mount {
                target: "/tmp",
                kind: MountKind::Tmpfs { size: 1 << 20 },
            },
            Mount {
                target: "/proc",
                kind: MountKind::Proc,
            },
            Mount {
                target: "/sys",
                kind: MountKind::Sysfs,
            },
            Mount {
                target: "/dev",
                kind: MountKind::Dev,
            },
            Mount {
                target: "/res",
                kind: MountKind::Resource {
                    name: "fonts",
                    version: VersionReq::parse(">=1.0.0, <2.0.0").unwrap(),
                    dir: "/share",
                    flags: MountFlags::NOEXEC,
                },
            },
        ];
        m.mounts = Vec::from_slice(&mounts).unwrap();
        m.autostart = Autostart::Critical;
        m.restart = RestartPolicy {
            mode: RestartMode::OnFailure,
            max_restarts: Some(5),
            backoff_initial_ms: 50,
            backoff_max_ms: 1000,
        };
        m.cgroups = Cgroups {
            memory_max: Some(8 << 20),
            memory_high: Some(6 << 20),
            pids_max: Some(32),
            cpu_max: Some(CpuMax {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            cpu_weight: Some(200),
        };
        m.network = Network::Join("blue");
        m.capabilities = Capabilities::from_name("CAP_NET_RAW").unwrap();
        m.rlimits = Vec::from_slice(&[Rlimit {
            resource: RlimitResource::Nofile,
            soft: Some(64),
            hard: Some(128),
        }])
        .unwrap();
        let arg = ArgRule {
            index: 0,
            values: Vec::from_slice(&[0xffff_ffff]).unwrap(),
            mask: None,
        };
        let allow = [
            SyscallRule {
                name: "personality",
                args: Some(arg),
            },
            SyscallRule {
                name: "getrandom",
                args: None,
            },
        ];
        m.seccomp = Some(Seccomp {
            profile: SeccompProfile::Default,
            allow: Vec::from_slice(&allow).unwrap(),
        });
        m.io = Io {
            stdout: Output::Kmsg,
            stderr: Output::Discard,
        };
        m.console = Permissions::from_name("list").unwrap();
        m.custom = Some("key = \"value\"\n");
        m
    }

    pub(crate) fn minimal() -> Manifest<'static> {
        Manifest {
            name: "hello",
            version: Version::new(1, 2, 3),
            init: Some("/bin/hello"),
            args: Vec::new(),
            env: Vec::new(),
            uid: 1000,
            gid: 1000,
            suppl_groups: Vec::new(),
            mounts: Vec::new(),
            autostart: Autostart::None,
            restart: RestartPolicy::default(),
            stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
            cgroups: Cgroups::default(),
            network: Network::New,
            capabilities: Capabilities::NONE,
            rlimits: Vec::new(),
            seccomp: None,
            io: Io::default(),
            console: Permissions::NONE,
            custom: None,
        }
    }

    fn round_trip(m: &Manifest<'_>) {
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        let bytes = m.encode(&mut buf).unwrap();
        assert_eq!(&Manifest::decode(bytes).unwrap(), m);
    }

    #[test]
    fn round_trips() {
        round_trip(&minimal());
        round_trip(&full());
        let mut resource = minimal();
        resource.init = None;
        round_trip(&resource);
    }

    #[test]
    fn trailing_bytes_and_garbage() {
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        let len = minimal().encode(&mut buf).unwrap().len();
        assert_eq!(
            Manifest::decode(&buf[..len + 1]),
            Err(err(Field::Encoding, Problem::TrailingBytes))
        );
        for cut in 0..len {
            assert!(Manifest::decode(&buf[..cut]).is_err(), "truncated at {cut}");
        }
        assert_eq!(
            Manifest::decode(&[0xff; 64]).unwrap_err().field,
            Field::Encoding
        );
    }

    fn rejects(change: impl FnOnce(&mut Manifest<'static>), field: Field, problem: Problem) {
        let mut m = full();
        change(&mut m);
        assert_eq!(m.validate(), Err(err(field, problem)));
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        assert!(m.encode(&mut buf).is_err());
    }

    #[test]
    fn names() {
        rejects(|m| m.name = "", Field::Name, Problem::Empty);
        rejects(|m| m.name = "a/b", Field::Name, Problem::Character);
        rejects(|m| m.name = ".hidden", Field::Name, Problem::Character);
        rejects(|m| m.name = "-x", Field::Name, Problem::Character);
        rejects(|m| m.name = "ü", Field::Name, Problem::Character);
        let long: &'static str = "n".repeat(MAX_NAME_LEN + 1).leak();
        rejects(|m| m.name = long, Field::Name, Problem::TooLong);
        let mut m = full();
        m.name = &long[..MAX_NAME_LEN];
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn paths_and_args() {
        rejects(
            |m| m.init = Some("bin/x"),
            Field::Init,
            Problem::NotAbsolute,
        );
        rejects(
            |m| m.init = Some("/bin/../x"),
            Field::Init,
            Problem::NotNormalized,
        );
        rejects(
            |m| m.init = Some("/bin//x"),
            Field::Init,
            Problem::NotNormalized,
        );
        rejects(
            |m| m.init = Some("/bin/"),
            Field::Init,
            Problem::NotNormalized,
        );
        rejects(
            |m| m.init = Some("/bin/./x"),
            Field::Init,
            Problem::NotNormalized,
        );
        rejects(
            |m| m.init = Some("/bin/\0"),
            Field::Init,
            Problem::Character,
        );
        let long: &'static str = std::format!("/{}", "p".repeat(MAX_PATH_LEN)).leak();
        rejects(|m| m.init = Some(long), Field::Init, Problem::TooLong);
        rejects(|m| m.args[1] = "a\0b", Field::Arg(1), Problem::Character);
        let long_arg: &'static str = "a".repeat(MAX_ARG_LEN + 1).leak();
        rejects(|m| m.args[2] = long_arg, Field::Arg(2), Problem::TooLong);
    }

    #[test]
    fn env() {
        rejects(
            |m| m.env[1].key = "NANOSTAR_NAME",
            Field::Env(1),
            Problem::Reserved,
        );
        rejects(|m| m.env[1].key = "LANG", Field::Env(1), Problem::Duplicate);
        rejects(|m| m.env[0].key = "1X", Field::Env(0), Problem::Character);
        rejects(|m| m.env[0].key = "A=B", Field::Env(0), Problem::Character);
        rejects(|m| m.env[0].key = "", Field::Env(0), Problem::Empty);
        rejects(|m| m.env[0].value = "\0", Field::Env(0), Problem::Character);
        let long: &'static str = "v".repeat(MAX_ENV_VALUE_LEN + 1).leak();
        rejects(|m| m.env[0].value = long, Field::Env(0), Problem::TooLong);
    }

    #[test]
    fn ids() {
        rejects(|m| m.uid = 0, Field::Uid, Problem::Root);
        rejects(|m| m.gid = 0, Field::Gid, Problem::Root);
        rejects(|m| m.uid = u32::MAX, Field::Uid, Problem::Range);
        rejects(
            |m| m.suppl_groups[1] = 0,
            Field::SupplGroup(1),
            Problem::Root,
        );
        rejects(
            |m| m.suppl_groups[1] = 20,
            Field::SupplGroup(1),
            Problem::Duplicate,
        );
    }

    #[test]
    fn mounts() {
        rejects(
            |m| m.mounts[0].target = "lib",
            Field::Mount(0),
            Problem::NotAbsolute,
        );
        rejects(
            |m| m.mounts[0].target = "/",
            Field::Mount(0),
            Problem::NotNormalized,
        );
        rejects(
            |m| m.mounts[1].target = "/lib",
            Field::Mount(1),
            Problem::Duplicate,
        );
        rejects(
            |m| m.mounts[1].target = "/lib/data",
            Field::Mount(1),
            Problem::Nested,
        );
        rejects(
            |m| m.mounts[1].target = "/",
            Field::Mount(1),
            Problem::NotNormalized,
        );
        rejects(
            |m| {
                m.mounts[0].kind = MountKind::Bind {
                    host: "lib",
                    flags: MountFlags::RW,
                }
            },
            Field::Mount(0),
            Problem::NotAbsolute,
        );
        rejects(
            |m| {
                m.mounts[0].kind = MountKind::Bind {
                    host: "/lib",
                    flags: MountFlags(64),
                }
            },
            Field::Mount(0),
            Problem::Flag,
        );
        rejects(
            |m| m.mounts[2].kind = MountKind::Tmpfs { size: 0 },
            Field::Mount(2),
            Problem::Range,
        );
        rejects(
            |m| m.mounts[2].kind = MountKind::Persist,
            Field::Mount(2),
            Problem::Duplicate,
        );
        rejects(
            |m| m.mounts[4].kind = MountKind::Proc,
            Field::Mount(4),
            Problem::Duplicate,
        );
        let resource = |name, dir, flags| MountKind::Resource {
            name,
            version: VersionReq::parse("1.0.0").unwrap(),
            dir,
            flags,
        };
        rejects(
            |m| m.mounts[6].kind = resource("a b", "/x", MountFlags::NOEXEC),
            Field::Mount(6),
            Problem::Character,
        );
        rejects(
            |m| m.mounts[6].kind = resource("a", "x", MountFlags::NOEXEC),
            Field::Mount(6),
            Problem::NotAbsolute,
        );
        rejects(
            |m| m.mounts[6].kind = resource("a", "/x", MountFlags::RW),
            Field::Mount(6),
            Problem::Flag,
        );
        rejects(
            |m| m.mounts[6].kind = resource("a", "/x", MountFlags::REC),
            Field::Mount(6),
            Problem::Flag,
        );
        rejects(
            |m| {
                m.mounts[6].kind = MountKind::Resource {
                    name: "a",
                    version: VersionReq {
                        comparators: Vec::new(),
                    },
                    dir: "/",
                    flags: MountFlags(0),
                }
            },
            Field::Mount(6),
            Problem::Malformed,
        );
        // Siblings that share a prefix are not nested.
        let mut m = full();
        m.mounts[1].target = "/library";
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn limits_and_policies() {
        rejects(
            |m| m.restart.backoff_initial_ms = 0,
            Field::Restart,
            Problem::Range,
        );
        rejects(
            |m| m.restart.backoff_initial_ms = 5000,
            Field::Restart,
            Problem::Range,
        );
        rejects(
            |m| m.stop_timeout_ms = 0,
            Field::StopTimeout,
            Problem::Range,
        );
        rejects(
            |m| m.stop_timeout_ms = MAX_STOP_TIMEOUT_MS + 1,
            Field::StopTimeout,
            Problem::Range,
        );
        rejects(
            |m| m.cgroups.memory_max = Some(100),
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| m.cgroups.memory_high = Some(9 << 20),
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| m.cgroups.pids_max = Some(0),
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| {
                m.cgroups.cpu_max = Some(CpuMax {
                    quota_us: 10,
                    period_us: 100_000,
                })
            },
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| {
                m.cgroups.cpu_max = Some(CpuMax {
                    quota_us: 5000,
                    period_us: 2_000_000,
                })
            },
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| m.cgroups.cpu_weight = Some(0),
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| m.cgroups.cpu_weight = Some(10_001),
            Field::Cgroups,
            Problem::Range,
        );
        rejects(
            |m| m.network = Network::Join("../x"),
            Field::Network,
            Problem::Character,
        );
        rejects(
            |m| m.network = Network::Join(""),
            Field::Network,
            Problem::Empty,
        );
        rejects(
            |m| m.capabilities = Capabilities(1 << 50),
            Field::Capabilities,
            Problem::Flag,
        );
        rejects(
            |m| m.rlimits[0].soft = Some(1000),
            Field::Rlimit(0),
            Problem::Range,
        );
        rejects(
            |m| m.rlimits[0].soft = None,
            Field::Rlimit(0),
            Problem::Range,
        );
        rejects(
            |m| {
                m.rlimits
                    .push(Rlimit {
                        resource: RlimitResource::Nofile,
                        soft: None,
                        hard: None,
                    })
                    .unwrap()
            },
            Field::Rlimit(1),
            Problem::Duplicate,
        );
        rejects(
            |m| m.console = Permissions(1 << 30),
            Field::Console,
            Problem::Flag,
        );
        let long: &'static str = "c".repeat(MAX_CUSTOM_LEN + 1).leak();
        rejects(|m| m.custom = Some(long), Field::Custom, Problem::TooLong);
    }

    #[test]
    fn seccomp() {
        fn allow<'m>(
            m: &'m mut Manifest<'static>,
        ) -> &'m mut Vec<SyscallRule<'static>, MAX_SECCOMP_RULES> {
            &mut m.seccomp.as_mut().unwrap().allow
        }
        rejects(
            |m| m.seccomp.as_mut().unwrap().profile = SeccompProfile::Unconfined,
            Field::Seccomp(None),
            Problem::Flag,
        );
        rejects(
            |m| allow(m)[1].name = "get-random",
            Field::Seccomp(Some(1)),
            Problem::Character,
        );
        rejects(
            |m| allow(m)[1].name = "",
            Field::Seccomp(Some(1)),
            Problem::Empty,
        );
        rejects(
            |m| allow(m)[0].args.as_mut().unwrap().index = 6,
            Field::Seccomp(Some(0)),
            Problem::Range,
        );
        rejects(
            |m| allow(m)[0].args.as_mut().unwrap().values.clear(),
            Field::Seccomp(Some(0)),
            Problem::Empty,
        );
        rejects(
            |m| allow(m)[1] = allow(m)[0].clone(),
            Field::Seccomp(Some(1)),
            Problem::Duplicate,
        );
    }

    #[test]
    fn only_an_explicit_unconfined_profile_goes_without_a_program() {
        let mut m = minimal();
        // No `[seccomp]` table: the default profile, so a program.
        assert!(m.wants_seccomp_program());
        for (profile, wants) in [
            (SeccompProfile::None, true),
            (SeccompProfile::Default, true),
            (SeccompProfile::Unconfined, false),
        ] {
            m.seccomp = Some(Seccomp {
                profile,
                allow: Vec::new(),
            });
            assert_eq!(m.validate(), Ok(()));
            assert_eq!(m.wants_seccomp_program(), wants, "{profile:?}");
            round_trip(&m);
        }
        m.seccomp = None;
        m.init = None;
        assert!(!m.wants_seccomp_program());
    }

    #[test]
    fn resource_packages_only_carry_files() {
        let mut m = minimal();
        m.init = None;
        assert_eq!(m.validate(), Ok(()));
        type Change = fn(&mut Manifest<'static>);
        let cases: [(Change, Field); 6] = [
            (|m| m.args.push("x").unwrap(), Field::Arg(0)),
            (|m| m.autostart = Autostart::Relaxed, Field::Autostart),
            (|m| m.network = Network::Host, Field::Network),
            (
                |m| {
                    m.mounts
                        .push(Mount {
                            target: "/x",
                            kind: MountKind::Proc,
                        })
                        .unwrap()
                },
                Field::Mount(0),
            ),
            (|m| m.io.stdout = Output::Discard, Field::Io),
            (
                |m| {
                    m.seccomp = Some(Seccomp {
                        profile: SeccompProfile::None,
                        allow: Vec::new(),
                    })
                },
                Field::Seccomp(None),
            ),
        ];
        for (change, field) in cases {
            let mut r = m.clone();
            change(&mut r);
            assert_eq!(r.validate(), Err(err(field, Problem::NotForResource)));
        }
    }
}
