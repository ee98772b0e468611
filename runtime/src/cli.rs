//! The command line of the `nanostar` binary.
//!
//! Exit codes: 0 success, 1 the command failed (a message says why), 2 bad usage.

use crate::config;
use crate::limits::MAX_CONFIG_LEN;
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
/// a summary; on the first problem prints `FILE: line N: problem` and fails.
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
    for repo in &cfg.repositories {
        for key in &repo.keys {
            if let Err(e) = crate::fs::read_public_key(key.as_bytes()) {
                errln!(
                    "nanostar: {shown}: repository {} (line {}): key {key}: {e}",
                    repo.name,
                    repo.line
                );
                return 1;
            }
        }
    }
    outln!("{shown}: ok");
    outln!(
        "  run_dir {}, data_dir {}, socket {}",
        cfg.run_dir,
        cfg.data_dir,
        cfg.socket
    );
    for repo in &cfg.repositories {
        let mode = if repo.keys.is_empty() {
            "development mode: no signature check, no verity"
        } else {
            "signed packages only"
        };
        outln!(
            "  repository {}: {} ({} keys, {mode}), max install {} bytes",
            repo.name,
            repo.dir,
            repo.keys.len(),
            repo.max_install_size
        );
    }
    outln!(
        "  console rules: {}, max clients {}, install timeout {} ms",
        cfg.console.len(),
        cfg.limits.max_clients,
        cfg.limits.install_timeout_ms
    );
    0
}
