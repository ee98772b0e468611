//! Console permissions: what a console peer (a user on the device, or a container with a
//! console) may ask the runtime to do.

use serde::{Deserialize, Serialize};

use crate::names;

/// Permission names, by bit position. Append only: a bit's position is its meaning.
pub const PERMISSION_NAMES: [&str; 13] = [
    "list",
    "inspect",
    "install",
    "uninstall",
    "mount",
    "umount",
    "start",
    "stop",
    "kill",
    "logs",
    "notifications",
    "shutdown",
    "ident",
];

/// A set of console permissions, one bit per entry of [`PERMISSION_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Permissions(pub u32);

impl Permissions {
    /// No permission at all.
    pub const NONE: Permissions = Permissions(0);
    /// Every permission this version knows.
    pub const ALL: Permissions = Permissions(names::known_mask(PERMISSION_NAMES.len()) as u32);

    /// The permission with this name, alone.
    pub fn from_name(name: &str) -> Option<Permissions> {
        names::bit_of(&PERMISSION_NAMES, name).map(|b| Permissions(1 << b))
    }

    /// Both sets together.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// `true` if every permission in `other` is in `self`.
    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// `true` if no bit outside [`PERMISSION_NAMES`] is set.
    pub const fn is_known(self) -> bool {
        self.0 & !Permissions::ALL.0 == 0
    }

    /// The names of the permissions in the set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        names::names_of(&PERMISSION_NAMES, u64::from(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn names_round_trip() {
        let p = Permissions::from_name("list")
            .unwrap()
            .union(Permissions::from_name("kill").unwrap());
        assert_eq!(p.names().collect::<Vec<_>>(), ["list", "kill"]);
        assert!(Permissions::ALL.contains(p) && p.is_known());
        assert!(!Permissions(1 << 31).is_known());
        assert_eq!(Permissions::from_name("root"), None);
    }
}
