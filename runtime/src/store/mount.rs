//! Mounting a package's squashfs image read-only (docs/design.md, decision 8; the exact loop and
//! verity setup is in `docs/npk-format.md`, "Hash tree").
//!
//! - A free loop device from `/dev/loop-control` (the kernel creates one when none is free)
//!   is attached to the NPK file with `LOOP_CONFIGURE` (or `LOOP_SET_FD` +
//!   `LOOP_SET_STATUS64` on kernels without it): read-only, autoclear, over the image (and,
//!   with verity, the hash tree right after it).
//! - With verity (keyed repositories) a device-mapper `verity` target is put on top of the
//!   loop device, every parameter from the signed header; the loop device is named by
//!   `major:minor`, so no path to it is needed. Without device-mapper in the kernel the
//!   mount fails with [`MountError::DeviceMapperMissing`] before anything is set up.
//! - squashfs is mounted `ro,nosuid,nodev` from the loop device (development mode) or the
//!   dm device.
//!
//! A failure after partial setup tears down what was set up (dm device, loop binding).
//! [`umount`] unmounts and removes the dm device; the loop device detaches itself
//! (autoclear) when its last user, the mount or the dm device, lets go of it.

use core::ffi::CStr;
use core::fmt::{self, Write as _};

use nanostar_protocol::npk::VerityParams;
use rustix::event::Timespec;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::fs::errno_text;
use crate::layout::CPath;
use crate::limits::MAX_PATH_LEN;
use crate::sys::{dm, loopdev};

/// dm-verity data and hash block size (the NPK format fixes both at 4096).
const BLOCK_SIZE: u64 = 4096;
/// Longest salt passed to the kernel, in bytes (the NPK format has at most 32).
const MAX_SALT_LEN: usize = 256;
/// Loop devices tried when another user of `/dev/loop-control` takes ours first.
const LOOP_ATTEMPTS: usize = 8;
/// Pause before the next loop device when one was being detached, in nanoseconds (1 ms).
const LOOP_PAUSE_NS: i64 = 1_000_000;
/// `DM_DEV_REMOVE` attempts while the device is still busy.
const REMOVE_ATTEMPTS: usize = 10;
/// Pause between `DM_DEV_REMOVE` attempts, in nanoseconds (50 ms).
const REMOVE_PAUSE_NS: i64 = 50_000_000;
/// The loop control device.
const LOOP_CONTROL: &CStr = c"/dev/loop-control";

/// The verity parameters of a package, all from its signed header (see
/// `From<&VerityParams>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verity<'a> {
    /// Number of 4096-byte data blocks: the image size / 4096.
    pub data_blocks: u64,
    /// Size of the hash tree in bytes; the tree follows the image in the file.
    pub hash_size: u64,
    /// Root hash of the tree.
    pub root_hash: &'a [u8; 32],
    /// Salt (empty = none).
    pub salt: &'a [u8],
}

impl<'a> From<&'a VerityParams> for Verity<'a> {
    /// The parameters of a verified header (whose `check` already fixed SHA-256, 4096-byte
    /// blocks and a hash tree right after the image).
    fn from(v: &'a VerityParams) -> Verity<'a> {
        Verity {
            data_blocks: v.data_blocks,
            hash_size: v.hash_size,
            root_hash: &v.root_hash,
            salt: v.salt(),
        }
    }
}

/// What to mount where.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec<'a> {
    /// The NPK file: the descriptor whose header was verified (docs/design.md, decision
    /// 8: what is attached to the loop device is what was checked, not a path opened
    /// again).
    pub npk: BorrowedFd<'a>,
    /// The file's name, recorded in the loop device (`losetup -l` shows it).
    pub file_name: &'a [u8],
    /// Offset of the squashfs image in the file.
    pub image_offset: u64,
    /// Size of the image in bytes.
    pub image_size: u64,
    /// dm-verity parameters (keyed repositories); `None` mounts the loop device directly.
    pub verity: Option<Verity<'a>>,
    /// The directory to mount on (the caller creates it).
    pub target: &'a CStr,
    /// Name of the dm device, unique among mounted packages (e.g.
    /// `nanostar-<name>-<version>`); cut to the kernel's 127 bytes.
    pub dm_name: &'a str,
    /// A directory where a block node for the dm device is made (and removed again right
    /// after the mount) when devtmpfs has no `/dev/dm-N`.
    pub node_dir: &'a CStr,
}

/// A device-mapper block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmDevice {
    /// Major number (dynamic, from the kernel).
    pub major: u32,
    /// Minor number: the N of `/dev/dm-N`.
    pub minor: u32,
}

/// What a mount set up: enough to tear it down with [`umount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mounted {
    /// The N of the `/dev/loopN` that backs the mount (it detaches itself on release).
    pub loop_index: u32,
    /// The verity device, if any.
    pub dm: Option<DmDevice>,
}

/// The device-mapper step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmStep {
    /// Opening `/dev/mapper/control`.
    Control,
    /// `DM_VERSION` (the kernel's interface is not 4.x).
    Version,
    /// `DM_DEV_CREATE` (EBUSY: a device of that name exists).
    Create,
    /// `DM_TABLE_LOAD` (e.g. no verity target, or no SHA-256 in the kernel).
    TableLoad,
    /// `DM_DEV_SUSPEND` to resume the device.
    Resume,
    /// Finding or making the block node of the dm device.
    Node,
    /// `DM_DEV_REMOVE` (EBUSY: still open after retries).
    Remove,
}

/// Why a package could not be mounted or unmounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountError {
    /// The image size is zero or does not match the verity parameters, or the salt is too
    /// long.
    BadGeometry,
    /// The dm device name is empty or contains `/` or NUL.
    BadDmName,
    /// A path built from the node directory does not fit [`MAX_PATH_LEN`].
    PathTooLong,
    /// `/dev/loop-control` failed, or every free device it gave was taken or still being
    /// detached by someone else (EBUSY, ENXIO).
    LoopControl(Errno),
    /// The loop device could not be opened or attached to the file.
    LoopAttach(Errno),
    /// The kernel has no device-mapper, which packages of keyed repositories need.
    DeviceMapperMissing,
    /// A device-mapper step failed.
    DeviceMapper {
        /// The step.
        step: DmStep,
        /// The kernel's answer.
        errno: Errno,
    },
    /// Mounting the squashfs failed (EINVAL: not a valid squashfs image).
    Mount(Errno),
    /// Unmounting failed (EBUSY: files are still open in it).
    Umount(Errno),
}

impl fmt::Display for DmStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DmStep::Control => "opening /dev/mapper/control",
            DmStep::Version => "DM_VERSION",
            DmStep::Create => "DM_DEV_CREATE",
            DmStep::TableLoad => "DM_TABLE_LOAD",
            DmStep::Resume => "DM_DEV_SUSPEND (resume)",
            DmStep::Node => "the dm block node",
            DmStep::Remove => "DM_DEV_REMOVE",
        })
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::BadGeometry => f.write_str("image size and verity parameters disagree"),
            MountError::BadDmName => f.write_str("invalid device-mapper name"),
            MountError::PathTooLong => f.write_str("block node path too long"),
            MountError::LoopControl(e) => {
                write!(
                    f,
                    "no free loop device (/dev/loop-control): {}",
                    errno_text(*e)
                )
            }
            MountError::LoopAttach(e) => write!(f, "cannot attach loop device: {}", errno_text(*e)),
            MountError::DeviceMapperMissing => f.write_str(
                "the kernel has no device-mapper (/dev/mapper/control): \
                 packages of keyed repositories need dm-verity",
            ),
            MountError::DeviceMapper { step, errno } => {
                write!(f, "device-mapper: {step} failed: {}", errno_text(*errno))
            }
            MountError::Mount(e) => write!(f, "mounting the image failed: {}", errno_text(*e)),
            MountError::Umount(e) => write!(f, "unmounting failed: {}", errno_text(*e)),
        }
    }
}

/// Attaches a loop device (and, with verity, a dm-verity device) for the package's image
/// and mounts it on `spec.target`, `ro,nosuid,nodev`. On failure nothing stays set up.
pub fn mount(spec: &MountSpec) -> Result<Mounted, MountError> {
    let size_limit = device_size(spec)?;
    let dm_name = dm_name(spec.dm_name)?;
    // Device-mapper first: a kernel without it fails before anything is set up.
    let control = match spec.verity {
        Some(_) => Some(open_dm_control()?),
        None => None,
    };
    let attach = loopdev::Attach {
        offset: spec.image_offset,
        size_limit,
        file_name: spec.file_name,
    };
    let lo = attach_loop(spec.npk, &attach)?;
    let result = match (&spec.verity, &control) {
        (Some(verity), Some(control)) => mount_verity(spec, verity, control.as_fd(), &lo, dm_name)
            .map(|dm| Mounted {
                loop_index: lo.index,
                dm: Some(dm),
            }),
        _ => {
            let mut path = CPath::<32>::new();
            loop_path(&mut path, lo.index)?;
            mount_squashfs(path.c_str().map_err(too_long)?, spec.target).map(|()| Mounted {
                loop_index: lo.index,
                dm: None,
            })
        }
    };
    if result.is_err() {
        // Best effort on the way out: the error in hand is the one to report. The binding
        // ends when `lo.fd` is closed below (or at once, if nothing else holds the device).
        let _ = loopdev::clear_fd(lo.fd.as_fd());
    }
    // Closing our fd leaves the device to the mount or the dm device; autoclear detaches
    // it when they let go.
    result
}

/// Unmounts `target` and removes the dm device of `mounted`; the loop device then
/// detaches itself. If unmounting fails nothing else is touched, except that a target that
/// is no longer mounted (EINVAL) still gets its dm device removed, so a removal that failed
/// can be retried by calling `umount` again.
pub fn umount(target: &CStr, mounted: &Mounted) -> Result<(), MountError> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => {}
        Err(Errno::INVAL) if mounted.dm.is_some() => {}
        Err(e) => return Err(MountError::Umount(e)),
    }
    if let Some(dev) = mounted.dm {
        let control = fs::open(dm::CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| MountError::DeviceMapper {
                step: DmStep::Control,
                errno,
            })?;
        let device = dm::Device::Number {
            major: dev.major,
            minor: dev.minor,
        };
        remove_dm(control.as_fd(), device)?;
    }
    Ok(())
}

/// The size of the loop device: the image, plus the hash tree with verity.
fn device_size(spec: &MountSpec) -> Result<u64, MountError> {
    if spec.image_size == 0 {
        return Err(MountError::BadGeometry);
    }
    let Some(v) = &spec.verity else {
        return Ok(spec.image_size);
    };
    if v.data_blocks.checked_mul(BLOCK_SIZE) != Some(spec.image_size)
        || !v.hash_size.is_multiple_of(BLOCK_SIZE)
        || v.salt.len() > MAX_SALT_LEN
    {
        return Err(MountError::BadGeometry);
    }
    spec.image_size
        .checked_add(v.hash_size)
        .ok_or(MountError::BadGeometry)
}

/// The dm device name: at most the kernel's 127 bytes, no `/` or NUL.
fn dm_name(name: &str) -> Result<&[u8], MountError> {
    let bytes = name.as_bytes();
    let bytes = &bytes[..bytes.len().min(dm::NAME_MAX)];
    if bytes.is_empty() || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(MountError::BadDmName);
    }
    Ok(bytes)
}

/// Opens `/dev/mapper/control` and checks the interface version.
fn open_dm_control() -> Result<OwnedFd, MountError> {
    let control = match fs::open(dm::CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NODEV | Errno::NXIO) => {
            return Err(MountError::DeviceMapperMissing);
        }
        Err(errno) => {
            return Err(MountError::DeviceMapper {
                step: DmStep::Control,
                errno,
            });
        }
    };
    match dm::version(control.as_fd()) {
        Ok([4, ..]) => Ok(control),
        Ok(_) => Err(MountError::DeviceMapper {
            step: DmStep::Version,
            errno: Errno::PROTO,
        }),
        Err(errno) => Err(MountError::DeviceMapper {
            step: DmStep::Version,
            errno,
        }),
    }
}

/// A loop device bound to the package file; the fd keeps it open until dropped.
struct Loop {
    /// `/dev/loopN`, open read-only.
    fd: OwnedFd,
    /// N.
    index: u32,
    /// Block device major (7).
    major: u32,
    /// Block device minor (N unless the loop driver reserves partition minors).
    minor: u32,
}

/// Binds a free loop device to `backing`, retrying with another device when one is taken
/// between `LOOP_CTL_GET_FREE` and the bind (EBUSY), or is being detached by its previous
/// user when we open it (ENXIO).
fn attach_loop(backing: BorrowedFd<'_>, attach: &loopdev::Attach) -> Result<Loop, MountError> {
    let control = fs::open(LOOP_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(MountError::LoopControl)?;
    let mut last = Errno::BUSY;
    for _ in 0..LOOP_ATTEMPTS {
        let index = loopdev::get_free(control.as_fd()).map_err(MountError::LoopControl)?;
        let mut path = CPath::<32>::new();
        loop_path(&mut path, index)?;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = match fs::open(path.c_str().map_err(too_long)?, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NXIO) => {
                last = Errno::NXIO;
                pause(LOOP_PAUSE_NS);
                continue;
            }
            Err(e) => return Err(MountError::LoopAttach(e)),
        };
        let stat = fs::fstat(&fd).map_err(MountError::LoopAttach)?;
        match bind_loop(fd.as_fd(), backing, attach) {
            Ok(()) => {
                return Ok(Loop {
                    fd,
                    index,
                    major: fs::major(stat.st_rdev),
                    minor: fs::minor(stat.st_rdev),
                });
            }
            Err(Errno::BUSY) => last = Errno::BUSY,
            Err(e) => return Err(MountError::LoopAttach(e)),
        }
    }
    Err(MountError::LoopControl(last))
}

/// `LOOP_CONFIGURE`, or `LOOP_SET_FD` + `LOOP_SET_STATUS64` where the kernel lacks it.
fn bind_loop(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    attach: &loopdev::Attach,
) -> rustix::io::Result<()> {
    match loopdev::configure(dev, backing, attach) {
        Err(Errno::INVAL | Errno::NOTTY) => bind_loop_legacy(dev, backing, attach),
        other => other,
    }
}

/// `LOOP_SET_FD` + `LOOP_SET_STATUS64` (kernels before 5.8); unbinds again if the second
/// step fails.
fn bind_loop_legacy(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    attach: &loopdev::Attach,
) -> rustix::io::Result<()> {
    loopdev::set_fd(dev, backing)?;
    loopdev::set_status(dev, attach).inspect_err(|_| {
        // Undo the half-done bind; the set_status error is the one to report.
        let _ = loopdev::clear_fd(dev);
    })
}

/// Sets up the verity device over the loop device and mounts it; removes the dm device
/// again on failure.
fn mount_verity(
    spec: &MountSpec,
    verity: &Verity,
    control: BorrowedFd<'_>,
    lo: &Loop,
    name: &[u8],
) -> Result<DmDevice, MountError> {
    let mut params = CPath::<{ dm::PARAMS_MAX + 1 }>::new();
    table_params(&mut params, lo.major, lo.minor, verity).map_err(|_| MountError::BadGeometry)?;
    let (major, minor) = dm::create(control, name).map_err(|errno| MountError::DeviceMapper {
        step: DmStep::Create,
        errno,
    })?;
    let dev = DmDevice { major, minor };
    let result = activate_and_mount(spec, verity, control, name, params.as_bytes(), dev);
    if result.is_err() {
        // Best effort on the way out: the error in hand is the one to report.
        let _ = remove_dm(control, dm::Device::Name(name));
    }
    result.map(|()| dev)
}

/// Loads and resumes the verity table of the created device `dev`, then mounts it.
fn activate_and_mount(
    spec: &MountSpec,
    verity: &Verity,
    control: BorrowedFd<'_>,
    name: &[u8],
    params: &[u8],
    dev: DmDevice,
) -> Result<(), MountError> {
    let target = dm::Target {
        sectors: verity.data_blocks * (BLOCK_SIZE / 512),
        kind: b"verity",
        params,
    };
    let step = |step| move |errno| MountError::DeviceMapper { step, errno };
    dm::load_table(control, name, &target).map_err(step(DmStep::TableLoad))?;
    dm::resume(control, name).map_err(step(DmStep::Resume))?;
    let mut path = CPath::<{ MAX_PATH_LEN + 1 }>::new();
    let made = block_node(&mut path, spec.node_dir, dev)?;
    let result = mount_squashfs(path.c_str().map_err(too_long)?, spec.target);
    if made {
        // The mount holds the device, not the node; a node left behind would be harmless.
        let _ = fs::unlink(path.c_str().map_err(too_long)?);
    }
    result
}

/// Puts the path of a block node for `dev` in `path`: `/dev/dm-N` when devtmpfs made it,
/// else `<node_dir>/dm-N`, made here (returns true: the caller removes it).
fn block_node<const N: usize>(
    path: &mut CPath<N>,
    node_dir: &CStr,
    dev: DmDevice,
) -> Result<bool, MountError> {
    let number = fs::makedev(dev.major, dev.minor);
    write!(path, "/dev/dm-{}", dev.minor).map_err(|_| MountError::PathTooLong)?;
    if let Ok(stat) = fs::stat(path.c_str().map_err(too_long)?)
        && FileType::from_raw_mode(stat.st_mode) == FileType::BlockDevice
        && stat.st_rdev == number
    {
        return Ok(false);
    }
    path.clear();
    path.push(node_dir.to_bytes())
        .map_err(|_| MountError::PathTooLong)?;
    write!(path, "/dm-{}", dev.minor).map_err(|_| MountError::PathTooLong)?;
    let node = path.c_str().map_err(too_long)?;
    let make = || fs::mknodat(fs::CWD, node, FileType::BlockDevice, Mode::RUSR, number);
    let made = match make() {
        // A stale node from an earlier run: replace it.
        Err(Errno::EXIST) => fs::unlink(node).and_then(|()| make()),
        other => other,
    };
    made.map_err(|errno| MountError::DeviceMapper {
        step: DmStep::Node,
        errno,
    })?;
    Ok(true)
}

/// `DM_DEV_REMOVE`, retried while the device is busy (e.g. briefly opened by a prober).
fn remove_dm(control: BorrowedFd<'_>, device: dm::Device) -> Result<(), MountError> {
    let mut attempt = 1;
    loop {
        match dm::remove(control, device) {
            Ok(()) => return Ok(()),
            Err(Errno::BUSY) if attempt < REMOVE_ATTEMPTS => {
                attempt += 1;
                pause(REMOVE_PAUSE_NS);
            }
            Err(errno) => {
                return Err(MountError::DeviceMapper {
                    step: DmStep::Remove,
                    errno,
                });
            }
        }
    }
}

/// Sleeps for `ns` nanoseconds (less than a second).
fn pause(ns: i64) {
    let pause = Timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    // poll() on no fds is a sleep; an early wake-up only shortens the pause.
    let _ = rustix::event::poll(&mut [], Some(&pause));
}

/// `mount -t squashfs -o ro,nosuid,nodev source target`.
fn mount_squashfs(source: &CStr, target: &CStr) -> Result<(), MountError> {
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    rustix::mount::mount(source, target, c"squashfs", flags, None).map_err(MountError::Mount)
}

/// A path that does not fit its buffer.
fn too_long(_: Errno) -> MountError {
    MountError::PathTooLong
}

/// `/dev/loopN`.
fn loop_path<const N: usize>(path: &mut CPath<N>, index: u32) -> Result<(), MountError> {
    write!(path, "/dev/loop{index}").map_err(|_| MountError::PathTooLong)
}

/// The verity target's parameters (docs/npk-format.md, "Hash tree"): data and hash device
/// are both the loop device, the tree starts right after the `data_blocks` image blocks.
fn table_params<const N: usize>(
    out: &mut CPath<N>,
    major: u32,
    minor: u32,
    v: &Verity,
) -> fmt::Result {
    let blocks = v.data_blocks;
    write!(
        out,
        "1 {major}:{minor} {major}:{minor} {BLOCK_SIZE} {BLOCK_SIZE} {blocks} {blocks} sha256 "
    )?;
    for b in v.root_hash {
        write!(out, "{b:02x}")?;
    }
    if v.salt.is_empty() {
        out.push(b" -")
    } else {
        out.push(b" ")?;
        v.salt.iter().try_for_each(|b| write!(out, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests;
