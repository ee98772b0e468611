use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;
use crate::elf::synth::{Spec, build};
use crate::elf::{ET_DYN, Endian};
use crate::manifest::SourceManifest;

/// A package root in a temporary directory.
struct T {
    dir: tempfile::TempDir,
}

impl T {
    fn new() -> T {
        T {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    fn file(&self, path: &str, bytes: &[u8], mode: u32) -> &T {
        let host = self.host(path);
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        fs::write(&host, bytes).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn link(&self, path: &str, target: &str) -> &T {
        let host = self.host(path);
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        symlink(target, host).unwrap();
        self
    }

    fn copy(&self, host_file: &str, path: &str) -> &T {
        let mode = fs::metadata(host_file).unwrap().permissions().mode();
        self.file(path, &fs::read(host_file).unwrap(), mode)
    }

    fn resolve(&self, path: &str, mounts: &[&str]) -> Result<Resolved, ResolveError> {
        Root {
            dir: self.root(),
            mounts: mounts.to_vec(),
        }
        .resolve(Path::new(path))
    }

    /// Checks the root with a manifest of `keys` (top-level keys and tables).
    fn check(&self, keys: &str, arch: Option<Arch>) -> Result<Checked, RootError> {
        let source = SourceManifest::parse(&format!(
            "name = \"t\"\nversion = \"1.0.0\"\nuid = 1000\ngid = 1000\n{keys}"
        ))
        .unwrap();
        check(&source.manifest().unwrap(), self.root(), arch)
    }

    #[track_caller]
    fn refused(&self, keys: &str, arch: Option<Arch>) -> String {
        match self.check(keys, arch) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }
}

fn entry(r: Result<Resolved, ResolveError>) -> String {
    match r {
        Ok(Resolved::Entry { path, .. }) => path,
        other => panic!("not an entry: {other:?}"),
    }
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let t = T::new();
    t.file("/bin/busybox", b"x", 0o755)
        .link("/bin/sh", "busybox")
        .link("/usr/bin/sh", "/bin/sh")
        .link("/usr/bin/up", "../../bin/./busybox")
        .link("/lib", "usr/lib")
        .file("/usr/lib/libc.so", b"x", 0o644)
        .link("/etc/passwd-link", "/etc/passwd");
    assert_eq!(entry(t.resolve("/bin/sh", &[])), "/bin/busybox");
    assert_eq!(entry(t.resolve("/usr/bin/sh", &[])), "/bin/busybox");
    assert_eq!(entry(t.resolve("/usr/bin/up", &[])), "/bin/busybox");
    assert_eq!(entry(t.resolve("/lib/libc.so", &[])), "/usr/lib/libc.so");
    // `..` applies to where a link leads, as in the kernel.
    assert_eq!(entry(t.resolve("/lib/../bin", &[])), "/usr/bin");
    assert_eq!(entry(t.resolve("/", &[])), "/");
    // An absolute target is the root's, never this machine's /etc/passwd.
    match t.resolve("/etc/passwd-link", &[]) {
        Err(ResolveError::NotFound { missing, via }) => {
            assert_eq!(missing, "/etc/passwd");
            assert_eq!(via.as_deref(), Some("/etc/passwd-link"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn escapes_loops_and_files_in_the_way() {
    let t = T::new();
    t.link("/bin/out", "../../../etc/passwd")
        .link("/bin/a", "b")
        .link("/bin/b", "/bin/a")
        .file("/bin/file", b"x", 0o755)
        .link("/bin/chain", "out");
    match t.resolve("/bin/out", &[]) {
        Err(ResolveError::Escapes { link, target }) => {
            assert_eq!(link, "/bin/out");
            assert_eq!(target, Path::new("../../../etc/passwd"));
        }
        other => panic!("{other:?}"),
    }
    // The link named is the one whose `..` climbs out, not the first followed.
    match t.resolve("/bin/chain", &[]) {
        Err(ResolveError::Escapes { link, .. }) => assert_eq!(link, "/bin/out"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.resolve("/bin/a", &[]),
        Err(ResolveError::Loop { .. })
    ));
    match t.resolve("/bin/file/x", &[]) {
        Err(ResolveError::NotDir { path }) => assert_eq!(path, "/bin/file"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.resolve("/../x", &[]),
        Err(ResolveError::AboveRoot)
    ));
}

#[test]
fn mount_points_stop_the_walk() {
    let t = T::new();
    t.link("/bin/tool", "/opt/tools/tool");
    match t.resolve("/bin/tool", &["/opt/tools"]) {
        Ok(Resolved::Mounted(m)) => assert_eq!(m, "/opt/tools"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.resolve("/opt/tools", &["/opt/tools"]),
        Ok(Resolved::Mounted(_))
    ));
    assert!(matches!(
        t.resolve("/opt/toolsx", &["/opt/tools"]),
        Err(ResolveError::NotFound { .. })
    ));
    // `npk pack` creates a mount point's missing parents, but nothing else.
    assert!(matches!(
        t.resolve("/opt/x/y", &["/opt/x/y/z"]),
        Err(ResolveError::NotFound { .. })
    ));
}

fn static_x86() -> Vec<u8> {
    build(&Spec::x86_64())
}

#[test]
fn init_must_be_an_executable_file() {
    let t = T::new();
    let init = "init = \"/bin/app\"\n";
    let e = t.refused(init, None);
    assert!(
        e.starts_with("init /bin/app is not in the root (no /bin)"),
        "{e}"
    );
    fs::create_dir(t.host("/bin")).unwrap();
    let e = t.refused(init, None);
    assert!(
        e.starts_with("init /bin/app is not in the root; put the program there"),
        "{e}"
    );
    fs::create_dir_all(t.host("/bin/app")).unwrap();
    let e = t.refused(init, None);
    assert!(e.contains("init /bin/app is a directory"), "{e}");
    fs::remove_dir(t.host("/bin/app")).unwrap();
    t.file("/bin/app", &static_x86(), 0o644);
    let e = t.refused(init, None);
    assert!(
        e.contains("init /bin/app is not executable by its owner (mode 0644)")
            && e.contains("chmod u+x")
            && e.contains(&t.host("/bin/app").display().to_string()),
        "{e}"
    );
    // Only the owner's bit counts: the container's uid owns every file.
    fs::set_permissions(t.host("/bin/app"), fs::Permissions::from_mode(0o655)).unwrap();
    assert!(t.refused(init, None).contains("mode 0655"));
    fs::set_permissions(t.host("/bin/app"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        t.check(init, None).unwrap(),
        Checked {
            arch: Arch::X86_64,
            unchecked: vec![]
        }
    );
    // A symlink that escapes the root.
    t.link("/bin/esc", "../../x");
    let e = t.refused("init = \"/bin/esc\"\n", Some(Arch::X86_64));
    assert!(
        e.contains("init /bin/esc leads out of the root: the symlink /bin/esc points to ../../x"),
        "{e}"
    );
}

#[test]
fn resource_packages_are_not_checked() {
    let t = T::new();
    assert_eq!(
        t.check("", None).unwrap(),
        Checked {
            arch: Arch::Any,
            unchecked: vec![]
        }
    );
    assert_eq!(t.check("", Some(Arch::Arm)).unwrap().arch, Arch::Arm);
}

#[test]
fn scripts_need_their_interpreter() {
    let t = T::new();
    let init = "init = \"/bin/hello\"\n";
    t.file("/bin/hello", b"#!/bin/sh -e\necho hi\n", 0o755);
    let e = t.refused(init, Some(Arch::Arm));
    assert!(
        e.starts_with("the interpreter /bin/sh of init /bin/hello is not in the root"),
        "{e}"
    );
    assert!(e.contains("#! line"), "{e}");
    t.file("/bin/busybox", &build(&Spec::arm()), 0o755)
        .link("/bin/sh", "busybox");
    assert_eq!(t.check(init, Some(Arch::Arm)).unwrap().arch, Arch::Arm);
    // Without --arch, a script does not tell.
    let e = t.refused(init, None);
    assert!(
        e.contains("init /bin/hello is a script") && e.contains("--arch"),
        "{e}"
    );
    // The interpreter is the ELF checked against the architecture.
    let e = t.refused(init, Some(Arch::X86_64));
    assert!(
        e.starts_with(
            "the interpreter /bin/sh of init /bin/hello is an arm program but --arch is x86_64"
        ),
        "{e}"
    );
    // A script its owner cannot read cannot be run by its interpreter (only root reads it
    // here to find out).
    if unsafe { libc::geteuid() } == 0 {
        fs::set_permissions(t.host("/bin/hello"), fs::Permissions::from_mode(0o311)).unwrap();
        assert!(t.refused(init, Some(Arch::Arm)).contains("chmod u+rx"));
    }
    // Bad #! lines.
    for (line, expected) in [
        (&b"#!\n"[..], "names no interpreter"),
        (b"#!   \t\n", "names no interpreter"),
        (
            b"#!sh\n",
            "`sh` in its #! line, which is not an absolute path",
        ),
    ] {
        t.file("/bin/hello", line, 0o755);
        let e = t.refused(init, Some(Arch::Arm));
        assert!(e.contains(expected), "{line:?}: {e}");
    }
    // Scripts running scripts: the kernel follows a few, not forever.
    t.file("/bin/hello", b"#!/bin/s1\n", 0o755)
        .file("/bin/s1", b"#!/bin/s2\n", 0o755)
        .file("/bin/s2", b"#!/bin/s3\n", 0o755)
        .file("/bin/s3", b"#! /bin/sh\n", 0o755);
    t.check(init, Some(Arch::Arm)).unwrap();
    t.file("/bin/s3", b"#!/bin/s4\n", 0o755)
        .file("/bin/s4", b"#!/bin/sh\n", 0o755);
    let e = t.refused(init, Some(Arch::Arm));
    assert!(
        e.starts_with("the interpreter /bin/s4 of init /bin/hello is a script too"),
        "{e}"
    );
}

#[test]
fn elf_programs_match_the_architecture() {
    let t = T::new();
    let init = "init = \"/bin/app\"\n";
    t.file("/bin/app", &static_x86(), 0o755);
    assert_eq!(
        t.refused(init, Some(Arch::Arm)),
        "init /bin/app is an x86_64 program but --arch is arm; pack with --arch x86_64, \
         or put an arm build in the root"
    );
    let e = t.refused(init, Some(Arch::Any));
    assert!(
        e.contains("is an x86_64 program but --arch is any; a package for any architecture holds no programs: pack with --arch x86_64"),
        "{e}"
    );
    // Big-endian ARM is not the package's arm.
    let be = build(&Spec {
        endian: Endian::Big,
        ..Spec::arm()
    });
    t.file("/bin/app", &be, 0o755);
    let e = t.refused(init, Some(Arch::Arm));
    assert!(
        e.contains("is a big-endian 32-bit arm program but --arch is arm; put an arm build"),
        "{e}"
    );
    let e = t.refused(init, None);
    assert!(
        e.contains("which nanostar does not run") && e.contains("--arch"),
        "{e}"
    );
    // Not a program at all, a relocatable object, a truncated ELF.
    t.file("/bin/app", b"just text\n", 0o755);
    assert!(
        t.refused(init, Some(Arch::Arm))
            .contains("neither an ELF program nor a script")
    );
    let object = build(&Spec {
        kind: 1,
        ..Spec::x86_64()
    });
    t.file("/bin/app", &object, 0o755);
    assert!(t.refused(init, None).contains("an ELF file of type 1"));
    t.file("/bin/app", &static_x86()[..70], 0o755);
    let e = t.refused(init, None);
    assert!(
        e.starts_with("init /bin/app: truncated or broken ELF file"),
        "{e}"
    );
}

/// A dynamically linked x86_64 program or library.
fn dynamic(kind: u16, interp: Option<&str>, needed: &[&str], runpath: Option<&str>) -> Vec<u8> {
    build(&Spec {
        kind,
        interp,
        needed,
        runpath,
        ..Spec::x86_64()
    })
}

fn library(needed: &[&str]) -> Vec<u8> {
    dynamic(ET_DYN, None, needed, None)
}

#[test]
fn libraries_are_found_where_the_dynamic_linker_looks() {
    let t = T::new();
    let init = "init = \"/bin/app\"\n";
    let app = dynamic(
        ET_DYN,
        Some("/lib64/ld-linux-x86-64.so.2"),
        &["libc.so.6", "libapp.so.1", "libconf.so", "libenv.so"],
        Some("$ORIGIN/../lib/app"),
    );
    t.file("/bin/app", &app, 0o755);
    let e = t.refused(init, None);
    assert!(
        e.starts_with(
            "init /bin/app needs, not in the root: /lib64/ld-linux-x86-64.so.2 (the interpreter), \
             libc.so.6, libapp.so.1, libconf.so, libenv.so (searched /bin/../lib/app, /lib/x86_64-linux-gnu, \
             /usr/lib/x86_64-linux-gnu, /lib, /usr/lib, /lib64, /usr/lib64); copy them into the root"
        ),
        "{e}"
    );
    // The interpreter (through an absolute link), libc in the multiarch directory, the
    // app's library through its RUNPATH, which needs one in /usr/lib.
    t.file(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &library(&[]),
        0o755,
    )
    .link(
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    )
    .file(
        "/lib/x86_64-linux-gnu/libc.so.6",
        &library(&["ld-linux-x86-64.so.2"]),
        0o644,
    )
    .file(
        "/lib/app/libapp.so.1",
        &library(&["libdep.so", "libc.so.6"]),
        0o644,
    );
    let e = t.refused(init, None);
    assert!(
        e.starts_with(
            "init /bin/app needs, not in the root: libconf.so, libenv.so, libdep.so (for /lib/app/libapp.so.1)"
        ),
        "{e}"
    );
    // ld.so.conf with an include, LD_LIBRARY_PATH from the manifest.
    t.file(
        "/etc/ld.so.conf",
        b"# comment\ninclude ld.so.conf.d/*.conf\n",
        0o644,
    )
    .file("/etc/ld.so.conf.d/a.conf", b"/opt/conf/lib\n", 0o644)
    .file("/etc/ld.so.conf.d/b.txt", b"/never\n", 0o644)
    .file("/opt/conf/lib/libconf.so", &library(&[]), 0o644)
    .file("/usr/lib/libdep.so", &library(&[]), 0o644)
    .file("/opt/env/libenv.so", &library(&[]), 0o644);
    let with_env = "init = \"/bin/app\"\n[env]\nLD_LIBRARY_PATH = \"/opt/env:relative\"\n";
    assert_eq!(
        t.check(with_env, None).unwrap(),
        Checked {
            arch: Arch::X86_64,
            unchecked: vec![]
        }
    );
    // A library for another architecture is skipped, and said so when nothing else fits.
    t.file(
        "/usr/lib/libdep.so",
        &build(&Spec {
            kind: ET_DYN,
            ..Spec::arm()
        }),
        0o644,
    );
    let e = t.refused(with_env, None);
    assert!(
        e.contains("libdep.so (for /lib/app/libapp.so.1; /usr/lib/libdep.so is an arm file)"),
        "{e}"
    );
    t.file("/usr/lib64/libdep.so", &library(&[]), 0o644);
    t.check(with_env, None).unwrap();
    // A broken library is skipped with its reason.
    t.file("/usr/lib64/libdep.so", b"\x7fELF\x02\x01", 0o644);
    let e = t.refused(with_env, None);
    assert!(
        e.contains("/usr/lib64/libdep.so: truncated or broken ELF file"),
        "{e}"
    );
    // The interpreter must be executable.
    t.file("/usr/lib64/libdep.so", &library(&[]), 0o644);
    fs::set_permissions(
        t.host("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = t.refused(with_env, None);
    assert!(
        e.contains("/lib64/ld-linux-x86-64.so.2 (the interpreter; /lib64/ld-linux-x86-64.so.2 is not executable"),
        "{e}"
    );
}

#[test]
fn rpath_is_inherited_and_runpath_is_not() {
    let t = T::new();
    let init = "init = \"/bin/app\"\n";
    let app = build(&Spec {
        kind: ET_DYN,
        interp: Some("/lib/ld.so"),
        needed: &["liba.so"],
        rpath: Some("/opt/r"),
        ..Spec::x86_64()
    });
    t.file("/bin/app", &app, 0o755)
        .file("/lib/ld.so", &library(&[]), 0o755)
        .file("/opt/r/liba.so", &library(&["libb.so"]), 0o644)
        .file("/opt/r/libb.so", &library(&[]), 0o644);
    t.check(init, None).unwrap();
    // With a RUNPATH, liba's own lookups ignore the program's RPATH.
    t.file(
        "/opt/r/liba.so",
        &dynamic(ET_DYN, None, &["libb.so"], Some("/opt/other")),
        0o644,
    );
    let e = t.refused(init, None);
    assert!(
        e.contains("libb.so (for /opt/r/liba.so)") && e.contains("/opt/other"),
        "{e}"
    );
}

#[test]
fn mounts_provide_what_is_below_them() {
    let t = T::new();
    let app = dynamic(ET_DYN, Some("/lib/ld.so"), &["libc.so"], None);
    t.file("/bin/app", &app, 0o755);
    let keys = "init = \"/bin/app\"\n[mounts.\"/lib\"]\ntype = \"bind\"\nhost = \"/lib\"\n";
    assert_eq!(
        t.check(keys, None).unwrap(),
        Checked {
            arch: Arch::X86_64,
            unchecked: vec![
                "/lib/ld.so (mount /lib)".into(),
                "libc.so (mount /lib)".into()
            ]
        }
    );
    // init itself in a resource package's mount needs --arch.
    let keys = "init = \"/app/bin/x\"\n[mounts.\"/app\"]\ntype = \"resource\"\nname = \"r\"\nversion = \"1.0.0\"\ndir = \"/share\"\n";
    assert!(t.refused(keys, None).contains("under the mount point /app"));
    assert_eq!(
        t.check(keys, Some(Arch::Arm)).unwrap().unchecked,
        ["/app/bin/x (mount /app)"]
    );
}

#[test]
fn musl_has_its_own_search_path() {
    let t = T::new();
    let init = "init = \"/bin/app\"\n";
    let app = dynamic(
        ET_DYN,
        Some("/lib/ld-musl-x86_64.so.1"),
        &["libz.so.1"],
        None,
    );
    t.file("/bin/app", &app, 0o755)
        .file("/lib/ld-musl-x86_64.so.1", &library(&[]), 0o755)
        .file("/usr/local/lib/libz.so.1", &library(&[]), 0o644);
    t.check(init, None).unwrap();
    // The path file replaces the defaults.
    t.file("/etc/ld-musl-x86_64.path", b"/opt/z:/opt/y\n", 0o644);
    let e = t.refused(init, None);
    assert!(e.contains("libz.so.1 (searched /opt/z, /opt/y)"), "{e}");
}

/// Copies what `ldd` says `program` loads into the root, at the same paths.
fn copy_with_libraries(t: &T, program: &str) {
    t.copy(program, program);
    let out = Command::new("ldd").arg(program).output().expect("run ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            t.copy(path, path);
        }
    }
}

#[test]
fn host_programs() {
    let t = T::new();
    t.copy("/bin/ls", "/bin/ls");
    let e = t.refused("init = \"/bin/ls\"\n", None);
    for name in [
        "/lib64/ld-linux-x86-64.so.2 (the interpreter)",
        "libc.so.6",
        "libselinux.so.1",
    ] {
        assert!(e.contains(name), "{name} missing from: {e}");
    }
    copy_with_libraries(&t, "/bin/ls");
    assert_eq!(
        t.check("init = \"/bin/ls\"\n", None).unwrap().arch,
        Arch::X86_64
    );
    assert!(
        t.refused("init = \"/bin/ls\"\n", Some(Arch::Aarch64))
            .contains("is an x86_64 program")
    );
}

#[test]
fn wildcards() {
    assert!(wildcard(b"*.conf", b"x86_64-linux-gnu.conf"));
    assert!(wildcard(b"*", b""));
    assert!(wildcard(b"a*b*c", b"aXXbYYbc"));
    assert!(wildcard(b"lib?.so", b"libz.so"));
    assert!(!wildcard(b"*.conf", b"a.conf.bak"));
    assert!(!wildcard(b"lib?.so", b"libzz.so"));
}

#[test]
fn detect_arch_reads_init_inside_the_root() {
    let t = T::new();
    // An absolute link: this machine's /bin/sh would say x86_64.
    t.file("/bin/busybox", &build(&Spec::arm()), 0o755)
        .link("/bin/sh", "/bin/busybox");
    let source = SourceManifest::parse(
        "name = \"t\"\nversion = \"1.0.0\"\nuid = 1\ngid = 1\ninit = \"/bin/sh\"\n",
    )
    .unwrap();
    assert_eq!(
        detect_arch(&source.manifest().unwrap(), t.root()).unwrap(),
        Arch::Arm
    );
}

/// A FIFO is never opened (that would block): as init, or as `/etc/ld.so.conf`.
#[test]
fn special_files_are_not_opened() {
    let t = T::new();
    let fifo = |path: &str| {
        let host = t.host(path);
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(host.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o755) }, 0);
    };
    fifo("/bin/app");
    let init = "init = \"/bin/app\"\n";
    assert!(
        t.refused(init, None)
            .contains("init /bin/app is a special file")
    );
    let source = SourceManifest::parse(&format!(
        "name = \"t\"\nversion = \"1.0.0\"\nuid = 1\ngid = 1\n{init}"
    ))
    .unwrap();
    let e = detect_arch(&source.manifest().unwrap(), t.root()).unwrap_err();
    assert!(e.to_string().contains("is not a regular file"), "{e}");
    fs::remove_file(t.host("/bin/app")).unwrap();
    fifo("/etc/ld.so.conf");
    let app = dynamic(ET_DYN, Some("/lib/ld.so"), &[], None);
    t.file("/bin/app", &app, 0o755)
        .file("/lib/ld.so", &library(&[]), 0o755);
    t.check(init, None).unwrap();
}
