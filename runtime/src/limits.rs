//! Every capacity of the runtime, in one place: the format limits shared with the host
//! tools, and the runtime's own tables. A full table is an error for the caller, never a
//! panic.

pub use nanostar_protocol::limits::*;

/// Largest configuration file, in bytes (it is read into a buffer of this size).
pub const MAX_CONFIG_LEN: usize = 16 * 1024;
/// Most repositories in the configuration.
pub const MAX_REPOSITORIES: usize = 8;
/// Most console rules (`uid.N` / `gid.N` lines).
pub const MAX_CONSOLE_RULES: usize = 16;
/// Bytes buffered for one line of text output before it is written.
pub const OUTPUT_BUFFER_LEN: usize = 512;
/// Most packages over all repositories.
pub const MAX_PACKAGES: usize = 256;
/// Longest file name of a package in a repository directory.
pub const MAX_FILE_NAME_LEN: usize = 128;
/// Console clients the runtime can serve at once (the configuration may set fewer).
pub const MAX_CLIENTS: usize = 16;
/// Encoded replies queued for one client; a client that lets more pile up is dropped.
pub const OUTPUT_QUEUE_LEN: usize = 2 * MAX_WIRE_FRAME_LEN;
/// Packages mounted at once.
pub const MAX_MOUNTS_TOTAL: usize = 64;
/// Deepest directory tree `uninstall --wipe` removes.
pub const MAX_TREE_DEPTH: usize = 32;
