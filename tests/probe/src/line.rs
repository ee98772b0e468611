//! Output lines: built in a fixed buffer, written with one `write` when complete (longer
//! lines in several), so every line leaves the process as soon as it is finished.

use core::fmt;

use nanostar::sys::{self, StdFd};

/// Bytes a line collects before it is written out.
const LINE_BUFFER_LEN: usize = 1024;

/// One line of output to stdout or stderr. Bytes are taken as they are (arguments,
/// environment entries and file names need not be UTF-8).
pub struct Line {
    fd: StdFd,
    buf: heapless::Vec<u8, LINE_BUFFER_LEN>,
}

impl Line {
    /// A line for stdout.
    pub fn out() -> Line {
        Line {
            fd: StdFd::Out,
            buf: heapless::Vec::new(),
        }
    }

    /// A line for stderr.
    pub fn err() -> Line {
        Line {
            fd: StdFd::Err,
            buf: heapless::Vec::new(),
        }
    }

    /// Appends `bytes`.
    pub fn bytes(&mut self, mut bytes: &[u8]) -> &mut Line {
        while !bytes.is_empty() {
            let room = LINE_BUFFER_LEN - self.buf.len();
            if room == 0 {
                self.flush();
                continue;
            }
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            // Cannot fail: `now` fits the room left.
            let _ = self.buf.extend_from_slice(now);
            bytes = rest;
        }
        self
    }

    /// Appends formatted text (numbers).
    pub fn fmt(&mut self, args: fmt::Arguments<'_>) -> &mut Line {
        let _ = fmt::Write::write_fmt(self, args);
        self
    }

    /// Ends the line with a newline and writes it out.
    pub fn end(&mut self) {
        self.bytes(b"\n");
        self.flush();
    }

    /// Writes out what is buffered. Errors are ignored: there is nowhere left to report
    /// a failure to write to stdout or stderr.
    fn flush(&mut self) {
        let _ = sys::write_all(self.fd, &self.buf);
        self.buf.clear();
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}
