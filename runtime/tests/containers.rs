//! Containers of the real `nanostar` (x86_64 device build) on this host, as root, each
//! runtime in its own mount and PID namespaces. The app is the test probe
//! (`tests/probe`), which reports what it sees from inside: ids, capabilities, mounts,
//! descriptors, limits. This host has no cgroup controllers and no device-mapper; QEMU
//! boot tests cover limits and verity.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Console, Runtime, is_root};
use nanostar_protocol::console::{Message, Reply, Request};
use nanostar_protocol::version::Version;

/// Directories every probe image has, as mount targets.
const TARGETS: [&str; 9] = [
    "proc", "dev", "tmp", "data", "host", "res", "sys", "bin", "etc",
];

/// Packs the probe as package `name` `version` with `extra` manifest TOML, installs it.
fn install_probe(rt: &Runtime, name: &str, version: &str, extra: &str) {
    let file = rt.path(&format!("{name}-{version}.npk"));
    std::fs::write(&file, probe_package(rt.dir.path(), name, version, extra)).unwrap();
    rt.ok(&["install", file.to_str().unwrap()]);
}

/// The NPK of the probe as package `name` `version` with `extra` manifest TOML; its root
/// is made under `dir`.
fn probe_package(dir: &Path, name: &str, version: &str, extra: &str) -> Vec<u8> {
    let root = dir.join(format!("root-{name}-{version}"));
    for target in TARGETS {
        std::fs::create_dir_all(root.join(target)).unwrap();
    }
    std::fs::copy(&common::probe_binaries()[0], root.join("bin/probe")).unwrap();
    std::fs::write(root.join("etc/release"), format!("{name} {version}\n")).unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"{version}\"\ninit = \"/bin/probe\"\nuid = 1000\ngid = 1000\n{extra}"
    );
    pack_toml(&toml, &root)
}

/// A resource package `name` `version` with `share/version.txt`.
fn install_resource(rt: &Runtime, name: &str, version: &str) {
    let root = rt.path(&format!("root-{name}-{version}"));
    std::fs::create_dir_all(root.join("share")).unwrap();
    std::fs::write(root.join("share/version.txt"), format!("{version}\n")).unwrap();
    let toml = format!("name = \"{name}\"\nversion = \"{version}\"\nuid = 1000\ngid = 1000\n");
    install_toml(rt, &toml, &root);
}

fn install_toml(rt: &Runtime, toml: &str, root: &Path) {
    let file = rt.path(&format!(
        "{}.npk",
        root.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&file, pack_toml(toml, root)).unwrap();
    rt.ok(&["install", file.to_str().unwrap()]);
}

fn pack_toml(toml: &str, root: &Path) -> Vec<u8> {
    common::npk_bytes(toml, root, None, nanostar_protocol::npk::Arch::X86_64)
}

/// The value of `key` in a probe report (the first line `key VALUE`).
fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{report}"))
}

/// The runtime's pid (the only child of `unshare`).
fn runtime_pid(rt: &Runtime) -> String {
    let unshare = rt.child.as_ref().unwrap().id();
    std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .unwrap()
        .trim()
        .to_string()
}

fn count_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn count_mounts(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .count()
}

/// Every process whose command name is `probe` and whose ancestors include `pid`.
fn probes_under(pid: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = entry.file_name().into_string().unwrap();
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim() != "probe" {
            continue;
        }
        let mut ancestor = p.clone();
        while let Ok(stat) = std::fs::read_to_string(format!("/proc/{ancestor}/stat")) {
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .unwrap_or("0")
                .to_string();
            if ppid == pid {
                found.push(p.clone());
                break;
            }
            if ppid == "0" || ppid == "1" {
                break;
            }
            ancestor = ppid;
        }
    }
    found
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ISOLATED: &str = r#"suppl_groups = [2000, 2001]
env = { GREETING = "hi", MODE = "manifest" }
[rlimits]
nofile = { soft = 100, hard = 200 }
[mounts."/proc"]
type = "proc"
[mounts."/dev"]
type = "dev"
[mounts."/tmp"]
type = "tmpfs"
size = "1M"
[mounts."/data"]
type = "persist"
[mounts."/host"]
type = "bind"
host = "HOST"
options = ["nosuid", "nodev"]
[mounts."/sys"]
type = "sysfs"
"#;

#[test]
fn the_app_sees_its_own_isolated_world() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    let host = rt.path("host-dir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("shared.txt"), "from the host\n").unwrap();
    let manifest = ISOLATED.replace("HOST", host.to_str().unwrap());
    install_probe(&rt, "iso", "1.0.0", &manifest);
    install_probe(
        &rt,
        "capable",
        "1.0.0",
        "capabilities = [\"CAP_NET_BIND_SERVICE\", \"CAP_KILL\"]\n[mounts.\"/proc\"]\ntype = \"proc\"\n",
    );
    let mut console = rt.console();
    let (status, report) = console.run("iso", &["report", "cat", "/host/shared.txt"]);
    assert_eq!(status, "Code(0)", "{report}");
    // PID 1 is the container's init; the app is its child.
    assert_eq!(field(&report, "pid"), "2", "{report}");
    assert_eq!(field(&report, "ppid"), "1");
    assert_eq!(field(&report, "uid"), "1000 1000 1000");
    assert_eq!(field(&report, "gid"), "1000 1000 1000");
    assert_eq!(field(&report, "groups"), "2000,2001");
    assert_eq!(field(&report, "no_new_privs"), "1");
    assert_eq!(field(&report, "hostname"), "iso");
    assert_eq!(field(&report, "cwd"), "/");
    assert_eq!(
        field(&report, "caps"),
        "eff=0000000000000000 prm=0000000000000000 inh=0000000000000000 bnd=0000000000000000 amb=0000000000000000"
    );
    assert_eq!(field(&report, "limit nofile"), "100 200");
    // No `[seccomp]` table: the default profile's filter (`Seccomp:` 2 in
    // /proc/self/status); `a_package_seccomp_filter_is_loaded_and_enforced` has the others.
    assert_eq!(field(&report, "seccomp"), "2");
    // The environment: the manifest's and the runtime's own, nothing of the runtime's.
    let env: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .collect();
    let mut env_sorted = env.clone();
    env_sorted.sort();
    assert_eq!(
        env_sorted,
        [
            "GREETING=hi",
            "HOME=/",
            "MODE=manifest",
            "NANOSTAR_NAME=iso",
            "NANOSTAR_VERSION=1.0.0",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ],
        "{report}"
    );
    // Descriptors: stdin /dev/null, stdout and stderr pipes, nothing else.
    let fds: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("fd "))
        .collect();
    assert_eq!(fds.len(), 3, "{report}");
    assert_eq!(fds[0], "0 /dev/null");
    assert!(
        fds[1].starts_with("1 pipe:[") && fds[2].starts_with("2 pipe:["),
        "{fds:?}"
    );
    // Mounts as the app sees them, with their flags.
    let mount = |target: &str| -> String {
        report
            .lines()
            .filter_map(|l| l.strip_prefix("mount "))
            .find(|l| l.split(' ').next() == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted:\n{report}"))
            .to_string()
    };
    let root = mount("/");
    assert!(root.starts_with("/ squashfs ro,nosuid,nodev"), "{root}");
    assert!(mount("/proc").starts_with("/proc proc ro,nosuid,nodev,noexec"));
    let tmp = mount("/tmp");
    assert!(
        tmp.starts_with("/tmp tmpfs rw,nosuid,nodev,noexec"),
        "{tmp}"
    );
    assert!(
        mount("/data").contains(" rw,nosuid,nodev,noexec"),
        "{}",
        mount("/data")
    );
    let bind = mount("/host");
    assert!(bind.contains(" ro,nosuid,nodev"), "{bind}");
    assert!(mount("/dev").starts_with("/dev tmpfs ro,nosuid,noexec"));
    assert!(mount("/sys").starts_with("/sys sysfs ro,nosuid,nodev,noexec"));
    let count = report.lines().filter(|l| l.starts_with("mount ")).count();
    assert_eq!(
        count, 7,
        "nothing of the host's mounts is visible:\n{report}"
    );
    assert!(report.contains("from the host"));
    // An override replaces the arguments and adds to (or replaces in) the environment.
    assert_eq!(
        console.start_env("iso", &["report"], &[("MODE", "override"), ("EXTRA", "1")]),
        "Ok"
    );
    assert_eq!(console.wait_exit("iso"), "Code(0)");
    let log = String::from_utf8(console.logs_raw("iso").1).unwrap();
    let last = &log[log.rfind("pid ").unwrap()..];
    assert!(last.contains("env MODE=override") && last.contains("env EXTRA=1"));
    assert!(!last.contains("env MODE=manifest"));
    // Kept capabilities are effective, permitted, inheritable, ambient, and the only
    // ones in the bounding set.
    let (status, report) = console.run("capable", &["report"]);
    assert_eq!(status, "Code(0)", "{report}");
    let bits = format!("{:016x}", (1u64 << 10) | (1 << 5));
    assert_eq!(
        field(&report, "caps"),
        format!("eff={bits} prm={bits} inh={bits} bnd={bits} amb={bits}")
    );
}

#[test]
fn exit_codes_and_signals_are_reported_exactly() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "exits", "1.0.0", "");
    let mut console = rt.console();
    for (args, expected) in [
        (&["exit", "0"][..], "Code(0)"),
        (&["exit", "1"], "Code(1)"),
        (&["crash"], "Code(101)"),
        (&["exit", "127"], "Code(127)"),
        (&["exit", "255"], "Code(255)"),
        (&["kill-self", "15"], "Signal(15)"),
        (&["kill-self", "9"], "Signal(9)"),
        (&["kill-self", "11"], "Signal(11)"),
    ] {
        let (status, log) = console.run("exits", args);
        assert_eq!(status, expected, "{args:?}: {log}");
    }
    // What `list` shows afterwards.
    let list = rt.ok(&["--json", "list"]);
    assert!(list.contains("\"state\":\"stopped\""), "{list}");
    // A start that cannot exec names the step and the errno.
    install_probe(&rt, "broken", "1.0.0", "");
    let root = rt.path("root-noinit");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/other"), "not the init\n").unwrap();
    install_toml(
        &rt,
        "name = \"noinit\"\nversion = \"1.0.0\"\ninit = \"/bin/missing\"\nuid = 1000\ngid = 1000\n",
        &root,
    );
    let reply = console.start("noinit", &[]);
    assert_eq!(reply, "Error(Setup { step: Exec, errno: 2 })");
    assert_eq!(console.start("nosuch", &[]), "Error(UnknownPackage)");
}

#[test]
fn stop_is_graceful_then_forced_and_kills_the_whole_container() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "svc", "1.0.0", "stop_timeout_ms = 300\n");
    let runtime = runtime_pid(&rt);
    let mut console = rt.console();
    // SIGTERM ends it.
    assert_eq!(console.start("svc", &["spawn", "spawn", "pause"]), "Ok");
    wait_until("three probes", || probes_under(&runtime).len() == 3);
    assert_eq!(console.start("svc", &["pause"]), "Error(AlreadyRunning)");
    assert_eq!(console.stop("svc", None), "Stopped(Signal(15))");
    wait_until("no probe left", || probes_under(&runtime).is_empty());
    // An app that ignores SIGTERM is killed when the timeout passes.
    assert_eq!(
        console.start("svc", &["block-term", "spawn", "pause"]),
        "Ok"
    );
    // The stop only once SIGTERM is blocked: the app spawns after blocking it.
    wait_until("two probes", || probes_under(&runtime).len() == 2);
    assert_eq!(console.stop("svc", None), "Stopped(Signal(9))");
    wait_until("no probe left", || probes_under(&runtime).is_empty());
    assert_eq!(console.stop("svc", None), "Error(NotRunning)");
    // kill sends any signal; SIGKILL ends the container at once.
    assert_eq!(console.start("svc", &["pause"]), "Ok");
    let kill = |signal: u8, console: &mut Console| {
        console.request(Request::Kill {
            name: "svc",
            version: None,
            signal,
        })
    };
    assert_eq!(kill(10, &mut console), "Ok");
    assert_eq!(console.wait_exit("svc"), "Signal(10)");
    assert_eq!(console.start("svc", &["block-term", "pause"]), "Ok");
    assert_eq!(kill(9, &mut console), "Ok");
    assert_eq!(console.wait_exit("svc"), "Signal(9)");
    assert_eq!(kill(0, &mut console), "Error(InvalidArgument)");
    // The runtime dies: its containers die with it.
    assert_eq!(console.start("svc", &["spawn", "pause"]), "Ok");
    wait_until("two probes", || probes_under(&runtime).len() == 2);
    let probes = probes_under(&runtime);
    std::process::Command::new("kill")
        .args(["-KILL", &runtime])
        .status()
        .unwrap();
    wait_until("the container to die with the runtime", || {
        probes
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    });
}

#[test]
fn logs_are_kept_bounded_and_followable() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "chatty", "1.0.0", "");
    let runtime = runtime_pid(&rt);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{runtime}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let mut console = rt.console();
    let (status, log) = console.run(
        "chatty",
        &["print", "one", "eprint", "two", "print", "three"],
    );
    assert_eq!(status, "Code(0)");
    assert_eq!(log, "one\ntwo\nthree\n");
    // A follower sees new output as it comes (following a container that is not
    // running ends at once: `following_logs_ends_with_the_exit_and_tail_shows_the_last_lines`).
    assert_eq!(console.start("chatty", &["print", "live", "pause"]), "Ok");
    let mut follower = rt.connect();
    follower.hello();
    follower.send(&Message::Request {
        id: 9,
        request: Request::Logs {
            name: "chatty",
            version: None,
            follow: true,
        },
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("live") {
        let frame = follower.read_frame();
        assert!(!frame.is_empty());
        if let Message::Reply {
            reply: Reply::Log { data, .. },
            ..
        } = Message::decode(&frame).unwrap()
        {
            seen.extend_from_slice(data);
        }
    }
    assert_eq!(console.stop("chatty", None), "Stopped(Signal(15))");
    // A flood: the runtime keeps serving, its memory does not grow with the output, and
    // the log holds the newest bytes with the loss counted.
    let before = rss();
    assert_eq!(
        console.start("chatty", &["flood", "20000000", "print", "tail"]),
        "Ok"
    );
    let listed = rt.ok(&["list"]);
    assert!(
        listed.contains("chatty"),
        "the runtime answers during the flood"
    );
    assert_eq!(console.wait_exit("chatty"), "Code(0)");
    let (dropped, log) = console.logs_raw("chatty");
    assert!(log.len() <= 16 * 1024, "{}", log.len());
    assert!(log.ends_with(b"tail\n"));
    assert!(dropped > 0);
    let growth = rss().saturating_sub(before);
    assert!(
        growth < 512,
        "the runtime grew by {growth} KiB during a 20 MB flood"
    );
}

#[test]
fn persistent_data_survives_restarts_and_is_wiped_on_request() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(
        &rt,
        "keeper",
        "1.0.0",
        "[mounts.\"/data\"]\ntype = \"persist\"\n",
    );
    let mut console = rt.console();
    let (status, _) = console.run("keeper", &["write", "/data/note", "remember me"]);
    assert_eq!(status, "Code(0)");
    let dir = rt.path("data/keeper");
    let meta = std::fs::metadata(&dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1000, 0o700)
    );
    let (status, out) = console.run("keeper", &["cat", "/data/note"]);
    assert_eq!(
        (status.as_str(), out.as_str()),
        ("Code(0)", "remember me\n")
    );
    // The image itself is read-only.
    let (status, out) = console.run("keeper", &["write", "/etc/release", "x"]);
    assert_eq!(status, "Code(3)", "{out}");
    assert!(out.contains("error write /etc/release 30"), "EROFS: {out}");
    // An update keeps the data; uninstall --wipe removes it.
    install_probe(
        &rt,
        "keeper",
        "1.1.0",
        "[mounts.\"/data\"]\ntype = \"persist\"\n",
    );
    let (status, out) = console.run("keeper", &["cat", "/data/note", "cat", "/etc/release"]);
    assert_eq!(status, "Code(0)");
    assert_eq!(out, "remember me\nkeeper 1.1.0\n");
    rt.ok(&["umount", "keeper", "1.1.0"]);
    rt.ok(&["umount", "keeper", "1.0.0"]);
    rt.ok(&["uninstall", "keeper", "1.0.0"]);
    assert!(dir.exists(), "kept without --wipe");
    rt.ok(&["uninstall", "keeper", "1.1.0", "--wipe"]);
    assert!(!dir.exists(), "wiped");
}

#[test]
fn resources_resolve_to_the_newest_match_and_stay_mounted_while_used() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    for version in ["1.0.0", "1.2.0", "2.0.0"] {
        install_resource(&rt, "fonts", version);
    }
    let uses = "[mounts.\"/res\"]\ntype = \"resource\"\nname = \"fonts\"\nversion = \"^1.0.0\"\ndir = \"/share\"\n";
    install_probe(&rt, "viewer", "1.0.0", uses);
    install_probe(
        &rt,
        "orphan",
        "1.0.0",
        &uses.replace("\"fonts\"", "\"missing\""),
    );
    install_probe(
        &rt,
        "binder",
        "1.0.0",
        "[mounts.\"/host\"]\ntype = \"bind\"\nhost = \"/nonexistent/path\"\n",
    );
    let mut console = rt.console();
    let (status, out) = console.run(
        "viewer",
        &["cat", "/res/version.txt", "write", "/res/x", "y"],
    );
    assert_eq!(status, "Code(3)", "the resource is read-only: {out}");
    assert!(out.starts_with("1.2.0\n"), "{out}");
    assert_eq!(console.start("viewer", &["pause"]), "Ok");
    let busy = console.request(Request::Umount(nanostar_protocol::console::PackageId {
        name: "fonts",
        version: Version::new(1, 2, 0),
    }));
    assert!(
        busy.contains("Busy") && busy.contains("\"viewer\""),
        "{busy}"
    );
    let own = console.request(Request::Umount(nanostar_protocol::console::PackageId {
        name: "viewer",
        version: Version::new(1, 0, 0),
    }));
    assert!(own.contains("Busy"), "{own}");
    assert_eq!(console.stop("viewer", None), "Stopped(Signal(15))");
    rt.ok(&["umount", "fonts", "1.2.0"]);
    // Refusals, each with its reason.
    assert_eq!(
        console.start("orphan", &[]),
        "Error(ResourceMissing { name: \"missing\" })"
    );
    assert_eq!(
        console.start("binder", &[]),
        "Error(BindSourceMissing { path: \"/nonexistent/path\" })"
    );
    assert_eq!(console.start("fonts", &[]), "Error(IsResource)");
    // Nothing of the refused starts is left running; the runtime still serves.
    let list = rt.ok(&["list"]);
    assert!(list.contains("viewer"), "{list}");
}

#[test]
fn start_stop_cycles_leak_no_descriptor_and_no_mount() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(
        &rt,
        "cycle",
        "1.0.0",
        "[mounts.\"/proc\"]\ntype = \"proc\"\n[mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"64K\"\n[mounts.\"/dev\"]\ntype = \"dev\"\n",
    );
    let runtime = runtime_pid(&rt);
    let mut console = rt.console();
    // The first start mounts the package; count after it.
    assert_eq!(console.start("cycle", &["pause"]), "Ok");
    assert_eq!(console.stop("cycle", None), "Stopped(Signal(15))");
    let (fds, mounts) = (count_fds(&runtime), count_mounts(&runtime));
    for _ in 0..10 {
        assert_eq!(console.start("cycle", &["print", "x", "pause"]), "Ok");
        assert_eq!(console.stop("cycle", Some(2000)), "Stopped(Signal(15))");
    }
    assert_eq!(count_fds(&runtime), fds, "descriptors leaked");
    assert_eq!(count_mounts(&runtime), mounts, "mounts leaked");
    assert!(probes_under(&runtime).is_empty());
}

#[test]
fn cgroups_hold_the_container_and_limits_need_controllers() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    // This host's cgroup v2 hierarchy (if any) has no controllers: a container can live
    // in a cgroup there, but memory limits cannot be applied.
    let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            p.join("cgroup.procs").exists() && p.join("cgroup.kill").exists() || {
                std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap()
                    .lines()
                    .any(|l| l.contains(&format!(" {} ", p.display())) && l.contains(" - cgroup2 "))
            }
        });
    let Some(unified) = unified else {
        eprintln!("note: no cgroup v2 hierarchy here");
        return;
    };
    let root = unified.join(format!("nanostar-test-{}", std::process::id()));
    let rt = Runtime::start_configured(|_| {}, &format!("cgroup = \"{}\"", root.display()));
    install_probe(&rt, "grouped", "1.0.0", "");
    install_probe(&rt, "limited", "1.0.0", "[cgroups]\nmemory_max = \"8M\"\n");
    let mut console = rt.console();
    assert_eq!(console.start("grouped", &["report", "pause"]), "Ok");
    let procs = std::fs::read_to_string(root.join("grouped/cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 2, "init and app: {procs}");
    assert_eq!(console.stop("grouped", None), "Stopped(Signal(15))");
    assert!(!root.join("grouped").exists(), "the cgroup is removed");
    let has_memory = std::fs::read_to_string(root.join("cgroup.controllers"))
        .unwrap_or_default()
        .contains("memory");
    if !has_memory {
        assert_eq!(console.start("limited", &[]), "Error(CgroupUnavailable)");
    }
    drop(console);
    drop(rt);
    let _ = std::fs::remove_dir(&root);
}

#[test]
fn restart_policy_backs_off_and_gives_up() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(
        &rt,
        "flaky",
        "1.0.0",
        "args = [\"print\", \"attempt\", \"exit\", \"3\"]\n[restart]\nmode = \"on-failure\"\nmax_restarts = 2\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n",
    );
    install_probe(
        &rt,
        "fine",
        "1.0.0",
        "args = [\"exit\", \"0\"]\n[restart]\nmode = \"on-failure\"\n",
    );
    let mut console = rt.console();
    assert_eq!(console.request(start_manifest("flaky")), "Ok");
    for _ in 0..3 {
        assert_eq!(console.wait_exit("flaky"), "Code(3)");
    }
    wait_until("flaky to give up", || {
        rt.ok(&["--json", "list"]).contains("\"restarts\":2")
    });
    // Subscribers are told that the policy gave up, with the last exit.
    console.request(Request::List { after: None });
    assert!(
        console.seen.iter().any(|n| n.starts_with("GaveUp")
            && n.contains("\"flaky\"")
            && n.ends_with("restarts: 2, status: Code(3) }")),
        "{:?}",
        console.seen
    );
    let (_, log) = console.logs_raw("flaky");
    assert_eq!(String::from_utf8(log).unwrap(), "attempt\n".repeat(3));
    // A clean exit is not a failure: no restart.
    assert_eq!(console.request(start_manifest("fine")), "Ok");
    assert_eq!(console.wait_exit("fine"), "Code(0)");
    let list = rt.ok(&["--json", "list"]);
    let fine = &list[list.find("\"fine\"").unwrap()..];
    assert!(fine.contains("\"restarts\":0"), "{list}");
    // A stop during the back-off cancels the restart.
    install_probe(
        &rt,
        "slow",
        "1.0.0",
        "args = [\"exit\", \"1\"]\n[restart]\nmode = \"always\"\nbackoff_initial_ms = 60000\nbackoff_max_ms = 60000\n",
    );
    assert_eq!(console.request(start_manifest("slow")), "Ok");
    assert_eq!(console.wait_exit("slow"), "Code(1)");
    wait_until("slow to wait for its restart", || {
        rt.ok(&["--json", "list"]).contains("\"restarting\"")
    });
    // Its exit was reported already; the stop answers with it.
    let stop = Request::Stop {
        name: "slow",
        version: None,
        timeout_ms: None,
    };
    assert_eq!(console.request(stop), "Stopped(Code(1))");
    assert!(!rt.ok(&["--json", "list"]).contains("\"restarting\""));
}

/// A start with the manifest's own arguments.
fn start_manifest(name: &str) -> Request<'_> {
    Request::Start {
        name,
        version: None,
        args: None,
        env: heapless::Vec::new(),
    }
}

#[test]
fn autostart_packages_start_with_the_runtime() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start_with(|dir| {
        let repo = dir.join("repo");
        let auto = probe_package(
            dir,
            "auto",
            "1.0.0",
            "autostart = \"relaxed\"\nargs = [\"print\", \"booted\", \"pause\"]\n",
        );
        std::fs::write(repo.join("auto-1.0.0.npk"), auto).unwrap();
        let broken = probe_package(
            dir,
            "broken",
            "1.0.0",
            "autostart = \"relaxed\"\n[mounts.\"/host\"]\ntype = \"bind\"\nhost = \"/nonexistent\"\n",
        );
        std::fs::write(repo.join("broken-1.0.0.npk"), broken).unwrap();
        let manual = probe_package(dir, "manual", "1.0.0", "args = [\"pause\"]\n");
        std::fs::write(repo.join("manual-1.0.0.npk"), manual).unwrap();
    });
    let mut console = rt.console();
    wait_until("auto to log", || {
        console.logs_raw("auto").1.starts_with(b"booted\n")
    });
    let list = rt.ok(&["--json", "list"]);
    let row = |name: &str| {
        let at = list.find(&format!("\"{name}\"")).unwrap();
        list[at..].lines().next().unwrap().to_string()
    };
    assert!(row("auto").contains("\"state\":\"running\""), "{list}");
    assert!(row("manual").contains("\"container\":null"), "{list}");
    assert!(row("broken").contains("\"container\":null"), "{list}");
    assert_eq!(console.stop("auto", None), "Stopped(Signal(15))");
}

#[test]
fn init_shows_as_init_and_the_app_gets_a_default_path_and_home() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    let proc_mount = "[mounts.\"/proc\"]\ntype = \"proc\"\n";
    install_probe(&rt, "plain", "1.0.0", proc_mount);
    install_probe(
        &rt,
        "own",
        "1.0.0",
        &format!("env = {{ PATH = \"/bin\", HOME = \"/data\" }}\n{proc_mount}"),
    );
    let mut console = rt.console();
    // What the container's `ps` reads: never the host's command line or config path.
    let (status, cmdline) = console.run("plain", &["cat", "/proc/1/cmdline"]);
    assert_eq!(status, "Code(0)", "{cmdline}");
    assert_eq!(cmdline.trim_end_matches('\0'), "init", "{cmdline:?}");
    let (_, comm) = console.run("plain", &["cat", "/proc/1/comm"]);
    assert_eq!(comm, "init\n");
    let (_, report) = console.run("own", &["report"]);
    let env: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .collect();
    assert!(
        env.contains(&"PATH=/bin") && env.contains(&"HOME=/data"),
        "{report}"
    );
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    // A start request's environment wins over the default too.
    assert_eq!(
        console.start_env("plain", &["report"], &[("HOME", "/tmp")]),
        "Ok"
    );
    assert_eq!(console.wait_exit("plain"), "Code(0)");
    let log = String::from_utf8(console.logs_raw("plain").1).unwrap();
    assert!(
        log.contains("env HOME=/tmp") && !log.contains("env HOME=/\n"),
        "{log}"
    );
}

#[test]
fn following_logs_ends_with_the_exit_and_tail_shows_the_last_lines() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "talker", "1.0.0", "");
    let mut console = rt.console();
    assert_eq!(
        console.start(
            "talker",
            &["print", "one", "print", "two", "print", "three", "pause"]
        ),
        "Ok"
    );
    wait_until("three lines", || console.logs("talker").contains("three"));
    // The last two lines, then following until the container ends.
    let mut follower = rt.connect();
    follower
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    follower.hello();
    follower.send(&Message::Request {
        id: 4,
        request: Request::TailLogs {
            name: "talker",
            version: None,
            follow: true,
            lines: Some(2),
        },
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("three") {
        match Message::decode(&follower.read_frame()).unwrap() {
            Message::Reply {
                id: 4,
                reply: Reply::Log { data, .. },
            } => seen.extend_from_slice(data),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&seen), "two\nthree\n");
    // A second log read on the same connection is refused; the first one goes on (it
    // used to be replaced, and never ended).
    follower.send(&Message::Request {
        id: 6,
        request: Request::Logs {
            name: "talker",
            version: None,
            follow: false,
        },
    });
    let refused = Message::decode(&follower.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap();
    assert_eq!(refused, "Reply { id: 6, reply: Error(Full(LogReads)) }");
    assert_eq!(console.stop("talker", None), "Stopped(Signal(15))");
    let end = Message::decode(&follower.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap();
    assert_eq!(end, "Reply { id: 4, reply: Ended(Signal(15)) }");
    // Following a container that is not running: what there is, and how it ended.
    follower.send(&Message::Request {
        id: 5,
        request: Request::TailLogs {
            name: "talker",
            version: None,
            follow: true,
            lines: Some(1),
        },
    });
    let frame = follower.read_frame();
    let Ok(Message::Reply {
        id: 5,
        reply: Reply::Log { data, .. },
    }) = Message::decode(&frame)
    else {
        panic!("{frame:?}");
    };
    assert_eq!(data, b"three\n");
    let end = Message::decode(&follower.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap();
    assert_eq!(end, "Reply { id: 5, reply: Ended(Signal(15)) }");
}

#[test]
fn a_package_seccomp_filter_is_loaded_and_enforced() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    // Only what the probe needs to report and fail: no mkdir of any kind.
    install_probe(
        &rt,
        "narrow",
        "1.0.0",
        "[seccomp]\nprofile = \"none\"\n[seccomp.allow]\nwrite = \"any\"\nexit_group = \"any\"\nopen = \"any\"\nopenat = \"any\"\nread = \"any\"\nclose = \"any\"\n[mounts.\"/proc\"]\ntype = \"proc\"\n[mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"64K\"\n",
    );
    install_probe(
        &rt,
        "wide",
        "1.0.0",
        "[seccomp]\nprofile = \"default\"\n[mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"64K\"\n",
    );
    // No filter only when chosen.
    install_probe(
        &rt,
        "free",
        "1.0.0",
        "[seccomp]\nprofile = \"unconfined\"\n[mounts.\"/proc\"]\ntype = \"proc\"\n",
    );
    let mut console = rt.console();
    // The filter is in place (mode 2) ...
    let (status, log) = console.run("narrow", &["cat", "/proc/self/status"]);
    assert_eq!(status, "Code(0)", "{log}");
    let mode = log
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    assert_eq!(mode, Some("2"), "{log}");
    // ... and enforced: a call it does not allow fails with ENOSYS (38 on x86_64), not
    // EPERM, and nothing else happens.
    let (status, log) = console.run("narrow", &["mkdir", "/tmp/made"]);
    // The probe's exit code for a failed command.
    assert_eq!(status, "Code(3)", "{log}");
    assert_eq!(log, "error mkdir /tmp/made 38\n");
    // The same call under the default profile works.
    let (status, log) = console.run("wide", &["mkdir", "/tmp/made", "stat", "/tmp/made"]);
    assert_eq!(status, "Code(0)", "{log}");
    assert!(log.starts_with("stat /tmp/made "), "{log}");
    let (status, log) = console.run("free", &["cat", "/proc/self/status"]);
    assert_eq!(status, "Code(0)", "{log}");
    let mode = log
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    assert_eq!(mode, Some("0"), "{log}");
}

#[test]
fn the_default_profile_refuses_namespaces_through_clone_and_clone3() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    // No `[seccomp]` table: the default profile.
    install_probe(&rt, "plain", "1.0.0", "");
    // `clone` allowed by name: every clone, as the manifest says; clone3 still out.
    install_probe(
        &rt,
        "cloner",
        "1.0.0",
        "[seccomp]\nprofile = \"default\"\n[seccomp.allow]\nclone = \"any\"\n",
    );
    // The control: without a filter this host lets the app make a user namespace, so
    // the refusals below are the filter's.
    install_probe(
        &rt,
        "free",
        "1.0.0",
        "[seccomp]\nprofile = \"unconfined\"\n",
    );
    let mut console = rt.console();
    let calls = [
        "clone", "user", "clone3", "user", "clone", "none", "clone3", "none", "spawn",
    ];
    let (status, log) = console.run("free", &calls[..8]);
    assert_eq!(status, "Code(0)", "{log}");
    assert_eq!(
        log,
        "clone user ok\nclone3 user ok\nclone none ok\nclone3 none ok\n"
    );
    // EPERM (1) for the namespace, ENOSYS (38) for clone3 whatever it asks; a plain
    // clone works, and so does the probe's fork (clone3, then clone on ENOSYS).
    let (status, log) = console.run("plain", &calls);
    assert_eq!(status, "Code(0)", "{log}");
    let (log, spawned) = log.split_at(log.find("spawned ").expect(&log));
    assert_eq!(
        log,
        "clone user errno 1\nclone3 user errno 38\nclone none ok\nclone3 none errno 38\n"
    );
    assert!(
        spawned.trim_end()["spawned ".len()..]
            .parse::<u32>()
            .is_ok(),
        "{spawned}"
    );
    let (status, log) = console.run("cloner", &calls[..8]);
    assert_eq!(status, "Code(0)", "{log}");
    assert_eq!(
        log,
        "clone user ok\nclone3 user errno 38\nclone none ok\nclone3 none errno 38\n"
    );
}

/// The state letter of process `pid` (`/proc/PID/stat`: `S` sleeping, `T` stopped, ...).
fn process_state(pid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.chars().next())
        .unwrap_or('?')
}

/// The parent of process `pid`.
fn parent_of(pid: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap()
        .to_string()
}

fn kill_request(name: &str, signal: u8) -> Request<'_> {
    Request::Kill {
        name,
        version: None,
        signal,
    }
}

/// Starts `name` as an app that blocks SIGTERM (and pauses) and waits until it does.
fn start_deaf(console: &mut Console, runtime: &str, name: &str) {
    assert_eq!(console.start(name, &["block-term", "spawn", "pause"]), "Ok");
    // The probe spawns after blocking SIGTERM.
    wait_until("two probes", || probes_under(runtime).len() == 2);
}

#[test]
fn kill_stop_stops_the_app_and_the_container_still_stops_and_reports() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    install_probe(&rt, "svc", "1.0.0", "stop_timeout_ms = 300\n");
    let runtime = runtime_pid(&rt);
    let mut console = rt.console();
    assert_eq!(console.start("svc", &["pause"]), "Ok");
    wait_until("the app", || probes_under(&runtime).len() == 1);
    let app = probes_under(&runtime).remove(0);
    let init = parent_of(&app);
    assert_eq!(console.request(kill_request("svc", 19)), "Ok");
    wait_until("the app to stop", || process_state(&app) == 'T');
    // Init was not stopped: it still forwards, SIGCONT included.
    assert_ne!(process_state(&init), 'T');
    assert_eq!(console.request(kill_request("svc", 18)), "Ok");
    wait_until("the app to go on", || process_state(&app) != 'T');
    // A stopped app still stops: the stop's SIGTERM comes with a SIGCONT, so SIGTERM's
    // default action ends it, and init reports it.
    assert_eq!(console.request(kill_request("svc", 19)), "Ok");
    wait_until("the app to stop", || process_state(&app) == 'T');
    assert_eq!(console.stop("svc", None), "Stopped(Signal(15))");
    wait_until("no probe left", || probes_under(&runtime).is_empty());
    // One that blocks SIGTERM ends at the timeout's SIGKILL.
    start_deaf(&mut console, &runtime, "svc");
    // The app, not the child it spawned.
    let probes = probes_under(&runtime);
    let app = probes
        .iter()
        .find(|p| !probes.contains(&parent_of(p)))
        .unwrap()
        .clone();
    assert_eq!(console.request(kill_request("svc", 19)), "Ok");
    wait_until("the app to stop", || process_state(&app) == 'T');
    assert_eq!(console.stop("svc", None), "Stopped(Signal(9))");
    wait_until("no probe left", || probes_under(&runtime).is_empty());
    // Without an app there is nothing to stop.
    assert_eq!(
        console.request(kill_request("svc", 19)),
        "Error(NotRunning)"
    );
}

#[test]
fn stop_timeouts_are_bounded_and_a_shorter_stop_hastens_the_kill() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    // The bound as high as a manifest may go: the first stop below waits ten minutes.
    let mut rt = Runtime::start_configured(|_| {}, "[limits]\nmax_stop_timeout_ms = 600000\n");
    install_probe(&rt, "svc", "1.0.0", "stop_timeout_ms = 600000\n");
    let runtime = runtime_pid(&rt);
    let mut first = rt.console();
    start_deaf(&mut first, &runtime, "svc");
    // Above the bound: refused, and nothing stopped.
    assert_eq!(first.stop("svc", Some(600_001)), "Error(InvalidArgument)");
    let out = rt.cli(&["stop", "svc", "--timeout", "4294967295"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("max_stop_timeout_ms"), "{said}");
    assert!(rt.ok(&["--json", "list"]).contains("\"running\""));
    // A stop with the manifest's ten minutes, then one with 300 ms: the kill comes at the
    // second one's deadline, and both stoppers hear how it ended.
    let stop = |timeout_ms| Request::Stop {
        name: "svc",
        version: None,
        timeout_ms,
    };
    first.send(&Message::Request {
        id: 1000,
        request: stop(None),
    });
    wait_until("the container to be stopping", || {
        rt.ok(&["--json", "list"]).contains("\"stopping\"")
    });
    let mut second = rt.console();
    assert_eq!(second.stop("svc", Some(300)), "Stopped(Signal(9))");
    assert_eq!(first.reply(1000), "Stopped(Signal(9))");
    wait_until("no probe left", || probes_under(&runtime).is_empty());
    rt.stop();

    // A manifest's stop_timeout_ms above the bound is cut to it.
    let rt = Runtime::start_configured(|_| {}, "[limits]\nmax_stop_timeout_ms = 300\n");
    install_probe(&rt, "svc", "1.0.0", "stop_timeout_ms = 600000\n");
    let runtime = runtime_pid(&rt);
    let mut console = rt.console();
    start_deaf(&mut console, &runtime, "svc");
    assert_eq!(console.stop("svc", Some(301)), "Error(InvalidArgument)");
    assert_eq!(console.stop("svc", None), "Stopped(Signal(9))");
}

#[test]
fn shutdown_kills_what_ignores_sigterm_at_its_deadline_and_still_serves_kill() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let mut rt = Runtime::start_configured(
        |_| {},
        "[limits]\nmax_stop_timeout_ms = 600000\nshutdown_timeout_ms = 500\n",
    );
    install_probe(&rt, "svc", "1.0.0", "stop_timeout_ms = 600000\n");
    let runtime = runtime_pid(&rt);
    let mut console = rt.console();
    start_deaf(&mut console, &runtime, "svc");
    // A stop with ten minutes pending, then the shutdown: its deadline wins.
    console.send(&Message::Request {
        id: 1000,
        request: Request::Stop {
            name: "svc",
            version: None,
            timeout_ms: Some(600_000),
        },
    });
    wait_until("the container to be stopping", || {
        rt.ok(&["--json", "list"]).contains("\"stopping\"")
    });
    assert_eq!(console.request(Request::Shutdown), "Ok");
    // kill is served while shutting down (SIGWINCH: the probe ignores it).
    assert_eq!(console.request(kill_request("svc", 28)), "Ok");
    assert_eq!(console.reply(1000), "Stopped(Signal(9))");
    // The runtime ends by itself, although its app ignores SIGTERM and both its stop
    // timeouts are ten minutes.
    let mut child = rt.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the shutdown did not complete");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(probes_under(&runtime).is_empty());
    // Its last word to subscribers.
    let mut last = String::new();
    loop {
        let message = console.answer();
        if message.is_empty() {
            break;
        }
        last = message;
    }
    assert_eq!(last, "Notification(ShuttingDown)");
}
