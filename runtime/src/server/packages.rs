//! The package requests: list, inspect, repositories, install (streamed or by a passed
//! descriptor), uninstall, mount and umount. The store does the work; these check what
//! containers use, answer, and tell the subscribers.

use heapless::{String, Vec};
use nanostar_protocol::console::{
    Error, Inspected, Notification, PackageId, PackageInfo, Reply, RepositoryInfo, Violation,
};
use nanostar_protocol::limits::MAX_CHUNK_LEN;
use nanostar_protocol::version::Version;

use super::Runtime;
use super::clients::{Client, Stage, Token, Upload};
use super::dispatch::Answer;
use super::errors::Refusal;
use crate::container::table::{Table, Waiter};
use crate::limits::INSTALL_PUMP_SLICE;
use crate::store::install::{Announced, InstallError};
use crate::store::repository::Package;
use crate::store::{Store, StoreError};
use crate::time::{after_ms, is_before, now};

/// What `list` and `inspect` say about a package.
fn info<'a>(store: &Store<'a>, table: &Table, p: &'a Package) -> PackageInfo<'a> {
    PackageInfo {
        package: PackageId {
            name: &p.name,
            version: p.version,
        },
        repository: store.repository_name(p.repository),
        mounted: store.is_mounted(&p.name, &p.version),
        container: table.of_package(&p.name, &p.version).map(|c| c.info()),
    }
}

/// `list`: a page of packages after `after`, in (name, version) order, so paging is
/// stable while packages come and go.
#[inline(never)]
pub fn list<'a>(store: &'a Store, table: &Table, after: Option<PackageId>) -> Answer<'a> {
    fn key(p: &Package) -> (&str, Version) {
        (p.name.as_str(), p.version)
    }
    let mut packages = Vec::new();
    let mut more = false;
    let mut cursor = after.map(|a| (a.name, a.version));
    while let Some(next) = store
        .packages()
        .iter()
        .filter(|p| cursor.is_none_or(|c| key(p) > c))
        .min_by_key(|p| key(p))
    {
        if packages.push(info(store, table, next)).is_err() {
            more = true;
            break;
        }
        cursor = Some(key(next));
    }
    Answer::Now(Reply::Packages { packages, more })
}

/// `inspect`: the package verified again, and a piece of its manifest from `offset`.
#[inline(never)]
pub fn inspect<'a>(
    store: &'a mut Store,
    table: &Table,
    name: &str,
    version: Option<Version>,
    offset: u32,
) -> Answer<'a> {
    let Some(p) = store.find(name, version).cloned() else {
        return Answer::Now(Reply::Error(Error::UnknownPackage));
    };
    let opened = match store.open_verified(&p) {
        Ok(opened) => opened,
        Err(e) => return Refusal::from(e).into(),
    };
    let store: &'a Store = store;
    let header = opened.header;
    let manifest = store.verified_parts(&opened).0;
    let start = (offset as usize).min(manifest.len());
    let end = (start + MAX_CHUNK_LEN).min(manifest.len());
    // The package as the table holds it: the reply borrows its name.
    let Some(p) = store.find(name, Some(p.version)) else {
        return Answer::Now(Reply::Error(Error::UnknownPackage));
    };
    Answer::Now(Reply::Inspected(Inspected {
        package: info(store, table, p),
        size: p.size,
        // The signer's key id also where the repository does not check signatures.
        key: header.signer().map(|k| k.0),
        manifest_len: header.manifest_len,
        manifest_offset: start as u32,
        manifest: &manifest[start..end],
    }))
}

/// `repositories`: every configured repository, its keys and how many packages it has.
#[inline(never)]
pub fn repositories<'a>(store: &'a Store) -> Answer<'a> {
    let mut repositories = Vec::new();
    for (index, keys) in store.keys().iter().enumerate() {
        let packages = store
            .packages()
            .iter()
            .filter(|p| usize::from(p.repository) == index)
            .count() as u32;
        // Cannot overflow: the configuration holds at most as many repositories.
        let _ = repositories.push(RepositoryInfo {
            name: store.repository_name(index as u8),
            keys: keys.iter().map(|k| k.id().0).collect(),
            packages,
        });
    }
    Answer::Now(Reply::Repositories { repositories })
}

/// A chunk, end or abort for install `id`, which `client` is not running: dropped without
/// a reply if an error ended that install (the client sent it before it heard), else
/// `NoInstall`.
fn no_install(client: &Client, id: u32) -> Answer<'static> {
    if client.ended_install == Some(id) {
        Answer::Later
    } else {
        Answer::Violation(Violation::NoInstall)
    }
}

impl<'c> Runtime<'c> {
    /// Starts an install (`InstallBegin`, or `Install` with the package it announces,
    /// refused at once when it is installed already or cannot be replaced).
    #[inline(never)]
    pub(super) fn install_begin(
        &mut self,
        waiter: Waiter,
        repository: &str,
        size: u64,
        fd: bool,
        announced: Option<(PackageId, bool)>,
    ) -> Answer<'static> {
        let Some(client) = self.clients.get(waiter.client) else {
            return Answer::Later;
        };
        let source = match (client.passed_fd.take(), fd) {
            (Some(passed), true) => Some(passed),
            (None, false) => None,
            // Announced without a descriptor, or a descriptor nobody announced.
            _ => return Answer::Violation(Violation::Fd),
        };
        let size_differs =
            |f: &rustix::fd::OwnedFd| rustix::fs::fstat(f).map(|st| st.st_size as u64) != Ok(size);
        if source.as_ref().is_some_and(size_differs) {
            return Answer::Violation(Violation::InstallSize);
        }
        if client.upload.is_some() {
            return Answer::Violation(Violation::InstallInProgress);
        }
        let Some(index) = self.store.repository_index(repository) else {
            return Answer::Now(Reply::Error(Error::NoSuchRepository));
        };
        if let Some((package, replace)) = announced
            && let Err(e) = self.may_install(package, replace, index)
        {
            return e.into();
        }
        let install = match self.store.begin_install(repository, size) {
            Ok(install) => install,
            Err(e) => return Refusal::from(e).into(),
        };
        let (streamed, stage) = match source {
            Some(passed) => (false, Stage::Passed(passed)),
            None => (true, Stage::Streamed),
        };
        let announced = announced
            .and_then(|(p, replace)| Some((String::try_from(p.name).ok()?, p.version, replace)));
        let deadline = after_ms(self.config.limits.install_timeout_ms);
        if let Some(c) = self.clients.get(waiter.client) {
            c.ended_install = None;
            c.upload = Some(Upload {
                id: waiter.id,
                install,
                stage,
                deadline,
                announced,
            });
        }
        // A passed package gets one reply, the result, when `pump_uploads` is done.
        if streamed {
            Answer::Now(Reply::InstallAccepted)
        } else {
            Answer::Later
        }
    }

    /// Whether `package` may be installed into repository `repository`: not installed
    /// yet, or (`replace`) installed there and used by no container, in which case its
    /// image is unmounted now so the new file can take its place.
    fn may_install(
        &mut self,
        package: PackageId,
        replace: bool,
        repository: u8,
    ) -> Result<(), Refusal> {
        let Some(old) = self.store.packages().find(package.name, &package.version) else {
            return Ok(());
        };
        if !replace || old.repository != repository {
            return Err(Error::AlreadyInstalled.into());
        }
        if let Some((name, version)) = self
            .containers
            .table
            .user_of(package.name, &package.version)
        {
            return Err(if name == package.name && version == package.version {
                Error::AlreadyRunning.into()
            } else {
                Refusal::busy(name, version)
            });
        }
        self.unmount_if_mounted(package.name, &package.version)
    }

    /// Unmounts a package's image if it is mounted (nothing may use it), and tells the
    /// subscribers.
    fn unmount_if_mounted(&mut self, name: &str, version: &Version) -> Result<(), Refusal> {
        if self.store.unmount(name, version)? {
            self.clients.notify(Notification::Umounted(PackageId {
                name,
                version: *version,
            }));
        }
        Ok(())
    }

    #[inline(never)]
    pub(super) fn install_chunk(&mut self, waiter: Waiter, data: &[u8]) -> Answer<'static> {
        let timeout = self.config.limits.install_timeout_ms;
        let Some(client) = self.clients.get(waiter.client) else {
            return Answer::Later;
        };
        let Some(upload) = client
            .upload
            .as_mut()
            .filter(|u| u.id == waiter.id && !u.ended())
        else {
            return no_install(client, waiter.id);
        };
        upload.deadline = after_ms(timeout);
        match upload.install.write(data) {
            Ok(()) => Answer::Later,
            Err(e) => {
                // This reply ends the install; what the client sent for it meanwhile
                // is dropped, and the connection serves on.
                client.upload = None;
                client.ended_install = Some(waiter.id);
                match e {
                    InstallError::Overrun => Answer::Violation(Violation::InstallSize),
                    other => Answer::Now(Reply::Error(other.into())),
                }
            }
        }
    }

    /// The last chunk of a streamed install is in: it is synced a slice per turn from
    /// now on, and answered when finished (`pump_uploads`).
    #[inline(never)]
    pub(super) fn install_end(&mut self, waiter: Waiter) -> Answer<'static> {
        let timeout = self.config.limits.install_timeout_ms;
        let Some(client) = self.clients.get(waiter.client) else {
            return Answer::Later;
        };
        let Some(upload) = client
            .upload
            .as_mut()
            .filter(|u| u.id == waiter.id && !u.ended())
        else {
            return no_install(client, waiter.id);
        };
        let complete = upload.install.written() == upload.install.expected();
        if !complete || !matches!(upload.stage, Stage::Streamed) {
            client.upload = None;
            return Answer::Violation(Violation::InstallSize);
        }
        upload.stage = Stage::Syncing;
        upload.deadline = after_ms(timeout);
        Answer::Later
    }

    /// Verifies and installs a complete upload, and answers its request.
    fn finish_upload(&mut self, token: Token, upload: Upload) {
        let id = upload.id;
        let announced = upload
            .announced
            .as_ref()
            .map(|(name, version, replace)| Announced {
                name,
                version: *version,
                replace: *replace,
            });
        // Things may have changed while the bytes came: check the replaced package again.
        if let Some(a) = announced.filter(|a| a.replace) {
            let package = PackageId {
                name: a.name,
                version: a.version,
            };
            let repository = upload.install.repository();
            if let Err(e) = self.may_install(package, true, repository) {
                return self.clients.reply(token, id, Reply::Error(e.error()));
            }
        }
        let installed = self
            .store
            .finish_install(upload.install, announced)
            .map(|p| (p.name.clone(), p.version, p.repository));
        match installed {
            Ok((name, version, repository)) => {
                let package = PackageId {
                    name: &name,
                    version,
                };
                self.clients.reply(token, id, Reply::Installed(package));
                self.clients.notify(Notification::Installed {
                    package,
                    repository: self.store.repository_name(repository),
                });
            }
            Err(e) => self.clients.reply(token, id, Reply::Error(e.into())),
        }
    }

    /// Copies the next slice of every passed package and syncs the next slice of every
    /// complete one, so a large install shares the loop with everyone else (its copy and
    /// its writeback alike); finishes those that are on the device.
    pub(super) fn pump_uploads(&mut self) {
        let timeout = self.config.limits.install_timeout_ms;
        for token in self.clients.tokens() {
            let Some(client) = self.clients.get(token) else {
                continue;
            };
            let Some(upload) = client.upload.as_mut() else {
                continue;
            };
            let synced = match &upload.stage {
                Stage::Streamed => continue,
                Stage::Passed(source) => upload
                    .install
                    .copy_from(source, INSTALL_PUMP_SLICE)
                    .map(|_| false),
                Stage::Syncing => upload.install.sync_slice(),
            };
            match synced {
                Ok(false) => {
                    if upload.install.written() == upload.install.expected() {
                        // Copied: the descriptor goes, the writeback waits follow.
                        upload.stage = Stage::Syncing;
                    }
                    upload.deadline = after_ms(timeout);
                    continue;
                }
                Ok(true) => {
                    if let Some(done) = client.upload.take() {
                        self.finish_upload(token, done);
                    }
                }
                Err(e) => {
                    let id = upload.id;
                    client.upload = None;
                    client.ended_install = Some(id);
                    client.reply(id, Reply::Error(e.into()));
                }
            }
            self.clients.settle(token, &self.poll);
        }
    }

    /// Whether a passed package is being copied or an install synced: the loop must not
    /// sleep then.
    pub(super) fn pumping(&self) -> bool {
        self.clients.iter().any(|c| {
            c.upload
                .as_ref()
                .is_some_and(|u| !matches!(u.stage, Stage::Streamed))
        })
    }

    /// Ends the installs whose deadline passed.
    #[inline(never)]
    pub(super) fn expire_uploads(&mut self) {
        let n = now();
        for token in self.clients.tokens() {
            let Some(client) = self.clients.get(token) else {
                continue;
            };
            if let Some(upload) = client.upload.take_if(|u| is_before(&u.deadline, &n)) {
                let id = upload.id;
                client.ended_install = Some(id);
                // Its temporary file goes before the client learns of it.
                drop(upload);
                client.reply(id, Reply::Error(Error::InstallTimeout));
                self.clients.settle(token, &self.poll);
            }
        }
    }

    #[inline(never)]
    pub(super) fn install_abort(&mut self, waiter: Waiter) -> Answer<'static> {
        let Some(client) = self.clients.get(waiter.client) else {
            return Answer::Later;
        };
        if client.upload.take_if(|u| u.id == waiter.id).is_none() {
            return no_install(client, waiter.id);
        }
        Answer::Now(Reply::Ok)
    }

    /// `uninstall`: a package no container uses, unmounted on the way out. Returns the
    /// change to tell the subscribers once the requester has its reply (so do `mount`
    /// and `umount`).
    #[inline(never)]
    pub(super) fn uninstall<'p>(
        &mut self,
        package: PackageId<'p>,
        wipe: bool,
    ) -> Result<Notification<'p>, Refusal> {
        let (name, version) = (package.name, package.version);
        if self.store.packages().find(name, &version).is_none() {
            return Err(Error::UnknownPackage.into());
        }
        if let Some((user, v)) = self.containers.table.user_of(name, &version) {
            return Err(Refusal::busy(user, v));
        }
        self.unmount_if_mounted(name, &version)?;
        self.store.remove(name, &version, wipe)?;
        Ok(Notification::Uninstalled(package))
    }

    /// `mount`: the package's image, verified.
    #[inline(never)]
    pub(super) fn mount<'p>(
        &mut self,
        package: PackageId<'p>,
    ) -> Result<Notification<'p>, Refusal> {
        self.store.mount(package.name, &package.version)?;
        Ok(Notification::Mounted(package))
    }

    /// `umount`: a mounted package no container uses.
    #[inline(never)]
    pub(super) fn umount<'p>(
        &mut self,
        package: PackageId<'p>,
    ) -> Result<Notification<'p>, Refusal> {
        let (name, version) = (package.name, package.version);
        if let Some((user, v)) = self.containers.table.user_of(name, &version) {
            return Err(Refusal::busy(user, v));
        }
        match self.store.unmount(name, &version)? {
            true => Ok(Notification::Umounted(package)),
            false if self.store.packages().find(name, &version).is_some() => {
                Err(StoreError::NotMounted.into())
            }
            false => Err(StoreError::UnknownPackage.into()),
        }
    }
}
