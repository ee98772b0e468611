//! PID-1 mode: `nanostar` as the board's init. It mounts what a Linux system needs (/dev,
//! /proc, /sys, cgroup2, /run, /tmp), mounts the persistent data disk named in the
//! configuration, runs the runtime (which reaps every orphan, as PID 1 must), and when
//! the runtime ends (a `shutdown` request, SIGTERM, SIGINT, or a failing critical
//! container) syncs, unmounts the data disk and powers the machine off. PID 1 must never
//! exit, so every path ends in a power-off.

use core::ffi::CStr;

use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::config::Config;
use crate::errln;

/// The configuration PID 1 reads when the kernel starts it without arguments.
pub const DEFAULT_CONFIG: &str = "/etc/nanostar.conf";

/// A file system every board needs.
struct BaseMount {
    source: &'static CStr,
    target: &'static CStr,
    fstype: &'static CStr,
    flags: MountFlags,
    data: &'static CStr,
}

const HARDENED: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In mount order (`/sys/fs/cgroup` lives in `/sys`).
const BASE_MOUNTS: [BaseMount; 6] = [
    BaseMount {
        source: c"devtmpfs",
        target: c"/dev",
        fstype: c"devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
    },
    BaseMount {
        source: c"proc",
        target: c"/proc",
        fstype: c"proc",
        flags: HARDENED,
        data: c"",
    },
    BaseMount {
        source: c"sysfs",
        target: c"/sys",
        fstype: c"sysfs",
        flags: HARDENED,
        data: c"",
    },
    BaseMount {
        source: c"cgroup2",
        target: c"/sys/fs/cgroup",
        fstype: c"cgroup2",
        flags: HARDENED,
        data: c"",
    },
    BaseMount {
        source: c"tmpfs",
        target: c"/run",
        fstype: c"tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755,size=8m",
    },
    BaseMount {
        source: c"tmpfs",
        target: c"/tmp",
        fstype: c"tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777,size=8m",
    },
];

/// Runs the board: never returns.
pub fn run(config_path: &str) -> ! {
    if let Err(e) = leave_rootfs() {
        errln!(
            "nanostar: cannot move the root off the initramfs: {} (containers will not start)",
            crate::fs::errno_text(e)
        );
    }
    for m in BASE_MOUNTS {
        let target = m.target;
        let _ = rustix::fs::mkdir(target, Mode::from_raw_mode(0o755));
        match rustix::mount::mount(m.source, target, m.fstype, m.flags, m.data) {
            Ok(()) | Err(Errno::BUSY) => {}
            Err(e) => errln!(
                "nanostar: cannot mount {}: {}",
                target.to_str().unwrap_or("?"),
                crate::fs::errno_text(e)
            ),
        }
    }
    let mut buf = [0u8; crate::limits::MAX_CONFIG_LEN];
    match crate::config::load(config_path, &mut buf) {
        Some(config) => serve(&config),
        None => errln!("nanostar: no usable configuration; powering off"),
    }
    power_off()
}

/// `ramfs` and `tmpfs`: what the kernel's initramfs root (rootfs) is.
const RAMFS_MAGIC: u32 = 0x8584_58f6;
const TMPFS_MAGIC: u32 = 0x0102_1994;

/// When the root is the initramfs (rootfs, which has no parent mount), makes it a bind
/// mount of itself: `pivot_root` refuses to move rootfs, and every container start
/// pivots. The steps of `switch_root`, onto the same files: bind / at /.root, move that
/// onto /, chroot into it.
fn leave_rootfs() -> Result<(), Errno> {
    // `f_type` is 32 bits on arm, 64 elsewhere; the magic numbers fit 32.
    let magic = rustix::fs::statfs(c"/")?.f_type as u32;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Ok(());
    }
    match rustix::fs::mkdir(c"/.root", Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    rustix::mount::mount_bind_recursive(c"/", c"/.root")?;
    rustix::process::chdir(c"/.root")?;
    rustix::mount::mount_move(c".", c"/")?;
    rustix::process::chroot(c".")?;
    rustix::process::chdir(c"/")
}

/// Mounts the data disk, runs the runtime, unmounts the disk.
fn serve(config: &Config) {
    let data = config
        .data_device
        .and_then(|device| mount_data(config, device));
    if let Err(e) = crate::server::run(config) {
        errln!("nanostar: cannot start: {e}");
    }
    rustix::fs::sync();
    if let Some(target) = data
        && let Err(e) = rustix::mount::unmount(target, UnmountFlags::empty())
    {
        errln!(
            "nanostar: cannot unmount {target}: {}; remounting read-only",
            crate::fs::errno_text(e)
        );
        let _ = rustix::mount::mount_remount(target, MountFlags::RDONLY, c"");
    }
}

/// Mounts `device` at the configured place; where it is mounted, or `None` (the runtime
/// then runs without persistence, which it says).
fn mount_data<'c>(config: &Config<'c>, device: &str) -> Option<&'c str> {
    let target = config.data_mount;
    if let Err(e) = crate::fs::create_dirs(target) {
        errln!(
            "nanostar: cannot create {target}: {}",
            crate::fs::errno_text(e)
        );
        return None;
    }
    match rustix::mount::mount(
        device,
        target,
        config.data_fstype,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOATIME,
        c"",
    ) {
        Ok(()) => Some(target),
        Err(e) => {
            errln!(
                "nanostar: cannot mount the data disk {device} ({}) at {target}: {}; nothing will persist",
                config.data_fstype,
                crate::fs::errno_text(e)
            );
            None
        }
    }
}

/// Powers the machine off (PSCI SYSTEM_OFF on the QEMU boards), after syncing.
fn power_off() -> ! {
    rustix::fs::sync();
    errln!("nanostar: powering off");
    loop {
        let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
        // Only fails without CAP_SYS_BOOT; PID 1 has it. Do not spin hot.
        let _ = rustix::thread::nanosleep(&rustix::thread::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
    }
}
