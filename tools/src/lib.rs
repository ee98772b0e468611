//! Host tools for nanostar: the library behind the `npk` command.
//!
//! - [`manifest`]: the TOML manifest, lowered to the protocol's and validated.
//! - [`image`]: the squashfs image of a package root, built in pure Rust.
//! - [`seccomp`]: the seccomp policy compiled to classic BPF for the package's architecture.
//! - [`verity`]: the dm-verity hash tree.
//! - [`package`]: whole packages: pack, open, check.
//! - [`keys`]: Ed25519 key files.

pub mod image;
pub mod keys;
pub mod manifest;
pub mod output;
pub mod package;
pub mod seccomp;
pub mod verity;
