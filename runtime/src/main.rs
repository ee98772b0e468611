//! `nanostar`: the device runtime. One static binary, `no_std`, no libc, no allocator, no
//! threads (DESIGN.md decision 1).
//!
//! Device targets (`.cargo/config.toml` sets `--cfg nanostar_device` for them) get our own
//! `_start` and no std. Host builds (`cargo build`, `cargo test` on the workspace) are an
//! ordinary std program around the same code, so workspace-wide builds work; the
//! integration tests run the real device build for x86_64 (`runtime/tests/`).
//!
//! - [`sys`]: the only unsafe code: entry point, mem functions, raw syscalls.
//! - [`config`]: the configuration file.
//! - [`cli`]: the command line.
//! - [`out`]: buffered text output.
//! - [`limits`]: every capacity, in one place.
#![cfg_attr(nanostar_device, no_std)]
#![cfg_attr(nanostar_device, no_main)]
#![deny(unsafe_code)]

mod cli;
mod config;
mod fs;
mod limits;
mod out;
mod repository;
mod sys;

/// Called by the entry point with the process's arguments in place; returns the exit code.
pub fn start() -> u8 {
    cli::run(sys::args())
}

/// Host builds: the same program under std.
#[cfg(not(nanostar_device))]
fn main() {
    std::process::exit(i32::from(start()))
}
