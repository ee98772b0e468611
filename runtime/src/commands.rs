//! Client commands of the `nanostar` binary: talk to a running runtime over its socket.
//!
//! Exit codes scripts can rely on: 0 done; 1 the runtime refused (the message says why), or
//! a local file cannot be used; 2 bad usage (also a value that breaks the protocol's
//! rules, found before connecting); 3 the runtime cannot be reached or spoke an unexpected
//! protocol.
//!
//! The socket is `--socket PATH`, else `$NANOSTAR_SOCKET`, else [`DEFAULT_SOCKET`].
//!
//! With `--json` every command prints one JSON object per line (`list` a JSON array over
//! several lines, one package per line; `logs` and `notifications` one
//! object per piece or event). A failure is `{"ok":false,"code":CODE,"message":TEXT}` on
//! stdout (with a `"reason"` for `bad-package`, `full` and `protocol-violation`); the
//! codes are listed at [`crate::client::error_code`].

use core::fmt::{self, Write as _};

use nanostar_protocol::console::{
    ContainerInfo, Error, ExitStatus, Inspected, Message, MessageError, Notification, PackageId,
    PackageInfo, Reply, Request, SetupStep,
};
use nanostar_protocol::limits::{
    MAX_ARG_LEN, MAX_ARGS, MAX_CHUNK_LEN, MAX_ENV, MAX_ENV_VALUE_LEN, MAX_MANIFEST_LEN,
    MAX_NAME_LEN, MAX_REPOSITORIES, MAX_START_OVERRIDE_LEN,
};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::npk::header::{HEADER_LEN, HeaderError, UnverifiedHeader};
use nanostar_protocol::npk::manifest::{
    Autostart, EnvVar, MountFlags, MountKind, Network, Output, RestartMode, check_name,
};
use nanostar_protocol::version::Version;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::cli::{self, Spec, is_option};
use crate::client::{
    ClientError, Connection, ErrnoText, ExitSentence, ExitText, Hex, Refusal, SignalNames,
    SignalText, StepText, Subject, Uptime, error_code, parse_signal, signal_name, state_name,
};
use crate::out::Writer;
use crate::out::{say, warn};

/// Where the runtime listens unless `--socket` or `NANOSTAR_SOCKET` says otherwise (as in
/// `docs/config.md`).
pub const DEFAULT_SOCKET: &str = "/run/nanostar/console";
/// Repository `install` uses without `--repo`.
pub const DEFAULT_REPOSITORY: &str = "default";

const REFUSED: u8 = 1;
const USAGE: u8 = cli::USAGE;
const UNREACHABLE: u8 = 3;

/// Options before or after the command words.
struct Options<'a> {
    socket: &'a str,
    json: bool,
    repository: &'a str,
    /// `--repo` was given (a missing repository then is the user's, not the default).
    repo_given: bool,
    /// `install --replace`.
    replace: bool,
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
    /// `logs --tail N`.
    tail: Option<u32>,
    /// What the command is about, for its refusals.
    subject: Subject<'a>,
}

/// Runs the client command `spec` whose word is `words[at]`.
pub fn run(words: &[&str], at: usize, spec: &Spec) -> u8 {
    let (command, options) = match parse(words, at, spec) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let o = &options;
    let mut connection = match Connection::connect(o.socket) {
        Ok(c) => c,
        Err(e) => return unreachable(o, e),
    };
    let c = &mut connection;
    let result = match command {
        Command::List => list(c, o),
        Command::Inspect(name, version) => inspect(c, o, name, version),
        Command::Install(file) => install(c, o, file),
        Command::Uninstall(p) => simple(
            c,
            o,
            Request::Uninstall {
                package: p,
                wipe: o.wipe,
            },
            "uninstalled",
        ),
        Command::Mount(p) => simple(c, o, Request::Mount(p), "mounted"),
        Command::Umount(p) => simple(c, o, Request::Umount(p), "unmounted"),
        Command::Shutdown => simple(c, o, Request::Shutdown, "the runtime shuts down"),
        Command::Notifications => notifications(c, o),
        Command::Start(name, version) => start(c, o, name, version),
        Command::Stop(name, version) => stop(c, o, name, version, false).map(|r| r.unwrap_or(0)),
        Command::Restart(name, version) => restart(c, o, name, version),
        Command::Kill(name, version, signal) => kill(c, o, name, version, signal),
        Command::Logs(name, version) => logs(c, o, name, version),
    };
    result.unwrap_or_else(|e| unreachable(o, e))
}

/// `NANOSTAR_SOCKET` from the environment, if set and not empty.
fn env_socket() -> Option<&'static str> {
    crate::sys::env()
        .find_map(|entry| entry.strip_prefix(b"NANOSTAR_SOCKET="))
        .and_then(|value| core::str::from_utf8(value).ok())
        .filter(|value| !value.is_empty())
}

/// The command and options the words name, or the exit code of a usage error already
/// explained. `words[at]` is the command's word (`spec`).
fn parse<'a>(words: &[&'a str], at: usize, spec: &Spec) -> Result<(Command<'a>, Options<'a>), u8> {
    // Everything after `--` is the container's, verbatim (`--json` too).
    let own = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let json = words[..own].contains(&"--json");
    let mut o = Options {
        socket: env_socket().unwrap_or(DEFAULT_SOCKET),
        json,
        repository: DEFAULT_REPOSITORY,
        repo_given: false,
        replace: false,
        wipe: false,
        stream: false,
        env: heapless::Vec::new(),
        args: None,
        timeout_ms: None,
        follow: false,
        tail: None,
        subject: Subject::default(),
    };
    let mut operands: heapless::Vec<&'a str, 3> = heapless::Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        i += 1;
        if i - 1 == at {
            continue;
        }
        if !is_option(word) {
            if operands.push(word).is_err() {
                return Err(cli::extra_operand(json, spec, word));
            }
            continue;
        }
        let opt = match cli::option(word) {
            Some(opt) if opt.applies(spec) => opt,
            _ => return Err(cli::option_error(json, word, spec)),
        };
        if opt.name == "--" {
            let mut args = heapless::Vec::new();
            if args.extend_from_slice(&words[i..]).is_err() {
                return Err(cli::usage_error(
                    json,
                    &format_args!("at most {MAX_ARGS} arguments after --"),
                ));
            }
            o.args = Some(args);
            break;
        }
        let mut value = "";
        if !opt.value.is_empty() {
            let Some(v) = words.get(i) else {
                return Err(cli::usage_error(
                    json,
                    &format_args!("{} needs {}", opt.name, opt.value),
                ));
            };
            value = v;
            i += 1;
        }
        match opt.name {
            "--socket" => o.socket = value,
            "--repo" => {
                o.repository = value;
                o.repo_given = true;
            }
            "--replace" => o.replace = true,
            "--stream" => o.stream = true,
            "--wipe" => o.wipe = true,
            "--follow" => o.follow = true,
            "--env" => {
                let Some((key, value)) = value.split_once('=') else {
                    return Err(cli::usage_error(
                        json,
                        &format_args!("--env needs KEY=VALUE, not \"{}\"", Json(value)),
                    ));
                };
                if o.env.push(EnvVar { key, value }).is_err() {
                    return Err(cli::usage_error(
                        json,
                        &format_args!("at most {MAX_ENV} --env"),
                    ));
                }
            }
            "--timeout" | "--tail" => {
                let Ok(n) = value.parse::<u32>() else {
                    return Err(cli::usage_error(
                        json,
                        &format_args!(
                            "{} needs a number {}, not \"{}\"",
                            opt.name,
                            opt.value,
                            Json(value)
                        ),
                    ));
                };
                if opt.name == "--tail" {
                    o.tail = Some(n);
                } else {
                    o.timeout_ms = Some(n);
                }
            }
            // `--json` is read above, `--help` by `cli`.
            _ => {}
        }
    }
    if let Some(code) = cli::check_count(json, spec, &operands) {
        return Err(code);
    }
    o.subject = Subject {
        command: spec.name,
        ..Subject::default()
    };
    let command = match (spec.name, operands.as_slice()) {
        ("list", _) => Command::List,
        ("shutdown", _) => Command::Shutdown,
        ("notifications", _) => Command::Notifications,
        ("install", [file, ..]) => {
            if check_name(o.repository).is_err() {
                return Err(cli::usage_error(
                    json,
                    &format_args!("\"{}\" is not a repository name", Json(o.repository)),
                ));
            }
            o.subject.file = Some(file);
            o.subject.repository = o.repository;
            Command::Install(file)
        }
        (_, [name, rest @ ..]) => {
            if check_name(name).is_err() {
                return Err(cli::usage_error(
                    json,
                    &format_args!(
                        "\"{}\" is not a package name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, \
                         not starting with . or -)",
                        Json(name)
                    ),
                ));
            }
            // `kill NAME [VERSION] SIGNAL`: the signal is last.
            let (rest, signal) = match (spec.name, rest) {
                ("kill", [rest @ .., signal]) => (rest, *signal),
                _ => (rest, ""),
            };
            let version = match rest.first() {
                Some(v) => match Version::parse(v) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        return Err(cli::usage_error(
                            json,
                            &format_args!(
                                "\"{}\" is not a VERSION (MAJOR.MINOR.PATCH, like 1.0.0)",
                                Json(v)
                            ),
                        ));
                    }
                },
                None => None,
            };
            o.subject.name = Some(name);
            o.subject.version = version;
            let package = PackageId {
                name,
                // uninstall, mount and umount need the version (`check_count`).
                version: version.unwrap_or(Version::new(0, 0, 0)),
            };
            match spec.name {
                "inspect" => Command::Inspect(name, version),
                "uninstall" => Command::Uninstall(package),
                "mount" => Command::Mount(package),
                "umount" => Command::Umount(package),
                "stop" => Command::Stop(name, version),
                "logs" => Command::Logs(name, version),
                "kill" => match parse_signal(signal) {
                    Some(n) => Command::Kill(name, version, n),
                    None => {
                        return Err(cli::usage_error(
                            json,
                            &format_args!(
                                "\"{}\" is not a signal: a number 1..=64 or a name, with or \
                                 without SIG: {SignalNames}",
                                Json(signal)
                            ),
                        ));
                    }
                },
                "restart" => Command::Restart(name, version),
                _ => Command::Start(name, version),
            }
        }
        // `check_count` makes sure that the operands are there.
        _ => return Err(USAGE),
    };
    if let Command::Start(name, version) | Command::Restart(name, version) = command {
        let request = Request::Start {
            name,
            version,
            args: o.args.clone(),
            env: o.env.clone(),
        };
        if let Err(e) = request.check() {
            return Err(cli::usage_error(json, &OverrideProblem(e)));
        }
    }
    Ok((command, o))
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
    Stop(&'a str, Option<Version>),
    Restart(&'a str, Option<Version>),
    Kill(&'a str, Option<Version>, u8),
    Logs(&'a str, Option<Version>),
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

/// Prints a failure: with `json` `{"ok":false,"code":…,"reason":…,"message":…}` on
/// stdout, else `nanostar: MESSAGE` on stderr.
pub(crate) fn report(json: bool, code: &str, reason: Option<&str>, message: &dyn fmt::Display) {
    if !json {
        warn(format_args!("nanostar: {message}"));
        return;
    }
    let mut w = Writer::stdout();
    let _ = write!(w, "{{\"ok\":false,\"code\":\"{code}\"");
    if let Some(reason) = reason {
        let _ = write!(w, ",\"reason\":\"{reason}\"");
    }
    let _ = writeln!(w, ",\"message\":\"{}\"}}", Json(message));
}

/// Says why the runtime cannot be talked to, and returns the exit code.
fn unreachable(o: &Options, e: ClientError) -> u8 {
    let (code, reason, exit) = match e {
        ClientError::Version { .. } => ("version-mismatch", None, UNREACHABLE),
        ClientError::Protocol => ("unexpected-reply", None, UNREACHABLE),
        ClientError::Full => ("full", Some("clients"), REFUSED),
        _ => ("unreachable", None, UNREACHABLE),
    };
    report(o.json, code, reason, &Unreachable(e, o.socket));
    exit
}

/// Why the runtime at a socket cannot be talked to.
struct Unreachable<'a>(ClientError, &'a str);

impl fmt::Display for Unreachable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.1;
        match self.0 {
            ClientError::Connect(Errno::NOENT) => write!(
                f,
                "cannot connect to {s}: no such file (is the runtime running? set \
                 NANOSTAR_SOCKET or --socket)"
            ),
            ClientError::Connect(Errno::CONNREFUSED) => write!(
                f,
                "nothing listens on {s} (a stale socket: the runtime that made it is gone)"
            ),
            ClientError::Connect(e) => write!(
                f,
                "cannot connect to {s}: {}",
                ErrnoText(e.raw_os_error() as u16)
            ),
            ClientError::Io(e) => write!(
                f,
                "the connection to the runtime broke: {}",
                ErrnoText(e.raw_os_error() as u16)
            ),
            ClientError::Closed => {
                f.write_str("the runtime closed the connection (did it shut down?)")
            }
            ClientError::Handshake => write!(
                f,
                "the runtime at {s} closed the connection before the handshake"
            ),
            ClientError::Full => write!(
                f,
                "the runtime at {s} serves as many clients as it may (max_clients); try again"
            ),
            ClientError::Version { oldest, newest } => write!(
                f,
                "the runtime speaks protocol versions {oldest} to {newest}, this client {}",
                nanostar_protocol::console::PROTOCOL_VERSION
            ),
            ClientError::Protocol => f.write_str(UNEXPECTED),
        }
    }
}

const UNEXPECTED: &str = "the runtime sent something this client does not understand";

/// Says that the runtime answered something this client does not expect.
fn unexpected(o: &Options) -> u8 {
    report(o.json, "unexpected-reply", None, &UNEXPECTED);
    UNREACHABLE
}

/// Prints a refusal in words that name its subject; returns [`REFUSED`].
fn refuse(o: &Options, s: &Subject, e: &Error) -> u8 {
    let (code, reason) = error_code(e);
    report(o.json, code, reason, &Refusal(e, s));
    REFUSED
}

/// The exit code of an answer that is not the one wanted: the refusal, or unexpected.
fn otherwise(o: &Options, s: &Subject, reply: &Reply) -> u8 {
    match reply {
        Reply::Error(e) => refuse(o, s, e),
        _ => unexpected(o),
    }
}

/// Prints what was done (`{"ok":true}` with `--json`) for `Reply::Ok`, or the refusal.
fn done(o: &Options, reply: &Reply, text: fmt::Arguments) -> u8 {
    if !matches!(reply, Reply::Ok) {
        return otherwise(o, &o.subject, reply);
    }
    if o.json {
        say(format_args!("{{\"ok\":true}}"));
    } else {
        say(text);
    }
    0
}

/// A request answered with Ok: `uninstalled hello 1.0.0`.
fn simple(
    c: &mut Connection,
    o: &Options,
    request: Request,
    what: &str,
) -> Result<u8, ClientError> {
    let id = c.request(request)?;
    let s = &o.subject;
    let reply = c.reply(id)?;
    Ok(match (s.name, s.version) {
        (Some(name), Some(v)) => done(o, &reply, format_args!("{what} {name} {v}")),
        _ => done(o, &reply, format_args!("{what}")),
    })
}

fn list(c: &mut Connection, o: &Options) -> Result<u8, ClientError> {
    let mut after: Option<(heapless::String<MAX_NAME_LEN>, Version)> = None;
    let mut first = true;
    loop {
        let request = Request::List {
            after: after.as_ref().map(|(n, v)| PackageId {
                name: n,
                version: *v,
            }),
        };
        let id = c.request(request)?;
        let reply = c.reply(id)?;
        let Reply::Packages { packages, more } = &reply else {
            return Ok(otherwise(o, &o.subject, &reply));
        };
        // The heading once the first page is there (not before a refusal).
        if after.is_none() {
            if o.json {
                say(format_args!("["));
            } else {
                say(format_args!(
                    "{:<20} {:<9} {:<10} {:<7} {:<10} {:<7} {:<7} LAST-EXIT",
                    "NAME", "VERSION", "REPOSITORY", "MOUNTED", "STATE", "PID", "UPTIME"
                ));
            }
        }
        for p in packages {
            if o.json {
                let comma = if first { "" } else { "," };
                say(format_args!("{comma}{{{}}}", InfoJson(p)));
            } else {
                print_row(p);
            }
            first = false;
        }
        match packages.last() {
            Some(p) if *more => {
                // Names are at most MAX_NAME_LEN bytes (the decoder checks them).
                let name = heapless::String::try_from(p.package.name).unwrap_or_default();
                after = Some((name, p.package.version));
            }
            _ => break,
        }
    }
    if o.json {
        say(format_args!("]"));
    }
    Ok(0)
}

/// One line of `list`.
fn print_row(p: &PackageInfo) {
    let version = cell(&p.package.version);
    let mounted = if p.mounted { "yes" } else { "no" };
    let (state, pid, uptime, last) = match &p.container {
        None => ("-", cell(&"-"), cell(&"-"), cell(&"-")),
        Some(info) => (
            state_name(info.state),
            if info.pid == 0 {
                cell(&"-")
            } else {
                cell(&info.pid)
            },
            if info.pid == 0 {
                cell(&"-")
            } else {
                cell(&Uptime(info.uptime_ms))
            },
            match info.last_exit {
                Some(status) => cell(&ExitText(status)),
                None => cell(&"-"),
            },
        ),
    };
    say(format_args!(
        "{:<20} {:<9} {:<10} {:<7} {:<10} {:<7} {:<7} {}",
        p.package.name,
        version.as_str(),
        p.repository,
        mounted,
        state,
        pid.as_str(),
        uptime.as_str(),
        last.as_str()
    ));
}

/// `value` as text, so that width and alignment apply (and `Version` ignores them).
fn cell(value: &dyn fmt::Display) -> heapless::String<40> {
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
    key: Option<[u8; 8]>,
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
            key: i.key,
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
    o: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let mut manifest = [0u8; MAX_MANIFEST_LEN];
    let (len, s) = match fetch_manifest(c, o, false, name, version, &mut manifest)? {
        Ok(got) => got,
        Err(code) => return Ok(code),
    };
    let decoded = Manifest::decode(&manifest[..len]);
    let mut e = Emit::new(o.json);
    let key = s.key.as_ref().map(|k| Hex(k));
    if o.json {
        e.show(format_args!(
            "{{{},\"size\":{},\"signed\":{},\"key\":",
            InfoJson(&s.info()),
            s.size,
            key.is_some()
        ));
        match &key {
            Some(key) => e.str(key),
            None => e.none(),
        }
    } else {
        e.show(format_args!(
            "{} {} in repository {}: {} bytes\n  mounted: {}, ",
            s.name,
            s.version,
            s.repository,
            s.size,
            if s.mounted { "yes" } else { "no" }
        ));
        match &key {
            Some(key) => e.show(format_args!("signed by key {key}")),
            None => e.raw("unsigned"),
        }
        e.show(format_args!(
            "\n  container: {}",
            ContainerText(&s.container)
        ));
    }
    if let Ok(m) = &decoded {
        manifest_fields(&mut e, m);
    }
    e.raw(if o.json { "}" } else { "" });
    drop(e);
    say(format_args!(""));
    if decoded.is_err() {
        warn(format_args!(
            "nanostar: the manifest of {} {} does not decode",
            s.name, s.version
        ));
    }
    Ok(0)
}

/// Writes what a manifest says, as `inspect` shows it: in text `\n  key: value` lines, in
/// JSON `,"key":value` members. The keys are the manifest's.
#[inline(never)]
fn manifest_fields(e: &mut Emit, m: &Manifest) {
    let kind = if m.is_resource() {
        "resource"
    } else {
        "application"
    };
    if e.json {
        e.show(format_args!(
            ",\"kind\":\"{kind}\",\"init\":\"{}\",\"uid\":{},\"gid\":{}",
            Json(m.init.unwrap_or("")),
            m.uid,
            m.gid
        ));
    } else {
        e.show(format_args!(
            "\n  {kind}, init {}, uid {}, gid {}, {} mounts",
            m.init.unwrap_or("-"),
            m.uid,
            m.gid,
            m.mounts.len()
        ));
    }
    e.key("args");
    e.open(b'[');
    for a in &m.args {
        e.item();
        e.quoted(a);
    }
    e.close();
    e.key("env");
    e.open(b'{');
    for v in &m.env {
        if e.json {
            e.key(v.key);
        } else {
            e.item();
            e.show(format_args!("{}=", v.key));
        }
        e.quoted(v.value);
    }
    e.close();
    e.key("suppl_groups");
    e.open(b'[');
    for g in &m.suppl_groups {
        e.item();
        e.show(format_args!("{g}"));
    }
    e.close();
    e.key("network");
    match m.network {
        Network::New => e.str(&"new"),
        Network::Host => e.str(&"host"),
        Network::Join(name) => {
            e.open(b'{');
            e.text("join", &name);
            e.close();
        }
    }
    e.key("mounts");
    // In text one mount a line.
    e.open(b'\n');
    for mount in &m.mounts {
        e.item();
        e.open(b'{');
        e.bare("target");
        e.str(&mount.target);
        e.bare("type");
        let (kind, flags) = match &mount.kind {
            MountKind::Bind { host, flags } => {
                e.str(&"bind");
                e.key("host");
                (*host, Some(*flags))
            }
            MountKind::Persist => ("persist", None),
            MountKind::Tmpfs { size } => {
                e.str(&"tmpfs");
                e.number("size", Some(*size));
                ("", None)
            }
            MountKind::Proc => ("proc", None),
            MountKind::Sysfs => ("sysfs", None),
            MountKind::Dev => ("dev", None),
            MountKind::Resource {
                name,
                version,
                dir,
                flags,
            } => {
                e.str(&"resource");
                e.text("name", name);
                e.text("version", version);
                e.key("dir");
                (*dir, Some(*flags))
            }
        };
        if !kind.is_empty() {
            e.str(&kind);
        }
        if let Some(flags) = flags {
            e.key("options");
            e.names(flags.names(), MountFlags::NAMES.len());
        }
        e.close();
    }
    e.close();
    e.text(
        "autostart",
        &match m.autostart {
            Autostart::None => "none",
            Autostart::Relaxed => "relaxed",
            Autostart::Critical => "critical",
        },
    );
    let r = &m.restart;
    e.key("restart");
    e.open(b'{');
    e.text(
        "mode",
        &match r.mode {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        },
    );
    e.number("max_restarts", r.max_restarts.map(u64::from));
    e.number("backoff_initial_ms", Some(u64::from(r.backoff_initial_ms)));
    e.number("backoff_max_ms", Some(u64::from(r.backoff_max_ms)));
    e.close();
    e.number("stop_timeout_ms", Some(u64::from(m.stop_timeout_ms)));
    let cg = &m.cgroups;
    e.key("cgroups");
    e.open(b'{');
    e.number("memory_max", cg.memory_max);
    e.number("memory_high", cg.memory_high);
    e.number("pids_max", cg.pids_max.map(u64::from));
    e.number(
        "cpu_max_quota_us",
        cg.cpu_max.map(|c| u64::from(c.quota_us)),
    );
    e.number(
        "cpu_max_period_us",
        cg.cpu_max.map(|c| u64::from(c.period_us)),
    );
    e.number("cpu_weight", cg.cpu_weight.map(u64::from));
    e.close();
    e.key("rlimits");
    e.open(b'[');
    for r in &m.rlimits {
        e.item();
        e.open(b'{');
        e.bare("resource");
        e.str(&r.resource.name());
        e.number("soft", r.soft);
        e.number("hard", r.hard);
        e.close();
    }
    e.close();
    e.key("io");
    e.open(b'{');
    e.text("stdout", &output_name(m.io.stdout));
    e.text("stderr", &output_name(m.io.stderr));
    e.close();
    e.key("console");
    e.names(m.console.names(), usize::MAX);
    e.key("custom");
    match m.custom {
        None => e.none(),
        Some(text) if e.json => e.str(&text),
        // A line each, indented, control characters (but tabs) shown as `?`. The
        // manifest bounds the text (`MAX_CUSTOM_LEN`).
        Some(text) => {
            e.raw("\n    ");
            for ch in text.trim_end().chars() {
                match ch {
                    '\n' => e.raw("\n    "),
                    '\t' => e.raw("\t"),
                    c if c.is_control() => e.raw("?"),
                    c => e.show(format_args!("{c}")),
                }
            }
        }
    }
}

fn output_name(o: Output) -> &'static str {
    match o {
        Output::Log => "log",
        Output::Discard => "discard",
        Output::Kmsg => "kmsg",
    }
}

/// Writes nested values as JSON or as text from one description (`inspect`). In text a
/// member at the top is `\n  key: value`, deeper ones `key value` after `, ` (in lists,
/// objects) or a new line (`\n` lists); an empty list or object is `none`.
struct Emit {
    w: Writer,
    json: bool,
    /// Nothing is written yet in the current list or object.
    first: bool,
    /// The open lists and objects, innermost last: `[`, `{` or `\n` (a list shown a line
    /// each in text).
    open: heapless::Vec<u8, 4>,
}

impl Emit {
    fn new(json: bool) -> Emit {
        Emit {
            w: Writer::stdout(),
            json,
            first: false,
            open: heapless::Vec::new(),
        }
    }

    fn raw(&mut self, s: &str) {
        let _ = self.w.write_str(s);
    }

    fn show(&mut self, v: fmt::Arguments) {
        let _ = self.w.write_fmt(v);
    }

    fn sep(&mut self) {
        let first = core::mem::replace(&mut self.first, false);
        match self.open.last() {
            Some(b'\n') if !self.json => self.raw("\n    "),
            _ if first => {}
            _ => self.raw(if self.json { "," } else { ", " }),
        }
    }

    /// Starts a member.
    fn key(&mut self, k: &str) {
        if self.open.is_empty() {
            self.first = false;
            if self.json {
                self.show(format_args!(",\"{k}\":"));
            } else {
                self.show(format_args!("\n  {k}: "));
            }
            return;
        }
        self.sep();
        if self.json {
            self.show(format_args!("\"{k}\":"));
        } else {
            self.show(format_args!("{k} "));
        }
    }

    /// Starts a member whose key text leaves out (the value says it): the target and
    /// type of a mount, the resource of an rlimit.
    fn bare(&mut self, k: &str) {
        if self.json {
            self.key(k);
        } else if !self.first {
            self.raw(" ");
        }
        self.first = false;
    }

    /// Starts a list item.
    fn item(&mut self) {
        self.sep();
    }

    /// A string member.
    fn text(&mut self, k: &str, v: &dyn fmt::Display) {
        self.key(k);
        self.str(v);
    }

    /// A number member; `None` is `null` in JSON and left out in text.
    fn number(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => {
                self.key(k);
                self.show(format_args!("{v}"));
            }
            None if self.json => {
                self.key(k);
                self.raw("null");
            }
            None => {}
        }
    }

    fn open(&mut self, kind: u8) {
        if self.json {
            self.raw(if kind == b'{' { "{" } else { "[" });
        }
        let _ = self.open.push(kind);
        self.first = true;
    }

    fn close(&mut self) {
        let kind = self.open.pop();
        if self.json {
            self.raw(if kind == Some(b'{') { "}" } else { "]" });
        } else if self.first {
            self.raw("none");
        }
        self.first = false;
    }

    /// A string: quoted and escaped in JSON, as it is in text.
    fn str(&mut self, v: &dyn fmt::Display) {
        if self.json {
            self.show(format_args!("\"{}\"", Json(v)));
        } else {
            self.show(format_args!("{v}"));
        }
    }

    /// A string quoted in text too (arguments and values, which may hold spaces).
    fn quoted(&mut self, s: &str) {
        self.show(format_args!("\"{}\"", Json(s)));
    }

    fn none(&mut self) {
        self.raw(if self.json { "null" } else { "none" });
    }

    /// A list of names (at most `most`).
    fn names<'n>(&mut self, names: impl Iterator<Item = &'n str>, most: usize) {
        self.open(b'[');
        for n in names.take(most) {
            self.item();
            self.str(&n);
        }
        self.close();
    }
}

/// Fetches a package's whole manifest into `manifest` with as many `inspect` requests as
/// it takes; its length and what the first reply says about the package. `Ok(Err(code))`
/// if the runtime refused (said unless `quiet`).
fn fetch_manifest(
    c: &mut Connection,
    o: &Options,
    quiet: bool,
    name: &str,
    version: Option<Version>,
    manifest: &mut [u8; MAX_MANIFEST_LEN],
) -> Result<Result<(usize, Summary), u8>, ClientError> {
    let mut have = 0usize;
    let mut summary = None;
    loop {
        let id = c.request(Request::Inspect {
            name,
            version,
            manifest_offset: have as u32,
        })?;
        let reply = c.reply(id)?;
        let Reply::Inspected(i) = &reply else {
            return Ok(Err(if quiet {
                REFUSED
            } else {
                otherwise(o, &o.subject, &reply)
            }));
        };
        // The decoder checked that the piece lies inside the manifest.
        let offset = i.manifest_offset as usize;
        let end = (offset + i.manifest.len()).min(manifest.len());
        manifest[offset..end].copy_from_slice(&i.manifest[..end - offset]);
        let total = i.manifest_len as usize;
        if summary.is_none() {
            summary = Some(Summary::of(i));
        }
        if end < total && end > have {
            have = end;
        } else if let Some(s) = summary {
            return Ok(Ok((end, s)));
        }
    }
}

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

fn install(c: &mut Connection, o: &Options, file: &str) -> Result<u8, ClientError> {
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
        c.request_as(id, Request::InstallChunk { data: &chunk[..n] })?;
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

/// `start`: the runtime answers once the app runs (after its `execve`) or with the error
/// that stopped the setup.
fn start(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let id = c.request(Request::Start {
        name,
        version,
        args: o.args.clone(),
        env: o.env.clone(),
    })?;
    let failed = match c.reply(id)? {
        // Which mount or rlimit failed is worth a look at the manifest.
        Reply::Error(Error::Setup {
            step: step @ (SetupStep::Mount(_) | SetupStep::Rlimit(_)),
            errno,
        }) => (step, errno),
        reply => {
            return Ok(match version {
                Some(v) => done(o, &reply, format_args!("started {name} {v}")),
                None => done(o, &reply, format_args!("started {name}")),
            });
        }
    };
    setup_failed(c, o, name, version, failed.0, failed.1)
}

/// Says which mount or rlimit of the manifest a failed setup step is, looked up in the
/// manifest (as far as `inspect` is allowed).
#[inline(never)] // Its manifest buffer is on the stack only on this path.
fn setup_failed(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
    step: SetupStep,
    errno: u16,
) -> Result<u8, ClientError> {
    let mut manifest = [0u8; MAX_MANIFEST_LEN];
    let len = fetch_manifest(c, o, true, name, version, &mut manifest)?;
    let decoded = len
        .ok()
        .and_then(|(len, _)| Manifest::decode(&manifest[..len]).ok());
    let what = decoded.as_ref().and_then(|m| match step {
        SetupStep::Mount(i) => m.mounts.get(usize::from(i)).map(|m| m.target),
        SetupStep::Rlimit(i) => m.rlimits.get(usize::from(i)).map(|r| r.resource.name()),
        _ => None,
    });
    let error = Error::Setup { step, errno };
    Ok(match what {
        Some(what) => {
            report(
                o.json,
                "setup",
                None,
                &format_args!(
                    "{name}: the container's setup failed at {} ({what}): {}",
                    StepText(step),
                    ErrnoText(errno)
                ),
            );
            REFUSED
        }
        None => refuse(o, &o.subject, &error),
    })
}

/// `stop`; with `restart`, `NotRunning` is no failure. `Ok(None)` when done.
fn stop(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
    restart: bool,
) -> Result<Option<u8>, ClientError> {
    let id = c.request(Request::Stop {
        name,
        version,
        timeout_ms: o.timeout_ms,
    })?;
    let status = match c.reply(id)? {
        Reply::Stopped(status) => Some(status),
        Reply::Error(Error::NotRunning) if restart => None,
        reply => return Ok(Some(otherwise(o, &o.subject, &reply))),
    };
    match status {
        Some(status) if o.json => say(format_args!(
            "{{\"ok\":true,\"exit\":{}}}",
            ExitJson(status)
        )),
        Some(status) => say(format_args!(
            "stopped {name}: {}",
            ExitSentence(status, "exited with code ")
        )),
        None if o.json => say(format_args!("{{\"ok\":true,\"exit\":null}}")),
        None => say(format_args!("{name} was not running")),
    }
    Ok(None)
}

/// `restart`: stop if it runs, then start.
fn restart(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    match stop(c, o, name, version, true)? {
        Some(code) => Ok(code),
        None => start(c, o, name, version),
    }
}

fn kill(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
    signal: u8,
) -> Result<u8, ClientError> {
    let id = c.request(Request::Kill {
        name,
        version,
        signal,
    })?;
    let reply = c.reply(id)?;
    Ok(match signal_name(signal) {
        Some(sig) => done(o, &reply, format_args!("sent SIG{sig} to {name}")),
        None => done(
            o,
            &reply,
            format_args!("sent signal {} to {name}", SignalText(signal)),
        ),
    })
}

/// `logs`: the log pieces as they come, raw on stdout (or as JSON objects), until
/// `LogEnd`; with `--follow` until the container ends (`Ended`, said on stderr) or the
/// connection closes.
fn logs(
    c: &mut Connection,
    o: &Options,
    name: &str,
    version: Option<Version>,
) -> Result<u8, ClientError> {
    let follow = o.follow;
    let request = match o.tail {
        Some(lines) => Request::TailLogs {
            name,
            version,
            follow,
            lines: Some(lines),
        },
        None => Request::Logs {
            name,
            version,
            follow,
        },
    };
    let id = c.request(request)?;
    let mut carry = Utf8Carry::default();
    loop {
        match c.reply(id)? {
            Reply::Log { dropped, data } if o.json => {
                let (head, body) = carry.split(data, dropped > 0);
                if dropped > 0 || !head.is_empty() || !body.is_empty() {
                    say(format_args!(
                        "{{\"dropped\":{dropped},\"data\":\"{}{}\"}}",
                        JsonBytes(&head),
                        JsonBytes(body)
                    ));
                }
            }
            Reply::Log { dropped, data } => {
                if dropped > 0 {
                    warn(format_args!(
                        "nanostar: {dropped} bytes of {name}'s log were overwritten before they \
                         could be read"
                    ));
                }
                match crate::sys::write_all(crate::sys::StdFd::Out, data) {
                    Ok(()) => {}
                    // The reader is gone (`| head`): nothing left to do.
                    Err(Errno::PIPE) => return Ok(0),
                    Err(_) => return Ok(REFUSED),
                }
            }
            reply @ (Reply::LogEnd | Reply::Ended(_)) => {
                let held = carry.take();
                if o.json && !held.is_empty() {
                    say(format_args!(
                        "{{\"dropped\":0,\"data\":\"{}\"}}",
                        JsonBytes(&held)
                    ));
                }
                match reply {
                    Reply::Ended(status) if o.json => {
                        say(format_args!("{{\"ended\":{}}}", ExitJson(status)))
                    }
                    Reply::Ended(status) => warn(format_args!(
                        "nanostar: {name} ended: {}",
                        ExitSentence(status, "exit code ")
                    )),
                    _ if follow && !o.json => warn(format_args!(
                        "nanostar: {name} is not running: nothing to follow"
                    )),
                    _ => {}
                }
                return Ok(0);
            }
            reply => return Ok(otherwise(o, &o.subject, &reply)),
        }
    }
}

fn notifications(c: &mut Connection, o: &Options) -> Result<u8, ClientError> {
    let id = c.request(Request::Subscribe)?;
    let refused = match c.reply(id)? {
        Reply::Ok => None,
        reply => Some(otherwise(o, &o.subject, &reply)),
    };
    if let Some(code) = refused {
        return Ok(code);
    }
    loop {
        let Message::Notification(n) = c.receive()? else {
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
            Notification::GaveUp { package, .. } => ("gave-up", Some(package)),
        };
        let mut w = Writer::stdout();
        let _ = match (o.json, p) {
            (true, Some(p)) => write!(
                w,
                "{{\"event\":\"{what}\",\"name\":\"{}\",\"version\":\"{}\"",
                p.name, p.version
            ),
            (true, None) => write!(w, "{{\"event\":\"{what}\""),
            (false, Some(p)) => write!(w, "{what} {} {}", p.name, p.version),
            (false, None) => w.write_str(what),
        };
        // The event's other fields.
        let _ = match (o.json, n) {
            (true, Notification::Started { pid, .. }) => write!(w, ",\"pid\":{pid}"),
            (false, Notification::Started { pid, .. }) => write!(w, ": pid {pid}"),
            (true, Notification::Exited { status, .. }) => {
                write!(w, ",\"exit\":{}", ExitJson(status))
            }
            (false, Notification::Exited { status, .. }) => {
                write!(w, ": {}", ExitSentence(status, "code "))
            }
            (
                true,
                Notification::GaveUp {
                    restarts, status, ..
                },
            ) => write!(w, ",\"restarts\":{restarts},\"exit\":{}", ExitJson(status)),
            (
                false,
                Notification::GaveUp {
                    restarts, status, ..
                },
            ) => write!(
                w,
                " after {restarts} restarts: {}",
                ExitSentence(status, "code ")
            ),
            (false, Notification::Installed { repository, .. }) => {
                write!(w, " into {repository}")
            }
            _ => Ok(()),
        };
        let _ = w.write_str(if o.json { "}\n" } else { "\n" });
        drop(w);
        if matches!(n, Notification::ShuttingDown) {
            return Ok(0);
        }
    }
}

/// Text as the inside of a JSON string: `"` and `\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`.
pub(crate) struct Json<T>(pub T);

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

    /// The words parsed as `cli::run` hands them over.
    fn parse_words<'a>(words: &[&'a str]) -> Result<(Command<'a>, Options<'a>), u8> {
        let own = words.iter().position(|w| *w == "--").unwrap_or(words.len());
        let at = cli::find_command(&words[..own]).expect("a command");
        let spec = cli::command(words[at]).expect("a known command");
        parse(words, at, &spec)
    }

    fn parsed<'a>(words: &[&'a str]) -> (Command<'a>, Options<'a>) {
        match parse_words(words) {
            Ok(p) => p,
            Err(code) => panic!("{words:?}: {code:?}"),
        }
    }

    fn usage(words: &[&str]) {
        assert_eq!(parse_words(words).err(), Some(USAGE), "{words:?}");
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
        usage(&words);
        usage(&["start", "hello", "--env", "A"]);
        usage(&["start", "hello", "--env"]);
        // restart takes the same.
        let (command, o) = parsed(&["restart", "hello", "--timeout", "5", "--", "x"]);
        assert_eq!(command, Command::Restart("hello", None));
        assert_eq!(
            (o.timeout_ms, o.args.as_deref()),
            (Some(5), Some(&["x"][..]))
        );
    }

    #[test]
    fn stop_kill_logs_and_their_options() {
        let (command, o) = parsed(&["stop", "hello", "--timeout", "500"]);
        assert_eq!(command, Command::Stop("hello", None));
        assert_eq!(o.timeout_ms, Some(500));
        assert_eq!(
            parsed(&["stop", "hello", "1.0.0"]).0,
            Command::Stop("hello", Some(Version::new(1, 0, 0)))
        );
        assert_eq!(parsed(&["stop", "hello"]).1.timeout_ms, None);
        usage(&["stop", "hello", "--timeout", "-1"]);
        usage(&["stop", "hello", "--timeout"]);
        assert_eq!(
            parsed(&["kill", "hello", "TERM"]).0,
            Command::Kill("hello", None, 15)
        );
        assert_eq!(
            parsed(&["kill", "hello", "SIGKILL"]).0,
            Command::Kill("hello", None, 9)
        );
        assert_eq!(
            parsed(&["kill", "hello", "2.0.0", "9"]).0,
            Command::Kill("hello", Some(Version::new(2, 0, 0)), 9)
        );
        usage(&["kill", "hello", "NOPE"]);
        usage(&["kill", "hello"]);
        usage(&["kill", "hello", "x.y", "9"]);
        let (command, o) = parsed(&["logs", "--follow", "hello", "--tail", "10"]);
        assert_eq!(command, Command::Logs("hello", None));
        assert!(o.follow);
        assert_eq!(o.tail, Some(10));
        assert!(!parsed(&["logs", "hello"]).1.follow);
        usage(&["logs", "hello", "--tail", "ten"]);
        // Options of one command are refused on the others, and unknown ones.
        for words in [
            &["stop", "hello", "--follow"][..],
            &["logs", "hello", "--timeout", "1"],
            &["stop", "hello", "--", "x"],
            &["kill", "hello", "9", "--env", "A=1"],
            &["list", "--wipe"],
            &["logs", "hello", "--bogus"],
            &["list", "-x"],
        ] {
            usage(words);
        }
        assert_eq!(parsed(&["list", "--json"]).0, Command::List);
        let (command, o) = parsed(&["install", "f.npk", "--repo", "r", "--stream", "--replace"]);
        assert_eq!(command, Command::Install("f.npk"));
        assert!(o.stream && o.replace && o.repo_given && o.repository == "r");
        let (_, o) = parsed(&["install", "f.npk"]);
        assert!(!o.repo_given && o.repository == DEFAULT_REPOSITORY);
    }

    #[test]
    fn operands_are_counted_and_checked_before_connecting() {
        usage(&["start"]);
        usage(&["start", "a", "1.0.0", "extra"]);
        usage(&["uninstall", "a"]);
        usage(&["list", "extra"]);
        usage(&["inspect", "hello", "1.x"]);
        usage(&["start", "bad name"]);
        usage(&["stop", ".hidden"]);
        usage(&["install", "f", "--repo", "a/b"]);
        usage(&["start", "hello", "--env", "NANOSTAR_X=1"]);
        usage(&["start", "hello", "--env", "1A=1"]);
        usage(&["start", "hello", "--env", "=1"]);
        usage(&["start", "hello", "--env", "A=1", "--env", "A=2"]);
        let long = "x".repeat(MAX_ARG_LEN + 1);
        usage(&["start", "hello", "--", &long]);
        let (command, o) = parsed(&["uninstall", "hello", "1.2.3", "--wipe"]);
        let p = PackageId {
            name: "hello",
            version: Version::new(1, 2, 3),
        };
        assert_eq!(command, Command::Uninstall(p));
        assert!(o.wipe);
        // The subject of the refusals is what was asked.
        assert_eq!(o.subject.name, Some("hello"));
        assert_eq!(o.subject.version, Some(Version::new(1, 2, 3)));
        assert_eq!(o.subject.command, "uninstall");
        let (_, o) = parsed(&["install", "x.npk", "--repo", "dev"]);
        assert_eq!(
            (o.subject.file, o.subject.repository),
            (Some("x.npk"), "dev")
        );
    }

    #[test]
    fn unreachable_says_why() {
        let text = |e| format!("{}", Unreachable(e, "/run/x"));
        assert_eq!(
            text(ClientError::Connect(Errno::NOENT)),
            "cannot connect to /run/x: no such file (is the runtime running? set \
             NANOSTAR_SOCKET or --socket)"
        );
        assert_eq!(
            text(ClientError::Connect(Errno::CONNREFUSED)),
            "nothing listens on /run/x (a stale socket: the runtime that made it is gone)"
        );
        assert_eq!(
            text(ClientError::Connect(Errno::ACCESS)),
            "cannot connect to /run/x: permission denied"
        );
        assert!(text(ClientError::Full).contains("max_clients"));
        assert!(!text(ClientError::Connect(Errno::PROTO)).contains("system error"));
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
        assert_eq!(cell(&Version::new(1, 2, 3)).as_str(), "1.2.3");
    }
}
