//! The real device builds of `probe`: static ELF files for each device target; the
//! x86_64 one runs here and is checked against what the host shows this test process.
//!
//! The device builds go to their own target directory (like the runtime's tests), so
//! cargo can build them while the outer `cargo test` holds the workspace's lock.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The device targets, their ELF `e_machine` and readelf's name for it.
const TARGETS: [(&str, u16, &str); 3] = [
    (
        "x86_64-unknown-linux-musl",
        62,
        "Advanced Micro Devices X86-64",
    ),
    ("aarch64-unknown-linux-musl", 183, "AArch64"),
    ("armv7-unknown-linux-gnueabihf", 40, "ARM"),
];

/// How long a probe that should end by itself may take before the test gives up on it
/// (a safety net against hanging, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Builds the probe for `TARGETS[index]` once; returns the binary's path.
fn device_binary(index: usize) -> &'static Path {
    static BINARIES: [OnceLock<PathBuf>; 3] = [const { OnceLock::new() }; 3];
    BINARIES[index].get_or_init(|| {
        let target = TARGETS[index].0;
        let target_dir = workspace().join("target/device-tests");
        let out = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args(["build", "--release", "-p", "nanostar-probe", "--bin", "probe", "--target", target])
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the probe for {target} failed (is the target installed? `rustup target add {target}`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join(target).join("release/probe")
    })
}

/// The x86_64 device build, which runs on this host.
fn probe_binary() -> &'static Path {
    device_binary(0)
}

fn probe() -> Command {
    let mut command = Command::new(probe_binary());
    command.stdin(Stdio::null());
    command
}

fn run(args: &[&str]) -> Output {
    probe().args(args).output().expect("run the probe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Waits for `child`, killing it (and failing) if it does not end within [`PATIENCE`].
fn wait(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the probe did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh directory below cargo's temporary directory for integration tests, removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fields of `/proc/<pid>/status`-style text: key (without the colon) to value.
fn status_fields(status: &str) -> HashMap<String, String> {
    status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_string(), value.trim().to_string()))
        .collect()
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn device_builds_are_static_elf_files_of_their_machine() {
    for (index, (target, machine, machine_name)) in TARGETS.iter().enumerate() {
        let bin = device_binary(index);
        let bytes = std::fs::read(bin).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{target}");
        assert_eq!(
            u16::from_le_bytes([bytes[18], bytes[19]]),
            *machine,
            "{target}: e_machine"
        );
        let headers = Command::new("readelf")
            .args(["-h", "-l", "-d"])
            .arg(bin)
            .output()
            .expect("readelf (binutils)");
        assert!(headers.status.success(), "{target}: readelf failed");
        let report = text(&headers.stdout);
        let machine_line = report
            .lines()
            .find_map(|l| l.trim().strip_prefix("Machine:"))
            .unwrap_or_else(|| panic!("{target}: no Machine line in\n{report}"));
        assert_eq!(machine_line.trim(), *machine_name, "{target}");
        assert!(
            report.contains("Type:                              EXEC"),
            "{target}: not a static executable:\n{report}"
        );
        assert!(
            !report.contains("INTERP"),
            "{target}: asks for an interpreter"
        );
        assert!(
            report.contains("There is no dynamic section"),
            "{target}: has a dynamic section"
        );
        eprintln!("{target}: {} bytes", bytes.len());
    }
}

#[test]
fn print_and_eprint_go_to_their_streams() {
    let out = run(&[
        "print",
        "hello",
        "eprint",
        "to stderr",
        "print",
        "two words",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "hello\ntwo words\n");
    assert_eq!(text(&out.stderr), "to stderr\n");
}

#[test]
fn exit_codes() {
    assert_eq!(run(&[]).status.code(), Some(0));
    for code in [0, 1, 127, 255] {
        let out = run(&["exit", &code.to_string()]);
        assert_eq!(out.status.code(), Some(code), "exit {code}");
    }
    let out = run(&["print", "before", "exit", "7", "print", "after"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "before\n");
}

#[test]
fn crash_exits_101_through_the_panic_handler() {
    let out = run(&["print", "before", "crash", "print", "after"]);
    assert_eq!(out.status.code(), Some(101));
    assert_eq!(text(&out.stdout), "before\n");
    assert!(
        text(&out.stderr).starts_with("panicked: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_command_lines_exit_2_before_running_anything() {
    for args in [
        &["print", "ran", "bogus"][..],
        &["print", "ran", "print"],
        &["print", "ran", "write", "/tmp/x"],
        &["print", "ran", "exit", "256"],
        &["print", "ran", "exit", "x"],
        &["print", "ran", "kill-self", "0"],
        &["print", "ran", "sleep", "-1"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}: ran a command");
        assert!(text(&out.stderr).contains("usage: probe"), "{args:?}");
    }
}

#[test]
fn kill_self_ends_by_the_signal() {
    for signal in [15, 9] {
        let mut child = probe()
            .args(["kill-self", &signal.to_string()])
            .spawn()
            .unwrap();
        let status = wait(&mut child);
        assert_eq!(
            status.signal(),
            Some(signal),
            "kill-self {signal}: {status}"
        );
    }
}

#[test]
fn block_term_keeps_sigterm_pending_until_sigkill() {
    let mut child = probe()
        .args(["block-term", "print", "blocked", "kill-self", "15"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "blocked\n");
    // The probe signals itself right after that line; SIGTERM then stays pending.
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    let status_path = format!("/proc/{}/status", child.id());
    let start = Instant::now();
    let fields = loop {
        let fields = status_fields(&std::fs::read_to_string(&status_path).unwrap());
        let pending = u64::from_str_radix(&fields["ShdPnd"], 16).unwrap();
        if pending & SIGTERM_BIT != 0 || start.elapsed() > PATIENCE {
            break fields;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(
        u64::from_str_radix(&fields["ShdPnd"], 16).unwrap() & SIGTERM_BIT,
        0,
        "SIGTERM never became pending: {fields:?}"
    );
    assert_ne!(
        u64::from_str_radix(&fields["SigBlk"], 16).unwrap() & SIGTERM_BIT,
        0,
        "SIGTERM not blocked"
    );
    assert_eq!(child.try_wait().unwrap(), None, "ended despite the block");
    child.kill().unwrap();
    let status = wait(&mut child);
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[test]
fn report_shows_what_the_process_sees() {
    const MOUNTINFO_MARK: &str = "--- mountinfo";
    let dir = TempDir::new("report");
    // An fd the probe inherits (opened without O_CLOEXEC, unlike std's files).
    let cargo_toml = workspace().join("Cargo.toml").canonicalize().unwrap();
    let cargo_toml = cargo_toml.to_str().unwrap();
    let inherited = rustix::fs::open(
        cargo_toml,
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let inherited_fd = rustix::fd::AsRawFd::as_raw_fd(&inherited);
    let child = probe()
        .args([
            "report",
            "cat",
            "/proc/self/status",
            "print",
            MOUNTINFO_MARK,
            "cat",
            "/proc/self/mountinfo",
        ])
        .env_clear()
        .env("PROBE_KEY", "some value")
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(inherited);
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (report, rest) = stdout
        .split_once("\nend\n")
        .unwrap_or_else(|| panic!("no end line:\n{stdout}"));
    // The probe's own /proc/self/status and mountinfo, catted after the report: the
    // kernel's view of the same process.
    let (status, mountinfo) = rest.split_once(&format!("{MOUNTINFO_MARK}\n")).unwrap();
    let status = status_fields(status);
    let lines: Vec<(&str, &str)> = report
        .lines()
        .map(|l| {
            l.split_once(' ')
                .unwrap_or_else(|| panic!("no value: {l:?}"))
        })
        .collect();
    let one = |key: &str| -> &str {
        let mut values = lines.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v);
        let value = values.next().unwrap_or_else(|| panic!("no {key} line"));
        assert_eq!(values.next(), None, "two {key} lines");
        value
    };
    let all = |key: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };

    assert_eq!(one("pid"), pid.to_string());
    assert_eq!(one("ppid"), std::process::id().to_string());
    assert_eq!(status["Pid"], one("pid"));
    let uid = words(one("uid"));
    assert_eq!(uid, words(&status["Uid"])[..3]);
    assert_eq!(uid[0], rustix::process::getuid().as_raw().to_string());
    assert_eq!(uid[1], rustix::process::geteuid().as_raw().to_string());
    let gid = words(one("gid"));
    assert_eq!(gid, words(&status["Gid"])[..3]);
    assert_eq!(gid[0], rustix::process::getgid().as_raw().to_string());
    assert_eq!(one("groups"), words(&status["Groups"]).join(","));

    // Five 16-digit masks; the kernel prints the same ones (it may know capabilities
    // above the 40 the probe tests in the bounding and ambient sets).
    let caps: Vec<(&str, u64)> = words(one("caps"))
        .iter()
        .map(|w| {
            let (name, hex) = w.split_once('=').unwrap();
            assert_eq!(hex.len(), 16, "{w}");
            (name, u64::from_str_radix(hex, 16).unwrap())
        })
        .collect();
    let known = (1u64 << 41) - 1;
    for ((name, value), (field, mask)) in caps.iter().zip([
        ("CapEff", u64::MAX),
        ("CapPrm", u64::MAX),
        ("CapInh", u64::MAX),
        ("CapBnd", known),
        ("CapAmb", known),
    ]) {
        let kernel = u64::from_str_radix(&status[field], 16).unwrap();
        assert_eq!(*value, kernel & mask, "{name} vs {field}");
    }
    assert_eq!(
        caps.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["eff", "prm", "inh", "bnd", "amb"]
    );
    assert_eq!(one("no_new_privs"), status["NoNewPrivs"]);
    assert_eq!(one("dumpable"), "1");
    assert_eq!(one("seccomp"), status["Seccomp"]);

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(one("hostname"), hostname.trim());
    assert_eq!(one("cwd"), dir.0.canonicalize().unwrap().to_str().unwrap());

    let limits = all("limit");
    let names: Vec<&str> = limits.iter().map(|l| words(l)[0]).collect();
    assert_eq!(
        names,
        [
            "cpu",
            "fsize",
            "data",
            "stack",
            "core",
            "rss",
            "nproc",
            "nofile",
            "memlock",
            "as",
            "locks",
            "sigpending",
            "msgqueue",
            "nice",
            "rtprio",
            "rttime"
        ]
    );
    // Limits survive exec: the probe has this process's.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let show = |v: Option<u64>| v.map_or("inf".to_string(), |n| n.to_string());
    assert_eq!(
        limits[7],
        format!("nofile {} {}", show(nofile.current), show(nofile.maximum))
    );
    let stack = rustix::process::getrlimit(rustix::process::Resource::Stack);
    assert_eq!(
        limits[3],
        format!("stack {} {}", show(stack.current), show(stack.maximum))
    );

    let fds: Vec<(i32, &str)> = all("fd")
        .iter()
        .map(|v| {
            let (n, target) = v.split_once(' ').unwrap();
            (n.parse().unwrap(), target)
        })
        .collect();
    assert!(fds.windows(2).all(|w| w[0].0 < w[1].0), "unsorted: {fds:?}");
    assert_eq!(fds[0], (0, "/dev/null"));
    assert!(fds[1].0 == 1 && fds[1].1.starts_with("pipe:["), "{fds:?}");
    assert!(fds[2].0 == 2 && fds[2].1.starts_with("pipe:["), "{fds:?}");
    assert!(
        fds.contains(&(inherited_fd, cargo_toml)),
        "inherited fd {inherited_fd} missing: {fds:?}"
    );
    // The probe's own descriptor (`/`, opened to probe the others) is not listed.
    assert!(!fds.iter().any(|(_, t)| *t == "/"), "{fds:?}");

    let mounts = all("mount");
    assert_eq!(mounts.len(), mountinfo.lines().count(), "{mounts:?}");
    assert!(
        mounts.iter().any(|m| m.starts_with("/proc proc ")),
        "{mounts:?}"
    );
    for (mount, info) in mounts.iter().zip(mountinfo.lines()) {
        let info = words(info);
        let dash = info.iter().position(|w| *w == "-").unwrap();
        assert_eq!(words(mount), [info[4], info[dash + 1], info[5]]);
    }

    assert_eq!(all("env"), ["PROBE_KEY=some value"]);
    assert_eq!(
        all("arg"),
        [
            "1 report",
            "2 cat",
            "3 /proc/self/status",
            "4 print",
            &format!("5 {MOUNTINFO_MARK}"),
            "6 cat",
            "7 /proc/self/mountinfo"
        ]
    );
}

#[test]
fn flood_writes_exactly_the_bytes_asked_for() {
    let out = run(&["flood", "1000000"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), 1_000_000);
    assert!(out.stdout.starts_with(b"flood 0123456789"));
    let out = run(&["flood", "10", "print", "done"]);
    assert_eq!(text(&out.stdout), "flood 0123done\n");
}

#[test]
fn cat_of_a_missing_file_fails_with_its_errno() {
    let dir = TempDir::new("missing");
    let missing = dir.join("missing");
    let out = run(&["cat", &missing, "print", "after"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), format!("error cat {missing} 2\n"));
    // mkdir of an existing directory: EEXIST.
    let out = run(&["mkdir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        format!("error mkdir {} 17\n", dir.0.display())
    );
}

#[test]
fn files_round_trip() {
    let dir = TempDir::new("files");
    let (file, sub, empty) = (dir.join("f"), dir.join("b"), dir.join("c"));
    let out = run(&[
        "write",
        &file,
        "first",
        "write",
        &file,
        "hello world",
        "mkdir",
        &sub,
        "touch",
        &empty,
        "read",
        &file,
        "cat",
        &file,
        "ls",
        dir.0.to_str().unwrap(),
        "ls",
        &sub,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("read {file} 12\nhello world\nentry b\nentry c\nentry f\n")
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello world\n");
    assert!(std::fs::metadata(&sub).unwrap().is_dir());
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    // A file larger than the probe's 4 KiB read buffer.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let big_path = dir.join("big");
    std::fs::write(&big_path, &big).unwrap();
    let out = run(&["cat", &big_path]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == big, "cat changed the bytes");
    let out = run(&["read", &big_path]);
    assert_eq!(text(&out.stdout), format!("read {big_path} 100000\n"));
}

#[test]
fn ls_sorts_bytewise() {
    let dir = TempDir::new("ls");
    let names = ["b", "a", "Z", "a.b", "aa", "_x", "10", "9"];
    for name in names {
        std::fs::write(dir.0.join(name), "").unwrap();
    }
    let out = run(&["ls", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let mut sorted = names;
    sorted.sort();
    let expected: String = sorted.iter().map(|n| format!("entry {n}\n")).collect();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn stat_shows_owner_and_permission_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("stat");
    let (file, sub) = (dir.join("file"), dir.join("sub"));
    std::fs::write(&file, "x").unwrap();
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o1750)).unwrap();
    let out = run(&["stat", &file, "stat", &sub]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let meta = std::fs::metadata(&file).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    let sub_gid = std::fs::metadata(&sub).unwrap().gid();
    assert_eq!(
        text(&out.stdout),
        format!(
            "stat {file} uid={uid} gid={gid} mode=640\nstat {sub} uid={uid} gid={sub_gid} mode=1750\n"
        )
    );
}

#[test]
fn spawn_leaves_a_living_child() {
    let dir = TempDir::new("spawn");
    let out_path = dir.0.join("out");
    // stdout to a file: the child keeps it open, which a pipe's reader would wait for.
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut probe = probe()
        .args(["spawn", "print", "done"])
        .stdout(out_file)
        .spawn()
        .unwrap();
    let status = wait(&mut probe);
    assert_eq!(status.code(), Some(0));
    let out = std::fs::read_to_string(&out_path).unwrap();
    let pid: u32 = out
        .strip_suffix("done\n")
        .and_then(|s| s.strip_prefix("spawned "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    // Clean up before asserting.
    let kill = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
    let stat = stat.expect("the spawned child is gone");
    let state = stat.rsplit_once(") ").unwrap().1.split(' ').next().unwrap();
    assert_ne!(state, "Z", "the spawned child is a zombie: {stat}");
    assert_eq!(exe.unwrap(), probe_binary().canonicalize().unwrap());
    kill.unwrap();
}

#[test]
fn clone_and_clone3_fork_a_child_that_is_reaped() {
    // Unfiltered both work (a user namespace depends on the host; the containers tests
    // check it under the default seccomp profile).
    let out = run(&["clone", "none", "clone3", "none", "print", "done"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "clone none ok\nclone3 none ok\ndone\n");
}
