//! The `npk` command end to end, checked against independent tools: `veritysetup` for the
//! hash tree, `unsquashfs` and the kernel's squashfs (loop mount) for the image, and
//! ed25519-dalek for the signature.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

const MANIFEST: &str = r#"
name = "hello"
version = "1.0.0"
init = "/bin/hello"
args = ["--greet", "world"]
uid = 1000
gid = 1000

[env]
GREETING = "hi"

[mounts."/data"]
type = "persist"
[mounts."/tmp"]
type = "tmpfs"
size = "1M"
[mounts."/proc"]
type = "proc"

[seccomp]
profile = "default"
[seccomp.allow]
personality = { index = 0, values = [0xffffffff] }
"#;

fn npk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_npk"))
        .args(args)
        .output()
        .expect("run npk")
}

#[track_caller]
fn npk_ok(args: &[&str]) -> String {
    let out = npk(args);
    assert!(
        out.status.success(),
        "npk {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an external tool, failing the test with an install hint if it is missing.
#[track_caller]
fn tool(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run {program} ({e}); install it: apt-get install cryptsetup-bin squashfs-tools"
        ),
    }
}

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    /// A root with an ELF init (this host's `true`), a nested tree, a big file and a symlink.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("share/doc/deep")).unwrap();
        fs::copy("/bin/true", root.join("bin/hello")).unwrap();
        fs::write(
            root.join("share/doc/deep/readme.txt"),
            "hello from the package\n",
        )
        .unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        fs::write(root.join("share/big.bin"), big).unwrap();
        std::os::unix::fs::symlink("doc/deep/readme.txt", root.join("share/readme")).unwrap();
        fs::write(dir.path().join("manifest.toml"), MANIFEST).unwrap();
        npk_ok(&["keygen", "--out", dir.path().join("dev").to_str().unwrap()]);
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    fn pack(&self, out: &str, signed: bool) -> PathBuf {
        let key = self.s("dev.key");
        let extra: &[&str] = if signed { &["--key", &key] } else { &[] };
        let result = self.try_pack("manifest.toml", out, extra);
        assert!(
            result.status.success(),
            "npk pack failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        self.path(out)
    }

    /// Runs `npk pack` of the fixture's root with `manifest` (a file in the fixture) into
    /// `out`, plus `extra` arguments.
    fn try_pack(&self, manifest: &str, out: &str, extra: &[&str]) -> Output {
        let (m, r, o) = (self.s(manifest), self.s("root"), self.s(out));
        let mut args = vec!["pack", "--manifest", &m, "--root", &r, "--out", &o];
        args.extend(extra);
        npk(&args)
    }

    fn inspect(&self, npk_file: &Path) -> Value {
        serde_json::from_str(&npk_ok(&["inspect", npk_file.to_str().unwrap(), "--json"])).unwrap()
    }
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn pack_inspect_verify_round_trip() {
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let info = f.inspect(&file);
    assert_eq!(
        info["arch"], "x86_64",
        "architecture read from init's ELF header"
    );
    assert_eq!(info["signed"], true);
    assert_eq!(info["manifest"]["name"], "hello");
    assert_eq!(info["manifest"]["args"][1], "world");
    assert!(u64_of(&info, "seccomp_instructions") > 100);
    assert_eq!(u64_of(&info, "image_offset") % 4096, 0);
    let verity = &info["verity"];
    assert_eq!(verity["algorithm"], "sha256");
    assert_eq!(
        u64_of(verity, "hash_offset"),
        u64_of(&info, "image_offset") + u64_of(&info, "image_size")
    );
    let out = npk_ok(&["verify", file.to_str().unwrap(), "--key", &f.s("dev.pub")]);
    assert!(out.contains("ok"), "{out}");
    // Human output includes the manifest as TOML that parses back.
    let human = npk_ok(&["inspect", file.to_str().unwrap()]);
    let toml_part = human.split("# manifest\n").nth(1).unwrap();
    let again: toml::Table = toml::from_str(toml_part).unwrap();
    assert_eq!(again["name"].as_str(), Some("hello"));
    // The output directory form names the file NAME-VERSION.npk.
    fs::create_dir(f.path("outdir")).unwrap();
    f.pack("outdir", true);
    assert!(f.path("outdir/hello-1.0.0.npk").exists());
}

#[test]
fn hash_tree_agrees_with_veritysetup() {
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let info = f.inspect(&file);
    let bytes = fs::read(&file).unwrap();
    let (off, size) = (
        u64_of(&info, "image_offset") as usize,
        u64_of(&info, "image_size") as usize,
    );
    let v = &info["verity"];
    let (hash_off, hash_size) = (
        u64_of(v, "hash_offset") as usize,
        u64_of(v, "hash_size") as usize,
    );
    fs::write(f.path("data.img"), &bytes[off..off + size]).unwrap();
    fs::write(f.path("hash.img"), &bytes[hash_off..hash_off + hash_size]).unwrap();
    let salt = v["salt"].as_str().unwrap();
    let root = v["root_hash"].as_str().unwrap();
    let blocks = u64_of(v, "data_blocks").to_string();
    let args = [
        "verify",
        "--no-superblock",
        "--format=1",
        "--hash=sha256",
        "--data-block-size=4096",
        "--hash-block-size=4096",
    ];
    let run = |data: &str, hash: &str, root: &str| {
        let mut a: Vec<&str> = args.to_vec();
        let salt_arg = format!("--salt={salt}");
        let blocks_arg = format!("--data-blocks={blocks}");
        a.extend([salt_arg.as_str(), blocks_arg.as_str(), data, hash, root]);
        tool("veritysetup", &a)
    };
    let ok = run(&f.s("data.img"), &f.s("hash.img"), root);
    assert!(
        ok.status.success(),
        "veritysetup rejects our tree: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // And it notices a changed block, so the check above is not vacuous.
    let mut data = bytes[off..off + size].to_vec();
    data[size / 2] ^= 0x40;
    fs::write(f.path("bad.img"), data).unwrap();
    assert!(
        !run(&f.s("bad.img"), &f.s("hash.img"), root)
            .status
            .success()
    );
    // The whole file with the offsets from inspect: veritysetup's own --hash-offset.
    let hash_offset_arg = format!("--hash-offset={hash_off}");
    let mut a: Vec<&str> = args.to_vec();
    let salt_arg = format!("--salt={salt}");
    let blocks_arg = format!("--data-blocks={blocks}");
    a.extend([
        salt_arg.as_str(),
        blocks_arg.as_str(),
        hash_offset_arg.as_str(),
    ]);
    let data_img = f.s("data.img");
    let file_s = file.to_str().unwrap();
    a.extend([data_img.as_str(), file_s, root]);
    let out = tool("veritysetup", &a);
    assert!(
        out.status.success(),
        "veritysetup with --hash-offset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_agrees_with_unsquashfs() {
    let f = Fixture::new();
    let file = f.pack("hello.npk", false);
    let info = f.inspect(&file);
    let bytes = fs::read(&file).unwrap();
    let (off, size) = (
        u64_of(&info, "image_offset") as usize,
        u64_of(&info, "image_size") as usize,
    );
    fs::write(f.path("fs.img"), &bytes[off..off + size]).unwrap();
    let list = tool("unsquashfs", &["-lln", &f.s("fs.img")]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "/bin/hello",
        "/share/doc/deep/readme.txt",
        "/share/big.bin",
        "/share/readme -> doc/deep/readme.txt",
        "/data",
        "/tmp",
        "/proc",
    ] {
        assert!(
            list.contains(path),
            "{path} missing from unsquashfs listing:\n{list}"
        );
    }
    for line in list.lines().filter(|l| l.contains("squashfs-root/")) {
        assert!(
            line.contains(" 1000/1000 "),
            "not owned by the manifest's uid/gid: {line}"
        );
    }
    let out = f.path("extracted");
    let x = tool(
        "unsquashfs",
        &["-no-xattrs", "-d", out.to_str().unwrap(), &f.s("fs.img")],
    );
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_eq!(
        fs::read(out.join("share/big.bin")).unwrap(),
        fs::read(f.path("root/share/big.bin")).unwrap()
    );
    assert_eq!(
        fs::read_link(out.join("share/readme")).unwrap(),
        Path::new("doc/deep/readme.txt")
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn image_loop_mounts_straight_from_the_npk() {
    if !is_root() {
        eprintln!("note: not root, loop mount not tried");
        return;
    }
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let info = f.inspect(&file);
    let mnt = f.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = format!(
        "ro,loop,offset={},sizelimit={}",
        u64_of(&info, "image_offset"),
        u64_of(&info, "image_size")
    );
    let m = tool(
        "mount",
        &[
            "-t",
            "squashfs",
            "-o",
            &opts,
            file.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ],
    );
    assert!(
        m.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let readme = fs::read_to_string(mnt.join("share/readme"));
    let big = fs::read(mnt.join("share/big.bin"));
    let data_is_dir = mnt.join("data").is_dir();
    let u = tool("umount", &[mnt.to_str().unwrap()]);
    assert!(
        u.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&u.stderr)
    );
    assert_eq!(readme.unwrap(), "hello from the package\n");
    assert_eq!(
        big.unwrap(),
        fs::read(f.path("root/share/big.bin")).unwrap()
    );
    assert!(data_is_dir, "mount point /data missing");
}

#[test]
fn signature_checks_with_a_second_ed25519_implementation() {
    use ed25519_dalek::{Signature, VerifyingKey};
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let bytes = fs::read(&file).unwrap();
    let public = fs::read_to_string(f.path("dev.pub")).unwrap();
    let hex = public
        .trim()
        .strip_prefix("nanostar-ed25519-public:")
        .unwrap();
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let key = VerifyingKey::from_bytes(&key.try_into().unwrap()).unwrap();
    let signature = Signature::from_bytes(&bytes[264..328].try_into().unwrap());
    key.verify_strict(&bytes[..256], &signature)
        .expect("dalek accepts our signature");
    let mut tampered = bytes[..256].to_vec();
    tampered[100] ^= 1;
    assert!(key.verify_strict(&tampered, &signature).is_err());
}

#[test]
fn packing_is_reproducible() {
    let f = Fixture::new();
    let a = fs::read(f.pack("a.npk", true)).unwrap();
    // Touch every file and rewrite one with the same content: times must not matter.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for p in [
        "root/bin/hello",
        "root/share/big.bin",
        "root/share/doc/deep/readme.txt",
    ] {
        fs::File::options()
            .write(true)
            .open(f.path(p))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    fs::write(
        f.path("root/share/doc/deep/readme.txt"),
        "hello from the package\n",
    )
    .unwrap();
    let b = fs::read(f.pack("b.npk", true)).unwrap();
    assert!(a == b, "same inputs gave different packages");
    // A different file content gives a different package.
    fs::write(f.path("root/share/doc/deep/readme.txt"), "changed\n").unwrap();
    let c = fs::read(f.pack("c.npk", true)).unwrap();
    assert!(a != c);
}

#[test]
fn unpack_gives_the_tree_back() {
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let out = f.path("unpacked");
    npk_ok(&[
        "unpack",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(out.join("share/big.bin")).unwrap(),
        fs::read(f.path("root/share/big.bin")).unwrap()
    );
    assert_eq!(
        fs::read(out.join("bin/hello")).unwrap(),
        fs::read("/bin/true").unwrap()
    );
    assert_eq!(
        fs::read_link(out.join("share/readme")).unwrap(),
        Path::new("doc/deep/readme.txt")
    );
    assert!(out.join("data").is_dir() && out.join("tmp").is_dir());
}

/// Flips one bit at `offset` and returns `npk verify`'s exit code and message.
fn verify_flipped(f: &Fixture, good: &[u8], offset: usize) -> (i32, String) {
    let mut bytes = good.to_vec();
    bytes[offset] ^= 0x10;
    let path = f.path("flipped.npk");
    fs::write(&path, bytes).unwrap();
    let out = npk(&["verify", path.to_str().unwrap(), "--key", &f.s("dev.pub")]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_flipped_bit_in_each_region_names_that_region() {
    let f = Fixture::new();
    let file = f.pack("hello.npk", true);
    let good = fs::read(&file).unwrap();
    let info = f.inspect(&file);
    let manifest_len = u64_of(&info, "manifest_len") as usize;
    let seccomp_start = 328 + manifest_len;
    let seccomp_len = u64_of(&info, "seccomp_instructions") as usize * 8;
    let image_offset = u64_of(&info, "image_offset") as usize;
    let image_size = u64_of(&info, "image_size") as usize;
    let hash_offset = u64_of(&info["verity"], "hash_offset") as usize;
    let cases = [
        (0, 3, "header"),                                // magic
        (9, 3, "header"),                                // format version
        (200, 4, "signature"),                           // signed field: root hash
        (100, 4, "signature"),                           // signed field: image size
        (260, 4, "signature"),                           // key id
        (300, 4, "signature"),                           // signature
        (330, 5, "manifest"),                            //
        (seccomp_start + seccomp_len / 2, 6, "seccomp"), //
        (seccomp_start + seccomp_len + 1, 3, "header"),  // padding
        (image_offset + image_size / 3, 7, "image"),     //
        (hash_offset + 10, 8, "hash tree"),              // top block
        (good.len() - 4000, 8, "hash tree"),             // level 0
    ];
    assert!(
        seccomp_start + seccomp_len + 1 < image_offset,
        "test needs padding before the image"
    );
    for (offset, code, part) in cases {
        let (got, msg) = verify_flipped(&f, &good, offset);
        assert_eq!(got, code, "bit flipped at {offset}: {msg}");
        assert!(
            msg.contains(&format!("{part}:")),
            "bit flipped at {offset}: `{msg}` does not name {part}"
        );
    }
}

#[test]
fn wrong_key_unsigned_truncated_and_garbage_are_refused_cleanly() {
    let f = Fixture::new();
    let signed = f.pack("hello.npk", true);
    npk_ok(&["keygen", "--out", &f.s("other")]);
    let out = npk(&[
        "verify",
        signed.to_str().unwrap(),
        "--key",
        &f.s("other.pub"),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not among the keys given"));
    // Several keys: the right one among them is found.
    npk_ok(&[
        "verify",
        signed.to_str().unwrap(),
        "--key",
        &f.s("other.pub"),
        "--key",
        &f.s("dev.pub"),
    ]);

    let unsigned = f.pack("unsigned.npk", false);
    let out = npk(&[
        "verify",
        unsigned.to_str().unwrap(),
        "--key",
        &f.s("dev.pub"),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed"));

    let good = fs::read(&signed).unwrap();
    for len in [
        0,
        7,
        100,
        327,
        328,
        400,
        4096,
        good.len() / 2,
        good.len() - 1,
    ] {
        let path = f.path("cut.npk");
        fs::write(&path, &good[..len]).unwrap();
        for cmd in [
            vec!["verify", path.to_str().unwrap(), "--key", &f.s("dev.pub")],
            vec!["inspect", path.to_str().unwrap()],
        ] {
            let out = npk(&cmd);
            let code = out.status.code();
            assert!(
                code == Some(3) || code == Some(1),
                "{cmd:?} on {len} bytes exited {code:?}"
            );
            let msg = String::from_utf8_lossy(&out.stderr);
            assert!(!msg.contains("panicked"), "{msg}");
        }
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(f.path("long.npk"), longer).unwrap();
    let out = npk(&["verify", &f.s("long.npk"), "--key", &f.s("dev.pub")]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("length"));

    fs::write(
        f.path("garbage.npk"),
        b"PK\x03\x04 this is a zip, not an npk",
    )
    .unwrap();
    let out = npk(&["inspect", &f.s("garbage.npk")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an NPK"));
}

#[test]
fn bad_manifests_and_inputs_fail_before_writing() {
    let f = Fixture::new();
    let bad = MANIFEST.replace("uid = 1000", "uid = 0");
    fs::write(f.path("bad.toml"), bad).unwrap();
    let out = f.try_pack("bad.toml", "x.npk", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uid: containers never run as root"));
    assert!(!f.path("x.npk").exists());
    // An unknown syscall in the allow list names the syscall and the architecture.
    let bad = MANIFEST.replace("personality = {", "no_such_call = \"any\"\npersonality = {");
    fs::write(f.path("bad.toml"), bad).unwrap();
    let out = f.try_pack("bad.toml", "x.npk", &[]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && msg.contains("no_such_call") && msg.contains("x86_64"),
        "{msg}"
    );
    // An init that is not ELF needs --arch.
    fs::write(f.path("root/bin/hello"), "#!/bin/sh\n").unwrap();
    let out = f.try_pack("manifest.toml", "x.npk", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arch"));
    let packed = f.try_pack("manifest.toml", "x.npk", &["--arch", "arm"]);
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    assert_eq!(f.inspect(&f.path("x.npk"))["arch"], "arm");
    // keygen never overwrites.
    let out = npk(&["keygen", "--out", &f.s("dev")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn northstar_raw_keys_are_accepted() {
    let f = Fixture::new();
    let text = fs::read_to_string(f.path("dev.key")).unwrap();
    let hex = text
        .trim()
        .strip_prefix("nanostar-ed25519-secret:")
        .unwrap();
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    fs::write(f.path("raw.key"), &seed).unwrap();
    let public =
        ed25519_dalek::SigningKey::from_bytes(&seed.clone().try_into().unwrap()).verifying_key();
    fs::write(f.path("raw.pub"), public.as_bytes()).unwrap();
    let (m, r, o, k) = (
        f.s("manifest.toml"),
        f.s("root"),
        f.s("raw.npk"),
        f.s("raw.key"),
    );
    npk_ok(&[
        "pack",
        "--manifest",
        &m,
        "--root",
        &r,
        "--out",
        &o,
        "--key",
        &k,
    ]);
    npk_ok(&["verify", &o, "--key", &f.s("raw.pub")]);
    npk_ok(&["verify", &o, "--key", &f.s("dev.pub")]);
}
