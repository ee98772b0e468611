//! QEMU boot tests of the boards: each board's kernel is built (or taken from the cache),
//! booted with `board/selftest/init.c` as PID 1, and `nanostar-board` must report every
//! ending correctly: pass, the guest's failure, a kernel panic, a timeout, no verdict, and
//! an init for the wrong architecture.
//!
//! The first run builds two kernels (about 4 minutes each on 2 cores, one at a time) and
//! installs the Debian packages the build needs (as root); later runs take seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use nanostar_tools::board::Board;

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanostar-board"))
        .args(args)
        .output()
        .expect("run nanostar-board")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the self-test init for `board` with the board's cross compiler (installed by
/// the kernel build).
fn selftest_init(board: &Board, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board/selftest/init.c");
    let out = dir.join("init");
    let cc = format!("{}gcc", board.kernel.cross_compile);
    let status = Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
        ])
        .args(["-fno-pie", "-no-pie", "-Os", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {cc} ({e}): board/build-kernel.sh installs it (as root)")
        });
    assert!(status.success(), "{cc} failed on {}", source.display());
    out
}

/// Boots `board` and checks the runner's exit code; returns (stdout, stderr).
#[track_caller]
fn boot(board: &str, init: &Path, extra: &[&str], code: i32) -> (String, String) {
    let mut args = vec!["boot", board, "--init", init.to_str().unwrap()];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let out = runner(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "nanostar-board {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!(
        "{board} {extra:?}: exit {code} in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    (stdout, stderr)
}

fn boots(name: &str) {
    // The kernel first: it installs QEMU and the cross compiler if they are missing.
    let t = Instant::now();
    let kernel = runner(&["kernel", name]);
    assert!(
        kernel.status.success(),
        "kernel build for {name} failed:\n{}",
        text(&kernel.stderr)
    );
    let kernel_path = text(&kernel.stdout).trim().to_owned();
    eprintln!(
        "{name}: kernel {kernel_path} ({} bytes) ready in {:.1} s",
        std::fs::metadata(&kernel_path).unwrap().len(),
        t.elapsed().as_secs_f64()
    );

    let board = Board::load(name).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let init = selftest_init(&board, tmp.path());
    let note = tmp.path().join("selftest.txt");
    std::fs::write(&note, "hello from the host\n").unwrap();
    let hvc = tmp.path().join("hvc0.log");
    let file_arg = format!("{}:/etc/selftest.txt", note.display());
    let hvc_arg = format!("file:{}", hvc.display());

    // Pass: the init read the extra file, found /dev/vda and /dev/hvc0, saw the cgroup
    // controllers the kernel config asks for, and powered off.
    let (stdout, stderr) = boot(
        name,
        &init,
        &[
            "--file",
            &file_arg,
            "--hvc",
            &hvc_arg,
            "--expect",
            "selftest: /etc/selftest.txt says: hello from the host",
            "--expect",
            "selftest: /dev/vda opened",
            "--expect",
            "selftest: cgroup controllers: cpu memory pids",
        ],
        0,
    );
    assert!(stdout.contains("nanostar-verdict: pass"), "{stdout}");
    assert!(stdout.contains("reboot: Power down"), "{stdout}");
    assert!(stderr.contains(": pass ("), "{stderr}");
    let hvc_text = std::fs::read_to_string(&hvc).unwrap();
    assert!(
        hvc_text.contains("selftest: hello on hvc0"),
        "virtio console got {hvc_text:?}"
    );

    // The same boot with a text that never appears.
    let (_, stderr) = boot(
        name,
        &init,
        &["--file", &file_arg, "--expect", "no such text"],
        7,
    );
    assert!(stderr.contains("no such text"), "{stderr}");

    // The guest's own failure: a missing file, and an explicit fail.
    let (_, stderr) = boot(name, &init, &[], 3);
    assert!(stderr.contains("cannot open /etc/selftest.txt"), "{stderr}");
    let (_, stderr) = boot(name, &init, &["--append", "-- fail"], 3);
    assert!(stderr.contains("selftest was asked to fail"), "{stderr}");

    // init exits: the kernel panics and QEMU ends (panic=-1, -no-reboot).
    let (_, stderr) = boot(name, &init, &["--append", "-- exit"], 4);
    assert!(stderr.contains("Attempted to kill init"), "{stderr}");

    // Power-off without a verdict.
    let (_, stderr) = boot(name, &init, &["--append", "-- silent"], 6);
    assert!(stderr.contains("without a verdict"), "{stderr}");

    // A guest that hangs is killed at the timeout.
    let (stdout, stderr) = boot(name, &init, &["--append", "-- hang", "--timeout", "10"], 5);
    assert!(stdout.contains("selftest: hanging"), "{stdout}");
    assert!(stderr.contains("timed out"), "{stderr}");

    // An init for the host's architecture is refused before booting.
    let out = runner(&["boot", name, "--init", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("build it for that architecture"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn qemu_armv7_boots() {
    boots("qemu-armv7");
}

#[test]
fn qemu_aarch64_boots() {
    boots("qemu-aarch64");
}
