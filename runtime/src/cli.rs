//! The command line of the `nanostar` binary.
//!
//! Exit codes: 0 success, 1 the command failed (a message says why), 2 bad usage.

use heapless::Vec;
use nanostar_protocol::npk::PublicKey;

use crate::config;
use crate::limits::{MAX_CONFIG_LEN, MAX_PATH_LEN, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS};
use crate::repository::{self, Leftovers, Packages, ScanEvent};
use crate::{errln, outln};

const USAGE: &str = "usage:
  nanostar run CONFIG                      start the runtime
  nanostar init [CONFIG]                   be the board's init (PID 1): mount /dev, /proc,
                                           /sys, cgroup2, /run, the data disk, run the
                                           runtime, power off at its end (default CONFIG
                                           /etc/nanostar.conf; the default without arguments
                                           as PID 1)
  nanostar check-config CONFIG             check a configuration and the packages it finds
  nanostar [--socket PATH] [--json] COMMAND
    list | inspect NAME [VERSION] | install FILE [--repo NAME] [--stream]
    uninstall NAME VERSION [--wipe] | mount NAME VERSION | umount NAME VERSION
    start NAME [VERSION] [--env KEY=VALUE]... [-- ARGS...]
    stop NAME [--timeout MS] | kill NAME SIGNAL | logs NAME [--follow]
    shutdown | notifications
  nanostar --version";

/// Most command-line words: room for a `start` with all `MAX_ARGS` (32) container
/// arguments after `--`, some `--env` pairs and the global options.
const MAX_ARGS: usize = 64;

/// Runs the command given by `args` (without the program name).
pub fn run<'a>(args: impl Iterator<Item = &'a [u8]>) -> u8 {
    let mut words: Vec<&str, MAX_ARGS> = Vec::new();
    for arg in args {
        let Ok(word) = core::str::from_utf8(arg) else {
            return usage();
        };
        if words.push(word).is_err() {
            return usage();
        }
    }
    match words.as_slice() {
        ["--version" | "-V"] => {
            outln!("nanostar {}", env!("CARGO_PKG_VERSION"));
            0
        }
        ["--help" | "-h"] => {
            outln!("{USAGE}");
            0
        }
        ["check-config", path] => check_config(path.as_bytes()),
        ["run", path] => run_runtime(path),
        ["init"] => crate::pid1::run(crate::pid1::DEFAULT_CONFIG),
        ["init", path] => crate::pid1::run(path),
        // The kernel starts init without arguments.
        [] if rustix::process::getpid().is_init() => crate::pid1::run(crate::pid1::DEFAULT_CONFIG),
        _ => crate::commands::run(&words).unwrap_or_else(usage),
    }
}

fn usage() -> u8 {
    errln!("{USAGE}");
    2
}

/// Reads and parses the configuration at `path` into `buf`, or says why not.
pub(crate) fn load_config<'b>(
    path: &str,
    buf: &'b mut [u8; MAX_CONFIG_LEN],
) -> Option<config::Config<'b>> {
    let text = match crate::fs::read_to_buf(path.as_bytes(), buf) {
        Ok(bytes) => match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                errln!(
                    "nanostar: {path}: {}",
                    config::ConfigError {
                        line: 0,
                        problem: config::Problem::File
                    }
                );
                return None;
            }
        },
        Err(e) => {
            errln!("nanostar: {path}: {e}");
            return None;
        }
    };
    match config::parse(text) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            errln!("nanostar: {path}: {e}");
            None
        }
    }
}

/// `nanostar run CONFIG`: serves until SIGTERM, SIGINT or a shutdown request.
fn run_runtime(path: &str) -> u8 {
    let mut buf = [0u8; MAX_CONFIG_LEN];
    let Some(cfg) = load_config(path, &mut buf) else {
        return 1;
    };
    match crate::server::run(&cfg) {
        Ok(()) => 0,
        Err(e) => {
            errln!("nanostar: cannot start: {e}");
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
    let Some(cfg) = load_config(shown, &mut buf) else {
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
                    errln!(
                        "nanostar: {shown}: repository {} (line {}): key {key}: {e}",
                        repo.name,
                        repo.line
                    );
                    return 1;
                }
            }
        }
        // Cannot overflow: the parser bounds the repositories by the same constant.
        all_keys.push(keys).unwrap_or(());
    }
    outln!("{shown}: ok");
    outln!(
        "  run_dir {}, data_dir {}, socket {}",
        cfg.run_dir,
        cfg.data_dir,
        cfg.socket
    );
    outln!(
        "  console rules: {}, max clients {}, install timeout {} ms",
        cfg.console.len(),
        cfg.limits.max_clients,
        cfg.limits.install_timeout_ms
    );
    if let Some(root) = cfg.cgroup {
        outln!("  containers' cgroups under {root}");
    }
    if let Some(device) = cfg.console_device {
        outln!("  console also on {device}");
    }
    if let Some(device) = cfg.data_device {
        outln!(
            "  as PID 1: data disk {device} ({}) at {}",
            cfg.data_fstype,
            cfg.data_mount
        );
    }
    let mut packages = Packages::new();
    let mut scratch = [0u8; repository::SCRATCH_LEN];
    for (index, (repo, keys)) in cfg.repositories.iter().zip(&all_keys).enumerate() {
        let mode = if keys.is_empty() {
            "development mode: no signature check, no verity"
        } else {
            "signed packages only"
        };
        outln!(
            "  repository {}: {} ({} keys, {mode}), max install {} bytes",
            repo.name,
            repo.dir,
            keys.len(),
            repo.max_install_size
        );
        let mut path = [0u8; MAX_PATH_LEN + 1];
        let scanned = crate::fs::c_path(repo.dir, &mut path)
            .map_err(|_| rustix::io::Errno::NAMETOOLONG)
            .and_then(|dir| {
                repository::scan(
                    index as u8,
                    dir,
                    keys,
                    Leftovers::Keep,
                    &mut packages,
                    &mut scratch,
                    &mut |event| match event {
                        ScanEvent::Added(p) => outln!("    {} {} ({})", p.name, p.version, p.file),
                        ScanEvent::Skipped { file, why } => outln!("    {file}: skipped: {why}"),
                        ScanEvent::RemovedTemp(_) => {}
                    },
                )
            });
        if let Err(e) = scanned {
            outln!(
                "    directory not readable: {} (the runtime creates it at start)",
                crate::fs::errno_text(e)
            );
        }
        let verified = packages
            .iter()
            .filter(|p| usize::from(p.repository) == index)
            .count();
        outln!("    {verified} packages verified");
    }
    outln!("  {} packages in all", packages.len());
    0
}
