//! The console client inside the `nanostar` binary: a blocking connection that sends one
//! request at a time and reads replies (and notifications) as frames. The words for people
//! of what the runtime answers are in [`crate::text`].

use core::mem::MaybeUninit;
use nanostar_protocol::console::{
    Error, FrameDecoder, Hello, Message, MessageError, PROTOCOL_VERSION, Reply, Request, Table,
    Violation,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::permissions::Permissions;

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::io::{Errno, IoSlice};
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Why the client could not talk to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// Connecting to the socket failed (is the runtime running? is the path right?).
    Connect(Errno),
    /// Reading or writing failed.
    Io(Errno),
    /// The runtime closed the connection.
    Closed,
    /// The runtime closed the connection during the handshake without a word.
    Handshake,
    /// The runtime's client table is full: it refused the connection.
    Full,
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
    /// The last frame read, and its length.
    frame: [u8; MAX_FRAME_LEN],
    frame_len: usize,
    /// `frame` holds a reply that [`Connection::poll_reply`] found and
    /// [`Connection::reply`] has not returned yet.
    held: bool,
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
            frame: [0; MAX_FRAME_LEN],
            frame_len: 0,
            held: false,
            next_id: 1,
            permissions: Permissions::NONE,
        };
        // A runtime with a full client table answers `Full(Clients)` and closes, maybe
        // before the hello is sent: what it said is read either way.
        let _ = c.send(&Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "nanostar",
        }));
        let permissions = match c.receive() {
            Ok(Message::Welcome(w)) => w.permissions,
            Ok(Message::VersionMismatch(m)) => {
                return Err(ClientError::Version {
                    oldest: m.oldest,
                    newest: m.runtime,
                });
            }
            Ok(Message::Reply {
                reply: Reply::Error(Error::Full(Table::Clients)),
                ..
            }) => return Err(ClientError::Full),
            // The Hello came too late (`hello_timeout_ms`): the runtime closed.
            Ok(Message::Reply {
                reply: Reply::Error(Error::ProtocolViolation(Violation::NoHello)),
                ..
            }) => return Err(ClientError::Handshake),
            Ok(_) => return Err(ClientError::Protocol),
            Err(ClientError::Closed | ClientError::Io(_)) => return Err(ClientError::Handshake),
            Err(e) => return Err(e),
        };
        c.permissions = permissions;
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

    /// Reads the next message (blocking); it borrows the connection's frame buffer.
    pub fn receive(&mut self) -> Result<Message<'_>, ClientError> {
        let len = self.next_frame(true)?.ok_or(ClientError::Closed)?;
        Message::decode(&self.frame[..len]).map_err(|_| ClientError::Protocol)
    }

    /// Reads until the reply to request `id` (or one about the connection, id 0),
    /// skipping notifications and other replies.
    pub fn reply(&mut self, id: u32) -> Result<Reply<'_>, ClientError> {
        while !core::mem::take(&mut self.held) {
            let len = self.next_frame(true)?.ok_or(ClientError::Closed)?;
            if self.answers(len, id)? {
                break;
            }
        }
        // Decoded again: the borrow of the frame cannot leave the loop.
        match self.receive_again() {
            Ok(Message::Reply { reply, .. }) => Ok(reply),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Whether the runtime has answered request `id` already (or said something about
    /// the connection), without waiting: what it sent so far is read, and the answer
    /// is kept for [`Connection::reply`]. A streamed install asks between chunks, so it
    /// stops sending once the runtime has refused it.
    pub fn poll_reply(&mut self, id: u32) -> Result<bool, ClientError> {
        if self.held {
            return Ok(true);
        }
        while let Some(len) = self.next_frame(false)? {
            if self.answers(len, id)? {
                self.held = true;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the frame of `len` bytes is the reply to `id` (or about the connection,
    /// id 0); notifications and other replies are skipped.
    fn answers(&self, len: usize, id: u32) -> Result<bool, ClientError> {
        match Message::decode(&self.frame[..len]) {
            Ok(Message::Reply { id: got, .. }) => Ok(got == id || got == 0),
            Ok(Message::Notification(_)) => Ok(false),
            _ => Err(ClientError::Protocol),
        }
    }

    fn receive_again(&self) -> Result<Message<'_>, MessageError> {
        Message::decode(&self.frame[..self.frame_len])
    }

    /// Reads the next frame into `self.frame`; its length. Without `wait`, `None` when
    /// no complete frame has arrived yet.
    fn next_frame(&mut self, wait: bool) -> Result<Option<usize>, ClientError> {
        let flags = if wait {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        loop {
            if self.input_start == self.input_end {
                let n = loop {
                    match rustix::net::recv(&self.fd, &mut self.input, flags) {
                        Ok((0, _)) => return Err(ClientError::Closed),
                        Ok((n, _)) => break n,
                        Err(Errno::INTR) => {}
                        Err(Errno::AGAIN) if !wait => return Ok(None),
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
                    self.frame[..len].copy_from_slice(f);
                    self.frame_len = len;
                    return Ok(Some(len));
                }
            }
        }
    }
}
