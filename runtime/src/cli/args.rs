//! A client command's words read into what to do ([`Command`]) and how ([`Options`]),
//! checked against the command table (`cli`) and the protocol's rules before anything
//! connects: a usage error is said here (exit code 2), so that the commands get values
//! that are valid already.

use core::fmt;

use nanostar_protocol::console::{MessageError, PackageId, Request};
use nanostar_protocol::limits::{
    MAX_ARG_LEN, MAX_ARGS, MAX_ENV, MAX_ENV_VALUE_LEN, MAX_NAME_LEN, MAX_START_OVERRIDE_LEN,
};
use nanostar_protocol::npk::manifest::{EnvVar, check_name};
use nanostar_protocol::version::Version;

use super::render::Json;
use crate::cli::{self, Spec, USAGE, is_option};
use crate::text::{SignalNames, Subject, parse_signal};

/// Where the runtime listens unless `--socket` or `NANOSTAR_SOCKET` says otherwise (as in
/// `docs/config.md`).
pub const DEFAULT_SOCKET: &str = "/run/nanostar/console";
/// Repository `install` uses without `--repo`.
pub const DEFAULT_REPOSITORY: &str = "default";

/// Options before or after the command words.
pub(super) struct Options<'a> {
    pub(super) socket: &'a str,
    pub(super) json: bool,
    pub(super) repository: &'a str,
    /// `--repo` was given (a missing repository then is the user's, not the default).
    pub(super) repo_given: bool,
    /// `install --replace`.
    pub(super) replace: bool,
    pub(super) wipe: bool,
    /// Send an install's bytes through the socket instead of passing the file descriptor.
    pub(super) stream: bool,
    /// `start --env KEY=VALUE`, in order.
    pub(super) env: heapless::Vec<EnvVar<'a>, MAX_ENV>,
    /// `start ... -- ARGS`: `Some` (maybe empty) once `--` is given.
    pub(super) args: Option<heapless::Vec<&'a str, MAX_ARGS>>,
    /// `stop --timeout MS`.
    pub(super) timeout_ms: Option<u32>,
    /// `logs --follow`.
    pub(super) follow: bool,
    /// `logs --tail N`.
    pub(super) tail: Option<u32>,
    /// What the command is about, for its refusals.
    pub(super) subject: Subject<'a>,
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
pub(super) fn parse<'a>(
    words: &[&'a str],
    at: usize,
    spec: &Spec,
) -> Result<(Command<'a>, Options<'a>), u8> {
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
pub(super) enum Command<'a> {
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
