//! The stable machine-readable codes of `--json` errors ([`error_code`]), one per error
//! variant, and the reasons of `bad-package`, `full` and `protocol-violation`. Beside the
//! words for people because the two are one description of the same errors: a malformed
//! package's message says its code.

use nanostar_protocol::console::{Error, PackageError};

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
/// | `full` | `Full` (`reason`: the table: `clients`, `packages`, `mounts`, `containers`, `installs`, `subscribers`, `log-reads`) |
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
/// | `mount` | `Mount` (`reason`: the step: `loop-attach`, `dm-table-load`, …) |
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
        Error::Mount { step, .. } => (26, Some(word(MOUNT_STEP_CODES, *step as usize))),
    };
    (word(ERROR_CODES, index), reason)
}

/// The codes of [`error_code`], by wire index of [`Error`].
const ERROR_CODES: &str = "permission-denied protocol-violation invalid-argument \
    unknown-package ambiguous already-installed no-such-repository repository-full too-large \
    install-timeout bad-package busy already-mounted not-mounted device-mapper-missing full \
    shutting-down io already-running not-running is-resource resource-missing \
    bind-source-missing netns-missing cgroup-unavailable setup mount";

/// The `reason` of `mount`: the step, by wire index of `MountStep`.
const MOUNT_STEP_CODES: &str = "geometry loop-control loop-attach dm-control dm-version \
    dm-create dm-table-load dm-resume dm-node mount umount dm-remove";

/// The `reason` of `full`: the table, by wire index of [`Table`].
const TABLE_CODES: &str = "clients packages mounts containers installs subscribers log-reads";

/// The `reason` of `protocol-violation`, by wire index of [`Violation`].
const VIOLATION_CODES: &str =
    "undecodable frame-too-long no-hello unexpected no-install install-in-progress install-size fd";

/// The `reason` of `bad-package`, by wire index of [`PackageError`].
const PACKAGE_ERROR_CODES: &str = "truncated magic version unsigned unknown-key signature \
    reserved arch manifest-length seccomp-length image-offset image-size verity-algorithm \
    block-size data-blocks hash-offset hash-size salt file-length content-length \
    manifest-digest manifest seccomp-digest seccomp wrong-arch arch-mismatch not-as-announced not-a-file";

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
        PackageError::NotAFile => 27,
    };
    word(PACKAGE_ERROR_CODES, index)
}
