//! One conversion from what went wrong inside the runtime to the error on the wire
//! (`console::Error`), and [`Refusal`], an error that owns the text it names.

use heapless::String;
use nanostar_protocol::console::{
    Error, MountStep, PackageError, PackageId, SetupStep, Table, Violation,
};
use nanostar_protocol::limits::{MAX_NAME_LEN, MAX_NETNS_NAME_LEN, MAX_PATH_LEN};
use nanostar_protocol::npk::Arch;
use nanostar_protocol::version::Version;
use rustix::io::Errno;

use crate::container::cgroup::CgroupError;
use crate::container::launch::LaunchError;
use crate::store::StoreError;
use crate::store::install::InstallError;
use crate::store::mount::{DmStep, MountError};
use crate::store::repository::Rejection;

/// `Error::Io` with the errno's number.
pub fn io_error(e: Errno) -> Error<'static> {
    Error::Io(e.raw_os_error() as u16)
}

impl From<Rejection> for Error<'static> {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Io(e) => io_error(e),
            Rejection::Header(h) => Error::BadPackage(PackageError::from(h)),
            Rejection::Content(c) => Error::BadPackage(PackageError::from(c)),
            Rejection::Duplicate => Error::AlreadyInstalled,
            Rejection::TableFull => Error::Full(Table::Packages),
            Rejection::FileName => io_error(Errno::NAMETOOLONG),
            Rejection::WrongArch(arch) => Error::BadPackage(PackageError::ArchMismatch {
                package: arch.code(),
                runtime: Arch::native().map_or(u16::MAX, |a| a.code()),
            }),
            Rejection::NotAsAnnounced => Error::BadPackage(PackageError::NotAsAnnounced),
            Rejection::NotAFile => Error::BadPackage(PackageError::NotAFile),
        }
    }
}

impl From<InstallError> for Error<'static> {
    fn from(e: InstallError) -> Self {
        match e {
            InstallError::TooLarge => Error::TooLarge,
            InstallError::Overrun | InstallError::Incomplete => {
                Error::ProtocolViolation(Violation::InstallSize)
            }
            InstallError::Rejected(r) => r.into(),
            InstallError::Io(Errno::NOSPC) => Error::RepositoryFull,
            InstallError::Io(e) => io_error(e),
        }
    }
}

impl From<MountError> for Error<'static> {
    /// Keeps the step that failed, so the client can say which.
    fn from(e: MountError) -> Self {
        let at = |step: MountStep, errno: Errno| Error::Mount {
            step,
            errno: errno.raw_os_error() as u16,
        };
        match e {
            MountError::DeviceMapperMissing => Error::DeviceMapperMissing,
            MountError::BadGeometry | MountError::BadDmName => {
                at(MountStep::Geometry, Errno::INVAL)
            }
            MountError::PathTooLong => at(MountStep::DmNode, Errno::NAMETOOLONG),
            MountError::LoopControl(errno) => at(MountStep::LoopControl, errno),
            MountError::LoopAttach(errno) => at(MountStep::LoopAttach, errno),
            MountError::DeviceMapper { step, errno } => at(
                match step {
                    DmStep::Control => MountStep::DmControl,
                    DmStep::Version => MountStep::DmVersion,
                    DmStep::Create => MountStep::DmCreate,
                    DmStep::TableLoad => MountStep::DmTableLoad,
                    DmStep::Resume => MountStep::DmResume,
                    DmStep::Node => MountStep::DmNode,
                    DmStep::Remove => MountStep::DmRemove,
                },
                errno,
            ),
            MountError::Mount(errno) => at(MountStep::Mount, errno),
            MountError::Umount(errno) => at(MountStep::Umount, errno),
        }
    }
}

impl From<StoreError> for Error<'static> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownPackage => Error::UnknownPackage,
            StoreError::NoSuchRepository => Error::NoSuchRepository,
            StoreError::AlreadyMounted => Error::AlreadyMounted,
            StoreError::NotMounted => Error::NotMounted,
            StoreError::MountsFull => Error::Full(Table::Mounts),
            StoreError::Io(e) => io_error(e),
            StoreError::Rejected(r) => r.into(),
            StoreError::Install(e) => e.into(),
            StoreError::Mount(e) => e.into(),
        }
    }
}

impl From<CgroupError> for Error<'static> {
    fn from(e: CgroupError) -> Self {
        match e {
            CgroupError::Unavailable => Error::CgroupUnavailable,
            CgroupError::Io(e) => setup(SetupStep::Prepare, e),
        }
    }
}

/// `Error::Setup` at `step` with `errno`.
pub fn setup(step: SetupStep, errno: Errno) -> Error<'static> {
    Error::Setup {
        step,
        errno: errno.raw_os_error() as u16,
    }
}

/// An error reply that owns the text it names (a package name, a host path), so it can
/// outlive the manifest or the table it came from until the reply is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An error without borrowed text.
    Plain(Error<'static>),
    /// `Error::Busy`: the package that uses it.
    Busy(String<MAX_NAME_LEN>, Version),
    /// `Error::ResourceMissing`.
    ResourceMissing(String<MAX_NAME_LEN>),
    /// `Error::BindSourceMissing`.
    BindSourceMissing(String<MAX_PATH_LEN>),
    /// `Error::NetnsMissing`.
    NetnsMissing(String<MAX_NETNS_NAME_LEN>),
}

impl Refusal {
    /// `Busy`, naming the package `name` `version` as the user.
    pub fn busy(name: &str, version: Version) -> Refusal {
        Refusal::Busy(owned(name), version)
    }

    /// The error on the wire.
    pub fn error(&self) -> Error<'_> {
        match self {
            Refusal::Plain(e) => *e,
            Refusal::Busy(name, version) => Error::Busy {
                used_by: PackageId {
                    name,
                    version: *version,
                },
            },
            Refusal::ResourceMissing(name) => Error::ResourceMissing { name },
            Refusal::BindSourceMissing(path) => Error::BindSourceMissing { path },
            Refusal::NetnsMissing(name) => Error::NetnsMissing { name },
        }
    }
}

impl From<Error<'static>> for Refusal {
    fn from(e: Error<'static>) -> Self {
        Refusal::Plain(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Plain(e.into())
    }
}

impl From<CgroupError> for Refusal {
    fn from(e: CgroupError) -> Self {
        Refusal::Plain(e.into())
    }
}

impl From<LaunchError> for Refusal {
    fn from((step, errno): LaunchError) -> Self {
        Refusal::Plain(setup(step, errno))
    }
}

/// A copy of `text` (cut at the capacity; the manifest's limits keep it shorter).
pub fn owned<const N: usize>(text: &str) -> String<N> {
    let mut s = String::new();
    for c in text.chars() {
        if s.push(c).is_err() {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_error_keeps_its_step_on_the_wire() {
        let table_load = MountError::DeviceMapper {
            step: DmStep::TableLoad,
            errno: Errno::INVAL,
        };
        let want = Error::Mount {
            step: MountStep::DmTableLoad,
            errno: 22,
        };
        assert_eq!(Error::from(table_load), want);
        assert_eq!(
            Error::from(StoreError::Mount(MountError::LoopAttach(Errno::BUSY))),
            Error::Mount {
                step: MountStep::LoopAttach,
                errno: 16,
            }
        );
        assert_eq!(
            Error::from(MountError::DeviceMapperMissing),
            Error::DeviceMapperMissing
        );
        assert_eq!(
            Error::from(MountError::BadGeometry),
            Error::Mount {
                step: MountStep::Geometry,
                errno: 22,
            }
        );
    }
}
