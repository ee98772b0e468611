//! `install`: names the package in a local file (from its header and manifest, nothing
//! trusted), then passes the file's descriptor to the runtime or, with `--stream`, sends
//! its bytes over the socket. Apart from the other commands: it alone reads a local file.

use core::fmt::{self, Write as _};

use nanostar_protocol::console::{Error, PackageId, Reply, Request};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_MANIFEST_LEN, MAX_NAME_LEN, MAX_REPOSITORIES};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::npk::header::{HEADER_LEN, HeaderError, UnverifiedHeader};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::args::Options;
use super::commands::{REFUSED, otherwise};
use super::connection::{ClientError, Connection};
use super::render::report;
use crate::out::{say, warn};
use crate::text::{ErrnoText, Subject};

/// Why the client cannot name the package in a file.
enum Unreadable {
    /// Not an NPK at all.
    NotNpk(HeaderError),
    /// An NPK this client cannot read (the runtime judges it).
    Other,
    /// Reading failed.
    Io(Errno),
}

/// Reads the name and version of the package in `fd` from its header and manifest into
/// `buf`. Nothing is trusted: the runtime verifies the package and checks that it is the
/// one announced.
#[inline(never)]
fn read_package<'b>(
    fd: &OwnedFd,
    buf: &'b mut [u8; HEADER_LEN + MAX_MANIFEST_LEN],
) -> Result<PackageId<'b>, Unreadable> {
    let (head, rest) = buf.split_at_mut(HEADER_LEN);
    let got = read_at(fd, head, 0).map_err(Unreadable::Io)?;
    match UnverifiedHeader::new(&head[..got]) {
        Ok(_) => {}
        Err(e @ (HeaderError::Magic | HeaderError::Truncated)) => {
            return Err(Unreadable::NotNpk(e));
        }
        Err(_) => return Err(Unreadable::Other),
    }
    // The manifest's length: a little-endian u32 at byte 12 (docs/npk-format.md).
    let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let len = len.min(MAX_MANIFEST_LEN);
    let got = read_at(fd, &mut rest[..len], HEADER_LEN as u64).map_err(Unreadable::Io)?;
    let manifest = Manifest::decode(&rest[..got]).map_err(|_| Unreadable::Other)?;
    Ok(PackageId {
        name: manifest.name,
        version: manifest.version,
    })
}

/// `pread` until `buf` is full or the file ends; the bytes read.
fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let mut have = 0;
    while have < buf.len() {
        match rustix::io::pread(fd, &mut buf[have..], offset + have as u64) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// A local file cannot be used: `FILE: why`; returns [`REFUSED`].
fn file_failed(o: &Options, file: &str, code: (&str, Option<&str>), why: fmt::Arguments) -> u8 {
    report(o.json, code.0, code.1, &format_args!("{file}{why}"));
    REFUSED
}

pub(super) fn install(c: &mut Connection, o: &Options, file: &str) -> Result<u8, ClientError> {
    let fd = match rustix::fs::open(file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let why = ErrnoText(e.raw_os_error() as u16);
            return Ok(file_failed(
                o,
                file,
                ("file", None),
                format_args!(": {why}"),
            ));
        }
    };
    let size = rustix::fs::fstat(&fd)
        .map(|s| s.st_size as u64)
        .unwrap_or(0);
    let mut buf = [0u8; HEADER_LEN + MAX_MANIFEST_LEN];
    // The package is named in the request, so that the runtime refuses a duplicate before
    // any byte is sent; a file this client cannot read goes as it is (the runtime says
    // what is wrong with it).
    let announced = match read_package(&fd, &mut buf) {
        Ok(p) => Some(p),
        Err(Unreadable::NotNpk(HeaderError::Magic)) => {
            let why = format_args!(" is not an NPK (bad magic)");
            return Ok(file_failed(o, file, ("bad-package", Some("magic")), why));
        }
        Err(Unreadable::NotNpk(_)) => {
            let why = format_args!(" is not an NPK ({size} bytes: shorter than a header)");
            return Ok(file_failed(
                o,
                file,
                ("bad-package", Some("truncated")),
                why,
            ));
        }
        Err(Unreadable::Io(e)) => {
            let why = ErrnoText(e.raw_os_error() as u16);
            return Ok(file_failed(
                o,
                file,
                ("file", None),
                format_args!(": {why}"),
            ));
        }
        Err(Unreadable::Other) => None,
    };
    let s = Subject {
        name: announced.map(|p| p.name),
        version: announced.map(|p| p.version),
        ..o.subject
    };
    let request = |fd| match announced {
        Some(package) => Request::Install {
            repository: o.repository,
            size,
            fd,
            package,
            replace: o.replace,
        },
        None => Request::InstallBegin {
            repository: o.repository,
            size,
            fd,
        },
    };
    let id = if o.stream {
        let id = c.request(request(false))?;
        let refused = match c.reply(id)? {
            Reply::InstallAccepted => None,
            Reply::Error(Error::NoSuchRepository) => Some(None),
            reply => Some(Some(otherwise(o, &s, &reply))),
        };
        match refused {
            None => {}
            Some(None) => return no_repository(c, o),
            Some(Some(code)) => return Ok(code),
        }
        if let Some(code) = stream(c, o, &fd, id, size, file)? {
            return Ok(code);
        }
        id
    } else {
        // The runtime reads the file itself: no copy through the socket.
        c.request_with_fd(request(true), rustix::fd::AsFd::as_fd(&fd))?
    };
    let code = match c.reply(id)? {
        Reply::Installed(p) if o.json => {
            say(format_args!(
                "{{\"ok\":true,\"name\":\"{}\",\"version\":\"{}\"}}",
                p.name, p.version
            ));
            Some(0)
        }
        Reply::Installed(p) => {
            say(format_args!(
                "installed {} {} into {}",
                p.name, p.version, o.repository
            ));
            Some(0)
        }
        Reply::Error(Error::NoSuchRepository) => None,
        reply => Some(otherwise(o, &s, &reply)),
    };
    match code {
        Some(code) => Ok(code),
        None => no_repository(c, o),
    }
}

/// Sends the file's bytes as chunks, then the end; `Some(code)` if reading the file failed.
/// An answer that comes before the end (the runtime refused the install part-way: no
/// space left, a timeout) stops the sending; the caller reads it.
fn stream(
    c: &mut Connection,
    o: &Options,
    fd: &OwnedFd,
    id: u32,
    size: u64,
    file: &str,
) -> Result<Option<u8>, ClientError> {
    let mut chunk = [0u8; MAX_CHUNK_LEN];
    let mut sent = 0u64;
    let mut shown = 0u64;
    while sent < size {
        let n = match rustix::io::read(fd, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => {
                let _ = c.request_as(id, Request::InstallAbort);
                let why = ErrnoText(e.raw_os_error() as u16);
                return Ok(Some(file_failed(
                    o,
                    file,
                    ("file", None),
                    format_args!(": {why}"),
                )));
            }
        };
        if let Err(e) = c.request_as(id, Request::InstallChunk { data: &chunk[..n] }) {
            // A runtime may answer and close before it read everything: its answer says
            // why, better than the broken pipe.
            return match c.poll_reply(id) {
                Ok(true) => Ok(None),
                _ => Err(e),
            };
        }
        if c.poll_reply(id)? {
            return Ok(None);
        }
        sent += n as u64;
        // A progress line on stderr every 10% (people), nothing with --json (scripts).
        if !o.json && size > 0 && (sent * 10 / size) > shown {
            shown = sent * 10 / size;
            warn(format_args!("installing {file}: {}%", sent * 100 / size));
        }
    }
    c.request_as(id, Request::InstallEnd)?;
    Ok(None)
}

/// `no such repository "foo"; the runtime has: default, signed` (as far as the runtime
/// says which it has).
fn no_repository(c: &mut Connection, o: &Options) -> Result<u8, ClientError> {
    let mut names: heapless::String<{ MAX_REPOSITORIES * (MAX_NAME_LEN + 2) }> =
        heapless::String::new();
    let id = c.request(Request::Repositories)?;
    if let Reply::Repositories { repositories } = c.reply(id)? {
        for r in &repositories {
            let sep = if names.is_empty() {
                "; the runtime has: "
            } else {
                ", "
            };
            let _ = write!(names, "{sep}{}", r.name);
        }
    }
    let default = if o.repo_given {
        ""
    } else {
        " (install uses it without --repo)"
    };
    report(
        o.json,
        "no-such-repository",
        None,
        &format_args!("no such repository \"{}\"{default}{names}", o.repository),
    );
    Ok(REFUSED)
}
