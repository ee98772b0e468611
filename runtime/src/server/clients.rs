//! The console clients: accepting them, reading their bytes, and the outbox (their
//! queues of encoded frames, replies and notifications, flushing and closing). The only
//! place that writes to a client.

use core::mem::MaybeUninit;

use heapless::{String, Vec};
use nanostar_protocol::console::{
    Error, FrameDecoder, Message, Notification, PROTOCOL_VERSION, Reply, Table, Violation,
};
use nanostar_protocol::limits::{MAX_FRAME_LEN, MAX_NAME_LEN, MAX_WIRE_FRAME_LEN};
use nanostar_protocol::permissions::Permissions;
use nanostar_protocol::version::Version;
use rustix::event::{Timespec, epoll};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, IoSliceMut};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketFlags};

use super::errors::Refusal;
use super::poll::{self, Poll};
use crate::config::Limits;
use crate::container::table::LogReader;
use crate::limits::{MAX_CLIENTS, OUTPUT_QUEUE_LEN};
use crate::store::install::Install;
use crate::time::{earliest, is_before, now};
use crate::{errln, fs};

/// A client's token: its epoll data, unique among live connections.
pub type Token = u64;

/// An install in progress on a connection.
pub struct Upload {
    /// The request that began it.
    pub id: u32,
    /// The file being written.
    pub install: Install,
    /// Where its bytes come from, or that they are all in.
    pub stage: Stage,
    /// When it times out (renewed by each chunk or slice, copied or synced).
    pub deadline: Timespec,
    /// The package the client announced (`Request::Install`) and whether it replaces
    /// the installed one.
    pub announced: Option<(String<MAX_NAME_LEN>, Version, bool)>,
}

impl Upload {
    /// Whether its client said all there is (or passed it all): a chunk or end for it now
    /// finds no install, as it did once the install was finished.
    pub fn ended(&self) -> bool {
        matches!(self.stage, Stage::Syncing)
    }
}

/// The stage of an [`Upload`].
pub enum Stage {
    /// The client streams chunks, then says `InstallEnd`.
    Streamed,
    /// The package as a passed descriptor, copied a slice per loop turn.
    Passed(OwnedFd),
    /// Every byte is in: written back a slice per loop turn (`Install::sync_slice`), so
    /// the final `fsync` holds the loop no longer than a slice does; then finished.
    Syncing,
}

/// One console connection.
pub struct Client {
    /// Its token.
    pub token: Token,
    fd: OwnedFd,
    /// The peer's uid and gid (`SO_PEERCRED`).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// `None` until the handshake.
    pub permissions: Option<Permissions>,
    /// The protocol version the handshake agreed on: what it sends is in that version.
    pub version: u16,
    /// Frames being received.
    pub decoder: FrameDecoder<[u8; MAX_FRAME_LEN]>,
    /// Encoded frames not yet written.
    queue: Vec<u8, OUTPUT_QUEUE_LEN>,
    /// It gets notifications.
    pub subscribed: bool,
    /// Its install in progress.
    pub upload: Option<Upload>,
    /// A descriptor the client passed (`SCM_RIGHTS`) for its next install.
    pub passed_fd: Option<OwnedFd>,
    /// Close once the queue is written.
    pub closing: bool,
    /// The container log this client reads.
    pub logs: Option<LogReader>,
    /// The console device (`console_device`), not a socket: read and written as a
    /// byte stream, never closed; a `Hello` on it starts a new session.
    pub device: bool,
    /// When it connected: its `Hello` is due `hello_timeout_ms` later, and a full table
    /// closes the oldest connection without one first.
    connected: Timespec,
    /// When it last sent a request, or stopped waiting for something it asked for: it is
    /// closed `idle_timeout_ms` later unless it speaks or asks again.
    pub heard: Timespec,
    /// At the last look it waited for something it asked for (see `heard`).
    waited: bool,
    /// The id of its last install that ended with an error: chunks, end or abort of it
    /// still in flight are dropped without a reply (`docs/protocol.md`).
    pub ended_install: Option<u32>,
}

impl Client {
    /// A connection before its handshake.
    fn new(token: Token, fd: OwnedFd, uid: u32, gid: u32, device: bool) -> Client {
        let connected = now();
        Client {
            token,
            fd,
            uid,
            gid,
            permissions: None,
            version: PROTOCOL_VERSION,
            decoder: FrameDecoder::new([0; MAX_FRAME_LEN]),
            queue: Vec::new(),
            subscribed: false,
            upload: None,
            passed_fd: None,
            closing: false,
            logs: None,
            device,
            connected,
            heard: connected,
            waited: false,
            ended_install: None,
        }
    }

    /// Whether it completed its `Hello`.
    pub fn welcomed(&self) -> bool {
        self.permissions.is_some()
    }

    /// Whether it waits for something of its own: an install, a log it reads, the
    /// notifications it subscribed to (a start or stop it waits for is the container
    /// table's to say).
    pub fn waits(&self) -> bool {
        self.upload.is_some() || self.logs.is_some() || self.subscribed
    }

    /// Forgets the session on the console device: handshake, subscription, install,
    /// log reader, queued output.
    pub fn reset_session(&mut self) {
        self.permissions = None;
        self.subscribed = false;
        self.upload = None;
        self.logs = None;
        self.queue.clear();
        self.closing = false;
        self.ended_install = None;
        self.decoder = FrameDecoder::new([0; MAX_FRAME_LEN]);
    }

    /// Whether one more frame of the largest size fits its queue.
    pub fn has_room(&self) -> bool {
        self.queue.len() + MAX_WIRE_FRAME_LEN <= self.queue.capacity()
    }

    /// Queues encoded frames; a client whose queue is full is dropped: it does not read
    /// its replies, and may not hold the runtime's memory.
    pub fn queue(&mut self, bytes: &[u8]) {
        if self.queue.extend_from_slice(bytes).is_err() {
            self.closing = true;
            self.queue.clear();
        }
    }

    /// Queues a message in the client's protocol version.
    #[inline(never)]
    pub fn send(&mut self, message: &Message) {
        let mut wire = [0u8; MAX_WIRE_FRAME_LEN];
        // Only an older client pays for a copy of the message.
        let encoded = if self.version >= PROTOCOL_VERSION {
            message.encode(&mut wire).map(|b| b.len())
        } else {
            match message.clone().for_version(self.version) {
                Some(older) => older.encode(&mut wire).map(|b| b.len()),
                None => return,
            }
        };
        if let Ok(len) = encoded {
            self.queue(&wire[..len]);
        }
    }

    /// Queues the reply to request `id`.
    pub fn reply(&mut self, id: u32, reply: Reply) {
        self.send(&Message::Reply { id, reply });
    }

    /// Answers a protocol violation. After one that may leave the stream out of step
    /// (undecodable, too long, no `Hello`) the connection closes after the reply, and
    /// nothing it sent after it is served; after the others it is served on
    /// (`docs/protocol.md`, `Violation`).
    pub fn violation(&mut self, id: u32, why: Violation) {
        self.reply(id, Reply::Error(Error::ProtocolViolation(why)));
        if closes(why) {
            self.closing = true;
        }
    }

    /// Queues an error that owns its text.
    pub fn refuse(&mut self, id: u32, refusal: &Refusal) {
        self.reply(id, Reply::Error(refusal.error()));
    }

    /// `recvmsg(2)` of the next bytes, keeping the first descriptor the client passes
    /// (`SCM_RIGHTS`, for an install) and closing any others.
    pub fn receive(&mut self, bytes: &mut [u8]) -> Result<usize, Errno> {
        if self.device {
            return rustix::io::read(&self.fd, bytes);
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(bytes)];
        let received = rustix::net::recvmsg(
            &self.fd,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    if self.passed_fd.is_none() {
                        self.passed_fd = Some(fd);
                    }
                }
            }
        }
        Ok(received.bytes)
    }

    /// The peer is gone or broke the connection: close without writing more.
    pub fn hang_up(&mut self) {
        self.closing = true;
        self.queue.clear();
    }

    /// Writes as much of the queue as the socket takes.
    #[inline(never)]
    fn flush(&mut self) {
        while !self.queue.is_empty() {
            let sent = if self.device {
                rustix::io::write(&self.fd, &self.queue)
            } else {
                let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
                rustix::net::send(&self.fd, &self.queue, flags)
            };
            match sent {
                Ok(n) => {
                    let rest = self.queue.len() - n;
                    self.queue.copy_within(n.., 0);
                    self.queue.truncate(rest);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(_) => return self.hang_up(),
            }
        }
    }
}

/// The connected clients; each is found by its token, so removing one moves no other.
pub struct Clients<'c> {
    list: &'c mut Vec<Client, MAX_CLIENTS>,
    next_token: Token,
}

impl<'c> Clients<'c> {
    /// No clients yet.
    pub fn new(list: &'c mut Vec<Client, MAX_CLIENTS>) -> Clients<'c> {
        Clients {
            list,
            next_token: 0,
        }
    }

    /// The client with `token`.
    pub fn get(&mut self, token: Token) -> Option<&mut Client> {
        self.list.iter_mut().find(|c| c.token == token)
    }

    /// The client with `token`, to read.
    pub fn get_ref(&self, token: Token) -> Option<&Client> {
        self.list.iter().find(|c| c.token == token)
    }

    /// Every client.
    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.list.iter()
    }

    /// Every client, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Client> {
        self.list.iter_mut()
    }

    /// How many are connected.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// Queues the reply to request `id` of client `token` (if it is still connected).
    pub fn reply(&mut self, token: Token, id: u32, reply: Reply) {
        if let Some(c) = self.get(token) {
            c.reply(id, reply);
        }
    }

    /// Tells every subscriber.
    #[inline(never)]
    pub fn notify(&mut self, notification: Notification) {
        let message = Message::Notification(notification);
        for c in self.list.iter_mut().filter(|c| c.subscribed) {
            c.send(&message);
        }
    }

    /// An epoll token for a new connection: below the listener's and the signalfd's (and
    /// the containers' bit), never reused in practice.
    fn new_token(&mut self) -> Token {
        self.next_token = (self.next_token + 1) % poll::CONTAINER;
        self.next_token
    }

    /// The connection of a peer waiting on the console socket, non-blocking; `None` when
    /// none waits.
    pub fn accept_one(listener: &OwnedFd) -> Option<OwnedFd> {
        loop {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            match rustix::net::accept_with(listener, flags) {
                Ok(fd) => return Some(fd),
                Err(Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    }

    /// Serves a newly accepted connection, if its peer's credentials can be read.
    pub fn add_peer(&mut self, fd: OwnedFd, poll: &Poll) {
        if let Ok((uid, gid)) = crate::sys::peer::peer_credentials(&fd) {
            self.add(fd, uid, gid, poll);
        }
    }

    /// Tokens of the connections that have not completed their `Hello` (the console
    /// device aside), oldest first.
    pub fn unwelcomed(&self) -> Vec<Token, MAX_CLIENTS> {
        let mut tokens: Vec<&Client, MAX_CLIENTS> = self
            .list
            .iter()
            .filter(|c| !c.device && !c.welcomed())
            .collect();
        tokens.sort_unstable_by_key(|c| (c.connected.tv_sec, c.connected.tv_nsec));
        tokens.iter().map(|c| c.token).collect()
    }

    /// The client to close so that a newcomer fits a full table: the oldest connection
    /// that is closing already (its last reply not yet taken), else the oldest that has
    /// not completed its `Hello`, else the oldest whose peer may do nothing at all (it
    /// can only hold the slot); `None` when every slot serves a peer that may do
    /// something.
    pub fn victim(&self) -> Option<Token> {
        let oldest = |useless: fn(&Client) -> bool| {
            self.list
                .iter()
                .filter(|c| !c.device && useless(c))
                .min_by_key(|c| (c.connected.tv_sec, c.connected.tv_nsec))
                .map(|c| c.token)
        };
        oldest(|c| c.closing)
            .or_else(|| oldest(|c| !c.welcomed()))
            .or_else(|| oldest(|c| c.permissions == Some(Permissions::NONE)))
    }

    /// Closes client `token` at once, without a word: its slot goes to a newcomer.
    pub fn remove(&mut self, token: Token, poll: &Poll) {
        if let Some(index) = self.list.iter().position(|c| c.token == token) {
            poll.delete(&self.list[index].fd);
            // Dropping the client drops its install, which removes the temporary file.
            self.list.swap_remove(index);
        }
    }

    /// Closes the connections whose deadline passed: no `Hello` within
    /// `hello_timeout_ms` (told `NoHello`), or silent for `idle_timeout_ms` while waiting
    /// for nothing. `waits_elsewhere` says whether a client waits for a container (a
    /// start or stop it asked for).
    #[inline(never)]
    pub fn expire(&mut self, limits: &Limits, waits_elsewhere: impl Fn(Token) -> bool) {
        let n = now();
        for c in self.list.iter_mut().filter(|c| !c.device && !c.closing) {
            if !c.welcomed() {
                if is_before(&after(&c.connected, limits.hello_timeout_ms), &n) {
                    // Told why if its socket takes it now; closed either way.
                    c.violation(0, Violation::NoHello);
                    c.flush();
                    c.hang_up();
                }
                continue;
            }
            let waits = c.waits() || waits_elsewhere(c.token);
            if waits || c.waited {
                // Its silence counts from when it stopped waiting.
                c.heard = n;
                c.waited = waits;
            } else if is_before(&after(&c.heard, limits.idle_timeout_ms), &n) {
                c.hang_up();
            }
        }
    }

    /// The earliest moment a connection's deadline passes (see [`Clients::expire`]).
    pub fn next_deadline(&self, limits: &Limits) -> Option<Timespec> {
        self.list
            .iter()
            .filter(|c| !c.device && !c.closing)
            .filter_map(|c| match c.welcomed() {
                false => Some(after(&c.connected, limits.hello_timeout_ms)),
                // A waiting client gets its deadline when it stops waiting.
                true if c.waited || c.waits() => None,
                true => Some(after(&c.heard, limits.idle_timeout_ms)),
            })
            .fold(None, |a, b| earliest(a, Some(b)))
    }

    /// Serves a connected socket of a peer with `uid` and `gid`; `None` (and the socket
    /// closed) if the table is full or the poll set refuses it.
    pub fn add(&mut self, fd: OwnedFd, uid: u32, gid: u32, poll: &Poll) -> Option<Token> {
        let token = self.new_token();
        let watch = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        poll.add(&fd, token, watch).ok()?;
        self.list
            .push(Client::new(token, fd, uid, gid, false))
            .ok()?;
        Some(token)
    }

    /// Serves the console protocol on a serial or virtio console device too, as a
    /// client with the permissions of uid 0 that is never closed.
    #[inline(never)]
    pub fn add_device(&mut self, path: &str, poll: &Poll) {
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                errln!("nanostar: console device {path}: {}", fs::errno_text(e));
                return;
            }
        };
        // Raw: no echo, no line editing, no translation of the protocol's bytes.
        if let Ok(mut termios) = rustix::termios::tcgetattr(&fd) {
            termios.make_raw();
            let now = rustix::termios::OptionalActions::Now;
            let _ = rustix::termios::tcsetattr(&fd, now, &termios);
        }
        let token = self.new_token();
        if poll.add(&fd, token, epoll::EventFlags::IN).is_err() || self.list.is_full() {
            errln!("nanostar: console device {path}: cannot serve it");
            return;
        }
        let _ = self.list.push(Client::new(token, fd, 0, 0, true));
        errln!("nanostar: serving the console on {path}");
    }

    /// Tokens of every client, to visit them while changing others.
    pub fn tokens(&self) -> Vec<Token, MAX_CLIENTS> {
        self.list.iter().map(|c| c.token).collect()
    }

    /// Writes what every client has queued (at shutdown).
    pub fn flush_all(&mut self) {
        for c in self.list.iter_mut() {
            c.flush();
        }
    }

    /// Settles every client with something to write or to close: replies and
    /// notifications caused by other events (a container's report, another client).
    pub fn settle_all(&mut self, poll: &Poll) {
        for token in self.tokens() {
            if self
                .get_ref(token)
                .is_some_and(|c| c.closing || !c.queue.is_empty())
            {
                self.settle(token, poll);
            }
        }
    }

    /// After handling a client's events: write its replies, then close it or wait for
    /// the socket to drain.
    #[inline(never)]
    pub fn settle(&mut self, token: Token, poll: &Poll) {
        let Some(index) = self.list.iter().position(|c| c.token == token) else {
            return;
        };
        let client = &mut self.list[index];
        client.flush();
        if client.closing && client.queue.is_empty() {
            if client.device {
                // The link stays; whoever is at its other end starts again with a Hello.
                client.reset_session();
            } else {
                poll.delete(&client.fd);
                // Dropping the client drops its install, which removes the temporary file.
                self.list.swap_remove(index);
                return;
            }
        }
        let mut flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        if !client.queue.is_empty() {
            flags |= epoll::EventFlags::OUT;
        }
        poll.modify(&client.fd, token, flags);
    }

    /// Writes to a client whose socket can take more.
    pub fn flush(&mut self, token: Token) {
        if let Some(c) = self.get(token) {
            c.flush();
        }
    }
}

/// The moment `ms` milliseconds after `t`.
fn after(t: &Timespec, ms: u32) -> Timespec {
    let ns = t.tv_nsec + i64::from(ms % 1000) * 1_000_000;
    Timespec {
        tv_sec: t.tv_sec + i64::from(ms / 1000) + ns / 1_000_000_000,
        tv_nsec: (ns % 1_000_000_000) as _,
    }
}

/// Whether the connection closes after violation `why`: the ones that may leave the
/// stream out of step, or come before the handshake (0–2 in `docs/protocol.md`).
fn closes(why: Violation) -> bool {
    matches!(
        why,
        Violation::Undecodable | Violation::FrameTooLong | Violation::NoHello
    )
}

/// Tells a client that could not be taken why, without blocking (best effort).
pub fn refuse_full(fd: &OwnedFd) {
    let mut wire = [0u8; 64];
    let message = Message::Reply {
        id: 0,
        reply: Reply::Error(Error::Full(Table::Clients)),
    };
    if let Ok(bytes) = message.encode(&mut wire) {
        let _ = rustix::net::send(fd, bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT);
    }
}
