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
/// Most repositories in a runtime's configuration (and in a `repositories` reply).
pub const MAX_REPOSITORIES: usize = 8;

// Console protocol (`docs/protocol.md`). Per connection the runtime holds one receive
// buffer of `MAX_FRAME_LEN` and one send buffer of `MAX_WIRE_FRAME_LEN`, so these set the
// RAM a client costs.

/// Largest piece of bulk data in one console message: an install chunk, a piece of the
/// manifest in an inspect reply, a piece of a log. Two pages, so the runtime writes an
/// install in whole pages.
pub const MAX_CHUNK_LEN: usize = 8 * 1024;
/// Largest console message: the postcard bytes of one frame before COBS. A chunk plus room
/// for the message around it (under 300 bytes today; the rest is for appended fields).
/// Tests prove every message at its limits fits.
pub const MAX_FRAME_LEN: usize = MAX_CHUNK_LEN + 512;
/// Largest frame on the wire: `MAX_FRAME_LEN` after COBS (at most one byte per 254, plus
/// one) and the `0x00` delimiter.
pub const MAX_WIRE_FRAME_LEN: usize = MAX_FRAME_LEN + MAX_FRAME_LEN / 254 + 2;
/// Most packages in one `list` reply; a client pages through more with a cursor.
pub const MAX_LIST_PAGE: usize = 32;
/// Longest client identification in the handshake (printable ASCII, for the runtime's log).
pub const MAX_CLIENT_NAME_LEN: usize = 64;
/// Most bytes of all arguments, environment keys and values of one `start` override
/// together (each one is also bounded by the manifest's limits).
pub const MAX_START_OVERRIDE_LEN: usize = 4096;
