//! The runtime's configuration file: a small subset of TOML, parsed without allocation
//! into a [`Config`] that borrows from the file's bytes. `docs/config.md` is the format.
//!
//! Every error carries the line it is on, so a wrong config stops start-up (or
//! `nanostar check-config`) with "line N: what is wrong".

use core::fmt;

use heapless::Vec;
use nanostar_protocol::npk::manifest::{MAX_STOP_TIMEOUT_MS, check_name, check_path};
use nanostar_protocol::permissions::{PERMISSION_NAMES, Permissions};

use crate::limits::{MAX_CLIENTS, MAX_CONSOLE_RULES, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS};

/// Default limit on a package installed into a repository without `max_install_size`.
pub const DEFAULT_MAX_INSTALL_SIZE: u64 = 64 << 20;
/// Default number of console clients served at once.
pub const DEFAULT_MAX_CLIENTS: u16 = 8;
/// Default time an install may stall between two chunks before it is aborted.
pub const DEFAULT_INSTALL_TIMEOUT_MS: u32 = 10_000;
/// Default time a connection has to complete its `Hello`: a client sends it at once, so a
/// peer that has not after 5 s holds a slot for nothing.
pub const DEFAULT_HELLO_TIMEOUT_MS: u32 = 5_000;
/// Longest `hello_timeout_ms`: a minute, so no configuration lets silent peers keep the
/// client table.
pub const MAX_HELLO_TIMEOUT_MS: u32 = 60_000;
/// Default time a client that waits for nothing may stay silent: 10 minutes, long enough
/// for a person at a prompt, short enough that forgotten connections give their slots back.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 600_000;
/// Longest `idle_timeout_ms`: a day.
pub const MAX_IDLE_TIMEOUT_MS: u32 = 86_400_000;
/// Default longest stop timeout: a minute between SIGTERM and SIGKILL is room for any
/// orderly exit, and no request or manifest can make a stop wait longer.
pub const DEFAULT_MAX_STOP_TIMEOUT_MS: u32 = 60_000;
/// Default time a shutdown gives the containers before it kills them: a board's
/// power-off must not wait for an app that ignores SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u32 = 10_000;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config<'a> {
    /// Where the runtime keeps run-time state (mount points, sockets). Absolute.
    pub run_dir: &'a str,
    /// Where persistent package data lives. Absolute.
    pub data_dir: &'a str,
    /// Path of the console's unix socket. Absolute.
    pub socket: &'a str,
    /// The cgroup v2 directory the runtime makes its containers' cgroups in (`CGROUP/NAME`);
    /// `None`: containers get no cgroup, and a manifest with cgroup limits is refused.
    pub cgroup: Option<&'a str>,
    /// A serial or virtio console device the console protocol is also served on (the
    /// link a host has to a real board). Its peer has the permissions of uid 0.
    pub console_device: Option<&'a str>,
    /// As PID 1: the block device with the persistent file system, mounted at
    /// `data_mount` before anything else.
    pub data_device: Option<&'a str>,
    /// Where `data_device` is mounted.
    pub data_mount: &'a str,
    /// The file system type of `data_device`.
    pub data_fstype: &'a str,
    /// Package repositories, in file order.
    pub repositories: Vec<Repository<'a>, MAX_REPOSITORIES>,
    /// Console permissions by peer credentials.
    pub console: Vec<ConsoleRule, MAX_CONSOLE_RULES>,
    /// Limits on clients and installs.
    pub limits: Limits,
}

/// A directory of packages and the keys its packages must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository<'a> {
    /// Its name, as clients give it to `install --repo`.
    pub name: &'a str,
    /// Absolute directory holding its NPK files.
    pub dir: &'a str,
    /// Paths of trusted public key files; none = development mode (no signature check, no verity).
    pub keys: Vec<&'a str, MAX_REPOSITORY_KEYS>,
    /// Largest package accepted by install.
    pub max_install_size: u64,
    /// Line of the section header, for later errors about this repository.
    pub line: u32,
}

/// Who a console rule is about, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A user id.
    Uid(u32),
    /// A group id (the peer's primary group).
    Gid(u32),
}

/// What a peer may do on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleRule {
    /// The peer.
    pub peer: Peer,
    /// Its permissions.
    pub permissions: Permissions,
}

/// Limits of the console and of installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clients served at once; one more is refused.
    pub max_clients: u16,
    /// An install with no chunk for this long is aborted.
    pub install_timeout_ms: u32,
    /// A connection that has not completed its `Hello` this long after it connected is
    /// closed.
    pub hello_timeout_ms: u32,
    /// A client that has sent no request for this long, and waits for nothing it asked
    /// for (an install, a log it follows, notifications, a start or stop), is closed.
    pub idle_timeout_ms: u32,
    /// The longest stop timeout: a `stop` asking for more is refused, a manifest's
    /// `stop_timeout_ms` above it is cut to it.
    pub max_stop_timeout_ms: u32,
    /// A shutdown SIGKILLs every container still running this long after it began,
    /// whatever stop timeouts are pending.
    pub shutdown_timeout_ms: u32,
}

impl Config<'_> {
    /// The permissions of a peer: the union of the rules for its uid and its gid.
    pub fn permissions(&self, uid: u32, gid: u32) -> Permissions {
        self.console
            .iter()
            .filter(|r| r.peer == Peer::Uid(uid) || r.peer == Peer::Gid(gid))
            .fold(Permissions::NONE, |acc, r| acc.union(r.permissions))
    }
}

/// What is wrong with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not `key = value`, `[section]` or a comment.
    Syntax,
    /// A string that does not end on its line, or holds `\` or `"`.
    String,
    /// A section this version does not know.
    UnknownSection,
    /// A key this section does not have; the keys it has.
    UnknownKey(&'static str),
    /// The same key, section or repository twice.
    Duplicate,
    /// A value of the wrong type or out of range.
    Value,
    /// A path that is not absolute and normalized.
    Path,
    /// A repository name with characters other than `A-Za-z0-9._-`.
    Name,
    /// A permission name that does not exist.
    Permission,
    /// More repositories, keys or console rules than the runtime has room for.
    TooMany,
    /// A required key is missing (the line is the section's, or 0 for the top level).
    Missing(&'static str),
    /// The file is larger than the runtime's buffer or not UTF-8.
    File,
}

/// Keys of each part of the file, for the error that names an unknown one.
const TOP_KEYS: &str =
    "run_dir, data_dir, socket, cgroup, console_device, data_device, data_mount, data_fstype";
const LIMITS_KEYS: &str = "max_clients, install_timeout_ms, hello_timeout_ms, idle_timeout_ms, \
    max_stop_timeout_ms, shutdown_timeout_ms";
const REPOSITORY_KEYS: &str = "dir, keys, max_install_size";
const CONSOLE_KEYS: &str = "uid.N, gid.N";

/// A configuration error: where and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number (0 when the error is about the file as a whole).
    pub line: u32,
    /// What is wrong.
    pub problem: Problem,
    /// The key, section or name it is about (empty when the line says it all).
    pub word: Word,
}

/// A word of the file that an error names, copied so that the error outlives the file's
/// buffer; at most [`Word::MAX`] bytes (longer ones are cut at a character boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    bytes: [u8; Word::MAX],
    len: u8,
}

impl Default for Word {
    fn default() -> Word {
        Word::of("")
    }
}

impl Word {
    /// Longest word kept.
    pub const MAX: usize = 48;

    /// A copy of `text`.
    pub fn of(text: &str) -> Word {
        let mut end = text.len().min(Word::MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; Word::MAX];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        Word {
            bytes,
            len: end as u8,
        }
    }

    /// The word.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        let word = self.word.as_str();
        match self.problem {
            Problem::Syntax => f.write_str("expected `key = value`, `[section]` or a `#` comment"),
            Problem::String => {
                f.write_str("a string must close on its line and contain no `\\` or `\"`")
            }
            Problem::UnknownSection => write!(
                f,
                "unknown section [{word}]; use [limits], [console] or [repository.NAME]"
            ),
            Problem::UnknownKey(keys) => {
                write!(
                    f,
                    "unknown key `{word}` here; the keys are: {keys} (docs/config.md)"
                )
            }
            Problem::Duplicate => write!(f, "`{word}` is set twice"),
            Problem::Value => write!(
                f,
                "wrong type or out of range for `{word}` (docs/config.md)"
            ),
            Problem::Path => write!(
                f,
                "`{word}` must be an absolute path, without `.`, `..`, `//` or a trailing `/`"
            ),
            Problem::Name => write!(
                f,
                "`{word}` is not a name: letters, digits, `.`, `_` and `-`, not starting with \
                 `.` or `-`"
            ),
            Problem::Permission => {
                write!(
                    f,
                    "unknown permission `{word}`; use \"full\" or a list of: "
                )?;
                for (i, name) in PERMISSION_NAMES.iter().enumerate() {
                    let comma = if i == 0 { "" } else { ", " };
                    write!(f, "{comma}{name}")?;
                }
                Ok(())
            }
            Problem::TooMany => write!(
                f,
                "more entries than the runtime has room for at `{word}` (at most \
                 {MAX_REPOSITORIES} repositories, {MAX_REPOSITORY_KEYS} keys each, \
                 {MAX_CONSOLE_RULES} console rules)"
            ),
            Problem::Missing(key) => write!(f, "required key `{key}` is missing"),
            Problem::File => f.write_str("the file is too large or not UTF-8"),
        }
    }
}

impl ConfigError {
    /// A problem on `line` (0: the whole file) that names no word.
    pub fn new(line: u32, problem: Problem) -> ConfigError {
        ConfigError {
            line,
            problem,
            word: Word::default(),
        }
    }
}

fn at(line: u32, problem: Problem) -> ConfigError {
    ConfigError::new(line, problem)
}

/// A problem about `word` on `line`.
fn about(line: u32, problem: Problem, word: &str) -> ConfigError {
    ConfigError {
        line,
        problem,
        word: Word::of(word),
    }
}

/// A value on the right of `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Str(&'a str),
    Int(u64),
    /// The text between `[` and `]`, items not yet split.
    Array(&'a str),
}

/// The section a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Top,
    Limits,
    Console,
    /// Index into `repositories`.
    Repository(usize),
}

/// Parses a configuration file.
pub fn parse(text: &str) -> Result<Config<'_>, ConfigError> {
    let mut cfg = Config {
        run_dir: "",
        data_dir: "",
        socket: "",
        cgroup: None,
        console_device: None,
        data_device: None,
        data_mount: "/data",
        data_fstype: "ext4",
        repositories: Vec::new(),
        console: Vec::new(),
        limits: Limits {
            max_clients: DEFAULT_MAX_CLIENTS,
            install_timeout_ms: DEFAULT_INSTALL_TIMEOUT_MS,
            hello_timeout_ms: DEFAULT_HELLO_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_stop_timeout_ms: DEFAULT_MAX_STOP_TIMEOUT_MS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        },
    };
    // Which keys were seen, to refuse duplicates: top level and [limits].
    let mut seen: Vec<&str, 16> = Vec::new();
    let mut repo_seen: Vec<&str, 4> = Vec::new();
    let mut section = Section::Top;
    for (index, raw) in text.lines().enumerate() {
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let content = strip_comment(raw).map_err(|p| at(line, p))?.trim();
        if content.is_empty() {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .ok_or(at(line, Problem::Syntax))?
                .trim();
            section = open_section(&mut cfg, name, line)?;
            repo_seen.clear();
            continue;
        }
        let (key, value) = content.split_once('=').ok_or(at(line, Problem::Syntax))?;
        let key = key.trim();
        let value = parse_value(value.trim()).map_err(|p| about(line, p, key))?;
        match section {
            Section::Top | Section::Limits => {
                let qualified = if section == Section::Limits {
                    key_in_limits(key)
                } else {
                    key
                };
                if seen.contains(&qualified) {
                    return Err(about(line, Problem::Duplicate, key));
                }
                seen.push(qualified)
                    .map_err(|_| about(line, Problem::UnknownKey(TOP_KEYS), key))?;
                if section == Section::Top {
                    set_top(&mut cfg, key, value, line).map_err(named(key))?;
                } else {
                    set_limit(&mut cfg.limits, key, value, line).map_err(named(key))?;
                }
            }
            Section::Console => add_console_rule(&mut cfg, key, value, line).map_err(named(key))?,
            Section::Repository(i) => {
                if repo_seen.contains(&key) {
                    return Err(about(line, Problem::Duplicate, key));
                }
                repo_seen
                    .push(key)
                    .map_err(|_| about(line, Problem::UnknownKey(REPOSITORY_KEYS), key))?;
                set_repository(&mut cfg.repositories[i], key, value, line).map_err(named(key))?;
            }
        }
    }
    for (key, value) in [
        ("run_dir", cfg.run_dir),
        ("data_dir", cfg.data_dir),
        ("socket", cfg.socket),
    ] {
        if value.is_empty() {
            return Err(at(0, Problem::Missing(key)));
        }
    }
    if let Some(r) = cfg.repositories.iter().find(|r| r.dir.is_empty()) {
        return Err(at(r.line, Problem::Missing("dir")));
    }
    Ok(cfg)
}

/// Names `key` in an error that names nothing yet.
fn named(key: &str) -> impl Fn(ConfigError) -> ConfigError + '_ {
    move |e| match e.word.as_str() {
        "" => ConfigError {
            word: Word::of(key),
            ..e
        },
        _ => e,
    }
}

/// `[limits]` keys share the duplicate list with top-level keys, so they get a distinct
/// spelling there.
fn key_in_limits(key: &str) -> &str {
    match key {
        "max_clients" => "limits.max_clients",
        "install_timeout_ms" => "limits.install_timeout_ms",
        "hello_timeout_ms" => "limits.hello_timeout_ms",
        "idle_timeout_ms" => "limits.idle_timeout_ms",
        "max_stop_timeout_ms" => "limits.max_stop_timeout_ms",
        "shutdown_timeout_ms" => "limits.shutdown_timeout_ms",
        other => other,
    }
}

/// Removes a `#` comment that is not inside a string.
fn strip_comment(line: &str) -> Result<&str, Problem> {
    let mut in_string = false;
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => in_string = !in_string,
            b'#' if !in_string => return Ok(&line[..i]),
            _ => {}
        }
    }
    if in_string {
        Err(Problem::String)
    } else {
        Ok(line)
    }
}

fn parse_value(v: &str) -> Result<Value<'_>, Problem> {
    if let Some(rest) = v.strip_prefix('"') {
        return parse_string(rest).map(Value::Str);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest
            .strip_suffix(']')
            .map(Value::Array)
            .ok_or(Problem::Syntax);
    }
    parse_int(v).map(Value::Int).ok_or(Problem::Value)
}

/// The rest of a string after its opening quote: up to the closing quote, which must end
/// the value. No escapes: paths and names do not need them.
fn parse_string(rest: &str) -> Result<&str, Problem> {
    let end = rest.find('"').ok_or(Problem::String)?;
    if !rest[end + 1..].trim().is_empty() || rest[..end].contains('\\') {
        return Err(Problem::String);
    }
    Ok(&rest[..end])
}

/// Decimal or `0x` hexadecimal, with optional `_` separators.
fn parse_int(v: &str) -> Option<u64> {
    let (digits, radix) = match v.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (v, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits
        .bytes()
        .filter(|&b| b != b'_')
        .try_fold(0u64, |acc, b| {
            let d = (b as char).to_digit(radix)?;
            acc.checked_mul(u64::from(radix))?.checked_add(u64::from(d))
        })
}

/// A size: an integer, or a string with a binary suffix K, M or G.
fn parse_size(value: Value<'_>) -> Option<u64> {
    match value {
        Value::Int(n) => Some(n),
        Value::Str(s) => {
            let (number, shift) = match s.as_bytes().last()? {
                b'K' => (&s[..s.len() - 1], 10),
                b'M' => (&s[..s.len() - 1], 20),
                b'G' => (&s[..s.len() - 1], 30),
                _ => (s, 0),
            };
            parse_int(number)?.checked_mul(1 << shift)
        }
        Value::Array(_) => None,
    }
}

/// The string items of an array value: `"a", "b"` (a trailing comma is allowed).
fn array_items(inner: &str) -> impl Iterator<Item = Result<&str, Problem>> {
    inner
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let rest = item.strip_prefix('"').ok_or(Problem::Value)?;
            parse_string(rest)
        })
}

fn open_section<'a>(
    cfg: &mut Config<'a>,
    name: &'a str,
    line: u32,
) -> Result<Section, ConfigError> {
    match name {
        "limits" => Ok(Section::Limits),
        "console" => Ok(Section::Console),
        _ => {
            let repo = name.strip_prefix("repository.").ok_or(about(
                line,
                Problem::UnknownSection,
                name,
            ))?;
            check_name(repo).map_err(|_| about(line, Problem::Name, repo))?;
            if cfg.repositories.iter().any(|r| r.name == repo) {
                return Err(about(line, Problem::Duplicate, name));
            }
            let r = Repository {
                name: repo,
                dir: "",
                keys: Vec::new(),
                max_install_size: DEFAULT_MAX_INSTALL_SIZE,
                line,
            };
            cfg.repositories
                .push(r)
                .map_err(|_| about(line, Problem::TooMany, name))?;
            Ok(Section::Repository(cfg.repositories.len() - 1))
        }
    }
}

fn path(value: Value<'_>, line: u32) -> Result<&str, ConfigError> {
    let Value::Str(p) = value else {
        return Err(at(line, Problem::Value));
    };
    check_path(p).map_err(|_| at(line, Problem::Path))?;
    Ok(p)
}

fn set_top<'a>(
    cfg: &mut Config<'a>,
    key: &str,
    value: Value<'a>,
    line: u32,
) -> Result<(), ConfigError> {
    match key {
        "cgroup" => cfg.cgroup = Some(path(value, line)?),
        "console_device" => cfg.console_device = Some(path(value, line)?),
        "data_device" => cfg.data_device = Some(path(value, line)?),
        "data_mount" => cfg.data_mount = path(value, line)?,
        "data_fstype" => match value {
            Value::Str(name) if check_name(name).is_ok() => cfg.data_fstype = name,
            _ => return Err(at(line, Problem::Value)),
        },
        _ => {
            let slot = match key {
                "run_dir" => &mut cfg.run_dir,
                "data_dir" => &mut cfg.data_dir,
                "socket" => &mut cfg.socket,
                _ => return Err(at(line, Problem::UnknownKey(TOP_KEYS))),
            };
            *slot = path(value, line)?;
        }
    }
    Ok(())
}

fn set_limit(
    limits: &mut Limits,
    key: &str,
    value: Value<'_>,
    line: u32,
) -> Result<(), ConfigError> {
    let Value::Int(n) = value else {
        return Err(at(line, Problem::Value));
    };
    let bad = || at(line, Problem::Value);
    match key {
        "max_clients" => {
            limits.max_clients = u16::try_from(n)
                .ok()
                .filter(|&n| n > 0 && usize::from(n) <= MAX_CLIENTS)
                .ok_or_else(bad)?
        }
        "install_timeout_ms" => {
            limits.install_timeout_ms = u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(bad)?
        }
        "hello_timeout_ms" => {
            limits.hello_timeout_ms = u32::try_from(n)
                .ok()
                .filter(|&n| (1..=MAX_HELLO_TIMEOUT_MS).contains(&n))
                .ok_or_else(bad)?
        }
        "idle_timeout_ms" => {
            limits.idle_timeout_ms = u32::try_from(n)
                .ok()
                .filter(|&n| (1..=MAX_IDLE_TIMEOUT_MS).contains(&n))
                .ok_or_else(bad)?
        }
        // Both bounded by what a manifest may ask for one stop (`MAX_STOP_TIMEOUT_MS`).
        "max_stop_timeout_ms" | "shutdown_timeout_ms" => {
            let ms = u32::try_from(n)
                .ok()
                .filter(|&n| (1..=MAX_STOP_TIMEOUT_MS).contains(&n))
                .ok_or_else(bad)?;
            match key {
                "max_stop_timeout_ms" => limits.max_stop_timeout_ms = ms,
                _ => limits.shutdown_timeout_ms = ms,
            }
        }
        _ => return Err(at(line, Problem::UnknownKey(LIMITS_KEYS))),
    }
    Ok(())
}

fn set_repository<'a>(
    repo: &mut Repository<'a>,
    key: &str,
    value: Value<'a>,
    line: u32,
) -> Result<(), ConfigError> {
    match key {
        "dir" => repo.dir = path(value, line)?,
        "keys" => {
            let Value::Array(items) = value else {
                return Err(at(line, Problem::Value));
            };
            for item in array_items(items) {
                let key_path = item.map_err(|p| at(line, p))?;
                check_path(key_path).map_err(|_| at(line, Problem::Path))?;
                repo.keys
                    .push(key_path)
                    .map_err(|_| at(line, Problem::TooMany))?;
            }
        }
        "max_install_size" => {
            repo.max_install_size = parse_size(value)
                .filter(|&n| n > 0)
                .ok_or(at(line, Problem::Value))?;
        }
        _ => return Err(at(line, Problem::UnknownKey(REPOSITORY_KEYS))),
    }
    Ok(())
}

/// `uid.N = PERMISSIONS` or `gid.N = PERMISSIONS`, where PERMISSIONS is `"full"` or an
/// array of permission names.
fn add_console_rule(
    cfg: &mut Config<'_>,
    key: &str,
    value: Value<'_>,
    line: u32,
) -> Result<(), ConfigError> {
    let unknown = at(line, Problem::UnknownKey(CONSOLE_KEYS));
    let (kind, id) = key.split_once('.').ok_or(unknown)?;
    let id = parse_int(id)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(unknown)?;
    let peer = match kind {
        "uid" => Peer::Uid(id),
        "gid" => Peer::Gid(id),
        _ => return Err(unknown),
    };
    if cfg.console.iter().any(|r| r.peer == peer) {
        return Err(at(line, Problem::Duplicate));
    }
    let permissions = match value {
        Value::Str("full") => Permissions::ALL,
        Value::Array(items) => array_items(items).try_fold(Permissions::NONE, |acc, item| {
            let name = item.map_err(|p| at(line, p))?;
            Permissions::from_name(name)
                .map(|p| acc.union(p))
                .ok_or(about(line, Problem::Permission, name))
        })?,
        Value::Str(other) => return Err(about(line, Problem::Permission, other)),
        _ => return Err(at(line, Problem::Permission)),
    };
    cfg.console
        .push(ConsoleRule { peer, permissions })
        .map_err(|_| at(line, Problem::TooMany))
}

/// Reads and parses the configuration at `path` into `buf`, or says why not.
pub fn load<'b>(
    path: &str,
    buf: &'b mut [u8; crate::limits::MAX_CONFIG_LEN],
) -> Option<Config<'b>> {
    let text = match crate::fs::read_to_buf(path.as_bytes(), buf) {
        Ok(bytes) => match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                crate::out::warn(format_args!(
                    "nanostar: {path}: {}",
                    ConfigError::new(0, Problem::File)
                ));
                return None;
            }
        },
        Err(e) => {
            crate::out::warn(format_args!("nanostar: {path}: {e}"));
            return None;
        }
    };
    match parse(text) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            crate::out::warn(format_args!("nanostar: {path}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
