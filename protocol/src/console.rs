//! The console protocol: how a client (the `nanostar` CLI, a host tool, a container with a
//! console) talks to the runtime over a stream socket. The byte-level specification is
//! `docs/protocol.md`.
//!
//! Two layers:
//!
//! - [`frame`]: COBS framing. Every frame ends with `0x00` and holds no other zero byte, so a
//!   reader finds the next frame after any garbage (a serial line, a client that wrote
//!   half a message). [`FrameDecoder`] takes bytes as `read()` returns them and yields
//!   whole frames from a caller-owned buffer; [`encode_frame`] and [`Message::encode`]
//!   write into a caller-owned buffer.
//! - [`message`]: one postcard [`Message`] per frame, decoded zero-copy: strings and bulk
//!   bytes borrow from the frame. [`Message::decode`] also checks every length and name,
//!   so what it returns is safe to use as a file or device-mapper name.
//!
//! Wire compatibility: postcard encodes struct fields in order and enum variants by index,
//! so fields and variants are append-only, and every append bumps [`PROTOCOL_VERSION`].
//! The handshake's first fields are frozen forever, so peers of any two versions can
//! always tell each other which version they speak.

pub mod error;
pub mod frame;
pub mod ids;
pub mod message;

pub use error::{Error, MountStep, PackageError, SetupStep, Table, Violation};
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use message::{
    ContainerInfo, ContainerState, EncodeError, ExitStatus, Hello, Inspected, Message,
    MessageError, Notification, PackageId, PackageInfo, Reply, RepositoryInfo, Request,
    VersionMismatch, Welcome, peek_hello_version, peek_request_id,
};

/// The protocol version this build speaks. Bumped by every appended variant or field.
///
/// - 1: the first.
/// - 2: `Repositories`, `Install` (announced), `TailLogs`; `Ended` and
///   `Repositories` replies; `GaveUp`; `PackageError::{ArchMismatch, NotAsAnnounced}`.
/// - 3: `Error::Mount` with its `MountStep`.
/// - 4: `PackageError::NotAFile`.
/// - 5: `Table::LogReads`.
pub const PROTOCOL_VERSION: u16 = 5;

/// The oldest client version this build's runtime accepts. A runtime that accepts an
/// older client answers it only with messages that version knows.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;

#[cfg(test)]
mod tests;
