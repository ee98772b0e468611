//! Where things are on the device, in one place (docs/design.md, "Inside the runtime"),
//! and the one buffer type every path is built in.
//!
//! - `REPOSITORY_DIR/FILE`: a package file ([`package_file`]).
//! - `RUN_DIR/mnt/NAME-VERSION`: where a package's image is mounted ([`mount_point`]).
//! - `RUN_DIR/lock`: one runtime per run directory ([`lock_file`]).
//! - `DATA_DIR/NAME`: a package's persistent data ([`persist_dir`]).
//! - `/run/netns/NAME`: a named network namespace to join ([`netns`]).

use core::ffi::CStr;
use core::fmt;

use nanostar_protocol::version::Version;
use rustix::io::Errno;

use crate::limits::MAX_PATH_LEN;

/// A path of at most [`MAX_PATH_LEN`] bytes.
pub type Path = CPath<{ MAX_PATH_LEN + 1 }>;

/// Text built in a fixed buffer of `N` bytes that always keeps room for the NUL the
/// kernel wants (configuration strings and names are not NUL-terminated).
pub struct CPath<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> CPath<N> {
    /// Empty.
    pub const fn new() -> Self {
        CPath {
            buf: [0; N],
            len: 0,
        }
    }

    /// The concatenation of `parts`; `ENAMETOOLONG` if it does not fit.
    pub fn of(parts: &[&str]) -> Result<Self, Errno> {
        let mut path = Self::new();
        for part in parts {
            path.push(part.as_bytes()).map_err(|_| Errno::NAMETOOLONG)?;
        }
        Ok(path)
    }

    /// Forgets the text.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`; fails (appending nothing) when they would not fit with the NUL.
    pub fn push(&mut self, bytes: &[u8]) -> fmt::Result {
        let end = self
            .len
            .checked_add(bytes.len())
            .filter(|&e| e < N)
            .ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text, if it is UTF-8 (it is when built from `str`s).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The text as a C string; `EINVAL` if it holds a NUL (a name never does: the
    /// manifest and the configuration refuse them).
    pub fn c_str(&mut self) -> Result<&CStr, Errno> {
        let end = self.len;
        // Cannot fail: `push` keeps a byte free.
        *self.buf.get_mut(end).ok_or(Errno::NAMETOOLONG)? = 0;
        CStr::from_bytes_with_nul(&self.buf[..=end]).map_err(|_| Errno::INVAL)
    }
}

impl<const N: usize> Default for CPath<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for CPath<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes())
    }
}

/// The folder under the run directory that holds the mount points.
pub const MOUNTS_DIR: &str = "mnt";
/// The lock file in the run directory: one runtime per run directory, so a second one
/// never takes over the live one's socket, repositories or mounts.
pub const LOCK_FILE: &str = "lock";
/// Where named network namespaces are (iproute2's convention).
pub const NETNS_DIR: &str = "/run/netns";

/// `dir/file`.
pub fn join(dir: &str, file: &str) -> Result<Path, Errno> {
    Path::of(&[dir, "/", file])
}

/// `REPOSITORY_DIR/FILE`: a package file.
pub fn package_file(repository_dir: &str, file: &str) -> Result<Path, Errno> {
    join(repository_dir, file)
}

/// `RUN_DIR/mnt/NAME-VERSION`: where the image of package `name` `version` is mounted.
pub fn mount_point<const N: usize>(
    run_dir: &str,
    name: &str,
    version: &Version,
) -> Result<CPath<N>, Errno> {
    let mut path = CPath::<N>::of(&[run_dir, "/", MOUNTS_DIR, "/", name, "-"])?;
    fmt::Write::write_fmt(&mut path, format_args!("{version}")).map_err(|_| Errno::NAMETOOLONG)?;
    Ok(path)
}

/// `RUN_DIR/lock`.
pub fn lock_file(run_dir: &str) -> Result<Path, Errno> {
    join(run_dir, LOCK_FILE)
}

/// `DATA_DIR/NAME`: the persistent data of the packages called `name` (all versions).
pub fn persist_dir(data_dir: &str, name: &str) -> Result<Path, Errno> {
    join(data_dir, name)
}

/// `/run/netns/NAME`.
pub fn netns(name: &str) -> Result<Path, Errno> {
    join(NETNS_DIR, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_layout() {
        let v = Version::new(1, 2, 3);
        let mut p: Path = mount_point("/run/nanostar", "hello", &v).unwrap();
        assert_eq!(p.c_str().unwrap(), c"/run/nanostar/mnt/hello-1.2.3");
        assert_eq!(lock_file("/r").unwrap().as_str(), "/r/lock");
        assert_eq!(persist_dir("/data", "app").unwrap().as_str(), "/data/app");
        assert_eq!(netns("blue").unwrap().as_str(), "/run/netns/blue");
        assert_eq!(
            package_file("/repo", "a.npk").unwrap().as_str(),
            "/repo/a.npk"
        );
    }

    #[test]
    fn too_long_is_an_error_and_appends_nothing() {
        let long = [b'x'; MAX_PATH_LEN];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(join(long, "f").err(), Some(Errno::NAMETOOLONG));
        let mut small = CPath::<4>::new();
        assert!(small.push(b"abc").is_ok());
        assert!(small.push(b"d").is_err());
        assert_eq!(small.as_bytes(), b"abc");
        assert_eq!(small.c_str().unwrap(), c"abc");
    }

    #[test]
    fn an_embedded_nul_is_refused() {
        let mut p = Path::of(&["a\0b"]).unwrap();
        assert_eq!(p.c_str().err(), Some(Errno::INVAL));
    }
}
