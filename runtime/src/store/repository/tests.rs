use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::vec::Vec as StdVec;

use ed25519_compact::KeyPair;
use nanostar_protocol::npk::Arch;
use nanostar_tools::manifest::SourceManifest;
use nanostar_tools::package::{PackInput, pack};

use super::*;

fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let (secret, _) = nanostar_tools::keys::generate(&dir.join(name)).unwrap();
    nanostar_tools::keys::read_secret(&secret).unwrap()
}

fn package(name: &str, version: &str, key: Option<&KeyPair>) -> StdVec<u8> {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("data.txt"), format!("{name} {version}")).unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"{version}\"\ninit = \"/bin/app\"\nuid = 1000\ngid = 1000\n"
    );
    let source = SourceManifest::parse(&toml).unwrap();
    let input = PackInput {
        manifest: &source,
        root: root.path(),
        key,
        arch: Some(Arch::X86_64),
    };
    pack(&input, &mut |_| {}).unwrap().bytes
}

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        Repo {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(file), bytes).unwrap();
    }

    /// Scans with `keys`; returns the table and the report as text lines.
    fn scan(&self, keys: &[PublicKey]) -> (Packages, StdVec<std::string::String>) {
        let mut table = Packages::new();
        let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
        let mut events = StdVec::new();
        let dir = CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        scan(
            3,
            &dir,
            keys,
            Leftovers::Remove,
            &mut table,
            &mut scratch,
            &mut |e| events.push(format!("{e:?}")),
        )
        .unwrap();
        events.sort();
        (table, events)
    }
}

#[test]
fn signed_packages_are_verified_and_listed() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (release, other) = (
        key_pair(keys_dir.path(), "release"),
        key_pair(keys_dir.path(), "other"),
    );
    let repo = Repo::new();
    repo.put(
        "hello-1.0.0.npk",
        &package("hello", "1.0.0", Some(&release)),
    );
    repo.put(
        "hello-1.1.0.npk",
        &package("hello", "1.1.0", Some(&release)),
    );
    repo.put(
        "stranger-1.0.0.npk",
        &package("stranger", "1.0.0", Some(&other)),
    );
    repo.put("unsigned-1.0.0.npk", &package("unsigned", "1.0.0", None));
    repo.put("README.txt", b"not a package");
    let trusted = [PublicKey(*release.pk)];
    let (table, events) = repo.scan(&trusted);
    assert_eq!(table.len(), 2, "{events:#?}");
    let hello = table.find("hello", &Version::new(1, 1, 0)).unwrap();
    assert_eq!(
        (hello.repository, hello.file.as_str()),
        (3, "hello-1.1.0.npk")
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("stranger-1.0.0.npk") && e.contains("UnknownKey")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("unsigned-1.0.0.npk") && e.contains("Unsigned")),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.contains("README")));
    // Key rotation: a second trusted key accepts the stranger too.
    let (table, _) = repo.scan(&[PublicKey(*other.pk), PublicKey(*release.pk)]);
    assert_eq!(table.len(), 3);
}

#[test]
fn a_repository_without_keys_takes_unsigned_and_signed_packages() {
    let keys_dir = tempfile::tempdir().unwrap();
    let release = key_pair(keys_dir.path(), "release");
    let repo = Repo::new();
    repo.put("a.npk", &package("a", "0.1.0", None));
    repo.put("b.npk", &package("b", "0.1.0", Some(&release)));
    let (table, _) = repo.scan(&[]);
    assert_eq!(table.len(), 2);
}

#[test]
fn broken_files_are_reported_and_skipped() {
    let repo = Repo::new();
    let good = package("good", "1.0.0", None);
    repo.put("good.npk", &good);
    repo.put("truncated.npk", &good[..good.len() - 4096]);
    repo.put("tiny.npk", &good[..100]);
    repo.put("empty.npk", b"");
    let mut manifest_flip = good.clone();
    manifest_flip[HEADER_LEN + 3] ^= 1;
    repo.put("manifest.npk", &manifest_flip);
    repo.put("zip.npk", b"PK\x03\x04 definitely not an npk");
    repo.put("copy.npk", &good);
    repo.put(".tmp-install-17", &good[..5000]);
    let (table, events) = repo.scan(&[]);
    assert_eq!(table.len(), 1, "{events:#?}");
    let expect = [
        ("truncated.npk", "FileLength"),
        ("tiny.npk", "Truncated"),
        ("empty.npk", "Truncated"),
        ("manifest.npk", "ManifestDigest"),
        ("zip.npk", "Magic"),
    ];
    for (file, why) in expect {
        assert!(
            events.iter().any(|e| e.contains(file) && e.contains(why)),
            "{file}: {events:#?}"
        );
    }
    // Whichever of good.npk and copy.npk came second is the duplicate.
    assert!(
        events.iter().any(|e| e.contains("Duplicate")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("RemovedTemp(\".tmp-install-17\")")),
        "{events:#?}"
    );
    assert!(!repo.dir.path().join(".tmp-install-17").exists());
}

#[test]
fn a_full_table_is_an_error_not_a_panic() {
    let mut table = Packages::new();
    for i in 0..MAX_PACKAGES {
        let p = Package {
            name: String::try_from("p").unwrap(),
            version: Version::new(0, 0, i as u32),
            repository: 0,
            file: String::new(),
            size: 0,
        };
        table.insert(p).unwrap();
    }
    let one_more = Package {
        name: String::try_from("q").unwrap(),
        version: Version::new(1, 0, 0),
        repository: 0,
        file: String::new(),
        size: 0,
    };
    assert_eq!(table.insert(one_more).unwrap_err(), Rejection::TableFull);
    let duplicate = Package {
        name: String::try_from("p").unwrap(),
        version: Version::new(0, 0, 0),
        repository: 1,
        file: String::new(),
        size: 0,
    };
    assert_eq!(table.insert(duplicate).unwrap_err(), Rejection::Duplicate);
}

#[test]
fn a_missing_directory_is_an_error_for_the_caller() {
    let mut table = Packages::new();
    let mut scratch = std::boxed::Box::new([0u8; SCRATCH_LEN]);
    let r = scan(
        0,
        c"/nonexistent/repo",
        &[],
        Leftovers::Keep,
        &mut table,
        &mut scratch,
        &mut |_| {},
    );
    assert_eq!(r, Err(Errno::NOENT));
}

#[test]
fn packages_for_another_architecture_are_skipped() {
    let repo = Repo::new();
    let foreign = if Arch::native() == Some(Arch::Arm) {
        Arch::Aarch64
    } else {
        Arch::Arm
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("data.txt"), "far").unwrap();
    let source = SourceManifest::parse(
        "name = \"far\"\nversion = \"1.0.0\"\ninit = \"/bin/app\"\nuid = 1\ngid = 1\n",
    )
    .unwrap();
    let input = PackInput {
        manifest: &source,
        root: root.path(),
        key: None,
        arch: Some(foreign),
    };
    repo.put("far-1.0.0.npk", &pack(&input, &mut |_| {}).unwrap().bytes);
    repo.put("near-1.0.0.npk", &package("near", "1.0.0", None));
    let (table, events) = repo.scan(&[]);
    assert_eq!(table.len(), 1, "{events:#?}");
    assert!(table.find("near", &Version::new(1, 0, 0)).is_some());
    assert!(
        events
            .iter()
            .any(|e| e.contains("far-1.0.0.npk") && e.contains(&format!("WrongArch({foreign:?})"))),
        "{events:#?}"
    );
    let text = std::format!("{}", Rejection::WrongArch(foreign));
    assert!(text.starts_with(&format!(
        "built for {}, but this runtime runs on ",
        foreign.name()
    )));
}

#[test]
fn a_package_without_its_filter_or_with_bytes_in_its_padding_is_skipped() {
    use nanostar_tools::testing::{repack, seccomp_of};
    let keys_dir = tempfile::tempdir().unwrap();
    let release = key_pair(keys_dir.path(), "release");
    let good = package("app", "1.0.0", Some(&release));
    let program = seccomp_of(&good);
    assert!(
        !program.is_empty(),
        "no [seccomp] table packs the default profile"
    );
    let repo = Repo::new();
    // Each signed and with matching digests: only the new rules refuse them.
    repo.put(
        "good.npk",
        &repack(&good, |_| {}, &program, 0, Some(&release)),
    );
    repo.put(
        "nofilter.npk",
        &repack(&good, |_| {}, &[], 0, Some(&release)),
    );
    repo.put(
        "padded.npk",
        &repack(&good, |_| {}, &program, 1, Some(&release)),
    );
    let (table, events) = repo.scan(&[PublicKey(*release.pk)]);
    assert_eq!(table.len(), 1, "{events:#?}");
    let skipped = |file: &str, why: Rejection| {
        let line = format!("Skipped {{ file: \"{file}\", why: {why:?} }}");
        assert!(events.contains(&line), "{line} not in {events:#?}");
    };
    skipped(
        "nofilter.npk",
        Rejection::Content(ContentError::SeccompMissing),
    );
    skipped("padded.npk", Rejection::Content(ContentError::Padding));
    assert_eq!(
        std::format!("{}", Rejection::Content(ContentError::SeccompMissing)),
        "no seccomp program, but the manifest does not choose `unconfined` (repack it with a \
         current npk)"
    );
}

/// A FIFO, a symlink (to a good package), a directory and a socket named like packages
/// are skipped as `NotAFile` without being opened: the scan neither blocks on the FIFO
/// nor reads a file outside the repository. Run on another thread so that a scan that
/// blocks fails the test instead of hanging it.
#[test]
fn entries_that_are_not_regular_files_are_skipped_without_blocking() {
    let repo = Repo::new();
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("elsewhere.npk");
    std::fs::write(&elsewhere, package("linked", "1.0.0", None)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, repo.dir.path().join("linked-1.0.0.npk")).unwrap();
    let fifo = CString::new(
        repo.dir
            .path()
            .join("fifo-1.0.0.npk")
            .as_os_str()
            .as_bytes(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_c_str(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    std::fs::create_dir(repo.dir.path().join("dir-1.0.0.npk")).unwrap();
    let _socket =
        std::os::unix::net::UnixListener::bind(repo.dir.path().join("socket-1.0.0.npk")).unwrap();
    repo.put("good-1.0.0.npk", &package("good", "1.0.0", None));
    let (done, scanned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (table, events) = repo.scan(&[]);
        done.send((table.len(), events)).unwrap();
    });
    let (listed, events) = scanned
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the scan blocked on an entry that is not a regular file");
    assert_eq!(listed, 1, "{events:?}");
    for name in ["linked", "fifo", "dir", "socket"] {
        let skipped = format!("Skipped {{ file: \"{name}-1.0.0.npk\", why: NotAFile }}");
        assert!(events.contains(&skipped), "{name}: {events:?}");
    }
}

/// The same check when a start or inspect opens the file by path: a FIFO swapped in
/// after the scan is refused, not waited on.
#[test]
fn opening_a_package_by_path_refuses_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = CString::new(dir.path().join("x.npk").as_os_str().as_bytes()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_c_str(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (done, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        done.send(open_package(rustix::fs::CWD, fifo.as_c_str()).err())
            .unwrap()
    });
    let refused = opened
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("opening a FIFO blocked");
    assert_eq!(refused, Some(Rejection::NotAFile));
    let text = std::format!("{}", Rejection::NotAFile);
    assert!(text.contains("not a regular file"), "{text}");
}
