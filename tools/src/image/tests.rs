use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;

use super::*;

fn build(root: &Path, mount_points: &[&str]) -> Result<Vec<u8>, ImageError> {
    let spec = ImageSpec {
        root,
        uid: 1000,
        gid: 1001,
        mount_points,
    };
    build_image(&spec, &mut |_| {})
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A tree with nested and empty directories, empty and multi-block files, a symlink and
/// unusual modes and names.
fn sample_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    fs::create_dir_all(r.join("a/b/c")).unwrap();
    fs::create_dir(r.join("empty")).unwrap();
    fs::write(r.join("a/empty.txt"), b"").unwrap();
    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(r.join("a/b/c/big.bin"), &big).unwrap();
    fs::write(r.join("a/suid"), b"#!/bin/true\n").unwrap();
    fs::set_permissions(r.join("a/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(r.join("secret"), b"s").unwrap();
    fs::set_permissions(r.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(r.join("name with spaces & ünïcode"), b"x").unwrap();
    symlink("a/b/c/big.bin", r.join("link")).unwrap();
    dir
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    for (name, path, meta) in sorted_entries(expected).unwrap() {
        let other = actual.join(&name);
        let other_meta =
            fs::symlink_metadata(&other).unwrap_or_else(|e| panic!("{}: {e}", other.display()));
        assert_eq!(meta.file_type(), other_meta.file_type(), "{name}");
        if meta.is_dir() {
            assert_eq!(mode(&path), mode(&other), "{name}");
            assert_same_tree(&path, &other);
        } else if meta.is_file() {
            assert_eq!(
                fs::read(&path).unwrap(),
                fs::read(&other).unwrap(),
                "{name}"
            );
            assert_eq!(mode(&path), mode(&other), "{name}");
        } else {
            assert_eq!(
                fs::read_link(&path).unwrap(),
                fs::read_link(&other).unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn round_trip() {
    let tree = sample_tree();
    let image = build(tree.path(), &[]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stats = unpack_image(&image, &out.path().join("x")).unwrap();
    assert_same_tree(tree.path(), &out.path().join("x"));
    assert_eq!((stats.files, stats.symlinks), (5, 1));
    assert_eq!(stats.bytes, 12 + 1 + 1 + (1 << 20));
}

#[test]
fn reproducible_whatever_the_times_and_creation_order() {
    let a = sample_tree();
    let first = build(a.path(), &["/data"]).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    for p in ["a/empty.txt", "a/b/c/big.bin", "secret"] {
        File::options()
            .write(true)
            .open(a.path().join(p))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    assert!(
        first == build(a.path(), &["/data"]).unwrap(),
        "times changed the image"
    );
    // The same content created in another order.
    let b = tempfile::tempdir().unwrap();
    symlink("a/b/c/big.bin", b.path().join("link")).unwrap();
    fs::write(b.path().join("name with spaces & ünïcode"), b"x").unwrap();
    fs::write(b.path().join("secret"), b"s").unwrap();
    fs::set_permissions(b.path().join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(b.path().join("empty")).unwrap();
    fs::create_dir_all(b.path().join("a/b/c")).unwrap();
    fs::copy(
        a.path().join("a/b/c/big.bin"),
        b.path().join("a/b/c/big.bin"),
    )
    .unwrap();
    fs::write(b.path().join("a/suid"), b"#!/bin/true\n").unwrap();
    fs::set_permissions(b.path().join("a/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(b.path().join("a/empty.txt"), b"").unwrap();
    for d in ["", "a", "a/b", "a/b/c", "empty"] {
        let m = mode(&a.path().join(d));
        fs::set_permissions(b.path().join(d), fs::Permissions::from_mode(m)).unwrap();
    }
    assert!(
        first == build(b.path(), &["/data"]).unwrap(),
        "creation order changed the image"
    );
}

#[test]
fn unsquashfs_reads_it_with_our_owners() {
    let tree = sample_tree();
    let image = build(tree.path(), &["/data"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.img");
    fs::write(&file, &image).unwrap();
    let list = Command::new("unsquashfs")
        .args(["-lln", file.to_str().unwrap()])
        .output()
        .expect("unsquashfs missing: apt-get install squashfs-tools");
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "/a/b/c/big.bin",
        "/a/empty.txt",
        "/empty",
        "/data",
        "/link -> a/b/c/big.bin",
        "/name with spaces",
    ] {
        assert!(list.contains(path), "{path} missing:\n{list}");
    }
    assert!(
        list.lines()
            .filter(|l| l.contains("squashfs-root"))
            .all(|l| l.contains(" 1000/1001 ")),
        "{list}"
    );
    assert!(list.contains("-rwsr-xr-x"), "setuid bit lost:\n{list}");
    let out = dir.path().join("out");
    let x = Command::new("unsquashfs")
        .args([
            "-no-xattrs",
            "-d",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_same_tree(tree.path(), &out);
}

#[test]
fn mount_points_are_created() {
    let tree = sample_tree();
    let image = build(tree.path(), &["/x/y/z", "/x/w", "/a/b", "/empty"]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("u");
    unpack_image(&image, &dest).unwrap();
    assert!(
        dest.join("x/y/z").is_dir()
            && dest.join("x/w").is_dir()
            && dest.join("a/b/c/big.bin").is_file()
    );
    assert_eq!(mode(&dest.join("x/y/z")), 0o755);
    match build(tree.path(), &["/secret"]) {
        Err(ImageError::MountPointNotDir(p)) => assert!(p.ends_with("secret")),
        other => panic!("{:?}", other.map(|i| i.len())),
    }
    // A symlink in the way is not followed.
    assert!(matches!(
        build(tree.path(), &["/link/x"]),
        Err(ImageError::MountPointNotDir(_))
    ));
}

#[test]
fn special_files_and_bad_roots_are_refused() {
    let tree = sample_tree();
    let fifo = tree.path().join("a/pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = build(tree.path(), &[]).unwrap_err();
    assert!(
        matches!(&e, ImageError::Unsupported { path, kind: "FIFO" } if path == &fifo),
        "{e}"
    );
    assert!(e.to_string().contains("remove it from the root"));
    assert!(matches!(
        build(&tree.path().join("secret"), &[]),
        Err(ImageError::RootNotDir(_))
    ));
    assert!(matches!(
        build(&tree.path().join("missing"), &[]),
        Err(ImageError::RootNotDir(_))
    ));
}

#[test]
fn padding_and_progress() {
    let tree = sample_tree();
    let mut last = 0;
    let spec = ImageSpec {
        root: tree.path(),
        uid: 1,
        gid: 1,
        mount_points: &[],
    };
    let image = build_image(&spec, &mut |done| {
        assert!(done >= last);
        last = done;
    })
    .unwrap();
    assert_eq!(image.len() % 4096, 0);
    assert_eq!(last, total_file_bytes(tree.path()).unwrap());
}

#[test]
fn unpack_refuses_garbage_and_non_empty_output() {
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack_image(&[0u8; 8192], &out.path().join("g")),
        Err(ImageError::Squashfs(_))
    ));
    fs::write(out.path().join("file"), b"x").unwrap();
    let tree = sample_tree();
    let image = build(tree.path(), &[]).unwrap();
    assert!(matches!(
        unpack_image(&image, out.path()),
        Err(ImageError::OutputNotEmpty(_))
    ));
    assert_eq!(safe_relative(Path::new("/a/../b")), None);
    assert_eq!(safe_relative(Path::new("/a/b")), Some(PathBuf::from("a/b")));
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn the_kernel_mounts_it() {
    if !is_root() {
        eprintln!("note: not root, loop mount not tried");
        return;
    }
    let tree = sample_tree();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.img");
    fs::write(&file, build(tree.path(), &[]).unwrap()).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&file)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let result = std::panic::catch_unwind(|| assert_same_tree(tree.path(), &mnt));
    let u = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    result.unwrap();
}
