//! The command line of the `nanostar` binary.
//!
//! Exit codes: 0 success, 1 the command failed (a message says why), 2 bad usage.

use heapless::Vec;
use nanostar_protocol::npk::PublicKey;

use crate::config;
use crate::limits::{MAX_CONFIG_LEN, MAX_PATH_LEN, MAX_REPOSITORIES, MAX_REPOSITORY_KEYS};
use crate::repository::{self, Leftovers, Packages, ScanEvent};
use crate::{errln, outln};

const USAGE: &str = "usage: nanostar check-config FILE | nanostar --version";

/// Runs the command given by `args` (without the program name).
pub fn run<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> u8 {
    match (args.next(), args.next(), args.next()) {
        (Some(b"--version" | b"-V"), None, None) => {
            outln!("nanostar {}", env!("CARGO_PKG_VERSION"));
            0
        }
        (Some(b"--help" | b"-h"), None, None) => {
            outln!("{USAGE}");
            0
        }
        (Some(b"check-config"), Some(path), None) => check_config(path),
        _ => {
            errln!("{USAGE}");
            2
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
    let text = match crate::fs::read_to_buf(path, &mut buf) {
        Ok(bytes) => match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                errln!(
                    "nanostar: {shown}: {}",
                    config::ConfigError {
                        line: 0,
                        problem: config::Problem::File
                    }
                );
                return 1;
            }
        },
        Err(e) => {
            errln!("nanostar: {shown}: {e}");
            return 1;
        }
    };
    let cfg = match config::parse(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            errln!("nanostar: {shown}: {e}");
            return 1;
        }
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
