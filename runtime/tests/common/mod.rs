//! Shared by the integration tests: the real device builds of `nanostar`, a runtime to
//! test against, and the console client (`nanostar_tools::testing`, shared with the
//! tools' boot tests).
//!
//! The device builds go to their own target directory, so a test can run cargo while the
//! outer `cargo test` holds the workspace's lock.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::UnixStream;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// Not every test file uses each of them.
#[allow(unused_imports)]
pub use nanostar_tools::testing::{Console, device_build, is_root, key_id, pack_toml, workspace};

pub const TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    "armv7-unknown-linux-gnueabihf",
];

/// Builds `bin` of `package` for every device target; returns the binaries' paths.
fn build_for_devices(package: &str, bin: &str) -> Vec<PathBuf> {
    TARGETS
        .iter()
        .map(|target| device_build(package, bin, target))
        .collect()
}

/// Builds the runtime for every device target once; returns the binaries' paths.
pub fn device_binaries() -> &'static [PathBuf] {
    static BINARIES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| build_for_devices("nanostar", "nanostar"))
}

/// Builds the test container program (`tests/probe`) for every device target once.
pub fn probe_binaries() -> &'static [PathBuf] {
    static BINARIES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| build_for_devices("nanostar-probe", "probe"))
}

/// The x86_64 device build with its symbol table (not stripped), for checks that look
/// at symbols; built once into its own target directory.
pub fn unstripped_x86_64_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let target_dir = workspace().join("target/device-tests-symbols");
        let target = TARGETS[0];
        let out = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_PROFILE_RELEASE_STRIP", "false")
            .args([
                "build",
                "--release",
                "-p",
                "nanostar",
                "--bin",
                "nanostar",
                "--target",
                target,
            ])
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the unstripped nanostar failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join(target).join("release/nanostar")
    })
}

/// The x86_64 device build, which runs on this host.
pub fn x86_64_binary() -> &'static Path {
    &device_binaries()[0]
}

/// Whether the running kernel has device-mapper, from its own list of misc devices: a
/// `/dev/mapper/control` node proves nothing (`veritysetup` leaves one behind).
pub fn kernel_has_device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc")
        .is_ok_and(|misc| misc.lines().any(|l| l.trim().ends_with(" device-mapper")))
}

/// The command line every test runtime runs under: its own mount and PID namespaces;
/// `--kill-child`, so nothing outlives a failed test.
pub const ISOLATED: [&str; 7] = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
];

/// A runtime in temporary directories, with a keyless `default` repository and a keyed
/// `signed` one; stopped (SIGTERM) when dropped.
pub struct Runtime {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub key: ed25519_compact::KeyPair,
    pub other_key: ed25519_compact::KeyPair,
}

impl Runtime {
    pub fn start() -> Runtime {
        Runtime::start_with(|_| {})
    }

    /// `prepare` may put files into the repositories before the runtime starts.
    pub fn start_with(prepare: impl FnOnce(&Path)) -> Runtime {
        Runtime::start_configured(prepare, "")
    }

    /// `extra` is added to the configuration's top level (before any section).
    pub fn start_configured(prepare: impl FnOnce(&Path), extra: &str) -> Runtime {
        Runtime::start_under(prepare, extra, &ISOLATED)
    }

    /// [`Runtime::start_configured`] run by the command line `wrapper` (followed by the
    /// runtime's own), which is the child the `Runtime` holds.
    pub fn start_under(prepare: impl FnOnce(&Path), extra: &str, wrapper: &[&str]) -> Runtime {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (secret, public) = nanostar_tools::keys::generate(&d.join("release")).unwrap();
        let (other, _) = nanostar_tools::keys::generate(&d.join("other")).unwrap();
        for repo in ["repo", "signed"] {
            std::fs::create_dir(d.join(repo)).unwrap();
        }
        prepare(d);
        let config = format!(
            "run_dir = \"{0}/run\"\ndata_dir = \"{0}/data\"\nsocket = \"{0}/run/console\"\n{extra}\n[limits]\nmax_clients = 4\ninstall_timeout_ms = 2000\n\
             [repository.default]\ndir = \"{0}/repo\"\n[repository.signed]\ndir = \"{0}/signed\"\nkeys = [\"{1}\"]\n[console]\nuid.0 = \"full\"\n",
            d.display(),
            public.display()
        );
        std::fs::write(d.join("nanostar.conf"), config).unwrap();
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(x86_64_binary())
            .arg("run")
            .arg(d.join("nanostar.conf"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", wrapper[0]));
        let runtime = Runtime {
            child: Some(child),
            key: nanostar_tools::keys::read_secret(&secret).unwrap(),
            other_key: nanostar_tools::keys::read_secret(&other).unwrap(),
            dir,
        };
        // Listening only once a connection succeeds: the socket file exists a moment
        // before `listen`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(runtime.socket()).is_err() {
            assert!(Instant::now() < deadline, "the runtime did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        runtime
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/console")
    }

    /// A connection to the console for frames the client would never send: no handshake
    /// yet, reads time out after 5 s.
    pub fn connect(&self) -> Console {
        Console::connect(&self.socket(), Duration::from_secs(5), "test")
    }

    /// A connection to the console after the handshake, subscribed to notifications;
    /// reads time out after 30 s.
    pub fn console(&self) -> Console {
        let mut console = Console::connect(&self.socket(), Duration::from_secs(30), "test");
        console.hello();
        console.subscribe();
        console
    }

    /// Runs a client command against this runtime.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(x86_64_binary())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "nanostar {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn files(&self, repo: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(repo))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// SIGTERM, then waits; returns the runtime's stderr.
    /// Stops the runtime with SIGTERM (the graceful path a service manager uses) and
    /// returns its stderr. The runtime is PID 1 of its namespace, where only signals it
    /// blocks for its signalfd get through, so this also checks that it does.
    pub fn stop(&mut self) -> String {
        let mut child = self.child.take().unwrap();
        // `unshare --fork` runs the runtime as its only child.
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let runtime_pid = std::fs::read_to_string(&children)
            .unwrap()
            .trim()
            .to_string();
        assert!(!runtime_pid.is_empty(), "no runtime under unshare");
        let status = Command::new("kill")
            .args(["-TERM", &runtime_pid])
            .status()
            .unwrap();
        assert!(status.success());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "runtime exited with {status}: {err}");
        err
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// The client's tests (`tests/cli.rs`).

/// Runs the x86_64 client with `args` as they are (no `--socket` added), `NANOSTAR_SOCKET`
/// unset unless `env` sets it.
pub fn client(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut command = Command::new(x86_64_binary());
    command.args(args).env_remove("NANOSTAR_SOCKET");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// stdout and stderr of a client run, as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The bytes of an NPK packed from manifest TOML and a root directory.
pub fn npk_bytes(
    toml: &str,
    root: &Path,
    key: Option<&ed25519_compact::KeyPair>,
    arch: nanostar_protocol::npk::Arch,
) -> Vec<u8> {
    nanostar_tools::testing::pack_toml(toml, root, key, Some(arch)).bytes
}

/// Panics unless `text` is exactly one JSON value (with whitespace around it).
#[track_caller]
pub fn assert_json(text: &str) {
    fn value(b: &[u8], i: &mut usize) -> bool {
        skip(b, i);
        let Some(&c) = b.get(*i) else { return false };
        match c {
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                *i += 1;
                skip(b, i);
                if b.get(*i) == Some(&close) {
                    *i += 1;
                    return true;
                }
                loop {
                    if c == b'{' {
                        skip(b, i);
                        if b.get(*i) != Some(&b'"') || !string(b, i) {
                            return false;
                        }
                        skip(b, i);
                        if b.get(*i) != Some(&b':') {
                            return false;
                        }
                        *i += 1;
                    }
                    if !value(b, i) {
                        return false;
                    }
                    skip(b, i);
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(&x) if x == close => {
                            *i += 1;
                            return true;
                        }
                        _ => return false,
                    }
                }
            }
            b'"' => string(b, i),
            b't' | b'f' | b'n' => ["true", "false", "null"].iter().any(|w| {
                let ok = b[*i..].starts_with(w.as_bytes());
                if ok {
                    *i += w.len();
                }
                ok
            }),
            _ => {
                let start = *i;
                while *i < b.len() && b"-+.eE0123456789".contains(&b[*i]) {
                    *i += 1;
                }
                std::str::from_utf8(&b[start..*i])
                    .ok()
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some()
            }
        }
    }
    fn string(b: &[u8], i: &mut usize) -> bool {
        *i += 1;
        while let Some(&c) = b.get(*i) {
            *i += 1;
            match c {
                b'"' => return true,
                b'\\' => match b.get(*i) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 1,
                    Some(b'u') if b.len() >= *i + 5 => {
                        if !b[*i + 1..*i + 5].iter().all(u8::is_ascii_hexdigit) {
                            return false;
                        }
                        *i += 5;
                    }
                    _ => return false,
                },
                c if c < 0x20 => return false,
                _ => {}
            }
        }
        false
    }
    fn skip(b: &[u8], i: &mut usize) {
        while b.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
            *i += 1;
        }
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let ok = value(bytes, &mut i) && {
        skip(bytes, &mut i);
        i == bytes.len()
    };
    assert!(ok, "not one JSON value (at byte {i}): {text}");
}
