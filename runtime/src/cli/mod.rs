//! The command line of the `nanostar` binary: the commands and options as the help shows
//! them (one text, read by the parser too: the help, the usage errors and the option
//! checks cannot disagree), and the runtime's own commands (`run`, `init`,
//! `check-config`); `commands` runs the client commands.
//!
//! The client side is in the submodules: `args` reads a client command's words, `commands`
//! (with `install` and `logs`) runs them over a [`connection::Connection`], `render` shows
//! the answers as text or JSON. Their words for people are in [`crate::text`], which the
//! runtime's own log lines share.
//!
//! Exit codes: 0 done, 1 the command failed or the runtime refused (a message says why),
//! 2 bad usage, 3 the runtime cannot be reached (client commands).

use core::fmt;

use heapless::Vec;
use nanostar_protocol::npk::PublicKey;

use crate::config;
use crate::limits::{MAX_CONFIG_LEN, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS, MAX_WORDS};
use crate::out::{say, warn};
use crate::store::repository::{self, Leftovers, Packages, ScanEvent};
use render::Json;

mod args;
mod commands;
pub mod connection;
mod install;
mod logs;
mod render;
#[cfg(test)]
mod tests;

/// Exit code of a usage error.
pub const USAGE: u8 = 2;

/// The commands as `nanostar help` shows them: under a heading, one a line, the word, its
/// operands (optional ones in brackets), two spaces or more, what it does. The ones under
/// the second heading are the runtime's own (no socket).
const COMMANDS: &str = "client commands:
  list                        installed packages and their containers
  inspect NAME [VERSION]      a package's manifest, signer and container
  install FILE                install an NPK into a repository
  uninstall NAME VERSION      remove a package (not mounted)
  mount NAME VERSION          mount a package's image
  umount NAME VERSION         unmount a package's image
  start NAME [VERSION]        start a container; answers once its app runs
  stop NAME [VERSION]         stop a container: SIGTERM, SIGKILL after a timeout
  restart NAME [VERSION]      stop the container if it runs, then start it
  kill NAME [VERSION] SIGNAL  send a signal to a container's app
  logs NAME [VERSION]         a container's output
  notifications               the runtime's events, until it shuts down
  shutdown                    stop every container and the runtime
the runtime's own:
  run CONFIG                  run the runtime with this configuration
  init [CONFIG]               be the board's init, PID 1 (default /etc/nanostar.conf)
  check-config CONFIG         check a configuration and the packages it finds
  help [COMMAND]              this list, or a command's usage and options
";

/// The options as the help shows them, one a line: the word and its value's name, two
/// spaces or more, the commands that take it and `:` (none: every client command), what
/// it does.
const OPTIONS: &str = "options:
  --socket PATH    the runtime's socket (default: $NANOSTAR_SOCKET, else /run/nanostar/console)
  --json           JSON output for scripts, one object a line; errors with a \"code\"
  --repo NAME      install: the repository (default: default)
  --replace        install: replace the installed package of this name and version
  --stream         install: send the bytes over the socket, not the file's descriptor
  --wipe           uninstall: also delete the package's persistent data
  --env KEY=VALUE  start, restart: add to the manifest's environment (repeatable)
  -- ARGS...       start, restart: replace the manifest's arguments
  --timeout MS     stop, restart: SIGKILL after MS (default: the manifest's stop_timeout_ms)
  --follow         logs: keep reading until the container ends
  --tail N         logs: only the last N lines
  --help           this help (also -h)
";

/// A command: a line of [`COMMANDS`].
pub struct Spec {
    /// Its word.
    pub name: &'static str,
    /// Its operands as the usage shows them, optional ones in brackets.
    pub operands: &'static str,
    /// Operands it needs at least.
    pub min: u8,
    /// Operands it takes at most.
    pub max: u8,
    /// Talks to a running runtime (takes `--socket` and `--json`).
    pub client: bool,
    /// Its line of the help.
    pub line: &'static str,
}

/// An option: a line of [`OPTIONS`].
pub struct Opt {
    /// `--timeout`.
    pub name: &'static str,
    /// `MS`; empty when it takes no value.
    pub value: &'static str,
    /// `--timeout MS`.
    pub usage: &'static str,
    /// `stop, restart`; empty: every client command.
    pub commands: &'static str,
    /// Its line of the help.
    pub line: &'static str,
}

/// A help line's two columns (split at the first two spaces after the indent).
fn columns(line: &'static str) -> (&'static str, &'static str) {
    let line = line.trim_start_matches(' ');
    let at = line
        .as_bytes()
        .windows(2)
        .position(|w| w == b"  ")
        .unwrap_or(line.len());
    let (left, right) = line.split_at(at);
    (left, right.trim_start_matches(' '))
}

/// The `i`-th command.
fn spec(mut i: usize) -> Option<Spec> {
    let mut client = true;
    for line in COMMANDS.lines() {
        if !line.starts_with(' ') {
            // A heading: the first is the client's.
            client = line.starts_with('c');
            continue;
        }
        if i > 0 {
            i -= 1;
            continue;
        }
        let (left, _) = columns(line);
        let (name, operands) = left.split_once(' ').unwrap_or((left, ""));
        let (mut min, mut max) = (0, 0);
        for w in operands.split(' ') {
            max += 1;
            min += u8::from(!w.starts_with('['));
        }
        if operands.is_empty() {
            (min, max) = (0, 0);
        }
        return Some(Spec {
            name,
            operands,
            min,
            max,
            client,
            line,
        });
    }
    None
}

/// The `i`-th option.
fn opt(i: usize) -> Option<Opt> {
    let line = OPTIONS.lines().nth(i + 1)?;
    let (usage, help) = columns(line);
    let (name, value) = usage.split_once(' ').unwrap_or((usage, ""));
    let commands = match help.split_once(':') {
        Some((c, _))
            if c.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b',' || b == b' ') =>
        {
            c
        }
        _ => "",
    };
    Some(Opt {
        name,
        value,
        usage,
        commands,
        line,
    })
}

impl Opt {
    /// Whether `spec` takes this option.
    pub fn applies(&self, spec: &Spec) -> bool {
        self.name == "--help"
            || spec.client
                && (self.commands.is_empty()
                    || self
                        .commands
                        .split(',')
                        .any(|c| c.trim_start_matches(' ') == spec.name))
    }
}

/// Every command.
fn specs() -> impl Iterator<Item = Spec> {
    (0..).map_while(spec)
}

/// Every option.
fn options() -> impl Iterator<Item = Opt> {
    (0..).map_while(opt)
}

/// The command called `name`.
pub fn command(name: &str) -> Option<Spec> {
    specs().find(|c| c.name == name)
}

/// The option called `name` (`-h` is `--help`).
pub fn option(name: &str) -> Option<Opt> {
    let name = if name == "-h" { "--help" } else { name };
    options().find(|o| o.name == name)
}

/// Whether a word is an option (or `--`) rather than an operand.
pub fn is_option(word: &str) -> bool {
    word.len() > 1 && word.starts_with('-')
}

/// Runs the command given by `args` (without the program name).
pub fn run<'a>(args: impl Iterator<Item = &'a [u8]>) -> u8 {
    let mut words: Vec<&str, MAX_WORDS> = Vec::new();
    for arg in args {
        let Ok(word) = core::str::from_utf8(arg) else {
            return usage_error(false, &"an argument is not UTF-8");
        };
        if words.push(word).is_err() {
            return usage_error(false, &format_args!("at most {MAX_WORDS} arguments"));
        }
    }
    // The options before `--`: everything after it is a container's.
    let own = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let json = words[..own].contains(&"--json");
    let help = words[..own].iter().any(|w| matches!(*w, "--help" | "-h"));
    let Some(at) = find_command(&words[..own]) else {
        return match words.as_slice() {
            ["--version" | "-V"] => {
                say(format_args!("nanostar {}", env!("CARGO_PKG_VERSION")));
                0
            }
            // The kernel starts init without arguments.
            [] if rustix::process::getpid().is_init() => {
                crate::pid1::run(crate::pid1::DEFAULT_CONFIG)
            }
            _ if help => print_help(),
            _ => usage_error(json, &"no command given; see nanostar help"),
        };
    };
    let word = words[at];
    let Some(spec) = command(word) else {
        return unknown_command(json, word);
    };
    if help && spec.name != "help" {
        return print_command_help(&spec);
    }
    if spec.client {
        return commands::run(&words, at, &spec);
    }
    // The runtime's own commands take operands only, and print no JSON.
    let json = false;
    let mut operands: Vec<&str, 2> = Vec::new();
    for (j, w) in words.iter().enumerate() {
        if j == at || matches!(*w, "--help" | "-h") {
            continue;
        }
        if is_option(w) {
            return option_error(json, w, &spec);
        }
        if operands.push(w).is_err() {
            return extra_operand(json, &spec, w);
        }
    }
    if let Some(code) = check_count(json, &spec, &operands) {
        return code;
    }
    match (spec.name, operands.as_slice()) {
        ("help", []) => print_help(),
        ("help", [name]) => match command(name) {
            Some(spec) => print_command_help(&spec),
            None => unknown_command(json, name),
        },
        ("check-config", [path]) => check_config(path.as_bytes()),
        ("run", [path]) => run_runtime(path),
        ("init", [path]) => crate::pid1::run(path),
        _ => crate::pid1::run(crate::pid1::DEFAULT_CONFIG),
    }
}

/// Where the command is: the first word that is neither an option nor an option's value.
pub fn find_command(words: &[&str]) -> Option<usize> {
    let mut i = 0;
    while i < words.len() {
        if !is_option(words[i]) {
            return Some(i);
        }
        i += match option(words[i]) {
            Some(o) if !o.value.is_empty() => 2,
            _ => 1,
        };
    }
    None
}

/// Says a usage problem (on stderr, or as a JSON object on stdout) and returns [`USAGE`].
pub fn usage_error(json: bool, message: &dyn fmt::Display) -> u8 {
    render::report(json, "usage", None, message);
    USAGE
}

/// `unknown command "frob"; see nanostar help`, with the closest command if one is close.
fn unknown_command(json: bool, word: &str) -> u8 {
    let (a, near, b) = match closest(word) {
        Some(near) => (" (did you mean ", near, "?)"),
        None => ("", "", ""),
    };
    usage_error(
        json,
        &format_args!(
            "unknown command \"{}\"{a}{near}{b}; see nanostar help",
            Json(word)
        ),
    )
}

/// The command nearest to `word`, if at most two edits away (one for short words).
fn closest(word: &str) -> Option<&'static str> {
    let limit = if word.len() <= 4 { 1 } else { 2 };
    let (d, name) = specs()
        .map(|c| (distance(word.as_bytes(), c.name.as_bytes()), c.name))
        .min_by_key(|(d, _)| *d)?;
    (d <= limit).then_some(name)
}

/// Edit distance (Levenshtein) of two short words; words over 32 bytes are far from all.
fn distance(a: &[u8], b: &[u8]) -> usize {
    if a.len() > 32 || b.len() > 32 {
        return usize::MAX;
    }
    let mut row = [0usize; 33];
    for (j, cell) in row.iter_mut().enumerate() {
        *cell = j;
    }
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// An option that is unknown, or not one of this command's.
pub fn option_error(json: bool, word: &str, spec: &Spec) -> u8 {
    let owners = match option(word) {
        None => {
            return usage_error(
                json,
                &format_args!(
                    "unknown option \"{}\"; see nanostar help {}",
                    Json(word),
                    spec.name
                ),
            );
        }
        Some(o) if o.commands.is_empty() => "the client commands",
        Some(o) => o.commands,
    };
    usage_error(
        json,
        &format_args!("{} takes no {word} (an option of {owners})", spec.name),
    )
}

/// A word after the last operand the command takes.
pub fn extra_operand(json: bool, spec: &Spec, word: &str) -> u8 {
    let takes = if spec.max == 0 {
        "no operands"
    } else {
        spec.operands
    };
    usage_error(
        json,
        &format_args!("unexpected \"{}\": {} takes {takes}", Json(word), spec.name),
    )
}

/// Checks the number of operands: `start needs a package NAME`, or one too many.
pub fn check_count(json: bool, spec: &Spec, operands: &[&str]) -> Option<u8> {
    if let Some(extra) = operands.get(usize::from(spec.max)) {
        return Some(extra_operand(json, spec, extra));
    }
    if operands.len() >= usize::from(spec.min) {
        return None;
    }
    // The required operands are the ones without brackets, in order.
    let missing = spec
        .operands
        .split(' ')
        .filter(|w| !w.starts_with('['))
        .nth(operands.len())
        .unwrap_or("");
    let a = if missing == "NAME" { "a package" } else { "a" };
    let code = usage_error(json, &format_args!("{} needs {a} {missing}", spec.name));
    if !json {
        warn(format_args!("usage: {}", UsageLine(spec)));
    }
    Some(code)
}

/// `nanostar [--socket PATH] [--json] stop NAME [VERSION] [--timeout MS]`.
struct UsageLine<'a>(&'a Spec);

impl fmt::Display for UsageLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = self.0;
        let common = if spec.client {
            "[--socket PATH] [--json] "
        } else {
            ""
        };
        write!(f, "nanostar {common}{} {}", spec.name, spec.operands)?;
        for o in options() {
            if !o.commands.is_empty() && o.applies(spec) {
                write!(f, " [{}]", o.usage)?;
            }
        }
        Ok(())
    }
}

/// `nanostar help`: one line per command, the common options, the environment, the exit
/// codes.
fn print_help() -> u8 {
    say(format_args!(
        "usage: nanostar [--socket PATH] [--json] COMMAND [OPERANDS] [OPTIONS]\n\
         {COMMANDS}{OPTIONS}\
         environment: NANOSTAR_SOCKET, the socket when --socket is not given\n\
         exit codes: 0 done, 1 refused (the message says why), 2 bad usage, 3 unreachable\n\
         nanostar help COMMAND, or nanostar COMMAND --help: its usage and options"
    ));
    0
}

/// `nanostar help COMMAND`: its usage line, its line of the help, its options' lines.
fn print_command_help(spec: &Spec) -> u8 {
    say(format_args!("usage: {}\n{}", UsageLine(spec), spec.line));
    for o in options() {
        if o.applies(spec) {
            say(format_args!("{}", o.line));
        }
    }
    0
}

/// `nanostar run CONFIG`: serves until SIGTERM, SIGINT or a shutdown request.
fn run_runtime(path: &str) -> u8 {
    let mut buf = [0u8; MAX_CONFIG_LEN];
    let Some(cfg) = config::load(path, &mut buf) else {
        return 1;
    };
    match crate::server::run(&cfg) {
        Ok(()) => 0,
        Err(e) => {
            warn(format_args!("nanostar: cannot start: {e}"));
            1
        }
    }
}

/// `nanostar check-config FILE`: parses the file and every key file it names, then prints
/// a summary with every package each repository holds (verified as at start-up, without
/// removing anything); on the first configuration problem prints `FILE: line N: problem`
/// and fails. Broken packages are listed but do not fail the check: the runtime skips them.
fn check_config(path: &[u8]) -> u8 {
    let shown = core::str::from_utf8(path).unwrap_or("<config>");
    let mut buf = [0u8; MAX_CONFIG_LEN];
    let Some(cfg) = config::load(shown, &mut buf) else {
        return 1;
    };
    // Every key file first: a broken one is a configuration error.
    let mut all_keys: Vec<Vec<PublicKey, MAX_REPOSITORY_KEYS>, MAX_REPOSITORIES> = Vec::new();
    for repo in &cfg.repositories {
        let mut keys = Vec::new();
        for key in &repo.keys {
            match crate::fs::read_public_key(key.as_bytes()) {
                // Cannot overflow: the parser bounds the list by the same constant.
                Ok(k) => keys.push(k).unwrap_or(()),
                Err(e) => {
                    warn(format_args!(
                        "nanostar: {shown}: repository {} (line {}): key {key}: {e}",
                        repo.name, repo.line
                    ));
                    return 1;
                }
            }
        }
        // Cannot overflow: the parser bounds the repositories by the same constant.
        all_keys.push(keys).unwrap_or(());
    }
    say(format_args!("{shown}: ok"));
    say(format_args!(
        "  run_dir {}, data_dir {}, socket {}",
        cfg.run_dir, cfg.data_dir, cfg.socket
    ));
    say(format_args!(
        "  console rules: {}, max clients {}, install timeout {} ms",
        cfg.console.len(),
        cfg.limits.max_clients,
        cfg.limits.install_timeout_ms
    ));
    say(format_args!(
        "  stop timeouts at most {} ms, shutdown kills after {} ms",
        cfg.limits.max_stop_timeout_ms, cfg.limits.shutdown_timeout_ms
    ));
    if let Some(root) = cfg.cgroup {
        say(format_args!("  containers' cgroups under {root}"));
    }
    if let Some(device) = cfg.console_device {
        say(format_args!("  console also on {device}"));
    }
    if let Some(device) = cfg.data_device {
        say(format_args!(
            "  as PID 1: data disk {device} ({}) at {}",
            cfg.data_fstype, cfg.data_mount
        ));
    }
    let mut packages = Packages::new();
    let mut scratch = [0u8; repository::SCRATCH_LEN];
    for (index, (repo, keys)) in cfg.repositories.iter().zip(&all_keys).enumerate() {
        let mode = if keys.is_empty() {
            "development mode: no signature check, no verity"
        } else {
            "signed packages only"
        };
        say(format_args!(
            "  repository {}: {} ({} keys, {mode}), max install {} bytes",
            repo.name,
            repo.dir,
            keys.len(),
            repo.max_install_size
        ));
        let mut path = crate::layout::Path::of(&[repo.dir]);
        let scanned = path
            .as_mut()
            .map_err(|e| *e)
            .and_then(|p| p.c_str())
            .and_then(|dir| {
                repository::scan(
                    index as u8,
                    dir,
                    keys,
                    Leftovers::Keep,
                    &mut packages,
                    &mut scratch,
                    &mut |event| match event {
                        ScanEvent::Added(p) => {
                            say(format_args!("    {} {} ({})", p.name, p.version, p.file))
                        }
                        ScanEvent::Skipped { file, why } => {
                            say(format_args!("    {file}: skipped: {why}"))
                        }
                        ScanEvent::RemovedTemp(_) => {}
                    },
                )
            });
        if let Err(e) = scanned {
            say(format_args!(
                "    directory not readable: {} (the runtime creates it at start)",
                crate::text::ErrnoText(e.raw_os_error() as u16)
            ));
        }
        let verified = packages
            .iter()
            .filter(|p| usize::from(p.repository) == index)
            .count();
        say(format_args!("    {verified} packages verified"));
    }
    say(format_args!("  {} packages in all", packages.len()));
    0
}
