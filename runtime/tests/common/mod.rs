//! Shared by the integration tests: the real device builds of `nanostar`.
//!
//! The device builds go to their own target directory, so a test can run cargo while the
//! outer `cargo test` holds the workspace's lock.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    "armv7-unknown-linux-gnueabihf",
];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the runtime for every device target once; returns the binaries' paths.
pub fn device_binaries() -> &'static [PathBuf] {
    static BINARIES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let target_dir = workspace().join("target/device-tests");
        TARGETS
            .iter()
            .map(|target| {
                let out = Command::new(env!("CARGO"))
                    .current_dir(workspace())
                    .env("CARGO_TARGET_DIR", &target_dir)
                    .args(["build", "--release", "-p", "nanostar", "--bin", "nanostar", "--target", target])
                    .output()
                    .expect("run cargo");
                assert!(
                    out.status.success(),
                    "building for {target} failed (is the target installed? `rustup target add {target}`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                target_dir.join(target).join("release/nanostar")
            })
            .collect()
    })
}

/// The x86_64 device build, which runs on this host.
pub fn x86_64_binary() -> &'static Path {
    &device_binaries()[0]
}
