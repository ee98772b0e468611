//! The real device build of `nanostar` (no_std, static, our own `_start`), built for each
//! device target and checked for what a device needs: static, no interpreter, no dynamic
//! section, no libc symbols; the x86_64 build also runs here.

mod common;

use std::process::{Command, Output};

use common::{TARGETS, device_binaries, x86_64_binary};

/// Regression ceiling for the stripped binary. docs/design.md's budget is 128 KiB, which the
/// build does not meet (about 300 KiB on ARMv7 and x86_64, 280 KiB on aarch64, with
/// containers, PID-1 mode and the client; see the issue notes for where the bytes go);
/// this only catches growth.
const SIZE_CEILING: usize = 320 * 1024;

fn run(args: &[&str]) -> Output {
    Command::new(x86_64_binary())
        .args(args)
        .output()
        .expect("run nanostar")
}

#[test]
fn device_builds_are_static_without_libc() {
    for (target, bin) in TARGETS.iter().zip(device_binaries()) {
        let bytes = std::fs::read(bin).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{target}");
        let headers = Command::new("readelf")
            .args(["-l", "-d", "-S", "-s"])
            .arg(bin)
            .output()
            .expect("readelf (binutils)");
        let text = String::from_utf8_lossy(&headers.stdout);
        assert!(
            text.contains("There is no dynamic section"),
            "{target}: has a dynamic section"
        );
        assert!(
            !text.contains("INTERP"),
            "{target}: asks for an interpreter"
        );
        assert!(!text.contains(".symtab"), "{target}: not stripped");
        // docs/design.md's budget is 128 KiB on ARMv7 with all features; the console server and
        // client put the binary above it (see tools/device-sizes.sh and the issue notes).
        // This ceiling stops further growth while the size work is open.
        assert!(
            bytes.len() <= SIZE_CEILING,
            "{target}: {} bytes, over the {SIZE_CEILING}-byte ceiling",
            bytes.len()
        );
        eprintln!("{target}: {} bytes", bytes.len());
    }
}

/// The symbols of the same build, not stripped: ours are there (so the check sees
/// symbols at all), libc's and an allocator's are not.
#[test]
fn the_build_links_no_libc_and_no_allocator() {
    let bin = common::unstripped_x86_64_binary();
    let out = Command::new("readelf")
        .args(["-s", "-W"])
        .arg(bin)
        .output()
        .expect("readelf (binutils)");
    let symbols: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_string))
        .collect();
    assert!(
        symbols.contains("nanostar_main"),
        "no symbols read: {symbols:?}"
    );
    assert!(symbols.contains("_start"));
    for libc in [
        "__libc_start_main",
        "__libc_start_main_stage2",
        "__init_libc",
        "malloc",
        "free",
        "printf",
        "__rust_alloc",
        "__rdl_alloc",
    ] {
        assert!(!symbols.contains(libc), "links {libc}");
    }
    assert!(
        !symbols
            .iter()
            .any(|s| s.contains("GLIBC") || s.starts_with("__libc_")),
        "a libc symbol"
    );
}

#[test]
fn runs_and_reports_its_version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("nanostar {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown command \"no-such-command\"") && err.contains("nanostar help"),
        "{err}"
    );
}

#[test]
fn check_config_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.pub");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let good = format!(
        "run_dir = \"/run/nanostar\"\ndata_dir = \"/data\"\nsocket = \"/run/nanostar/console\"\n\n[repository.main]\ndir = \"/data/repo\"\nkeys = [\"{}\"]\n\n[console]\nuid.0 = \"full\"\n",
        key.display()
    );
    let path = dir.path().join("nanostar.conf");
    std::fs::write(&path, &good).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("repository main: /data/repo (1 keys, signed packages only)")
    );

    std::fs::write(&path, good.replace("[console]", "[consol]")).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 9: unknown section"), "{err}");

    std::fs::write(&path, good.replace("release.pub", "missing.pub")).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("missing.pub: no such file or directory"),
        "{err}"
    );

    std::fs::write(&key, b"not a key").unwrap();
    std::fs::write(&path, &good).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a public key"));

    std::fs::write(&path, vec![b'#'; 20_000]).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("file too large"));
}

#[test]
fn check_config_verifies_every_package_without_touching_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = nanostar_tools::keys::generate(&dir.path().join("release")).unwrap();
    let pair = nanostar_tools::keys::read_secret(&secret).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("file"), b"content").unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let manifest =
        |name: &str| format!("name = \"{name}\"\nversion = \"1.0.0\"\nuid = 1\ngid = 1\n");
    let good = common::pack_toml(&manifest("signed"), &root, Some(&pair), None).bytes;
    std::fs::write(repo.join("signed-1.0.0.npk"), &good).unwrap();
    std::fs::write(repo.join("cut.npk"), &good[..good.len() / 2]).unwrap();
    let unsigned = common::pack_toml(&manifest("plain"), &root, None, None).bytes;
    std::fs::write(repo.join("plain-1.0.0.npk"), &unsigned).unwrap();
    std::fs::write(repo.join(".tmp-interrupted"), b"partial").unwrap();
    let config = dir.path().join("nanostar.conf");
    let text = format!(
        "run_dir = \"/run/n\"\ndata_dir = \"/d\"\nsocket = \"/run/n/s\"\n[repository.main]\ndir = \"{}\"\nkeys = [\"{}\"]\n",
        repo.display(),
        public.display()
    );
    std::fs::write(&config, text).unwrap();
    let out = run(&["check-config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("signed 1.0.0 (signed-1.0.0.npk)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cut.npk: skipped: the file length differs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plain-1.0.0.npk: skipped: not signed"),
        "{stdout}"
    );
    assert!(stdout.contains("1 packages verified"), "{stdout}");
    assert!(
        repo.join(".tmp-interrupted").exists(),
        "check-config must not change the repository"
    );
}
