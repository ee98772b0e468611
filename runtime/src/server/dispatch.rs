//! From a client's bytes to one handler and back: frames are decoded once, the
//! handshake agrees on a version, the request's permission is checked, and one match
//! calls the handler. Handlers return an [`Answer`]; only this file queues it.

use nanostar_protocol::console::{
    Error, FrameError, Message, Notification, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, Reply,
    Request, Table, VersionMismatch, Violation, Welcome, peek_hello_version, peek_request_id,
};
use nanostar_protocol::limits::MAX_FRAME_LEN;
use nanostar_protocol::permissions::Permissions;
use rustix::fd::OwnedFd;
use rustix::io::Errno;

use super::clients::{self, Clients, Token};
use super::containers::StartRequest;
use super::errors::Refusal;
use super::{Runtime, packages};
use crate::container::table::{LogReader, Waiter};
use crate::limits::{CLIENT_READ_LEN, CLIENT_READS_PER_TURN, MAX_CLIENTS, MAX_CONTAINERS};
use crate::time;

/// What a handler answers.
pub enum Answer<'a> {
    /// This reply, now.
    Now(Reply<'a>),
    /// This error, whose text the answer owns.
    Refused(Refusal),
    /// The request broke the protocol: this reply, then the connection closes.
    Violation(Violation),
    /// Nothing now: a waiter was recorded (a start waits for "running", a stop for the
    /// exit, a passed install for its copy), or the reply was encoded into the queue.
    Later,
    /// The client reads this container log (`logs`): the log pump sends it, then the end.
    Follow(LogReader),
}

impl From<Refusal> for Answer<'_> {
    fn from(r: Refusal) -> Self {
        Answer::Refused(r)
    }
}

impl<'c> Runtime<'c> {
    /// Accepts every waiting connection. When the table is full, a newcomer takes the
    /// slot of a connection that never completed its `Hello` (or of a peer that may do
    /// nothing), else it is told the table is full and closed.
    #[inline(never)]
    pub(super) fn accept_clients(&mut self, listener: &OwnedFd) {
        let limit = usize::from(self.config.limits.max_clients).min(MAX_CLIENTS);
        while let Some(fd) = Clients::accept_one(listener) {
            if self.clients.count() >= limit && !self.make_room(limit) {
                clients::refuse_full(&fd);
                continue;
            }
            self.clients.add_peer(fd, &self.poll);
        }
    }

    /// Frees a slot of a full table: first serves what the connections without a
    /// `Hello` have sent (a real client's `Hello` may be waiting unread, and it must not
    /// lose its slot for that), then closes the oldest that still has none, else the
    /// oldest peer that may do nothing. `false` if every slot serves a peer that may do
    /// something.
    fn make_room(&mut self, limit: usize) -> bool {
        for token in self.clients.unwelcomed() {
            self.read_client(token);
            self.clients.settle(token, &self.poll);
        }
        if self.clients.count() < limit {
            return true;
        }
        match self.clients.victim() {
            Some(token) => {
                self.clients.remove(token, &self.poll);
                true
            }
            None => false,
        }
    }

    /// Closes the clients whose `Hello` or idle deadline passed (a client waiting for a
    /// start or stop it asked for is not idle).
    pub(super) fn expire_clients(&mut self) {
        let table = &*self.containers.table;
        let waits_for_container = |token: Token| {
            (0..MAX_CONTAINERS).filter_map(|s| table.at(s)).any(|c| {
                c.starter.is_some_and(|w| w.client == token)
                    || c.stoppers.iter().any(|w| w.client == token)
            })
        };
        self.clients
            .expire(&self.config.limits, waits_for_container);
    }

    /// Reads what the client sent and handles every complete frame, at most
    /// `CLIENT_READS_PER_TURN` reads: the rest waits for the next loop turn (epoll
    /// reports the socket again), so every client gets its turn. Nothing that arrived
    /// after a frame that closes the connection is served.
    #[inline(never)]
    pub(super) fn read_client(&mut self, token: Token) {
        let mut bytes = [0u8; CLIENT_READ_LEN];
        let mut frame = [0u8; MAX_FRAME_LEN];
        for _ in 0..CLIENT_READS_PER_TURN {
            let Some(client) = self.clients.get(token) else {
                return;
            };
            if client.closing {
                return;
            }
            let n = match client.receive(&mut bytes) {
                Ok(0) => return client.hang_up(),
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return,
                Err(_) => return client.hang_up(),
            };
            let mut input = &bytes[..n];
            loop {
                let Some(client) = self.clients.get(token) else {
                    return;
                };
                if client.closing {
                    // The rest of what it sent is not served.
                    return;
                }
                let len = match client.decoder.decode(&mut input) {
                    None => break,
                    Some(Ok(f)) => {
                        frame[..f.len()].copy_from_slice(f);
                        f.len()
                    }
                    Some(Err(e)) => {
                        client.violation(
                            0,
                            match e {
                                FrameError::TooLong => Violation::FrameTooLong,
                                FrameError::Corrupt => Violation::Undecodable,
                            },
                        );
                        continue;
                    }
                };
                client.heard = time::now();
                self.handle_frame(token, &frame[..len]);
            }
        }
    }

    /// One frame: the handshake, or a request checked against the client's permissions.
    #[inline(never)]
    fn handle_frame(&mut self, token: Token, frame: &[u8]) {
        let Some(client) = self.clients.get(token) else {
            return;
        };
        if client.device && client.permissions.is_some() && peek_hello_version(frame).is_some() {
            // A new host session on the console device.
            client.reset_session();
        }
        let Some(permissions) = client.permissions else {
            return self.handshake(token, frame);
        };
        let message = match Message::decode(frame) {
            Ok(m) => m,
            Err(_) => {
                let id = peek_request_id(frame).unwrap_or(0);
                return client.violation(id, Violation::Undecodable);
            }
        };
        let Message::Request { id, request } = message else {
            return client.violation(0, Violation::Unexpected);
        };
        if !permissions.contains(request.permission()) {
            return client.reply(id, Reply::Error(Error::PermissionDenied));
        }
        // A stop or a kill can only hasten what the shutdown does anyway.
        let hastens = matches!(request, Request::Stop { .. } | Request::Kill { .. });
        if self.shutdown && !hastens {
            return client.reply(id, Reply::Error(Error::ShuttingDown));
        }
        self.route(token, id, request);
    }

    /// The `Hello`: a version this runtime speaks gets a `Welcome` with the peer's
    /// permissions; any other a `VersionMismatch`, then the connection closes.
    #[inline(never)]
    fn handshake(&mut self, token: Token, frame: &[u8]) {
        let config = self.config;
        let Some(client) = self.clients.get(token) else {
            return;
        };
        let Some(version) = peek_hello_version(frame) else {
            return client.violation(0, Violation::NoHello);
        };
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            client.send(&Message::VersionMismatch(VersionMismatch {
                runtime: PROTOCOL_VERSION,
                oldest: OLDEST_PROTOCOL_VERSION,
            }));
            client.closing = true;
            return;
        }
        if !matches!(Message::decode(frame), Ok(Message::Hello(_))) {
            return client.violation(0, Violation::Undecodable);
        }
        let permissions: Permissions = config.permissions(client.uid, client.gid);
        client.permissions = Some(permissions);
        client.version = version;
        client.send(&Message::Welcome(Welcome {
            protocol_version: version,
            permissions,
        }));
    }

    /// Calls the request's handler and queues its answer.
    #[inline(never)]
    fn route(&mut self, token: Token, id: u32, request: Request) {
        let waiter = Waiter { client: token, id };
        let answer = match request {
            Request::List { after } => packages::list(&self.store, self.containers.table, after),
            Request::Inspect {
                name,
                version,
                manifest_offset,
            } => packages::inspect(
                &mut self.store,
                self.containers.table,
                name,
                version,
                manifest_offset,
            ),
            Request::Repositories => packages::repositories(&self.store),
            Request::InstallBegin {
                repository,
                size,
                fd,
            } => self.install_begin(waiter, repository, size, fd, None),
            Request::Install {
                repository,
                size,
                fd,
                package,
                replace,
            } => self.install_begin(waiter, repository, size, fd, Some((package, replace))),
            Request::InstallChunk { data } => self.install_chunk(waiter, data),
            Request::InstallEnd => self.install_end(waiter),
            Request::InstallAbort => self.install_abort(waiter),
            Request::Uninstall { package, wipe } => {
                let changed = self.uninstall(package, wipe);
                return self.changed(token, id, changed);
            }
            Request::Mount(package) => {
                let changed = self.mount(package);
                return self.changed(token, id, changed);
            }
            Request::Umount(package) => {
                let changed = self.umount(package);
                return self.changed(token, id, changed);
            }
            Request::Shutdown => {
                self.shutdown = true;
                Answer::Now(Reply::Ok)
            }
            Request::Subscribe | Request::Unsubscribe => {
                if let Some(c) = self.clients.get(token) {
                    c.subscribed = matches!(request, Request::Subscribe);
                }
                Answer::Now(Reply::Ok)
            }
            Request::Start {
                name,
                version,
                args,
                env,
            } => {
                let request = StartRequest {
                    name,
                    version,
                    args: args.as_deref(),
                    env: &env,
                };
                match self.start(&request, Some(waiter), 0) {
                    Ok(()) => Answer::Later,
                    Err(refusal) => Answer::Refused(refusal),
                }
            }
            Request::Stop {
                name, timeout_ms, ..
            } => self.stop(waiter, name, timeout_ms),
            Request::Kill { name, signal, .. } => self.kill(name, signal),
            Request::Logs { name, follow, .. } => self.logs(id, name, follow, None),
            Request::TailLogs {
                name,
                follow,
                lines,
                ..
            } => self.logs(id, name, follow, lines),
        };
        let Some(client) = self.clients.get(token) else {
            return;
        };
        match answer {
            Answer::Now(reply) => client.reply(id, reply),
            Answer::Refused(refusal) => client.refuse(id, &refusal),
            Answer::Violation(why) => client.violation(id, why),
            // One log at a time: a second read would take the first one's place, and
            // the first would never end.
            Answer::Follow(_) if client.logs.is_some() => {
                client.reply(id, Reply::Error(Error::Full(Table::LogReads)))
            }
            Answer::Follow(reader) => client.logs = Some(reader),
            Answer::Later => {}
        }
    }

    /// The answer of a request that changed the store: `Ok`, then the change to every
    /// subscriber (the requester learns of it first).
    fn changed(&mut self, token: Token, id: u32, changed: Result<Notification, Refusal>) {
        match changed {
            Ok(notification) => {
                self.clients.reply(token, id, Reply::Ok);
                self.clients.notify(notification);
            }
            Err(refusal) => {
                if let Some(c) = self.clients.get(token) {
                    c.refuse(id, &refusal);
                }
            }
        }
    }
}
