//! Each container's output in a fixed-size ring (docs/design.md, decision 13): bounded RAM, no
//! flash wear. Readers keep a cursor into the stream of all bytes ever written; a reader
//! that falls more than a ring behind is told how many bytes it lost.

use crate::limits::LOG_RING_LEN;

/// The last [`LOG_RING_LEN`] bytes a container wrote.
pub struct LogRing {
    buf: [u8; LOG_RING_LEN],
    /// Bytes ever written: the position after the newest byte.
    written: u64,
    /// Position of the first byte of the current container (bytes before it belong to
    /// the slot's previous container).
    first: u64,
}

/// One piece of a ring for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// Bytes the reader missed since its cursor because the ring wrapped.
    pub dropped: u64,
    /// Contiguous bytes from the reader's (adjusted) cursor.
    pub data: &'a [u8],
    /// The cursor after this piece.
    pub next: u64,
}

impl LogRing {
    /// An empty ring (all zeros, so it lives in `.bss`).
    pub const fn new() -> LogRing {
        LogRing {
            buf: [0; LOG_RING_LEN],
            written: 0,
            first: 0,
        }
    }

    /// Forgets everything (a new container takes the slot). The written position keeps
    /// counting, so a reader's cursor stays meaningful.
    pub fn clear(&mut self) {
        self.first = self.written;
    }

    /// Appends `data`, overwriting the oldest bytes when full.
    pub fn push(&mut self, mut data: &[u8]) {
        if data.len() > LOG_RING_LEN {
            self.written += (data.len() - LOG_RING_LEN) as u64;
            data = &data[data.len() - LOG_RING_LEN..];
        }
        while !data.is_empty() {
            let at = (self.written % LOG_RING_LEN as u64) as usize;
            let n = data.len().min(LOG_RING_LEN - at);
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.written += n as u64;
            data = &data[n..];
        }
    }

    /// The position after the newest byte: a follower starting now begins here.
    pub fn end(&self) -> u64 {
        self.written
    }

    /// The position of the current container's first byte: a reader starting here is
    /// told how much of the output the ring no longer holds.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The oldest position still held.
    pub fn start(&self) -> u64 {
        self.written
            .saturating_sub(LOG_RING_LEN as u64)
            .max(self.first)
    }

    /// The position where the last `lines` lines held start (a last line without its
    /// newline counts as one): a reader starting there sees only those.
    pub fn tail(&self, lines: u32) -> u64 {
        if lines == 0 {
            return self.written;
        }
        let start = self.start();
        let mut pos = self.written;
        let mut seen = 0u32;
        while pos > start {
            let byte = self.buf[((pos - 1) % LOG_RING_LEN as u64) as usize];
            // The newline that ends the last line starts no line of its own.
            if byte == b'\n' && pos != self.written {
                seen += 1;
                if seen == lines {
                    return pos;
                }
            }
            pos -= 1;
        }
        start
    }

    /// Up to `max` bytes from `cursor` (moved up to [`start`](Self::start) if the ring
    /// overwrote it); `None` when there is nothing new.
    pub fn read(&self, cursor: u64, max: usize) -> Option<Piece<'_>> {
        let from = cursor.max(self.start());
        if from >= self.written {
            return None;
        }
        let at = (from % LOG_RING_LEN as u64) as usize;
        let available = (self.written - from) as usize;
        let n = available.min(LOG_RING_LEN - at).min(max);
        Some(Piece {
            dropped: from - cursor.min(from),
            data: &self.buf[at..at + n],
            next: from + n as u64,
        })
    }
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(ring: &LogRing, mut cursor: u64) -> (u64, std::vec::Vec<u8>) {
        let mut dropped = 0;
        let mut out = std::vec::Vec::new();
        while let Some(piece) = ring.read(cursor, 1000) {
            dropped += piece.dropped;
            out.extend_from_slice(piece.data);
            cursor = piece.next;
        }
        (dropped, out)
    }

    #[test]
    fn reads_back_what_was_written_in_order() {
        let mut ring = std::boxed::Box::new(LogRing::new());
        ring.push(b"hello ");
        ring.push(b"world\n");
        assert_eq!(drain(&ring, 0), (0, b"hello world\n".to_vec()));
        assert_eq!(ring.read(ring.end(), 100), None);
    }

    #[test]
    fn wraps_and_reports_what_a_slow_reader_lost() {
        let mut ring = std::boxed::Box::new(LogRing::new());
        let data: std::vec::Vec<u8> = (0..3 * LOG_RING_LEN + 123).map(|i| i as u8).collect();
        for piece in data.chunks(1000) {
            ring.push(piece);
        }
        let (dropped, out) = drain(&ring, 0);
        assert_eq!(dropped as usize, data.len() - LOG_RING_LEN);
        assert_eq!(out, &data[data.len() - LOG_RING_LEN..]);
        // One huge write keeps only its tail.
        ring.push(&data);
        let (_, out) = drain(&ring, ring.start());
        assert_eq!(out, &data[data.len() - LOG_RING_LEN..]);
    }

    #[test]
    fn clear_hides_old_output_from_everyone() {
        let mut ring = std::boxed::Box::new(LogRing::new());
        ring.push(b"old");
        let old_reader = 0;
        ring.clear();
        assert_eq!(ring.read(old_reader, 100), None);
        ring.push(b"new");
        let (dropped, out) = drain(&ring, old_reader);
        assert_eq!(out, b"new");
        assert!(dropped >= 3);
    }

    #[test]
    fn tail_starts_at_the_last_lines() {
        let mut ring = std::boxed::Box::new(LogRing::new());
        ring.push(b"one\ntwo\nthree\n");
        fn from(ring: &LogRing, n: u32) -> std::vec::Vec<u8> {
            drain(ring, ring.tail(n)).1
        }
        assert_eq!(from(&ring, 1), b"three\n");
        assert_eq!(from(&ring, 2), b"two\nthree\n");
        assert_eq!(from(&ring, 3), b"one\ntwo\nthree\n");
        assert_eq!(from(&ring, 9), b"one\ntwo\nthree\n");
        assert_eq!(from(&ring, 0), b"");
        // A last line still being written counts as one.
        ring.push(b"fou");
        assert_eq!(from(&ring, 1), b"fou");
        assert_eq!(from(&ring, 2), b"three\nfou");
        // Only the current container's lines, after a clear.
        ring.clear();
        ring.push(b"new\n");
        assert_eq!(from(&ring, 5), b"new\n");
    }
}
