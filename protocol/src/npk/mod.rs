//! The NPK package format. The byte-level specification is `docs/npk-format.md`.

pub mod arch;
pub mod seccomp;

pub use arch::Arch;
