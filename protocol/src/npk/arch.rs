//! CPU architecture a package is built for.

use serde::{Deserialize, Serialize};

/// The architecture of the code in a package, signed in the header.
///
/// The device refuses packages for another architecture; the seccomp program in a package
/// is compiled for exactly this architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u16)]
pub enum Arch {
    /// No machine code (a resource package of data only). Runs nowhere, mounts everywhere.
    Any = 0,
    /// 64-bit x86 (`AUDIT_ARCH_X86_64`).
    X86_64 = 1,
    /// 64-bit ARM (`AUDIT_ARCH_AARCH64`).
    Aarch64 = 2,
    /// 32-bit ARM, EABI, little endian (`AUDIT_ARCH_ARM`).
    Arm = 3,
}

impl Arch {
    /// All architectures, in wire order.
    pub const ALL: [Arch; 4] = [Arch::Any, Arch::X86_64, Arch::Aarch64, Arch::Arm];

    /// The architecture this code is compiled for: the runtime's own, which is the only
    /// one (besides [`Arch::Any`]) whose packages it runs. `None` on other machines.
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Arm)
        } else {
            None
        }
    }

    /// Whether a package built for `self` runs on this machine: data-only packages
    /// ([`Arch::Any`]) everywhere, others only on their own architecture.
    pub fn runs_here(self) -> bool {
        self == Arch::Any || Arch::native() == Some(self)
    }

    /// The header's 16-bit code for this architecture.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The architecture for a header code, if known.
    pub fn from_code(code: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.code() == code)
    }

    /// The name used on the command line and in `npk inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Any => "any",
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        }
    }

    /// Parses a name as printed by [`Arch::name`] (`armv7` is accepted for `arm`).
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "armv7" => Some(Arch::Arm),
            _ => Arch::ALL.into_iter().find(|a| a.name() == name),
        }
    }

    /// The `AUDIT_ARCH_*` value the kernel reports in `seccomp_data.arch`; `None` for `Any`.
    pub const fn audit_arch(self) -> Option<u32> {
        // From linux/audit.h: EM_* | __AUDIT_ARCH_64BIT (0x8000_0000) | __AUDIT_ARCH_LE (0x4000_0000).
        match self {
            Arch::Any => None,
            Arch::X86_64 => Some(0xC000_003E),
            Arch::Aarch64 => Some(0xC000_00B7),
            Arch::Arm => Some(0x4000_0028),
        }
    }

    /// The ELF `e_machine` value of executables for this architecture; `None` for `Any`.
    pub const fn elf_machine(self) -> Option<u16> {
        match self {
            Arch::Any => None,
            Arch::X86_64 => Some(62),
            Arch::Aarch64 => Some(183),
            Arch::Arm => Some(40),
        }
    }
}
