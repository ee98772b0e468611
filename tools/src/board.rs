//! QEMU boards: loading a board folder, building its kernel, booting it and judging the
//! boot from the serial console.
//!
//! A board folder (`board/qemu-armv7`, `board/qemu-aarch64`) is the single source of
//! truth: `kernel.config` is the kernel config fragment and `board.toml` says how the
//! kernel is built (`[kernel]`, read by `board/build-kernel.sh`) and how QEMU runs it
//! (`[qemu]`, read here).
//!
//! The guest reports its result with one line on the serial console, [`VERDICT_MARKER`]
//! followed by `pass`, or by `fail` and a reason. A boot passes when that line says
//! `pass`, QEMU exits by itself (the guest powered off) with status 0, the kernel did not
//! panic and every expected text appeared. With [`RunOptions::poweroff_ok`] a clean
//! power-off without a verdict passes too: the runtime as PID 1 prints no verdict.
//!
//! To boot a board from Rust and drive it while it runs (the demo, boot tests):
//!
//! ```no_run
//! # use nanostar_tools::board::{Board, BootSpec, Hvc, RunOptions};
//! # use std::time::Duration;
//! # fn main() -> anyhow::Result<()> {
//! let board = Board::load("qemu-armv7")?;
//! let mut spec = BootSpec::new("target/armv7-unknown-linux-gnueabihf/release/nanostar");
//! spec.files.push(("board/qemu-armv7/nanostar.conf".into(), "/etc/nanostar.conf".into()));
//! spec.hvc = Hvc::Socket("/tmp/hvc.sock".into());
//! let boot = board.prepare(&spec)?;            // kernel, initramfs, ext4 disk, QEMU command
//! let mut options = RunOptions::new(Duration::from_secs(120));
//! options.poweroff_ok = true;
//! let (echo, lines) = nanostar_tools::board::LineTap::new(Box::new(std::io::stdout()));
//! let running = boot.spawn(options, Box::new(echo));
//! nanostar_tools::board::wait_for_line(&lines, "nanostar: serving ", Duration::from_secs(30));
//! // ... talk to the runtime on /tmp/hvc.sock, then ask it to shut down ...
//! let report = running.join().expect("runner thread")?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::initramfs::Archive;

/// The start of the guest's verdict line: `nanostar-verdict: pass` or
/// `nanostar-verdict: fail REASON`. It may appear anywhere in a line, since kernel
/// messages can land in the middle of what the guest writes.
pub const VERDICT_MARKER: &str = "nanostar-verdict:";

/// What the kernel prints when it panics (`Kernel panic - not syncing: ...`).
const PANIC_MARKER: &str = "Kernel panic";

/// What the kernel prints as the machine powers off (`reboot(POWER_OFF)`, PSCI
/// SYSTEM_OFF on the QEMU boards).
pub const POWER_OFF_MARKER: &str = "reboot: Power down";

/// Size of the fresh data disk a boot gets when it names none.
pub const DEFAULT_DISK_SIZE: u64 = 64 << 20;

/// How long QEMU may keep running after a panic. With `panic=-1` and `-no-reboot` it
/// exits at once; this only bounds a board whose arguments lack those.
const PANIC_GRACE: Duration = Duration::from_secs(10);

/// The folder holding the board folders: `$NANOSTAR_BOARD_DIR`, else the repository's
/// `board/` (found from this crate's location at build time).
pub fn boards_dir() -> PathBuf {
    match std::env::var_os("NANOSTAR_BOARD_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../board"),
    }
}

/// The cache of built artefacts (kernels, busybox), as
/// `board/build-kernel.sh` has it: `$NANOSTAR_CACHE`, else `$XDG_CACHE_HOME/nanostar`, else
/// `~/.cache/nanostar`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NANOSTAR_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("nanostar");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/nanostar")
}

/// `board.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    kernel: KernelSpec,
    qemu: QemuSpec,
}

/// How the board's kernel is built (by `board/build-kernel.sh`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel's ARCH: `arm` or `arm64`.
    pub arch: String,
    /// Prefix of the Debian cross compiler, e.g. `arm-linux-gnueabihf-`.
    pub cross_compile: String,
    /// The image in `arch/ARCH/boot/`: `zImage` or `Image`.
    pub image: String,
}

/// How QEMU runs the board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// The QEMU program, e.g. `qemu-system-arm`.
    pub binary: String,
    /// The Debian package providing it, for the hint when it is missing.
    pub package: String,
    /// The kernel command line.
    pub cmdline: String,
    /// QEMU's arguments with the placeholders `{kernel}`, `{initrd}`, `{cmdline}`,
    /// `{disk}` and `{hvc}`.
    pub args: Vec<String>,
}

/// A board, loaded from its folder.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub dir: PathBuf,
    pub kernel: KernelSpec,
    pub qemu: QemuSpec,
}

/// Where the guest's virtio console (`/dev/hvc0`) goes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hvc {
    /// Nowhere: the guest's writes are dropped.
    Null,
    /// A unix socket QEMU listens on; a client may connect at any time.
    Socket(PathBuf),
    /// A file that receives what the guest writes.
    File(PathBuf),
}

impl Hvc {
    /// Parses `socket:PATH`, `file:PATH` or `null`.
    pub fn parse(s: &str) -> Result<Hvc> {
        match s.split_once(':') {
            _ if s == "null" => Ok(Hvc::Null),
            Some(("socket", path)) if !path.is_empty() => Ok(Hvc::Socket(path.into())),
            Some(("file", path)) if !path.is_empty() => Ok(Hvc::File(path.into())),
            _ => bail!("bad virtio console target {s:?}: want socket:PATH, file:PATH or null"),
        }
    }

    /// The QEMU chardev backend, without the id.
    fn chardev(&self) -> String {
        match self {
            Hvc::Null => "null".into(),
            Hvc::Socket(p) => format!("socket,path={},server=on,wait=off", qemu_escape(p)),
            Hvc::File(p) => format!("file,path={}", qemu_escape(p)),
        }
    }
}

/// The files of one boot, filled into the board's QEMU arguments.
pub struct BootFiles<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// A raw image for the virtio-blk data disk.
    pub disk: &'a Path,
    pub hvc: &'a Hvc,
    /// Appended to the board's kernel command line (e.g. `loglevel=7`, or `-- ARGS` for
    /// init).
    pub append: &'a str,
}

impl Board {
    /// Loads a board by name (a folder in [`boards_dir`]) or by path (anything with a
    /// `/`).
    pub fn load(name_or_path: &str) -> Result<Board> {
        let dir = if name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            boards_dir().join(name_or_path)
        };
        let file = dir.join("board.toml");
        if !file.is_file() {
            bail!(
                "no board {name_or_path:?}: {} does not exist (known boards: {})",
                file.display(),
                Board::names().join(", ")
            );
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let parsed: BoardFile =
            toml::from_str(&text).with_context(|| format!("bad {}", file.display()))?;
        ensure!(
            parsed.qemu.args.iter().any(|a| a.contains("{kernel}"))
                && parsed.qemu.args.iter().any(|a| a.contains("{initrd}")),
            "{}: [qemu] args must use {{kernel}} and {{initrd}}",
            file.display()
        );
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Board {
            name,
            dir,
            kernel: parsed.kernel,
            qemu: parsed.qemu,
        })
    }

    /// The names of the boards in [`boards_dir`], sorted.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(boards_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("board.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The ELF `e_machine` of programs this board runs.
    pub fn elf_machine(&self) -> Option<u16> {
        match self.kernel.arch.as_str() {
            "arm" => Some(40),    // EM_ARM
            "arm64" => Some(183), // EM_AARCH64
            _ => None,
        }
    }

    /// Builds the board's kernel with `build-kernel.sh` (next to the board folder),
    /// or finds it in the cache, and returns its path. The script's progress goes to
    /// stderr.
    pub fn build_kernel(&self) -> Result<PathBuf> {
        let script = self
            .dir
            .parent()
            .context("board folder has no parent")?
            .join("build-kernel.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        ensure!(
            out.status.success(),
            "building the kernel for {} failed ({}); see the messages above",
            self.name,
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .last()
            .map(PathBuf::from)
            .context("build-kernel.sh printed no kernel path")?;
        ensure!(
            path.is_file(),
            "build-kernel.sh printed {}, which is not a file",
            path.display()
        );
        Ok(path)
    }

    /// The QEMU command for one boot: the board's arguments with the placeholders filled
    /// in. Paths inside a QEMU option string get their commas doubled, as QEMU wants.
    pub fn qemu_command(&self, files: &BootFiles) -> Result<Command> {
        let mut cmdline = self.qemu.cmdline.clone();
        if !files.append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(files.append);
        }
        let values = [
            ("{kernel}", files.kernel.to_string_lossy().into_owned()),
            ("{initrd}", files.initrd.to_string_lossy().into_owned()),
            ("{cmdline}", cmdline),
            ("{disk}", qemu_escape(files.disk)),
            ("{hvc}", files.hvc.chardev()),
        ];
        let mut cmd = Command::new(&self.qemu.binary);
        for arg in &self.qemu.args {
            let mut arg = arg.clone();
            for (key, value) in &values {
                arg = arg.replace(key, value);
            }
            if let Some(start) = arg.find('{')
                && let Some(len) = arg[start..].find('}')
            {
                bail!(
                    "{}/board.toml: unknown placeholder {} in [qemu] args \
                     (known: {{kernel}} {{initrd}} {{cmdline}} {{disk}} {{hvc}})",
                    self.dir.display(),
                    &arg[start..=start + len]
                );
            }
            cmd.arg(arg);
        }
        Ok(cmd)
    }

    /// Fails with an install hint if the board's QEMU is not in PATH.
    pub fn check_qemu(&self) -> Result<()> {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(&self.qemu.binary).is_file()))
            .unwrap_or(false);
        ensure!(
            found,
            "{} not found: install it with `apt-get install --no-install-recommends {}` \
             (board/build-kernel.sh installs it too)",
            self.qemu.binary,
            self.qemu.package
        );
        Ok(())
    }

    /// Checks that `path` can run on this board, so a program built for the wrong
    /// architecture fails here with a clear message instead of as a kernel panic.
    /// Files that are not ELF (scripts) are not checked.
    pub fn check_program(&self, path: &Path) -> Result<()> {
        let mut head = [0u8; 20];
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        if f.read_exact(&mut head).is_err() || &head[..4] != b"\x7fELF" {
            return Ok(());
        }
        let machine = u16::from_le_bytes([head[18], head[19]]);
        if let Some(want) = self.elf_machine()
            && machine != want
        {
            bail!(
                "{} is an ELF program for machine {machine} ({}), but board {} runs {}: \
                 build it for that architecture",
                path.display(),
                machine_name(machine),
                self.name,
                machine_name(want)
            );
        }
        Ok(())
    }
}

/// What one boot needs besides the board: [`Board::prepare`] turns it into files and a
/// QEMU command.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The static program that becomes PID 1.
    pub init: PathBuf,
    /// Extra files for the initramfs, `(host path, guest path)`; they keep their host
    /// permission bits.
    pub files: Vec<(PathBuf, String)>,
    /// The raw image for the virtio data disk; `None`: a fresh ext4 image of
    /// [`DEFAULT_DISK_SIZE`] in the boot's work folder (see [`make_data_disk`]).
    pub disk: Option<PathBuf>,
    /// Where the virtio console goes.
    pub hvc: Hvc,
    /// Appended to the board's kernel command line.
    pub append: String,
    /// The kernel image; `None`: the board's, built or found in the cache.
    pub kernel: Option<PathBuf>,
}

impl BootSpec {
    /// A boot of `init` with no extra files, a fresh disk, the virtio console to nowhere,
    /// and the board's kernel.
    pub fn new(init: impl Into<PathBuf>) -> BootSpec {
        BootSpec {
            init: init.into(),
            files: Vec::new(),
            disk: None,
            hvc: Hvc::Null,
            append: String::new(),
            kernel: None,
        }
    }
}

/// A boot ready to run: its QEMU command and the files it uses. The work folder (the
/// initramfs, and the disk unless one was given) is removed when this is dropped, or
/// after [`PreparedBoot::run`] ends.
#[derive(Debug)]
pub struct PreparedBoot {
    /// The QEMU command, for [`run`] or [`run_with`] (keep `self` alive meanwhile).
    pub command: Command,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    work: WorkDir,
}

impl PreparedBoot {
    /// The boot's private temporary folder.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Runs QEMU to its end with [`run_with`], then removes the work folder.
    pub fn run(self, options: &RunOptions, echo: Box<dyn Write + Send>) -> Result<Report> {
        let PreparedBoot { command, work, .. } = self;
        let report = run_with(command, options, echo);
        drop(work);
        report
    }

    /// [`PreparedBoot::run`] in a new thread, so the caller can drive the guest (over the
    /// virtio console's socket) while it runs.
    pub fn spawn(
        self,
        options: RunOptions,
        echo: Box<dyn Write + Send>,
    ) -> JoinHandle<Result<Report>> {
        std::thread::spawn(move || self.run(&options, echo))
    }
}

impl Board {
    /// Everything for one boot: checks `init`'s architecture, writes the initramfs (`init`
    /// as `/init`), makes a fresh ext4 disk unless one is given, builds or finds the
    /// kernel, checks QEMU, and fills in the board's QEMU arguments.
    pub fn prepare(&self, spec: &BootSpec) -> Result<PreparedBoot> {
        // Cheap checks first, before a kernel build that may take minutes.
        self.check_program(&spec.init)?;
        if let Some(d) = &spec.disk {
            ensure!(d.is_file(), "disk image {} does not exist", d.display());
        }
        if let Some(k) = &spec.kernel {
            ensure!(k.is_file(), "kernel {} does not exist", k.display());
        }
        // Also checks every file before the kernel build.
        let archive = initramfs(&spec.init, &spec.files)?;
        let work = WorkDir::new()?;
        let disk = match &spec.disk {
            Some(d) => d.clone(),
            None => {
                let d = work.path().join("disk.img");
                make_data_disk(&d, DEFAULT_DISK_SIZE)?;
                d
            }
        };
        let kernel = match &spec.kernel {
            Some(k) => k.clone(),
            None => self.build_kernel()?,
        };
        // After the kernel build, which installs QEMU and the cross compiler when it can.
        self.check_qemu()?;
        let initrd = work.path().join("initramfs.cpio");
        std::fs::write(&initrd, archive)
            .with_context(|| format!("cannot write {}", initrd.display()))?;
        let command = self.qemu_command(&BootFiles {
            kernel: &kernel,
            initrd: &initrd,
            disk: &disk,
            hvc: &spec.hvc,
            append: &spec.append,
        })?;
        Ok(PreparedBoot {
            command,
            kernel,
            initrd,
            disk,
            work,
        })
    }
}

/// Creates `path` (replacing it) as a sparse image of `size` bytes formatted ext4 with
/// `mkfs.ext4 -q -F` (e2fsprogs), the data disk the runtime mounts as PID 1.
pub fn make_data_disk(path: &Path, size: u64) -> Result<()> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot create {}", path.display()))?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "mkfs.ext4 not found: install e2fsprogs (`apt-get install e2fsprogs`) to \
                     make the data disk, or give one with --disk"
                )
            } else {
                anyhow::anyhow!("cannot run mkfs.ext4: {e}")
            }
        })?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 {} failed ({}): {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A private temporary folder (`$TMPDIR/nanostar-board-PID-N`), removed with everything in
/// it when dropped.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new() -> Result<WorkDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "nanostar-board-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "x86",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        _ => "unknown",
    }
}

/// A path inside a QEMU `key=value,...` option: commas are doubled.
fn qemu_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The initramfs of a boot: the directories every init expects, `/dev/console` (5:1,
/// without which the kernel starts init with no stdin/stdout/stderr), `/init`, and extra
/// files as `(host path, guest path)`, which keep their host permission bits.
pub fn initramfs(init: &Path, files: &[(PathBuf, String)]) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/data", 0o755),
    ] {
        a.dir(dir, mode)?;
    }
    a.char_dev("/dev/console", 0o600, 5, 1)?;
    a.file_from_host("/init", init, Some(0o755))?;
    for (host, guest) in files {
        ensure!(
            guest.starts_with('/'),
            "guest path {guest:?} must be absolute"
        );
        a.file_from_host(guest, host, None)?;
    }
    Ok(a.finish())
}

/// The guest's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
}

/// Reads the serial console line by line for the verdict and for kernel panics.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The first fail verdict, else the first pass verdict.
    pub verdict: Option<Verdict>,
    /// The first panic line.
    pub panic: Option<String>,
    /// The kernel said it powers the machine off ([`POWER_OFF_MARKER`]).
    pub powered_off: bool,
    /// Everything seen, without carriage returns.
    pub transcript: String,
}

impl Scanner {
    pub fn line(&mut self, line: &str) {
        self.transcript.push_str(line);
        self.transcript.push('\n');
        if self.panic.is_none() && line.contains(PANIC_MARKER) {
            self.panic = Some(line.trim().to_owned());
        }
        if line.contains(POWER_OFF_MARKER) {
            self.powered_off = true;
        }
        if let Some(at) = line.find(VERDICT_MARKER) {
            let rest = line[at + VERDICT_MARKER.len()..].trim();
            let verdict = match rest.split_once(char::is_whitespace) {
                None if rest == "pass" => Verdict::Pass,
                Some(("fail", reason)) => Verdict::Fail(reason.trim().to_owned()),
                None if rest == "fail" => Verdict::Fail("(no reason given)".into()),
                _ => Verdict::Fail(format!("unreadable verdict line: {}", line.trim())),
            };
            if !matches!(self.verdict, Some(Verdict::Fail(_))) {
                self.verdict = Some(verdict);
            }
        }
    }
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A pass verdict, a clean power-off and every expected text.
    Pass,
    /// The guest said `fail`.
    Fail(String),
    /// The kernel panicked (the panic line).
    Panic(String),
    /// The timeout passed and QEMU was killed.
    Timeout { verdict: Option<Verdict> },
    /// QEMU exited without a verdict.
    NoVerdict,
    /// QEMU exited with an error status (its own message is on stderr).
    QemuFailed(String),
    /// These `--expect` texts never appeared.
    Missing(Vec<String>),
}

impl Outcome {
    /// The runner's exit code (documented in `nanostar-board --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::QemuFailed(_) => 1,
            Outcome::Fail(_) => 3,
            Outcome::Panic(_) => 4,
            Outcome::Timeout { .. } => 5,
            Outcome::NoVerdict => 6,
            Outcome::Missing(_) => 7,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Pass => "pass".into(),
            Outcome::Fail(reason) => format!("the guest reported failure: {reason}"),
            Outcome::Panic(line) => format!("the kernel panicked: {line}"),
            Outcome::Timeout { verdict: None } => {
                "timed out without a verdict; QEMU was killed".into()
            }
            Outcome::Timeout { verdict: Some(_) } => "the guest gave its verdict but did not \
                power off before the timeout; QEMU was killed (does init call reboot(POWER_OFF)?)"
                .into(),
            Outcome::NoVerdict => format!(
                "QEMU exited without a verdict: the guest must print `{VERDICT_MARKER} pass` \
                 (or `fail REASON`) before powering off (--poweroff-ok: a clean power-off \
                 is enough)"
            ),
            Outcome::QemuFailed(status) => format!("QEMU failed ({status}); see its message above"),
            Outcome::Missing(texts) => format!("expected text never appeared: {texts:?}"),
        }
    }
}

/// The result of [`run`].
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// From start to QEMU's exit (or kill).
    pub elapsed: Duration,
    /// The serial console, without carriage returns.
    pub transcript: String,
    /// Every line of the serial console with the time from QEMU's start at which it
    /// arrived (for boot times: e.g. the runtime's "nanostar: serving" line).
    pub lines: Vec<(Duration, String)>,
}

/// How [`run_with`] judges a boot and shows its console.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// QEMU is killed after this long and the boot fails.
    pub timeout: Duration,
    /// Texts that must appear on the serial console.
    pub expect: Vec<String>,
    /// A clean power-off without a verdict passes: the kernel printed
    /// [`POWER_OFF_MARKER`] and QEMU exited by itself with status 0. (A verdict, a panic
    /// or a missing expected text still decide as usual.) For an init that prints no
    /// verdict, such as the runtime as PID 1.
    pub poweroff_ok: bool,
    /// Each line sent to `echo` starts with the host's time since QEMU's start,
    /// `+1.234s `.
    pub timestamps: bool,
}

impl RunOptions {
    /// `timeout`, nothing expected, a verdict needed, no timestamps.
    pub fn new(timeout: Duration) -> RunOptions {
        RunOptions {
            timeout,
            expect: Vec::new(),
            poweroff_ok: false,
            timestamps: false,
        }
    }
}

enum Event {
    Line(Duration, String),
    Eof,
}

/// A writer that passes everything to another and hands each complete line (without its
/// newline) to a channel: give it to [`run`] as `echo` to wait for what the guest prints
/// while it runs (see [`wait_for_line`]). With [`RunOptions::timestamps`] the lines carry
/// the timestamp prefix.
pub struct LineTap {
    inner: Box<dyn Write + Send>,
    line: Vec<u8>,
    tx: mpsc::Sender<String>,
}

impl LineTap {
    pub fn new(inner: Box<dyn Write + Send>) -> (LineTap, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        (
            LineTap {
                inner,
                line: Vec::new(),
                tx,
            },
            rx,
        )
    }
}

impl Write for LineTap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                // Nobody listening any more is fine: the echo goes on.
                let _ = self.tx.send(text);
            } else {
                self.line.push(b);
            }
        }
        let _ = self.inner.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.inner.flush();
        Ok(())
    }
}

/// Waits up to `timeout` for a line from a [`LineTap`] that contains `needle`; returns
/// it, or `None` on timeout or when the boot ended without it.
pub fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Runs `cmd` (QEMU, with its serial console on stdout), copies its stdout to `echo` as it
/// arrives, and judges it. QEMU is killed after `timeout`, or [`PANIC_GRACE`] after a
/// panic. Fails only if QEMU cannot be started. [`run_with`] has more options.
pub fn run(
    cmd: Command,
    timeout: Duration,
    expect: &[String],
    echo: Box<dyn Write + Send>,
) -> Result<Report> {
    let mut options = RunOptions::new(timeout);
    options.expect = expect.to_vec();
    run_with(cmd, &options, echo)
}

/// [`run`] with all options.
pub fn run_with(
    mut cmd: Command,
    options: &RunOptions,
    mut echo: Box<dyn Write + Send>,
) -> Result<Report> {
    let timeout = options.timeout;
    let timestamps = options.timestamps;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("{program} not found in PATH")
            } else {
                anyhow::anyhow!("cannot start {program}: {e}")
            }
        })?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    // The reader passes the console through as it comes (a person watching sees
    // every character at once) and hands complete lines to the scanner.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = start.elapsed();
            let chunk: Vec<u8> = buf[..n].iter().copied().filter(|&b| b != b'\r').collect();
            if timestamps {
                // The prefix goes in front of every line as it starts, so partial lines
                // still show at once.
                let mut out = Vec::with_capacity(chunk.len() + 16);
                let mut at_start = line.is_empty();
                for &b in &chunk {
                    if at_start {
                        out.extend_from_slice(timestamp(now).as_bytes());
                    }
                    out.push(b);
                    at_start = b == b'\n';
                }
                let _ = echo.write_all(&out);
            } else {
                let _ = echo.write_all(&chunk);
            }
            let _ = echo.flush();
            for &b in &chunk {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    if tx.send(Event::Line(now, text)).is_err() {
                        return;
                    }
                } else {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            let text = String::from_utf8_lossy(&line).into_owned();
            let _ = tx.send(Event::Line(start.elapsed(), text));
        }
        let _ = tx.send(Event::Eof);
    });

    let mut scanner = Scanner::default();
    let mut lines = Vec::new();
    let deadline = start + timeout;
    let mut panic_deadline = None;
    let mut killed = false;
    loop {
        let until = panic_deadline.map_or(deadline, |p: Instant| p.min(deadline));
        let now = Instant::now();
        if now >= until {
            let _ = child.kill();
            killed = true;
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(Event::Line(at, line)) => {
                scanner.line(&line);
                lines.push((at, line));
                if scanner.panic.is_some() && panic_deadline.is_none() {
                    panic_deadline = Some(Instant::now() + PANIC_GRACE);
                }
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = wait_until(
        &mut child,
        panic_deadline.map_or(deadline, |p| p.min(deadline)),
        &mut killed,
    )?;
    let elapsed = start.elapsed();
    let _ = reader.join();
    // Lines that arrived between the kill and the end of the pipe.
    while let Ok(Event::Line(at, line)) = rx.try_recv() {
        scanner.line(&line);
        lines.push((at, line));
    }

    let outcome = judge(&scanner, killed, status, options);
    Ok(Report {
        outcome,
        elapsed,
        transcript: scanner.transcript,
        lines,
    })
}

/// The prefix of a line with [`RunOptions::timestamps`].
fn timestamp(since_start: Duration) -> String {
    format!("+{:.3}s ", since_start.as_secs_f64())
}

/// Waits for `child` until `deadline`, then kills it.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
    killed: &mut bool,
) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            *killed = true;
            return child.wait().context("waiting for QEMU");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The outcome, most telling first: the guest's own failure, a panic, a timeout, QEMU's
/// failure, no verdict (unless a clean power-off is enough), missing texts.
fn judge(scanner: &Scanner, killed: bool, status: ExitStatus, options: &RunOptions) -> Outcome {
    let expect = &options.expect;
    if let Some(Verdict::Fail(reason)) = &scanner.verdict {
        return Outcome::Fail(reason.clone());
    }
    if let Some(line) = &scanner.panic {
        return Outcome::Panic(line.clone());
    }
    if killed {
        return Outcome::Timeout {
            verdict: scanner.verdict.clone(),
        };
    }
    if !status.success() {
        return Outcome::QemuFailed(status.to_string());
    }
    if scanner.verdict.is_none() && !(options.poweroff_ok && scanner.powered_off) {
        return Outcome::NoVerdict;
    }
    let missing: Vec<String> = expect
        .iter()
        .filter(|t| !scanner.transcript.contains(t.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Outcome::Missing(missing);
    }
    Outcome::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(lines: &[&str]) -> Scanner {
        let mut s = Scanner::default();
        for l in lines {
            s.line(l);
        }
        s
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            scan(&["nanostar-verdict: pass"]).verdict,
            Some(Verdict::Pass)
        );
        assert_eq!(
            scan(&["[    1.2] x", "nanostar-verdict: fail mount failed: EIO "]).verdict,
            Some(Verdict::Fail("mount failed: EIO".into()))
        );
        // A kernel message can land in front of the guest's line.
        assert_eq!(
            scan(&["[    1.418859] verity: corrupted nanostar-verdict: pass"]).verdict,
            Some(Verdict::Pass)
        );
        // Fail wins over pass, in either order.
        let s = scan(&["nanostar-verdict: fail a", "nanostar-verdict: pass"]);
        assert_eq!(s.verdict, Some(Verdict::Fail("a".into())));
        let s = scan(&["nanostar-verdict: pass", "nanostar-verdict: fail"]);
        assert!(matches!(s.verdict, Some(Verdict::Fail(_))));
        // Anything else is not a pass.
        assert!(matches!(
            scan(&["nanostar-verdict: passed"]).verdict,
            Some(Verdict::Fail(_))
        ));
        assert_eq!(scan(&["verdict: pass"]).verdict, None);
    }

    #[test]
    fn panics() {
        let s = scan(&[
            "[ 0.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        ]);
        assert!(s.panic.unwrap().starts_with("[ 0.5] Kernel panic"));
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn run_sh(script: &str, timeout: u64, expect: &[&str]) -> Report {
        let expect: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        run(
            sh(script),
            Duration::from_secs(timeout),
            &expect,
            Box::new(std::io::sink()),
        )
        .unwrap()
    }

    #[test]
    fn run_judges_a_fake_guest() {
        let r = run_sh(
            "printf 'boot\\r\\nnanostar-verdict: pass\\r\\n'",
            10,
            &["boot"],
        );
        assert_eq!(r.outcome, Outcome::Pass);
        assert_eq!(r.transcript, "boot\nnanostar-verdict: pass\n");

        let r = run_sh("echo nanostar-verdict: pass", 10, &["never printed"]);
        assert_eq!(r.outcome, Outcome::Missing(vec!["never printed".into()]));
        assert_eq!(r.outcome.exit_code(), 7);

        let r = run_sh("echo 'nanostar-verdict: fail disk'", 10, &[]);
        assert_eq!(r.outcome, Outcome::Fail("disk".into()));

        let r = run_sh("echo booted", 10, &[]);
        assert_eq!(r.outcome, Outcome::NoVerdict);

        let r = run_sh("echo nanostar-verdict: pass; exit 1", 10, &[]);
        assert!(matches!(r.outcome, Outcome::QemuFailed(_)));

        // A line without its newline still counts.
        let r = run_sh("printf 'nanostar-verdict: pass'", 10, &[]);
        assert_eq!(r.outcome, Outcome::Pass);
    }

    #[test]
    fn run_kills_on_timeout() {
        let t = Instant::now();
        let r = run_sh("echo nanostar-verdict: pass; exec sleep 30", 1, &[]);
        assert_eq!(
            r.outcome,
            Outcome::Timeout {
                verdict: Some(Verdict::Pass)
            }
        );
        assert!(t.elapsed() < Duration::from_secs(10));
        let r = run_sh("exec sleep 30", 1, &[]);
        assert_eq!(r.outcome, Outcome::Timeout { verdict: None });
        assert_eq!(r.outcome.exit_code(), 5);
    }

    #[test]
    fn panic_beats_pass() {
        let r = run_sh(
            "echo nanostar-verdict: pass; \
             echo 'Kernel panic - not syncing: Attempted to kill init!'",
            10,
            &[],
        );
        assert!(matches!(r.outcome, Outcome::Panic(_)), "{:?}", r.outcome);
    }

    #[test]
    fn missing_qemu_says_what_to_install() {
        let mut board = Board::load("qemu-armv7").unwrap();
        board.qemu.binary = "qemu-system-nonexistent".into();
        let err = board.check_qemu().unwrap_err().to_string();
        assert!(
            err.contains("apt-get install --no-install-recommends qemu-system-arm"),
            "{err}"
        );
        let err = run(
            Command::new("qemu-system-nonexistent"),
            Duration::from_secs(1),
            &[],
            Box::new(std::io::sink()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn boards_load_and_fill_placeholders() {
        for name in ["qemu-armv7", "qemu-aarch64"] {
            let board = Board::load(name).unwrap();
            assert_eq!(board.name, name);
            let cmd = board
                .qemu_command(&BootFiles {
                    kernel: Path::new("/k"),
                    initrd: Path::new("/i"),
                    disk: Path::new("/a,b.img"),
                    hvc: &Hvc::Socket("/s".into()),
                    append: "-- fail",
                })
                .unwrap();
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let joined = args.join(" ");
            assert!(!joined.contains('{'), "{joined}");
            assert!(joined.contains("file=/a,,b.img,"), "{joined}");
            assert!(
                joined.contains("socket,path=/s,server=on,wait=off,id=hvc0"),
                "{joined}"
            );
            let append = args.iter().position(|a| a == "-append").unwrap();
            assert!(args[append + 1].ends_with("rdinit=/init quiet -- fail"));
        }
        assert!(
            Board::load("no-such-board")
                .unwrap_err()
                .to_string()
                .contains("qemu-armv7")
        );
    }

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn run_opts(script: &str, poweroff_ok: bool, expect: &[&str]) -> Report {
        let mut options = RunOptions::new(Duration::from_secs(10));
        options.poweroff_ok = poweroff_ok;
        options.expect = expect.iter().map(|s| s.to_string()).collect();
        run_with(sh(script), &options, Box::new(std::io::sink())).unwrap()
    }

    #[test]
    fn a_clean_power_off_passes_when_asked() {
        let off = "echo 'nanostar: serving'; echo '[    2.7] reboot: Power down'";
        assert_eq!(run_opts(off, false, &[]).outcome, Outcome::NoVerdict);
        assert_eq!(run_opts(off, true, &[]).outcome, Outcome::Pass);
        assert_eq!(
            run_opts(off, true, &["serving", "absent"]).outcome,
            Outcome::Missing(vec!["absent".into()])
        );
        // Not without the kernel's power-off line, nor with QEMU failing, a fail verdict
        // or a panic.
        assert_eq!(run_opts("echo up", true, &[]).outcome, Outcome::NoVerdict);
        assert!(matches!(
            run_opts(&format!("{off}; exit 1"), true, &[]).outcome,
            Outcome::QemuFailed(_)
        ));
        assert_eq!(
            run_opts(
                &format!("echo 'nanostar-verdict: fail x'; {off}"),
                true,
                &[]
            )
            .outcome,
            Outcome::Fail("x".into())
        );
        assert!(matches!(
            run_opts(
                &format!("echo 'Kernel panic - not syncing'; {off}"),
                true,
                &[]
            )
            .outcome,
            Outcome::Panic(_)
        ));
        let s = scan(&["[ 1.0] reboot: Power down"]);
        assert!(s.powered_off && s.verdict.is_none());
    }

    #[test]
    fn timestamps_and_line_times() {
        let out = Shared::default();
        let mut options = RunOptions::new(Duration::from_secs(10));
        options.timestamps = true;
        let r = run_with(
            sh("printf 'one\\ntw'; sleep 0.3; printf 'o\\r\\nthree\\n'"),
            &options,
            Box::new(out.clone()),
        )
        .unwrap();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        for (line, want) in lines.iter().zip(["one", "two", "three"]) {
            // "+0.012s one": the prefix once per line, even for a line sent in two pieces.
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert!(stamp.starts_with('+') && stamp.ends_with('s'), "{line:?}");
            assert!(stamp[1..stamp.len() - 1].parse::<f64>().is_ok(), "{line:?}");
            assert_eq!(rest, want, "{text:?}");
        }
        // The transcript and the line list have no prefixes; times grow.
        assert_eq!(r.transcript, "one\ntwo\nthree\n");
        let names: Vec<&str> = r.lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert!(r.lines[1].0 >= r.lines[0].0 + Duration::from_millis(250));
        assert!(r.lines[2].0 >= r.lines[1].0);
    }

    #[test]
    fn line_tap_passes_everything_on_and_waits_for_lines() {
        let out = Shared::default();
        let (mut tap, lines) = LineTap::new(Box::new(out.clone()));
        tap.write_all(b"a\nnanostar: serv").unwrap();
        tap.write_all(b"ing 0 packages\nrest").unwrap();
        assert_eq!(out.text(), "a\nnanostar: serving 0 packages\nrest");
        assert_eq!(
            wait_for_line(&lines, "serving", Duration::from_secs(1)).as_deref(),
            Some("nanostar: serving 0 packages")
        );
        // An unfinished line is not a line yet; a timeout is None.
        assert_eq!(
            wait_for_line(&lines, "rest", Duration::from_millis(50)),
            None
        );
        drop(tap);
        assert_eq!(wait_for_line(&lines, "x", Duration::from_secs(1)), None);

        // Through a whole run: the guest's lines arrive while it runs.
        let (tap, lines) = LineTap::new(Box::new(std::io::sink()));
        let mut options = RunOptions::new(Duration::from_secs(10));
        options.poweroff_ok = true;
        let handle = std::thread::spawn(move || {
            run_with(
                sh("echo 'nanostar: serving 1 packages'; sleep 0.2; echo 'reboot: Power down'"),
                &options,
                Box::new(tap),
            )
        });
        assert!(wait_for_line(&lines, "nanostar: serving", Duration::from_secs(5)).is_some());
        assert_eq!(handle.join().unwrap().unwrap().outcome, Outcome::Pass);
    }

    fn have(program: &str) -> bool {
        Command::new(program)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    #[test]
    fn data_disks_are_ext4() {
        if !have("mkfs.ext4") {
            eprintln!("skipped: no mkfs.ext4 (e2fsprogs)");
            return;
        }
        let work = WorkDir::new().unwrap();
        let disk = work.path().join("d,isk.img");
        make_data_disk(&disk, 8 << 20).unwrap();
        let bytes = std::fs::read(&disk).unwrap();
        assert_eq!(bytes.len(), 8 << 20);
        // The ext2/3/4 superblock magic 0xEF53 at byte 1024 + 56.
        assert_eq!(&bytes[1024 + 56..1024 + 58], &[0x53, 0xef]);
        let dir = work.path().to_path_buf();
        drop(work);
        assert!(!dir.exists());
    }

    #[test]
    fn prepare_makes_the_files_and_the_command() {
        if !have("mkfs.ext4") {
            eprintln!("skipped: no mkfs.ext4 (e2fsprogs)");
            return;
        }
        let mut board = Board::load("qemu-armv7").unwrap();
        // Any program found in PATH passes check_qemu; nothing is run here.
        board.qemu.binary = "sh".into();
        let tmp = WorkDir::new().unwrap();
        let kernel = tmp.path().join("zImage");
        let init = tmp.path().join("init");
        std::fs::write(&kernel, b"kernel").unwrap();
        std::fs::write(&init, b"#!/bin/sh\n").unwrap();
        let mut spec = BootSpec::new(&init);
        spec.kernel = Some(kernel.clone());
        spec.hvc = Hvc::Socket("/tmp/x.sock".into());
        spec.append = "loglevel=5".into();
        let boot = board.prepare(&spec).unwrap();
        assert!(boot.initrd.starts_with(boot.work_dir()) && boot.initrd.is_file());
        assert!(boot.disk.starts_with(boot.work_dir()));
        assert_eq!(
            std::fs::metadata(&boot.disk).unwrap().len(),
            DEFAULT_DISK_SIZE
        );
        assert_eq!(boot.kernel, kernel);
        let args: Vec<String> = boot
            .command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains(&format!("-initrd {}", boot.initrd.display())),
            "{joined}"
        );
        assert!(joined.contains("rdinit=/init quiet loglevel=5"), "{joined}");
        assert!(joined.contains("socket,path=/tmp/x.sock"), "{joined}");
        let work = boot.work_dir().to_path_buf();
        drop(boot);
        assert!(!work.exists());

        // A given disk that does not exist fails before anything is made.
        spec.disk = Some(tmp.path().join("missing.img"));
        let err = board.prepare(&spec).unwrap_err().to_string();
        assert!(err.contains("missing.img"), "{err}");
    }

    #[test]
    fn hvc_targets() {
        assert_eq!(Hvc::parse("null").unwrap(), Hvc::Null);
        assert_eq!(Hvc::parse("file:/x").unwrap(), Hvc::File("/x".into()));
        assert_eq!(Hvc::parse("socket:/x").unwrap(), Hvc::Socket("/x".into()));
        assert!(Hvc::parse("tcp:1").is_err());
        assert!(Hvc::parse("file:").is_err());
    }
}
