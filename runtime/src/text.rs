//! Words for people about what the runtime answers: the short text of an error reply.
//! The runtime's own log lines and the client both use it, so neither imports the other
//! (the client's longer sentences, which name what a refusal is about, are in `client`).

use nanostar_protocol::console::{Error, PackageError, Table, Violation};

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
