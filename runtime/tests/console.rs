//! The real `nanostar` (x86_64 device build) running on this host as root in a private
//! mount namespace, driven over its console socket by its own client commands and by raw
//! frames. This host kernel has no device-mapper, so verity mounts are refused here with a
//! clear error; QEMU boot tests cover them.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Raw, Runtime, is_root};

use nanostar_protocol::console::{Hello, Message, Reply, Request, encode_frame};
use nanostar_tools::manifest::SourceManifest;
use nanostar_tools::package::{PackInput, pack};

impl Runtime {
    /// Packs a package named `name` 1.0.0 into `file` (in the test directory).
    fn package(&self, name: &str, file: &str, key: Option<&ed25519_compact::KeyPair>) -> PathBuf {
        let root = self.path(&format!("root-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("hello.txt"), format!("hello from {name}\n")).unwrap();
        let toml = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\ninit = \"/bin/x\"\nuid = 1000\ngid = 1000\n[mounts.\"/data\"]\ntype = \"persist\"\n"
        );
        let source = SourceManifest::parse(&toml).unwrap();
        let bytes = pack(
            &PackInput {
                manifest: &source,
                root: &root,
                key,
                arch: Some(nanostar_protocol::npk::Arch::X86_64),
            },
            &mut |_| {},
        )
        .unwrap()
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
    // Busy while mounted.
    let out = rt.cli(&["uninstall", "hello", "1.0.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mounted"));
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
    let mut raw = Raw::connect(&rt);
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
    if std::path::Path::new("/dev/mapper/control").exists() {
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
    let mut raw = Raw::connect(&rt);
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
    let mut stalled = Raw::connect(&rt);
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
    let mut garbage = Raw::connect(&rt);
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let _ = garbage.0.write_all(&noise);
    // An oversize frame after the handshake gets a protocol violation.
    let mut big = Raw::connect(&rt);
    big.hello();
    let huge = vec![0x41u8; 20_000];
    let mut wire = vec![0u8; 21_000];
    let frame = encode_frame(&huge, &mut wire).unwrap().to_vec();
    let _ = big.0.write_all(&frame);
    let answer = Message::decode(&big.read_frame())
        .map(|m| format!("{m:?}"))
        .unwrap_or_default();
    assert!(answer.contains("FrameTooLong"), "{answer}");
    // A client of another protocol version is refused with the versions the runtime speaks.
    let mut future = Raw::connect(&rt);
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
    let mut four: Vec<Raw> = (0..4).map(|_| Raw::connect(&rt)).collect();
    for c in &mut four {
        c.hello();
    }
    let mut fifth = Raw::connect(&rt);
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
