//! A writer for initramfs archives: cpio in the "newc" format (`070701`), the only
//! format the kernel unpacks.
//!
//! It needs neither an external `cpio` nor root: device nodes are just headers. The output
//! is reproducible: entries appear in the order they were added, every entry has uid/gid
//! 0 and mtime 0, and inode numbers count up from 1. Missing parent directories are added
//! (mode 0755), because the kernel does not create them and silently skips an entry whose
//! directory is missing.
//!
//! Layout of each entry: a 110-byte ASCII header (magic + 13 fields of 8 hex digits), the
//! NUL-terminated name, padding to a multiple of 4, the data, padding to a multiple of 4.
//! The archive ends with the entry `TRAILER!!!`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

/// An archive being built in memory (an initramfs is a few megabytes at most).
#[derive(Default)]
pub struct Archive {
    out: Vec<u8>,
    next_ino: u32,
    /// Every path added so far: Some(permission bits) for a directory, None otherwise.
    paths: HashMap<String, Option<u32>>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory; `mode` holds the permission bits (e.g. 0o755, 0o1777 for /tmp).
    /// Adding a directory again with the same mode is not an error (also one added
    /// implicitly, with 0755, as a parent), so callers can list the directories they rely
    /// on; a different mode is, because the first entry is the one that counts.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let name = normalize(path)?;
        let mode = perm(mode)?;
        match self.paths.get(&name) {
            Some(Some(m)) if *m == mode => return Ok(self),
            Some(Some(m)) => bail!(
                "initramfs: directory {path} is already in the archive with mode {m:o}; \
                 add it with mode {mode:o} before anything inside it"
            ),
            Some(None) => bail!("initramfs: {path} is already in the archive as a non-directory"),
            None => {}
        }
        self.parents(&name)?;
        self.entry(&name, S_IFDIR | mode, 2, (0, 0), &[])?;
        self.paths.insert(name, Some(mode));
        Ok(self)
    }

    /// A regular file with the given contents and permission bits.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<&mut Self> {
        self.leaf(path, S_IFREG | perm(mode)?, (0, 0), data)
    }

    /// A regular file copied from the host; `mode` None keeps the host file's permission
    /// bits (so an executable stays executable).
    pub fn file_from_host(
        &mut self,
        path: &str,
        host: &Path,
        mode: Option<u32>,
    ) -> Result<&mut Self> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(host)
            .with_context(|| format!("initramfs: cannot read {}", host.display()))?;
        ensure!(
            meta.is_file(),
            "initramfs: {} is not a regular file",
            host.display()
        );
        let data = std::fs::read(host)
            .with_context(|| format!("initramfs: cannot read {}", host.display()))?;
        let mode = mode.unwrap_or(meta.permissions().mode() & 0o7777);
        self.file(path, mode, &data)
    }

    /// A symbolic link `path` -> `target` (the target is stored as is, not checked).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        ensure!(
            !target.is_empty() && !target.contains('\0'),
            "initramfs: bad symlink target {target:?} for {path}"
        );
        self.leaf(path, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// A character device node, e.g. `/dev/console` 5:1, which the kernel needs in the
    /// initramfs to give init its stdin/stdout/stderr before anything mounts devtmpfs.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<&mut Self> {
        self.leaf(path, S_IFCHR | perm(mode)?, (major, minor), &[])
    }

    /// Appends the trailer and returns the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        // The trailer's fields are all zero except nlink, as GNU cpio and the kernel's
        // gen_init_cpio write it. It cannot fail: the name is short and there is no data.
        self.header(TRAILER, 0, 0, 1, (0, 0), 0);
        self.out
    }

    fn leaf(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<&mut Self> {
        let name = normalize(path)?;
        ensure!(
            !self.paths.contains_key(&name),
            "initramfs: {path} is already in the archive"
        );
        self.parents(&name)?;
        self.entry(&name, mode, 1, rdev, data)?;
        self.paths.insert(name, None);
        Ok(self)
    }

    /// Adds the missing parent directories of `name`, outermost first.
    fn parents(&mut self, name: &str) -> Result<()> {
        for (i, _) in name.match_indices('/') {
            let parent = &name[..i];
            match self.paths.get(parent) {
                Some(Some(_)) => {}
                Some(None) => bail!("initramfs: {parent} is not a directory, cannot hold {name}"),
                None => {
                    self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), &[])?;
                    self.paths.insert(parent.to_owned(), Some(0o755));
                }
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            anyhow::anyhow!("initramfs: {name} is larger than 4 GiB, too big for cpio")
        })?;
        self.next_ino += 1;
        self.header(name, self.next_ino, mode, nlink, rdev, size);
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: u32) {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(4);
        self.out.resize(len, 0);
    }
}

/// Permission bits only: the file type comes from the method.
fn perm(mode: u32) -> Result<u32> {
    ensure!(
        mode <= 0o7777,
        "initramfs: mode {mode:o} has bits beyond the permission bits (0o7777)"
    );
    Ok(mode)
}

/// Archive names are relative ("dev/console"), as `cpio -i` expects; a leading `/` is
/// accepted and dropped. Empty, `.`, `..` and empty components are refused, so every
/// path has one spelling and duplicates are caught.
fn normalize(path: &str) -> Result<String> {
    let name = path.trim_start_matches('/');
    ensure!(
        !name.is_empty()
            && !name.contains('\0')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "initramfs: bad path {path:?} (want e.g. /dev/console: no empty, . or .. components)"
    );
    ensure!(name != TRAILER, "initramfs: {TRAILER} is a reserved name");
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Output, Stdio};

    use super::*;

    /// Runs Debian's cpio on `archive`, failing the test with an install hint if it is
    /// missing.
    fn cpio(args: &[&str], dir: &Path, archive: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run cpio ({e}): install it with `apt-get install cpio`")
            });
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn sample(host_file: &Path) -> Vec<u8> {
        let mut a = Archive::new();
        a.dir("/dev", 0o755).unwrap();
        a.dir("/tmp", 0o1777).unwrap();
        a.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a.file("/init", 0o755, b"#!/bin/true\n").unwrap();
        // Sizes 0..=5 cover every padding case; the names too (lengths 5..=9 + NUL).
        for n in 0..=5usize {
            a.file(&format!("/pad/f{}", "x".repeat(n)), 0o644, &b"abcde"[..n])
                .unwrap();
        }
        a.file_from_host("/etc/from-host", host_file, None).unwrap();
        a.symlink("/bin/sh", "/init").unwrap();
        a.finish()
    }

    #[test]
    fn extracts_with_gnu_cpio() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host.txt");
        std::fs::write(&host, b"from the host\n").unwrap();
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let archive = sample(&host);

        let list = cpio(&["-it", "--quiet"], tmp.path(), &archive);
        let names: Vec<&str> = std::str::from_utf8(&list.stdout).unwrap().lines().collect();
        assert_eq!(
            names,
            [
                "dev",
                "tmp",
                "dev/console",
                "init",
                "pad",
                "pad/f",
                "pad/fx",
                "pad/fxx",
                "pad/fxxx",
                "pad/fxxxx",
                "pad/fxxxxx",
                "etc",
                "etc/from-host",
                "bin",
                "bin/sh"
            ]
        );

        // Extraction of everything but the device node (mknod needs root; the node's
        // header is checked by listing_shows_device_and_modes).
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut no_dev = Archive::new();
        no_dev.dir("/tmp", 0o1777).unwrap();
        no_dev.file("/init", 0o755, b"#!/bin/true\n").unwrap();
        for n in 0..=5usize {
            no_dev
                .file(&format!("/pad/f{}", "x".repeat(n)), 0o644, &b"abcde"[..n])
                .unwrap();
        }
        no_dev
            .file_from_host("/etc/from-host", &host, None)
            .unwrap();
        no_dev.symlink("/bin/sh", "/init").unwrap();
        cpio(
            &["-id", "--quiet", "--no-absolute-filenames"],
            &out,
            &no_dev.finish(),
        );

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::symlink_metadata(out.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(std::fs::read(out.join("init")).unwrap(), b"#!/bin/true\n");
        assert_eq!(mode("init"), 0o755);
        assert_eq!(mode("tmp"), 0o1777);
        for n in 0..=5usize {
            let p = format!("pad/f{}", "x".repeat(n));
            assert_eq!(std::fs::read(out.join(&p)).unwrap(), &b"abcde"[..n], "{p}");
        }
        assert_eq!(
            std::fs::read(out.join("etc/from-host")).unwrap(),
            b"from the host\n"
        );
        assert_eq!(
            mode("etc/from-host"),
            0o640,
            "host permission bits are kept"
        );
        assert_eq!(
            std::fs::read_link(out.join("bin/sh")).unwrap(),
            Path::new("/init")
        );
    }

    #[test]
    fn listing_shows_device_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = Archive::new();
        a.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a.char_dev("/dev/null", 0o666, 1, 3).unwrap();
        let list = cpio(&["-itv", "--quiet"], tmp.path(), &a.finish());
        let text = String::from_utf8(list.stdout).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        // drwxr-xr-x 2 root root 0 Jan 1 1970 dev
        assert_eq!(lines[0][0], "drwxr-xr-x");
        assert_eq!(lines[0].last(), Some(&"dev"));
        // crw------- 1 root root 5, 1 Jan 1 1970 dev/console
        assert_eq!(
            &lines[1][..6],
            ["crw-------", "1", "root", "root", "5,", "1"]
        );
        assert_eq!(lines[1].last(), Some(&"dev/console"));
        assert_eq!(
            &lines[2][..6],
            ["crw-rw-rw-", "1", "root", "root", "1,", "3"]
        );
        assert!(text.contains("1970"), "mtime is 0: {text}");
    }

    #[test]
    fn device_node_header_bytes() {
        let mut a = Archive::new();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let bytes = a.finish();
        // Entry 1 is the implicit "dev" directory (ino 1): a header and "dev\0", 114
        // bytes padded to 116. The node (ino 2) follows.
        let dev_dir = 116;
        let node = &bytes[dev_dir..dev_dir + 110];
        let expect = [
            "070701", "00000002", "00002180", "00000000", "00000000", "00000001", "00000000",
            "00000000", "00000000", "00000000", "00000005", "00000001", "0000000C", "00000000",
        ]
        .concat();
        assert_eq!(std::str::from_utf8(node).unwrap(), expect);
        assert_eq!(&bytes[dev_dir + 110..dev_dir + 122], b"dev/console\0");
        // 110 + 12 = 122 -> padded to 124; the trailer header follows.
        assert_eq!(&bytes[dev_dir + 124..dev_dir + 130], b"070701");
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn every_header_is_aligned() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("h");
        std::fs::write(&host, b"123").unwrap();
        let bytes = sample(&host);
        let mut at = 0;
        let mut inos = Vec::new();
        loop {
            assert_eq!(at % 4, 0);
            assert_eq!(&bytes[at..at + 6], b"070701", "header at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (ino, size, namesize) = (field(0), field(6), field(11));
            let name = &bytes[at + 110..at + 110 + namesize - 1];
            at = (at + 110 + namesize).next_multiple_of(4) + size.next_multiple_of(4);
            if name == b"TRAILER!!!" {
                break;
            }
            inos.push(ino);
        }
        assert_eq!(at, bytes.len());
        assert_eq!(
            inos,
            (1..=inos.len()).collect::<Vec<_>>(),
            "sequential inodes"
        );
    }

    #[test]
    fn reproducible() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("h");
        std::fs::write(&host, b"same").unwrap();
        let first = sample(&host);
        // A later mtime on the host file must not change the archive.
        std::fs::File::options()
            .write(true)
            .open(&host)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        assert_eq!(first, sample(&host));
    }

    #[test]
    fn refuses_bad_input() {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"x").unwrap();
        assert!(a.file("init", 0o755, b"y").is_err(), "duplicate");
        assert!(a.dir("/init", 0o755).is_err(), "file as directory");
        assert!(a.file("/init/x", 0o644, b"").is_err(), "file as parent");
        for bad in ["", "/", "a//b", "a/./b", "../etc", "a\0b", "TRAILER!!!"] {
            assert!(a.file(bad, 0o644, b"").is_err(), "{bad:?}");
        }
        assert!(a.file("/m", 0o10_644, b"").is_err(), "type bits in mode");
        assert!(a.symlink("/l", "").is_err());
        // Re-adding a directory with the same mode is fine, also one added as a parent;
        // another mode is not, since the first entry wins.
        a.file("/etc/x", 0o644, b"").unwrap();
        a.dir("/etc", 0o755).unwrap();
        assert!(a.dir("/etc", 0o700).is_err());
    }
}
