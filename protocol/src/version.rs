//! Package versions (`major.minor.patch`) and the requirements resource mounts place on them.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A package version: three decimal numbers, compared in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

/// Why a version or requirement string does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionError {
    /// Not three dot-separated decimal numbers.
    Malformed,
    /// A number does not fit 32 bits.
    Overflow,
    /// A requirement has no comparator, or more than [`MAX_COMPARATORS`].
    ComparatorCount,
    /// A comparator's operator is not one of `= > >= < <= ^ ~`.
    Operator,
}

impl Version {
    /// Makes a version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `major.minor.patch` (no leading `v`, no pre-release or build suffix).
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let mut parts = s.split('.');
        let mut next = || parse_number(parts.next().ok_or(VersionError::Malformed)?);
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(VersionError::Malformed);
        }
        Ok(v)
    }
}

fn parse_number(s: &str) -> Result<u32, VersionError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(VersionError::Malformed);
    }
    s.bytes().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u32::from(b - b'0')))
            .ok_or(VersionError::Overflow)
    })
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// How a comparator relates a candidate version to its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `=1.2.3`: exactly.
    Exact,
    /// `>1.2.3`.
    Greater,
    /// `>=1.2.3`.
    GreaterEq,
    /// `<1.2.3`.
    Less,
    /// `<=1.2.3`.
    LessEq,
    /// `^1.2.3`: same left-most non-zero part, not older (cargo's default).
    Caret,
    /// `~1.2.3`: same major and minor, not older.
    Tilde,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Exact => "=",
            Op::Greater => ">",
            Op::GreaterEq => ">=",
            Op::Less => "<",
            Op::LessEq => "<=",
            Op::Caret => "^",
            Op::Tilde => "~",
        }
    }
}

/// One `op version` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparator {
    /// The relation.
    pub op: Op,
    /// The operand.
    pub version: Version,
}

impl Comparator {
    /// `true` if `v` satisfies this comparator.
    pub fn matches(&self, v: &Version) -> bool {
        let o = &self.version;
        match self.op {
            Op::Exact => v == o,
            Op::Greater => v > o,
            Op::GreaterEq => v >= o,
            Op::Less => v < o,
            Op::LessEq => v <= o,
            Op::Tilde => v >= o && v.major == o.major && v.minor == o.minor,
            Op::Caret => {
                v >= o
                    && if o.major > 0 {
                        v.major == o.major
                    } else if o.minor > 0 {
                        v.major == 0 && v.minor == o.minor
                    } else {
                        v.major == 0 && v.minor == 0 && v.patch == o.patch
                    }
            }
        }
    }
}

/// Most comparators in one requirement (`>=1.0.0, <2.0.0` is two).
pub const MAX_COMPARATORS: usize = 2;

/// A version requirement: every comparator must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReq {
    /// The conditions, all of which must hold.
    pub comparators: heapless::Vec<Comparator, MAX_COMPARATORS>,
}

impl VersionReq {
    /// Parses `OP VERSION[, OP VERSION]`; a bare version means `^VERSION`, as in cargo.
    pub fn parse(s: &str) -> Result<VersionReq, VersionError> {
        let mut comparators = heapless::Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (op, rest) = split_op(part)?;
            let c = Comparator {
                op,
                version: Version::parse(rest.trim())?,
            };
            comparators
                .push(c)
                .map_err(|_| VersionError::ComparatorCount)?;
        }
        Ok(VersionReq { comparators })
    }

    /// `true` if `v` satisfies every comparator (an empty requirement matches nothing:
    /// decoders reject it, see [`VersionReq::is_valid`]).
    pub fn matches(&self, v: &Version) -> bool {
        !self.comparators.is_empty() && self.comparators.iter().all(|c| c.matches(v))
    }

    /// A decoded requirement must have at least one comparator.
    pub fn is_valid(&self) -> bool {
        !self.comparators.is_empty()
    }
}

fn split_op(s: &str) -> Result<(Op, &str), VersionError> {
    // Longest operators first so ">=" is not read as ">".
    const OPS: [(&str, Op); 7] = [
        (">=", Op::GreaterEq),
        ("<=", Op::LessEq),
        ("=", Op::Exact),
        (">", Op::Greater),
        ("<", Op::Less),
        ("^", Op::Caret),
        ("~", Op::Tilde),
    ];
    for (sym, op) in OPS {
        if let Some(rest) = s.strip_prefix(sym) {
            return Ok((op, rest));
        }
    }
    match s.bytes().next() {
        Some(b) if b.is_ascii_digit() => Ok((Op::Caret, s)),
        Some(_) => Err(VersionError::Operator),
        None => Err(VersionError::Malformed),
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.comparators.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}", c.op.symbol(), c.version)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn parse_versions() {
        assert_eq!(Version::parse("1.2.3"), Ok(Version::new(1, 2, 3)));
        assert_eq!(Version::parse("0.0.0"), Ok(Version::new(0, 0, 0)));
        for bad in [
            "", "1", "1.2", "1.2.3.4", "01.2.3", "1.2.x", "v1.2.3", "1..3", "-1.2.3", " 1.2.3",
        ] {
            assert_eq!(Version::parse(bad), Err(VersionError::Malformed), "{bad}");
        }
        assert_eq!(
            Version::parse("4294967296.0.0"),
            Err(VersionError::Overflow)
        );
        assert_eq!(Version::new(1, 10, 0).to_string(), "1.10.0");
        assert!(Version::new(1, 10, 0) > Version::new(1, 9, 9));
    }

    #[test]
    fn requirements() {
        let m = |req: &str, v: &str| {
            VersionReq::parse(req)
                .unwrap()
                .matches(&Version::parse(v).unwrap())
        };
        assert!(m(">=1.0.0", "1.0.0") && m(">=1.0.0", "3.0.0") && !m(">=1.0.0", "0.9.9"));
        assert!(m(">=1.0.0, <2.0.0", "1.5.0") && !m(">=1.0.0, <2.0.0", "2.0.0"));
        assert!(m("1.2.0", "1.9.0") && !m("1.2.0", "2.0.0") && !m("1.2.0", "1.1.9"));
        assert!(m("^0.2.1", "0.2.5") && !m("^0.2.1", "0.3.0"));
        assert!(m("^0.0.3", "0.0.3") && !m("^0.0.3", "0.0.4"));
        assert!(m("~1.2.3", "1.2.9") && !m("~1.2.3", "1.3.0"));
        assert!(m("=1.2.3", "1.2.3") && !m("=1.2.3", "1.2.4"));
        assert!(m("<=1.2.3", "1.2.3") && m(">1.2.3", "1.2.4") && m("<1.2.3", "1.2.2"));
        assert_eq!(
            VersionReq::parse(">=1.0.0, <2.0.0, <3.0.0"),
            Err(VersionError::ComparatorCount)
        );
        assert_eq!(VersionReq::parse("!1.0.0"), Err(VersionError::Operator));
        assert_eq!(VersionReq::parse(""), Err(VersionError::Malformed));
        assert_eq!(
            VersionReq::parse(">=1.0.0, <2.0.0").unwrap().to_string(),
            ">=1.0.0, <2.0.0"
        );
        let empty = VersionReq {
            comparators: heapless::Vec::new(),
        };
        assert!(!empty.matches(&Version::new(1, 0, 0)) && !empty.is_valid());
    }
}
