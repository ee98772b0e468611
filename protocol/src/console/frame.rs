//! COBS framing (Consistent Overhead Byte Stuffing).
//!
//! A frame is the COBS encoding of one message followed by a `0x00` delimiter. COBS
//! replaces every zero byte of the message, so `0x00` appears only between frames: a
//! reader that lost its place (garbage on a serial line, an oversize or half-written
//! frame) drops bytes up to the next `0x00` and is in step again. The cost is at most one
//! byte per 254 and one pass over the bytes, which the decoder does while copying them
//! into its buffer (a copy it needs anyway).
//!
//! An empty frame (`0x00` right after `0x00`) is ignored, so a sender may write a lone
//! `0x00` at any time to end whatever garbage came before it.

/// Why a frame is dropped. The decoder is at the next frame boundary afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The frame decodes to more bytes than the buffer holds; its bytes up to the next
    /// `0x00` are skipped.
    TooLong,
    /// The frame ended inside a COBS block: bytes were lost, or garbage came before it.
    Corrupt,
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: no byte of the next frame seen yet.
    Idle,
    /// The next byte is a COBS code byte (or the delimiter).
    Code,
    /// Inside a block: `block_left` data bytes follow.
    Block,
    /// Dropping bytes up to the next delimiter after an error.
    Skip,
}

/// Reassembles frames from a byte stream, in a caller-owned buffer.
///
/// `B` is the buffer: an owned array (`[u8; MAX_FRAME_LEN]` inside a client slot) or a
/// borrowed slice. Frames longer than the buffer give [`FrameError::TooLong`] and are
/// skipped; the decoder never panics and never allocates.
///
/// ```
/// use nanostar_protocol::console::{FrameDecoder, encode_frame};
///
/// let mut wire = [0u8; 16];
/// let frame = encode_frame(b"hi\0", &mut wire).unwrap();
/// let mut decoder = FrameDecoder::new([0u8; 8]);
/// let mut input = frame;
/// assert_eq!(decoder.decode(&mut input), Some(Ok(&b"hi\0"[..])));
/// assert_eq!(decoder.decode(&mut input), None);
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder<B> {
    buf: B,
    len: usize,
    state: State,
    block_left: u8,
    zero_pending: bool,
    yielded: bool,
}

impl<B: AsMut<[u8]>> FrameDecoder<B> {
    /// A decoder filling `buf`; its length is the largest frame accepted.
    pub const fn new(buf: B) -> FrameDecoder<B> {
        FrameDecoder {
            buf,
            len: 0,
            state: State::Idle,
            block_left: 0,
            zero_pending: false,
            yielded: false,
        }
    }

    /// Consumes bytes from the front of `input` until a frame is complete or an error is
    /// found, and returns it; `None` once `input` is used up with no frame complete.
    ///
    /// Call it in a loop on the bytes of each `read()`: a frame borrows the decoder's
    /// buffer until the next call, and `input` keeps the bytes after it.
    pub fn decode(&mut self, input: &mut &[u8]) -> Option<Result<&[u8], FrameError>> {
        if self.yielded {
            self.yielded = false;
            self.len = 0;
        }
        while let Some((&byte, rest)) = input.split_first() {
            if byte == 0 {
                *input = rest;
                let state = core::mem::replace(&mut self.state, State::Idle);
                match state {
                    State::Idle => continue,
                    State::Skip => {
                        self.len = 0;
                        continue;
                    }
                    State::Block => {
                        self.len = 0;
                        return Some(Err(FrameError::Corrupt));
                    }
                    State::Code => {
                        // The zero implied by the last block ends the message: not data.
                        self.yielded = true;
                        let frame = self.buf.as_mut().get(..self.len).unwrap_or_default();
                        return Some(Ok(frame));
                    }
                }
            }
            match self.state {
                State::Skip => {
                    let skip = input.iter().position(|&b| b == 0).unwrap_or(input.len());
                    *input = input.get(skip..).unwrap_or_default();
                }
                State::Idle | State::Code => {
                    *input = rest;
                    if self.state == State::Code
                        && self.zero_pending
                        && let Err(e) = self.push(&[0])
                    {
                        return Some(Err(e));
                    }
                    self.block_left = byte - 1;
                    self.zero_pending = byte != 0xFF;
                    self.state = if self.block_left == 0 {
                        State::Code
                    } else {
                        State::Block
                    };
                }
                State::Block => {
                    let want = usize::from(self.block_left).min(input.len());
                    let run = input.get(..want).unwrap_or_default();
                    // A zero inside a block is the delimiter of a corrupt frame: stop
                    // before it and let the loop report it.
                    let take = run.iter().position(|&b| b == 0).unwrap_or(want);
                    let data = run.get(..take).unwrap_or_default();
                    if let Err(e) = self.push(data) {
                        return Some(Err(e));
                    }
                    *input = input.get(take..).unwrap_or_default();
                    // `take <= block_left`, which is a u8.
                    self.block_left -= take as u8;
                    if self.block_left == 0 {
                        self.state = State::Code;
                    }
                }
            }
        }
        None
    }

    /// Appends decoded bytes; on overflow drops the frame and skips to its end.
    fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        let buf = self.buf.as_mut();
        let end = self.len + data.len();
        match buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.len = end;
                Ok(())
            }
            None => {
                self.len = 0;
                self.state = State::Skip;
                Err(FrameError::TooLong)
            }
        }
    }

    /// `true` while part of a frame is buffered: at end of stream that frame is truncated.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Drops any partial frame.
    pub fn reset(&mut self) {
        self.len = 0;
        self.state = State::Idle;
        self.yielded = false;
    }

    /// The buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

/// Largest wire frame for a message of `len` bytes: COBS adds at most one byte per 254
/// and one more, then the delimiter.
pub const fn max_wire_len(len: usize) -> usize {
    len + len / 254 + 2
}

/// Writes `payload` as one frame (COBS and the `0x00` delimiter) into `out` and returns
/// the used part; `None` if `out` is shorter than the frame needs
/// ([`max_wire_len`] is always enough).
pub fn encode_frame<'o>(payload: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    // `code_at` is where the current block's code byte goes; data follows it.
    let mut code_at = 0;
    let mut at = 1;
    let mut code: u8 = 1;
    for &byte in payload {
        if byte == 0 {
            *out.get_mut(code_at)? = code;
            code_at = at;
            at += 1;
            code = 1;
        } else {
            *out.get_mut(at)? = byte;
            at += 1;
            code += 1;
            if code == 0xFF {
                *out.get_mut(code_at)? = code;
                code_at = at;
                at += 1;
                code = 1;
            }
        }
    }
    *out.get_mut(code_at)? = code;
    *out.get_mut(at)? = 0;
    out.get(..=at)
}
