//! The console client inside the `nanostar` binary: a blocking connection that sends one
//! request at a time and reads replies (and notifications) as frames.

use core::mem::MaybeUninit;
use nanostar_protocol::console::{
    Error, FrameDecoder, Hello, Message, PROTOCOL_VERSION, PackageError, Reply, Request, Table,
    Violation,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::permissions::Permissions;

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::io::{Errno, IoSlice};
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Why the client could not talk to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// Connecting to the socket failed (is the runtime running? is the path right?).
    Connect(Errno),
    /// Reading or writing failed, or the runtime closed the connection.
    Io(Errno),
    /// The runtime speaks protocol versions `oldest..=newest`, not ours.
    Version {
        /// Oldest version the runtime accepts.
        oldest: u16,
        /// Newest version the runtime speaks.
        newest: u16,
    },
    /// The runtime sent something this client cannot decode.
    Protocol,
}

/// A connection after the handshake.
pub struct Connection {
    fd: OwnedFd,
    decoder: FrameDecoder<[u8; MAX_FRAME_LEN]>,
    input: [u8; 4096],
    input_start: usize,
    input_end: usize,
    next_id: u32,
    /// What this peer may do.
    pub permissions: Permissions,
}

impl Connection {
    /// Connects to the runtime's socket at `path` and does the handshake.
    pub fn connect(path: &str) -> Result<Connection, ClientError> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(ClientError::Connect)?;
        let addr = SocketAddrUnix::new(path).map_err(ClientError::Connect)?;
        rustix::net::connect(&fd, &addr).map_err(ClientError::Connect)?;
        let mut c = Connection {
            fd,
            decoder: FrameDecoder::new([0; MAX_FRAME_LEN]),
            input: [0; 4096],
            input_start: 0,
            input_end: 0,
            next_id: 1,
            permissions: Permissions::NONE,
        };
        c.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "nanostar",
        }))?;
        let mut frame = [0u8; MAX_FRAME_LEN];
        match c.receive(&mut frame)? {
            Message::Welcome(w) => c.permissions = w.permissions,
            Message::VersionMismatch(m) => {
                return Err(ClientError::Version {
                    oldest: m.oldest,
                    newest: m.runtime,
                });
            }
            _ => return Err(ClientError::Protocol),
        }
        Ok(c)
    }

    /// Sends a request and returns its id.
    pub fn request(&mut self, request: Request) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Request { id, request })?;
        Ok(id)
    }

    /// Sends another message under an existing request id (install chunks).
    pub fn request_as(&mut self, id: u32, request: Request) -> Result<(), ClientError> {
        self.send(&Message::Request { id, request })
    }

    /// Sends a request with a file descriptor attached (`SCM_RIGHTS`), for an install of a
    /// local file; returns its id.
    pub fn request_with_fd(
        &mut self,
        request: Request,
        fd: BorrowedFd<'_>,
    ) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let bytes = (Message::Request { id, request })
            .encode(&mut wire)
            .map_err(|_| ClientError::Protocol)?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        // The descriptor travels with the first byte; the rest follows as usual.
        let sent = loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        };
        let mut rest = &bytes[sent..];
        while !rest.is_empty() {
            match rustix::net::send(&self.fd, rest, SendFlags::NOSIGNAL) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(id)
    }

    fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        let mut bytes = message
            .encode(&mut wire)
            .map_err(|_| ClientError::Protocol)?;
        while !bytes.is_empty() {
            match rustix::net::send(&self.fd, bytes, SendFlags::NOSIGNAL) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads the next message into `frame` (blocking).
    pub fn receive<'f>(
        &mut self,
        frame: &'f mut [u8; MAX_FRAME_LEN],
    ) -> Result<Message<'f>, ClientError> {
        loop {
            if self.input_start == self.input_end {
                let n = loop {
                    match rustix::io::read(&self.fd, &mut self.input) {
                        Ok(0) => return Err(ClientError::Io(Errno::CONNRESET)),
                        Ok(n) => break n,
                        Err(Errno::INTR) => {}
                        Err(e) => return Err(ClientError::Io(e)),
                    }
                };
                self.input_start = 0;
                self.input_end = n;
            }
            let mut input = &self.input[self.input_start..self.input_end];
            let before = input.len();
            let decoded = self.decoder.decode(&mut input);
            self.input_start += before - input.len();
            match decoded {
                None => continue,
                Some(Err(_)) => return Err(ClientError::Protocol),
                Some(Ok(f)) => {
                    let len = f.len();
                    frame[..len].copy_from_slice(f);
                    return Message::decode(&frame[..len]).map_err(|_| ClientError::Protocol);
                }
            }
        }
    }
}

/// A short explanation of an error reply, for people.
pub fn error_text(e: &Error) -> &'static str {
    match e {
        Error::PermissionDenied => {
            "permission denied: the runtime's configuration does not allow this for your user"
        }
        Error::ProtocolViolation(Violation::InstallSize) => {
            "the install sent a different number of bytes than announced"
        }
        Error::ProtocolViolation(_) => "protocol violation",
        Error::InvalidArgument => "invalid argument",
        Error::UnknownPackage => "no such package installed (see `nanostar list`)",
        Error::Ambiguous => "several versions are installed; give the version",
        Error::AlreadyInstalled => "this name and version is installed already",
        Error::NoSuchRepository => "no such repository (see the runtime's configuration)",
        Error::RepositoryFull => "no space left in the repository",
        Error::TooLarge => "the package is larger than the repository accepts",
        Error::InstallTimeout => "the install stalled and was aborted",
        Error::BadPackage(PackageError::Unsigned) => {
            "refused: the package is not signed and the repository requires it"
        }
        Error::BadPackage(PackageError::UnknownKey(_)) => {
            "refused: signed by a key the repository does not trust"
        }
        Error::BadPackage(PackageError::Signature) => {
            "refused: the signature does not match (altered or corrupt)"
        }
        Error::BadPackage(_) => {
            "refused: the package is malformed or corrupt (check it with `npk verify`)"
        }
        Error::Busy { .. } => "the package is in use",
        Error::AlreadyMounted => "the package is mounted (unmount it first)",
        Error::NotMounted => "the package is not mounted",
        Error::DeviceMapperMissing => {
            "the kernel has no device-mapper, which this repository's verity needs"
        }
        Error::Full(Table::Clients) => "the runtime serves too many clients; try again",
        Error::Full(Table::Containers) => "containers are not supported by this runtime yet",
        Error::Full(_) => "a table of the runtime is full",
        Error::ShuttingDown => "the runtime is shutting down",
        Error::Io(_) => "a system call failed in the runtime",
        Error::AlreadyRunning => "the container is running already",
        Error::NotRunning => "the container is not running",
        Error::IsResource => "a resource package cannot be started",
    }
}

/// Turns an error reply into its text (used with `Reply::Error`).
pub fn reply_error(reply: &Reply) -> Option<&'static str> {
    match reply {
        Reply::Error(e) => Some(error_text(e)),
        _ => None,
    }
}
