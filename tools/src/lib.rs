//! Host tools for nanostar: the library behind the `npk` and `nanostar-board` commands.
//!
//! - [`manifest`]: the TOML manifest, lowered to the protocol's and validated.
//! - [`containment`]: the capabilities `npk pack` refuses unless allowed by name.
//! - [`image`]: the squashfs image of a package root, built in pure Rust.
//! - [`seccomp`]: the seccomp policy compiled to classic BPF for the package's architecture.
//! - [`verity`]: the dm-verity hash tree.
//! - [`package`]: whole packages: pack, open, check.
//! - [`root_check`]: what `npk pack` checks in a root: init, its interpreter, its libraries.
//! - [`elf`]: the bounded ELF reader behind those checks.
//! - [`keys`]: Ed25519 key files.
//! - [`initramfs`]: newc cpio archives for booting a board.
//! - [`board`]: QEMU boards: kernel, boot and the guest's verdict (`nanostar-board`).
//! - [`soak`]: random work from concurrent clients against a live runtime, then a check
//!   that it holds what it held before (`nanostar-soak`).
//! - `testing` (feature `testing`): what the integration tests share: device builds and
//!   a console client.
//!
//! No unsafe code (only tests call libc directly, to make the files and processes they
//! check).
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod board;
pub mod containment;
pub mod elf;
pub mod image;
pub mod initramfs;
pub mod keys;
pub mod manifest;
pub mod output;
pub mod package;
pub mod root_check;
pub mod seccomp;
pub mod soak;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verity;
