//! The manifest's mounts, made by init inside the container's (not yet pivoted) root.
//!
//! Every mount is made through descriptors, never by a path the kernel resolves again
//! (the CVE-2021-30465 class, where a symlink in the image sends a mount outside the
//! container):
//!
//! - the target is opened inside the root with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: a target that is, or
//!   passes through, a symlink fails with `ELOOP` (`npk pack` refuses such a package), one
//!   outside the image cannot be named;
//! - what is mounted is a detached mount: a clone of a tree (`open_tree`) for binds,
//!   persistent data and resources, a new file system (`fsopen` + `fsmount`) for tmpfs,
//!   proc, sysfs and dev; its flags are set on the descriptor (`mount_setattr`), and dev's
//!   nodes are made through it, before anything can see it;
//! - a resource's directory is resolved inside the resource's own image
//!   (`RESOLVE_IN_ROOT`): a symlink to `/` there is the resource's root, not the host's;
//! - `move_mount` attaches the detached mount onto the target's descriptor.

use core::ffi::CStr;
use core::fmt::Write as _;

use heapless::String;
use nanostar_protocol::npk::manifest::{Manifest, MountFlags as Flags, MountKind};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use crate::layout::{self, CPath};
use crate::limits::MAX_PATH_LEN;
use crate::sys::mount::{MountAttr, set_mount_attr};

use super::init::Launch;

/// A manifest path without its leading `/`, or a runtime path, NUL-terminated.
type MountPath = CPath<{ 2 * MAX_PATH_LEN + 2 }>;

/// What a mount target may resolve through: nothing but real directories of the image.
const TARGET_RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// The flags every file system init creates (tmpfs, proc, sysfs) has.
const PLAIN: MountAttr = MountAttr::NOSUID
    .union(MountAttr::NODEV)
    .union(MountAttr::NOEXEC);

/// The root of the container: the package's mounted image.
pub fn open_root(root: &str) -> Result<OwnedFd, Errno> {
    let mut path = MountPath::of(&[root])?;
    rustix::fs::open(
        path.c_str()?,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Mount `index` of the manifest, onto its target inside `root`.
pub fn mount_one(
    launch: &Launch,
    root: impl AsFd,
    index: usize,
    kind: &MountKind,
    target: &str,
) -> Result<(), Errno> {
    let target = open_target(root, target)?;
    let mount = match *kind {
        MountKind::Bind { host, flags } => {
            let mut source = MountPath::of(&[host])?;
            clone_tree(
                rustix::fs::CWD,
                source.c_str()?,
                flags,
                MountAttr::default(),
            )?
        }
        MountKind::Persist => {
            let mut source = MountPath::of(&[launch.persist.ok_or(Errno::NOENT)?])?;
            clone_tree(rustix::fs::CWD, source.c_str()?, Flags::RW, PLAIN)?
        }
        MountKind::Resource {
            name, dir, flags, ..
        } => {
            let version = launch.resources[index].ok_or(Errno::NOENT)?;
            let mut image: MountPath = layout::mount_point(launch.run_dir, name, &version)?;
            let image = rustix::fs::open(
                image.c_str()?,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut dir = MountPath::of(&[".", dir])?;
            let source = rustix::fs::openat2(
                &image,
                dir.c_str()?,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            )?;
            // Read-only and flat whatever the flags say (the manifest refuses RW and REC).
            let flags = Flags(flags.0 & !(Flags::RW.0 | Flags::REC.0));
            clone_tree(
                &source,
                c"",
                flags,
                MountAttr::NOSUID.union(MountAttr::NODEV),
            )?
        }
        MountKind::Tmpfs { size } => {
            let mut options: String<96> = String::new();
            let m: &Manifest = launch.manifest;
            write!(options, "{size}\0").map_err(|_| Errno::INVAL)?;
            let fs = fsopen(c"tmpfs")?;
            set_string(&fs, c"size", &options)?;
            set_string(&fs, c"mode", "0700\0")?;
            options.clear();
            write!(options, "{}\0", m.uid).map_err(|_| Errno::INVAL)?;
            set_string(&fs, c"uid", &options)?;
            options.clear();
            write!(options, "{}\0", m.gid).map_err(|_| Errno::INVAL)?;
            set_string(&fs, c"gid", &options)?;
            create(&fs, PLAIN)?
        }
        MountKind::Proc => create(&fsopen(c"proc")?, PLAIN.union(MountAttr::RDONLY))?,
        MountKind::Sysfs => create(&fsopen(c"sysfs")?, PLAIN.union(MountAttr::RDONLY))?,
        MountKind::Dev => dev()?,
    };
    rustix::mount::move_mount(
        &mount,
        c"",
        &target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// The target `/a/b` of a mount as a descriptor of `root/a/b`, through real directories
/// only.
fn open_target(root: impl AsFd, target: &str) -> Result<OwnedFd, Errno> {
    // Relative to the root: `RESOLVE_BENEATH` refuses an absolute path.
    let mut relative = MountPath::of(&[".", target])?;
    // Not `O_NOFOLLOW`: with `O_PATH` it would open a symlink at the end itself instead of
    // failing with `ELOOP`.
    rustix::fs::openat2(
        root,
        relative.c_str()?,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        TARGET_RESOLVE,
    )
}

/// A detached copy of the mount at `dir`/`path` (with `REC`, of the mounts below it too),
/// read-only unless `RW`, with the manifest's flags and `always`.
fn clone_tree(
    dir: impl AsFd,
    path: &CStr,
    flags: Flags,
    always: MountAttr,
) -> Result<OwnedFd, Errno> {
    let recursive = flags.contains(Flags::REC);
    let mut open = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if path.is_empty() {
        open |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    if recursive {
        open |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(dir, path, open)?;
    let mut attr = always;
    for (flag, kernel) in [
        (Flags::NOSUID, MountAttr::NOSUID),
        (Flags::NODEV, MountAttr::NODEV),
        (Flags::NOEXEC, MountAttr::NOEXEC),
    ] {
        if flags.contains(flag) {
            attr = attr.union(kernel);
        }
    }
    if !flags.contains(Flags::RW) {
        attr = attr.union(MountAttr::RDONLY);
    }
    if attr != MountAttr::default() {
        set_mount_attr(&tree, attr, recursive)?;
    }
    Ok(tree)
}

/// `fsopen(name, FSOPEN_CLOEXEC)`: a new, unconfigured file system context.
fn fsopen(name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::mount::fsopen(name, FsOpenFlags::FSOPEN_CLOEXEC)
}

/// `fsconfig(FSCONFIG_SET_STRING)` with a value that ends in NUL.
fn set_string(fs: impl AsFd, key: &CStr, value: &str) -> Result<(), Errno> {
    let value = CStr::from_bytes_with_nul(value.as_bytes()).map_err(|_| Errno::INVAL)?;
    rustix::mount::fsconfig_set_string(fs, key, value)
}

/// `fsconfig(FSCONFIG_CMD_CREATE)` then `fsmount` with `attr`: the new file system as a
/// detached mount.
fn create(fs: impl AsFd, attr: MountAttr) -> Result<OwnedFd, Errno> {
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::from_bits_retain(attr.0 as u32),
    )
}

/// A minimal /dev: a small tmpfs with the harmless character devices and the `fd` links,
/// made through the detached mount's descriptor, then read-only.
fn dev() -> Result<OwnedFd, Errno> {
    let fs = fsopen(c"tmpfs")?;
    set_string(&fs, c"size", "16k\0")?;
    set_string(&fs, c"mode", "0755\0")?;
    let dev = create(&fs, MountAttr::NOSUID.union(MountAttr::NOEXEC))?;
    for (name, major, minor) in [
        (c"null", 1, 3),
        (c"zero", 1, 5),
        (c"full", 1, 7),
        (c"random", 1, 8),
        (c"urandom", 1, 9),
        (c"tty", 5, 0),
    ] {
        rustix::fs::mknodat(
            &dev,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )?;
    }
    for (name, link) in [
        (c"fd", c"/proc/self/fd"),
        (c"stdin", c"/proc/self/fd/0"),
        (c"stdout", c"/proc/self/fd/1"),
        (c"stderr", c"/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(link, &dev, name)?;
    }
    set_mount_attr(&dev, MountAttr::RDONLY, false)?;
    Ok(dev)
}
