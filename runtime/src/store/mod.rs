//! The package store: the repositories' verified packages, installs, and the mounted
//! images (docs/design.md, decisions 7 and 8). No sockets and no epoll: the server asks,
//! the store answers with results, and the server tells the clients.
//!
//! - [`repository`]: verifying a package file; the table of packages.
//! - [`install`]: power-loss-safe installs.
//! - [`mount`]: loop + dm-verity + squashfs.
//!
//! A package is opened and verified once per use ([`Store::open_verified`]); the same
//! descriptor is what a mount attaches to its loop device ([`Store::ensure_mounted`]), so
//! what was checked is what runs.

pub mod install;
pub mod mount;
pub mod repository;

use core::fmt::Write as _;

use heapless::{String, Vec};
use nanostar_protocol::npk::header::HEADER_LEN;
use nanostar_protocol::npk::{Manifest, PublicKey, VerifiedHeader};
use nanostar_protocol::version::Version;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::config::Config;
use crate::limits::{MAX_MOUNTS_TOTAL, MAX_NAME_LEN, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS};
use crate::{errln, fs, layout};
use install::{Announced, Install, InstallError};
use mount::{MountError, MountSpec, Mounted, Verity};
use repository::{Leftovers, Package, Packages, Rejection, SCRATCH_LEN, ScanEvent};

/// Why the store could not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No installed package has this name (and version).
    UnknownPackage,
    /// The configuration has no repository of this name (or index).
    NoSuchRepository,
    /// The package's image is mounted already.
    AlreadyMounted,
    /// The package's image is not mounted.
    NotMounted,
    /// The mount table is full.
    MountsFull,
    /// A file operation failed.
    Io(Errno),
    /// The package file was refused when it was verified again.
    Rejected(Rejection),
    /// An install failed.
    Install(InstallError),
    /// Mounting or unmounting the image failed.
    Mount(MountError),
}

/// Keys of each repository, in configuration order (empty: development mode).
pub type Keys = Vec<Vec<PublicKey, MAX_REPOSITORY_KEYS>, MAX_REPOSITORIES>;

/// A package whose image is mounted.
pub struct MountEntry {
    name: String<MAX_NAME_LEN>,
    version: Version,
    mounted: Mounted,
}

/// A package file opened and verified just now: the descriptor the checks read, and its
/// trusted header. The manifest and seccomp program are in the store's scratch buffer
/// until the next verification ([`Store::verified_parts`]).
pub struct Opened {
    /// The package.
    pub package: Package,
    /// The file, as verified.
    pub fd: OwnedFd,
    /// Its trusted header.
    pub header: VerifiedHeader,
}

/// The package store.
pub struct Store<'c> {
    config: &'c Config<'c>,
    keys: Keys,
    packages: &'c mut Packages,
    mounts: Vec<MountEntry, MAX_MOUNTS_TOTAL>,
    /// Where a verification reads the header, manifest and seccomp program.
    scratch: &'c mut [u8; SCRATCH_LEN],
    /// Makes temporary file names unique among concurrent installs.
    install_serial: u32,
}

impl<'c> Store<'c> {
    /// A store over the configuration's repositories; `Err(index)` names a repository
    /// whose key file cannot be read. The tables are empty until [`Store::scan`].
    pub fn new(
        config: &'c Config<'c>,
        packages: &'c mut Packages,
        scratch: &'c mut [u8; SCRATCH_LEN],
    ) -> Result<Store<'c>, usize> {
        let mut keys = Vec::new();
        for (index, repo) in config.repositories.iter().enumerate() {
            let mut repo_keys = Vec::new();
            for key in &repo.keys {
                let k = fs::read_public_key(key.as_bytes()).map_err(|_| index)?;
                // Cannot overflow: the configuration bounds keys by the same constant.
                let _ = repo_keys.push(k);
            }
            // Cannot overflow: the configuration bounds repositories by the same constant.
            let _ = keys.push(repo_keys);
        }
        Ok(Store {
            config,
            keys,
            packages,
            mounts: Vec::new(),
            scratch,
            install_serial: 0,
        })
    }

    /// Verifies every repository into the package table; problems are logged and skipped.
    #[inline(never)]
    pub fn scan(&mut self) {
        for (index, repo) in self.config.repositories.iter().enumerate() {
            let Ok(mut dir) = layout::Path::of(&[repo.dir]) else {
                continue;
            };
            let Ok(dir) = dir.c_str() else {
                continue;
            };
            let report = &mut |event: ScanEvent| match event {
                ScanEvent::Added(_) => {}
                ScanEvent::Skipped { file, why } => {
                    errln!("nanostar: repository {}: {file}: skipped: {why}", repo.name)
                }
                ScanEvent::RemovedTemp(file) => {
                    errln!(
                        "nanostar: repository {}: removed {file} (an install that did not finish)",
                        repo.name
                    )
                }
            };
            let scanned = repository::scan(
                index as u8,
                dir,
                &self.keys[index],
                Leftovers::Remove,
                self.packages,
                self.scratch,
                report,
            );
            if let Err(e) = scanned {
                errln!("nanostar: repository {}: {}", repo.name, fs::errno_text(e));
            }
        }
    }

    /// The installed packages.
    pub fn packages(&self) -> &Packages {
        self.packages
    }

    /// The keys of each repository.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The name of repository `index` ("" if there is none).
    pub fn repository_name(&self, index: u8) -> &'c str {
        self.config
            .repositories
            .get(usize::from(index))
            .map(|r| r.name)
            .unwrap_or("")
    }

    /// The package called `name` (at `version`, or the newest).
    pub fn find(&self, name: &str, version: Option<Version>) -> Option<&Package> {
        match version {
            Some(v) => self.packages.find(name, &v),
            None => self
                .packages
                .iter()
                .filter(|p| p.name == name)
                .max_by_key(|p| p.version),
        }
    }

    /// Whether a package of this name is installed (in any version).
    pub fn knows(&self, name: &str) -> bool {
        self.packages.iter().any(|p| p.name == name)
    }

    /// Whether the image of `name` `version` is mounted.
    pub fn is_mounted(&self, name: &str, version: &Version) -> bool {
        self.mounts
            .iter()
            .any(|m| m.name == name && m.version == *version)
    }

    /// Opens a package's file and verifies it again (the file may have changed since
    /// start-up): the one open of a start, an inspect or a mount.
    pub fn open_verified(&mut self, p: &Package) -> Result<Opened, StoreError> {
        let repo = self
            .config
            .repositories
            .get(usize::from(p.repository))
            .ok_or(StoreError::NoSuchRepository)?;
        let mut path = layout::package_file(repo.dir, &p.file).map_err(StoreError::Io)?;
        let file = path.c_str().map_err(StoreError::Io)?;
        let fd = repository::open_package(rustix::fs::CWD, file).map_err(StoreError::Rejected)?;
        let keys = &self.keys[usize::from(p.repository)];
        let examined =
            repository::examine(&fd, keys, self.scratch).map_err(StoreError::Rejected)?;
        Ok(Opened {
            package: p.clone(),
            fd,
            header: examined.header,
        })
    }

    /// The manifest and seccomp program bytes of the package verified last (`opened`).
    pub fn verified_parts(&self, opened: &Opened) -> (&[u8], &[u8]) {
        let manifest_end = HEADER_LEN + opened.header.manifest_len as usize;
        let seccomp_end = manifest_end + opened.header.seccomp_len as usize;
        (
            &self.scratch[HEADER_LEN..manifest_end],
            &self.scratch[manifest_end..seccomp_end],
        )
    }

    /// The decoded manifest of the package verified last.
    pub fn manifest(&self, opened: &Opened) -> Option<Manifest<'_>> {
        Manifest::decode(self.verified_parts(opened).0).ok()
    }

    /// Mounts the image of an opened package unless it is mounted, from the verified
    /// descriptor; `Ok(true)` when it was mounted now.
    pub fn ensure_mounted(&mut self, opened: &Opened) -> Result<bool, StoreError> {
        let p = &opened.package;
        if self.is_mounted(&p.name, &p.version) {
            return Ok(false);
        }
        if self.mounts.is_full() {
            return Err(StoreError::MountsFull);
        }
        let mounted = self.mount_image(opened)?;
        // Cannot fail: checked for room above.
        let _ = self.mounts.push(MountEntry {
            name: p.name.clone(),
            version: p.version,
            mounted,
        });
        Ok(true)
    }

    /// `mount`: opens, verifies and mounts a package that is not mounted.
    pub fn mount(&mut self, name: &str, version: &Version) -> Result<(), StoreError> {
        let p = self
            .packages
            .find(name, version)
            .cloned()
            .ok_or(StoreError::UnknownPackage)?;
        if self.is_mounted(name, version) {
            return Err(StoreError::AlreadyMounted);
        }
        if self.mounts.is_full() {
            return Err(StoreError::MountsFull);
        }
        let opened = self.open_verified(&p)?;
        self.ensure_mounted(&opened).map(drop)
    }

    #[inline(never)]
    fn mount_image(&self, opened: &Opened) -> Result<Mounted, StoreError> {
        let p = &opened.package;
        let header = &opened.header;
        let signed = !self.keys[usize::from(p.repository)].is_empty();
        let run_dir = self.config.run_dir;
        let mut target: layout::Path =
            layout::mount_point(run_dir, &p.name, &p.version).map_err(StoreError::Io)?;
        fs::create_dirs(target.as_str()).map_err(StoreError::Io)?;
        let mut node_dir = layout::Path::of(&[run_dir]).map_err(StoreError::Io)?;
        let mut dm_name: String<64> = String::new();
        let _ = write!(dm_name, "nanostar-{}-{}", p.name, p.version);
        let file_name = p.file.as_bytes();
        let spec = MountSpec {
            npk: opened.fd.as_fd(),
            file_name,
            image_offset: header.image_offset,
            image_size: header.image_size,
            verity: signed.then(|| Verity::from(&header.verity)),
            target: target.c_str().map_err(StoreError::Io)?,
            dm_name: &dm_name,
            node_dir: node_dir.c_str().map_err(StoreError::Io)?,
        };
        mount::mount(&spec).map_err(StoreError::Mount)
    }

    /// Unmounts a package's image if it is mounted (the caller made sure nothing uses
    /// it); `Ok(true)` when it was unmounted now.
    pub fn unmount(&mut self, name: &str, version: &Version) -> Result<bool, StoreError> {
        let Some(index) = self
            .mounts
            .iter()
            .position(|m| m.name == name && m.version == *version)
        else {
            return Ok(false);
        };
        let entry = self.mounts.swap_remove(index);
        if let Err(e) = self.unmount_entry(&entry) {
            // Still mounted: keep it in the table.
            let _ = self.mounts.push(entry);
            return Err(e);
        }
        Ok(true)
    }

    #[inline(never)]
    fn unmount_entry(&self, entry: &MountEntry) -> Result<(), StoreError> {
        let mut target: layout::Path =
            layout::mount_point(self.config.run_dir, &entry.name, &entry.version)
                .map_err(StoreError::Io)?;
        let target = target.c_str().map_err(StoreError::Io)?;
        mount::umount(target, &entry.mounted).map_err(StoreError::Mount)?;
        let _ = rustix::fs::rmdir(target);
        Ok(())
    }

    /// Unmounts everything (shutdown); what cannot be unmounted is logged.
    pub fn unmount_all(&mut self) {
        while let Some(entry) = self.mounts.pop() {
            if let Err(e) = self.unmount_entry(&entry) {
                errln!(
                    "nanostar: cannot unmount {} {}: {}",
                    entry.name,
                    entry.version,
                    crate::text::error_text(&e.into())
                );
            }
        }
    }

    /// Removes an unmounted package's file and forgets it; with `wipe` also its
    /// persistent data (which belongs to the name, not the version).
    pub fn remove(&mut self, name: &str, version: &Version, wipe: bool) -> Result<(), StoreError> {
        let p = self
            .packages
            .find(name, version)
            .cloned()
            .ok_or(StoreError::UnknownPackage)?;
        let repo = self
            .config
            .repositories
            .get(usize::from(p.repository))
            .ok_or(StoreError::NoSuchRepository)?;
        let removed = layout::Path::of(&[repo.dir]).and_then(|mut dir| {
            let dirfd = rustix::fs::open(
                dir.c_str()?,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::unlinkat(&dirfd, p.file.as_str(), rustix::fs::AtFlags::empty())?;
            rustix::fs::fsync(&dirfd)
        });
        removed.map_err(StoreError::Io)?;
        self.packages.remove(&p.name, &p.version);
        if wipe {
            fs::remove_tree(self.config.data_dir, &p.name).map_err(StoreError::Io)?;
        }
        Ok(())
    }

    /// Starts an install of `size` bytes into the repository called `repository`.
    pub fn begin_install(&mut self, repository: &str, size: u64) -> Result<Install, StoreError> {
        let (index, repo) = self
            .config
            .repositories
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == repository)
            .ok_or(StoreError::NoSuchRepository)?;
        let mut dir = layout::Path::of(&[repo.dir]).map_err(|_| StoreError::NoSuchRepository)?;
        let dir = dir.c_str().map_err(|_| StoreError::NoSuchRepository)?;
        self.install_serial = self.install_serial.wrapping_add(1);
        Install::begin(
            dir,
            index as u8,
            size,
            repo.max_install_size,
            self.install_serial,
        )
        .map_err(StoreError::Install)
    }

    /// The index of the repository called `name`.
    pub fn repository_index(&self, name: &str) -> Option<u8> {
        self.config
            .repositories
            .iter()
            .position(|r| r.name == name)
            .map(|i| i as u8)
    }

    /// Verifies a complete install and puts it into its repository.
    pub fn finish_install(
        &mut self,
        install: Install,
        announced: Option<Announced>,
    ) -> Result<&Package, StoreError> {
        let keys = &self.keys[usize::from(install.repository())];
        install
            .finish(keys, self.packages, self.scratch, announced)
            .map_err(StoreError::Install)
    }

    /// The newest installed version of resource `name` that `matches` accepts.
    pub fn newest_matching(
        &self,
        name: &str,
        matches: impl Fn(&Version) -> bool,
    ) -> Option<&Package> {
        self.packages
            .iter()
            .filter(|r| r.name == name && matches(&r.version))
            .max_by_key(|r| r.version)
    }
}
