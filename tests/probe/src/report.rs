//! `report`: what the process sees, one `key value` line each, then `end`.
//!
//! Everything comes from system calls where rustix offers them without an allocator;
//! the rest (saved ids, supplementary groups, the working directory, fd targets, mounts,
//! the seccomp mode) from `/proc/self`, printed as `?` (or, for fds and mounts, left out)
//! when `/proc` is not mounted.

use nanostar::container::init::rlimit_resource;
use nanostar_protocol::npk::manifest::RlimitResource;
use rustix::fd::AsRawFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Resource;
use rustix::thread::CapabilitySet;

use crate::files;
use crate::line::Line;

/// fds below this number are listed.
const MAX_FD: i32 = 1024;
/// The highest capability number tested in the bounding and ambient sets
/// (`CAP_CHECKPOINT_RESTORE`).
const LAST_CAP: u32 = 40;

/// Prints the report.
pub fn report() {
    let pid = rustix::process::getpid().as_raw_nonzero();
    Line::out().fmt(format_args!("pid {pid}")).end();
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    Line::out().fmt(format_args!("ppid {ppid}")).end();

    let (uid, euid) = (rustix::process::getuid(), rustix::process::geteuid());
    ids(b"uid", uid.as_raw(), euid.as_raw(), b"Uid:");
    let (gid, egid) = (rustix::process::getgid(), rustix::process::getegid());
    ids(b"gid", gid.as_raw(), egid.as_raw(), b"Gid:");
    groups();
    capabilities();

    let mut line = Line::out();
    line.bytes(b"no_new_privs ");
    match rustix::thread::no_new_privs() {
        Ok(set) => line.bytes(if set { b"1" } else { b"0" }),
        Err(_) => line.bytes(b"?"),
    };
    line.end();
    let mut line = Line::out();
    line.bytes(b"dumpable ");
    match rustix::process::dumpable_behavior() {
        Ok(dumpable) => line.fmt(format_args!("{}", dumpable as i32)),
        Err(_) => line.bytes(b"?"),
    };
    line.end();

    let uname = rustix::system::uname();
    Line::out()
        .bytes(b"hostname ")
        .bytes(uname.nodename().to_bytes())
        .end();
    let mut target = [0u8; 512];
    Line::out()
        .bytes(b"cwd ")
        .bytes(readlink(b"/proc/self/cwd", &mut target))
        .end();

    // The runtime's own table from the manifest's resources to the kernel's: a report
    // line per resource, named as manifests name them.
    for resource in RlimitResource::ALL {
        let limit = rustix::process::getrlimit(rlimit_resource(resource));
        let mut line = Line::out();
        line.bytes(b"limit ").bytes(resource.name().as_bytes());
        for value in [limit.current, limit.maximum] {
            match value {
                Some(n) => line.fmt(format_args!(" {n}")),
                None => line.bytes(b" inf"),
            };
        }
        line.end();
    }

    fds();
    mounts();

    for entry in nanostar::sys::env() {
        Line::out().bytes(b"env ").bytes(entry).end();
    }
    for (n, arg) in nanostar::sys::args().enumerate() {
        Line::out()
            .fmt(format_args!("arg {} ", n + 1))
            .bytes(arg)
            .end();
    }

    let mut line = Line::out();
    line.bytes(b"seccomp ");
    if !status_field(b"Seccomp:", |value| {
        line.bytes(value);
    }) {
        line.bytes(b"?");
    }
    line.end();

    Line::out().bytes(b"end").end();
}

/// `KEY REAL EFFECTIVE SAVED`: the saved id from the `/proc/self/status` line `field`
/// (`Uid:\treal\teffective\tsaved\tfs`).
fn ids(key: &[u8], real: u32, effective: u32, field: &[u8]) {
    let mut line = Line::out();
    line.bytes(key).fmt(format_args!(" {real} {effective} "));
    let mut saved = false;
    status_field(field, |value| {
        if let Some(id) = words(value).nth(2) {
            line.bytes(id);
            saved = true;
        }
    });
    if !saved {
        line.bytes(b"?");
    }
    line.end();
}

/// `groups G1,G2,...` from the `Groups:` line of `/proc/self/status`; `?` without `/proc`.
fn groups() {
    let mut line = Line::out();
    line.bytes(b"groups ");
    let found = status_field(b"Groups:", |value| {
        for (i, group) in words(value).enumerate() {
            if i > 0 {
                line.bytes(b",");
            }
            line.bytes(group);
        }
    });
    if !found {
        line.bytes(b"?");
    }
    line.end();
}

/// `caps eff=HEX prm=HEX inh=HEX bnd=HEX amb=HEX`.
fn capabilities() {
    let mut line = Line::out();
    line.bytes(b"caps");
    match rustix::thread::capabilities(None) {
        Ok(sets) => line.fmt(format_args!(
            " eff={:016x} prm={:016x} inh={:016x}",
            sets.effective.bits(),
            sets.permitted.bits(),
            sets.inheritable.bits()
        )),
        Err(_) => line.bytes(b" eff=? prm=? inh=?"),
    };
    let mut bounding = 0u64;
    let mut ambient = 0u64;
    for cap in 0..=LAST_CAP {
        let set = CapabilitySet::from_bits_retain(1 << cap);
        // Capabilities this kernel does not know are in no set.
        if rustix::thread::capability_is_in_bounding_set(set) == Ok(true) {
            bounding |= 1 << cap;
        }
        if rustix::thread::capability_is_in_ambient_set(set) == Ok(true) {
            ambient |= 1 << cap;
        }
    }
    line.fmt(format_args!(" bnd={bounding:016x} amb={ambient:016x}"))
        .end();
}

/// `fd N TARGET` for every open fd below [`MAX_FD`].
///
/// Without `unsafe` no arbitrary fd number can be handed to `fcntl(F_GETFD)`, so the probe
/// asks the kernel instead: `fcntl(F_DUPFD_CLOEXEC, n)` on a descriptor of its own
/// returns the lowest free number from `n` up, so everything between `n` and that number
/// is open. The probe's own descriptor (and the duplicate, closed at once) are not listed.
fn fds() {
    let Ok(own) = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let own_number = own.as_raw_fd();
    let mut next = 0;
    while next < MAX_FD {
        let free = match rustix::io::fcntl_dupfd_cloexec(&own, next) {
            // The duplicate is closed at the end of this arm.
            Ok(duplicate) => duplicate.as_raw_fd(),
            // No free number left below the limit: all from `next` up to it are open.
            Err(Errno::MFILE) => rustix::process::getrlimit(Resource::Nofile)
                .current
                .and_then(|limit| i32::try_from(limit).ok())
                .unwrap_or(MAX_FD),
            // `next` is at or above RLIMIT_NOFILE: nothing more can be probed.
            Err(_) => break,
        };
        for fd in (next..free.min(MAX_FD)).filter(|&fd| fd != own_number) {
            let mut path = heapless::String::<32>::new();
            let _ = core::fmt::Write::write_fmt(&mut path, format_args!("/proc/self/fd/{fd}"));
            let mut target = [0u8; 512];
            Line::out()
                .fmt(format_args!("fd {fd} "))
                .bytes(readlink(path.as_bytes(), &mut target))
                .end();
        }
        next = free.saturating_add(1);
    }
}

/// `mount MOUNTPOINT FSTYPE OPTIONS` for each line of `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
fn mounts() {
    let _ = files::for_each_line(b"/proc/self/mountinfo", |line| {
        let mut fields = line.split(|&b| b == b' ');
        let (Some(mount_point), Some(options)) = (fields.nth(4), fields.next()) else {
            return;
        };
        let Some(fs_type) = fields.skip_while(|&f| f != b"-").nth(1) else {
            return;
        };
        Line::out()
            .bytes(b"mount ")
            .bytes(mount_point)
            .bytes(b" ")
            .bytes(fs_type)
            .bytes(b" ")
            .bytes(options)
            .end();
    });
}

/// The target of the symbolic link at `path`, or `?` if it cannot be read (no `/proc`).
fn readlink<'b>(path: &[u8], buf: &'b mut [u8]) -> &'b [u8] {
    match rustix::fs::readlinkat_raw(rustix::fs::CWD, path, &mut *buf) {
        Ok(len) => &buf[..len],
        Err(_) => b"?",
    }
}

/// Calls `f` with the value (trimmed) of the first `/proc/self/status` line starting with
/// `key`; false if there is none or `/proc` is not mounted.
fn status_field(key: &[u8], mut f: impl FnMut(&[u8])) -> bool {
    let mut found = false;
    let _ = files::for_each_line(b"/proc/self/status", |line| {
        if let Some(value) = line.strip_prefix(key).filter(|_| !found) {
            found = true;
            f(value.trim_ascii());
        }
    });
    found
}

/// The words of `text`, separated by blanks.
fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}
