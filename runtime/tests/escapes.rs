//! Ways out of a container that a package could try, each refused (issue 11's
//! adversarial pass): symlinks in an image that would send a mount or a resource's
//! directory outside the container, and a runtime killed right after it forked a
//! container's init. They run the real x86_64 device build as root on this host, like
//! `containers.rs`; the packages are hand-made where `npk pack` would refuse them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Runtime, is_root};
use nanostar_protocol::console::{Message, Request};
use nanostar_protocol::limits::MAX_MANIFEST_LEN;
use nanostar_protocol::npk::header::{HEADER_LEN, HeaderFields, sha256};
use nanostar_protocol::npk::manifest::EnvVar;
use nanostar_tools::manifest::SourceManifest;

/// `ELOOP` on x86_64, what `openat2(RESOLVE_NO_SYMLINKS)` answers for a symlink.
const ELOOP: u32 = 40;

/// A probe package root under `dir` with the directories and files `probe_root` needs;
/// returns its path.
fn probe_root(dir: &Path, name: &str) -> std::path::PathBuf {
    let root = dir.join(format!("root-{name}"));
    for sub in ["bin", "etc", "proc", "res"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(&common::probe_binaries()[0], root.join("bin/probe")).unwrap();
    root
}

/// The probe package `name` 1.0.0 with `extra` manifest TOML, its image made from `root`.
fn probe_npk(root: &Path, name: &str, extra: &str) -> Vec<u8> {
    common::npk_bytes(
        &probe_toml(name, extra),
        root,
        None,
        nanostar_protocol::npk::Arch::X86_64,
    )
}

fn probe_toml(name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/probe\"\nuid = 1000\ngid = 1000\n{extra}"
    )
}

fn install(rt: &Runtime, name: &str, npk: &[u8]) {
    let file = rt.path(&format!("{name}.npk"));
    std::fs::write(&file, npk).unwrap();
    rt.ok(&["install", file.to_str().unwrap()]);
}

/// The package `npk` with its manifest replaced by `toml`, unsigned: what someone who
/// does not use `npk pack` can make. The image and its hash tree stay as they are.
fn with_manifest(npk: &[u8], toml: &str) -> Vec<u8> {
    let opened = nanostar_tools::package::open(npk, None).unwrap();
    let source = SourceManifest::parse(toml).unwrap();
    let manifest = source.manifest().unwrap();
    let mut buf = vec![0u8; MAX_MANIFEST_LEN];
    let manifest = manifest.encode(&mut buf).unwrap();
    let seccomp =
        &npk[opened.header.seccomp_offset() as usize..][..opened.header.seccomp_len as usize];
    let mut header: HeaderFields = *opened.header;
    header.manifest_len = manifest.len() as u32;
    header.manifest_sha256 = sha256(manifest);
    header.image_offset = HeaderFields::image_offset_for(header.manifest_len, header.seccomp_len);
    header.verity.hash_offset = header.image_offset + header.image_size;
    let mut bytes = header.encode(None).to_vec();
    assert_eq!(bytes.len(), HEADER_LEN);
    bytes.extend_from_slice(manifest);
    bytes.extend_from_slice(seccomp);
    bytes.resize(header.image_offset as usize, 0);
    bytes.extend_from_slice(opened.image());
    bytes.extend_from_slice(opened.tree());
    bytes
}

/// A resource whose shared directory is a symlink to `/` (or climbs out with `..`) shares
/// its own root, never the host's: the resource is resolved inside its own image.
#[test]
fn a_resource_directory_that_links_out_stays_inside_the_resource() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    for (name, link) in [("rootlink", "/"), ("uplink", "../../../../..")] {
        let root = rt.path(&format!("root-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("version.txt"), format!("{name}\n")).unwrap();
        std::os::unix::fs::symlink(link, root.join("share")).unwrap();
        let toml = format!("name = \"{name}\"\nversion = \"1.0.0\"\nuid = 1000\ngid = 1000\n");
        install(
            &rt,
            name,
            &common::npk_bytes(&toml, &root, None, nanostar_protocol::npk::Arch::Any),
        );
        let user = format!("use-{name}");
        let uses = format!(
            "[mounts.\"/res\"]\ntype = \"resource\"\nname = \"{name}\"\nversion = \"^1.0.0\"\ndir = \"/share\"\n"
        );
        let root = probe_root(rt.dir.path(), &user);
        let npk = probe_npk(&root, &user, &uses);
        install(&rt, &user, &npk);
        let mut console = rt.console();
        let (status, out) = console.run(&user, &["cat", "/res/version.txt"]);
        assert_eq!(status, "Code(0)", "{name}: the resource's own root: {out}");
        assert_eq!(out, format!("{name}\n"));
        // The host's root has /etc/os-release (Debian); the resource has no /etc.
        let (status, out) = console.run(&user, &["cat", "/res/etc/os-release"]);
        assert_ne!(
            status, "Code(0)",
            "{name}: the host's file system is visible: {out}"
        );
    }
}

/// A mount target that is, or passes through, a symlink in the image (absolute or
/// relative, for every kind of mount) is refused with `ELOOP` at its mount step instead of
/// mounting outside the container's root; the runtime keeps serving.
#[test]
fn mount_targets_through_symlinks_are_refused() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    let host = rt.path("host-dir");
    std::fs::create_dir(&host).unwrap();
    let mounts = [
        ("tmpfs", "type = \"tmpfs\"\nsize = \"1M\"\n".to_string()),
        ("dev", "type = \"dev\"\n".to_string()),
        (
            "bind",
            format!("type = \"bind\"\nhost = \"{}\"\n", host.display()),
        ),
        ("persist", "type = \"persist\"\n".to_string()),
    ];
    let mut case = 0;
    for (link, through) in [("/etc", false), ("../../../../etc", false), ("/", true)] {
        for (kind, table) in &mounts {
            case += 1;
            let name = format!("link{case}");
            let root = probe_root(rt.dir.path(), &name);
            std::os::unix::fs::symlink(link, root.join("data")).unwrap();
            // `/data/sub` passes through the symlink; `/data` is the symlink itself.
            let target = if through { "/data/tmp" } else { "/data" };
            let base = probe_npk(&root, &name, "");
            let toml = probe_toml(&name, &format!("[mounts.\"{target}\"]\n{table}"));
            install(&rt, &name, &with_manifest(&base, &toml));
            let mut console = rt.console();
            assert_eq!(
                console.start(&name, &["print", "started"]),
                format!("Error(Setup {{ step: Mount(0), errno: {ELOOP} }})"),
                "{kind} at {target} with /data -> {link}"
            );
        }
    }
    // And a real directory at the same place mounts as before.
    let root = probe_root(rt.dir.path(), "plain");
    std::fs::create_dir(root.join("data")).unwrap();
    let npk = probe_npk(
        &root,
        "plain",
        "[mounts.\"/data\"]\ntype = \"tmpfs\"\nsize = \"1M\"\n",
    );
    install(&rt, "plain", &npk);
    let (status, out) = rt
        .console()
        .run("plain", &["write", "/data/x", "y", "cat", "/data/x"]);
    assert_eq!(status, "Code(0)", "{out}");
}

/// A runtime killed between forking a container's init and init's `PR_SET_PDEATHSIG`
/// leaves nothing running: init sees that the runtime is gone and exits before it mounts
/// or starts anything. strace widens the window: it holds each process's first `prctl`
/// (init's is `PR_SET_PDEATHSIG`) for two seconds, and the runtime is killed as soon as
/// its init exists. The runtime is not a PID namespace's init here (that would take its
/// containers with it). Without the check, the app would run on as an orphan.
#[test]
fn a_container_never_outlives_a_runtime_killed_right_after_the_fork() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let tracer = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=prctl",
        "-e",
        "inject=prctl:delay_enter=2000000:when=1",
    ];
    let mut rt = Runtime::start_under(|_| {}, "", &tracer);
    let strace = rt.child.as_ref().unwrap().id();
    let runtime = wait_for(
        || children_of(strace).first().copied(),
        "the runtime under strace",
    );
    let marker = format!("ORPHAN_MARKER_{}", std::process::id());
    let root = probe_root(rt.dir.path(), "orphan");
    let npk = probe_npk(&root, "orphan", "");
    install(&rt, "orphan", &npk);
    let mut console = rt.console();
    console.send(&Message::Request {
        id: 77,
        request: Request::Start {
            name: "orphan",
            version: None,
            args: Some(["pause"].into_iter().collect()),
            env: [EnvVar {
                key: &marker,
                value: "1",
            }]
            .into_iter()
            .collect(),
        },
    });
    let init = wait_for(
        || children_of(runtime).first().copied(),
        "the container's init",
    );
    Command::new("kill")
        .args(["-9", &runtime.to_string()])
        .status()
        .unwrap();
    // Nothing may be left: strace ends when the last process it traces does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.child.as_mut().unwrap().try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let survivors = processes_with_env(&marker);
            for pid in survivors.iter().chain([&init]) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            panic!("the container outlived its runtime: init {init}, app {survivors:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(processes_with_env(&marker).is_empty());
}

/// Once the app runs, the container's init keeps only `CAP_KILL` (to signal the app),
/// in every set and in its bounding set: an app that attached to it would gain nothing.
#[test]
fn init_keeps_only_cap_kill_once_the_app_runs() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let rt = Runtime::start();
    let unshare = rt.child.as_ref().unwrap().id();
    let runtime = wait_for(|| children_of(unshare).first().copied(), "the runtime");
    let root = probe_root(rt.dir.path(), "sleeper");
    let npk = probe_npk(
        &root,
        "sleeper",
        "capabilities = [\"CAP_NET_BIND_SERVICE\"]\n",
    );
    install(&rt, "sleeper", &npk);
    let mut console = rt.console();
    assert_eq!(console.start("sleeper", &["pause"]), "Ok");
    let init = wait_for(
        || children_of(runtime).first().copied(),
        "the container's init",
    );
    let kill_only = format!("{:016x}", 1u64 << 5);
    let caps = |pid: u32| -> Vec<String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
            .iter()
            .map(|key| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}:\t")))
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    };
    let want = [
        "0000000000000000",
        &kill_only,
        &kill_only,
        &kill_only,
        "0000000000000000",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while caps(init) != want {
        assert!(
            Instant::now() < deadline,
            "init's capabilities (inh prm eff bnd amb): {:?}",
            caps(init)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(console.stop("sleeper", None), "Stopped(Signal(15))");
}

/// The capabilities the runtime needs (docs/design.md, "What the runtime runs with"),
/// as `setpriv` names them. (`sys_resource`, needed only to raise a hard limit above the
/// runtime's own, is not among them: this machine's bounding set lacks it.)
const RUNTIME_CAPABILITIES: &str =
    "sys_admin,setuid,setgid,setpcap,mknod,chown,fowner,dac_override,kill";

/// The runtime started with exactly the capabilities docs/design.md lists (its bounding
/// set cut to them before it starts, so uid 0 gets no others): installs, a container with
/// every kind of mount, limits, groups and persistent data, a stop, and a wipe of
/// the data the app wrote.
#[test]
fn the_runtime_runs_with_exactly_its_documented_capabilities() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let bounding = format!(
        "-all,{}",
        RUNTIME_CAPABILITIES
            .split(',')
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut wrapper = common::ISOLATED.to_vec();
    wrapper.extend(["setpriv", "--bounding-set", &bounding, "--inh-caps=-all"]);
    let rt = Runtime::start_under(|_| {}, "", &wrapper);
    let unshare = rt.child.as_ref().unwrap().id();
    let runtime = wait_for(|| children_of(unshare).first().copied(), "the runtime");
    let status = std::fs::read_to_string(format!("/proc/{runtime}/status")).unwrap();
    // chown 0, dac_override 1, fowner 3, kill 5, setgid 6, setuid 7, setpcap 8,
    // sys_admin 21, mknod 27.
    let mask: u64 = [0, 1, 3, 5, 6, 7, 8, 21, 27]
        .iter()
        .map(|b| 1u64 << b)
        .sum();
    for set in [] as [&str; 0] {
        assert!(
            status.contains(&format!("{set}:\t{mask:016x}\n")),
            "{status}"
        );
    }
    let host = rt.path("host-dir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("shared.txt"), "from the host\n").unwrap();
    let extra = format!(
        "suppl_groups = [2000]\n[rlimits]\nnofile = {{ soft = 100, hard = 200 }}\n\
         [mounts.\"/proc\"]\ntype = \"proc\"\n[mounts.\"/dev\"]\ntype = \"dev\"\n\
         [mounts.\"/tmp\"]\ntype = \"tmpfs\"\nsize = \"1M\"\n[mounts.\"/data\"]\ntype = \"persist\"\n\
         [mounts.\"/res\"]\ntype = \"bind\"\nhost = \"{}\"\n",
        host.display()
    );
    let root = probe_root(rt.dir.path(), "lean");
    for dir in ["dev", "tmp", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let npk = probe_npk(&root, "lean", &extra);
    install(&rt, "lean", &npk);
    let mut console = rt.console();
    let (status, out) = console.run(
        "lean",
        &[
            "write",
            "/data/note",
            "x",
            "write",
            "/tmp/t",
            "y",
            "cat",
            "/res/shared.txt",
            "cat",
            "/dev/null",
        ],
    );
    assert_eq!(status, "Code(0)", "{out}");
    assert_eq!(console.start("lean", &["pause"]), "Ok");
    assert_eq!(console.stop("lean", None), "Stopped(Signal(15))");
    rt.ok(&["uninstall", "lean", "1.0.0", "--wipe"]);
    assert!(!rt.path("data/lean").exists(), "wiped");
}

/// Polls `found` every 10 ms for up to a minute.
fn wait_for<T>(mut found: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not appear");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let ppid = format!("PPid:\t{parent}\n");
    pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.contains(&ppid))
        })
        .collect()
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// Pids of the processes whose environment has `key`.
fn processes_with_env(key: &str) -> Vec<u32> {
    let needle = format!("{key}=");
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|var| var.starts_with(needle.as_bytes()))
            })
        })
        .collect()
}
