//! Mount tests. The pure parts run everywhere; the kernel ones need root (loop devices,
//! mount) and skip with a note otherwise. This host has loop and squashfs but no
//! device-mapper, so verity mounts must fail with `DeviceMapperMissing` here.

use std::borrow::ToOwned;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::string::String;
use std::time::{Duration, Instant};
use std::vec::Vec as StdVec;
use std::{format, fs as stdfs, vec};

use nanostar_protocol::npk::{Arch, HeaderFields, UnverifiedHeader};
use nanostar_tools::manifest::SourceManifest;
use nanostar_tools::package::{PackInput, pack};
use rustix::fs::StatVfsMountFlags;

use super::*;

/// True when running as root; otherwise prints why the test does nothing.
fn root(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        std::eprintln!("note: {test} needs root (loop devices, mount); skipped");
    }
    root
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A packed package in a temp dir, with its header fields.
struct Package {
    dir: tempfile::TempDir,
    npk: PathBuf,
    header: HeaderFields,
}

impl Package {
    fn new(tag: &str) -> Package {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        stdfs::create_dir_all(root.join("etc")).unwrap();
        stdfs::write(root.join("etc/hello.txt"), format!("hello from {tag}\n")).unwrap();
        stdfs::write(root.join("big.bin"), vec![7u8; 300_000]).unwrap();
        let toml = format!(
            "name = \"{tag}\"\nversion = \"1.0.0\"\ninit = \"/bin/app\"\nuid = 1000\ngid = 1000\n"
        );
        let source = SourceManifest::parse(&toml).unwrap();
        let input = PackInput {
            manifest: &source,
            root: &root,
            key: None,
            arch: Some(Arch::X86_64),
        };
        let bytes = pack(&input, &mut |_| {}).unwrap().bytes;
        let header = *UnverifiedHeader::new(&bytes)
            .unwrap()
            .accept_unsigned()
            .unwrap();
        let npk = dir.path().join("pkg.npk");
        stdfs::write(&npk, &bytes).unwrap();
        let npk = npk.canonicalize().unwrap();
        Package { dir, npk, header }
    }

    /// A fresh empty directory in the package's temp dir.
    fn dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        stdfs::create_dir_all(&path).unwrap();
        path
    }
}

/// The package file (open, as the store passes it) and the paths of a mount, kept alive
/// as C strings.
struct Paths {
    npk: OwnedFd,
    file_name: CString,
    target: CString,
    nodes: CString,
}

impl Paths {
    fn new(p: &Package, target: &Path) -> Paths {
        Paths {
            npk: fs::open(c(&p.npk).as_c_str(), OFlags::RDONLY, Mode::empty()).unwrap(),
            file_name: c(&p.npk),
            target: c(target),
            nodes: c(&p.dir("nodes")),
        }
    }

    fn spec<'a>(&'a self, p: &'a Package, verity: Option<Verity<'a>>) -> MountSpec<'a> {
        MountSpec {
            npk: self.npk.as_fd(),
            file_name: self.file_name.to_bytes(),
            image_offset: p.header.image_offset,
            image_size: p.header.image_size,
            verity,
            target: &self.target,
            dm_name: "nanostar-test-1.0.0",
            node_dir: &self.nodes,
        }
    }
}

/// The loop devices (`loopN` names) whose backing file is `file`.
fn loops_backed_by(file: &Path) -> StdVec<String> {
    let mut found = StdVec::new();
    for entry in stdfs::read_dir("/sys/block").unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = stdfs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        else {
            continue;
        };
        let backing = backing.trim_end();
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == file {
            found.push(name);
        }
    }
    found
}

/// Waits up to 2 s for every loop device on `file` to be released.
#[track_caller]
fn assert_released(file: &Path) {
    let start = Instant::now();
    while !loops_backed_by(file).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "loop device(s) {:?} still attached to {}",
            loops_backed_by(file),
            file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn mounts_reads_and_releases_the_loop_device() {
    if !root("mounts_reads_and_releases_the_loop_device") {
        return;
    }
    let p = Package::new("plain");
    let target = p.dir("mnt");
    let paths = Paths::new(&p, &target);
    let mounted = mount(&paths.spec(&p, None)).unwrap();
    assert_eq!(mounted.dm, None);
    assert_eq!(
        loops_backed_by(&p.npk),
        [format!("loop{}", mounted.loop_index)]
    );
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            stdfs::read_to_string(target.join("etc/hello.txt")).unwrap(),
            "hello from plain\n"
        );
        assert_eq!(
            stdfs::read(target.join("big.bin")).unwrap(),
            vec![7u8; 300_000]
        );
        let flags = rustix::fs::statvfs(&target).unwrap().f_flag;
        let want = StatVfsMountFlags::RDONLY | StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV;
        assert!(flags.contains(want), "{flags:?}");
        let offset =
            std::fs::read_to_string(format!("/sys/block/loop{}/loop/offset", mounted.loop_index))
                .unwrap();
        assert_eq!(offset.trim(), p.header.image_offset.to_string());
        let ro = std::fs::read_to_string(format!("/sys/block/loop{}/ro", mounted.loop_index));
        assert_eq!(ro.unwrap().trim(), "1");
        let autoclear = std::fs::read_to_string(format!(
            "/sys/block/loop{}/loop/autoclear",
            mounted.loop_index
        ));
        assert_eq!(autoclear.unwrap().trim(), "1");
    });
    umount(&paths.target, &mounted).unwrap();
    result.unwrap();
    assert_released(&p.npk);
    // Unmounted: a second umount is the kernel's EINVAL (not a mount point).
    assert_eq!(
        umount(&paths.target, &mounted),
        Err(MountError::Umount(Errno::INVAL))
    );
}

#[test]
fn two_mounts_at_once_use_two_loop_devices() {
    if !root("two_mounts_at_once_use_two_loop_devices") {
        return;
    }
    let p = Package::new("twice");
    let (a, b) = (p.dir("a"), p.dir("b"));
    let (pa, pb) = (Paths::new(&p, &a), Paths::new(&p, &b));
    let ma = mount(&pa.spec(&p, None)).unwrap();
    let mb = mount(&pb.spec(&p, None));
    let result = std::panic::catch_unwind(|| {
        let mb = mb.unwrap();
        assert_ne!(ma.loop_index, mb.loop_index);
        assert_eq!(loops_backed_by(&p.npk).len(), 2);
        for dir in [&a, &b] {
            assert_eq!(
                stdfs::read_to_string(dir.join("etc/hello.txt")).unwrap(),
                "hello from twice\n"
            );
        }
    });
    if let Ok(mb) = mb {
        umount(&pb.target, &mb).unwrap();
    }
    umount(&pa.target, &ma).unwrap();
    result.unwrap();
    assert_released(&p.npk);
}

#[test]
fn verity_needs_device_mapper() {
    if !root("verity_needs_device_mapper") {
        return;
    }
    let p = Package::new("verity");
    let target = p.dir("mnt");
    let paths = Paths::new(&p, &target);
    let spec = paths.spec(&p, Some(Verity::from(&p.header.verity)));
    if Path::new("/dev/mapper/control").exists() {
        // A host with device-mapper: the verity mount must work.
        let mounted = mount(&spec).unwrap();
        assert!(mounted.dm.is_some());
        let text = stdfs::read_to_string(target.join("etc/hello.txt"));
        umount(&paths.target, &mounted).unwrap();
        assert_eq!(text.unwrap(), "hello from verity\n");
    } else {
        assert_eq!(mount(&spec), Err(MountError::DeviceMapperMissing));
        let text = format!("{}", MountError::DeviceMapperMissing);
        assert!(text.contains("device-mapper"), "{text}");
    }
    assert_released(&p.npk);
    assert!(stdfs::read_dir(target).unwrap().next().is_none());
}

#[test]
fn a_corrupt_image_fails_to_mount_and_leaks_nothing() {
    if !root("a_corrupt_image_fails_to_mount_and_leaks_nothing") {
        return;
    }
    let p = Package::new("corrupt");
    let mut bytes = stdfs::read(&p.npk).unwrap();
    let sb = usize::try_from(p.header.image_offset).unwrap();
    assert_eq!(&bytes[sb..sb + 4], b"hsqs");
    for b in &mut bytes[sb..sb + 96] {
        *b ^= 0xa5;
    }
    stdfs::write(&p.npk, &bytes).unwrap();
    let target = p.dir("mnt");
    let paths = Paths::new(&p, &target);
    let err = mount(&paths.spec(&p, None)).unwrap_err();
    assert!(matches!(err, MountError::Mount(_)), "{err:?}");
    assert_released(&p.npk);
}

#[test]
fn the_descriptor_is_mounted_not_the_path() {
    if !root("the_descriptor_is_mounted_not_the_path") {
        return;
    }
    // The store verifies a descriptor and mounts that one: a file put at the path after
    // the check (here: another package) must not be what gets mounted.
    let p = Package::new("checked");
    let other = Package::new("swapped");
    let target = p.dir("mnt");
    let paths = Paths::new(&p, &target);
    stdfs::rename(&other.npk, &p.npk).unwrap();
    let mounted = mount(&paths.spec(&p, None)).unwrap();
    let text = stdfs::read_to_string(target.join("etc/hello.txt"));
    umount(&c(&target), &mounted).unwrap();
    assert_eq!(text.unwrap(), "hello from checked\n");
}

#[test]
fn a_bad_target_releases_the_loop_device() {
    if !root("a_bad_target_releases_the_loop_device") {
        return;
    }
    let p = Package::new("notarget");
    let paths = Paths::new(&p, &p.dir.path().join("absent"));
    assert_eq!(
        mount(&paths.spec(&p, None)),
        Err(MountError::Mount(Errno::NOENT))
    );
    assert_released(&p.npk);
}

#[test]
fn table_params_follow_the_format() {
    let root = [0xabu8; 32];
    let salt = [0x01u8, 0x02, 0xff];
    let v = Verity {
        data_blocks: 74,
        hash_size: 4096,
        root_hash: &root,
        salt: &salt,
    };
    let mut out = CPath::<1024>::new();
    table_params(&mut out, 7, 3, &v).unwrap();
    let want = format!(
        "1 7:3 7:3 4096 4096 74 74 sha256 {} 0102ff",
        "ab".repeat(32)
    );
    assert_eq!(out.as_bytes(), want.as_bytes());

    let v = Verity { salt: &[], ..v };
    let mut out = CPath::<1024>::new();
    table_params(&mut out, 7, 300, &v).unwrap();
    assert!(out.as_bytes().ends_with(b" -"));
    assert!(out.as_bytes().starts_with(b"1 7:300 7:300 "));

    // Too small a buffer is an error, not a truncated table.
    let mut small = CPath::<64>::new();
    assert!(table_params(&mut small, 7, 3, &v).is_err());
}

#[test]
fn geometry_and_names_are_checked_before_any_setup() {
    let root = [0u8; 32];
    let v = Verity {
        data_blocks: 2,
        hash_size: 4096,
        root_hash: &root,
        salt: &[1, 2, 3],
    };
    let null = fs::open(c"/dev/null", OFlags::RDONLY, Mode::empty()).unwrap();
    let spec = MountSpec {
        npk: null.as_fd(),
        file_name: b"/dev/null",
        image_offset: 4096,
        image_size: 8192,
        verity: Some(v),
        target: c"/nonexistent",
        dm_name: "x",
        node_dir: c"/tmp",
    };
    assert_eq!(device_size(&spec), Ok(8192 + 4096));
    assert_eq!(
        device_size(&MountSpec {
            verity: None,
            ..spec
        }),
        Ok(8192)
    );
    let wrong_blocks = Verity {
        data_blocks: 3,
        ..v
    };
    for bad in [
        MountSpec {
            image_size: 0,
            ..spec
        },
        MountSpec {
            verity: Some(wrong_blocks),
            ..spec
        },
        MountSpec {
            verity: Some(Verity {
                hash_size: 100,
                ..v
            }),
            ..spec
        },
        MountSpec {
            verity: Some(Verity {
                salt: &[0; 257],
                ..v
            }),
            ..spec
        },
    ] {
        assert_eq!(mount(&bad), Err(MountError::BadGeometry));
    }
    for bad in ["", "a/b", "a\0b"] {
        assert_eq!(
            mount(&MountSpec {
                dm_name: bad,
                ..spec
            }),
            Err(MountError::BadDmName)
        );
    }
    let long = "n".repeat(300);
    assert_eq!(dm_name(&long).map(<[u8]>::len), Ok(127));
}

#[test]
fn the_legacy_bind_sets_the_same_status() {
    if !root("the_legacy_bind_sets_the_same_status") {
        return;
    }
    // This kernel has LOOP_CONFIGURE, so mount() never takes the fallback: drive it here.
    let p = Package::new("legacy");
    let npk = fs::open(c(&p.npk).as_c_str(), OFlags::RDONLY, Mode::empty()).unwrap();
    let size_limit = p.header.image_size;
    let attach = loopdev::Attach {
        offset: p.header.image_offset,
        size_limit,
        file_name: p.npk.as_os_str().as_bytes(),
    };
    let control = fs::open(LOOP_CONTROL, OFlags::RDWR, Mode::empty()).unwrap();
    let (index, dev) = (0..LOOP_ATTEMPTS)
        .find_map(|_| {
            let index = loopdev::get_free(control.as_fd()).unwrap();
            // ENXIO: another test's device still being detached (see attach_loop).
            let dev = match fs::open(
                format!("/dev/loop{index}").as_str(),
                OFlags::RDONLY,
                Mode::empty(),
            ) {
                Err(Errno::NXIO) => return None,
                dev => dev.unwrap(),
            };
            match bind_loop_legacy(dev.as_fd(), npk.as_fd(), &attach) {
                Ok(()) => Some((index, dev)),
                Err(Errno::BUSY) => None,
                Err(e) => panic!("legacy bind: {e:?}"),
            }
        })
        .expect("a free loop device");
    let sys = |f: &str| {
        stdfs::read_to_string(format!("/sys/block/loop{index}/{f}"))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(sys("loop/offset"), p.header.image_offset.to_string());
    assert_eq!(sys("loop/sizelimit"), size_limit.to_string());
    assert_eq!(sys("loop/autoclear"), "1");
    assert_eq!(sys("ro"), "1");
    assert_eq!(sys("size"), (size_limit / 512).to_string());
    let target = p.dir("mnt");
    let path = CString::new(format!("/dev/loop{index}")).unwrap();
    mount_squashfs(&path, &c(&target)).unwrap();
    drop(dev);
    let text = stdfs::read_to_string(target.join("etc/hello.txt"));
    rustix::mount::unmount(&target, UnmountFlags::empty()).unwrap();
    assert_eq!(text.unwrap(), "hello from legacy\n");
    assert_released(&p.npk);
}
