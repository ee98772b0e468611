//! Client commands of the `nanostar` binary: talk to a running runtime over its socket.
//!
//! Exit codes scripts can rely on: 0 done; 1 the runtime refused (the message says why);
//! 2 bad usage (from `cli`, or here when a value breaks the protocol's rules); 3 the
//! runtime cannot be reached or spoke an unexpected protocol.
//!
//! With `--json` every command prints one JSON object per line (`list` a JSON array over
//! several lines, one package per line; `logs` and `notifications` one object per piece or
//! event).

use core::fmt::{self, Write as _};

use nanostar_protocol::console::{
    ContainerInfo, Error, ExitStatus, Inspected, Message, MessageError, Notification, PackageId,
    PackageInfo, Reply, Request, SetupStep,
};
use nanostar_protocol::limits::{
    MAX_ARG_LEN, MAX_ARGS, MAX_CHUNK_LEN, MAX_ENV, MAX_ENV_VALUE_LEN, MAX_FRAME_LEN,
    MAX_MANIFEST_LEN, MAX_NAME_LEN, MAX_START_OVERRIDE_LEN,
};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::npk::manifest::{EnvVar, check_name};
use nanostar_protocol::version::Version;
use rustix::fs::{Mode, OFlags};

use crate::client::{
    ClientError, Connection, ErrnoText, ExitSentence, ExitText, Explain, SignalText, StepText,
    Uptime, parse_signal, signal_name, state_name,
};
use crate::{errln, outln};

/// Where the runtime listens unless `--socket` says otherwise (as in `docs/config.md`).
pub const DEFAULT_SOCKET: &str = "/run/nanostar/console";
/// Repository `install` uses without `--repo`.
pub const DEFAULT_REPOSITORY: &str = "default";

const REFUSED: u8 = 1;
const USAGE: u8 = 2;
const UNREACHABLE: u8 = 3;

/// Options before or after the command words.
struct Options<'a> {
    socket: &'a str,
    json: bool,
    repository: &'a str,
    wipe: bool,
    /// Send an install's bytes through the socket instead of passing the file descriptor.
    stream: bool,
    /// `start --env KEY=VALUE`, in order.
    env: heapless::Vec<EnvVar<'a>, MAX_ENV>,
    /// `start ... -- ARGS`: `Some` (maybe empty) once `--` is given.
    args: Option<heapless::Vec<&'a str, MAX_ARGS>>,
    /// `stop --timeout MS`.
    timeout_ms: Option<u32>,
    /// `logs --follow`.
    follow: bool,
}

/// Runs a client command; `None` if the words are not one (the caller prints usage).
pub fn run(words: &[&str]) -> Option<u8> {
    let (command, options) = match parse(words) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if let Some(code) = check_operands(&command, &options) {
        return Some(code);
    }
    let mut connection = match Connection::connect(options.socket) {
        Ok(c) => c,
        Err(e) => return Some(unreachable(&options, e)),
    };
    let c = &mut connection;
    let result = match command {
        Command::List => list(c, &options),
        Command::Inspect(name, version) => inspect(c, &options, name, version),
        Command::Install(file) => install(c, &options, file),
        Command::Uninstall(p) => simple(
            c,
            &options,
            Request::Uninstall {
                package: p,
                wipe: options.wipe,
            },
        ),
        Command::Mount(p) => simple(c, &options, Request::Mount(p)),
        Command::Umount(p) => simple(c, &options, Request::Umount(p)),
        Command::Shutdown => simple(c, &options, Request::Shutdown),
        Command::Notifications => notifications(c, &options),
        Command::Start(name, version) => start(c, &options, name, version),
        Command::Stop(name) => stop(c, &options, name),
        Command::Kill(name, signal) => kill(c, &options, name, signal),
        Command::Logs(name) => logs(c, &options, name),
    };
    Some(result.unwrap_or_else(|e| unreachable(&options, e)))
}

/// The command and options the words name. `Err(None)`: not a command (the caller prints
/// usage); `Err(Some(code))`: a usage error already explained.
fn parse<'a>(words: &[&'a str]) -> Result<(Command<'a>, Options<'a>), Option<u8>> {
    let mut options = Options {
        socket: DEFAULT_SOCKET,
        json: false,
        repository: DEFAULT_REPOSITORY,
        wipe: false,
        stream: false,
        env: heapless::Vec::new(),
        args: None,
        timeout_ms: None,
        follow: false,
    };
    // The command and its operands; options may come anywhere before `--`.
    let mut rest: heapless::Vec<&str, 8> = heapless::Vec::new();
    let mut i = 0;
    while i < words.len() {
        // The value of an option that takes one.
        let value = words.get(i + 1).copied();
        let takes_value = matches!(words[i], "--socket" | "--repo" | "--env" | "--timeout");
        match words[i] {
            "--" => {
                // Everything after `--` is the container's, verbatim (`--json` too).
                let mut args = heapless::Vec::new();
                if args.extend_from_slice(&words[i + 1..]).is_err() {
                    errln!("nanostar: at most {MAX_ARGS} arguments after --");
                    return Err(Some(USAGE));
                }
                options.args = Some(args);
                break;
            }
            "--socket" => options.socket = value.ok_or(None)?,
            "--repo" => options.repository = value.ok_or(None)?,
            "--env" => {
                let Some((key, value)) = value.and_then(|v| v.split_once('=')) else {
                    errln!("nanostar: --env wants KEY=VALUE");
                    return Err(Some(USAGE));
                };
                if options.env.push(EnvVar { key, value }).is_err() {
                    errln!("nanostar: at most {MAX_ENV} --env");
                    return Err(Some(USAGE));
                }
            }
            "--timeout" => {
                let Some(ms) = value.and_then(|v| v.parse().ok()) else {
                    errln!("nanostar: --timeout wants milliseconds");
                    return Err(Some(USAGE));
                };
                options.timeout_ms = Some(ms);
            }
            "--json" => options.json = true,
            "--wipe" => options.wipe = true,
            "--stream" => options.stream = true,
            "--follow" => options.follow = true,
            word if word.starts_with("--") => return Err(None),
            word => rest.push(word).map_err(|_| None)?,
        }
        i += if takes_value { 2 } else { 1 };
    }
    let version = |v: &str| Version::parse(v).ok().ok_or(None);
    let command = match rest.as_slice() {
        ["list"] => Command::List,
        ["inspect", name] => Command::Inspect(name, None),
        ["inspect", name, v] => Command::Inspect(name, Some(version(v)?)),
        ["install", file] => Command::Install(file),
        ["uninstall", name, v] => Command::Uninstall(package(name, v).ok_or(None)?),
        ["mount", name, v] => Command::Mount(package(name, v).ok_or(None)?),
        ["umount", name, v] => Command::Umount(package(name, v).ok_or(None)?),
        ["shutdown"] => Command::Shutdown,
        ["notifications"] => Command::Notifications,
        ["start", name] => Command::Start(name, None),
        ["start", name, v] => Command::Start(name, Some(version(v)?)),
        ["stop", name] => Command::Stop(name),
        ["kill", name, signal] => match parse_signal(signal) {
            Some(n) => Command::Kill(name, n),
            None => {
                errln!(
                    "nanostar: {} is not a signal (a number 1..=64 or a name: TERM, SIGKILL)",
                    Json(signal)
                );
                return Err(Some(USAGE));
            }
        },
        ["logs", name] => Command::Logs(name),
        _ => return Err(None),
    };
    // Options that belong to one command only.
    let is_start = matches!(command, Command::Start(..));
    let misplaced = (options.wipe && !matches!(command, Command::Uninstall(_)))
        || (options.stream && !matches!(command, Command::Install(_)))
        || ((options.args.is_some() || !options.env.is_empty()) && !is_start)
        || (options.timeout_ms.is_some() && !matches!(command, Command::Stop(_)))
        || (options.follow && !matches!(command, Command::Logs(_)));
    if misplaced {
        return Err(None);
    }
    Ok((command, options))
}

#[derive(Debug, PartialEq)]
enum Command<'a> {
    List,
    Inspect(&'a str, Option<Version>),
    Install(&'a str),
    Uninstall(PackageId<'a>),
    Mount(PackageId<'a>),
    Umount(PackageId<'a>),
    Shutdown,
    Notifications,
    Start(&'a str, Option<Version>),
    Stop(&'a str),
    Kill(&'a str, u8),
    Logs(&'a str),
}

fn package<'a>(name: &'a str, version: &str) -> Option<PackageId<'a>> {
    Some(PackageId {
        name,
        version: Version::parse(version).ok()?,
    })
}

/// Checks names and the `start` override against the protocol's rules before connecting,
/// so a bad value is a usage error that says what is wrong (and not a message the client
/// cannot send); `Some(exit code)` after saying why.
fn check_operands(command: &Command, options: &Options) -> Option<u8> {
    let name = match command {
        Command::Inspect(name, _)
        | Command::Start(name, _)
        | Command::Stop(name)
        | Command::Kill(name, _)
        | Command::Logs(name) => Some(*name),
        Command::Uninstall(p) | Command::Mount(p) | Command::Umount(p) => Some(p.name),
        Command::Install(_) => {
            if check_name(options.repository).is_err() {
                errln!(
                    "nanostar: \"{}\" is not a repository name",
                    Json(options.repository)
                );
                return Some(USAGE);
            }
            None
        }
        Command::List | Command::Shutdown | Command::Notifications => None,
    };
    if let Some(name) = name
        && check_name(name).is_err()
    {
        errln!(
            "nanostar: \"{}\" is not a package name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, \
             not starting with . or -)",
            Json(name)
        );
        return Some(USAGE);
    }
    if let Command::Start(name, version) = command {
        let request = Request::Start {
            name,
            version: *version,
            args: options.args.clone(),
            env: options.env.clone(),
        };
        if let Err(e) = request.check() {
            errln!("nanostar: {}", OverrideProblem(e));
            return Some(USAGE);
        }
    }
    None
}

/// Why the arguments and environment of `start` cannot be sent.
struct OverrideProblem(MessageError);

impl fmt::Display for OverrideProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            MessageError::TooLong => write!(
                f,
                "arguments and values may have at most {MAX_ARG_LEN} and {MAX_ENV_VALUE_LEN} \
                 bytes, all of them with the keys at most {MAX_START_OVERRIDE_LEN}"
            ),
            MessageError::Empty => f.write_str("an --env key is empty"),
            MessageError::Character => f.write_str(
                "--env keys are letters, digits and _, not starting with a digit, and no \
                 argument or value may hold a NUL",
            ),
            MessageError::Reserved => {
                f.write_str("--env keys starting with NANOSTAR_ are the runtime's own")
            }
            MessageError::Duplicate => f.write_str("the same --env key is given twice"),
            _ => f.write_str("the arguments or environment are not valid"),
        }
    }
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
        ClientError::Protocol => return unexpected(),
    }
    UNREACHABLE
}

/// Says that the runtime answered something this client does not expect.
fn unexpected() -> u8 {
    errln!("nanostar: the runtime sent something this client does not understand");
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

/// Prints why a command failed (stderr, or a JSON object on stdout) and returns
/// [`REFUSED`].
fn fail(options: &Options, why: impl fmt::Display) -> u8 {
    if options.json {
        outln!("{{\"ok\":false,\"message\":\"{}\"}}", Json(why));
    } else {
        errln!("nanostar: {why}");
    }
    REFUSED
}

/// Prints a refusal and returns its exit code; `None` if the reply is not an error.
fn refused(options: &Options, reply: &Reply) -> Option<u8> {
    let Reply::Error(e) = reply else { return None };
    Some(fail(options, Explain(e)))
}

/// Prints `ok` (or `{"ok":true}`) for `Reply::Ok`, or the refusal.
fn done(options: &Options, reply: &Reply, text: impl fmt::Display) -> u8 {
    if let Some(code) = refused(options, reply) {
        return code;
    }
    if !matches!(reply, Reply::Ok) {
        return unexpected();
    }
    if options.json {
        outln!("{{\"ok\":true}}");
    } else {
        outln!("{text}");
    }
    0
}

fn simple(c: &mut Connection, options: &Options, request: Request) -> Result<u8, ClientError> {
    let id = c.request(request)?;
    await_reply(c, id, |reply| done(options, reply, "ok"))
}

fn list(c: &mut Connection, options: &Options) -> Result<u8, ClientError> {
    let mut after: Option<(heapless::String<MAX_NAME_LEN>, Version)> = None;
    let mut first = true;
    if options.json {
        outln!("[");
    } else {
        outln!(
            "{:<20} {:<9} {:<10} {:<7} {:<10} {:<7} {:<7} LAST-EXIT",
            "NAME",
            "VERSION",
            "REPOSITORY",
            "MOUNTED",
            "STATE",
            "PID",
            "UPTIME"
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
                return Err(unexpected());
            };
            for p in packages {
                if options.json {
                    let comma = if first { "" } else { "," };
                    first = false;
                    outln!("{comma}{{{}}}", InfoJson(p));
                } else {
                    print_row(p);
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

/// One line of `list`.
fn print_row(p: &PackageInfo) {
    let version = cell(p.package.version);
    let mounted = if p.mounted { "yes" } else { "no" };
    let (state, pid, uptime, last) = match &p.container {
        None => ("-", cell("-"), cell("-"), cell("-")),
        Some(info) => (
            state_name(info.state),
            if info.pid == 0 {
                cell("-")
            } else {
                cell(info.pid)
            },
            if info.pid == 0 {
                cell("-")
            } else {
                cell(Uptime(info.uptime_ms))
            },
            match info.last_exit {
                Some(status) => cell(ExitText(status)),
                None => cell("-"),
            },
        ),
    };
    outln!(
        "{:<20} {:<9} {:<10} {:<7} {:<10} {:<7} {:<7} {}",
        p.package.name,
        version.as_str(),
        p.repository,
        mounted,
        state,
        pid.as_str(),
        uptime.as_str(),
        last.as_str()
    );
}

/// `value` as text, so that width and alignment apply (and `Version` ignores them).
fn cell(value: impl fmt::Display) -> heapless::String<40> {
    let mut s = heapless::String::new();
    // Every cell fits its size; a longer one would be cut, never overflow.
    let _ = write!(s, "{value}");
    s
}

/// A package's fields as JSON members, without braces: `"name":…,"container":…`.
struct InfoJson<'a>(&'a PackageInfo<'a>);

impl fmt::Display for InfoJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "\"name\":\"{}\",\"version\":\"{}\",\"repository\":\"{}\",\"mounted\":{},\"container\":",
            p.package.name, p.package.version, p.repository, p.mounted
        )?;
        match &p.container {
            None => f.write_str("null"),
            Some(info) => ContainerJson(info).fmt(f),
        }
    }
}

/// `{"state":"running","pid":…,"uptime_ms":…,"last_exit":…,"restarts":…}`.
struct ContainerJson<'a>(&'a ContainerInfo);

impl fmt::Display for ContainerJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "{{\"state\":\"{}\",\"pid\":{},\"uptime_ms\":{},\"last_exit\":",
            state_name(c.state),
            c.pid,
            c.uptime_ms
        )?;
        match c.last_exit {
            None => f.write_str("null")?,
            Some(status) => ExitJson(status).fmt(f)?,
        }
        write!(f, ",\"restarts\":{}}}", c.restarts)
    }
}

/// `{"code":N}` or `{"signal":N}`.
struct ExitJson(ExitStatus);

impl fmt::Display for ExitJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitStatus::Code(code) => write!(f, "{{\"code\":{code}}}"),
            ExitStatus::Signal(n) => write!(f, "{{\"signal\":{n}}}"),
        }
    }
}

/// A container's state for `inspect`: `running, pid 12, up 3m04s, last exit code 0,
/// 0 restarts`.
struct ContainerText<'a>(&'a Option<ContainerInfo>);

impl fmt::Display for ContainerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(c) = self.0 else {
            return f.write_str("not started");
        };
        f.write_str(state_name(c.state))?;
        if c.pid != 0 {
            write!(f, ", pid {}, up {}", c.pid, Uptime(c.uptime_ms))?;
        }
        if let Some(status) = c.last_exit {
            write!(f, ", last exit {}", ExitText(status))?;
        }
        write!(f, ", {} restarts", c.restarts)
    }
}

/// What `inspect` shows about the package, kept from the first reply until the manifest
/// is complete, so that it prints as one piece (one JSON object).
struct Summary {
    name: heapless::String<MAX_NAME_LEN>,
    version: Version,
    repository: heapless::String<MAX_NAME_LEN>,
    mounted: bool,
    container: Option<ContainerInfo>,
    size: u64,
    signed: bool,
}

impl Summary {
    fn of(i: &Inspected) -> Summary {
        let p = &i.package;
        Summary {
            // Names are at most MAX_NAME_LEN bytes (the decoder checks them).
            name: heapless::String::try_from(p.package.name).unwrap_or_default(),
            version: p.package.version,
            repository: heapless::String::try_from(p.repository).unwrap_or_default(),
            mounted: p.mounted,
            container: p.container,
            size: i.size,
            signed: i.key.is_some(),
        }
    }

    fn info(&self) -> PackageInfo<'_> {
        PackageInfo {
            package: PackageId {
                name: &self.name,
                version: self.version,
            },
            repository: &self.repository,
            mounted: self.mounted,
            container: self.container,
        }
    }
}

fn inspect(
    c: &mut Connection,
    options: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let mut manifest = [0u8; MAX_MANIFEST_LEN];
    let mut summary = None;
    let len = match fetch_manifest(c, Some(options), name, version, &mut manifest, |i| {
        summary = Some(Summary::of(i))
    })? {
        Ok(len) => len,
        Err(code) => return Ok(code),
    };
    let Some(s) = summary else {
        return Ok(unexpected());
    };
    let decoded = Manifest::decode(&manifest[..len]);
    if options.json {
        let mut w = crate::out::Writer::stdout();
        let _ = write!(
            w,
            "{{{},\"size\":{},\"signed\":{}",
            InfoJson(&s.info()),
            s.size,
            s.signed
        );
        if let Ok(m) = &decoded {
            let kind = if m.is_resource() {
                "resource"
            } else {
                "application"
            };
            let _ = write!(
                w,
                ",\"kind\":\"{kind}\",\"init\":\"{}\",\"uid\":{},\"gid\":{},\"mounts\":{}",
                Json(m.init.unwrap_or("")),
                m.uid,
                m.gid,
                m.mounts.len()
            );
        }
        let _ = w.write_str("}\n");
    } else {
        let yes = |b| if b { "yes" } else { "no" };
        outln!(
            "{} {} in repository {}: {} bytes",
            s.name,
            s.version,
            s.repository,
            s.size
        );
        outln!("  mounted: {}, signed: {}", yes(s.mounted), yes(s.signed));
        outln!("  container: {}", ContainerText(&s.container));
        if let Ok(m) = &decoded {
            let kind = if m.is_resource() {
                "resource"
            } else {
                "application"
            };
            outln!(
                "  {kind}, init {}, uid {}, gid {}, {} mounts",
                m.init.unwrap_or("-"),
                m.uid,
                m.gid,
                m.mounts.len()
            );
        }
    }
    if decoded.is_err() {
        errln!("nanostar: the manifest does not decode");
    }
    Ok(0)
}

/// Fetches a package's whole manifest into `manifest` with as many `inspect` requests as
/// it takes, handing the first reply to `first`. `Ok(Err(code))` if the runtime refused
/// (said with `report`'s options, or not at all without).
fn fetch_manifest(
    c: &mut Connection,
    report: Option<&Options>,
    name: &str,
    version: Option<Version>,
    manifest: &mut [u8; MAX_MANIFEST_LEN],
    mut first: impl FnMut(&Inspected),
) -> Result<Result<usize, u8>, ClientError> {
    let mut have = 0usize;
    loop {
        let id = c.request(Request::Inspect {
            name,
            version,
            manifest_offset: have as u32,
        })?;
        let step = await_reply(c, id, |reply| {
            if let Reply::Error(e) = reply {
                return Err(report.map_or(REFUSED, |options| fail(options, Explain(e))));
            }
            let Reply::Inspected(i) = reply else {
                return Err(unexpected());
            };
            // The decoder checked that the piece lies inside the manifest.
            let offset = i.manifest_offset as usize;
            let end = (offset + i.manifest.len()).min(manifest.len());
            manifest[offset..end].copy_from_slice(&i.manifest[..end - offset]);
            if have == 0 {
                first(i);
            }
            Ok((end, i.manifest_len as usize))
        })?;
        match step {
            Err(code) => return Ok(Err(code)),
            Ok((end, total)) if end < total && end > have => have = end,
            Ok((end, _)) => return Ok(Ok(end)),
        }
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
        _ => unexpected(),
    }
}

/// `start`: the runtime answers once the app runs (after its `execve`) or with the error
/// that stopped the setup.
fn start(
    c: &mut Connection,
    options: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let id = c.request(Request::Start {
        name,
        version,
        args: options.args.clone(),
        env: options.env.clone(),
    })?;
    let outcome = await_reply(c, id, |reply| match reply {
        // Which mount or rlimit failed is worth a look at the manifest.
        Reply::Error(Error::Setup {
            step: step @ (SetupStep::Mount(_) | SetupStep::Rlimit(_)),
            errno,
        }) => Err((*step, *errno)),
        reply => Ok(match version {
            Some(v) => done(options, reply, format_args!("started {name} {v}")),
            None => done(options, reply, format_args!("started {name}")),
        }),
    })?;
    match outcome {
        Ok(code) => Ok(code),
        Err((step, errno)) => setup_failed(c, options, name, version, step, errno),
    }
}

/// Says which mount or rlimit of the manifest a failed setup step is, looked up in the
/// manifest (as far as `inspect` is allowed).
#[inline(never)] // Its manifest buffer is on the stack only on this path.
fn setup_failed(
    c: &mut Connection,
    options: &Options,
    name: &str,
    version: Option<Version>,
    step: SetupStep,
    errno: u16,
) -> Result<u8, ClientError> {
    let mut manifest = [0u8; MAX_MANIFEST_LEN];
    let len = fetch_manifest(c, None, name, version, &mut manifest, |_| {})?;
    let decoded = len
        .ok()
        .and_then(|len| Manifest::decode(&manifest[..len]).ok());
    let what = decoded.as_ref().and_then(|m| match step {
        SetupStep::Mount(i) => m.mounts.get(usize::from(i)).map(|m| m.target),
        SetupStep::Rlimit(i) => m.rlimits.get(usize::from(i)).map(|r| r.resource.name()),
        _ => None,
    });
    let error = Error::Setup { step, errno };
    Ok(match what {
        Some(what) => fail(
            options,
            format_args!(
                "the container's setup failed at {} ({what}): {}",
                StepText(step),
                ErrnoText(errno)
            ),
        ),
        None => fail(options, Explain(&error)),
    })
}

fn stop(c: &mut Connection, options: &Options, name: &str) -> Result<u8, ClientError> {
    let id = c.request(Request::Stop {
        name,
        version: None,
        timeout_ms: options.timeout_ms,
    })?;
    await_reply(c, id, |reply| match reply {
        Reply::Stopped(status) if options.json => {
            outln!("{{\"ok\":true,\"exit\":{}}}", ExitJson(*status));
            0
        }
        Reply::Stopped(status) => {
            outln!("stopped {name}: {}", ExitSentence(*status));
            0
        }
        reply => done(options, reply, format_args!("stopped {name}")),
    })
}

fn kill(c: &mut Connection, options: &Options, name: &str, signal: u8) -> Result<u8, ClientError> {
    let id = c.request(Request::Kill {
        name,
        version: None,
        signal,
    })?;
    await_reply(c, id, |reply| match signal_name(signal) {
        Some(s) => done(options, reply, format_args!("sent SIG{s} to {name}")),
        None => done(
            options,
            reply,
            format_args!("sent signal {} to {name}", SignalText(signal)),
        ),
    })
}

/// `logs`: the log pieces as they come, raw on stdout (or as JSON objects), until
/// `LogEnd`; with `--follow` the runtime keeps sending pieces until the connection closes.
fn logs(c: &mut Connection, options: &Options, name: &str) -> Result<u8, ClientError> {
    let id = c.request(Request::Logs {
        name,
        version: None,
        follow: options.follow,
    })?;
    let mut frame = [0u8; MAX_FRAME_LEN];
    let mut carry = Utf8Carry::default();
    loop {
        let reply = match c.receive(&mut frame)? {
            Message::Reply { id: got, reply } if got == id || got == 0 => reply,
            Message::Notification(_) | Message::Reply { .. } => continue,
            _ => return Err(ClientError::Protocol),
        };
        if let Some(code) = refused(options, &reply) {
            return Ok(code);
        }
        match reply {
            Reply::Log { dropped, data } if options.json => {
                let (head, body) = carry.split(data, dropped > 0);
                if dropped > 0 || !head.is_empty() || !body.is_empty() {
                    outln!(
                        "{{\"dropped\":{dropped},\"data\":\"{}{}\"}}",
                        JsonBytes(&head),
                        JsonBytes(body)
                    );
                }
            }
            Reply::Log { dropped, data } => {
                if dropped > 0 {
                    errln!(
                        "nanostar: {dropped} bytes of {name}'s log were overwritten before they \
                         could be read"
                    );
                }
                match crate::sys::write_all(crate::sys::StdFd::Out, data) {
                    Ok(()) => {}
                    // The reader is gone (`| head`): nothing left to do.
                    Err(rustix::io::Errno::PIPE) => return Ok(0),
                    Err(_) => return Ok(REFUSED),
                }
            }
            Reply::LogEnd => {
                let held = carry.take();
                if options.json && !held.is_empty() {
                    outln!("{{\"dropped\":0,\"data\":\"{}\"}}", JsonBytes(&held));
                }
                return Ok(0);
            }
            _ => return Ok(unexpected()),
        }
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

/// Text as the inside of a JSON string: `"` and `\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`.
struct Json<T>(T);

impl<T: fmt::Display> fmt::Display for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escape(f), "{}", self.0)
    }
}

/// Bytes as the inside of a JSON string: UTF-8 escaped as [`Json`] does, each invalid
/// sequence as `\ufffd` (as `String::from_utf8_lossy` would).
struct JsonBytes<'a>(&'a [u8]);

impl fmt::Display for JsonBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            Escape(f).write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\\ufffd")?;
            }
        }
        Ok(())
    }
}

/// Writes text JSON-escaped to a formatter.
struct Escape<'a, 'f>(&'a mut fmt::Formatter<'f>);

impl fmt::Write for Escape<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, ch) in s.char_indices() {
            let escaped = match ch {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c < ' ' || c == '\u{7f}' => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(ch))?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = i + ch.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

/// Keeps a UTF-8 character that the end of a log piece cuts in two until the next piece,
/// so that JSON output shows the character rather than two `\ufffd`.
#[derive(Default)]
struct Utf8Carry {
    held: heapless::Vec<u8, 4>,
}

impl Utf8Carry {
    /// Splits the next piece into what to show now, `head` (the held bytes, completed
    /// from the piece's start) then `body`, and holds back a character cut off at its
    /// end. After a `gap` (bytes were dropped) the held bytes are shown as they are.
    fn split<'d>(&mut self, data: &'d [u8], gap: bool) -> (heapless::Vec<u8, 4>, &'d [u8]) {
        let mut head = self.take();
        let mut rest = data;
        if !gap {
            while incomplete(&head) {
                match rest.split_first() {
                    Some((&b, tail)) if b & 0xC0 == 0x80 => {
                        // Cannot overflow: an incomplete character has at most 3 bytes.
                        let _ = head.push(b);
                        rest = tail;
                    }
                    _ => break,
                }
            }
            if incomplete(&head) && rest.is_empty() {
                // Still cut: wait for more.
                self.held = head;
                return (heapless::Vec::new(), rest);
            }
        }
        let cut = (1..=rest.len().min(3))
            .find(|&k| incomplete(&rest[rest.len() - k..]))
            .unwrap_or(0);
        let (body, tail) = rest.split_at(rest.len() - cut);
        // Cannot overflow: at most 3 bytes.
        let _ = self.held.extend_from_slice(tail);
        (head, body)
    }

    /// The held bytes, emptying the carry.
    fn take(&mut self) -> heapless::Vec<u8, 4> {
        core::mem::take(&mut self.held)
    }
}

/// Whether `bytes` are the start of one UTF-8 character, not all of it.
fn incomplete(bytes: &[u8]) -> bool {
    matches!(
        core::str::from_utf8(bytes),
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed<'a>(words: &[&'a str]) -> (Command<'a>, Options<'a>) {
        match parse(words) {
            Ok(p) => p,
            Err(code) => panic!("{words:?}: {code:?}"),
        }
    }

    #[test]
    fn start_takes_everything_after_the_separator_verbatim() {
        let (command, o) = parsed(&["start", "hello", "--", "--json", "--socket", "x", "--"]);
        assert_eq!(command, Command::Start("hello", None));
        assert_eq!(
            o.args.as_deref(),
            Some(&["--json", "--socket", "x", "--"][..])
        );
        assert!(!o.json);
        assert_eq!(o.socket, DEFAULT_SOCKET);
        // `--` with nothing after it: no arguments, not the manifest's.
        let (_, o) = parsed(&["--json", "start", "hello", "0.1.0", "--"]);
        assert_eq!(o.args.as_deref(), Some(&[][..]));
        assert!(o.json);
        // Without `--`: the manifest's arguments.
        let (command, o) = parsed(&[
            "start", "--env", "A=1", "hello", "1.2.3", "--env", "B=x=y", "--socket", "/s",
        ]);
        assert_eq!(
            command,
            Command::Start("hello", Some(Version::new(1, 2, 3)))
        );
        assert_eq!(o.args, None);
        assert_eq!(
            o.env.as_slice(),
            [
                EnvVar {
                    key: "A",
                    value: "1"
                },
                EnvVar {
                    key: "B",
                    value: "x=y"
                }
            ]
        );
        assert_eq!(o.socket, "/s");
        // All MAX_ARGS container arguments fit; one more is a usage error.
        let mut words = vec!["start", "hello", "--"];
        words.extend(std::iter::repeat_n("a", MAX_ARGS));
        assert_eq!(parsed(&words).1.args.unwrap().len(), MAX_ARGS);
        words.push("a");
        assert_eq!(parse(&words).err(), Some(Some(USAGE)));
        assert_eq!(
            parse(&["start", "hello", "--env", "A"]).err(),
            Some(Some(USAGE))
        );
        assert_eq!(parse(&["start", "hello", "--env"]).err(), Some(Some(USAGE)));
    }

    #[test]
    fn stop_kill_logs_and_their_options() {
        let (command, o) = parsed(&["stop", "hello", "--timeout", "500"]);
        assert_eq!(command, Command::Stop("hello"));
        assert_eq!(o.timeout_ms, Some(500));
        assert_eq!(parsed(&["stop", "hello"]).1.timeout_ms, None);
        assert_eq!(
            parse(&["stop", "hello", "--timeout", "-1"]).err(),
            Some(Some(USAGE))
        );
        assert_eq!(
            parsed(&["kill", "hello", "TERM"]).0,
            Command::Kill("hello", 15)
        );
        assert_eq!(
            parsed(&["kill", "hello", "SIGKILL"]).0,
            Command::Kill("hello", 9)
        );
        assert_eq!(parsed(&["kill", "hello", "9"]).0, Command::Kill("hello", 9));
        assert_eq!(parse(&["kill", "hello", "NOPE"]).err(), Some(Some(USAGE)));
        assert_eq!(parse(&["kill", "hello"]).err(), Some(None));
        let (command, o) = parsed(&["logs", "--follow", "hello"]);
        assert_eq!(command, Command::Logs("hello"));
        assert!(o.follow);
        assert!(!parsed(&["logs", "hello"]).1.follow);
        // Options of one command are refused on the others.
        for words in [
            &["stop", "hello", "--follow"][..],
            &["logs", "hello", "--timeout", "1"],
            &["stop", "hello", "--", "x"],
            &["kill", "hello", "9", "--env", "A=1"],
            &["list", "--wipe"],
            &["logs", "hello", "--bogus"],
        ] {
            assert_eq!(parse(words).err(), Some(None), "{words:?}");
        }
        // The older commands are unchanged.
        assert_eq!(parsed(&["list", "--json"]).0, Command::List);
        let (command, o) = parsed(&["install", "f.npk", "--repo", "r", "--stream"]);
        assert_eq!(command, Command::Install("f.npk"));
        assert!(o.stream && o.repository == "r");
    }

    #[test]
    fn operands_are_checked_before_connecting() {
        let check = |words: &[&str]| {
            let (command, options) = parsed(words);
            check_operands(&command, &options)
        };
        assert_eq!(check(&["start", "hello", "--env", "A=1", "--", "x"]), None);
        assert_eq!(check(&["start", "bad name"]), Some(USAGE));
        assert_eq!(check(&["stop", ".hidden"]), Some(USAGE));
        assert_eq!(check(&["install", "f", "--repo", "a/b"]), Some(USAGE));
        assert_eq!(
            check(&["start", "hello", "--env", "NANOSTAR_X=1"]),
            Some(USAGE)
        );
        assert_eq!(check(&["start", "hello", "--env", "1A=1"]), Some(USAGE));
        assert_eq!(check(&["start", "hello", "--env", "=1"]), Some(USAGE));
        assert_eq!(
            check(&["start", "hello", "--env", "A=1", "--env", "A=2"]),
            Some(USAGE)
        );
        let long = "x".repeat(MAX_ARG_LEN + 1);
        assert_eq!(check(&["start", "hello", "--", &long]), Some(USAGE));
    }

    fn json(d: impl fmt::Display) -> String {
        format!("{}", Json(d))
    }

    fn bytes(b: &[u8]) -> String {
        format!("{}", JsonBytes(b))
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json("plain text"), "plain text");
        assert_eq!(json("a \"b\" \\c"), "a \\\"b\\\" \\\\c");
        assert_eq!(json("l1\nl2\r\n\tx"), "l1\\nl2\\r\\n\\tx");
        assert_eq!(json("\u{0}\u{1b}[0m\u{7f}"), "\\u0000\\u001b[0m\\u007f");
        assert_eq!(json("grüße €"), "grüße €");
        // Escaping goes through Display values, not just strings.
        assert_eq!(json(format_args!("path {}", "/a\"b")), "path /a\\\"b");
    }

    #[test]
    fn json_bytes_replace_invalid_utf8() {
        assert_eq!(bytes(b"hello\n"), "hello\\n");
        assert_eq!(bytes(b""), "");
        assert_eq!(bytes(b"a\xffb"), "a\\ufffdb");
        assert_eq!(bytes(b"\xc3\x28"), "\\ufffd(");
        assert_eq!(bytes(b"\xe2\x82"), "\\ufffd");
        assert_eq!(bytes("é\"".as_bytes()), "é\\\"");
        // Every byte string gives valid JSON text: printable, no raw control characters.
        let all: Vec<u8> = (0..=255).collect();
        let out = bytes(&all);
        assert!(out.chars().all(|c| c >= ' '), "{out}");
        assert!(out.starts_with("\\u0000\\u0001"));
    }

    /// Feeds pieces through a carry and returns what each one shows.
    fn pieces(parts: &[(&[u8], bool)]) -> Vec<String> {
        let mut carry = Utf8Carry::default();
        let mut shown: Vec<String> = parts
            .iter()
            .map(|(data, gap)| {
                let (head, body) = carry.split(data, *gap);
                format!("{}{}", JsonBytes(&head), JsonBytes(body))
            })
            .collect();
        shown.push(bytes(&carry.take()));
        shown
    }

    #[test]
    fn a_character_cut_between_pieces_stays_whole() {
        // é = C3 A9, € = E2 82 AC.
        assert_eq!(
            pieces(&[(b"caf\xc3", false), (b"\xa9!", false)]),
            ["caf", "é!", ""]
        );
        assert_eq!(
            pieces(&[(b"\xe2", false), (b"\x82", false), (b"\xac", false)]),
            ["", "", "€", ""]
        );
        assert_eq!(
            pieces(&[(b"x\xe2\x82", false), (b"\xacy\xe2", false)]),
            ["x", "€y", "\\ufffd"]
        );
        // Bytes were lost between the pieces: the cut character is not glued to them.
        assert_eq!(
            pieces(&[(b"a\xc3", false), (b"\xa9b", true)]),
            ["a", "\\ufffd\\ufffdb", ""]
        );
        // A byte that cannot start a character is not held back.
        assert_eq!(
            pieces(&[(b"a\xff", false), (b"b", false)]),
            ["a\\ufffd", "b", ""]
        );
        // Plain text passes through.
        assert_eq!(
            pieces(&[(b"one\n", false), (b"two\n", false)]),
            ["one\\n", "two\\n", ""]
        );
    }

    #[test]
    fn container_state_as_json_and_text() {
        let info = ContainerInfo {
            state: nanostar_protocol::console::ContainerState::Running,
            pid: 42,
            uptime_ms: 184_000,
            last_exit: Some(ExitStatus::Signal(15)),
            restarts: 2,
        };
        assert_eq!(
            format!("{}", ContainerJson(&info)),
            "{\"state\":\"running\",\"pid\":42,\"uptime_ms\":184000,\"last_exit\":{\"signal\":15},\"restarts\":2}"
        );
        assert_eq!(
            format!("{}", ContainerText(&Some(info))),
            "running, pid 42, up 3m04s, last exit signal 15 (SIGTERM), 2 restarts"
        );
        assert_eq!(format!("{}", ContainerText(&None)), "not started");
        let p = PackageInfo {
            package: PackageId {
                name: "hello",
                version: Version::new(0, 1, 0),
            },
            repository: "dev",
            mounted: true,
            container: None,
        };
        assert_eq!(
            format!("{}", InfoJson(&p)),
            "\"name\":\"hello\",\"version\":\"0.1.0\",\"repository\":\"dev\",\"mounted\":true,\"container\":null"
        );
        assert_eq!(
            format!("{}", ExitJson(ExitStatus::Code(-1))),
            "{\"code\":-1}"
        );
        assert_eq!(cell(Version::new(1, 2, 3)).as_str(), "1.2.3");
    }
}
