//! Client commands of the `nanostar` binary: talk to a running runtime over its socket.
//! Here the ones that ask and print an answer, and what every command says when it fails;
//! `install` and the streams `logs` and `notifications` have files of their own.
//!
//! Exit codes scripts can rely on: 0 done; 1 the runtime refused (the message says why), or
//! a local file cannot be used; 2 bad usage (also a value that breaks the protocol's
//! rules, found before connecting); 3 the runtime cannot be reached or spoke an unexpected
//! protocol.
//!
//! The socket is `--socket PATH`, else `$NANOSTAR_SOCKET`, else
//! [`DEFAULT_SOCKET`](super::args::DEFAULT_SOCKET).
//!
//! With `--json` every command prints one JSON object per line (`list` a JSON array over
//! several lines, one package per line; `logs` and `notifications` one
//! object per piece or event). A failure is `{"ok":false,"code":CODE,"message":TEXT}` on
//! stdout (with a `"reason"` for `bad-package`, `full` and `protocol-violation`); the
//! codes are listed at [`crate::text::error_code`].

use core::fmt;

use nanostar_protocol::console::{
    ContainerInfo, Error, Inspected, PackageId, PackageInfo, Reply, Request, SetupStep,
};
use nanostar_protocol::limits::{MAX_MANIFEST_LEN, MAX_NAME_LEN};
use nanostar_protocol::npk::Manifest;
use nanostar_protocol::version::Version;
use rustix::io::Errno;

use super::args::{Command, Options, parse};
use super::connection::{ClientError, Connection};
use super::install::install;
use super::logs::{logs, notifications};
use super::render::{ContainerText, Emit, ExitJson, InfoJson, manifest_fields, print_row, report};
use crate::cli::Spec;
use crate::out::{say, warn};
use crate::text::{
    ErrnoText, ExitSentence, Hex, Refusal, SignalText, StepText, Subject, error_code, signal_name,
};

/// Exit code of a refusal (or a local file that cannot be used).
pub(super) const REFUSED: u8 = 1;
const UNREACHABLE: u8 = 3;

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
pub(super) struct Unreachable<'a>(pub(super) ClientError, pub(super) &'a str);

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
pub(super) fn otherwise(o: &Options, s: &Subject, reply: &Reply) -> u8 {
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
        Reply::Error(e @ Error::InvalidArgument) => {
            let (code, reason) = error_code(&e);
            let ms = o.timeout_ms.unwrap_or(0);
            report(
                o.json,
                code,
                reason,
                &format_args!(
                    "{name}: the runtime refuses a stop timeout of {ms} ms: more than its \
                     max_stop_timeout_ms (its configuration); nothing was stopped"
                ),
            );
            return Ok(Some(REFUSED));
        }
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
