//! The names both requests and errors use, apart from either, so that `message` and
//! `error` do not import each other.

use serde::{Deserialize, Serialize};

use crate::version::Version;

/// An exact package. [`PackageId::check`] (in `message`) applies the manifest's name rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackageId<'a> {
    /// Package name (the manifest's rules).
    pub name: &'a str,
    /// Package version.
    pub version: Version,
}
