use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::vec::Vec as StdVec;

use nanostar_protocol::npk::{Arch, HeaderError};
use nanostar_protocol::version::Version;
use nanostar_tools::manifest::SourceManifest;
use nanostar_tools::package::{PackInput, pack};

use super::*;

fn package(name: &str, key: Option<&ed25519_compact::KeyPair>) -> StdVec<u8> {
    package_holding(name, key, &[7u8; 50_000])
}

/// A package whose image holds `data` in a file.
fn package_holding(name: &str, key: Option<&ed25519_compact::KeyPair>, data: &[u8]) -> StdVec<u8> {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("data"), data).unwrap();
    let source = SourceManifest::parse(&format!(
        "name = \"{name}\"\nversion = \"2.0.0\"\nuid = 1\ngid = 1\n"
    ))
    .unwrap();
    pack(
        &PackInput {
            manifest: &source,
            root: root.path(),
            key,
            arch: Some(Arch::Any),
        },
        &mut |_| {},
    )
    .unwrap()
    .bytes
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn files(dir: &Path) -> StdVec<std::string::String> {
    let mut names: StdVec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Installs `bytes` in chunks of `chunk` bytes.
fn install(
    dir: &Path,
    bytes: &[u8],
    keys: &[PublicKey],
    table: &mut Packages,
) -> Result<Package, InstallError> {
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    let mut i = Install::begin(&c(dir), 1, bytes.len() as u64, 1 << 30, 7)?;
    for part in bytes.chunks(4000) {
        i.write(part)?;
    }
    i.finish(keys, table, &mut scratch, None).cloned()
}

#[test]
fn install_lands_under_its_name_and_in_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Packages::new();
    let bytes = package("app", None);
    let p = install(dir.path(), &bytes, &[], &mut table).unwrap();
    assert_eq!(
        (p.name.as_str(), p.version, p.repository, p.file.as_str()),
        ("app", Version::new(2, 0, 0), 1, "app-2.0.0.npk")
    );
    assert_eq!(files(dir.path()), ["app-2.0.0.npk"]);
    assert_eq!(
        std::fs::read(dir.path().join("app-2.0.0.npk")).unwrap(),
        bytes
    );
    assert_eq!(table.len(), 1);
    // The same name and version again is refused, and leaves nothing behind.
    assert_eq!(
        install(dir.path(), &bytes, &[], &mut table).unwrap_err(),
        InstallError::Rejected(Rejection::Duplicate)
    );
    assert_eq!(files(dir.path()), ["app-2.0.0.npk"]);
}

#[test]
fn sizes_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let d = c(dir.path());
    assert_eq!(
        Install::begin(&d, 0, 2000, 1000, 1).err(),
        Some(InstallError::TooLarge)
    );
    let mut i = Install::begin(&d, 0, 10, 1000, 2).unwrap();
    i.write(&[0; 8]).unwrap();
    assert_eq!(i.write(&[0; 3]), Err(InstallError::Overrun));
    assert_eq!(files(dir.path()), [".tmp-2"]);
    drop(i);
    assert!(
        files(dir.path()).is_empty(),
        "a dropped install leaves nothing"
    );
    let mut table = Packages::new();
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    let mut short = Install::begin(&d, 0, 10, 1000, 3).unwrap();
    short.write(&[0; 4]).unwrap();
    assert_eq!(
        short.finish(&[], &mut table, &mut scratch, None).err(),
        Some(InstallError::Incomplete)
    );
    assert!(files(dir.path()).is_empty());
}

#[test]
fn bad_packages_are_refused_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let (secret, _) = nanostar_tools::keys::generate(&keys_dir.path().join("k")).unwrap();
    let pair = nanostar_tools::keys::read_secret(&secret).unwrap();
    let trusted = [PublicKey(*pair.pk)];
    let mut table = Packages::new();
    let unsigned = package("plain", None);
    assert_eq!(
        install(dir.path(), &unsigned, &trusted, &mut table).unwrap_err(),
        InstallError::Rejected(Rejection::Header(HeaderError::Unsigned))
    );
    let mut tampered = package("signed", Some(&pair));
    tampered[200] ^= 1;
    assert_eq!(
        install(dir.path(), &tampered, &trusted, &mut table).unwrap_err(),
        InstallError::Rejected(Rejection::Header(HeaderError::Signature))
    );
    assert!(files(dir.path()).is_empty());
    let good = package("signed", Some(&pair));
    install(dir.path(), &good, &trusted, &mut table).unwrap();
    assert_eq!(files(dir.path()), ["signed-2.0.0.npk"]);
}

#[test]
fn a_missing_repository_is_an_io_error() {
    assert_eq!(
        Install::begin(c"/nonexistent/repo", 0, 1, 10, 1).err(),
        Some(InstallError::Io(Errno::NOENT))
    );
}

#[test]
fn a_passed_descriptor_is_copied_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = package("passed", None);
    let source_path = dir.path().join("source.npk");
    std::fs::write(&source_path, &bytes).unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let source = std::fs::File::open(&source_path).unwrap();
    let mut i = Install::begin(&c(&repo), 0, bytes.len() as u64, 1 << 30, 1).unwrap();
    let mut steps = 0;
    while i.written() < i.expected() {
        assert!(i.copy_from(&source, 1000).unwrap() > 0);
        steps += 1;
    }
    assert!(steps > 1, "copied in bounded steps");
    assert_eq!(i.copy_from(&source, 1000), Ok(0));
    let mut table = Packages::new();
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    assert_eq!(
        i.finish(&[], &mut table, &mut scratch, None)
            .unwrap()
            .file
            .as_str(),
        "passed-2.0.0.npk"
    );
    assert_eq!(std::fs::read(repo.join("passed-2.0.0.npk")).unwrap(), bytes);
    // A source shorter than announced is an incomplete install.
    let mut short = Install::begin(&c(&repo), 0, bytes.len() as u64 + 10, 1 << 30, 2).unwrap();
    while short.copy_from(&source, 1 << 20).is_ok_and(|n| n > 0) {}
    assert_eq!(
        short.copy_from(&source, 1 << 20),
        Err(InstallError::Incomplete)
    );
}

#[test]
fn a_complete_install_is_synced_a_slice_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    // Bytes no compressor shrinks (xorshift): the package is two and a half slices.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: StdVec<u8> = (0..INSTALL_PUMP_SLICE * 5 / 2)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let bytes = package_holding("big", None, &noise);
    let slices = bytes.len().div_ceil(INSTALL_PUMP_SLICE);
    assert_eq!(slices, 3, "{}", bytes.len());
    let size = bytes.len();
    let mut i = Install::begin(&c(dir.path()), 0, size as u64, 1 << 30, 1).unwrap();
    for part in bytes[..size - 1].chunks(8192) {
        i.write(part).unwrap();
    }
    assert_eq!(i.sync_slice(), Err(InstallError::Incomplete), "not all in");
    i.write(&bytes[size - 1..]).unwrap();
    assert!(!i.synced());
    assert_eq!(i.sync_slice(), Ok(false));
    assert_eq!(i.sync_slice(), Ok(false));
    assert_eq!(i.sync_slice(), Ok(true), "the last part of a slice");
    assert!(i.synced());
    assert_eq!(i.sync_slice(), Ok(true), "nothing more to wait for");
    let mut table = Packages::new();
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    let p = i.finish(&[], &mut table, &mut scratch, None).unwrap();
    assert_eq!(p.file.as_str(), "big-2.0.0.npk");
    assert_eq!(
        std::fs::read(dir.path().join("big-2.0.0.npk")).unwrap(),
        bytes
    );
}

/// Installs `bytes` announced as `name` 2.0.0, replacing or not.
fn install_announced(
    dir: &Path,
    bytes: &[u8],
    table: &mut Packages,
    name: &str,
    replace: bool,
) -> Result<Package, InstallError> {
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    let mut i = Install::begin(&c(dir), 1, bytes.len() as u64, 1 << 30, 9)?;
    i.write(bytes)?;
    let announced = Announced {
        name,
        version: Version::new(2, 0, 0),
        replace,
    };
    i.finish(&[], table, &mut scratch, Some(announced)).cloned()
}

#[test]
fn a_replacing_install_takes_the_old_files_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Packages::new();
    let old = package("app", None);
    install(dir.path(), &old, &[], &mut table).unwrap();
    // Another build of the same name and version (different content).
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("other"), b"new build").unwrap();
    let source =
        SourceManifest::parse("name = \"app\"\nversion = \"2.0.0\"\nuid = 1\ngid = 1\n").unwrap();
    let input = PackInput {
        manifest: &source,
        root: root.path(),
        key: None,
        arch: Some(Arch::Any),
    };
    let new = pack(&input, &mut |_| {}).unwrap().bytes;
    assert_eq!(
        install_announced(dir.path(), &new, &mut table, "app", false).unwrap_err(),
        InstallError::Rejected(Rejection::Duplicate)
    );
    let p = install_announced(dir.path(), &new, &mut table, "app", true).unwrap();
    assert_eq!(
        (p.file.as_str(), p.size),
        ("app-2.0.0.npk", new.len() as u64)
    );
    assert_eq!(files(dir.path()), ["app-2.0.0.npk"]);
    assert_eq!(
        std::fs::read(dir.path().join("app-2.0.0.npk")).unwrap(),
        new
    );
    assert_eq!(table.len(), 1);
    // A package that is not the announced one is refused and leaves the old file.
    assert_eq!(
        install_announced(dir.path(), &old, &mut table, "other", true).unwrap_err(),
        InstallError::Rejected(Rejection::NotAsAnnounced)
    );
    assert_eq!(files(dir.path()), ["app-2.0.0.npk"]);
    assert_eq!(
        std::fs::read(dir.path().join("app-2.0.0.npk")).unwrap(),
        new
    );
}

#[test]
fn a_replacing_install_removes_a_hand_named_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Packages::new();
    let old = package("app", None);
    std::fs::write(dir.path().join("by-hand.npk"), &old).unwrap();
    table
        .insert(Package {
            name: heapless::String::try_from("app").unwrap(),
            version: Version::new(2, 0, 0),
            repository: 1,
            file: heapless::String::try_from("by-hand.npk").unwrap(),
            size: old.len() as u64,
        })
        .unwrap();
    let p = install_announced(dir.path(), &old, &mut table, "app", true).unwrap();
    assert_eq!(p.file.as_str(), "app-2.0.0.npk");
    assert_eq!(files(dir.path()), ["app-2.0.0.npk"]);
}

#[test]
fn an_install_without_the_filter_its_manifest_asks_for_is_refused() {
    use nanostar_protocol::npk::ContentError;
    use nanostar_tools::testing::{pack_toml, repack};
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("app"), b"#!/bin/sh\n").unwrap();
    let toml = "name = \"app\"\nversion = \"1.0.0\"\ninit = \"/app\"\nuid = 1\ngid = 1\n";
    let good = pack_toml(toml, root.path(), None, Some(Arch::X86_64)).bytes;
    let dir = tempfile::tempdir().unwrap();
    let mut table = Packages::new();
    let bare = repack(&good, |_| {}, &[], 0, None);
    assert_eq!(
        install(dir.path(), &bare, &[], &mut table).unwrap_err(),
        InstallError::Rejected(Rejection::Content(ContentError::SeccompMissing))
    );
    assert!(files(dir.path()).is_empty(), "nothing left behind");
    install(dir.path(), &good, &[], &mut table).unwrap();
}
