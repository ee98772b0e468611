//! The poll set: the loop's one epoll descriptor, and what its event data (tokens) mean.
//!
//! - `u64::MAX`: the console socket; `u64::MAX - 1`: the signalfd.
//! - [`CONTAINER`] set: a container's descriptor: its slot and which one ([`Kind`]).
//! - anything else: a client, by the token it got when it connected.

use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;

use crate::container::table::Slot;

/// The console socket's token.
pub const LISTENER: u64 = u64::MAX;
/// The signalfd's token.
pub const SIGNALS: u64 = u64::MAX - 1;
/// The bit of container tokens; client tokens stay below it.
pub const CONTAINER: u64 = 1 << 40;
/// Bits of a container token that say which descriptor.
const KIND_BITS: u32 = 3;

/// Which descriptor of a container an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Init's report pipe.
    Status = 0,
    /// The app's stdout pipe.
    Stdout = 1,
    /// The app's stderr pipe.
    Stderr = 2,
    /// The cgroup's `memory.events`.
    MemoryEvents = 3,
    /// The app's exec pipe.
    Exec = 4,
}

/// The token of descriptor `kind` of the container on `slot`.
pub fn container_token(slot: Slot, kind: Kind) -> u64 {
    CONTAINER | (slot as u64) << KIND_BITS | kind as u64
}

/// The slot and kind of a container token.
pub fn container_of(token: u64) -> Option<(Slot, Kind)> {
    let slot = ((token & !CONTAINER) >> KIND_BITS) as usize;
    let kind = match token & ((1 << KIND_BITS) - 1) {
        0 => Kind::Status,
        1 => Kind::Stdout,
        2 => Kind::Stderr,
        3 => Kind::MemoryEvents,
        4 => Kind::Exec,
        _ => return None,
    };
    Some((slot, kind))
}

/// The epoll set.
pub struct Poll {
    fd: OwnedFd,
}

impl Poll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Poll, Errno> {
        Ok(Poll {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    /// `epoll_ctl(EPOLL_CTL_ADD)`.
    pub fn add(&self, fd: impl AsFd, token: u64, flags: epoll::EventFlags) -> Result<(), Errno> {
        epoll::add(&self.fd, fd, epoll::EventData::new_u64(token), flags)
    }

    /// Watches a container's pipe for input and its end (errors are ignored: a pipe not
    /// watched still ends with the container, whose reap reads what is left).
    pub fn watch_pipe(&self, fd: impl AsFd, slot: Slot, kind: Kind) {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::HUP;
        let _ = self.add(fd, container_token(slot, kind), flags);
    }

    /// `epoll_ctl(EPOLL_CTL_MOD)`.
    pub fn modify(&self, fd: impl AsFd, token: u64, flags: epoll::EventFlags) {
        let _ = epoll::modify(&self.fd, fd, epoll::EventData::new_u64(token), flags);
    }

    /// `epoll_ctl(EPOLL_CTL_DEL)`, before a descriptor is closed.
    pub fn delete(&self, fd: impl AsFd) {
        let _ = epoll::delete(&self.fd, fd);
    }

    /// `epoll_wait`: the ready events, at most until `timeout`.
    pub fn wait<'e>(
        &self,
        events: &'e mut [core::mem::MaybeUninit<epoll::Event>],
        timeout: Option<&rustix::event::Timespec>,
    ) -> Result<&'e mut [epoll::Event], Errno> {
        epoll::wait(&self.fd, events, timeout).map(|(ready, _)| ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_tokens_round_trip_and_stay_off_the_fixed_ones() {
        for slot in 0..crate::limits::MAX_CONTAINERS {
            for kind in [
                Kind::Status,
                Kind::Stdout,
                Kind::Stderr,
                Kind::MemoryEvents,
                Kind::Exec,
            ] {
                let token = container_token(slot, kind);
                assert_eq!(container_of(token), Some((slot, kind)));
                assert!(token != LISTENER && token != SIGNALS);
                assert!(token & CONTAINER != 0);
            }
        }
    }
}
