//! The real `nanostar` (x86_64 device build) running on this host as root in a private
//! mount namespace, driven over its console socket by its own client commands and by raw
//! frames. This host kernel has no device-mapper, so verity mounts are refused here with a
//! clear error; QEMU boot tests cover them.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Console, Runtime, is_root, key_id};

use nanostar_protocol::console::{Hello, Message, Reply, Request, encode_frame};

impl Runtime {
    /// Packs a package named `name` 1.0.0 into `file` (in the test directory).
    fn package(&self, name: &str, file: &str, key: Option<&ed25519_compact::KeyPair>) -> PathBuf {
        let root = self.path(&format!("root-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("hello.txt"), format!("hello from {name}\n")).unwrap();
        let toml = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/x\"\nuid = 1000\ngid = 1000\n[mounts.\"/data\"]\ntype = \"persist\"\n"
        );
        let bytes = common::pack_toml(
            &toml,
            &root,
            key,
            Some(nanostar_protocol::npk::Arch::X86_64),
        )
        .bytes;
        let path = self.path(file);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

#[test]
fn install_list_inspect_mount_umount_uninstall() {
    if !is_root() {
        eprintln!("note: not root, runtime not started");
        return;
    }
    let mut rt = Runtime::start();
    let npk = rt.package("hello", "hello.npk", None);
    assert!(rt.ok(&["list"]).lines().count() == 1, "empty at first");
    let out = rt.ok(&["install", npk.to_str().unwrap()]);
    assert!(out.contains("installed hello 1.0.0 into default"), "{out}");
    assert_eq!(rt.files("repo"), ["hello-1.0.0.npk"]);
    let list = rt.ok(&["--json", "list"]);
    assert!(list.contains("{\"name\":\"hello\",\"version\":\"1.0.0\",\"repository\":\"default\",\"mounted\":false,\"container\":null}"), "{list}");
    let inspect = rt.ok(&["inspect", "hello"]);
    assert!(
        inspect.contains("application, init /bin/x, uid 1000, gid 1000, 1 mounts"),
        "{inspect}"
    );
    rt.ok(&["mount", "hello", "1.0.0"]);
    assert!(rt.ok(&["--json", "list"]).contains("\"mounted\":true"));
    // (Uninstalling a mounted package that no container uses unmounts it first:
    // `uninstall_unmounts_a_stopped_package_and_repositories_are_listed`.)
    // Installing the same name and version again is refused and leaves nothing.
    let out = rt.cli(&["install", npk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("installed already"));
    assert_eq!(rt.files("repo"), ["hello-1.0.0.npk"]);
    rt.ok(&["umount", "hello", "1.0.0"]);
    // The same through the socket instead of a passed descriptor.
    let streamed = rt.package("streamed", "streamed.npk", None);
    let out = rt.ok(&["install", streamed.to_str().unwrap(), "--stream"]);
    assert!(out.contains("installed streamed 1.0.0"), "{out}");
    rt.ok(&["uninstall", "streamed", "1.0.0"]);
    // An install that announces a descriptor but sends none is a protocol violation.
    let mut raw = rt.connect();
    raw.hello();
    raw.send(&Message::Request {
        id: 5,
        request: Request::InstallBegin {
            repository: "default",
            size: 10,
            fd: true,
        },
    });
    let answer = Message::decode(&raw.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap_or_default();
    assert!(answer.contains("Fd"), "{answer}");
    std::fs::create_dir_all(rt.path("data/hello/sub")).unwrap();
    std::fs::write(rt.path("data/hello/sub/state"), b"x").unwrap();
    rt.ok(&["uninstall", "hello", "1.0.0", "--wipe"]);
    assert!(rt.files("repo").is_empty());
    assert!(
        !rt.path("data/hello").exists(),
        "--wipe removes the persistent data"
    );
    let out = rt.cli(&["inspect", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let err = rt.stop();
    assert!(err.contains("shut down"), "{err}");
    assert!(!rt.socket().exists());
}

#[test]
fn keyed_repository_refuses_unsigned_and_foreign_packages_and_needs_device_mapper() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let unsigned = rt.package("plain", "plain.npk", None);
    let other_key = ed25519_compact::KeyPair::from_seed(rt.other_key.sk.seed());
    let foreign = rt.package("foreign", "foreign.npk", Some(&other_key));
    let key = ed25519_compact::KeyPair::from_seed(rt.key.sk.seed());
    let good = rt.package("good", "good.npk", Some(&key));
    for (file, message) in [(&unsigned, "not signed"), (&foreign, "does not trust")] {
        let out = rt.cli(&["install", file.to_str().unwrap(), "--repo", "signed"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    rt.ok(&["install", good.to_str().unwrap(), "--repo", "signed"]);
    assert_eq!(rt.files("signed"), ["good-1.0.0.npk"]);
    let out = rt.cli(&["mount", "good", "1.0.0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if common::kernel_has_device_mapper() {
        assert!(out.status.success(), "{err}");
        rt.ok(&["umount", "good", "1.0.0"]);
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(err.contains("no device-mapper"), "{err}");
    }
    let out = rt.cli(&["install", good.to_str().unwrap(), "--repo", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such repository"));
    rt.stop();
}

#[test]
fn broken_files_at_start_are_skipped_and_reported() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start_with(|d| {
        std::fs::write(
            d.join("repo/broken.npk"),
            b"\x89NPK\r\n\x1a\nthis is cut short",
        )
        .unwrap();
        std::fs::write(d.join("repo/.tmp-9"), b"half an install").unwrap();
    });
    assert_eq!(rt.ok(&["list"]).lines().count(), 1);
    assert_eq!(
        rt.files("repo"),
        ["broken.npk"],
        "the leftover temp file is removed at start"
    );
    let err = rt.stop();
    assert!(err.contains("broken.npk: skipped"), "{err}");
    assert!(err.contains("removed .tmp-9"), "{err}");
}

#[test]
fn a_client_gone_mid_install_leaves_nothing_and_others_are_served() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let mut raw = rt.connect();
    raw.hello();
    raw.send(&Message::Request {
        id: 1,
        request: Request::InstallBegin {
            repository: "default",
            size: 100_000,
            fd: false,
        },
    });
    assert!(matches!(
        Message::decode(&raw.read_frame()),
        Ok(Message::Reply {
            id: 1,
            reply: Reply::InstallAccepted
        })
    ));
    raw.send(&Message::Request {
        id: 1,
        request: Request::InstallChunk { data: &[1; 5000] },
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        rt.files("repo").len(),
        1,
        "the partial install is on disk as a temporary file"
    );
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rt.files("repo").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the partial install was not removed: {:?}",
            rt.files("repo")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A stalled install times out (install_timeout_ms = 2000) and is removed too.
    let mut stalled = rt.connect();
    stalled.hello();
    stalled.send(&Message::Request {
        id: 7,
        request: Request::InstallBegin {
            repository: "default",
            size: 100,
            fd: false,
        },
    });
    stalled.read_frame();
    let timeout = Message::decode(&stalled.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap_or_default();
    assert!(timeout.contains("InstallTimeout"), "{timeout}");
    assert!(rt.files("repo").is_empty());
    assert!(rt.ok(&["list"]).starts_with("NAME"));
    rt.stop();
}

#[test]
fn garbage_oversize_frames_old_clients_and_crowds_do_not_stop_the_runtime() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    // Random bytes, then a lone delimiter.
    let mut garbage = rt.connect();
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let _ = garbage.stream.write_all(&noise);
    // An oversize frame after the handshake gets a protocol violation.
    let mut big = rt.connect();
    big.hello();
    let huge = vec![0x41u8; 20_000];
    let mut wire = vec![0u8; 21_000];
    let frame = encode_frame(&huge, &mut wire).unwrap().to_vec();
    let _ = big.stream.write_all(&frame);
    let answer = Message::decode(&big.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap_or_default();
    assert!(answer.contains("FrameTooLong"), "{answer}");
    // A client of another protocol version is refused with the versions the runtime speaks.
    let mut future = rt.connect();
    future.send(&Message::Hello(Hello {
        protocol_version: 99,
        client: "future",
    }));
    assert!(matches!(
        Message::decode(&future.read_frame()),
        Ok(Message::VersionMismatch(_))
    ));
    drop(garbage);
    drop(big);
    drop(future);
    std::thread::sleep(Duration::from_millis(200));
    // max_clients = 4: a fifth client is told the table is full; the four are unharmed.
    let mut four: Vec<Console> = (0..4).map(|_| rt.connect()).collect();
    for c in &mut four {
        c.hello();
    }
    let mut fifth = rt.connect();
    let refusal = Message::decode(&fifth.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap_or_default();
    assert!(refusal.contains("Full(Clients)"), "{refusal}");
    four[0].send(&Message::Request {
        id: 3,
        request: Request::List { after: None },
    });
    assert!(matches!(
        Message::decode(&four[0].read_frame()),
        Ok(Message::Reply { id: 3, .. })
    ));
    drop(four);
    std::thread::sleep(Duration::from_millis(200));
    // A well-behaved client is still served.
    let npk = rt.package("after", "after.npk", None);
    rt.ok(&["install", npk.to_str().unwrap()]);
    assert!(rt.ok(&["list"]).contains("after"));
    rt.stop();
}

#[test]
fn notifications_follow_installs_mounts_and_shutdown() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let follower = Command::new(common::x86_64_binary())
        .arg("--socket")
        .arg(rt.socket())
        .args(["--json", "notifications"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let npk = rt.package("watched", "watched.npk", None);
    rt.ok(&["install", npk.to_str().unwrap()]);
    rt.ok(&["mount", "watched", "1.0.0"]);
    rt.ok(&["umount", "watched", "1.0.0"]);
    rt.ok(&["uninstall", "watched", "1.0.0"]);
    rt.ok(&["shutdown"]);
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> = text.lines().collect();
    assert_eq!(
        events,
        [
            "{\"event\":\"installed\",\"name\":\"watched\",\"version\":\"1.0.0\"}",
            "{\"event\":\"mounted\",\"name\":\"watched\",\"version\":\"1.0.0\"}",
            "{\"event\":\"umounted\",\"name\":\"watched\",\"version\":\"1.0.0\"}",
            "{\"event\":\"uninstalled\",\"name\":\"watched\",\"version\":\"1.0.0\"}",
            "{\"event\":\"shutting-down\"}",
        ]
    );
    let mut child = rt.child.take().unwrap();
    assert!(child.wait().unwrap().success());
}

impl Runtime {
    /// Packs `name` `version` for `arch` into `file` (in the test directory); returns its
    /// path and bytes. For `any` it is a resource (data only): an app gets a seccomp filter,
    /// which is compiled for one architecture.
    fn package_for(
        &self,
        name: &str,
        version: &str,
        arch: nanostar_protocol::npk::Arch,
        file: &str,
        key: Option<&ed25519_compact::KeyPair>,
    ) -> (PathBuf, Vec<u8>) {
        let root = self.path(&format!("root-{name}-{version}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("version.txt"), version).unwrap();
        let init = if arch == nanostar_protocol::npk::Arch::Any {
            ""
        } else {
            "init = \"/bin/x\"\n"
        };
        let toml =
            format!("name = \"{name}\"\nversion = \"{version}\"\n{init}uid = 1000\ngid = 1000\n");
        let bytes = common::pack_toml(&toml, &root, key, Some(arch)).bytes;
        let path = self.path(file);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }
}

/// Streams `bytes` on `raw` as an install announcing `name` 1.0.0 (`Request::Install`);
/// returns the final answer, or the refusal of the begin.
fn install_announced(
    raw: &mut Console,
    id: u32,
    bytes: &[u8],
    name: &str,
    replace: bool,
) -> String {
    let package = nanostar_protocol::console::PackageId {
        name,
        version: nanostar_protocol::version::Version::parse("1.0.0").unwrap(),
    };
    let begin = raw.ask(
        id,
        Request::Install {
            repository: "default",
            size: bytes.len() as u64,
            fd: false,
            package,
            replace,
        },
    );
    if !begin.contains("InstallAccepted") {
        return begin;
    }
    for chunk in bytes.chunks(8192) {
        raw.send(&Message::Request {
            id,
            request: Request::InstallChunk { data: chunk },
        });
    }
    raw.send(&Message::Request {
        id,
        request: Request::InstallEnd,
    });
    raw.answer()
}

#[test]
fn a_second_runtime_on_the_same_run_directory_refuses_and_leaves_the_first_alone() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let second = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(common::x86_64_binary())
        .arg("run")
        .arg(rt.path("nanostar.conf"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    // The first runtime is PID 1 of its own PID namespace, and that is the pid it wrote.
    assert!(
        err.contains("another runtime (pid 1) already uses this run directory"),
        "{err}"
    );
    assert!(rt.socket().exists(), "the live socket is still there");
    assert!(rt.ok(&["list"]).starts_with("NAME"), "and still served");
    rt.stop();
}

#[test]
fn packages_for_another_architecture_are_refused_at_install_and_skipped_at_start() {
    if !is_root() {
        return;
    }
    use nanostar_protocol::npk::Arch;
    let mut rt = Runtime::start();
    let (arm, bytes) = rt.package_for("armapp", "1.0.0", Arch::Aarch64, "armapp.npk", None);
    let mut raw = rt.connect();
    raw.hello();
    let answer = install_announced(&mut raw, 1, &bytes, "armapp", false);
    assert!(
        answer.contains("ArchMismatch { package: 2, runtime: 1 }"),
        "{answer}"
    );
    assert!(rt.files("repo").is_empty(), "nothing left behind");
    // Through the client, by descriptor.
    let out = rt.cli(&["install", arm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    // A data-only package (architecture "any") is fine everywhere.
    let (_, any) = rt.package_for("data", "1.0.0", Arch::Any, "data.npk", None);
    let answer = install_announced(&mut raw, 2, &any, "data", false);
    assert!(answer.contains("Installed"), "{answer}");
    drop(raw);
    rt.stop();
    // Dropped into the repository by hand: reported and skipped at start-up.
    let mut again = Runtime::start_with(|d| {
        std::fs::copy(&arm, d.join("repo/armapp-1.0.0.npk")).unwrap();
    });
    assert!(!again.ok(&["list"]).contains("armapp"));
    let err = again.stop();
    assert!(
        err.contains(
            "armapp-1.0.0.npk: skipped: built for aarch64, but this runtime runs on x86_64"
        ),
        "{err}"
    );
}

#[test]
fn an_announced_install_is_refused_before_its_bytes_and_may_replace_a_stopped_package() {
    if !is_root() {
        return;
    }
    use nanostar_protocol::npk::Arch;
    let mut rt = Runtime::start();
    let (_, first) = rt.package_for("app", "1.0.0", Arch::X86_64, "app-a.npk", None);
    let mut raw = rt.connect();
    raw.hello();
    assert!(install_announced(&mut raw, 1, &first, "app", false).contains("Installed"));
    rt.ok(&["mount", "app", "1.0.0"]);
    // The same name and version again: refused at the begin, before a single chunk.
    let refused = raw.ask(
        2,
        Request::Install {
            repository: "default",
            size: first.len() as u64,
            fd: false,
            package: nanostar_protocol::console::PackageId {
                name: "app",
                version: nanostar_protocol::version::Version::parse("1.0.0").unwrap(),
            },
            replace: false,
        },
    );
    assert!(refused.contains("AlreadyInstalled"), "{refused}");
    // Another build of 1.0.0 replaces it (it is mounted, not running: unmounted first).
    std::fs::write(rt.path("root-app-1.0.0/extra.txt"), "new build").unwrap();
    let (_, second) = rt.package_for("app", "1.0.0", Arch::X86_64, "app-b.npk", None);
    assert_ne!(first, second);
    let replaced = install_announced(&mut raw, 3, &second, "app", true);
    assert!(replaced.contains("Installed"), "{replaced}");
    assert_eq!(rt.files("repo"), ["app-1.0.0.npk"]);
    assert_eq!(
        std::fs::read(rt.path("repo/app-1.0.0.npk")).unwrap(),
        second
    );
    assert!(rt.ok(&["--json", "list"]).contains("\"mounted\":false"));
    // A package that is not the announced one is refused at the end, leaving nothing.
    let (_, other) = rt.package_for("other", "1.0.0", Arch::X86_64, "other.npk", None);
    let wrong = install_announced(&mut raw, 4, &other, "app", true);
    assert!(wrong.contains("NotAsAnnounced"), "{wrong}");
    assert_eq!(rt.files("repo"), ["app-1.0.0.npk"]);
    assert_eq!(
        std::fs::read(rt.path("repo/app-1.0.0.npk")).unwrap(),
        second
    );
    rt.stop();
}

#[test]
fn uninstall_unmounts_a_stopped_package_and_repositories_are_listed() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let npk = rt.package("gone", "gone.npk", None);
    rt.ok(&["install", npk.to_str().unwrap()]);
    rt.ok(&["mount", "gone", "1.0.0"]);
    rt.ok(&["uninstall", "gone", "1.0.0"]);
    assert!(rt.files("repo").is_empty());
    assert!(
        !rt.path("run/mnt/gone-1.0.0").exists(),
        "unmounted on the way out"
    );
    let mut raw = rt.connect();
    raw.hello();
    let repositories = raw.ask(1, Request::Repositories);
    assert!(
        repositories.contains("name: \"default\", keys: [], packages: 0")
            && repositories.contains("name: \"signed\", keys: [["),
        "{repositories}"
    );
    rt.stop();
}

#[test]
fn inspect_names_the_signer_also_in_a_repository_without_keys() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    let key = ed25519_compact::KeyPair::from_seed(rt.key.sk.seed());
    let signed = rt.package("signedhere", "s.npk", Some(&key));
    rt.ok(&["install", signed.to_str().unwrap()]);
    let mut raw = rt.connect();
    raw.hello();
    let inspected = raw.ask(
        1,
        Request::Inspect {
            name: "signedhere",
            version: None,
            manifest_offset: 0,
        },
    );
    let id = key_id(&key);
    assert!(
        inspected.contains(&format!("key: Some({id:?})")),
        "{inspected}"
    );
    rt.stop();
}

/// Whether the runtime closed `console`'s connection: its next read ends (or is reset,
/// when something it sent was still unread) within the console's read timeout.
fn closed(console: &mut Console) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    loop {
        match console.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn connections_that_never_say_hello_do_not_keep_clients_out() {
    if !is_root() {
        return;
    }
    let mut rt = Runtime::start();
    // max_clients = 4: as many connections that never send a byte.
    let mut silent: Vec<Console> = (0..4).map(|_| rt.connect()).collect();
    // Each newcomer takes the slot of the oldest of them, and is served.
    let mut served: Vec<Console> = (0..4).map(|_| rt.connect()).collect();
    for (i, c) in served.iter_mut().enumerate() {
        c.hello();
        assert!(
            closed(&mut silent[i]),
            "silent connection {i} was not closed"
        );
        assert!(c.list().is_empty());
    }
    // Four clients that may do everything hold the table: a fifth is told it is full.
    let out = rt.cli(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serves as many clients as it may"),
        "{stderr}"
    );
    drop(served);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.cli(&["list"]).status.success() {
        assert!(Instant::now() < deadline, "the freed slots are not used");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.stop();
}

/// Makes this test thread's mount namespace its own (the runtime and the clients it
/// starts inherit it), so a mount made here is gone with the thread however the test ends.
fn private_mounts() {
    use rustix::thread::UnshareFlags;
    // SAFETY: only the mount namespace (and with it the thread's root and working
    // directory) is unshared; descriptors stay shared with every other thread.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }.expect("unshare");
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .expect("make / private");
}

#[test]
fn a_streamed_install_that_runs_out_of_space_says_so_and_the_connection_serves_on() {
    if !is_root() {
        return;
    }
    private_mounts();
    // The repository is a 256 KiB tmpfs; the package is 1 MiB that does not compress.
    let mut rt = Runtime::start_with(|d| {
        rustix::mount::mount(
            "tmpfs",
            d.join("repo"),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(c"size=256k"),
        )
        .expect("mount a small tmpfs");
    });
    let root = rt.path("root-big");
    std::fs::create_dir_all(&root).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("noise"), noise).unwrap();
    let toml = "name = \"big\"\nversion = \"1.0.0\"\ninit = \"/bin/x\"\nuid = 1000\ngid = 1000\n";
    let npk = common::pack_toml(
        toml,
        &root,
        None,
        Some(nanostar_protocol::npk::Arch::X86_64),
    )
    .bytes;
    let file = rt.path("big.npk");
    std::fs::write(&file, &npk).unwrap();
    // Over the protocol: the install's id gets the error, and the connection serves on.
    let mut console = rt.console();
    let answer = console.install(&npk);
    assert!(answer.contains("RepositoryFull"), "{answer}");
    assert!(console.list().is_empty());
    assert!(rt.files("repo").is_empty(), "{:?}", rt.files("repo"));
    // The client says why, and stops sending once it is told.
    let out = rt.cli(&["install", file.to_str().unwrap(), "--stream"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("nanostar: no space left in the repository for big 1.0.0\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("connection"), "{stderr}");
    assert!(rt.files("repo").is_empty(), "{:?}", rt.files("repo"));
    assert!(console.list().is_empty());
    drop(console);
    rt.stop();
    rustix::mount::unmount(rt.path("repo"), rustix::mount::UnmountFlags::DETACH).unwrap();
}
