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
//! panic and every expected text appeared.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
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
                 (or `fail REASON`) before powering off"
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
}

enum Event {
    Line(String),
    Eof,
}

/// Runs `cmd` (QEMU, with its serial console on stdout), copies its stdout to `echo` as it
/// arrives, and judges it. QEMU is killed after `timeout`, or [`PANIC_GRACE`] after a
/// panic. Fails only if QEMU cannot be started.
pub fn run(
    mut cmd: Command,
    timeout: Duration,
    expect: &[String],
    mut echo: Box<dyn Write + Send>,
) -> Result<Report> {
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
            let chunk: Vec<u8> = buf[..n].iter().copied().filter(|&b| b != b'\r').collect();
            let _ = echo.write_all(&chunk);
            let _ = echo.flush();
            for &b in &chunk {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    if tx.send(Event::Line(text)).is_err() {
                        return;
                    }
                } else {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            let _ = tx.send(Event::Line(String::from_utf8_lossy(&line).into_owned()));
        }
        let _ = tx.send(Event::Eof);
    });

    let mut scanner = Scanner::default();
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
            Ok(Event::Line(line)) => {
                scanner.line(&line);
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
    while let Ok(Event::Line(line)) = rx.try_recv() {
        scanner.line(&line);
    }

    let outcome = judge(&scanner, killed, status, expect);
    Ok(Report {
        outcome,
        elapsed,
        transcript: scanner.transcript,
    })
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
/// failure, no verdict, missing texts.
fn judge(scanner: &Scanner, killed: bool, status: ExitStatus, expect: &[String]) -> Outcome {
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
    if scanner.verdict.is_none() {
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

    #[test]
    fn hvc_targets() {
        assert_eq!(Hvc::parse("null").unwrap(), Hvc::Null);
        assert_eq!(Hvc::parse("file:/x").unwrap(), Hvc::File("/x".into()));
        assert_eq!(Hvc::parse("socket:/x").unwrap(), Hvc::Socket("/x".into()));
        assert!(Hvc::parse("tcp:1").is_err());
        assert!(Hvc::parse("file:").is_err());
    }
}
