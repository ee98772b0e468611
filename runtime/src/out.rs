//! Text output to stdout and stderr through a small fixed buffer (no allocator), flushed
//! when full and on `flush`.

use core::fmt;

use crate::limits::OUTPUT_BUFFER_LEN;
use crate::sys;

/// A buffered writer to one standard stream.
pub struct Writer {
    fd: sys::StdFd,
    buf: heapless::Vec<u8, OUTPUT_BUFFER_LEN>,
}

impl Writer {
    /// A writer to standard output.
    pub fn stdout() -> Writer {
        Writer {
            fd: sys::StdFd::Out,
            buf: heapless::Vec::new(),
        }
    }

    /// A writer to standard error.
    pub fn stderr() -> Writer {
        Writer {
            fd: sys::StdFd::Err,
            buf: heapless::Vec::new(),
        }
    }

    /// Writes out what is buffered. Errors are ignored: there is nowhere left to report
    /// a failure to write to stdout or stderr.
    pub fn flush(&mut self) {
        let _ = sys::write_all(self.fd, &self.buf);
        self.buf.clear();
    }
}

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(OUTPUT_BUFFER_LEN) {
            if self.buf.len() + chunk.len() > OUTPUT_BUFFER_LEN {
                self.flush();
            }
            // Cannot fail: the buffer was flushed if the chunk did not fit.
            let _ = self.buf.extend_from_slice(chunk);
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `println!` to buffered stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        let mut w = $crate::out::Writer::stdout();
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = core::fmt::Write::write_str(&mut w, "\n");
    }};
}

/// `eprintln!` to buffered stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        let mut w = $crate::out::Writer::stderr();
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = core::fmt::Write::write_str(&mut w, "\n");
    }};
}

/// A line on stdout. One small function instead of `outln!`'s expansion at every call.
pub fn say(line: fmt::Arguments) {
    let mut w = Writer::stdout();
    let _ = fmt::Write::write_fmt(&mut w, line);
    let _ = fmt::Write::write_str(&mut w, "\n");
}

/// A line on stderr.
pub fn warn(line: fmt::Arguments) {
    let mut w = Writer::stderr();
    let _ = fmt::Write::write_fmt(&mut w, line);
    let _ = fmt::Write::write_str(&mut w, "\n");
}
