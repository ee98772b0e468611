//! The messages: one postcard [`Message`] per frame.
//!
//! A connection starts with the client's [`Hello`] and the runtime's [`Welcome`] (or
//! [`VersionMismatch`], then close). After that the client sends requests, each with an
//! id it chooses, and the runtime answers each with replies carrying that id; a client
//! that subscribed also gets notifications, which carry no id, in between.
//!
//! Everything borrows from the frame: names, repository names, arguments, install chunks,
//! manifest and log bytes. [`Message::decode`] checks every length against
//! [`crate::limits`] and every package and repository name against the manifest's rules,
//! and [`Message::encode`] refuses what `decode` would refuse, so the two round-trip.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::error::{Error, PackageError, Table};
pub use super::ids::PackageId;
use crate::limits::*;
use crate::npk::manifest::{EnvVar, Problem, RESERVED_ENV_PREFIX, check_name};
use crate::permissions::Permissions;
use crate::version::Version;

/// `EINVAL`, what a client older than version 4 is told for `PackageError::NotAFile`
/// (the same number on every Linux architecture).
const EINVAL: u16 = 22;
/// `EBUSY`, what a client older than version 5 is told for a second log read on its
/// connection.
const EBUSY: u16 = 16;
/// Wire index of [`Message::Hello`]; frozen.
const TAG_HELLO: u8 = 0;
/// Wire index of [`Message::Request`]; frozen.
const TAG_REQUEST: u8 = 3;

/// One frame's content.
// No allocator, so no boxing: a decoded message is a stack value (the largest variants,
// a full list page, are about 3 KiB) that lives for one request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Client → runtime, first frame. Frozen: index 0, `protocol_version` first.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Runtime → client: the handshake is accepted. Frozen: index 1.
    Welcome(Welcome),
    /// Runtime → client: the handshake is refused; the runtime closes. Frozen: index 2.
    VersionMismatch(VersionMismatch),
    /// Client → runtime.
    Request {
        /// Chosen by the client and echoed in every reply; clients start at 1 (0 marks
        /// replies about the connection rather than a request).
        id: u32,
        /// What to do.
        #[serde(borrow)]
        request: Request<'a>,
    },
    /// Runtime → client: an answer to the request with this id.
    Reply {
        /// The request's id, or 0 for an error about the connection (an undecodable or
        /// oversize frame, a full client table).
        id: u32,
        /// The answer.
        #[serde(borrow)]
        reply: Reply<'a>,
    },
    /// Runtime → subscribed client: something happened.
    #[serde(borrow)]
    Notification(Notification<'a>),
}

/// The client's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// The protocol version the client speaks ([`super::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Who the client is, for the runtime's log (printable ASCII, may be empty).
    pub client: &'a str,
}

/// The runtime's acceptance of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version the rest of the connection uses: the client's.
    pub protocol_version: u16,
    /// What this peer may do, so a client can hide what it may not.
    pub permissions: Permissions,
}

/// The runtime's refusal of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMismatch {
    /// The newest version the runtime speaks.
    pub runtime: u16,
    /// The oldest client version the runtime accepts.
    pub oldest: u16,
}

/// One installed package, as `list` and `inspect` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo<'a> {
    /// Which package.
    #[serde(borrow)]
    pub package: PackageId<'a>,
    /// The repository it is installed in.
    pub repository: &'a str,
    /// Whether its image is mounted.
    pub mounted: bool,
    /// Its container, when this version runs or ran since the runtime started.
    pub container: Option<ContainerInfo>,
}

/// What a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Not running; `last_exit` says how it ended.
    Stopped,
    /// Being set up; not yet running its app.
    Starting,
    /// Running its app.
    Running,
    /// Asked to stop; waiting for it to exit (SIGKILL when the timeout passes).
    Stopping,
    /// Exited; started again after the restart policy's delay.
    Restarting,
}

/// A container's state, as `list` and `inspect` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// What it is doing.
    pub state: ContainerState,
    /// Its init's pid as the runtime sees it; 0 when not running.
    pub pid: u32,
    /// Milliseconds since it started; 0 when not running.
    pub uptime_ms: u64,
    /// How its app ended the last time, if it did.
    pub last_exit: Option<ExitStatus>,
    /// Restarts by the restart policy since the last start by request.
    pub restarts: u32,
}

/// What a client asks the runtime to do. Append-only.
// No allocator, so no boxing: a decoded message is a stack value (the largest variants,
// a full list page, are about 3 KiB) that lives for one request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// One page of installed packages, in (name, version) order, starting after `after`
    /// (from the first with `None`). Reply: [`Reply::Packages`].
    List {
        /// The last package of the previous page.
        #[serde(borrow)]
        after: Option<PackageId<'a>>,
    },
    /// One package's state and a piece of its manifest. Reply: [`Reply::Inspected`].
    Inspect {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the newest installed.
        version: Option<Version>,
        /// Where in the encoded manifest the returned piece starts.
        manifest_offset: u32,
    },
    /// Starts an install. With `fd`, the NPK comes as a file descriptor (`SCM_RIGHTS`) with
    /// this frame's bytes, and the reply is the result; without, the reply is
    /// [`Reply::InstallAccepted`] and `size` bytes follow in [`Request::InstallChunk`]s.
    InstallBegin {
        /// Target repository (the manifest's rules for names).
        repository: &'a str,
        /// The NPK's length in bytes.
        size: u64,
        /// Whether an fd carries the NPK instead of chunks.
        fd: bool,
    },
    /// The next bytes of the install with this id. No reply unless it fails.
    InstallChunk {
        /// At most [`MAX_CHUNK_LEN`] bytes.
        #[serde(serialize_with = "bytes")]
        data: &'a [u8],
    },
    /// All bytes are sent: verify and install. Reply: [`Reply::Installed`].
    InstallEnd,
    /// Drop the install with this id and everything written for it. Reply: [`Reply::Ok`].
    InstallAbort,
    /// Removes a package (it must not be mounted). Reply: [`Reply::Ok`].
    Uninstall {
        /// Which package.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// Also delete the package's persistent data directory.
        wipe: bool,
    },
    /// Mounts a package's image. Reply: [`Reply::Ok`].
    #[serde(borrow)]
    Mount(PackageId<'a>),
    /// Unmounts a package's image (its container must not run). Reply: [`Reply::Ok`].
    #[serde(borrow)]
    Umount(PackageId<'a>),
    /// Stops every container, unmounts everything and exits. Reply: [`Reply::Ok`].
    Shutdown,
    /// Sends notifications to this connection from now on. Reply: [`Reply::Ok`].
    Subscribe,
    /// Stops notifications to this connection. Reply: [`Reply::Ok`].
    Unsubscribe,
    /// Starts a package's container. Reply: [`Reply::Ok`] once its app runs (after
    /// `execve`), or the error that stopped its setup.
    Start {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the newest installed.
        version: Option<Version>,
        /// Replaces the manifest's arguments after `init`.
        #[serde(borrow)]
        args: Option<Vec<&'a str, MAX_ARGS>>,
        /// Added to the manifest's environment; a key it sets too is replaced.
        #[serde(borrow)]
        env: Vec<EnvVar<'a>, MAX_ENV>,
    },
    /// SIGTERM, then SIGKILL after the timeout. Reply: [`Reply::Stopped`] once it exited.
    Stop {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the one running under this name.
        version: Option<Version>,
        /// Grace period; `None` = the manifest's `stop_timeout_ms`.
        timeout_ms: Option<u32>,
    },
    /// Sends a signal to the container's app. Reply: [`Reply::Ok`].
    Kill {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the one running under this name.
        version: Option<Version>,
        /// Signal number, 1..=64.
        signal: u8,
    },
    /// The container's log ring. Replies: [`Reply::Log`]s, then [`Reply::LogEnd`].
    Logs {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the newest installed.
        version: Option<Version>,
        /// Keep sending new output until the connection closes (or the container's
        /// log is dropped from the runtime's table).
        follow: bool,
    },
    /// The configured repositories. Reply: [`Reply::Repositories`].
    Repositories,
    /// Starts an install of the package the client names (read from the file's header
    /// and manifest), so that a duplicate is refused before any byte is sent. Otherwise
    /// as [`Request::InstallBegin`]; the end of the install checks that the package is
    /// the one announced ([`crate::console::PackageError::NotAsAnnounced`]).
    Install {
        /// Target repository (the manifest's rules for names).
        repository: &'a str,
        /// The NPK's length in bytes.
        size: u64,
        /// Whether an fd carries the NPK instead of chunks.
        fd: bool,
        /// The package's name and version, as its manifest says.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// Replace an installed package of the same name and version (it must not run):
        /// the new file takes the old one's place in one rename.
        replace: bool,
    },
    /// The container's log from its last `lines` lines. Replies as for
    /// [`Request::Logs`]; with `follow`, the pieces end with [`Reply::Ended`] when the
    /// container ends.
    TailLogs {
        /// Package name.
        name: &'a str,
        /// Package version; `None` = the newest installed.
        version: Option<Version>,
        /// Keep sending new output until the container ends.
        follow: bool,
        /// Only the last this many lines of the ring; `None` = all of it.
        lines: Option<u32>,
    },
}

/// The runtime's answer to a request. Append-only.
// No allocator, so no boxing: a decoded message is a stack value (the largest variants,
// a full list page, are about 3 KiB) that lives for one request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<'a> {
    /// Done.
    Ok,
    /// Failed; nothing changed (an install leaves no file behind).
    #[serde(borrow)]
    Error(Error<'a>),
    /// One page of `list`.
    Packages {
        /// At most [`MAX_LIST_PAGE`] packages.
        #[serde(borrow)]
        packages: Vec<PackageInfo<'a>, MAX_LIST_PAGE>,
        /// More packages follow: ask again with the last one as `after`.
        more: bool,
    },
    /// The answer to `inspect`.
    #[serde(borrow)]
    Inspected(Inspected<'a>),
    /// Send the chunks.
    InstallAccepted,
    /// Bytes of the install written so far; sent now and then, a client may ignore it.
    InstallProgress {
        /// Bytes received.
        received: u64,
    },
    /// The install is complete; this is what was installed.
    #[serde(borrow)]
    Installed(PackageId<'a>),
    /// A piece of a container's log.
    Log {
        /// Bytes lost since the previous piece because the ring wrapped.
        dropped: u64,
        /// At most [`MAX_CHUNK_LEN`] bytes of output.
        #[serde(serialize_with = "bytes")]
        data: &'a [u8],
    },
    /// No more log pieces for this request.
    LogEnd,
    /// The container stopped (the answer to `stop`); this is how its app ended.
    Stopped(ExitStatus),
    /// The configured repositories (the answer to [`Request::Repositories`]).
    Repositories {
        /// In the configuration's order.
        #[serde(borrow)]
        repositories: Vec<RepositoryInfo<'a>, MAX_REPOSITORIES>,
    },
    /// The container whose log is followed ended this way; no more pieces follow.
    Ended(ExitStatus),
}

/// One configured repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryInfo<'a> {
    /// Its name (the manifest's rules).
    pub name: &'a str,
    /// The ids of the keys it trusts; empty = it takes unsigned packages (and mounts
    /// without verity).
    pub keys: Vec<[u8; 8], MAX_REPOSITORY_KEYS>,
    /// How many packages it holds.
    pub packages: u32,
}

/// One package's state and a piece of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected<'a> {
    /// The package.
    #[serde(borrow)]
    pub package: PackageInfo<'a>,
    /// Size of the NPK file in bytes.
    pub size: u64,
    /// Id of the key that signed it; `None` for an unsigned package.
    pub key: Option<[u8; 8]>,
    /// Length of the whole encoded manifest.
    pub manifest_len: u32,
    /// Where `manifest` starts in it (the request's offset).
    pub manifest_offset: u32,
    /// At most [`MAX_CHUNK_LEN`] bytes of the manifest. When `manifest_offset +
    /// manifest.len() == manifest_len` the client has it all and decodes it with
    /// [`crate::npk::Manifest::decode`]; otherwise it asks again from there.
    #[serde(serialize_with = "bytes")]
    pub manifest: &'a [u8],
}

/// How a container's app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(u8),
}

/// What the runtime tells subscribed clients. Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notification<'a> {
    /// A package was installed.
    Installed {
        /// Which.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// Where.
        repository: &'a str,
    },
    /// A package was removed.
    #[serde(borrow)]
    Uninstalled(PackageId<'a>),
    /// A package's image was mounted.
    #[serde(borrow)]
    Mounted(PackageId<'a>),
    /// A package's image was unmounted.
    #[serde(borrow)]
    Umounted(PackageId<'a>),
    /// The runtime is shutting down; the connection closes soon.
    ShuttingDown,
    /// A container started.
    Started {
        /// Which.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// Its init's pid, as the runtime sees it.
        pid: u32,
    },
    /// A container's app ended.
    Exited {
        /// Which.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// How.
        status: ExitStatus,
    },
    /// The kernel killed a process of the container for memory (`memory.events`).
    #[serde(borrow)]
    OutOfMemory(PackageId<'a>),
    /// The restart policy gave up: the container ended again after its last allowed
    /// restart (or for good), and stays stopped.
    GaveUp {
        /// Which.
        #[serde(borrow)]
        package: PackageId<'a>,
        /// Restarts made before giving up.
        restarts: u32,
        /// How its app ended the last time.
        status: ExitStatus,
    },
}

/// Why bytes are not a valid message, or a message is not valid to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Not a postcard encoding of a message (or a list over its bound, or bad UTF-8).
    Malformed,
    /// Bytes follow the message in the frame.
    TrailingBytes,
    /// A name that must not be empty is.
    Empty,
    /// A string or byte field longer than its limit in [`crate::limits`].
    TooLong,
    /// A character not allowed there (names, environment keys, NUL anywhere).
    Character,
    /// An environment variable with the runtime's reserved `NANOSTAR_` prefix.
    Reserved,
    /// The same environment key twice.
    Duplicate,
    /// An offset or length that contradicts another field.
    Range,
}

/// Why a message cannot be written as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message breaks a rule [`Message::decode`] checks.
    Invalid(MessageError),
    /// Its encoding is longer than [`MAX_FRAME_LEN`].
    TooLarge,
    /// The output buffer is too short ([`MAX_WIRE_FRAME_LEN`] is always enough).
    BufferFull,
}

impl<'a> Message<'a> {
    /// Decodes one frame's content (as [`super::FrameDecoder`] yields it) and checks it.
    pub fn decode(frame: &'a [u8]) -> Result<Message<'a>, MessageError> {
        let (message, rest) =
            postcard::take_from_bytes::<Message<'a>>(frame).map_err(|_| MessageError::Malformed)?;
        if !rest.is_empty() {
            return Err(MessageError::TrailingBytes);
        }
        message.check()?;
        Ok(message)
    }

    /// Checks the message and writes it as one whole frame (COBS, then `0x00`) into
    /// `out`, returning the used part: the bytes to write to the socket.
    pub fn encode<'o>(&self, out: &'o mut [u8]) -> Result<&'o [u8], EncodeError> {
        self.check().map_err(EncodeError::Invalid)?;
        let len = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(
            self,
            postcard::ser_flavors::Size::default(),
        )
        .map_err(|_| EncodeError::TooLarge)?;
        if len > MAX_FRAME_LEN {
            return Err(EncodeError::TooLarge);
        }
        match postcard::to_slice_cobs(self, out) {
            Ok(used) => Ok(used),
            Err(_) => Err(EncodeError::BufferFull),
        }
    }

    /// The permission a peer needs to send this message: none for the handshake.
    pub fn permission(&self) -> Permissions {
        match self {
            Message::Request { request, .. } => request.permission(),
            _ => Permissions::NONE,
        }
    }

    /// Checks every rule the postcard types cannot express.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Message::Hello(hello) => {
                text(hello.client, MAX_CLIENT_NAME_LEN)?;
                if hello.client.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    Ok(())
                } else {
                    Err(MessageError::Character)
                }
            }
            Message::Welcome(_) | Message::VersionMismatch(_) => Ok(()),
            Message::Request { request, .. } => request.check(),
            Message::Reply { reply, .. } => reply.check(),
            Message::Notification(n) => n.check(),
        }
    }
}

impl<'a> Message<'a> {
    /// This message as a peer that speaks `version` can read it: what that version does
    /// not have becomes its nearest older meaning (`Mount` errors a plain `Io`, `Ended`
    /// a plain `LogEnd`, `ArchMismatch` the older `WrongArch`, `NotAFile` an `Io(EINVAL)`,
    /// a full `LogReads` an `Io(EBUSY)`), or is not sent at all (`None`: a
    /// notification that version does not know). The runtime passes every message for a
    /// client through this, so an accepted older client never sees an unknown index.
    pub fn for_version(self, version: u16) -> Option<Message<'a>> {
        if version >= 5 {
            return Some(self);
        }
        let message = match self {
            Message::Reply {
                id,
                reply: Reply::Error(Error::Full(Table::LogReads)),
            } => Message::Reply {
                id,
                reply: Reply::Error(Error::Io(EBUSY)),
            },
            other => other,
        };
        if version >= 4 {
            return Some(message);
        }
        let message = match message {
            Message::Reply {
                id,
                reply: Reply::Error(Error::BadPackage(PackageError::NotAFile)),
            } => Message::Reply {
                id,
                reply: Reply::Error(Error::Io(EINVAL)),
            },
            other => other,
        };
        if version >= 3 {
            return Some(message);
        }
        let message = match message {
            Message::Reply {
                id,
                reply: Reply::Error(Error::Mount { errno, .. }),
            } => Message::Reply {
                id,
                reply: Reply::Error(Error::Io(errno)),
            },
            other => other,
        };
        if version >= 2 {
            return Some(message);
        }
        match message {
            Message::Reply {
                id,
                reply: Reply::Ended(_),
            } => Some(Message::Reply {
                id,
                reply: Reply::LogEnd,
            }),
            Message::Reply {
                id,
                reply: Reply::Error(Error::BadPackage(PackageError::ArchMismatch { .. })),
            } => Some(Message::Reply {
                id,
                reply: Reply::Error(Error::BadPackage(PackageError::WrongArch)),
            }),
            Message::Notification(Notification::GaveUp { .. }) => None,
            other => Some(other),
        }
    }
}

/// Reads only the frozen start of a `Hello` frame: its protocol version. The runtime calls
/// it before [`Message::decode`], so a client of any other version (whose `Hello` may have
/// more fields) gets a [`VersionMismatch`] and not a decode error. `None` if the frame
/// does not start like a `Hello`.
pub fn peek_hello_version(frame: &[u8]) -> Option<u16> {
    match frame.split_first() {
        Some((&TAG_HELLO, rest)) => postcard::take_from_bytes::<u16>(rest).ok().map(|v| v.0),
        _ => None,
    }
}

/// Reads only the id of a request frame, so the runtime can answer a request it cannot
/// decode (or is too new for it) under the right id. `None` if it is not a request.
pub fn peek_request_id(frame: &[u8]) -> Option<u32> {
    match frame.split_first() {
        Some((&TAG_REQUEST, rest)) => postcard::take_from_bytes::<u32>(rest).ok().map(|v| v.0),
        _ => None,
    }
}

// Permission bits, by position in `crate::permissions::PERMISSION_NAMES` (tested).
const LIST: Permissions = Permissions(1 << 0);
const INSPECT: Permissions = Permissions(1 << 1);
const INSTALL: Permissions = Permissions(1 << 2);
const UNINSTALL: Permissions = Permissions(1 << 3);
const MOUNT: Permissions = Permissions(1 << 4);
const UMOUNT: Permissions = Permissions(1 << 5);
const START: Permissions = Permissions(1 << 6);
const STOP: Permissions = Permissions(1 << 7);
const KILL: Permissions = Permissions(1 << 8);
const LOGS: Permissions = Permissions(1 << 9);
const NOTIFICATIONS: Permissions = Permissions(1 << 10);
const SHUTDOWN: Permissions = Permissions(1 << 11);

impl Request<'_> {
    /// The one permission this request needs.
    pub const fn permission(&self) -> Permissions {
        match self {
            Request::List { .. } => LIST,
            Request::Inspect { .. } => INSPECT,
            Request::InstallBegin { .. }
            | Request::Install { .. }
            | Request::InstallChunk { .. }
            | Request::InstallEnd
            | Request::InstallAbort => INSTALL,
            Request::Uninstall { .. } => UNINSTALL,
            Request::Mount(_) => MOUNT,
            Request::Umount(_) => UMOUNT,
            Request::Shutdown => SHUTDOWN,
            Request::Subscribe => NOTIFICATIONS,
            // Turning notifications off is always allowed.
            Request::Unsubscribe => Permissions::NONE,
            Request::Start { .. } => START,
            Request::Stop { .. } => STOP,
            Request::Kill { .. } => KILL,
            Request::Logs { .. } | Request::TailLogs { .. } => LOGS,
            Request::Repositories => LIST,
        }
    }

    /// Checks every rule the postcard types cannot express.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Request::List { after } => after.as_ref().map_or(Ok(()), PackageId::check),
            Request::Inspect {
                name,
                manifest_offset,
                ..
            } => {
                name_rule(name)?;
                within(*manifest_offset as usize, MAX_MANIFEST_LEN)
            }
            Request::InstallBegin { repository, .. } => name_rule(repository),
            Request::Install {
                repository,
                package,
                ..
            } => {
                name_rule(repository)?;
                package.check()
            }
            Request::InstallChunk { data } => short(data, MAX_CHUNK_LEN),
            Request::InstallEnd
            | Request::InstallAbort
            | Request::Shutdown
            | Request::Repositories
            | Request::Subscribe
            | Request::Unsubscribe => Ok(()),
            Request::Uninstall { package, .. } => package.check(),
            Request::Mount(package) | Request::Umount(package) => package.check(),
            Request::Start {
                name, args, env, ..
            } => {
                name_rule(name)?;
                check_override(args.as_deref().unwrap_or_default(), env)
            }
            Request::Stop { name, .. }
            | Request::Kill { name, .. }
            | Request::Logs { name, .. }
            | Request::TailLogs { name, .. } => name_rule(name),
        }
    }
}

impl Reply<'_> {
    /// Checks every rule the postcard types cannot express.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Reply::Error(Error::Busy { used_by }) => used_by.check(),
            Reply::Error(Error::ResourceMissing { name }) => name_rule(name),
            Reply::Error(Error::NetnsMissing { name }) => text(name, MAX_NETNS_NAME_LEN),
            Reply::Error(Error::BindSourceMissing { path }) => text(path, MAX_PATH_LEN),
            Reply::Packages { packages, .. } => packages.iter().try_for_each(PackageInfo::check),
            Reply::Inspected(i) => i.check(),
            Reply::Installed(package) => package.check(),
            Reply::Log { data, .. } => short(data, MAX_CHUNK_LEN),
            Reply::Repositories { repositories } => {
                repositories.iter().try_for_each(|r| name_rule(r.name))
            }
            Reply::Ok
            | Reply::Ended(_)
            | Reply::Error(_)
            | Reply::InstallAccepted
            | Reply::InstallProgress { .. }
            | Reply::LogEnd
            | Reply::Stopped(_) => Ok(()),
        }
    }
}

impl Notification<'_> {
    /// Checks every rule the postcard types cannot express.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Notification::Installed {
                package,
                repository,
            } => {
                package.check()?;
                name_rule(repository)
            }
            Notification::Uninstalled(p)
            | Notification::Mounted(p)
            | Notification::Umounted(p)
            | Notification::OutOfMemory(p)
            | Notification::Started { package: p, .. }
            | Notification::Exited { package: p, .. }
            | Notification::GaveUp { package: p, .. } => p.check(),
            Notification::ShuttingDown => Ok(()),
        }
    }
}

impl PackageId<'_> {
    /// The name follows the manifest's rules.
    pub fn check(&self) -> Result<(), MessageError> {
        name_rule(self.name)
    }
}

impl PackageInfo<'_> {
    /// Package and repository names follow the manifest's rules.
    pub fn check(&self) -> Result<(), MessageError> {
        self.package.check()?;
        name_rule(self.repository)
    }
}

impl Inspected<'_> {
    /// Names are valid and the manifest piece lies inside the manifest.
    pub fn check(&self) -> Result<(), MessageError> {
        self.package.check()?;
        short(self.manifest, MAX_CHUNK_LEN)?;
        let end = (self.manifest_offset as usize).saturating_add(self.manifest.len());
        within(self.manifest_len as usize, MAX_MANIFEST_LEN)?;
        within(end, self.manifest_len as usize)
    }
}

/// Package and repository names: they become file and device-mapper names.
fn name_rule(name: &str) -> Result<(), MessageError> {
    check_name(name).map_err(|p| match p {
        Problem::Empty => MessageError::Empty,
        Problem::TooLong => MessageError::TooLong,
        _ => MessageError::Character,
    })
}

/// Free text: bounded, no NUL (it may end up in argv or envp).
fn text(s: &str, max: usize) -> Result<(), MessageError> {
    short(s.as_bytes(), max)?;
    if s.bytes().any(|b| b == 0) {
        return Err(MessageError::Character);
    }
    Ok(())
}

fn short(bytes: &[u8], max: usize) -> Result<(), MessageError> {
    if bytes.len() > max {
        return Err(MessageError::TooLong);
    }
    Ok(())
}

fn within(value: usize, max: usize) -> Result<(), MessageError> {
    if value > max {
        return Err(MessageError::Range);
    }
    Ok(())
}

/// The `start` override: each string within the manifest's limits, keys like the
/// manifest's, none reserved or twice, and all of it within [`MAX_START_OVERRIDE_LEN`].
fn check_override(args: &[&str], env: &[EnvVar<'_>]) -> Result<(), MessageError> {
    let mut total = 0usize;
    for arg in args {
        text(arg, MAX_ARG_LEN)?;
        total += arg.len();
    }
    for (i, var) in env.iter().enumerate() {
        text(var.key, MAX_ENV_KEY_LEN)?;
        text(var.value, MAX_ENV_VALUE_LEN)?;
        let key = var.key.as_bytes();
        let first_ok = key
            .first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok || !key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(if key.is_empty() {
                MessageError::Empty
            } else {
                MessageError::Character
            });
        }
        if var.key.starts_with(RESERVED_ENV_PREFIX) {
            return Err(MessageError::Reserved);
        }
        if env.iter().take(i).any(|other| other.key == var.key) {
            return Err(MessageError::Duplicate);
        }
        total += key.len() + var.value.len();
    }
    within(total, MAX_START_OVERRIDE_LEN).map_err(|_| MessageError::TooLong)
}

/// Bytes as postcard bytes (length, then the bytes) in one copy; serde's default for a
/// slice writes the same bytes one element at a time.
fn bytes<S: serde::Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(data)
}
