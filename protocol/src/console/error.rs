//! What the runtime answers when a request fails: typed codes, never text, so a client can
//! act on them and print them in its own words (and no runtime RAM goes to messages).
//!
//! Every enum here is append-only: a variant's index is its meaning on the wire.

use serde::{Deserialize, Serialize};

use super::ids::PackageId;
use crate::npk::{ContentError, HeaderError};

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error<'a> {
    /// The peer's permissions do not include the one this request needs.
    PermissionDenied,
    /// The client broke the protocol; see the reason.
    ProtocolViolation(Violation),
    /// A value the decoder cannot judge is out of range (signal number, timeout).
    InvalidArgument,
    /// No installed package has this name (and version).
    UnknownPackage,
    /// A name without a version matches more than one package; give the version.
    Ambiguous,
    /// A package with this name and version is already installed.
    AlreadyInstalled,
    /// The runtime has no repository of this name.
    NoSuchRepository,
    /// The repository's file system has no room for the package.
    RepositoryFull,
    /// The package is larger than the repository's `max_install_size`.
    TooLarge,
    /// No install chunk arrived within the configured `install_timeout_ms`.
    InstallTimeout,
    /// The package is refused: signature, header or content; see the reason.
    BadPackage(PackageError),
    /// The package is in use by another one (a mounted resource, a running container).
    Busy {
        /// The package that uses it.
        #[serde(borrow)]
        used_by: PackageId<'a>,
    },
    /// The package is mounted already.
    AlreadyMounted,
    /// The package is not mounted.
    NotMounted,
    /// The repository requires verity but the kernel has no device-mapper.
    DeviceMapperMissing,
    /// A fixed-size table of the runtime is full.
    Full(Table),
    /// The runtime is shutting down and takes no new work.
    ShuttingDown,
    /// A system call failed with this errno.
    Io(u16),
    /// The container is running already.
    AlreadyRunning,
    /// The container is not running.
    NotRunning,
    /// A resource package (no `init`) cannot be started.
    IsResource,
    /// No installed package matches a resource mount of the manifest.
    ResourceMissing {
        /// The resource package's name.
        name: &'a str,
    },
    /// The host path of a bind mount does not exist (or cannot be used).
    BindSourceMissing {
        /// The host path.
        path: &'a str,
    },
    /// The network namespace to join does not exist under `/run/netns`.
    NetnsMissing {
        /// Its name.
        name: &'a str,
    },
    /// The manifest sets cgroup limits, but the runtime has no cgroup directory
    /// (configuration `cgroup`) or the kernel lacks the controller.
    CgroupUnavailable,
    /// Setting up the container failed at this step with this errno; nothing of it is
    /// left running.
    Setup {
        /// Which step.
        step: SetupStep,
        /// The errno of the failing system call.
        errno: u16,
    },
    /// Mounting or unmounting the package's image failed at this step with this errno
    /// (protocol version 3; older clients get `Io(errno)`). Nothing of the mount is left
    /// set up when mounting failed.
    Mount {
        /// Which step.
        step: MountStep,
        /// The errno of the failing system call (or `EINVAL` for geometry the kernel
        /// would refuse).
        errno: u16,
    },
}

/// A step of mounting a package's image (`Error::Mount`), in the order they run; the
/// last two are the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountStep {
    /// Checking the image size against the verity parameters, and the device name.
    Geometry,
    /// `/dev/loop-control` gave no free loop device.
    LoopControl,
    /// Attaching the loop device to the package file.
    LoopAttach,
    /// Opening `/dev/mapper/control`.
    DmControl,
    /// `DM_VERSION`: the device-mapper interface.
    DmVersion,
    /// `DM_DEV_CREATE` of the verity device.
    DmCreate,
    /// `DM_TABLE_LOAD` of the verity table.
    DmTableLoad,
    /// `DM_DEV_SUSPEND`: resuming the device.
    DmResume,
    /// The verity device's block node.
    DmNode,
    /// Mounting the squashfs image.
    Mount,
    /// Unmounting the image.
    Umount,
    /// `DM_DEV_REMOVE` of the verity device.
    DmRemove,
}

/// A step of a container's setup (`Error::Setup`), in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupStep {
    /// Making the runtime's side: pipes, the cgroup, the persistent data directory.
    Prepare,
    /// `clone3` of the container's init.
    Clone,
    /// Joining the named network namespace.
    Network,
    /// Setting the host name.
    Hostname,
    /// The manifest's mount with this index.
    Mount(u8),
    /// `pivot_root` and detaching the old root.
    PivotRoot,
    /// Forking the app from init.
    Fork,
    /// The app's standard descriptors.
    Stdio,
    /// The rlimit with this index.
    Rlimit(u8),
    /// Dropping capabilities from the bounding set, or setting the rest.
    Capabilities,
    /// `setgroups`.
    Groups,
    /// `setresgid`.
    Gid,
    /// `setresuid`.
    Uid,
    /// `no_new_privs`.
    NoNewPrivs,
    /// Loading the seccomp filter.
    Seccomp,
    /// `execve` of `init` (ENOENT: not in the image).
    Exec,
}

/// How a client broke the protocol. The runtime answers and, for the first three, closes
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    /// A frame that is not a valid message (COBS, postcard, or a field's limits).
    Undecodable,
    /// A frame longer than `MAX_FRAME_LEN`.
    FrameTooLong,
    /// The first message was not a `Hello`.
    NoHello,
    /// A message only the runtime sends, or a second `Hello`.
    Unexpected,
    /// An install chunk, end or abort with no install of that id in progress.
    NoInstall,
    /// An install begin while this connection has one in progress.
    InstallInProgress,
    /// More bytes than the install announced, or an end before all of them.
    InstallSize,
    /// An install that announced an fd came without one, or an fd came unannounced.
    Fd,
}

/// Which fixed-size table is full (`Error::Full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// Console clients.
    Clients,
    /// Installed packages over all repositories.
    Packages,
    /// Mounted packages.
    Mounts,
    /// Running containers.
    Containers,
    /// Installs in progress.
    Installs,
    /// Notification subscribers.
    Subscribers,
    /// Log reads of one connection: it reads one log at a time (protocol version 5;
    /// older clients get `Io(EBUSY)`).
    LogReads,
}

/// Why a package is refused: one code per [`HeaderError`] and [`ContentError`], flat, so
/// it has a fixed wire form however those types grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageError {
    /// Fewer bytes than a header.
    Truncated,
    /// Not an NPK (wrong magic).
    Magic,
    /// A format version this runtime does not read.
    Version(u16),
    /// The package carries no signature but the repository requires one.
    Unsigned,
    /// Signed by a key the repository does not trust (its key id).
    UnknownKey([u8; 8]),
    /// The signature does not match the header.
    Signature,
    /// A reserved byte is not zero: in the header, or between the seccomp program and the
    /// image.
    Reserved,
    /// An architecture code this runtime does not know.
    Arch(u16),
    /// Manifest length is zero or above the limit.
    ManifestLength,
    /// Seccomp length is not whole instructions or above the limit.
    SeccompLength,
    /// Image offset is not aligned or overlaps the manifest or seccomp program.
    ImageOffset,
    /// Image size is zero, unaligned or too large.
    ImageSize,
    /// Unsupported verity hash type or algorithm.
    VerityAlgorithm,
    /// Unsupported data or hash block size.
    BlockSize,
    /// Data block count does not match the image size.
    DataBlocks,
    /// Hash tree does not start right after the image.
    HashOffset,
    /// Hash tree size does not match its geometry.
    HashSize,
    /// Salt longer than its field, or its padding not zero.
    Salt,
    /// The file's length differs from what the header describes.
    FileLength,
    /// The manifest or seccomp bytes are not as long as the header says.
    ContentLength,
    /// The manifest's SHA-256 differs from the signed digest.
    ManifestDigest,
    /// The manifest decodes badly or breaks a rule (`npk inspect` on the host says which).
    Manifest,
    /// The seccomp program's SHA-256 differs from the signed digest.
    SeccompDigest,
    /// The seccomp program is malformed, missing although the manifest asks for a filter,
    /// or present although it chose none (`unconfined`) or the package is a resource.
    Seccomp,
    /// The package is built for another architecture than the device's. Never sent:
    /// [`PackageError::ArchMismatch`] names both; kept for its wire index.
    WrongArch,
    /// The package is built for another architecture than the runtime's (both as
    /// [`crate::npk::Arch`] codes).
    ArchMismatch {
        /// The package's architecture.
        package: u16,
        /// The runtime's own.
        runtime: u16,
    },
    /// The installed bytes are another package than the install announced
    /// ([`super::Request::Install`]).
    NotAsAnnounced,
    /// The repository entry is not a regular file (a symlink, FIFO, socket, device or
    /// directory): the runtime never reads it.
    NotAFile,
}

impl From<HeaderError> for PackageError {
    fn from(e: HeaderError) -> PackageError {
        match e {
            HeaderError::Truncated => PackageError::Truncated,
            HeaderError::Magic => PackageError::Magic,
            HeaderError::Version(v) => PackageError::Version(v),
            HeaderError::Unsigned => PackageError::Unsigned,
            HeaderError::UnknownKey(k) => PackageError::UnknownKey(k.0),
            HeaderError::Signature => PackageError::Signature,
            HeaderError::Reserved => PackageError::Reserved,
            HeaderError::Arch(a) => PackageError::Arch(a),
            HeaderError::ManifestLength => PackageError::ManifestLength,
            HeaderError::SeccompLength => PackageError::SeccompLength,
            HeaderError::ImageOffset => PackageError::ImageOffset,
            HeaderError::ImageSize => PackageError::ImageSize,
            HeaderError::VerityAlgorithm => PackageError::VerityAlgorithm,
            HeaderError::BlockSize => PackageError::BlockSize,
            HeaderError::DataBlocks => PackageError::DataBlocks,
            HeaderError::HashOffset => PackageError::HashOffset,
            HeaderError::HashSize => PackageError::HashSize,
            HeaderError::Salt => PackageError::Salt,
            HeaderError::FileLength => PackageError::FileLength,
        }
    }
}

impl From<ContentError> for PackageError {
    fn from(e: ContentError) -> PackageError {
        match e {
            ContentError::Length => PackageError::ContentLength,
            ContentError::ManifestDigest => PackageError::ManifestDigest,
            ContentError::Manifest(_) => PackageError::Manifest,
            ContentError::SeccompDigest => PackageError::SeccompDigest,
            // Appending codes would change the wire: the padding is reserved bytes, a
            // program missing or unexpected is the seccomp part at fault.
            ContentError::Seccomp(_)
            | ContentError::SeccompMissing
            | ContentError::SeccompUnexpected => PackageError::Seccomp,
            ContentError::Padding => PackageError::Reserved,
        }
    }
}
