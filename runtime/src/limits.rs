//! Every capacity of the runtime, in one place: the format limits shared with the host
//! tools, and the runtime's own tables. A full table is an error for the caller, never a
//! panic.

pub use nanostar_protocol::limits::*;

/// Largest configuration file, in bytes (it is read into a buffer of this size).
pub const MAX_CONFIG_LEN: usize = 16 * 1024;
/// Most repositories in the configuration (the protocol's, so one `repositories` reply
/// holds them all).
pub use nanostar_protocol::limits::MAX_REPOSITORIES;
/// Bytes of the runtime's own command line kept in a copy (in `.bss`), so that a
/// container's init can blank the original and `ps` inside shows no host path. A longer
/// command line (a client's long `start -- ARGS`) is read in place.
pub const ARGS_COPY_LEN: usize = 1024;
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
/// Containers the runtime tracks at once: running ones, and stopped ones whose logs and
/// last exit are kept until the slot is needed.
pub const MAX_CONTAINERS: usize = 16;
/// Bytes of output kept per container (stdout and stderr together); older output is
/// overwritten. Rings live in `.bss`: a ring costs RAM only once its container writes.
pub const LOG_RING_LEN: usize = 16 * 1024;
/// Bytes read from one container's output pipe per loop turn, so a container that
/// writes without pause cannot keep the loop from everyone else.
pub const LOG_READ_SLICE: usize = 4 * 1024;
/// Room for the strings of one `execve`: init, arguments and environment (manifest,
/// override and the runtime's own variables), each NUL-terminated.
pub const EXEC_STRINGS_LEN: usize = 64 * 1024;
/// Bytes a verification reads into its buffer: everything before the image (the header,
/// the largest manifest and seccomp program, the padding after them, which is checked to
/// be zero). Two such buffers are static: the store's, and the one a starting container's
/// manifest is copied into.
pub const SCRATCH_LEN: usize = nanostar_protocol::npk::header::MAX_IMAGE_OFFSET;
/// Events taken per `epoll_wait`; more ready descriptors wait for the next turn.
pub const POLL_EVENTS: usize = 16;
/// Connections the kernel queues for the console socket before the loop accepts them.
pub const LISTEN_BACKLOG: i32 = 16;
/// Bytes read from one client at once (more frames wait for the next read).
pub const CLIENT_READ_LEN: usize = 4096;
/// Reads of `CLIENT_READ_LEN` from one client per loop turn (16 KiB: two install chunks);
/// what else it sent waits for the next turn, after every other ready client had its
/// turn, so one client that never stops sending (empty frames, a flood of requests)
/// cannot hold the loop.
pub const CLIENT_READS_PER_TURN: usize = 4;
/// Bytes of a passed package (an install by descriptor) copied per loop turn, so the loop
/// stays responsive while a large package is copied. Also the slice of an install whose
/// writeback is started at once, and the slice waited for per turn before its `fsync`.
pub const INSTALL_PUMP_SLICE: usize = 1 << 20;
/// The stack buffer one copy step of an install uses.
pub const INSTALL_COPY_LEN: usize = 8192;
/// Stop requests that may wait for one container at once.
pub const MAX_STOP_WAITERS: usize = 4;
/// Bytes of one line a container's output copies to `/dev/kmsg` (longer lines are cut).
pub const KMSG_RECORD_LEN: usize = 512;
/// Most words on the client's command line: room for a `start` with all `MAX_ARGS` (32)
/// container arguments after `--`, some `--env` pairs and the global options.
pub const MAX_WORDS: usize = 64;
/// How long a shutdown still waits for containers after their SIGKILL (at the end of
/// `shutdown_timeout_ms`) before it goes on without them: only a process stuck in the
/// kernel (uninterruptible I/O) outlives a SIGKILL, and a board's power-off must not wait
/// for one.
pub const SHUTDOWN_KILL_GRACE_MS: u32 = 2_000;
/// Bytes of `/proc/PID/status` read when looking for a container's app (SIGSTOP goes to
/// the app itself): `PPid` and `NSpid` come in its first lines.
pub const PROC_STATUS_READ_LEN: usize = 2048;
