//! Every capacity the device enforces, in one place.
//!
//! The host tools validate against the same constants, so a package that packs is a
//! package that loads. Changing one of these changes what the device accepts: treat them
//! as part of the format.

/// Longest package name, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_NAME_LEN: usize = 64;
/// Longest absolute path in a manifest (init, mount targets, bind sources, resource dirs).
pub const MAX_PATH_LEN: usize = 256;
/// Most arguments after `init`.
pub const MAX_ARGS: usize = 32;
/// Longest single argument, in bytes.
pub const MAX_ARG_LEN: usize = 512;
/// Most environment variables a manifest sets.
pub const MAX_ENV: usize = 32;
/// Longest environment variable name.
pub const MAX_ENV_KEY_LEN: usize = 64;
/// Longest environment variable value.
pub const MAX_ENV_VALUE_LEN: usize = 512;
/// Most mounts per manifest.
pub const MAX_MOUNTS: usize = 24;
/// Most supplementary groups.
pub const MAX_SUPPL_GROUPS: usize = 16;
/// Most rlimits (one per resource; there are 16 resources).
pub const MAX_RLIMITS: usize = 16;
/// Longest network namespace name to join (a file name under `/run/netns`).
pub const MAX_NETNS_NAME_LEN: usize = 64;
/// Most syscalls named in a manifest's seccomp allow list.
pub const MAX_SECCOMP_RULES: usize = 64;
/// Most values one seccomp argument rule may list.
pub const MAX_SECCOMP_ARG_VALUES: usize = 16;
/// Longest syscall name.
pub const MAX_SYSCALL_NAME_LEN: usize = 32;
/// Largest opaque `custom` section, in bytes.
pub const MAX_CUSTOM_LEN: usize = 2048;
/// Largest encoded manifest, in bytes. The device reads a manifest into a buffer this big.
pub const MAX_MANIFEST_LEN: usize = 16 * 1024;
/// Most seccomp instructions: the kernel's `BPF_MAXINSNS`.
pub const MAX_SECCOMP_INSTRUCTIONS: usize = 4096;
/// Most trusted public keys per repository.
pub const MAX_REPOSITORY_KEYS: usize = 8;
