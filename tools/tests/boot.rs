//! QEMU boot tests of the runtime: each board (qemu-armv7, qemu-aarch64) boots with the
//! board build of `nanostar` as `/init` (PID 1), a data disk (ext4, made here with
//! `mkfs.ext4`) and its virtio console (`/dev/hvc0`) wired to a unix socket, over which the
//! test speaks the console protocol exactly as the `nanostar` client does. The containers
//! run the test probe (`tests/probe`) built for the board.
//!
//! Three boots per board share one data disk:
//!
//! 1. fresh disk: a package signed by an unknown key (and an unsigned one) is refused; a
//!    signed package is streamed in, mounted through loop + dm-verity, run, its log read,
//!    stopped; exit codes and stop signals; cgroup limits (pids.max, memory.max, an OOM
//!    kill); the packages for the next boots are installed; `shutdown` powers off.
//! 2. after the host flipped one byte of a package's squashfs image *on the data disk*:
//!    reading that file inside the container fails with EIO while another container keeps
//!    running; then an install is cut off by killing QEMU (a power cut) mid-transfer.
//! 3. after the power cut: the runtime comes up, removes the partial file, every earlier
//!    package is intact and runs; the host finds no leftover on the disk.
//!
//! Each boot is judged from the serial console: "reboot: Power down" and QEMU's own exit
//! mean a clean power-off. The figures (boot time to "nanostar: serving", each scenario,
//! the whole board) are printed at the end; `NANOSTAR_BOOT_ECHO=1` also streams the serial
//! consoles to stderr.
//!
//! The kernels come from `board/build-kernel.sh` (cached; the first build of both takes
//! about 10 minutes on 2 cores). The two boards run one after the other: two TCG guests
//! on a 2-core machine would make the timing-sensitive steps (stop timeouts) meaningless.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_compact::KeyPair;
use nanostar_protocol::console::{ContainerState, Request};
use nanostar_protocol::limits::MAX_CHUNK_LEN;
use nanostar_protocol::npk::Arch;
use nanostar_tools::board::{self, Board, BootFiles, Hvc, Outcome, Report};
use nanostar_tools::package::Packed;
use nanostar_tools::testing::{Console, device_build, key_id, pack_toml};

/// The safety net of one boot: QEMU is killed after this long whatever happens.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the runtime may take to come up (it takes about a second).
const SERVING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reply may take (the console's read and write timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `shutdown` may take until QEMU has exited.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(60);
/// What the runtime prints once it serves its console (socket and device).
const SERVING: &str = "nanostar: serving ";
/// What the kernel prints when the machine powers off.
const POWER_DOWN: &str = "reboot: Power down";

/// The runtime's configuration on the boards: everything persistent on the data disk.
const CONFIG: &str = r#"run_dir = "/run/nanostar"
data_dir = "/data/nanostar/data"
socket = "/run/nanostar/console"
cgroup = "/sys/fs/cgroup/nanostar"
console_device = "/dev/hvc0"
data_device = "/dev/vda"
data_mount = "/data"
[limits]
install_timeout_ms = 30000
[repository.default]
dir = "/data/nanostar/repo"
keys = ["/etc/nanostar/test.pub"]
[console]
uid.0 = "full"
"#;
/// The repository directory inside the data disk's file system.
const REPO_ON_DISK: &str = "/nanostar/repo";
/// Size of the data disk.
const DISK_SIZE: u64 = 96 << 20;
/// The file whose image blocks the host corrupts, and its size.
const BIG_FILE: &str = "/bigfile";
const BIG_FILE_LEN: usize = 1 << 20;
/// The package whose install the power cut interrupts.
const HUGE_FILE_LEN: usize = 6 << 20;
/// After the install began, how long the test waits before the power cut: longer than
/// ext4's 5 s journal commit, so the partial file is on the disk and must be cleaned up.
const CUT_AFTER: Duration = Duration::from_secs(7);

// ---- one board at a time (the builds and the console client: nanostar_tools::testing) --

/// The boards run one at a time (see the module comment).
fn one_board_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

// ---- one board -----------------------------------------------------------------------

/// Everything a board's boots share.
struct Setup {
    board: Board,
    kernel: PathBuf,
    initrd: PathBuf,
    dir: tempfile::TempDir,
    probe: PathBuf,
    arch: Arch,
    /// The key the repository trusts.
    key: KeyPair,
    /// A key it does not know.
    stranger: KeyPair,
}

impl Setup {
    fn new(name: &str, target: &str, arch: Arch) -> Setup {
        let board = Board::load(name).unwrap();
        let kernel = board
            .build_kernel()
            .unwrap_or_else(|e| panic!("kernel for {name}: {e:#}"));
        board.check_qemu().unwrap();
        let runtime = device_build("nanostar", "nanostar", target);
        let probe = device_build("nanostar-probe", "probe", target);
        board.check_program(&runtime).unwrap();
        // Short: the hvc socket path must fit a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("nsboot")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let (secret, public) = nanostar_tools::keys::generate(&d.join("test")).unwrap();
        let (other, _) = nanostar_tools::keys::generate(&d.join("stranger")).unwrap();
        let config = d.join("nanostar.conf");
        std::fs::write(&config, CONFIG).unwrap();
        let initrd = d.join("initramfs.cpio");
        let files = vec![
            (config, "/etc/nanostar.conf".to_string()),
            (public, "/etc/nanostar/test.pub".to_string()),
        ];
        let archive = board::initramfs(&runtime, &files).unwrap();
        std::fs::write(&initrd, archive).unwrap();
        Setup {
            board,
            kernel,
            initrd,
            probe,
            arch,
            key: nanostar_tools::keys::read_secret(&secret).unwrap(),
            stranger: nanostar_tools::keys::read_secret(&other).unwrap(),
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A package of the probe, `name` 1.0.0, with `extra` manifest TOML and `files`
    /// (image path, contents) in its root; signed with `key` (`None`: unsigned).
    fn package(
        &self,
        name: &str,
        extra: &str,
        files: &[(&str, &[u8])],
        key: Option<&KeyPair>,
    ) -> Packed {
        let root = self.path(&format!("root-{name}"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy(&self.probe, root.join("bin/probe")).unwrap();
        std::fs::write(root.join("etc/release"), format!("{name} 1.0.0\n")).unwrap();
        for (path, data) in files {
            std::fs::write(root.join(path.trim_start_matches('/')), data).unwrap();
        }
        let toml = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/probe\"\nuid = 1000\ngid = 1000\n{extra}"
        );
        pack_toml(&toml, &root, key, Some(self.arch))
    }

    /// A fresh data disk: a sparse file formatted ext4 with 4 KiB blocks.
    fn disk(&self) -> PathBuf {
        let disk = self.path("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(DISK_SIZE)
            .unwrap();
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&disk)
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4: {out:?}");
        disk
    }
}

/// The serial console as it arrives: kept for the test, echoed with `NANOSTAR_BOOT_ECHO`.
#[derive(Clone, Default)]
struct Serial(Arc<Mutex<Vec<u8>>>);

impl Serial {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Serial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("NANOSTAR_BOOT_ECHO").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running boot: QEMU under [`board::run`] in a thread.
struct Guest {
    label: String,
    hvc: PathBuf,
    pid: i32,
    serial: Serial,
    thread: Option<JoinHandle<Report>>,
    /// From QEMU's start to the runtime's "serving".
    serving_after: Duration,
}

impl Guest {
    /// Boots the board with `disk` and waits until the runtime serves.
    fn boot(setup: &Setup, disk: &Path, label: &str) -> Guest {
        let hvc = setup.path(&format!("{label}.hvc"));
        let pidfile = setup.path(&format!("{label}.pid"));
        let _ = std::fs::remove_file(&hvc);
        let _ = std::fs::remove_file(&pidfile);
        let mut cmd = setup
            .board
            .qemu_command(&BootFiles {
                kernel: &setup.kernel,
                initrd: &setup.initrd,
                disk,
                hvc: &Hvc::Socket(hvc.clone()),
                append: "",
            })
            .unwrap();
        // QEMU's pid, for the power cut (and for cleaning up after a failed test).
        cmd.arg("-pidfile").arg(&pidfile);
        let serial = Serial::default();
        let echo = serial.clone();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            board::run(cmd, BOOT_TIMEOUT, &[], Box::new(echo)).expect("cannot start QEMU")
        });
        let mut guest = Guest {
            label: format!("{} {label}", setup.board.name),
            hvc,
            pid: 0,
            serial,
            thread: Some(thread),
            serving_after: Duration::ZERO,
        };
        guest.pid = guest.wait_until("QEMU's pid file", || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        // "serving the console on /dev/hvc0", then "serving N packages on SOCKET".
        let serial = guest.serial.clone();
        guest.wait_until("the runtime to serve", || {
            let text = serial.text();
            (text.contains(&format!("{SERVING}the console on /dev/hvc0"))
                && text.contains(" packages on /run/nanostar/console"))
            .then_some(())
        });
        guest.serving_after = started.elapsed();
        guest
    }

    /// Polls `ready` until it gives a value; fails with the console if QEMU ends first or
    /// [`SERVING_TIMEOUT`] passes.
    fn wait_until<T>(&mut self, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + SERVING_TIMEOUT;
        loop {
            if let Some(value) = ready() {
                return value;
            }
            let ended = self.thread.as_ref().is_none_or(|t| t.is_finished());
            if ended || Instant::now() > deadline {
                let report = self.thread.take().map(|t| t.join());
                let outcome = match report {
                    Some(Ok(r)) => r.outcome.describe(),
                    _ => "still running".into(),
                };
                panic!(
                    "{}: waited in vain for {what} ({outcome}); serial console:\n{}",
                    self.label,
                    tail(&self.serial.text(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A console session over the virtio console, subscribed to notifications.
    fn session(&self) -> Console {
        let mut s = Console::connect(&self.hvc, REPLY_TIMEOUT, "boot-test");
        s.hello_on_device();
        s.subscribe();
        s
    }

    /// Asks the runtime to shut down and waits for the clean power-off.
    fn power_off(mut self) -> Report {
        let mut s = self.session();
        assert_eq!(s.request(Request::Shutdown), "Ok");
        drop(s);
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + POWER_OFF_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            self.kill();
            let _ = thread.join();
            panic!(
                "{}: no power-off within {POWER_OFF_TIMEOUT:?} of the shutdown request:\n{}",
                self.label,
                tail(&self.serial.text(), 60)
            );
        }
        let report = thread.join().unwrap();
        assert_clean_power_off(&self.label, &report);
        report
    }

    /// Kills QEMU at once: the guest loses power with whatever it did not write yet.
    fn power_cut(mut self) -> Report {
        self.kill();
        self.thread.take().unwrap().join().unwrap()
    }

    fn kill(&self) {
        if self.pid > 0 {
            // SAFETY: kill(2) on the pid QEMU wrote, our own child not yet reaped (its
            // thread has not finished).
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if !thread.is_finished() {
                self.kill();
            }
            let _ = thread.join();
        }
    }
}

/// A clean power-off: the kernel's power-down line, QEMU exited by itself with success,
/// no panic. (The runtime prints no `nanostar-verdict` line, so the runner's verdict is
/// "no verdict".)
#[track_caller]
fn assert_clean_power_off(label: &str, report: &Report) {
    assert!(
        report.outcome == Outcome::NoVerdict && report.transcript.contains(POWER_DOWN),
        "{label}: not a clean power-off ({}):\n{}",
        report.outcome.describe(),
        tail(&report.transcript, 60)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- the host's view of the data disk ----------------------------------------------------

fn debugfs(disk: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(disk)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs -R {request:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in the repository directory on the disk.
fn repo_files(disk: &Path) -> Vec<String> {
    let mut names: Vec<String> = debugfs(disk, &format!("ls -l {REPO_ON_DISK}"))
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// `e2fsck -fn`: the file system is consistent (a read-only check).
#[track_caller]
fn assert_fsck_clean(disk: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(disk)
        .output()
        .expect("e2fsck (e2fsprogs)");
    assert!(
        out.status.success(),
        "e2fsck -fn ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flips the byte at `offset` of the file `path` in the ext4 image `disk`, by writing the
/// disk image where debugfs says the file's block is.
fn flip_byte_on_disk(disk: &Path, path: &str, offset: u64) {
    let blocks: Vec<u64> = debugfs(disk, &format!("blocks {path}"))
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    let block = blocks[(offset / 4096) as usize];
    let at = block * 4096 + offset % 4096;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    use std::io::{Seek, SeekFrom};
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    byte[0] ^= 0xFF;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&byte).unwrap();
    f.sync_all().unwrap();
}

/// Incompressible bytes (xorshift), so squashfs stores them as they are.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---- the scenarios -----------------------------------------------------------------------

/// Figures and failures of one board's run.
struct Suite {
    board: String,
    started: Instant,
    boots: Vec<(String, Duration)>,
    scenarios: Vec<(String, Duration, Option<String>)>,
}

impl Suite {
    /// Runs `f` as the scenario `name`, timing it and catching its failure.
    fn scenario(&mut self, name: &str, f: impl FnOnce()) -> bool {
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(f));
        let failure = result.err().map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
        });
        let ok = failure.is_none();
        eprintln!(
            "{}: {name}: {} in {:.2} s",
            self.board,
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        self.scenarios.push((name.into(), t.elapsed(), failure));
        ok
    }

    fn booted(&mut self, guest: &Guest) {
        eprintln!(
            "{}: serving {:.2} s after QEMU's start",
            guest.label,
            guest.serving_after.as_secs_f64()
        );
        self.boots.push((guest.label.clone(), guest.serving_after));
    }

    fn finish(self) {
        let mut summary = format!(
            "\n{}: {:.1} s in all\n",
            self.board,
            self.started.elapsed().as_secs_f64()
        );
        for (label, t) in &self.boots {
            summary.push_str(&format!(
                "  boot {label}: serving after {:.2} s\n",
                t.as_secs_f64()
            ));
        }
        for (name, t, failure) in &self.scenarios {
            summary.push_str(&format!(
                "  {:<38} {:>6.2} s  {}\n",
                name,
                t.as_secs_f64(),
                if failure.is_some() { "FAILED" } else { "ok" }
            ));
        }
        eprintln!("{summary}");
        let failures: Vec<String> = self
            .scenarios
            .iter()
            .filter_map(|(name, _, f)| f.as_ref().map(|f| format!("{name}: {f}")))
            .collect();
        assert!(
            failures.is_empty(),
            "{summary}\nfailed:\n{}",
            failures.join("\n\n")
        );
    }
}

fn board_suite(name: &str, target: &str, arch: Arch) {
    let _one = one_board_at_a_time();
    let setup = Setup::new(name, target, arch);
    let mut suite = Suite {
        board: name.into(),
        started: Instant::now(),
        boots: Vec::new(),
        scenarios: Vec::new(),
    };
    let disk = setup.disk();

    // Packages. `big` has a file of noise whose image blocks the host corrupts later;
    // `huge` is the install the power cut interrupts.
    let hello = setup.package(
        "hello",
        "args = [\"print\", \"hello from a verity image\"]\n\
         [mounts.\"/proc\"]\ntype = \"proc\"\n[mounts.\"/sys\"]\ntype = \"sysfs\"\n",
        &[],
        Some(&setup.key),
    );
    let exits = setup.package("exits", "stop_timeout_ms = 500\n", &[], Some(&setup.key));
    let limited = setup.package(
        "limited",
        "[cgroups]\nmemory_max = \"8M\"\npids_max = 4\n\
         [mounts.\"/cg\"]\ntype = \"bind\"\nhost = \"/sys/fs/cgroup\"\n",
        &[],
        Some(&setup.key),
    );
    let hog = setup.package(
        "hog",
        "[cgroups]\nmemory_max = \"768K\"\n",
        &[],
        Some(&setup.key),
    );
    let big_data = noise(BIG_FILE_LEN, 7);
    let big = setup.package("big", "", &[(BIG_FILE, &big_data)], Some(&setup.key));
    let keeper = setup.package("keeper", "", &[], Some(&setup.key));
    let huge = setup.package(
        "huge",
        "",
        &[("/hugefile", &noise(HUGE_FILE_LEN, 11))],
        Some(&setup.key),
    );
    let stranger = setup.package("stranger", "", &[], Some(&setup.stranger));
    let unsigned = setup.package("unsigned", "", &[], None);

    // ---- boot 1: fresh disk ----
    let guest = Guest::boot(&setup, &disk, "boot1");
    suite.booted(&guest);

    suite.scenario("unknown key refused", || {
        let mut s = guest.session();
        let id = key_id(&setup.stranger);
        assert_eq!(
            s.install(&stranger.bytes),
            format!("Error(BadPackage(UnknownKey({id:?})))")
        );
        assert_eq!(s.install(&unsigned.bytes), "Error(BadPackage(Unsigned))");
        assert!(s.list().is_empty(), "{:?}", s.list());
    });

    suite.scenario("verity install, mount, run", || {
        let mut s = guest.session();
        let t = Instant::now();
        assert_eq!(
            s.install(&hello.bytes),
            "Installed(PackageId { name: \"hello\", version: Version { major: 1, minor: 0, patch: 0 } })"
        );
        eprintln!(
            "{}: installed {} bytes in {:.2} s",
            guest.label,
            hello.bytes.len(),
            t.elapsed().as_secs_f64()
        );
        // Signed by the repository's key.
        let inspected = s.request(Request::Inspect {
            name: "hello",
            version: None,
            manifest_offset: 0,
        });
        assert!(
            inspected.contains(&format!("key: Some({:?})", key_id(&setup.key))),
            "{inspected}"
        );
        // The manifest's arguments, then a long-running one that is stopped.
        let (status, log) = s.run_with("hello", None);
        assert_eq!(status, "Code(0)", "{log}");
        assert_eq!(log, "hello from a verity image\n");
        assert_eq!(
            s.start(
                "hello",
                &["cat", "/etc/release", "report", "ls", "/sys/block", "pause"]
            ),
            "Ok"
        );
        let listed = s.listed("hello");
        assert!(listed.mounted, "{listed:?}");
        assert_eq!(listed.state, Some(ContainerState::Running), "{listed:?}");
        let log = s.wait_for_log("hello", "entry ");
        assert!(log.contains("hello 1.0.0\n"), "{log}");
        // The root is the squashfs image, read-only, on the dm-verity device over a
        // loop device.
        let root = log
            .lines()
            .find(|l| l.starts_with("mount / "))
            .unwrap_or_else(|| panic!("no root mount in:\n{log}"));
        assert!(root.starts_with("mount / squashfs ro,"), "{root}");
        let dm: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("entry "))
            .filter(|e| e.starts_with("dm-"))
            .collect();
        assert_eq!(dm.len(), 1, "one device-mapper device:\n{log}");
        assert_eq!(s.stop("hello", None), "Stopped(Signal(15))");
        let (status, out) = s.run(
            "hello",
            &[
                "cat",
                &format!("/sys/block/{}/dm/name", dm[0]),
                "ls",
                &format!("/sys/block/{}/slaves", dm[0]),
                "cat",
                &format!("/sys/block/{}/ro", dm[0]),
            ],
        );
        assert_eq!(status, "Code(0)", "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "nanostar-hello-1.0.0", "{out}");
        assert!(lines[1].starts_with("entry loop"), "{out}");
        assert_eq!(lines[2], "1", "read-only: {out}");
        let listed = s.listed("hello");
        assert!(listed.mounted, "{listed:?}");
        assert_eq!(listed.state, Some(ContainerState::Stopped), "{listed:?}");
        assert_eq!(listed.last_exit, "Code(0)");
    });

    suite.scenario("exit codes and stop signals", || {
        let mut s = guest.session();
        assert!(s.install(&exits.bytes).starts_with("Installed("));
        for (args, expected) in [
            (&["exit", "0"][..], "Code(0)"),
            (&["print", "one", "exit", "1"], "Code(1)"),
            (&["crash"], "Code(101)"),
            (&["kill-self", "9"], "Signal(9)"),
        ] {
            let (status, log) = s.run("exits", args);
            assert_eq!(status, expected, "{args:?}: {log}");
        }
        let log = s.logs("exits");
        assert!(log.contains("one\n"), "{log}");
        assert!(log.contains("panicked"), "{log}");
        // SIGTERM ends a plain app at once.
        assert_eq!(s.start("exits", &["print", "up", "pause"]), "Ok");
        s.wait_for_log("exits", "up\n");
        assert_eq!(s.stop("exits", None), "Stopped(Signal(15))");
        // An app that blocks SIGTERM is killed when the manifest's 500 ms pass.
        assert_eq!(
            s.start("exits", &["block-term", "print", "deaf", "pause"]),
            "Ok"
        );
        s.wait_for_log("exits", "deaf\n");
        let t = Instant::now();
        assert_eq!(s.stop("exits", None), "Stopped(Signal(9))");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // ... or when the request's timeout passes.
        assert_eq!(
            s.start("exits", &["block-term", "print", "deaf2", "pause"]),
            "Ok"
        );
        s.wait_for_log("exits", "deaf2\n");
        let t = Instant::now();
        assert_eq!(s.stop("exits", Some(100)), "Stopped(Signal(9))");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let listed = s.listed("exits");
        assert_eq!(listed.state, Some(ContainerState::Stopped));
        assert_eq!(listed.last_exit, "Signal(9)");
        assert_eq!(s.stop("exits", None), "Error(NotRunning)");
    });

    suite.scenario("cgroup pids.max and memory.max", || {
        let mut s = guest.session();
        assert!(s.install(&limited.bytes).starts_with("Installed("));
        // The container's init and app are two of the four pids.
        let (status, log) = s.run(
            "limited",
            &[
                "cat",
                "/cg/nanostar/limited/memory.max",
                "cat",
                "/cg/nanostar/limited/pids.max",
                "spawn",
                "spawn",
                "spawn",
            ],
        );
        assert_eq!(status, "Code(3)", "{log}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], (8u64 << 20).to_string(), "{log}");
        assert_eq!(lines[1], "4", "{log}");
        assert_eq!(
            log.lines().filter(|l| l.starts_with("spawned ")).count(),
            2,
            "{log}"
        );
        assert!(
            lines.last().unwrap().starts_with("error spawn")
                && lines.last().unwrap().ends_with(" 11"),
            "the third fork fails with EAGAIN: {log}"
        );
    });

    suite.scenario("cgroup OOM kill", || {
        let mut s = guest.session();
        assert!(s.install(&hog.bytes).starts_with("Installed("));
        // Every forked child costs kernel memory (stack, page tables) and a few
        // copied pages: 768 KiB run out long before 31 children.
        let mut args = vec!["spawn"; 31];
        args.push("pause");
        assert_eq!(s.start("hog", &args), "Ok");
        let status = s.wait_exit("hog");
        let log = s.logs("hog");
        let spawned = log.lines().filter(|l| l.starts_with("spawned ")).count();
        assert_eq!(status, "Signal(9)", "{log}");
        assert!((1..31).contains(&spawned), "{log}");
        assert!(
            s.seen
                .iter()
                .any(|n| n.starts_with("OutOfMemory") && n.contains("\"hog\"")),
            "no OutOfMemory notification: {:?}",
            s.seen
        );
        eprintln!("{}: OOM kill after {spawned} children", guest.label);
    });

    suite.scenario("install packages for boot 2", || {
        let mut s = guest.session();
        assert!(s.install(&big.bytes).starts_with("Installed("));
        assert!(s.install(&keeper.bytes).starts_with("Installed("));
        let (status, log) = s.run("big", &["read", BIG_FILE]);
        assert_eq!(status, "Code(0)", "{log}");
        assert_eq!(log, format!("read {BIG_FILE} {BIG_FILE_LEN}\n"));
    });

    suite.scenario("boot 1: clean power-off", || {
        let report = guest.power_off();
        eprintln!(
            "{name}: boot 1 powered off {:.2} s after QEMU's start",
            report.elapsed.as_secs_f64()
        );
        assert_fsck_clean(&disk);
        let files = repo_files(&disk);
        assert!(
            !files.iter().any(|f| f.starts_with(".tmp")),
            "refused installs leave nothing: {files:?}"
        );
    });

    // ---- between boots: the host corrupts one byte of big's image on the disk ----
    let tampered = suite.scenario("tamper with the image on disk", || {
        let image =
            &big.bytes[big.header.image_offset as usize..][..big.header.image_size as usize];
        let at = find(image, &big_data[..4096]).expect("the big file is stored uncompressed");
        // A byte in the middle of the file, far from the squashfs metadata.
        let offset = big.header.image_offset + (at + BIG_FILE_LEN / 2 + 123) as u64;
        let file = format!("{REPO_ON_DISK}/big-1.0.0.npk");
        flip_byte_on_disk(&disk, &file, offset);
        // Exactly that byte changed in the file.
        let dumped = setup.path("big-dumped.npk");
        debugfs(&disk, &format!("dump {file} {}", dumped.display()));
        let now = std::fs::read(&dumped).unwrap();
        assert_eq!(now.len(), big.bytes.len());
        let diff: Vec<usize> = (0..now.len()).filter(|&i| now[i] != big.bytes[i]).collect();
        assert_eq!(diff, [offset as usize]);
    });

    // ---- boot 2: tampered image; power cut mid-install ----
    let guest = Guest::boot(&setup, &disk, "boot2");
    suite.booted(&guest);
    if tampered {
        suite.scenario("tampered image: EIO, others run", || {
            let mut s = guest.session();
            // The header and manifest are intact: the package is listed, mounts and
            // starts.
            s.listed("big");
            assert_eq!(s.start("keeper", &["print", "keeping", "pause"]), "Ok");
            let (status, log) = s.run("big", &["print", "reading", "read", BIG_FILE]);
            assert_eq!(status, "Code(3)", "{log}");
            assert_eq!(log, format!("reading\nerror read {BIG_FILE} 5\n"));
            let keeper = s.listed("keeper");
            assert_eq!(keeper.state, Some(ContainerState::Running), "{keeper:?}");
            let big = s.listed("big");
            assert!(big.mounted, "{big:?}");
            assert_eq!(big.last_exit, "Code(3)", "{big:?}");
            // Other files of the same image still read fine.
            let (status, log) = s.run("big", &["cat", "/etc/release"]);
            assert_eq!((status.as_str(), log.as_str()), ("Code(0)", "big 1.0.0\n"));
            assert!(s.logs("keeper").contains("keeping"));
            assert_eq!(s.stop("keeper", None), "Stopped(Signal(15))");
            let console = guest.serial.text();
            let corrupted = console
                .lines()
                .find(|l| l.contains("verity") && l.contains("corrupted"));
            eprintln!("{}: kernel says: {corrupted:?}", guest.label);
            assert!(
                corrupted.is_some(),
                "no dm-verity message:\n{}",
                tail(&console, 30)
            );
        });
    }

    let mut cut_at = 0usize;
    suite.scenario("power cut mid-install (cut)", || {
        let mut s = guest.session();
        let id = s.begin_install(&huge.bytes);
        assert_ne!(id, 0, "{:?}", s.seen);
        let begun = Instant::now();
        let half = huge.bytes.len() / 2;
        for chunk in huge.bytes[..half].chunks(MAX_CHUNK_LEN) {
            s.chunk(id, chunk);
        }
        cut_at = half;
        eprintln!(
            "{}: sent {half} of {} bytes in {:.2} s",
            guest.label,
            huge.bytes.len(),
            begun.elapsed().as_secs_f64()
        );
        // Let the journal commit the partial file, then pull the plug.
        std::thread::sleep(CUT_AFTER.saturating_sub(begun.elapsed()));
    });
    let report = guest.power_cut();
    assert!(
        !report.transcript.contains(POWER_DOWN),
        "the guest powered off by itself"
    );
    eprintln!("{name}: power cut after sending {cut_at} bytes");

    // ---- boot 3: after the power cut ----
    let guest = Guest::boot(&setup, &disk, "boot3");
    suite.booted(&guest);
    suite.scenario("power cut mid-install (after)", || {
        let console = guest.serial.text();
        assert!(
            console.contains(
                "nanostar: repository default: removed .tmp-1 (an install that did not finish)"
            ),
            "{}",
            tail(&console, 30)
        );
        assert!(!console.contains(": skipped: "), "{}", tail(&console, 30));
        let mut s = guest.session();
        let names: Vec<String> = s.list().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["big", "exits", "hello", "hog", "keeper", "limited"],
            "every earlier package, nothing of the cut install"
        );
        let (status, log) = s.run_with("hello", None);
        assert_eq!(status, "Code(0)", "{log}");
        assert_eq!(log, "hello from a verity image\n");
        let (status, log) = s.run("keeper", &["cat", "/etc/release"]);
        assert_eq!(
            (status.as_str(), log.as_str()),
            ("Code(0)", "keeper 1.0.0\n")
        );
        // The interrupted package installs completely now.
        let t = Instant::now();
        assert!(s.install(&huge.bytes).starts_with("Installed("));
        eprintln!(
            "{}: installed {} bytes in {:.2} s",
            guest.label,
            huge.bytes.len(),
            t.elapsed().as_secs_f64()
        );
        let (status, log) = s.run("huge", &["read", "/hugefile"]);
        assert_eq!(status, "Code(0)", "{log}");
        assert_eq!(log, format!("read /hugefile {HUGE_FILE_LEN}\n"));
    });
    suite.scenario("boot 3: clean power-off, no leftover", || {
        guest.power_off();
        assert_fsck_clean(&disk);
        assert_eq!(
            repo_files(&disk),
            [
                "big-1.0.0.npk",
                "exits-1.0.0.npk",
                "hello-1.0.0.npk",
                "hog-1.0.0.npk",
                "huge-1.0.0.npk",
                "keeper-1.0.0.npk",
                "limited-1.0.0.npk"
            ]
        );
    });
    suite.finish();
}

#[test]
fn qemu_armv7_runs_nanostar() {
    board_suite("qemu-armv7", "armv7-unknown-linux-gnueabihf", Arch::Arm);
}

#[test]
fn qemu_aarch64_runs_nanostar() {
    board_suite("qemu-aarch64", "aarch64-unknown-linux-musl", Arch::Aarch64);
}
