//! Formats that the nanostar host tools and the device runtime agree on.
//!
//! `no_std` and no allocator: every decoder borrows from a caller-owned buffer and every
//! list is bounded by a constant in [`limits`]. Decoders never panic on any input.
//!
//! - [`npk`]: the package format: header, signature, manifest, seccomp program, verity layout.
//! - [`limits`]: every capacity the device enforces, in one place.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod console;
pub mod hex;
pub mod limits;
mod names;
pub mod npk;
pub mod permissions;
pub mod version;
