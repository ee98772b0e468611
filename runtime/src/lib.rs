//! The nanostar device runtime as a library; `src/main.rs` is the `nanostar` binary. One
//! static binary, `no_std`, no libc, no allocator, no threads (docs/design.md, decision 1).
//!
//! Device targets (`.cargo/config.toml` sets `--cfg nanostar_device` for them) get our own
//! `_start` and no std. Host builds (`cargo build`, `cargo test` on the workspace) are an
//! ordinary std program around the same code, so workspace-wide builds work; the
//! integration tests run the real device build for x86_64 (`runtime/tests/`).
//!
//! - [`sys`]: the only unsafe code: entry point, mem functions, raw syscalls, ioctls.
//! - [`config`]: the configuration file.
//! - [`store`]: the package store: verified packages in repository directories,
//!   power-loss-safe installs, loop + dm-verity + squashfs mounts.
//! - [`server`]: the event loop serving the console; [`container`]: containers.
//! - [`layout`]: the device's paths; [`time`]: monotonic deadlines.
//! - [`pid1`]: the board's init.
//! - [`cli`]: the command line, and the client commands that talk to a running runtime.
//! - [`text`]: words for people about the runtime's answers (client and log lines).
//! - [`out`], [`fs`]: buffered text output, small file reads.
//! - [`limits`]: every capacity, in one place.
#![cfg_attr(nanostar_device, no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod container;
pub mod fs;
pub mod layout;
pub mod limits;
pub mod out;
pub mod pid1;
pub mod server;
pub mod store;
pub mod sys;
pub mod text;
pub mod time;

/// Called by the entry point with the process's arguments in place; returns the exit code.
pub fn start() -> u8 {
    cli::run(sys::args())
}
