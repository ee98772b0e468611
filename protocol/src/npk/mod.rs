//! The NPK package format. The byte-level specification is `docs/npk-format.md`.
//!
//! A package is: a fixed [`header`] (signed), the postcard [`manifest`], the compiled
//! [`seccomp`] program, zero padding to 4 KiB, the squashfs image, and its dm-[`verity`]
//! hash tree.

pub mod arch;
pub mod capabilities;
pub mod header;
pub mod keys;
pub mod manifest;
pub mod seccomp;
pub mod verity;

pub use arch::Arch;
pub use header::{
    ContentError, Contents, HeaderError, HeaderFields, Trust, UnverifiedHeader, VerifiedHeader,
    VerityParams,
};
pub use keys::{KeyId, PublicKey};
pub use manifest::Manifest;
