//! Client commands of the `nanostar` binary: talk to a running runtime over its socket.
//!
//! Exit codes scripts can rely on: 0 done; 1 the runtime refused (the message says why);
//! 2 bad usage (from `cli`); 3 the runtime cannot be reached or spoke an unexpected protocol.

use nanostar_protocol::console::{Message, Notification, PackageId, Reply, Request};
use nanostar_protocol::limits::{MAX_CHUNK_LEN, MAX_FRAME_LEN};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::version::Version;
use rustix::fs::{Mode, OFlags};

use crate::client::{ClientError, Connection, error_text};
use crate::{errln, outln};

/// Where the runtime listens unless `--socket` says otherwise (as in `docs/config.md`).
pub const DEFAULT_SOCKET: &str = "/run/nanostar/console";
/// Repository `install` uses without `--repo`.
pub const DEFAULT_REPOSITORY: &str = "default";

const REFUSED: u8 = 1;
const UNREACHABLE: u8 = 3;

/// Options before or after the command words.
struct Options<'a> {
    socket: &'a str,
    json: bool,
    repository: &'a str,
    wipe: bool,
    /// Send an install's bytes through the socket instead of passing the file descriptor.
    stream: bool,
}

/// Runs a client command; `None` if the words are not one (the caller prints usage).
pub fn run(words: &[&str]) -> Option<u8> {
    let mut options = Options {
        socket: DEFAULT_SOCKET,
        json: false,
        repository: DEFAULT_REPOSITORY,
        wipe: false,
        stream: false,
    };
    let mut rest: heapless::Vec<&str, 8> = heapless::Vec::new();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "--socket" => {
                options.socket = words.get(i + 1)?;
                i += 1;
            }
            "--repo" => {
                options.repository = words.get(i + 1)?;
                i += 1;
            }
            "--json" => options.json = true,
            "--wipe" => options.wipe = true,
            "--stream" => options.stream = true,
            word if word.starts_with("--") => return None,
            word => rest.push(word).ok()?,
        }
        i += 1;
    }
    let command = match rest.as_slice() {
        ["list"] => Command::List,
        ["inspect", name] => Command::Inspect(name, None),
        ["inspect", name, version] => Command::Inspect(name, Some(Version::parse(version).ok()?)),
        ["install", file] => Command::Install(file),
        ["uninstall", name, version] => Command::Uninstall(package(name, version)?),
        ["mount", name, version] => Command::Mount(package(name, version)?),
        ["umount", name, version] => Command::Umount(package(name, version)?),
        ["shutdown"] => Command::Shutdown,
        ["notifications"] => Command::Notifications,
        _ => return None,
    };
    let wipe_misplaced = options.wipe && !matches!(command, Command::Uninstall(_));
    if wipe_misplaced || (options.stream && !matches!(command, Command::Install(_))) {
        return None;
    }
    let mut connection = match Connection::connect(options.socket) {
        Ok(c) => c,
        Err(e) => return Some(unreachable(&options, e)),
    };
    let result = match command {
        Command::List => list(&mut connection, &options),
        Command::Inspect(name, version) => inspect(&mut connection, &options, name, version),
        Command::Install(file) => install(&mut connection, &options, file),
        Command::Uninstall(p) => simple(
            &mut connection,
            &options,
            Request::Uninstall {
                package: p,
                wipe: options.wipe,
            },
        ),
        Command::Mount(p) => simple(&mut connection, &options, Request::Mount(p)),
        Command::Umount(p) => simple(&mut connection, &options, Request::Umount(p)),
        Command::Shutdown => simple(&mut connection, &options, Request::Shutdown),
        Command::Notifications => notifications(&mut connection, &options),
    };
    Some(result.unwrap_or_else(|e| unreachable(&options, e)))
}

enum Command<'a> {
    List,
    Inspect(&'a str, Option<Version>),
    Install(&'a str),
    Uninstall(PackageId<'a>),
    Mount(PackageId<'a>),
    Umount(PackageId<'a>),
    Shutdown,
    Notifications,
}

fn package<'a>(name: &'a str, version: &str) -> Option<PackageId<'a>> {
    Some(PackageId {
        name,
        version: Version::parse(version).ok()?,
    })
}

fn unreachable(options: &Options, e: ClientError) -> u8 {
    match e {
        ClientError::Connect(errno) => errln!(
            "nanostar: cannot connect to {}: {} (is the runtime running? use --socket PATH)",
            options.socket,
            crate::fs::errno_text(errno)
        ),
        ClientError::Io(errno) => errln!(
            "nanostar: connection lost: {}",
            crate::fs::errno_text(errno)
        ),
        ClientError::Version { oldest, newest } => {
            errln!(
                "nanostar: the runtime speaks protocol {oldest}..={newest}; use a matching nanostar client"
            )
        }
        ClientError::Protocol => {
            errln!("nanostar: the runtime sent something this client does not understand")
        }
    }
    UNREACHABLE
}

/// Reads until the reply to `id` (skipping notifications) and hands it to `f`.
fn await_reply<R>(
    c: &mut Connection,
    id: u32,
    f: impl FnOnce(&Reply) -> R,
) -> Result<R, ClientError> {
    let mut frame = [0u8; MAX_FRAME_LEN];
    loop {
        match c.receive(&mut frame)? {
            Message::Reply { id: got, reply } if got == id || got == 0 => return Ok(f(&reply)),
            Message::Notification(_) | Message::Reply { .. } => {}
            _ => return Err(ClientError::Protocol),
        }
    }
}

/// Prints a refusal and returns its exit code; `None` if the reply is not an error.
fn refused(options: &Options, reply: &Reply) -> Option<u8> {
    let Reply::Error(e) = reply else { return None };
    if options.json {
        outln!("{{\"ok\":false,\"message\":\"{}\"}}", error_text(e));
    } else {
        errln!("nanostar: {}", error_text(e));
    }
    Some(REFUSED)
}

fn simple(c: &mut Connection, options: &Options, request: Request) -> Result<u8, ClientError> {
    let id = c.request(request)?;
    await_reply(c, id, |reply| {
        if let Some(code) = refused(options, reply) {
            return code;
        }
        if options.json {
            outln!("{{\"ok\":true}}");
        } else {
            outln!("ok");
        }
        0
    })
}

fn list(c: &mut Connection, options: &Options) -> Result<u8, ClientError> {
    let mut after: Option<(heapless::String<{ crate::limits::MAX_NAME_LEN }>, Version)> = None;
    let mut first = true;
    if options.json {
        outln!("[");
    } else {
        outln!(
            "{:<32} {:<12} {:<16} {}",
            "NAME",
            "VERSION",
            "REPOSITORY",
            "MOUNTED"
        );
    }
    loop {
        let request = Request::List {
            after: after.as_ref().map(|(n, v)| PackageId {
                name: n,
                version: *v,
            }),
        };
        let id = c.request(request)?;
        let step = await_reply(c, id, |reply| {
            if let Some(code) = refused(options, reply) {
                return Err(code);
            }
            let Reply::Packages { packages, more } = reply else {
                return Err(UNREACHABLE);
            };
            for p in packages {
                if options.json {
                    let comma = if first { "" } else { "," };
                    first = false;
                    outln!(
                        "{comma}{{\"name\":\"{}\",\"version\":\"{}\",\"repository\":\"{}\",\"mounted\":{}}}",
                        p.package.name,
                        p.package.version,
                        p.repository,
                        p.mounted
                    );
                } else {
                    let mounted = if p.mounted { "yes" } else { "no" };
                    outln!(
                        "{:<32} {:<12} {:<16} {mounted}",
                        p.package.name,
                        p.package.version,
                        p.repository
                    );
                }
            }
            let last = packages.last().and_then(|p| {
                Some((
                    heapless::String::try_from(p.package.name).ok()?,
                    p.package.version,
                ))
            });
            Ok((*more, last))
        })?;
        match step {
            Err(code) => return Ok(code),
            Ok((true, Some(last))) => after = Some(last),
            Ok(_) => break,
        }
    }
    if options.json {
        outln!("]");
    }
    Ok(0)
}

fn inspect(
    c: &mut Connection,
    options: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let mut manifest = [0u8; nanostar_protocol::limits::MAX_MANIFEST_LEN];
    let mut have = 0usize;
    loop {
        let id = c.request(Request::Inspect {
            name,
            version,
            manifest_offset: have as u32,
        })?;
        let step = await_reply(c, id, |reply| {
            if let Some(code) = refused(options, reply) {
                return Err(code);
            }
            let Reply::Inspected(i) = reply else {
                return Err(UNREACHABLE);
            };
            let end = (i.manifest_offset as usize + i.manifest.len()).min(manifest.len());
            manifest[i.manifest_offset as usize..end]
                .copy_from_slice(&i.manifest[..end - i.manifest_offset as usize]);
            if have == 0 {
                print_inspected(options, i);
            }
            Ok((end, i.manifest_len as usize))
        })?;
        match step {
            Err(code) => return Ok(code),
            Ok((end, total)) if end < total && end > have => have = end,
            Ok((end, _)) => {
                have = end;
                break;
            }
        }
    }
    match Manifest::decode(&manifest[..have]) {
        Ok(m) => print_manifest(options, &m),
        Err(_) => errln!("nanostar: the manifest does not decode"),
    }
    Ok(0)
}

fn print_inspected(options: &Options, i: &nanostar_protocol::console::Inspected) {
    let p = &i.package;
    if options.json {
        outln!(
            "{{\"name\":\"{}\",\"version\":\"{}\",\"repository\":\"{}\",\"mounted\":{},\"size\":{},\"signed\":{},",
            p.package.name,
            p.package.version,
            p.repository,
            p.mounted,
            i.size,
            i.key.is_some()
        );
    } else {
        outln!(
            "{} {} in repository {}: {} bytes",
            p.package.name,
            p.package.version,
            p.repository,
            i.size
        );
        outln!(
            "  mounted: {}, signed: {}",
            if p.mounted { "yes" } else { "no" },
            if i.key.is_some() { "yes" } else { "no" }
        );
    }
}

fn print_manifest(options: &Options, m: &Manifest) {
    let kind = if m.is_resource() {
        "resource"
    } else {
        "application"
    };
    if options.json {
        outln!(
            "\"kind\":\"{kind}\",\"init\":\"{}\",\"uid\":{},\"gid\":{},\"mounts\":{}}}",
            m.init.unwrap_or(""),
            m.uid,
            m.gid,
            m.mounts.len()
        );
    } else {
        outln!(
            "  {kind}, init {}, uid {}, gid {}, {} mounts",
            m.init.unwrap_or("-"),
            m.uid,
            m.gid,
            m.mounts.len()
        );
    }
}

fn install(c: &mut Connection, options: &Options, file: &str) -> Result<u8, ClientError> {
    let fd = match rustix::fs::open(file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            errln!("nanostar: {file}: {}", crate::fs::errno_text(e));
            return Ok(REFUSED);
        }
    };
    let size = rustix::fs::fstat(&fd)
        .map(|s| s.st_size as u64)
        .unwrap_or(0);
    if !options.stream {
        // The runtime reads the file itself: no copy through the socket.
        if !options.json {
            errln!("installing {file} ({size} bytes)");
        }
        let begin = Request::InstallBegin {
            repository: options.repository,
            size,
            fd: true,
        };
        let id = c.request_with_fd(begin, rustix::fd::AsFd::as_fd(&fd))?;
        return await_reply(c, id, |reply| installed(options, reply));
    }
    let id = c.request(Request::InstallBegin {
        repository: options.repository,
        size,
        fd: false,
    })?;
    if let Some(code) = await_reply(c, id, |reply| refused(options, reply))? {
        return Ok(code);
    }
    let mut chunk = [0u8; MAX_CHUNK_LEN];
    let mut sent = 0u64;
    let mut shown = 0u64;
    while sent < size {
        let n = match rustix::io::read(&fd, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                errln!("nanostar: {file}: {}", crate::fs::errno_text(e));
                let _ = c.request_as(id, Request::InstallAbort);
                return Ok(REFUSED);
            }
        };
        c.request_as(id, Request::InstallChunk { data: &chunk[..n] })?;
        sent += n as u64;
        // A progress line on stderr every 10% (people), nothing with --json (scripts).
        if !options.json && size > 0 && (sent * 10 / size) > shown {
            shown = sent * 10 / size;
            errln!("installing {file}: {}%", sent * 100 / size);
        }
    }
    c.request_as(id, Request::InstallEnd)?;
    await_reply(c, id, |reply| installed(options, reply))
}

/// Prints the outcome of an install.
fn installed(options: &Options, reply: &Reply) -> u8 {
    if let Some(code) = refused(options, reply) {
        return code;
    }
    match reply {
        Reply::Installed(p) if options.json => {
            outln!(
                "{{\"ok\":true,\"name\":\"{}\",\"version\":\"{}\"}}",
                p.name,
                p.version
            );
            0
        }
        Reply::Installed(p) => {
            outln!(
                "installed {} {} into {}",
                p.name,
                p.version,
                options.repository
            );
            0
        }
        _ => UNREACHABLE,
    }
}

fn notifications(c: &mut Connection, options: &Options) -> Result<u8, ClientError> {
    let id = c.request(Request::Subscribe)?;
    if let Some(code) = await_reply(c, id, |reply| refused(options, reply))? {
        return Ok(code);
    }
    let mut frame = [0u8; MAX_FRAME_LEN];
    loop {
        let Message::Notification(n) = c.receive(&mut frame)? else {
            continue;
        };
        let (what, p) = match n {
            Notification::Installed { package, .. } => ("installed", Some(package)),
            Notification::Uninstalled(p) => ("uninstalled", Some(p)),
            Notification::Mounted(p) => ("mounted", Some(p)),
            Notification::Umounted(p) => ("umounted", Some(p)),
            Notification::ShuttingDown => ("shutting-down", None),
            Notification::Started { package, .. } => ("started", Some(package)),
            Notification::Exited { package, .. } => ("exited", Some(package)),
            Notification::OutOfMemory(p) => ("out-of-memory", Some(p)),
        };
        match (options.json, p) {
            (true, Some(p)) => outln!(
                "{{\"event\":\"{what}\",\"name\":\"{}\",\"version\":\"{}\"}}",
                p.name,
                p.version
            ),
            (true, None) => outln!("{{\"event\":\"{what}\"}}"),
            (false, Some(p)) => outln!("{what} {} {}", p.name, p.version),
            (false, None) => outln!("{what}"),
        }
        if matches!(n, Notification::ShuttingDown) {
            return Ok(0);
        }
    }
}
