//! Linux capabilities a container keeps, as a bitset indexed by capability number.

use serde::{Deserialize, Serialize};

use crate::names;

/// Capability names by number (linux/capability.h, up to `CAP_LAST_CAP` of Linux 6.1).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities a container's app keeps (bounding, permitted, effective, inheritable
/// and ambient); every other capability is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// No capability: the default.
    pub const NONE: Capabilities = Capabilities(0);

    /// The capability with this name (`CAP_NET_RAW`), alone.
    pub fn from_name(name: &str) -> Option<Capabilities> {
        names::bit_of(&CAPABILITY_NAMES, name).map(|b| Capabilities(1 << b))
    }

    /// Both sets together.
    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// `true` if the capability numbered `cap` is in the set.
    pub const fn has(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }

    /// `true` if no bit beyond the known capabilities is set.
    pub const fn is_known(self) -> bool {
        self.0 & !names::known_mask(CAPABILITY_NAMES.len()) == 0
    }

    /// The names of the capabilities in the set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        names::names_of(&CAPABILITY_NAMES, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        assert_eq!(
            Capabilities::from_name("CAP_NET_RAW"),
            Some(Capabilities(1 << 13))
        );
        assert_eq!(
            Capabilities::from_name("CAP_SYS_ADMIN"),
            Some(Capabilities(1 << 21))
        );
        assert_eq!(
            Capabilities::from_name("CAP_CHECKPOINT_RESTORE"),
            Some(Capabilities(1 << 40))
        );
        assert!(Capabilities(1 << 40).is_known() && !Capabilities(1 << 41).is_known());
        assert!(Capabilities(1 << 13).has(13) && !Capabilities(1 << 13).has(64));
    }
}
