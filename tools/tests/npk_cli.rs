//! The `npk` command end to end, checked against independent tools: `veritysetup` for the
//! hash tree, `unsquashfs` and the kernel's squashfs (loop mount) for the image, and
//! ed25519-dalek for the signature.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nanostar_tools::testing::is_root;
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

/// A minimal static ELF executable: the header, one program header and, for x86_64, code
/// that exits 0 (a `true` that needs no libraries). For other machines only the headers
/// are right, which is all `npk pack` reads.
fn tiny_elf(elf64: bool, machine: u16) -> Vec<u8> {
    let (ehsize, phentsize) = if elf64 { (64, 56) } else { (52, 32) };
    let code: &[u8] = &[0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]; // exit(0)
    let base = 0x40_0000u64;
    let total = (ehsize + phentsize + code.len()) as u64;
    let mut b = vec![0u8; ehsize + phentsize];
    b[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', if elf64 { 2 } else { 1 }, 1, 1]);
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    let entry = base + (ehsize + phentsize) as u64;
    let ph = ehsize;
    if elf64 {
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        b[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        b[ph + 16..ph + 24].copy_from_slice(&base.to_le_bytes());
        b[ph + 24..ph + 32].copy_from_slice(&base.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&total.to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&total.to_le_bytes());
        b[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    } else {
        b[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
        b[40..42].copy_from_slice(&52u16.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
        b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        b[ph + 8..ph + 12].copy_from_slice(&(base as u32).to_le_bytes());
        b[ph + 12..ph + 16].copy_from_slice(&(base as u32).to_le_bytes());
        b[ph + 16..ph + 20].copy_from_slice(&(total as u32).to_le_bytes());
        b[ph + 20..ph + 24].copy_from_slice(&(total as u32).to_le_bytes());
        b[ph + 24..ph + 28].copy_from_slice(&5u32.to_le_bytes());
        b[ph + 28..ph + 32].copy_from_slice(&0x1000u32.to_le_bytes());
    }
    b.extend_from_slice(code);
    b
}

/// A static x86_64 program that exits 0.
fn static_true() -> Vec<u8> {
    tiny_elf(true, 62)
}

/// Writes an executable file (mode 0755), creating its directory.
fn write_program(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

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
    /// A root with an ELF init (a static `true`, so the root needs no libraries), a nested
    /// tree, a big file and a symlink.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("share/doc/deep")).unwrap();
        write_program(&root.join("bin/hello"), &static_true());
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
    assert_eq!(fs::read(out.join("bin/hello")).unwrap(), static_true());
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
    // An init that is not ELF needs --arch (its interpreter is an ARM program).
    fs::write(f.path("root/bin/hello"), "#!/bin/sh\n").unwrap();
    write_program(&f.path("root/bin/sh"), &tiny_elf(false, 40));
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

#[test]
fn the_static_true_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("true");
    write_program(&path, &static_true());
    assert!(Command::new(&path).status().unwrap().success());
}

#[test]
fn keygen_creates_the_key_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("keys/release");
    let out = npk_ok(&["keygen", "--out", stem.to_str().unwrap()]);
    assert!(out.contains("release.key"), "{out}");
    let mode = |p: &str| {
        fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("keys/release.key"), 0o600);
    assert!(dir.path().join("keys/release.pub").is_file());
}

impl Fixture {
    /// `npk pack` of the root with the fixture's manifest and `extra` arguments: its exit
    /// code and stderr, after checking that a refusal wrote nothing.
    fn pack_result(&self, extra: &[&str]) -> (i32, String) {
        let _ = fs::remove_file(self.path("x.npk"));
        let out = self.try_pack("manifest.toml", "x.npk", extra);
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            assert!(
                !self.path("x.npk").exists(),
                "a refused pack wrote its output"
            );
        }
        (code, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[track_caller]
    fn refused(&self, extra: &[&str], expected: &[&str]) {
        let (code, msg) = self.pack_result(extra);
        assert_eq!(code, 1, "{msg}");
        for part in expected.iter().chain(&["--no-root-check"]) {
            assert!(msg.contains(part), "`{msg}` lacks `{part}`");
        }
    }
}

#[test]
fn pack_refuses_a_root_that_cannot_run_init() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let f = Fixture::new();
    let init = f.path("root/bin/hello");
    fs::remove_file(&init).unwrap();
    f.refused(&[], &["init /bin/hello is not in the root"]);
    fs::write(&init, static_true()).unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o644)).unwrap();
    f.refused(&[], &["init /bin/hello is not executable", "chmod u+x"]);
    fs::remove_file(&init).unwrap();
    fs::create_dir(&init).unwrap();
    f.refused(&[], &["init /bin/hello is a directory"]);
    fs::remove_dir(&init).unwrap();
    // A link out of the root, though this machine has what it names.
    symlink("../../../../../../../../bin/true", &init).unwrap();
    f.refused(
        &["--arch", "x86_64"],
        &["init /bin/hello leads out of the root: the symlink /bin/hello points to ../../"],
    );
    fs::remove_file(&init).unwrap();
    // A script whose interpreter is missing; absolute links resolve inside the root.
    write_program(&init, b"#!/usr/bin/env sh\n");
    fs::create_dir_all(f.path("root/usr/bin")).unwrap();
    symlink("/bin/env", f.path("root/usr/bin/env")).unwrap();
    f.refused(
        &["--arch", "x86_64"],
        &["the interpreter /usr/bin/env of init /bin/hello is not in the root: the symlink /usr/bin/env leads to /bin/env"],
    );
    write_program(&f.path("root/bin/env"), &static_true());
    let (code, msg) = f.pack_result(&["--arch", "x86_64"]);
    assert_eq!(code, 0, "{msg}");
    // The program's machine against --arch.
    write_program(&init, &static_true());
    f.refused(
        &["--arch", "arm"],
        &["init /bin/hello is an x86_64 program but --arch is arm"],
    );
    // Without --arch, init's own machine is the package's.
    write_program(&init, &tiny_elf(true, 183));
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(f.inspect(&f.path("x.npk"))["arch"], "aarch64");
}

/// Copies `program` and what `ldd` says it loads (its libraries and interpreter) into
/// `root`, at the same paths.
fn copy_with_libraries(root: &Path, program: &str) {
    let copy = |path: &str| {
        let to = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(path, &to).unwrap();
    };
    copy(program);
    let out = tool("ldd", &[program]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            copy(path);
        }
    }
}

#[test]
fn a_dynamic_init_needs_its_libraries_in_the_root() {
    let f = Fixture::new();
    fs::write(
        f.path("manifest.toml"),
        MANIFEST.replace("/bin/hello", "/bin/ls"),
    )
    .unwrap();
    fs::copy("/bin/ls", f.path("root/bin/ls")).unwrap();
    f.refused(
        &[],
        &[
            "init /bin/ls needs, not in the root: /lib64/ld-linux-x86-64.so.2 (the interpreter)",
            "libselinux.so.1",
            "libc.so.6",
            "(searched /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib, /lib64, /usr/lib64)",
        ],
    );
    copy_with_libraries(&f.path("root"), "/bin/ls");
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(f.inspect(&f.path("x.npk"))["arch"], "x86_64");
}

#[test]
fn no_root_check_packs_a_broken_root_with_a_warning() {
    let f = Fixture::new();
    fs::remove_file(f.path("root/bin/hello")).unwrap();
    f.refused(
        &["--arch", "x86_64"],
        &["init /bin/hello is not in the root"],
    );
    let (code, msg) = f.pack_result(&["--arch", "x86_64", "--no-root-check"]);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("warning: --no-root-check"), "{msg}");
    assert_eq!(f.inspect(&f.path("x.npk"))["arch"], "x86_64");
    let help = npk_ok(&["pack", "--help"]);
    assert!(help.contains("--no-root-check"), "{help}");
    // A resource package has no init to check.
    fs::write(
        f.path("manifest.toml"),
        "name = \"fonts\"\nversion = \"1.0.0\"\nuid = 1000\ngid = 1000\n",
    )
    .unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 0, "{msg}");
    assert!(!msg.contains("warning"), "{msg}");
}

/// The fixture's manifest with its `[seccomp]` table replaced by `seccomp` (TOML).
fn with_seccomp(seccomp: &str) -> String {
    let at = MANIFEST.find("[seccomp]").unwrap();
    format!("{}{seccomp}", &MANIFEST[..at])
}

#[test]
fn seccomp_is_the_default_and_no_filter_is_an_explicit_choice() {
    let f = Fixture::new();
    // No `[seccomp]` table: the default profile, compiled like `profile = "default"`.
    fs::write(f.path("manifest.toml"), with_seccomp("")).unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 0, "{msg}");
    let default = fs::read(f.path("x.npk")).unwrap();
    let info = f.inspect(&f.path("x.npk"));
    assert!(u64_of(&info, "seccomp_instructions") > 100, "{info}");
    assert_eq!(info["seccomp_profile"], "default");
    let human = npk_ok(&["inspect", &f.s("x.npk")]);
    assert!(
        human.contains("seccomp:      the default profile (no [seccomp] table): "),
        "{human}"
    );
    fs::write(
        f.path("manifest.toml"),
        with_seccomp("[seccomp]\nprofile = \"default\"\n"),
    )
    .unwrap();
    f.pack_result(&[]);
    assert_eq!(
        nanostar_tools::testing::seccomp_of(&fs::read(f.path("x.npk")).unwrap()),
        nanostar_tools::testing::seccomp_of(&default)
    );
    // No filter only when the manifest says so; the package then carries none.
    fs::write(
        f.path("manifest.toml"),
        with_seccomp("[seccomp]\nprofile = \"unconfined\"\n"),
    )
    .unwrap();
    let (code, msg) = f.pack_result(&["--key", &f.s("dev.key")]);
    assert_eq!(code, 0, "{msg}");
    let info = f.inspect(&f.path("x.npk"));
    assert_eq!(u64_of(&info, "seccomp_instructions"), 0);
    assert_eq!(info["seccomp_profile"], "unconfined");
    let human = npk_ok(&["inspect", &f.s("x.npk")]);
    assert!(
        human.contains("seccomp:      NO FILTER: the manifest chose profile \"unconfined\"\n"),
        "{human}"
    );
    npk_ok(&["verify", &f.s("x.npk"), "--key", &f.s("dev.pub")]);
    // Unconfined takes no allow list.
    fs::write(
        f.path("manifest.toml"),
        with_seccomp("[seccomp]\nprofile = \"unconfined\"\n[seccomp.allow]\nbpf = \"any\"\n"),
    )
    .unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains("seccomp: profile \"unconfined\" means no filter at all"),
        "{msg}"
    );
    // An app for any architecture cannot have the default filter: it must choose.
    fs::write(f.path("manifest.toml"), with_seccomp("")).unwrap();
    let (code, msg) = f.pack_result(&["--arch", "any", "--no-root-check"]);
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("profile = \"unconfined\""), "{msg}");
}

#[test]
fn verify_refuses_a_package_without_the_filter_its_manifest_asks_for() {
    use nanostar_tools::testing::repack;
    let f = Fixture::new();
    fs::write(f.path("manifest.toml"), with_seccomp("")).unwrap();
    f.pack_result(&["--key", &f.s("dev.key")]);
    let good = fs::read(f.path("x.npk")).unwrap();
    let key = nanostar_tools::keys::read_secret(&f.path("dev.key")).unwrap();
    let verify = |bytes: &[u8]| {
        fs::write(f.path("hand.npk"), bytes).unwrap();
        let out = npk(&["verify", &f.s("hand.npk"), "--key", &f.s("dev.pub")]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Signed and consistent, but the program left out: no filter by omission.
    let (code, msg) = verify(&repack(&good, |_| {}, &[], 0, Some(&key)));
    assert_eq!(code, 6, "{msg}");
    assert!(
        msg.contains("seccomp: the package carries no seccomp program, but its manifest does not choose `profile = \"unconfined\"`"),
        "{msg}"
    );
    // A program although the manifest chose none.
    let program = nanostar_tools::testing::seccomp_of(&good);
    let unconfined = |m: &mut nanostar_protocol::npk::Manifest| {
        m.seccomp = Some(nanostar_protocol::npk::manifest::Seccomp {
            profile: nanostar_protocol::npk::manifest::SeccompProfile::Unconfined,
            allow: heapless::Vec::new(),
        })
    };
    let (code, msg) = verify(&repack(&good, unconfined, &program, 0, Some(&key)));
    assert_eq!(code, 6, "{msg}");
    assert!(msg.contains("chose no filter"), "{msg}");
    // Both ways round made by hand are what npk makes.
    let (code, msg) = verify(&repack(&good, unconfined, &[], 0, Some(&key)));
    assert_eq!(code, 0, "{msg}");
    let (code, msg) = verify(&repack(&good, |_| {}, &program, 0, Some(&key)));
    assert_eq!(code, 0, "{msg}");
    assert_eq!(repack(&good, |_| {}, &program, 0, Some(&key)), good);
    // A byte in the padding no digest covers: refused, though the signature holds.
    let (code, msg) = verify(&repack(&good, |_| {}, &program, 0x5a, Some(&key)));
    assert_eq!(code, 3, "{msg}");
    assert!(
        msg.contains("the bytes between the seccomp program and the image are not zero"),
        "{msg}"
    );
}

#[test]
fn capabilities_that_break_containment_are_refused_unless_allowed_by_name() {
    let f = Fixture::new();
    fs::write(
        f.path("manifest.toml"),
        MANIFEST.replace(
            "gid = 1000\n",
            "gid = 1000\ncapabilities = [\"CAP_SYS_PTRACE\", \"CAP_NET_BIND_SERVICE\"]\n",
        ),
    )
    .unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains("CAP_SYS_PTRACE lets the app attach to the container's init")
            && msg.contains("--allow-capability CAP_SYS_PTRACE")
            && !msg.contains("CAP_NET_BIND_SERVICE"),
        "{msg}"
    );
    let (code, msg) = f.pack_result(&["--allow-capability", "CAP_SYS_PTRACE"]);
    assert_eq!(code, 0, "{msg}");
    assert!(
        msg.contains(
            "npk: WARNING: --allow-capability CAP_SYS_PTRACE: this package's app can attach"
        ),
        "{msg}"
    );
    assert_eq!(
        f.inspect(&f.path("x.npk"))["manifest"]["capabilities"][1],
        "CAP_SYS_PTRACE"
    );
    let help = npk_ok(&["pack", "--help"]);
    assert!(help.contains("--allow-capability"), "{help}");
}

#[test]
fn a_mount_target_through_a_symlink_or_on_a_file_is_refused() {
    use std::os::unix::fs::symlink;
    let f = Fixture::new();
    fs::create_dir(f.path("root/etc")).unwrap();
    // `/data -> /etc`, absolute, and a relative link that climbs out.
    symlink("/etc", f.path("root/data")).unwrap();
    let expected = "mount target /data passes through the symlink /data -> /etc in the \
                    package root; mount at the real path instead";
    for extra in [&[][..], &["--no-root-check"][..]] {
        let (code, msg) = f.pack_result(extra);
        assert_eq!(code, 1, "{msg}");
        assert!(msg.contains(expected), "{msg}");
    }
    fs::remove_file(f.path("root/data")).unwrap();
    fs::create_dir_all(f.path("root/usr/lib")).unwrap();
    symlink("../../..", f.path("root/usr/lib/up")).unwrap();
    fs::write(
        f.path("manifest.toml"),
        MANIFEST.replace("[mounts.\"/tmp\"]", "[mounts.\"/usr/lib/up/tmp\"]"),
    )
    .unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains(
            "mount target /usr/lib/up/tmp passes through the symlink /usr/lib/up -> ../../.."
        ),
        "{msg}"
    );
    // A file: only a bind mount's target may be one.
    fs::write(f.path("root/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let bind = "[mounts.\"/etc/hosts\"]\ntype = \"bind\"\nhost = \"/etc/hosts\"\n";
    fs::write(f.path("manifest.toml"), format!("{MANIFEST}{bind}")).unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 0, "{msg}");
    let tmpfs = "[mounts.\"/etc/hosts\"]\ntype = \"tmpfs\"\nsize = \"4K\"\n";
    fs::write(f.path("manifest.toml"), format!("{MANIFEST}{tmpfs}")).unwrap();
    let (code, msg) = f.pack_result(&[]);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains("mount target /etc/hosts is a regular file in the package root"),
        "{msg}"
    );
}
